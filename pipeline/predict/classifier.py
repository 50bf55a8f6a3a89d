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
        with self._lock:
            return self._bundle.predict(_as_list(texts), batch_size=batch_size, explain=explain)

    def explain(self, text: str) -> dict:
        """The record of one text plus "explanation": for each token the model read, its `effect` on the
        probability (probability minus the probability without it), and `prefix`, the probability
        after reading up to it (see pipeline.predict.explain)."""
        return self.predict([text], explain=True)[0]

    def predict_stream(self, batches: Iterable[list[str]], workers: int = 1, batch_size: int = BATCH_SIZE,
                       pool_after: int = 0) -> Iterator[list[dict]]:
        """Records for each list of texts in `batches`, in order, as they are computed (bounded memory).
        workers > 1: once more than `pool_after` texts have come, morpheme analysis of the next
        batches runs in that many processes meanwhile."""
        stream = self._bundle.predict_stream(batches, workers=workers, batch_size=batch_size, pool_after=pool_after)
        while True:
            with self._lock:                 # per batch, never across a yield: the caller may call predict meanwhile
                records = next(stream, None)
            if records is None:
                return
            yield records

    def predict_proba(self, texts: str | list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) of each text, float32 array of shape (n,)."""
        with self._lock:
            return self._bundle.predict_proba(_as_list(texts), batch_size=batch_size)

    @property
    def info(self) -> dict:
        """What the model is: corpus, tokenization, test metrics (if evaluated), training summary, versions."""
        manifest = self._bundle.manifest
        metrics_path = self.directory / "metrics.json"
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
                "training": manifest.get("training"), "metrics": metrics, "versions": manifest.get("versions")}
        if manifest.get("kind") == "ensemble":
            info["members"] = [m["name"] for m in manifest["members"]]
        return info

    def __repr__(self) -> str:
        return f"Classifier({str(self.directory)!r})"


def _as_list(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    return list(texts)


def load(model_dir: Path | str | None = None, *, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
         runtime: str = "auto", on_note: Callable[[str], None] | None = None) -> Classifier:
    """Load a bundle folder, or (no argument) the NSMC bundle with the best validation accuracy in `artifacts_dir`.

    runtime: "auto" (model.onnx through onnxruntime when the bundle has one, else Keras, with a
    note), "onnx" or "keras". Each note on how the bundle was loaded goes to `on_note` (default: a
    warning). Raises pipeline.errors.PipelineError with what to do when the bundle is missing,
    incomplete or damaged. `ksent predict`, `ksent serve` and `pipeline.load` all load through here.
    """
    from pipeline.predict.bundle import load_bundle
    from pipeline.predict.selection import default_model_dir

    bundle = load_bundle(model_dir if model_dir is not None else default_model_dir(artifacts_dir), runtime=runtime)
    for note in bundle.notes:
        if on_note is None:
            warnings.warn(note, stacklevel=2)
        else:
            on_note(note)
    return Classifier(bundle)
