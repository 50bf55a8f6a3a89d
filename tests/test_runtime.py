"""pipeline.runtime and the prediction path: ONNX = Keras, no TensorFlow, old bundles, explanations, streaming."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

import pipeline
from pipeline.bundle import load_bundle
from pipeline.io import read_json
from pipeline.lines import iter_line_batches
from test_bundle import evaluated  # noqa: F401 - the trained-and-evaluated bundle fixture

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, **kwargs)


def test_onnx_equals_keras_on_the_test_split(evaluated):  # noqa: F811
    bundle_dir, _ = evaluated
    texts = pd.read_csv(bundle_dir / "predictions.csv", dtype={"text": str}, keep_default_na=False)["text"].tolist()
    texts += ["", "🙂", "정말 재밌어요 " * 40]                  # empty, cleans to nothing, longer than maxlen
    onnx, keras = load_bundle(bundle_dir), load_bundle(bundle_dir, runtime="keras")
    assert (onnx.runtime, keras.runtime) == ("onnxruntime", "keras")
    got, expected = onnx.predict_proba(texts, batch_size=7), keras.predict_proba(texts, batch_size=7)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, got[0])                          # a real model: not one constant answer
    entry = read_json(bundle_dir / "bundle.json")["onnx"]
    assert entry["checked_rows"] > 0 and entry["max_abs_diff"] <= 1e-5   # checked on validation at export


def test_prediction_path_does_not_import_tensorflow(evaluated):  # noqa: F811
    bundle_dir, _ = evaluated
    code = ("import sys, pipeline\n"
            f"clf = pipeline.load({str(bundle_dir)!r})\n"
            "assert clf.info['runtime'] == 'onnxruntime'\n"
            "clf.predict(['정말 재밌어요']); clf.explain('시간 아깝다'); clf.predict_proba(['최악'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'pandas')))\n")
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # the CLI too: -X importtime lists every module the process imported
    result = _run([sys.executable, "-X", "importtime", "-m", "pipeline", "predict", "--model", str(bundle_dir),
                   "정말 재밌어요"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(("긍정\t", "부정\t"))
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "onnxruntime" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "pandas")}


def test_a_bundle_without_onnx_loads_through_keras_with_a_note(evaluated, tmp_path):  # noqa: F811
    import shutil

    old = shutil.copytree(evaluated[0], tmp_path / "old")
    manifest = read_json(old / "bundle.json")
    del manifest["onnx"]
    (old / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    (old / "model.onnx").unlink()
    with pytest.warns(UserWarning, match="no model.onnx"):
        clf = pipeline.load(old)
    assert clf.info["runtime"] == "keras"
    texts = ["정말 재밌어요 최고의 영화", "시간 아깝다", ""]
    np.testing.assert_allclose(clf.predict_proba(texts), pipeline.load(evaluated[0]).predict_proba(texts), atol=1e-5)
    result = _run([sys.executable, "-m", "pipeline", "predict", "--model", str(old), "시간 아깝다"])
    assert result.returncode == 0 and result.stdout.startswith(("긍정\t", "부정\t"))
    assert "note:" in result.stderr and "no model.onnx" in result.stderr
    with pytest.raises(pipeline.io.PipelineError, match="no model.onnx"):
        load_bundle(old, runtime="onnx")


def test_explain_occlusion_and_reading(evaluated):  # noqa: F811
    clf = pipeline.load(evaluated[0])
    bundle = clf._bundle
    text = "진짜 완전 최악이다 시간 아깝다"
    record = clf.explain(text)
    explanation = record["explanation"]
    tokens = bundle.preprocessor.segmenter.segment(bundle.preprocessor.normalizer(text))
    assert [t["token"] for t in explanation["tokens"]] == tokens
    assert explanation["probability"] == pytest.approx(record["probability"], abs=1e-6)
    assert explanation["tokens"][-1]["prefix"] == pytest.approx(record["probability"], abs=1e-6)
    assert explanation["start"] == pytest.approx(clf.predict_proba([""])[0], abs=1e-6)
    for i, token in enumerate(explanation["tokens"]):
        without = " ".join(tokens[:i] + tokens[i + 1:]) if bundle.preprocessor.segmenter.kind == "word" else None
        if without is not None:                                   # word tokens: removing one = deleting the word
            assert token["without"] == pytest.approx(clf.predict_proba([without])[0], abs=1e-6)
        assert token["effect"] == pytest.approx(record["probability"] - token["without"], abs=1e-6)
        prefix = clf.predict_proba([" ".join(tokens[:i + 1])])[0] if without is not None else token["prefix"]
        assert token["prefix"] == pytest.approx(prefix, abs=1e-6)
    # the strongest negative push comes from a negative phrase of the fixture corpus
    strongest = min(explanation["tokens"], key=lambda t: t["effect"])
    assert strongest["effect"] < 0 and any(word in strongest["token"] for word in ("최악", "아깝", "시간"))
    assert clf.explain("")["explanation"]["tokens"] == []
    long = clf.explain("정말 재밌어요 " * 200)["explanation"]
    assert len(long["tokens"]) == bundle.preprocessor.maxlen and long["truncated_tokens"] > 0


def test_cli_explain_plain_and_json(evaluated):  # noqa: F811
    bundle_dir, _ = evaluated
    base = [sys.executable, "-m", "pipeline", "predict", "--model", str(bundle_dir), "--explain"]
    plain = _run(base + ["시간 아깝다 최악이다"])
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("부정\t") and lines[1].startswith("  effect:") and lines[2].startswith("  reading:")
    as_json = _run(base + ["--json", "시간 아깝다 최악이다", ""])
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(records) == 2 and records[1]["explanation"]["tokens"] == []
    assert records[0]["explanation"]["tokens"] and records[0]["label"] == 0


def test_streamed_prediction_equals_batch_prediction(evaluated, tmp_path):  # noqa: F811
    bundle_dir, _ = evaluated
    clf = pipeline.load(bundle_dir)
    rows = pd.read_csv(bundle_dir / "predictions.csv", dtype={"text": str}, keep_default_na=False)["text"].tolist()
    lines = (rows * 120)[:9001]                                   # more than one stream batch (8192 lines)
    expected = clf.predict_proba(lines)
    batches = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]
    streamed = [r for records in clf.predict_stream(iter(batches), workers=2) for r in records]
    assert [r["text"] for r in streamed] == lines
    np.testing.assert_allclose([r["probability"] for r in streamed], expected, atol=1e-6)
    # through the CLI: one result per line, in order, analyzer processes for the large input
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _run([sys.executable, "-m", "pipeline", "predict", "--model", str(bundle_dir), "--file", str(path),
                   "--json", "--workers", "2"])
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in got] == lines
    np.testing.assert_allclose([r["probability"] for r in got], expected, atol=1e-6)


def test_line_batches_flush_when_a_pipe_has_nothing_more_yet():
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        writer.write("하나\n둘\n".encode())
        writer.flush()
        batches = iter_line_batches(reader, "pipe", max_lines=100)
        first = []
        thread = threading.Thread(target=lambda: first.append(next(batches)))
        thread.start()
        thread.join(10)
        assert first == [["하나", "둘"]]                           # without waiting for 100 lines or EOF
        writer.write("셋".encode())
        writer.close()
        assert list(batches) == [["셋"]]
    from io import BytesIO

    data = "".join(f"줄{i}\n" for i in range(25)).encode()
    assert [len(b) for b in iter_line_batches(BytesIO(data), "file", max_lines=10, chunk_size=8)] == [10, 10, 5]
