"""The network as an ONNX graph of fused recurrent operators, built from the trained Keras weights.

tf2onnx turns Keras' masked LSTM into an ONNX `Loop` of small ops, one iteration per
time step, which onnxruntime runs no faster than Keras itself. ONNX has fused `LSTM` and
`GRU` operators (forward, reverse and bidirectional in one node) whose `sequence_lens`
input does what Keras' mask does for right-padded rows: steps past a row's length are
skipped, its final state is the state after its last token, and its outputs there are 0.
ksent pads on the right (the pad stage's default), and ids are never 0 inside a review
(0 is padding only), so the length of a row is its count of non-zero ids.

Built here with the `onnx` helpers rather than through tf2onnx: tf2onnx emits the fused
operator only for a Keras LSTM without a mask (it cannot see that the mask is a length),
and the graph is small (Gather, one recurrent node per layer, MatMul, Sigmoid), so
writing it from the weights is short and leaves nothing to guess. The train stage checks
it against Keras (pipeline.predict.runtime.export_onnx) and falls back to tf2onnx's Loop
graph, with a note, for a network this module does not cover (`Unsupported`).

Weight layout: Keras keeps the gates as column blocks of (input, 4H) matrices in the order
i, f, c, o (LSTM) or z, r, h (GRU); ONNX wants (directions, 4H, input) in the order
i, o, f, c (LSTM) or z, r, h (GRU), and input and recurrent biases side by side. Keras'
GRU default (reset_after=True) is ONNX's linear_before_reset=1.
"""
from __future__ import annotations

import numpy as np

OPSET = 17
CONVERTER = "ksent fused LSTM/GRU"
_LSTM_GATES = (0, 3, 1, 2)     # Keras i, f, c, o -> ONNX i, o, f, c


class Unsupported(Exception):
    """The network has a layer or setting this graph does not reproduce exactly."""


def _recurrent_weights(cell, backward: bool = False) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, int]:
    """(op, W, R, B) of one Keras LSTM/GRU layer in ONNX's layout for one direction, and its units.

    backward: the cell is a Bidirectional's backward half (go_backwards), whose weights ONNX's
    reverse direction reads as they are.
    """
    kind = type(cell).__name__
    if kind not in ("LSTM", "GRU"):
        raise Unsupported(f"{cell.name}: a {kind} layer")
    activation = getattr(cell.activation, "__name__", "")
    recurrent_activation = getattr(cell.recurrent_activation, "__name__", "")
    if (activation, recurrent_activation) != ("tanh", "sigmoid"):
        raise Unsupported(f"{cell.name}: activations {activation}/{recurrent_activation} "
                          f"(ONNX's defaults are tanh/sigmoid)")
    if bool(getattr(cell, "go_backwards", False)) != backward or getattr(cell, "stateful", False):
        raise Unsupported(f"{cell.name}: go_backwards outside a Bidirectional, or stateful")
    units = int(cell.units)
    weights = [np.asarray(w, dtype=np.float32) for w in cell.get_weights()]
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if cell.use_bias else None
    if kind == "LSTM":
        order = np.concatenate([np.arange(g * units, (g + 1) * units) for g in _LSTM_GATES])
        w, r = kernel[:, order].T, recurrent[:, order].T
        b = np.zeros(8 * units, np.float32)
        if bias is not None:
            b[:4 * units] = bias[order]
        return "LSTM", w, r, b, units
    if not getattr(cell, "reset_after", True):
        raise Unsupported(f"{cell.name}: GRU with reset_after=False")
    w, r = kernel.T, recurrent.T                  # z, r, h in both
    b = np.zeros(6 * units, np.float32)
    if bias is not None:
        b[:] = np.asarray(bias, np.float32).reshape(-1)    # (2, 3H): input bias, then recurrent bias
    return "GRU", w, r, b, units


