"""model.py, the train and evaluate stages and REPORT.md, on tiny processed fixtures the tests write."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.files import read_json, sha256_file
from pipeline.core.stage import adopt_outputs
from pipeline.errors import MissingInputError, PipelineError
from pipeline.model import padded
from pipeline.model.network import build_model
from pipeline.model.scoring import compute_metrics, unique_text_mask
from pipeline.model.training import lr_schedule
from pipeline.stages.evaluate import evaluate
from pipeline.stages.report import report as report_stage
from pipeline.stages.train import SplitReader, train
from pipeline.text.sequences import length_batch_count, length_batches, trim_padding
from tests.helpers import ODD_TEXTS, SMALL, write_processed

# Keras 3.15 on numpy 2 warns from inside fit/predict; nothing in ksent can act on it
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny corpus trained and evaluated: (data_dir, artifacts_dir, bundle_dir, echoed lines)."""
    root = tmp_path_factory.mktemp("trained")
    data, artifacts = root / "data", root / "artifacts"
    write_processed(data)
    lines: list[str] = []
    train("tiny", "word", data_dir=data, artifacts_dir=artifacts, echo=lines.append, **SMALL)
    evaluate("tiny", "word", data_dir=data, artifacts_dir=artifacts, echo=lines.append)
    return data, artifacts, artifacts / "tiny-word", lines


# --- model ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"cell": "lstm"},
    {"cell": "gru", "layers": 2, "bidirectional": True},
])
def test_model_shapes_mask_and_all_padding_row(options):
    model = build_model(30, 6, embedding_dim=4, units=5, dropout=0.2, learning_rate=1e-3, **options)
    assert tuple(model.inputs[0].shape) == (None, 6) and model.inputs[0].dtype == "int32"
    x = np.array([[0, 0, 0, 0, 5, 7], [0, 0, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8]], dtype=np.int32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 1) and np.isfinite(p).all() and ((0 < p) & (p < 1)).all()
    # all padding: every recurrent step is masked, so the output layer sees zeros
    bias = float(model.get_layer("positive").bias.numpy()[0])
    assert p[1, 0] == pytest.approx(1 / (1 + np.exp(-bias)), abs=1e-6)
    assert model.loss == "binary_crossentropy"


def test_variable_length_model_ignores_padding_columns():
    model = build_model(30, None, embedding_dim=4, units=5, layers=2, bidirectional=True)
    assert tuple(model.inputs[0].shape) == (None, None)
    padded = np.array([[0, 0, 0, 0, 5, 7], [0, 0, 0, 2, 3, 4]], dtype=np.int32)
    np.testing.assert_allclose(model.predict(padded, verbose=0), model.predict(padded[:, 3:], verbose=0), atol=1e-6)
    np.testing.assert_allclose(model.predict(padded[:1], verbose=0), model.predict(padded[:1, 4:], verbose=0),
                               atol=1e-6)
    # right padding (what a GPU's cuDNN kernel needs) reads the same tokens: the same output
    post = np.array([[5, 7, 0, 0, 0, 0], [2, 3, 4, 0, 0, 0]], dtype=np.int32)
    np.testing.assert_allclose(model.predict(post, verbose=0), model.predict(padded, verbose=0), atol=1e-6)


def test_build_model_rejects_unknown_cell():
    with pytest.raises(ValueError, match="cell"):
        build_model(10, 5, cell="transformer")


def test_length_batches_cover_every_row_once_and_group_lengths():
    rng = np.random.default_rng(0)
    x = np.zeros((1000, 20), np.int32)
    lengths = rng.integers(0, 21, 1000)
    for i, n in enumerate(lengths):
        x[i, 20 - n:] = 2
    for generator in (None, np.random.default_rng(1)):
        batches = length_batches(x, 64, generator, window=4)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert max(len(b) for b in batches) == 64
        # within a window of 4 batches rows are sorted by length: batches are homogeneous
        spread = np.mean([np.ptp(lengths[b]) for b in batches])
        assert spread < 10
    a, b = (length_batches(x, 64, np.random.default_rng(s)) for s in (1, 2))
    assert any((p != q).any() for p, q in zip(a, b, strict=True))


def test_trim_padding():
    x = np.array([[0, 0, 0, 4, 5], [0, 0, 6, 0, 0]], np.int32)
    np.testing.assert_array_equal(trim_padding(x), x[:, 2:])
    assert trim_padding(np.zeros((3, 5), np.int32)).shape == (3, 1)


# --- train ---------------------------------------------------------------------------------------

