"""The runtime that runs a bundle's network: ONNX through onnxruntime (no TensorFlow), or Keras.

The train stage saves the network twice: `model.keras`, Keras' native format (to inspect,
fine-tune or re-export it), and `model.onnx`, the same network as onnxruntime's fused
LSTM/GRU operators (pipeline.model.fused_onnx; tf2onnx's Loop graph where those do not
apply), checked against Keras before it is published. Prediction (`ksent predict`, the Python API,
`ksent serve`, `ksent evaluate`) runs `model.onnx` with onnxruntime: a 10 MB native library
that starts in a fraction of a second, where importing TensorFlow alone takes ~4 s and
~500 MB. Why ONNX: it is the one open format with a light, well-kept CPU runtime that
runs the masked LSTM/GRU exactly (right padding makes Keras' mask a length, which the fused
operators take; tf2onnx turns the masked loop into an ONNX Loop); TFLite needs TensorFlow's
converter at train time *and* a TFLite runtime whose LSTM ops do not take Keras' mask, and
Keras' own `model.export(format="onnx")` refused the loaded model.

A bundle without `model.onnx` (trained by an older ksent) still loads, through Keras; one
with a Loop graph (ksent before the fused export) runs as it did.

Next to a fused LSTM graph the stage also saves `model.int8.onnx`: the same graph with the LSTM
weights in 8-bit integers (onnxruntime's dynamic quantization), ~1.7x as fast on this project's
2-core Xeon (docs/speed.md) and close to the exact network but not equal - its inputs are
quantized per call, so a review's probability even shifts a little with the other reviews of
its batch - hence opt-in (`--runtime onnx-int8`), never the default.

Both runtimes are a `Network`: padded int32 ids (batch, time) -> P(positive), float32 (batch,).
`predict_ids` feeds it batches of similar length without their all-padding columns (the
mask skips those steps anyway), exactly as the train stage fed Keras.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.core.files import sha256_file
from pipeline.errors import ParameterError, PipelineError
from pipeline.layout import is_plain_name
from pipeline.params import PREDICT
from pipeline.text.sequences import length_batches, trim_padding

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-5          # largest |P_onnx - P_keras| accepted at export
INT8_ONNX_FILE = "model.int8.onnx"
INT8_TOLERANCE = 0.05          # largest |P_int8 - P_onnx| accepted: close (NSMC: ~1e-2), never exact
BATCH_SIZE = PREDICT["batch_size"]
# rows per progress step of a stage predicting a whole split: whole batches, so that no batch is cut short
# by a block's end (on NSMC's three test splits the probabilities equal one whole call's, bit for bit)
PROGRESS_BLOCK = 40 * BATCH_SIZE
THREADS_ENV = "KSENT_THREADS"  # onnxruntime intra-op threads (default: onnxruntime's, all cores)
SPINNING_KEY = "session.intra_op.allow_spinning"


class OnnxNetwork:
    """model.onnx in an onnxruntime session (CPU).

    `sleeping_threads`: onnxruntime's threads sleep between parallel steps instead of spinning. Spinning
    (the default) saves wake-ups, and each LSTM time step is a step: `ksent serve` answers a single review
    ~1 ms sooner with it. But it takes a core that other processes on the machine need: `ksent predict
    --file`, whose MeCab worker processes analyse the next batches beside the network, runs with sleeping
    threads (2 cores, the student on 200,000 reviews: 37.1 -> 34.5 s, median of 6 interleaved runs, outputs
    identical; docs/speed.md). The choice is fixed when the session is made.
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, sleeping_threads: bool = False,
                 runtime: str | None = None):
        if runtime:
            self.runtime = runtime
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3          # errors only: no "CleanUnusedInitializers" chatter
        # Memory patterns pre-plan buffers per input shape; batches here change shape every call
        # (length-grouped), so planning only costs: off, the arena stays ~60 MB smaller and runs faster.
        options.enable_mem_pattern = False
        # Basic optimizations only: the extended/layout ones find nothing to fuse in these graphs (same
        # outputs bit for bit, same speed) but took ~60 ms of a `ksent predict` cold start per network.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.intra_op_num_threads = threads if threads is not None else _threads_from_env()
        options.inter_op_num_threads = 1
        if sleeping_threads:
            options.add_session_config_entry(SPINNING_KEY, "0")
        model = str(path)
        try:
            model.encode("utf-8")
        except UnicodeEncodeError:       # onnxruntime cannot open a path that is not UTF-8; it reads the bytes (slower)
            model = Path(path).read_bytes()
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any failure to read the file means the same to the user
            raise PipelineError(f"{path} cannot be loaded by onnxruntime ({type(exc).__name__}: {str(exc)[:200]}) "
                                f"- the file is corrupt; retrain (`ksent train ... --force`)") from None
        self._input = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: batch})[0].reshape(-1)

    def embedding_rows_match(self, rows: int) -> bool:
        """Whether the network's embedding has exactly `rows` rows: id rows - 1 is read, id rows is out of
        range (onnxruntime's Gather refuses it). Two one-token runs, quiet about the expected refusal."""
        import onnxruntime as ort

        quiet = ort.RunOptions()
        quiet.log_severity_level = 4
        try:
            self.session.run(None, {self._input: np.array([[rows - 1]], np.int32)}, quiet)
        except Exception:  # noqa: BLE001 - onnxruntime's errors have no common public type
            return False
        try:
            self.session.run(None, {self._input: np.array([[rows]], np.int32)}, quiet)
        except Exception:  # noqa: BLE001
            return True
        return False


