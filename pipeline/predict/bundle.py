"""A trained model and the preprocessing it was trained with, loaded together; `predict()` lives here.

A bundle is a folder `artifacts/<corpus>-<tok>/` holding

    model.keras     the Keras network (padded int32 ids -> P(positive))
    model.onnx      the same network in ONNX, which prediction runs without TensorFlow (pipeline.predict.runtime)
    model.int8.onnx its LSTM in 8-bit integers (faster, approximate; `runtime="onnx-int8"`), when made
    tokenizer.json  the replayable preprocessing (pipeline.text.preprocess.Preprocessor)
    bundle.json     the manifest that ties them together, written by the train stage:

    {"format": "ksent-bundle", "format_version": 1, "corpus": "nsmc", "tok": "morpheme-mecab",
     "created_at": "...",
     "model": {"file": "model.keras", "sha256": "...", "params": 1234567},
     "onnx": {"file": "model.onnx", "sha256": "...", "opset": 17, "converter": "tf2onnx 1.17.0",
              "vocab_size": 30000, "checked_rows": 14350, "max_abs_diff": 6e-08,
              "int8": {"file": "model.int8.onnx", "sha256": "...", "max_abs_diff": 0.009, ...}},
     "tokenizer": {"file": "tokenizer.json", "sha256": "...", "fingerprint": "...",
                   "name": "morpheme-mecab", "vocab_size": 30000, "maxlen": 55},
     "training": {"params": {...}, "epochs_run": 5, "best_epoch": 3, "best_val_loss": 0.31,
                  "best_val_accuracy": 0.87, "train_seconds": 412.0},
     "versions": {"python": "3.11.9", "keras": "3.15.1", ...}}

`load_bundle` refuses a folder whose pieces do not belong together (a file missing,
unreadable, or not the one recorded at training time), so `predict` can only ever
replay the exact preprocessing its model was trained on. It runs model.onnx when
bundle.json records one (no TensorFlow is imported), else model.keras through Keras
(bundles of older ksent versions), with a note saying so.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.core.files import read_json, sha256_file, write_json
from pipeline.core.stage import library_versions
from pipeline.errors import PipelineError
from pipeline.predict.predictor import MAX_CHARS, Predictor, to_records, unknown_rows
from pipeline.predict.runtime import BATCH_SIZE

FORMAT = "ksent-bundle"
FORMAT_VERSION = 1
MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE = "model.keras", layout.TOKENIZER_FILE, layout.BUNDLE_FILE
BUILD_HINT = "make all CORPORA=nsmc MIRROR=../shared/corpora"


def load_preprocessor(path: Path | str):
    """Load a tokenizer.json (imported here so `import pipeline.predict.bundle` stays light)."""
    from pipeline.text.preprocess import Preprocessor
    return Preprocessor.load(path)


def write_manifest(directory: Path | str, *, corpus: str, tok: str, preprocessor, params: int,
                   training: dict, threshold: dict, onnx: dict | None = None) -> dict:
    """Write bundle.json for the model.keras (and model.onnx, `onnx` its entry) and tokenizer.json in `directory`;
    `threshold`: the decision threshold's entry (pipeline.model.scoring.choose_threshold)."""
    directory = Path(directory)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "corpus": corpus,
        "tok": tok,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"file": MODEL_FILE, "sha256": sha256_file(directory / MODEL_FILE), "params": int(params)},
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": sha256_file(directory / TOKENIZER_FILE),
                      "fingerprint": preprocessor.fingerprint(), "name": preprocessor.name,
                      "vocab_size": int(preprocessor.vocab_size), "maxlen": int(preprocessor.maxlen)},
        **({"onnx": onnx} if onnx else {}),
        "threshold": threshold,
        "training": training,
        "versions": library_versions(),
    }
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


