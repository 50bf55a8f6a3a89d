"""The fused LSTM/GRU ONNX graph equals Keras, its int8 copy is close, and the export falls back to tf2onnx where it
cannot apply."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.files import sha256_file
from pipeline.model import fused_onnx
from pipeline.model.network import build_model
from pipeline.predict.runtime import INT8_ONNX_FILE, INT8_TOLERANCE, KerasNetwork, OnnxNetwork, export_onnx, predict_ids
from pipeline.text.sequences import pad_sequences

VOCAB, MAXLEN = 60, 12


def _trained_weights(model, seed: int):
    """Weights far from the initializer (biases included), so a swapped gate or direction shows."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _ids(seed: int) -> np.ndarray:
    """Right-padded rows: empty, length 1, every length up to MAXLEN, and rows cut from longer reviews."""
    rng = np.random.default_rng(seed)
    rows = [[], [7], [1], [VOCAB - 1]]
    rows += [rng.integers(1, VOCAB, n).tolist() for n in range(2, MAXLEN + 1) for _ in range(3)]
    rows += [rng.integers(1, VOCAB, n).tolist() for n in (MAXLEN + 1, 3 * MAXLEN)]     # over maxlen: truncated
    return pad_sequences(rows, MAXLEN, padding="post", truncating="pre")


@pytest.mark.parametrize("cell,layers,bidirectional", [
    ("lstm", 1, False), ("lstm", 1, True), ("lstm", 2, True), ("lstm", 3, False),
    ("gru", 1, False), ("gru", 2, True)])
def test_fused_graph_equals_keras(tmp_path, cell, layers, bidirectional):
    model = _trained_weights(build_model(VOCAB, None, embedding_dim=8, units=6, layers=layers,
                                         bidirectional=bidirectional, cell=cell), seed=layers)
    ids = _ids(seed=3)
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids)
    assert entry["graph"] == "fused" and "note" not in entry
    assert entry["max_abs_diff"] <= 1e-5 and entry["checked_rows"] == len(ids)

    import onnx
    ops = {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert cell.upper() in ops and "Loop" not in ops

    network, keras_network = OnnxNetwork(tmp_path / "model.onnx"), KerasNetwork(model)
    expected = keras_network(ids)
    np.testing.assert_allclose(network(ids), expected, atol=1e-5)            # whole padded batch
    np.testing.assert_allclose(predict_ids(network, ids, 4), expected, atol=1e-5)   # trimmed, length-grouped
    empty = np.zeros((2, MAXLEN), np.int32)                                   # a review that cleans to nothing
    np.testing.assert_allclose(network(empty), keras_network(empty), atol=1e-5)
    assert network.embedding_rows_match(VOCAB) and not network.embedding_rows_match(VOCAB + 1)

    int8 = entry["int8"]
    if cell == "gru":                     # onnxruntime quantizes LSTM nodes only
        assert set(int8) == {"note"} and not (tmp_path / INT8_ONNX_FILE).exists()
        return
    assert int8["file"] == INT8_ONNX_FILE and int8["sha256"] == sha256_file(tmp_path / INT8_ONNX_FILE)
    assert int8["source_sha256"] == entry["sha256"] and int8["vocab_size"] == VOCAB
    ops = [node.op_type for node in onnx.load(str(tmp_path / INT8_ONNX_FILE)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == layers and "LSTM" not in ops
    quantized = OnnxNetwork(tmp_path / INT8_ONNX_FILE)
    got, exact = predict_ids(quantized, ids), predict_ids(network, ids)   # batched as the export checked them
    assert 0 < np.abs(got - exact).max() <= INT8_TOLERANCE
    assert np.abs(got - exact).max() == pytest.approx(int8["max_abs_diff"], abs=1e-7)
    # inputs are quantized per call, so other batches give other (close) probabilities
    np.testing.assert_allclose(predict_ids(quantized, ids, 4), exact, atol=INT8_TOLERANCE)
    np.testing.assert_allclose(quantized(empty), network(empty), atol=INT8_TOLERANCE)
    assert quantized.embedding_rows_match(VOCAB) and not quantized.embedding_rows_match(VOCAB + 1)


def test_an_int8_graph_too_far_from_the_exact_one_or_failing_to_quantize_is_not_published(tmp_path, monkeypatch):
    from pipeline.predict import runtime

    model = _trained_weights(build_model(VOCAB, None, embedding_dim=8, units=6, bidirectional=True), seed=7)
    ids, labels = _ids(seed=5), np.arange(len(_ids(seed=5))) % 2
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids, check_labels=labels)
    exact, approx = (predict_ids(OnnxNetwork(tmp_path / name), ids) for name in ("model.onnx", INT8_ONNX_FILE))
    assert entry["int8"]["val_accuracy"] == pytest.approx(np.mean((approx > 0.5) == labels), abs=1e-6)
    assert entry["int8"]["val_accuracy_exact"] == pytest.approx(np.mean((exact > 0.5) == labels), abs=1e-6)
    assert entry["int8"]["label_agreement"] == pytest.approx(np.mean((approx > 0.5) == (exact > 0.5)), abs=1e-6)

    monkeypatch.setattr(runtime, "INT8_TOLERANCE", entry["int8"]["max_abs_diff"] / 2)
    (tmp_path / INT8_ONNX_FILE).unlink()
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids, check_labels=labels)
    assert entry["graph"] == "fused" and "not published" in entry["int8"]["note"] and set(entry["int8"]) == {"note"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]     # nothing half-written left behind

    def broken(source, target, **kwargs):
        Path(target).write_bytes(b"half a graph")
        raise RuntimeError("unsupported opset")

    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", broken)
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids, check_labels=labels)
    assert entry["graph"] == "fused" and entry["max_abs_diff"] <= 1e-5        # the exact graph is published
    assert "could not quantize" in entry["int8"]["note"] and "unsupported opset" in entry["int8"]["note"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_left_padding_falls_back_to_tf2onnx_with_a_note(tmp_path):
    model = _trained_weights(build_model(VOCAB, None, embedding_dim=8, units=6), seed=5)
    rows = [[], [4], [5, 6, 7], list(range(1, 20))]
    ids = pad_sequences(rows, MAXLEN, padding="pre", truncating="pre")
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids, padding="pre")
    assert entry["graph"] == "loop" and "left-padded" in entry["note"]
    assert entry["int8"] == {"note": "no int8 graph for an ONNX Loop"}
    np.testing.assert_allclose(OnnxNetwork(tmp_path / "model.onnx")(ids), KerasNetwork(model)(ids), atol=1e-5)


def test_a_layer_without_a_fused_operator_is_exported_through_tf2onnx_with_a_note(tmp_path):
    from pipeline.core.quiet import import_keras

    keras = import_keras()
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(inputs)
    x = keras.layers.SimpleRNN(6, name="simple")(x)
    model = _trained_weights(keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)), seed=6)
    with pytest.raises(fused_onnx.Unsupported, match="simple: a SimpleRNN layer"):
        fused_onnx.build(model)
    ids = _ids(seed=4)
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids)
    assert entry["graph"] == "loop" and "SimpleRNN" in entry["note"] and entry["max_abs_diff"] <= 1e-5