def _threads_from_env() -> int:
    value = os.environ.get(THREADS_ENV, "").strip() or "0"
    if not value.isdigit():
        raise ParameterError(f"{THREADS_ENV} must be a whole number of threads (0 = all cores), got {value!r}")
    return int(value)


class KerasNetwork:
    """model.keras through Keras (imports TensorFlow)."""

    runtime = "keras"

    def __init__(self, model):
        self.model = model

    @property
    def variable_length(self) -> bool:
        return self.model.inputs[0].shape[1] is None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32).reshape(-1)


def predict_ids(network, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """P(positive) for padded id rows, float32 (n,), in batches of similar length."""
    x = np.asarray(x, dtype=np.int32)
    out = np.empty(len(x), dtype=np.float32)
    trim = getattr(network, "variable_length", True)
    for idx in length_batches(x, batch_size):
        batch = x[idx]
        out[idx] = network(trim_padding(batch) if trim else batch)
    return out


# --- loading ----------------------------------------------------------------------------------

def load_onnx(directory: Path, entry: dict, vocab_size: int, sleeping_threads: bool = False,
              runtime: str | None = None) -> OnnxNetwork:
    """The bundle's model.onnx (or the `entry`'s file), checked against what bundle.json recorded at training time."""
    name = entry.get("file", ONNX_FILE)
    if not is_plain_name(name):
        raise PipelineError(f"{directory / 'bundle.json'} names the network file {name!r}, which is not a file of "
                            f"the bundle folder - retrain (`ksent train ... --force`)")
    path = directory / name
    if not path.is_file():
        raise PipelineError(f"incomplete model bundle {directory}: missing {path.name}, which bundle.json records "
                            f"- restore it, or retrain (`ksent train ... --force`)")
    if sha256_file(path) != entry.get("sha256"):
        raise PipelineError(f"{path} is corrupt or not the model recorded in bundle.json (checksum differs from "
                            f"training time) - retrain, or restore the bundle's files")
    if entry.get("vocab_size") not in (None, vocab_size):
        raise PipelineError(f"{directory / 'tokenizer.json'} does not belong to this model: it has {vocab_size} "
                            f"vocabulary ids, the model's embedding {entry.get('vocab_size')}")
    network = OnnxNetwork(path, sleeping_threads=sleeping_threads, runtime=runtime)
    if not network.embedding_rows_match(vocab_size):     # the network's own size, not a number in a JSON file
        raise PipelineError(f"{path} does not belong to this bundle: its embedding does not have the "
                            f"{vocab_size:,} rows of {directory / 'tokenizer.json'} - retrain (`ksent train ... "
                            f"--force`), or restore the bundle's files")
    return network


def load_keras(path: Path, manifest: dict) -> KerasNetwork:
    from pipeline.core.quiet import import_keras

    keras = import_keras()   # without TensorFlow's start-up chatter on stderr, unless KSENT_VERBOSE=1
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file means the same to the user
        trained_with = manifest.get("versions", {}).get("keras")
        note = (f" (trained with Keras {trained_with}, this is Keras {keras.__version__})"
                if trained_with and trained_with != keras.__version__ else "")
        raise PipelineError(f"{path} cannot be loaded{note}: {type(exc).__name__}: {str(exc)[:200]} - "
                            f"the file is corrupt or incomplete; retrain (`ksent train ... --force`)") from None
    return KerasNetwork(model)


def embedding_rows(model) -> int | None:
    """Rows of a Keras model's Embedding layer (its vocabulary size), if it has one."""
    for layer in model.layers:
        if hasattr(layer, "input_dim") and hasattr(layer, "output_dim"):
            return int(layer.input_dim)
    return None


# --- export (train stage; needs TensorFlow and tf2onnx) -----------------------------------------

def export_onnx(model, path: Path, check_ids: np.ndarray, padding: str = "post",
                check_labels: np.ndarray | None = None) -> dict:
    """Convert the Keras `model` to ONNX at `path`, check it, and return its bundle.json entry.

    The graph is onnxruntime's fused LSTM/GRU operators built from the weights
    (pipeline.model.fused_onnx); for a network that module does not cover, or if its check
    fails, tf2onnx's conversion (the recurrent loop as an ONNX Loop), and the entry's
    "note" says why. Either graph takes ids of any batch size and length, like the Keras
    model, and its probabilities on `check_ids` (padded id rows: the validation split) must
    equal Keras' to ONNX_TOLERANCE, or PipelineError: a portable model that disagrees with
    the trained one is never published. The entry's "int8" is export_int8's entry for the
    int8 copy of a fused graph, beside it as INT8_ONNX_FILE.
    """
    from pipeline.model import fused_onnx

    check_ids = np.asarray(check_ids, dtype=np.int32)
    expected = predict_ids(KerasNetwork(model), check_ids)
    note = None
    try:
        import onnx

        onnx.save(fused_onnx.build(model, padding=padding), str(path))
    except fused_onnx.Unsupported as exc:
        note = f"no fused recurrent graph for {exc}: exported through tf2onnx (an ONNX Loop, slower)"
    else:
        exact = predict_ids(OnnxNetwork(path), check_ids)
        max_diff = _largest_difference(exact, expected)
        if max_diff <= ONNX_TOLERANCE:
            int8 = export_int8(path, path.with_name(INT8_ONNX_FILE), check_ids, exact, check_labels)
            if "file" in int8:
                int8["vocab_size"] = embedding_rows(model)
            return {"file": path.name, "sha256": sha256_file(path), "opset": fused_onnx.OPSET,
                    "converter": f"{fused_onnx.CONVERTER} (onnx {onnx.__version__})", "graph": "fused",
                    "vocab_size": embedding_rows(model), "checked_rows": int(len(check_ids)), "max_abs_diff": max_diff,
                    "int8": int8}
        note = (f"the fused recurrent graph differed from Keras by {max_diff:.2e}: exported through tf2onnx "
                f"(an ONNX Loop, slower)")
    entry = _export_tf2onnx(model, path, check_ids, expected)
    return {**entry, "note": note, "int8": {"note": "no int8 graph for an ONNX Loop"}}


def export_int8(onnx_path: Path, path: Path, check_ids: np.ndarray, exact: np.ndarray,
                check_labels: np.ndarray | None = None) -> dict:
    """Quantize the fused graph at `onnx_path` to `path` (LSTM weights as int8) and return its bundle.json entry.

    onnxruntime's `quantize_dynamic` turns each `LSTM` node into its `DynamicQuantizeLSTM`, which
    multiplies in 8-bit integers, quantizing its inputs with the range of the batch at hand - the
    recurrence is most of the network's time, and in float32 it already runs at ~70% of this CPU's
    matrix-multiply speed (bench_network.py). The result is deterministic for a given batch but
    approximate: published only if its probabilities on `check_ids` (the validation split) are
    within INT8_TOLERANCE of `exact`, the exact graph's there (predict_ids, as the caller computed
    them for its own check); the entry records the
    largest difference, how many labels agree and, with `check_labels`, both accuracies.
    Otherwise, for a graph without an LSTM (GRU, Loop), or if quantization fails, nothing is
    written and the entry is {"note": why}.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not any(node.op_type == "LSTM" for node in onnx.load(str(onnx_path)).graph.node):
        return {"note": "no fused LSTM in the graph (a GRU or an ONNX Loop): no int8 graph"}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        try:
            with _without_preprocessing_advice():
                quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
        except Exception as exc:  # noqa: BLE001 - an optional copy never sinks the training that made the model
            return {"note": f"onnxruntime could not quantize the graph ({type(exc).__name__}: {str(exc)[:200]}): "
                            f"no int8 graph"}
        check_ids = np.asarray(check_ids, dtype=np.int32)
        approx = predict_ids(OnnxNetwork(tmp), check_ids)
        max_diff = _largest_difference(approx, exact)
        if not max_diff <= INT8_TOLERANCE:
            return {"note": f"the int8 graph differed from the exact one by {max_diff:.2e} "
                            f"(> {INT8_TOLERANCE}) on the validation split: not published"}
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    entry = {"file": path.name, "sha256": sha256_file(path), "source_sha256": sha256_file(onnx_path),
             "converter": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {onnxruntime.__version__})",
             "graph": "fused-int8", "checked_rows": int(len(check_ids)),
             "max_abs_diff": max_diff,
             "label_agreement": round(float(np.mean((approx > 0.5) == (exact > 0.5))), 6) if len(check_ids) else 1.0}
    if check_labels is not None and len(check_ids):
        labels = np.asarray(check_labels).reshape(-1) > 0
        entry["val_accuracy"] = round(float(np.mean((approx > 0.5) == labels)), 6)
        entry["val_accuracy_exact"] = round(float(np.mean((exact > 0.5) == labels)), 6)
    return entry


@contextlib.contextmanager
def _without_preprocessing_advice():
    """quantize_dynamic logs (on the root logger, which it would give a stderr handler) advice to run its
    pre-processing first: shape inference and graph fusions for convolutional networks, nothing to do in these."""
    root = logging.getLogger()
    guard = logging.NullHandler()           # a handler present: logging.warning does not call basicConfig

    def advice(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root.addHandler(guard)
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
        root.removeHandler(guard)


def _largest_difference(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(got - expected))) if len(got) else 0.0


def _export_tf2onnx(model, path: Path, check_ids: np.ndarray, expected: np.ndarray) -> dict:
    import logging

    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = (tf.TensorSpec((None, None), tf.int32, name="ids"),)

    @tf.function(input_signature=spec)
    def forward(ids):
        return model(ids, training=False)

    tf2onnx.convert.from_function(forward, input_signature=spec, opset=ONNX_OPSET, output_path=str(path))
    max_diff = _largest_difference(predict_ids(OnnxNetwork(path), check_ids), expected)
    if not max_diff <= ONNX_TOLERANCE:
        raise PipelineError(f"the ONNX export of the model differs from Keras by {max_diff:.2e} (> {ONNX_TOLERANCE}) "
                            f"on {len(check_ids):,} rows - nothing was published; report this with the versions of "
                            f"tensorflow, tf2onnx and onnxruntime")
    return {"file": path.name, "sha256": sha256_file(path), "opset": ONNX_OPSET,
            "converter": f"tf2onnx {tf2onnx.__version__}", "graph": "loop", "vocab_size": embedding_rows(model),
            "checked_rows": int(len(check_ids)), "max_abs_diff": max_diff}
