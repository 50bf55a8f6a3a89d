"""pipeline.predict.runtime and the prediction path: ONNX = Keras, no TensorFlow, old bundles, explanations,
streaming."""
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
from pipeline.core.files import read_json
from pipeline.predict.lines import iter_line_batches
from pipeline.predict.loading import load_bundle
from tests.helpers import SMALL, processed_reviews, threads_spin, trained_bundle, write_processed

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, **kwargs)


def test_onnx_equals_keras_on_the_test_split(evaluated):
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
    assert entry["graph"] == "fused"                             # right-padded, as the pad stage writes


def test_a_left_padded_bundle_predicts_through_its_loop_graph_as_keras_does(tmp_path):
    bundle_dir = trained_bundle(tmp_path, "word", padding="pre")      # as bundles were before right padding
    assert read_json(bundle_dir / "bundle.json")["onnx"]["graph"] == "loop"
    texts = ["", "정말 재밌어요", "별로 재미 없다 " * 10, *(text for text, _ in processed_reviews(40, seed=9))]
    onnx, keras = load_bundle(bundle_dir), load_bundle(bundle_dir, runtime="keras")
    assert onnx.runtime == "onnxruntime"
    np.testing.assert_allclose(onnx.predict_proba(texts, batch_size=7), keras.predict_proba(texts, batch_size=7),
                               atol=1e-5)