def build(model, *, padding: str = "post"):
    """The ONNX ModelProto of a ksent network: ids int32 (batch, time) -> P(positive) float32 (batch, 1).

    Raises Unsupported for anything but Input -> Embedding(mask_zero) -> [Dropout] ->
    (LSTM|GRU|Bidirectional(...))+ with [Dropout] between -> Dense(1, sigmoid), right-padded.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if padding != "post":
        raise Unsupported("left-padded sequences (fused recurrent operators count a row's steps from the start)")
    layers = [layer for layer in model.layers if type(layer).__name__ not in ("InputLayer", "Dropout")]
    if len(layers) < 3 or type(layers[0]).__name__ != "Embedding" or type(layers[-1]).__name__ != "Dense":
        raise Unsupported("a network that is not Embedding -> recurrent layers -> Dense")
    embedding, recurrent_layers, dense = layers[0], layers[1:-1], layers[-1]
    if not embedding.mask_zero:
        raise Unsupported("an Embedding without mask_zero")
    kernel, *dense_bias = [np.asarray(w, np.float32) for w in dense.get_weights()]
    if kernel.shape[1] != 1 or getattr(dense.activation, "__name__", "") != "sigmoid":
        raise Unsupported("an output layer that is not Dense(1, sigmoid)")

    initializers = [numpy_helper.from_array(np.asarray(embedding.get_weights()[0], np.float32), "embedding")]
    nodes = [
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero_v", TensorProto.INT32, [], [0])),
        helper.make_node("Equal", ["ids", "zero"], ["is_padding"]),
        helper.make_node("Not", ["is_padding"], ["is_token"]),
        helper.make_node("Cast", ["is_token"], ["token_count"], to=TensorProto.INT32),
        helper.make_node("Constant", [], ["time_axis"],
                         value=helper.make_tensor("axis_v", TensorProto.INT64, [1], [1])),
        helper.make_node("ReduceSum", ["token_count", "time_axis"], ["lengths"], keepdims=0),
        helper.make_node("Gather", ["embedding", "ids"], ["embedded"]),                 # (batch, time, dim)
        helper.make_node("Transpose", ["embedded"], ["x0"], perm=[1, 0, 2]),            # (time, batch, dim)
        helper.make_node("Constant", [], ["merge_shape"],
                         value=helper.make_tensor("merge_v", TensorProto.INT64, [3], [0, 0, -1])),
        helper.make_node("Constant", [], ["flat_shape"],
                         value=helper.make_tensor("flat_v", TensorProto.INT64, [2], [0, -1])),
    ]
    x = "x0"
    for n, layer in enumerate(recurrent_layers, start=1):
        bidirectional = type(layer).__name__ == "Bidirectional"
        if bidirectional:
            if layer.merge_mode != "concat":
                raise Unsupported(f"{layer.name}: merge_mode {layer.merge_mode!r}")
            parts = [_recurrent_weights(layer.forward_layer), _recurrent_weights(layer.backward_layer, backward=True)]
        else:
            parts = [_recurrent_weights(layer)]
        op, units = parts[0][0], parts[0][4]
        last = n == len(recurrent_layers)
        if layer.return_sequences == last:
            raise Unsupported(f"{layer.name}: return_sequences={layer.return_sequences}")
        for name, index in (("W", 1), ("R", 2), ("B", 3)):
            initializers.append(numpy_helper.from_array(np.stack([p[index] for p in parts]), f"{name}{n}"))
        attrs = {"hidden_size": units, "direction": "bidirectional" if bidirectional else "forward"}
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        nodes.append(helper.make_node(op, [x, f"W{n}", f"R{n}", f"B{n}", "lengths"], [f"y{n}", f"h{n}"], **attrs))
        if last:   # final states (directions, batch, units) -> (batch, directions * units), forward first
            nodes += [helper.make_node("Transpose", [f"h{n}"], [f"hb{n}"], perm=[1, 0, 2]),
                      helper.make_node("Reshape", [f"hb{n}", "flat_shape"], ["features"])]
        else:      # outputs (time, directions, batch, units) -> (time, batch, directions * units)
            nodes += [helper.make_node("Transpose", [f"y{n}"], [f"yt{n}"], perm=[0, 2, 1, 3]),
                      helper.make_node("Reshape", [f"yt{n}", "merge_shape"], [f"x{n}"])]
            x = f"x{n}"

    initializers.append(numpy_helper.from_array(kernel, "dense_kernel"))
    nodes.append(helper.make_node("MatMul", ["features", "dense_kernel"], ["dense"]))
    if dense_bias:
        initializers.append(numpy_helper.from_array(dense_bias[0], "dense_bias"))
        nodes.append(helper.make_node("Add", ["dense", "dense_bias"], ["logit"]))
    else:
        nodes.append(helper.make_node("Identity", ["dense"], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["positive"]))
    graph = helper.make_graph(
        nodes, f"{model.name}_fused", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "time"])],
        [helper.make_tensor_value_info("positive", TensorProto.FLOAT, ["batch", 1])], initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ksent")
    proto.ir_version = 8                  # onnxruntime >= 1.15 reads it; opset 17 needs >= 8
    onnx.checker.check_model(proto)
    return proto

