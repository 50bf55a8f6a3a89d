"""The Python API: load a trained bundle and classify reviews in three lines.

    import pipeline
    clf = pipeline.load("artifacts/nsmc-morpheme-mecab")   # no argument: the default model
    clf.predict(["배우들 연기가 훌륭하고 스토리도 감동적이에요"])   # [{"text", "label", "sentiment", ...}]
    clf.explain("재미있을 줄 알았는데 완전 실망했다")              # ... + "explanation": per-token effects

It predicts through the same `Bundle` code as `ksent predict`, `ksent serve` and `ksent
evaluate`, so they can never disagree, and with model.onnx in the bundle it never imports
TensorFlow. A `Classifier` may be shared by threads: calls are serialized, since a
morpheme analyzer instance is not safe to use from two threads.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.core.files import read_json
from pipeline.params import RUNTIME
from pipeline.predict.runtime import BATCH_SIZE

__all__ = ["Classifier", "load"]


class Classifier:
    """A loaded bundle: `predict`, `predict_proba`, `explain`, `predict_stream` and `info`."""

    def __init__(self, bundle):
        self._bundle = bundle
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._bundle.directory

    def predict(self, texts: str | list[str], batch_size: int = BATCH_SIZE, explain: bool = False) -> list[dict]:
        """One record per text: text, label (1 = positive), sentiment, probability (of positive), empty;
        with `explain`, also "explanation" (see `explain`)."""
        texts, batch_size = _as_list(texts), _batch_size(batch_size)
        with self._lock:
            return self._bundle.predict(texts, batch_size=batch_size, explain=explain)

    def explain(self, text: str) -> dict:
        """The record of one text plus "explanation": for each token the model read, its `effect` on the
        probability (probability minus the probability without it), and `prefix`, the probability
        after reading up to it (see pipeline.predict.explain)."""
        if not isinstance(text, str):
            raise TypeError(f"explain takes one text (str), got {type(text).__name__}")
        return self.predict([text], explain=True)[0]

    def predict_stream(self, batches: Iterable[list[str]], workers: int = 1, batch_size: int = BATCH_SIZE,
                       pool_after: int = 0) -> Iterator[list[dict]]:
        """Records for each list of texts in `batches`, in order, as they are computed (bounded memory).
        workers > 1: once more than `pool_after` texts have come, morpheme analysis of the next
        batches runs in that many processes meanwhile."""
        batch_size = _batch_size(batch_size)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        stream = self._bundle.predict_stream((_as_list(batch) for batch in batches), workers=workers,
                                             batch_size=batch_size, pool_after=pool_after)
        while True:
            with self._lock:                 # per batch, never across a yield: the caller may call predict meanwhile
                records = next(stream, None)
            if records is None:
                return
            yield records

    def predict_proba(self, texts: str | list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) of each text, float32 array of shape (n,)."""
        texts, batch_size = _as_list(texts), _batch_size(batch_size)
        with self._lock:
            return self._bundle.predict_proba(texts, batch_size=batch_size)

    @property
    def info(self) -> dict:
        """What the model is: corpus, tokenization, test metrics (if evaluated), training summary, versions."""
        manifest = self._bundle.manifest
        metrics_path = self.directory / layout.METRICS_FILE
        metrics = None
        if metrics_path.is_file():
            try:
                metrics = read_json(metrics_path)
            except (OSError, ValueError):
                metrics = None
        tokenizer = manifest.get("tokenizer") or {}          # an ensemble has none of its own
        info = {"directory": str(self.directory), "name": self.directory.name, "runtime": self._bundle.runtime,
                "corpus": manifest["corpus"], "tokenization": manifest["tok"],
                "vocab_size": tokenizer.get("vocab_size"), "maxlen": tokenizer.get("maxlen"),
                "threshold": self._bundle.threshold, "text_columns": _text_columns(self._bundle),
                "training": manifest.get("training"), "metrics": metrics, "versions": manifest.get("versions")}
        if manifest.get("kind") == "ensemble":
            info["members"] = [m["name"] for m in manifest["members"]]
        parent = (manifest.get("training") or {}).get("parent")
        if isinstance(parent, dict):                    # --init-from: the bundle its network started from
            info["adapted_from"] = {"name": parent.get("name"), "corpus": parent.get("corpus")}
        return info

    def __repr__(self) -> str:
        return f"Classifier({str(self.directory)!r})"


def _text_columns(bundle) -> list[str]:
    """The text column each corpus of the model (a router's: its experts') declares, where a declaration of it
    is found here: what a table of this model's reviews most likely calls its text."""
    from pipeline.corpora import CORPORA
    from pipeline.errors import PipelineError

    names = [e.corpus for e in getattr(bundle, "experts", [])] or [bundle.corpus]
    columns = []
    for name in names:
        try:
            column = CORPORA[name].text
        except (KeyError, PipelineError):       # not declared here, or the declarations cannot be read
            continue
        if column not in columns:
            columns.append(column)
    return columns


def _as_list(texts) -> list[str]:
    """`texts` as a list of str: one str, or an iterable of str. Bytes are refused, not guessed at: only
    the caller knows their encoding (TypeError saying to decode them)."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts must be str or an iterable of str, got bytes - decode them first "
                        "(e.g. data.decode('utf-8'))")
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(f"texts must be str or an iterable of str, got {type(texts).__name__}") from None
    for i, text in enumerate(items):
        if not isinstance(text, str):
            hint = " - decode it first (e.g. .decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else ""
            raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}{hint}")
    return items


def _batch_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"batch_size must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"batch_size must be at least 1, got {value}")
    return value


def load(model_dir: Path | str | None = None, *, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
         runtime: str = RUNTIME, on_note: Callable[[str], None] | None = None,
         sleeping_threads: bool = False) -> Classifier:
    """Load a bundle folder, or (no argument) the default model in `artifacts_dir` (pipeline.predict.selection:
    the best by validation accuracy averaged over the corpora, else NSMC's best).

    runtime: "auto" (model.onnx through onnxruntime when the bundle has one, else Keras, with a
    note), "onnx" or "keras"; "onnx-int8": model.int8.onnx, the LSTM in 8-bit integers (faster, within
    0.05 of "onnx", checked on the validation split at training time). Each note on how the bundle
    was loaded goes to `on_note` (default: a warning). sleeping_threads: onnxruntime's threads sleep
    between steps instead of spinning - for `predict_stream` with workers > 1, or other busy processes on
    the same cores (`ksent predict --file` uses it), not for answering single reviews quickly (see
    pipeline.predict.runtime.OnnxNetwork).
    Raises pipeline.errors.PipelineError with what to do when the bundle is missing, incomplete or damaged.
    `ksent predict`, `ksent serve` and `pipeline.load` all load through here.
    """
    from pipeline.predict.loading import load_bundle
    from pipeline.predict.selection import default_model_dir

    notes: list[str] = []
    bundle = load_bundle(model_dir if model_dir is not None else default_model_dir(artifacts_dir, notes),
                         runtime=runtime, sleeping_threads=sleeping_threads)
    for note in [*notes, *bundle.notes]:
        if on_note is None:
            warnings.warn(note, stacklevel=2)
        else:
            on_note(note)
    return Classifier(bundle)