def test_the_int8_runtime_is_opt_in_close_to_the_exact_network_and_recorded_by_the_stage(tmp_path):
    import shutil

    from pipeline.stages.train import train

    write_processed(tmp_path / "data", padding="post", sizes=(400, 120, 20))     # right-padded: a fused graph
    train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts", echo=lambda _: None,
          **{**SMALL, "epochs": 3})
    bundle_dir = tmp_path / "artifacts" / "tiny-word"
    texts = [text for text, _ in processed_reviews(200, seed=9)]
    int8, exact = load_bundle(bundle_dir, runtime="onnx-int8"), load_bundle(bundle_dir)
    assert (int8.runtime, exact.runtime) == ("onnxruntime-int8", "onnxruntime")
    got, expected = int8.predict_proba(texts), exact.predict_proba(texts)
    assert 0 < np.abs(got - expected).max() <= 0.05
    entry = read_json(bundle_dir / "bundle.json")["onnx"]["int8"]
    assert entry["file"] == "model.int8.onnx" and entry["checked_rows"] == read_json(
        bundle_dir / "bundle.json")["onnx"]["checked_rows"] and 0 <= entry["val_accuracy"] <= 1
    # the train stage vouches for the file like for its other outputs
    assert read_json(bundle_dir / "train.manifest.json")["outputs"]["model.int8.onnx"] == entry["sha256"]
    result = _run([sys.executable, "-m", "pipeline", "predict", "--runtime", "onnx-int8", "--model", str(bundle_dir),
                   texts[0]])
    assert result.returncode == 0 and result.stdout.startswith(("긍정\t", "부정\t")), result.stderr

    damaged = shutil.copytree(bundle_dir, tmp_path / "damaged")       # checked like model.onnx
    (damaged / "model.int8.onnx").write_bytes((bundle_dir / "model.int8.onnx").read_bytes()[:1000])
    with pytest.raises(pipeline.errors.PipelineError, match="model.int8.onnx is corrupt"):
        load_bundle(damaged, runtime="onnx-int8")
    assert load_bundle(damaged).runtime == "onnxruntime"                  # the exact network does not need it

    old = shutil.copytree(bundle_dir, tmp_path / "old")              # a bundle of a ksent before int8
    manifest = read_json(old / "bundle.json")
    del manifest["onnx"]["int8"]
    (old / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    (old / "model.int8.onnx").unlink()
    assert load_bundle(old).predict_proba(texts[:5]).tolist() == expected[:5].tolist()
    result = _run([sys.executable, "-m", "pipeline", "predict", "--runtime", "onnx-int8", "--model", str(old), "좋다"])
    assert result.returncode != 0 and "no int8 network" in result.stderr and "Traceback" not in result.stderr


def test_prediction_path_does_not_import_tensorflow(evaluated):
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


def test_a_bundle_without_onnx_loads_through_keras_with_a_note(evaluated, tmp_path):
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
    with pytest.raises(pipeline.errors.PipelineError, match="no model.onnx"):
        load_bundle(old, runtime="onnx")


def test_explain_occlusion_and_reading(evaluated):
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
    ids = bundle.preprocessor.vocabulary.transform([tokens])[0]
    for i, token in enumerate(explanation["tokens"]):
        # the network's own answer for the review without token i, and for its first i + 1 tokens
        without, prefix = bundle.predict_ids(bundle.preprocessor.pad([ids[:i] + ids[i + 1:], ids[:i + 1]]))
        assert token["without"] == pytest.approx(without, abs=1e-6)
        assert token["prefix"] == pytest.approx(prefix, abs=1e-6)
        assert token["effect"] == pytest.approx(record["probability"] - without, abs=1e-6)
        if bundle.preprocessor.segmenter.kind == "word":          # a word token left out = the text without it
            assert token["without"] == pytest.approx(
                clf.predict_proba([" ".join(tokens[:i] + tokens[i + 1:])])[0], abs=1e-6)
    # the strongest negative push comes from a negative phrase of the fixture corpus
    strongest = min(explanation["tokens"], key=lambda t: t["effect"])
    assert strongest["effect"] < 0 and any(word in strongest["token"] for word in ("최악", "아깝", "시간"))
    assert clf.explain("")["explanation"]["tokens"] == []
    long = clf.explain("정말 재밌어요 " * 200)["explanation"]
    assert len(long["tokens"]) == bundle.preprocessor.maxlen and long["truncated_tokens"] > 0


def test_cli_explain_plain_and_json(evaluated):
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


def test_streamed_prediction_equals_batch_prediction(evaluated, tmp_path, monkeypatch):
    from pipeline.text.pool import SegmentPool

    bundle_dir, _ = evaluated
    clf = pipeline.load(bundle_dir)
    rows = pd.read_csv(bundle_dir / "predictions.csv", dtype={"text": str}, keep_default_na=False)["text"].tolist()
    lines = (rows * 120)[:9001]                                   # more than one stream batch (8192 lines)
    expected = clf.predict_proba(lines)
    submitted = []
    original_submit = SegmentPool.submit_ids
    monkeypatch.setattr(SegmentPool, "submit_ids", lambda pool, texts: submitted.append(len(texts)) or
                        original_submit(pool, texts))
    batches = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]
    streamed = []
    for records in clf.predict_stream(iter(batches), workers=2, pool_after=2500):
        streamed.extend(records)
        clf.predict(["정말 재밌어요"])                            # the caller may use the classifier meanwhile
    assert [r["text"] for r in streamed] == lines
    np.testing.assert_allclose([r["probability"] for r in streamed], expected, atol=1e-6)
    morpheme = clf.info["tokenization"].startswith("morpheme")
    # in this process until more than pool_after lines came, then in analyzer processes (morphemes only)
    assert submitted == ([1000] * 6 + [1] if morpheme else [])

    def failing():                                                # a bad line after 3 good batches
        yield from batches[:3]
        raise pipeline.errors.PipelineError("line 3001 is not valid UTF-8")

    answered = []
    with pytest.raises(pipeline.errors.PipelineError, match="line 3001"):
        for records in clf.predict_stream(failing(), workers=2, pool_after=1000):
            answered.extend(records)
    assert [r["text"] for r in answered] == lines[:3000]          # the lines before it are all answered
    # through the CLI: one result per line, in order, analyzer processes for the large input
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _run([sys.executable, "-m", "pipeline", "predict", "--model", str(bundle_dir), "--file", str(path),
                   "--json", "--workers", "2"])
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in got] == lines
    np.testing.assert_allclose([r["probability"] for r in got], expected, atol=1e-6)