def test_train_writes_the_bundle(trained):
    _, _, bundle_dir, lines = trained
    for name in ("model.keras", "tokenizer.json", "bundle.json", "history.csv", "curves.png", "train.manifest.json"):
        assert (bundle_dir / name).is_file(), name
    counts = read_json(bundle_dir / "train.manifest.json")["counts"]
    assert counts["train_rows"] == 300 and counts["val_rows"] == 80
    assert 1 <= counts["best_epoch"] <= counts["epochs_run"] <= SMALL["epochs"]
    assert counts["params"] > 0 and counts["train_seconds"] > 0
    history = pd.read_csv(bundle_dir / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                                     "seconds"]
    assert history["learning_rate"][0] == pytest.approx(SMALL["learning_rate"])
    assert (np.diff(history["learning_rate"]) <= 0).all()
    assert len(history) == counts["epochs_run"]
    assert counts["best_val_accuracy"] == pytest.approx(history["val_accuracy"][counts["best_epoch"] - 1], abs=1e-6)
    manifest = read_json(bundle_dir / "bundle.json")
    assert manifest["format"] == "ksent-bundle" and manifest["corpus"] == "tiny" and manifest["tok"] == "word"
    assert manifest["training"]["params"]["seed"] == 42 and manifest["versions"]["keras"]
    assert (bundle_dir / "tokenizer.json").read_bytes() == \
        (trained[0] / "processed" / "tiny" / "word" / "tokenizer.json").read_bytes()
    summary = next(line for line in lines if line.startswith("train tiny/word"))
    assert "best val_acc" in summary and "params" in summary
    assert not [p.name for p in bundle_dir.iterdir() if p.name.startswith(".")]     # no temp files left behind


def test_saved_model_is_the_best_epoch_without_optimizer_state(trained):
    import keras

    data, _, bundle_dir, _ = trained
    model = keras.saving.load_model(bundle_dir / "model.keras", compile=False)
    assert getattr(model, "optimizer", None) is None
    params = read_json(bundle_dir / "train.manifest.json")["counts"]["params"]
    assert (bundle_dir / "model.keras").stat().st_size < 4 * params + 100_000      # float32 weights, no Adam slots
    val = padded.read(data / "processed" / "tiny" / "word" / "val.parquet", "tiny/word")
    x, y = val["x"], val["label"]
    accuracy = ((model.predict(x, verbose=0)[:, 0] >= 0.5) == y).mean()
    best = read_json(bundle_dir / "train.manifest.json")["counts"]["best_val_accuracy"]
    assert accuracy == pytest.approx(best, abs=1e-6)


def test_train_second_run_is_skipped(trained):
    data, artifacts, bundle_dir, _ = trained
    before = (bundle_dir / "model.keras").read_bytes()
    lines: list[str] = []
    result = train("tiny", "word", data_dir=data, artifacts_dir=artifacts, echo=lines.append, **SMALL)
    assert result.skipped and "up to date" in lines[0]
    assert (bundle_dir / "model.keras").read_bytes() == before


def test_train_is_reproducible_with_its_seed_in_a_fresh_process(tmp_path, trained):
    """Same inputs and parameters, another process (another hash seed): the same weights, bit for bit."""
    import os
    import subprocess
    import sys

    import keras

    data = trained[0]
    code = ("import sys; from pipeline.stages.train import train; "
            f"train('tiny', 'word', data_dir=sys.argv[1], artifacts_dir=sys.argv[2], echo=print, **{SMALL!r})")
    run = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path)], capture_output=True, timeout=300,
                         env={**os.environ, "PYTHONHASHSEED": "random"})
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    ours, theirs = (keras.saving.load_model(d / "model.keras", compile=False).get_weights()
                    for d in (tmp_path / "tiny-word", trained[2]))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "tiny-word" / "history.csv")[columns],
                                  pd.read_csv(trained[2] / "history.csv")[columns])


# --- streamed training data ---------------------------------------------------------------------

def test_split_in_one_shard_is_batched_exactly_as_in_memory(tmp_path):
    out = write_processed(tmp_path, row_group_rows=50)                   # train: 6 row groups of 50
    split = SplitReader(out / "train.parquet", "train", "tiny/word", shard_mb=512)
    assert (split.rows, split.groups, split.shard_count) == (300, 6, 1)
    whole = padded.read(out / "train.parquet", "tiny/word")
    x, y = whole["x"], whole["label"].astype(np.float32)
    streamed, in_memory = np.random.default_rng(3), np.random.default_rng(3)
    for _epoch in range(2):                             # the same draws, epoch after epoch
        expected = [(trim_padding(x[idx]), y[idx]) for idx in length_batches(x, 16, in_memory)]
        got = list(split.batches(16, streamed))
        assert len(got) == len(expected) == length_batch_count(300, 16)
        for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(gx, ex)
            np.testing.assert_array_equal(gy, ey)


