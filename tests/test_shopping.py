"""The shopping corpus's path (no header, ratings, no upstream test split) through pretraining and an ensemble.

Its real file cannot be fetched offline, so a fixture corpus in its exact format - the
shared preview's real lines plus synthetic ones - goes through `ksent run` with
`--unlabeled`, then `ksent ensemble` and `ksent predict` with the ensemble.
"""
from __future__ import annotations

import gzip
import json
import random

import pytest
from click.testing import CliRunner

from pipeline import layout
from pipeline.apps.cli import cli
from pipeline.core.files import read_json, sha256_file
from pipeline.core.tables import read_npz
from pipeline.text.preprocess import Preprocessor
from tests.helpers import FILLER, NEGATIVE, POSITIVE, SMALL_MODEL

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_shopping_format_through_pretraining_and_an_ensemble(tiny_shop, tmp_path):
    rng = random.Random(9)
    unlabeled = tmp_path / "shop_unlabeled.txt.gz"
    with gzip.GzipFile(unlabeled, "wb", mtime=0) as fh:
        fh.write("\n".join(f"{rng.choice(FILLER)} {rng.choice(POSITIVE + NEGATIVE)} 배송 빠르고"
                           for _ in range(300)).encode())
    data, artifacts = tmp_path / "data", tmp_path / "artifacts"
    runner = CliRunner()
    common = ["--data-dir", str(data), "--artifacts-dir", str(artifacts)]
    for tokenizer in ("word", "char"):
        result = runner.invoke(cli, ["run", "--corpus", "tiny_shop", "--tokenizer", tokenizer, "--mirror",
                                     str(tiny_shop), "--unlabeled", str(unlabeled), *common, *SMALL_MODEL])
        assert result.exit_code == 0, result.output
        processed = layout.processed_dir(data, "tiny_shop", tokenizer)
        pretrained = read_json(processed / "pretrain.manifest.json")
        assert pretrained["inputs"]["unlabeled"] == sha256_file(unlabeled)
        assert pretrained["counts"]["unlabeled_used"] == 300 - pretrained["counts"]["heldout_text"]
        # the Embedding started from a vector for every vocabulary token the pretrain stage learned one for
        vocabulary = Preprocessor.load(processed / "tokenizer.json").vocabulary.tokens
        learned = set(read_npz(processed / "vectors.npz", "pretrain", "tiny_shop", ("tokens",))["tokens"].tolist())
        trained = read_json(layout.bundle_dir(artifacts, "tiny_shop", tokenizer) / "train.manifest.json")
        assert trained["counts"]["pretrained_rows"] == sum(token in learned for token in vocabulary) > 0

    result = runner.invoke(cli, ["ensemble", "--corpus", "tiny_shop", *common])
    assert result.exit_code == 0, result.output
    manifest = read_json(artifacts / "tiny_shop-ensemble" / "bundle.json")
    assert [m["name"] for m in manifest["members"]] == ["tiny_shop-char", "tiny_shop-word"]
    result = runner.invoke(cli, ["predict", "--model", str(artifacts / "tiny_shop-ensemble"), "--json",
                                 "배송 빠르고 정말 재밌어요", "최악이다 돈 아까운 영화"])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [p["label"] for p in printed] == [1, 0]
