"""What every loaded model offers, a single bundle or an ensemble: one protocol, so that `ksent predict`,
`ksent serve`, the Python API and the evaluate stage never need to know which one they hold."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.predict.runtime import BATCH_SIZE

THRESHOLD = 0.5             # probability of positive at or above which a review is labelled positive
MAX_CHARS = 10_000          # raw characters kept per review before segmentation


class Predictor:
    """A loaded model: `directory`, `manifest` (its bundle.json) and `notes` (what a user should know
    about how it was loaded), set by the subclasses (pipeline.predict.bundle.Bundle, EnsembleBundle)."""
    directory: Path
    manifest: dict
    notes: tuple[str, ...]

    @property
    def corpus(self) -> str:
        return self.manifest["corpus"]

    @property
    def tok(self) -> str:
        return self.manifest["tok"]

    @property
    def runtime(self) -> str:
        """The network runtime(s): "onnx", "keras" (an ensemble: its members', joined by "+")."""
        raise NotImplementedError

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) of each raw text, float32 (n,)."""
        raise NotImplementedError

    def predict(self, texts: list[str], batch_size: int = BATCH_SIZE, explain: bool = False) -> list[dict]:
        """One record per text: text, label (1 = positive), sentiment, probability, empty (+ explanation)."""
        raise NotImplementedError

    def analyzed_members(self) -> list:
        """The bundles whose morpheme analysis `stream_records` may run in worker processes."""
        raise NotImplementedError

    def finish(self, texts: list[str], pending_ids: dict, batch_size: int) -> list[dict]:
        """The records of `texts`, whose ids worker processes made (`pending_ids`, by member)."""
        raise NotImplementedError

    def predict_stream(self, batches: Iterable[list[str]], workers: int = 1, batch_size: int = BATCH_SIZE,
                       pool_after: int = 0) -> Iterator[list[dict]]:
        """Records for each batch of texts, in order, as soon as they are computed (see `stream_records`)."""
        from pipeline.predict.streaming import stream_records

        return stream_records(self, batches, workers, batch_size, pool_after)


def to_records(texts, probabilities, empty) -> list[dict]:
    if not np.isfinite(probabilities).all():    # damaged weights: NaN is no answer, and not JSON either
        raise PipelineError("the network gave a probability that is not a number: its weights are damaged; "
                            "re-make the bundle (ksent train)")
    return [{"text": text, "label": int(p >= THRESHOLD), "sentiment": "positive" if p >= THRESHOLD else "negative",
             "probability": float(p), "empty": bool(e)}
            for text, p, e in zip(texts, probabilities, empty, strict=True)]