def test_shards_hold_whole_row_groups_within_the_budget_and_every_row_once(tmp_path):
    out = write_processed(tmp_path, maxlen=64, row_group_rows=50)        # 50 x 64 int32 = 12,800 bytes a group
    split = SplitReader(out / "train.parquet", "train", "tiny/word", shard_mb=26_000 / 2**20)
    assert (split.groups, split.groups_per_shard, split.shard_count) == (6, 2, 3)
    x_all = padded.read(out / "train.parquet", "tiny/word")["x"]
    rng, orders = np.random.default_rng(0), []
    for _epoch in range(3):
        shards = list(split.shards(rng))
        assert [len(x) for x, _ in shards] == [100, 100, 100]
        rows = np.concatenate([x for x, _ in shards])
        assert sorted(map(bytes, rows)) == sorted(map(bytes, x_all))    # every row once per epoch
        orders.append(b"".join(map(bytes, rows)))
    assert len(set(orders)) > 1                         # the row groups are dealt afresh each epoch
    assert b"".join(map(bytes, np.concatenate([x for x, _ in split.shards()]))) == b"".join(map(bytes, x_all))
    for rng in (np.random.default_rng(1), None):        # the batch count does not depend on the shards
        batches = list(split.batches(16, rng, window=2))
        assert len(batches) == length_batch_count(300, 16, window=2)
        assert all(len(y) <= 16 for _, y in batches)
        tokens = sorted(tuple(row[row != 0]) for bx, _ in batches for row in bx)    # trimming keeps every token
        assert tokens == sorted(tuple(row[row != 0]) for row in x_all)


def test_train_streams_a_split_larger_than_its_shards(tmp_path):
    data = tmp_path / "data"
    write_processed(data, maxlen=64, row_group_rows=50)
    lines: list[str] = []
    train("tiny", "word", data_dir=data, artifacts_dir=tmp_path / "a", echo=lines.append,
          **{**SMALL, "shard_mb": 26_000 / 2**20})
    counts = read_json(tmp_path / "a" / "tiny-word" / "train.manifest.json")["counts"]
    assert counts["train_shards"] == 3 and counts["train_rows"] == 300
    assert counts["best_val_accuracy"] >= 0.75          # the fixture's phrases decide the label
    history = pd.read_csv(tmp_path / "a" / "tiny-word" / "history.csv")
    assert len(history) == counts["epochs_run"] >= 1 and history["loss"].notna().all()


def testlr_schedule():
    import keras

    assert lr_schedule(1.0) == []
    (callback,) = lr_schedule(0.3)
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
    assert callback.factor == 0.3 and callback.patience == 0 and callback.monitor == "val_loss"


def test_training_stops_once_the_learning_rate_was_cut_lr_cuts_times(tmp_path):
    """A learning rate too small to move val_loss: every epoch after the first is one without a new low, and the
    learning rate is cut after each; patience alone would run every epoch."""
    import keras
    import tensorflow as tf

    from pipeline.model import training

    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("float32"))).batch(32)

    def epochs_run(cuts: int) -> list[float]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(1e-9), loss="binary_crossentropy")
        params = {"epochs": 6, "patience": 100, "lr_decay": 0.5, **({"lr_cuts": cuts} if cuts is not None else {})}
        history, *_ = training.fit(model, data, data, params, tmp_path / "best.weights.h5", "test")
        return history["learning_rate"]

    assert epochs_run(2) == pytest.approx([1e-9, 1e-9, 5e-10])     # cut after epochs 2 and 3: stopped after 3
    assert len(epochs_run(0)) == len(epochs_run(None)) == 6          # 0 or no lr_cuts (train, distill): no limit


