"""A trained model and the preprocessing it was trained with, loaded together; `predict()` lives here.

A bundle is a folder `artifacts/<corpus>-<tok>/` holding

    model.keras     the Keras network (padded int32 ids -> P(positive))
    tokenizer.json  the replayable preprocessing (pipeline.text.preprocess.Preprocessor)
    bundle.json     the manifest that ties them together, written by the train stage:

    {"format": "ksent-bundle", "format_version": 1, "corpus": "nsmc", "tok": "morpheme-mecab",
     "created_at": "...",
     "model": {"file": "model.keras", "sha256": "...", "params": 1234567},
     "tokenizer": {"file": "tokenizer.json", "sha256": "...", "fingerprint": "...",
                   "name": "morpheme-mecab", "vocab_size": 30000, "maxlen": 55},
     "training": {"params": {...}, "epochs_run": 5, "best_epoch": 3, "best_val_loss": 0.31,
                  "best_val_accuracy": 0.87, "train_seconds": 412.0},
     "versions": {"python": "3.11.9", "keras": "3.15.1", ...}}

`load_bundle` refuses a folder whose pieces do not belong together (a file missing,
unreadable, or not the one recorded at training time), so `predict` can only ever
replay the exact preprocessing its model was trained on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import PipelineError, library_versions, read_json, sha256_file, write_json

FORMAT = "ksent-bundle"
FORMAT_VERSION = 1
MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE = "model.keras", "tokenizer.json", "bundle.json"
THRESHOLD = 0.5             # probability of positive at or above which a review is labelled positive
MAX_CHARS = 10_000          # raw characters kept per review before segmentation
BUILD_HINT = "make all CORPORA=nsmc MIRROR=../shared/corpora"


def load_preprocessor(path: Path | str):
    """Load a tokenizer.json (imported here so `import pipeline.bundle` stays light)."""
    from pipeline.text.preprocess import Preprocessor
    return Preprocessor.load(path)


def write_manifest(directory: Path | str, *, corpus: str, tok: str, preprocessor, params: int,
                   training: dict) -> dict:
    """Write bundle.json for the model.keras and tokenizer.json already in `directory`."""
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
        "training": training,
        "versions": library_versions(),
    }
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


@dataclass
class Bundle:
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
    model: object                   # keras.Model
    preprocessor: object            # pipeline.text.preprocess.Preprocessor
    manifest: dict

    @property
    def corpus(self) -> str:
        return self.manifest["corpus"]

    @property
    def tok(self) -> str:
        return self.manifest["tok"]

    def _cap(self, text: str) -> str:
        text = "" if text is None else str(text)
        if len(text) <= MAX_CHARS:
            return text
        keep_end = getattr(self.preprocessor, "truncating", "pre") == "pre"
        return text[-MAX_CHARS:] if keep_end else text[:MAX_CHARS]

    def transform(self, texts: list[str]) -> np.ndarray:
        """Padded int32 ids (n, maxlen), exactly as the pad stage made them for training."""
        return self.preprocessor.transform([self._cap(t) for t in texts])

    def predict_ids(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """P(positive) for padded id rows, float32 (n,), in batches of similar length."""
        from pipeline.model import length_batches, trim_padding

        x = np.asarray(x, dtype=np.int32)
        out = np.empty(len(x), dtype=np.float32)
        variable_length = self.model.inputs[0].shape[1] is None
        for idx in length_batches(x, batch_size):
            batch = trim_padding(x[idx]) if variable_length else x[idx]
            out[idx] = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32).reshape(-1)
        return out

    def predict_proba(self, texts: list[str], batch_size: int = 1024) -> np.ndarray:
        """P(positive) of each raw text, float32 (n,). See the class docstring for bad input."""
        return self.predict_ids(self.transform(texts), batch_size)

    def predict(self, texts: list[str], batch_size: int = 1024) -> list[dict]:
        """One record per text: text, label (1 = positive), sentiment, probability, empty."""
        x = self.transform(texts)
        probabilities = self.predict_ids(x, batch_size)
        empty = ~x.any(axis=1)
        return [{"text": text, "label": int(p >= THRESHOLD), "sentiment": "positive" if p >= THRESHOLD else "negative",
                 "probability": float(p), "empty": bool(e)}
                for text, p, e in zip(texts, probabilities, empty, strict=True)]


def _read_manifest(directory: Path) -> dict:
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


def load_bundle(directory: Path | str) -> Bundle:
    """Load and cross-check a bundle folder; PipelineError says what is wrong and what to do.

    Checked: bundle.json, model.keras and tokenizer.json are present and readable;
    both files have the SHA-256 recorded at training time; the tokenizer's
    fingerprint and vocabulary size match the model's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"no model bundle at {directory} - train one (`{BUILD_HINT}`) or pass --model DIR")
    missing = [name for name in (MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE) if not (directory / name).is_file()]
    if missing:
        raise PipelineError(f"incomplete model bundle {directory}: missing {', '.join(missing)} - "
                            f"re-run the train stage (`ksent train ... --force`)")
    manifest = _read_manifest(directory)
    recorded_model, recorded_tok = manifest.get("model"), manifest.get("tokenizer")
    if not (isinstance(recorded_model, dict) and isinstance(recorded_tok, dict)
            and all(isinstance(manifest.get(k), str) for k in ("corpus", "tok"))
            and all(isinstance(recorded_tok.get(k), str) for k in ("sha256", "fingerprint"))
            and isinstance(recorded_model.get("sha256"), str)):
        raise PipelineError(f"{directory / MANIFEST_FILE} is incomplete or damaged - re-run the train stage "
                            f"(`ksent train ... --force`)")

    if sha256_file(directory / TOKENIZER_FILE) != recorded_tok.get("sha256"):
        raise PipelineError(f"{directory / TOKENIZER_FILE} does not belong to this model: its checksum differs "
                            f"from the one recorded in bundle.json at training time - copy the tokenizer.json "
                            f"that was trained with it, or retrain")
    if sha256_file(directory / MODEL_FILE) != recorded_model.get("sha256"):
        raise PipelineError(f"{directory / MODEL_FILE} is corrupt or not the model recorded in bundle.json "
                            f"(checksum differs from training time) - retrain, or restore the bundle's files")
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

    model = _load_model(directory / MODEL_FILE, manifest)
    embedding_rows = _embedding_rows(model)
    if embedding_rows is not None and embedding_rows != preprocessor.vocab_size:
        raise PipelineError(f"{directory / TOKENIZER_FILE} does not belong to this model: it has "
                            f"{preprocessor.vocab_size} vocabulary ids, the model's embedding {embedding_rows}")
    return Bundle(directory=directory, model=model, preprocessor=preprocessor, manifest=manifest)


