"""The fused LSTM/GRU ONNX graph equals Keras, and the export falls back to tf2onnx where it cannot apply."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.model import fused_onnx
from pipeline.model.network import build_model
from pipeline.predict.runtime import KerasNetwork, OnnxNetwork, export_onnx, predict_ids
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


def test_left_padding_falls_back_to_tf2onnx_with_a_note(tmp_path):
    model = _trained_weights(build_model(VOCAB, None, embedding_dim=8, units=6), seed=5)
    rows = [[], [4], [5, 6, 7], list(range(1, 20))]
    ids = pad_sequences(rows, MAXLEN, padding="pre", truncating="pre")
    entry = export_onnx(model, tmp_path / "model.onnx", check_ids=ids, padding="pre")
    assert entry["graph"] == "loop" and "left-padded" in entry["note"]
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