def test_train_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown parameter"):
        train("tiny", "word", data_dir=tmp_path, artifacts_dir=tmp_path, unitz=3)
    for bad in (0.0, 1.5):
        with pytest.raises(PipelineError, match="lr_decay"):
            train("tiny", "word", data_dir=tmp_path, artifacts_dir=tmp_path, lr_decay=bad)
    with pytest.raises(MissingInputError, match="train.parquet"):
        train("tiny", "word", data_dir=tmp_path, artifacts_dir=tmp_path)
    out = write_processed(tmp_path / "data")
    arrays = padded.read(out / "val.parquet", "tiny/word")
    x = arrays["x"].copy()                          # arrays read from Arrow are read-only views
    x[0, -1] = 10_000                               # an id the vocabulary does not have
    pq.write_table(padded.to_table(x, arrays["label"], arrays["id"], arrays["text"], 8),
                   out / "val.parquet")
    with pytest.raises(PipelineError, match=r"val.parquet is not the file the pad stage recorded .* re-run `ksent pad"):
        train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path, echo=lambda _: None, **SMALL)
    adopt_outputs("pad", "tiny/word", out, ["train.parquet", "val.parquet", "test.parquet", "tokenizer.json"])
    with pytest.raises(PipelineError, match="outside"):
        train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path, echo=lambda _: None, **SMALL)


# --- evaluate ------------------------------------------------------------------------------------

def test_compute_metrics_on_known_predictions():
    m = compute_metrics([1, 1, 0, 0, 1], [0.9, 0.4, 0.2, 0.6, 0.7])
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert compute_metrics([1, 1], [0.8, 0.3])["roc_auc"] is None       # one class: undefined
    assert compute_metrics([], [])["accuracy"] is None
    assert compute_metrics([1, 0], [0.5, 0.49])["accuracy"] == 1.0       # threshold: >= 0.5 is positive


def test_unique_text_mask():
    np.testing.assert_array_equal(unique_text_mask(["a", "b", "a", "c", ""]), [False, True, False, True, True])


def test_evaluate_writes_metrics_predictions_and_report(trained):
    data, artifacts, bundle_dir, lines = trained
    metrics = read_json(bundle_dir / "metrics.json")
    predictions = pd.read_csv(bundle_dir / "predictions.csv", dtype={"id": str, "text": str}, keep_default_na=False)
    assert list(predictions.columns) == ["id", "text", "label", "probability", "predicted"]
    assert metrics["n_test"] == len(predictions) == 80
    assert predictions["text"].tolist()[-len(ODD_TEXTS):] == ODD_TEXTS          # raw text, even when empty
    assert np.isfinite(predictions["probability"]).all()
    threshold = metrics["threshold"]                                        # the bundle's, chosen on validation
    expected = compute_metrics(predictions["label"], predictions["probability"], threshold)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"):
        assert metrics[key] == pytest.approx(expected[key]) if key != "confusion_matrix" else \
            metrics[key] == expected[key]
    unique = unique_text_mask(predictions["text"])
    assert metrics["unique_text_test"]["n"] == unique.sum() < 80
    assert metrics["unique_text_test"]["accuracy"] == pytest.approx(
        compute_metrics(predictions["label"][unique], predictions["probability"][unique], threshold)["accuracy"])
    seen = set()
    for split in ("train", "val"):
        seen.update(padded.read(data / "processed" / "tiny" / "word" / f"{split}.parquet", "tiny/word",
                                ("text",))["text"].tolist())
    unseen = ~predictions["text"].isin(seen).to_numpy()
    assert 0 < metrics["unseen_text_test"]["n"] == unseen.sum() < 80       # the fixture repeats phrases
    assert metrics["unseen_text_test"]["accuracy"] == pytest.approx(
        compute_metrics(predictions["label"][unseen], predictions["probability"][unseen], threshold)["accuracy"])
    assert metrics["empty_test_rows"] == 3
    train_counts = read_json(bundle_dir / "train.manifest.json")["counts"]
    assert metrics["params"] == train_counts["params"] and "train_seconds" not in metrics    # no durations
    assert metrics["threshold"] == train_counts["threshold"] == read_json(bundle_dir / "bundle.json")["threshold"][
        "value"]
    assert metrics["balanced_accuracy"] == pytest.approx((metrics["recall_negative"] + metrics["recall_positive"]) / 2)
    assert metrics["model_bytes"] == (bundle_dir / "model.onnx").stat().st_size         # the network predict runs
    assert metrics["vocab_size"] > 2 and metrics["maxlen"] == 8
    assert metrics["accuracy"] > 0.6        # 2 epochs on the fixture's sentiment phrases
    assert (bundle_dir / "confusion.png").stat().st_size > 1000
    assert any(line.startswith("evaluate tiny/word: test accuracy") for line in lines)
    report_stage(artifacts_dir=artifacts, echo=lines.append)
    report = (artifacts / "REPORT.md").read_text()
    assert report.count("| tiny | word |") == 1 and "(tiny-word/curves.png)" in report