def _load_model(path: Path, manifest: dict):
    from pipeline.quiet import import_keras

    keras = import_keras()   # without TensorFlow's start-up chatter on stderr, unless KSENT_VERBOSE=1

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file means the same to the user
        trained_with = manifest.get("versions", {}).get("keras")
        note = (f" (trained with Keras {trained_with}, this is Keras {keras.__version__})"
                if trained_with and trained_with != keras.__version__ else "")
        raise PipelineError(f"{path} cannot be loaded{note}: {type(exc).__name__}: {str(exc)[:200]} - "
                            f"the file is corrupt or incomplete; retrain (`ksent train ... --force`)") from None


def _embedding_rows(model) -> int | None:
    for layer in model.layers:
        if hasattr(layer, "input_dim") and hasattr(layer, "output_dim"):
            return int(layer.input_dim)
    return None


def _validation_accuracy(directory: Path) -> float:
    """The best validation accuracy the train stage recorded (never a test figure)."""
    for path, keys in ((directory / "train.manifest.json", ("counts",)), (directory / MANIFEST_FILE, ("training",))):
        try:
            value = read_json(path)[keys[0]]["best_val_accuracy"]
            return float(value)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return float("-inf")


def default_model_dir(artifacts_dir: Path | str = "artifacts") -> Path:
    """The NSMC bundle with the highest validation accuracy, else the best other bundle."""
    bundles = []
    for manifest_path in sorted(Path(artifacts_dir).glob(f"*/{MANIFEST_FILE}")):
        try:
            corpus = read_json(manifest_path).get("corpus")
        except (OSError, ValueError, AttributeError):
            continue
        bundles.append((corpus == "nsmc", _validation_accuracy(manifest_path.parent), manifest_path.parent))
    if not bundles:
        raise PipelineError(f"no trained model in {artifacts_dir}/ - build one with `{BUILD_HINT}` "
                            f"(or `ksent run --corpus nsmc`), or pass --model DIR")
    nsmc_first = max(bundles, key=lambda b: (b[0], b[1]))
    return nsmc_first[2]
