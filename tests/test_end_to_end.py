"""Every stage on a few hundred fixture rows through a folder mirror, then `ksent predict`."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.apps.cli import cli
from tests.helpers import SMALL_MODEL, ksent


@pytest.mark.parametrize("tokenizer", [["--tokenizer", "word"], ["--tokenizer", "morpheme", "--backend", "mecab"]])
def test_pipeline_end_to_end_then_predict_without_skew(tmp_path, tiny_corpus, tokenizer):
    data, artifacts = tmp_path / "data", tmp_path / "artifacts"
    runner = CliRunner()
    args = ["run", "--corpus", "tiny", *tokenizer, "--mirror", str(tiny_corpus), "--data-dir", str(data),
            "--artifacts-dir", str(artifacts), *SMALL_MODEL]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    stages = ("download", "clean", "dedupe", "split", "tokenize", "pretrain", "pad", "train", "evaluate")
    positions = [("\n" + first.output).find(f"\n{stage} tiny") for stage in stages]
    assert -1 not in positions and positions == sorted(positions), first.output      # every stage, in order
    assert "\ndomains: 1 bundle(s) x 1 test split(s): 1 scored" in first.output
    assert "\nreport: 1 evaluated bundle(s)" in first.output
    # in a log (not a terminal) training shows one line per epoch, no carriage returns and no Keras bars
    assert re.search(r"\n  train tiny/[\w-]+: epoch 1/3: loss \d", first.output), first.output
    assert "\r" not in first.output and "step -" not in first.output
    assert re.search(r"\n  domains: tiny-[\w-]+ on tiny: test accuracy \d\.\d{4} ", first.output)
    assert re.search(r"\n  pretrain tiny/[\w-]+: word2vec epoch 1/\d+ over [\d,]+ reviews", first.output)

    second = runner.invoke(cli, args)   # nothing changed: every stage is skipped
    assert second.exit_code == 0, second.output
    assert second.output.count("up to date") == 11, second.output

    bundle = next(artifacts.glob("tiny-*"))
    for name in ("model.keras", "tokenizer.json", "metrics.json", "bundle.json", "history.csv", "curves.png",
                 "confusion.png", "predictions.csv"):
        assert (bundle / name).is_file(), name
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["n_test"] == 100
    assert (artifacts / "REPORT.md").read_text().count("\n| tiny | ") == 1     # one row in the test-figures table

    # the probabilities `ksent predict` prints equal the evaluate stage's, for raw test texts
    evaluated = pd.read_csv(bundle / "predictions.csv", dtype={"id": str, "text": str}, keep_default_na=False)
    sample = evaluated.head(40)
    result = ksent("predict", "--model", str(bundle), "--json", stdin="\n".join(sample["text"]).encode())
    assert result.returncode == 0, result.stderr.decode()
    printed = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [p["text"] for p in printed] == sample["text"].tolist()
    np.testing.assert_allclose([p["probability"] for p in printed], sample["probability"], atol=1e-6)
    # and the model learned the fixture's sentiment phrases
    assert metrics["accuracy"] > 0.8
