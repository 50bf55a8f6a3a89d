"""The Python API (`pipeline.load`): the README's three lines, agreement with evaluate, threads."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline
from pipeline.errors import PipelineError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_three_lines_predict_like_evaluate(evaluated):
    bundle_dir, _ = evaluated
    clf = pipeline.load(bundle_dir)
    rows = pd.read_csv(bundle_dir / "predictions.csv", dtype={"id": str, "text": str}, keep_default_na=False)
    texts = rows["text"].tolist()
    np.testing.assert_allclose(clf.predict_proba(texts), rows["probability"], atol=1e-6)
    records = clf.predict(texts[:5])
    assert [r["text"] for r in records] == texts[:5]
    assert [r["label"] for r in records] == rows["predicted"].head(5).tolist()
    assert clf.predict(texts[0]) == clf.predict([texts[0]])          # a single string is one review


def test_info_and_default_model(evaluated, tmp_path):
    bundle_dir, artifacts = evaluated
    clf = pipeline.load(artifacts_dir=artifacts)                     # no argument: the best bundle there
    assert clf.directory.parent == artifacts
    info = pipeline.load(bundle_dir).info
    assert info["corpus"] == "tiny" and info["tokenization"] == bundle_dir.name.split("-", 1)[1]
    assert info["metrics"]["n_test"] == 80 and 0 <= info["metrics"]["accuracy"] <= 1
    assert info["training"]["best_epoch"] >= 1 and "keras" in info["versions"]
    with pytest.raises(PipelineError, match="no trained model"):
        pipeline.load(artifacts_dir=tmp_path / "empty")
    damaged = shutil.copytree(bundle_dir, tmp_path / "damaged")
    (damaged / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(PipelineError, match="tokenizer.json"):
        pipeline.load(damaged)


def test_concurrent_callers_get_the_same_answers(evaluated):
    clf = pipeline.load(evaluated[0])
    texts = ["정말 재밌어요 최고의 영화", "시간 아깝다", "그냥 그래요", ""] * 10
    expected = clf.predict_proba(texts)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: clf.predict_proba(texts[i:] + texts[:i]), range(16)))
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, np.roll(expected, -i), atol=1e-6)


def test_the_readme_example_runs(evaluated, tmp_path):
    """The README's Python example, as printed there, on the fixture bundle instead of the NSMC one."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "pipeline.load(" in b]
    assert blocks, "the README has no Python example"
    code = blocks[0].replace('"artifacts/nsmc-morpheme-mecab"', repr(str(evaluated[0])))
    assert code != blocks[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr
    assert "'sentiment': 'positive'" in result.stdout or "'sentiment': 'negative'" in result.stdout
    assert "onnxruntime" in result.stdout


def test_bad_inputs_are_clear_errors_not_wrong_answers(evaluated):
    clf = pipeline.load(evaluated[0])
    with pytest.raises(TypeError, match="got bytes - decode them first"):
        clf.predict("좋아요".encode())                                # not one record per byte
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got bytes - decode it first"):
        clf.predict(["좋아요", "최악".encode()])                       # not the string "b'...'"
    with pytest.raises(TypeError, match=r"texts\[0\] must be str, got int"):
        clf.predict_proba([3])
    with pytest.raises(TypeError, match="texts must be str or an iterable of str, got NoneType"):
        clf.predict(None)
    for bad in (0, -1):                                                # not probabilities of 0.0
        with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {bad}"):
            clf.predict(["좋아요"], batch_size=bad)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        clf.predict_proba(["좋아요"], batch_size=2.5)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        next(clf.predict_stream([["좋아요"]], workers=0))
    with pytest.raises(TypeError, match=r"texts\[0\] must be str"):
        next(clf.predict_stream([[b"x"]]))
    with pytest.raises(TypeError, match="explain takes one text"):
        clf.explain(["좋아요"])
    assert clf.predict(("좋아요", "최악")) == clf.predict(["좋아요", "최악"])   # any iterable of str