def test_evaluate_skips_when_unchanged(trained):
    data, artifacts, _, _ = trained
    lines: list[str] = []
    assert evaluate("tiny", "word", data_dir=data, artifacts_dir=artifacts, echo=lines.append).skipped


def test_evaluate_refuses_test_data_padded_by_another_tokenizer(tmp_path, trained):
    data, artifacts, _, _ = trained
    other = tmp_path / "data"
    write_processed(other, maxlen=6)
    with pytest.raises(PipelineError, match="different tokenizer.json"):
        evaluate("tiny", "word", data_dir=other, artifacts_dir=artifacts, force=True, echo=lambda _: None)


def _metrics(folder: Path, corpus: str, tok: str, accuracy: float) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "corpus": corpus, "tokenizer": tok, "accuracy": accuracy, "f1": 0.5, "roc_auc": None, "n_test": 10,
        "unique_text_test": {"n": 7, "accuracy": 0.7}, "unseen_text_test": {"n": 5, "accuracy": 0.6},
        "vocab_size": 30000, "maxlen": 55, "params": 1234567,
        "balanced_accuracy": 0.75, "recall_negative": 0.7, "recall_positive": 0.8, "threshold": 0.5,
        "model_bytes": 23_400_000, "best_val_accuracy": 0.8}))
    (folder / "bundle.json").write_text(json.dumps({"corpus": corpus, "training": {"train_seconds": 412.0}}))


def test_write_report_table(tmp_path):
    _metrics(tmp_path / "nsmc-word", "nsmc", "word", 0.81)
    _metrics(tmp_path / "nsmc-morpheme-mecab", "nsmc", "morpheme-mecab", 0.87)
    _metrics(tmp_path / "shop-char", "shop", "char", 0.9)
    for name in ("curves.png", "confusion.png"):
        (tmp_path / "nsmc-morpheme-mecab" / name).write_bytes(b"png")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    lines: list[str] = []
    report_stage(artifacts_dir=tmp_path, echo=lines.append)
    text = (tmp_path / "REPORT.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| nsmc") or line.startswith("| shop")]
    assert [r.split(" | ")[1] for r in rows] == ["morpheme-mecab", "word", "char"]    # per corpus, best first
    assert rows[0].startswith("| nsmc | morpheme-mecab | 0.8700 | 0.7500 | 0.7000 / 0.8000 | 0.5 | 0.5000 | - "
                              "| 0.7000 (7) | 0.6000 (5) | 0.8000 | 30,000 | 55 "
                              "| 1,234,567 | 6.9 min | 23.4 MB |")
    assert "[curves](nsmc-morpheme-mecab/curves.png)" in rows[0]
    assert "[confusion](nsmc-morpheme-mecab/confusion.png)" in rows[0]
    assert "(nsmc-word/curves.png)" not in text                                   # only plots that exist
    assert "broken" in text
    # a stage like any other: skipped while no metrics.json changed, re-run when one does
    assert report_stage(artifacts_dir=tmp_path, echo=lines.append).skipped
    _metrics(tmp_path / "shop-word", "shop", "word", 0.8)
    assert not report_stage(artifacts_dir=tmp_path, echo=lines.append).skipped
    assert "| shop | word |" in (tmp_path / "REPORT.md").read_text()
    assert read_json(tmp_path / "report.manifest.json")["outputs"]["REPORT.md"] == sha256_file(tmp_path / "REPORT.md")
    report_stage(artifacts_dir=tmp_path / "empty", echo=lines.append)
    assert "no evaluated models" in (tmp_path / "empty" / "REPORT.md").read_text()


def test_retraining_a_bundle_folder_that_is_a_symlink_leaves_nothing_behind(tmp_path, trained):
    data, artifacts, bundle_dir, _ = trained
    elsewhere = shutil.copytree(bundle_dir, tmp_path / "elsewhere" / "tiny-word")
    linked = tmp_path / "artifacts"
    linked.mkdir()
    (linked / "tiny-word").symlink_to(elsewhere, target_is_directory=True)
    train("tiny", "word", data_dir=data, artifacts_dir=linked, force=True, echo=lambda _: None, **SMALL)
    assert sorted(p.name for p in linked.iterdir() if not p.name.endswith((".lock", ".owner"))) == ["tiny-word"]
    assert (linked / "tiny-word" / "bundle.json").is_file() and not (linked / "tiny-word").is_symlink()
    assert (elsewhere / "bundle.json").is_file()                        # the folder it pointed to is left alone