def test_a_file_is_answered_by_threads_that_sleep_between_steps_and_the_same_network(evaluated, tmp_path,
                                                                                    monkeypatch):
    """`ksent predict --file` (its analyzer workers share the cores) loads the network with sleeping threads;
    reviews given as arguments, --explain and the API by default keep onnxruntime's spinning ones."""
    from click.testing import CliRunner

    from pipeline.apps.cli import cli
    from pipeline.predict import classifier as classifier_module

    bundle_dir, _ = evaluated
    texts = ["정말 재밌어요", "최악의 영화", "", "배우들 연기가 훌륭하고 스토리도 감동적이에요"] * 50
    spinning, sleeping = load_bundle(bundle_dir), load_bundle(bundle_dir, sleeping_threads=True)
    assert threads_spin(spinning) == [True] and threads_spin(sleeping) == [False]
    x = spinning.transform(texts)
    np.testing.assert_array_equal(sleeping.predict_ids(x), spinning.predict_ids(x))     # bit for bit
    assert threads_spin(pipeline.load(bundle_dir)._bundle) == [True]

    loaded = []
    real_load = classifier_module.load
    monkeypatch.setattr(classifier_module, "load", lambda *a, **k: loaded.append(real_load(*a, **k)) or loaded[-1])
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    runs = [["--file", str(path)], ["--"] + texts[:2], ["--file", str(path), "--explain"]]
    outputs = []
    for args in runs:
        result = CliRunner().invoke(cli, ["predict", "--model", str(bundle_dir), "--json", *args])
        assert result.exit_code == 0, result.output
        outputs.append([json.loads(line)["probability"] for line in result.output.splitlines()])
    assert [threads_spin(c._bundle) for c in loaded] == [[False], [True], [True]]
    assert outputs[0] == [float(p) for p in spinning.predict_proba(texts)]
    assert outputs[1] == outputs[0][:2]


def test_analyzer_pools_stop_as_soon_as_the_caller_fails_not_when_its_traceback_goes(monkeypatch):
    """stream_records and distill share `analysed_ahead`: a failure (or Ctrl-C) in the caller's work on a
    batch stops the worker pools while the exception propagates, whoever keeps its traceback."""
    import types

    from pipeline.predict.streaming import analysed_ahead, stream_records
    from pipeline.text import pool as pool_module

    events = []

    class Pool:                                                   # records the pool's life, runs nothing
        def __init__(self, segmenter, workers, preprocessor):
            events.append("start")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            events.append("stop")

        def submit_ids(self, texts):
            events.append(list(texts))
            return texts

    monkeypatch.setattr(pool_module, "SegmentPool", Pool)
    member = types.SimpleNamespace(preprocessor=types.SimpleNamespace(segmenter=None), cap=lambda t: t[:2])
    batches = [["aaa"], ["bbb"], ["ccc"], ["ddd"]]
    # one batch analysed ahead: the first comes back once the second is submitted, with its analysis
    got = [(texts, pending[id(member)]) for texts, pending in analysed_ahead([member], iter(batches), 2, ahead=1)]
    assert got == [(b, [b[0][:2]]) for b in batches]
    assert events == ["start", ["aa"], ["bb"], ["cc"], ["dd"], "stop"]

    class Model:
        def analyzed_members(self):
            return [member]

        def predict(self, texts, batch_size):
            return texts

        def finish(self, texts, segmented, batch_size):
            if texts == ["bbb"]:
                raise KeyboardInterrupt
            return texts

    events.clear()
    try:
        for _ in stream_records(Model(), iter(batches), workers=2, batch_size=8, pool_after=0):
            pass
    except KeyboardInterrupt:
        assert events[-1] == "stop"                               # stopped already, the traceback alive
    else:
        raise AssertionError("the interrupt was lost")
    assert events.count("start") == events.count("stop") == 1


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