@dataclass
class Bundle(Predictor):
    """Model + Preprocessor + bundle.json, checked to belong together (see `load_bundle`).

    Bad input is defined, never an error: every text gets a probability.
    - Empty or whitespace-only text, or text that cleans to nothing (emoji, non-Korean
      text under the Hangul profile): an all-padding sequence; the model's response to
      an empty sequence, flagged `"empty": True` by `predict`.
    - Extremely long text: the raw text is capped at MAX_CHARS characters (the end that
      truncation keeps: the last ones for truncating="pre") so that a morpheme analyzer
      cannot stall, then truncated to `maxlen` tokens after segmentation, as in training.
    """
    directory: Path
    network: object                 # pipeline.predict.runtime.OnnxNetwork or KerasNetwork
    preprocessor: object            # pipeline.text.preprocess.Preprocessor
    manifest: dict
    notes: tuple[str, ...] = ()     # what a user should know about how it was loaded (e.g. no model.onnx)

    @property
    def runtime(self) -> str:
        return self.network.runtime

    def cap(self, text: str) -> str:
        """The raw text as analyzed: at most MAX_CHARS characters, from the end truncation keeps."""
        text = "" if text is None else str(text)
        if len(text) <= MAX_CHARS:
            return text
        keep_end = getattr(self.preprocessor, "truncating", "pre") == "pre"
        return text[-MAX_CHARS:] if keep_end else text[:MAX_CHARS]

    def transform(self, texts: list[str]) -> np.ndarray:
        """Padded int32 ids (n, maxlen), exactly as the pad stage made them for training."""
        return self.preprocessor.transform([self.cap(t) for t in texts])

    def tokens(self, texts: list[str]) -> list[list[str]]:
        """The tokens of each text as the model reads them (before vocabulary and padding)."""
        prep = self.preprocessor
        return [prep.segmenter.segment(prep.normalizer(self.cap(t))) for t in texts]

    def predict_ids(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) for padded id rows, float32 (n,), in batches of similar length."""
        from pipeline.predict.runtime import predict_ids

        return predict_ids(self.network, x, batch_size)

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) of each raw text, float32 (n,). See the class docstring for bad input."""
        return self.predict_ids(self.transform(texts), batch_size)

    def explained(self, texts: list[str], batch_size: int) -> tuple[list[dict], list[dict]]:
        from pipeline.predict.explain import explain_many

        token_lists = self.tokens(texts)                  # segmented once, for the records and the explanations
        return (self._records(texts, self.preprocessor.ids(token_lists), batch_size),
                explain_many(self, texts, token_lists))

    def analyzed_members(self) -> list[Bundle]:
        """The bundles whose morpheme analysis `stream_records` may run in worker processes."""
        return [self] if self.preprocessor.segmenter.kind == "morpheme" else []

    def finish(self, texts: list[str], pending_ids: dict, batch_size: int) -> list[dict]:
        x = pending_ids[id(self)].ids() if id(self) in pending_ids else self.transform(texts)
        return self._records(texts, x, batch_size)

    def _records(self, texts: list[str], x: np.ndarray, batch_size: int) -> list[dict]:
        return to_records(texts, self.predict_ids(x, batch_size), ~x.any(axis=1), unknown_rows(x), self.threshold)


def member_state(directory: Path, member: dict) -> str | None:
    """Whether member `member` (an entry of ensemble bundle `directory`'s manifest) is "missing",
    "changed" (its bundle.json is not the one the ensemble was made from), or None: the same."""
    path = directory.parent / member["name"] / MANIFEST_FILE
    if not path.is_file():
        return "missing"
    return "changed" if sha256_file(path) != member["bundle_sha256"] else None


def read_manifest(directory: Path) -> dict:
    """bundle.json of `directory`, checked to be a ksent bundle manifest of this format version."""
    path = directory / MANIFEST_FILE
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path} is corrupt (not valid JSON: {exc}) - re-run the train stage "
                            f"(`ksent train ... --force`)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PipelineError(f"{path} is not a ksent bundle manifest - re-run the train stage")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PipelineError(f"{path} has format version {manifest.get('format_version')!r}; this ksent reads "
                            f"version {FORMAT_VERSION} - retrain the model with this ksent")
    return manifest


def load_single(directory: Path, manifest: dict, runtime: str, sleeping_threads: bool) -> Bundle:
    """A single trained model (the train or distill stage's; see pipeline.predict.loading.load_bundle), its
    tokenizer.json and network checked against `manifest`."""
    missing = [name for name in (MANIFEST_FILE, TOKENIZER_FILE) if not (directory / name).is_file()]
    if missing:
        raise PipelineError(f"incomplete model bundle {directory}: missing {', '.join(missing)} - "
                            f"re-run the train stage (`ksent train ... --force`)")
    recorded_model, recorded_tok = manifest.get("model"), manifest.get("tokenizer")
    recorded_onnx = manifest.get("onnx")
    if not (isinstance(recorded_model, dict) and isinstance(recorded_tok, dict)
            and all(isinstance(manifest.get(k), str) for k in ("corpus", "tok"))
            and all(isinstance(recorded_tok.get(k), str) for k in ("sha256", "fingerprint"))
            and isinstance(recorded_model.get("sha256"), str)
            and (recorded_onnx is None or (isinstance(recorded_onnx, dict)
                                           and isinstance(recorded_onnx.get("sha256"), str)))):
        raise PipelineError(f"{directory / MANIFEST_FILE} is incomplete or damaged - re-run the train stage "
                            f"(`ksent train ... --force`)")

    if sha256_file(directory / TOKENIZER_FILE) != recorded_tok.get("sha256"):
        raise PipelineError(f"{directory / TOKENIZER_FILE} does not belong to this model: its checksum differs "
                            f"from the one recorded in bundle.json at training time - copy the tokenizer.json "
                            f"that was trained with it, or retrain")
    try:
        preprocessor = load_preprocessor(directory / TOKENIZER_FILE)
    except PipelineError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PipelineError(f"{directory / TOKENIZER_FILE} is unreadable ({type(exc).__name__}) - re-run the "
                            f"train stage (`ksent train ... --force`)") from None
    if preprocessor.fingerprint() != recorded_tok.get("fingerprint"):
        raise PipelineError(f"{directory / TOKENIZER_FILE} does not belong to this model: this ksent reads it "
                            f"differently from the one that trained the model (fingerprint differs) - retrain")

    network, notes = _load_network(directory, manifest, preprocessor.vocab_size, runtime, sleeping_threads)
    return Bundle(directory=directory, network=network, preprocessor=preprocessor, manifest=manifest,
                  notes=tuple(notes))


def _load_network(directory: Path, manifest: dict, vocab_size: int, runtime: str, sleeping_threads: bool):
    """(network, notes): model.onnx through onnxruntime where possible, else model.keras through Keras."""
    from pipeline.predict import runtime as rt

    notes = []
    recorded_onnx = manifest.get("onnx")
    if runtime == "onnx-int8":
        int8 = recorded_onnx.get("int8") if isinstance(recorded_onnx, dict) else None
        if not (isinstance(int8, dict) and isinstance(int8.get("sha256"), str)):
            if isinstance(int8, dict) and isinstance(int8.get("note"), str):
                raise PipelineError(f"{directory} has no int8 network ({int8['note']}) - use --runtime onnx")
            raise PipelineError(f"{directory} has no int8 network (trained by an older ksent) - use --runtime onnx, "
                                f"or retrain it (`ksent train ... --force`)")
        if importlib.util.find_spec("onnxruntime") is None:
            raise PipelineError("onnxruntime is not installed - `pip install onnxruntime`")
        return rt.load_onnx(directory, int8, vocab_size, sleeping_threads, runtime="onnxruntime-int8"), notes
    if runtime != "keras":
        if recorded_onnx is None and runtime == "onnx":
            raise PipelineError(f"{directory} has no model.onnx (trained by an older ksent) - retrain it "
                                f"(`ksent train ... --force`) or use the Keras runtime")
        if recorded_onnx is not None:
            if importlib.util.find_spec("onnxruntime") is not None:
                return rt.load_onnx(directory, recorded_onnx, vocab_size, sleeping_threads), notes
            if runtime == "onnx":
                raise PipelineError("onnxruntime is not installed - `pip install onnxruntime`")
            notes.append("onnxruntime is not installed, so this bundle runs through Keras/TensorFlow "
                         "(slower start) - `pip install onnxruntime`")
        else:
            notes.append(f"{directory} has no model.onnx (trained by an older ksent), so it runs through "
                         f"Keras/TensorFlow (slower start) - retrain it to get one")
    path = directory / MODEL_FILE
    if not path.is_file():
        raise PipelineError(f"incomplete model bundle {directory}: missing {MODEL_FILE} - "
                            f"re-run the train stage (`ksent train ... --force`)")
    if sha256_file(path) != manifest["model"]["sha256"]:
        raise PipelineError(f"{path} is corrupt or not the model recorded in bundle.json "
                            f"(checksum differs from training time) - retrain, or restore the bundle's files")
    network = rt.load_keras(path, manifest)
    rows = rt.embedding_rows(network.model)
    if rows is not None and rows != vocab_size:
        raise PipelineError(f"{directory / TOKENIZER_FILE} does not belong to this model: it has "
                            f"{vocab_size} vocabulary ids, the model's embedding {rows}")
    return network, notes


