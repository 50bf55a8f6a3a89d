"""What every loaded model offers, a single bundle or an ensemble: one protocol, so that `ksent predict`,
`ksent serve`, the Python API and the evaluate stage never need to know which one they hold."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.predict.runtime import BATCH_SIZE

THRESHOLD = 0.5             # the decision threshold of a bundle that records none (made before thresholds)
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
    def threshold(self) -> float:
        """The probability of positive at or above which a review is labelled positive: the one chosen on the
        validation split and recorded in bundle.json (pipeline.model.scoring.choose_threshold)."""
        return threshold_of(self.manifest)

    @property
    def runtime(self) -> str:
        """The network runtime(s): "onnx", "keras" (an ensemble: its members', joined by "+")."""
        raise NotImplementedError

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) of each raw text, float32 (n,)."""
        raise NotImplementedError

    def predict(self, texts: list[str], batch_size: int = BATCH_SIZE, explain: bool = False) -> list[dict]:
        """One record per text: text, label (1 = positive), sentiment, probability, empty, unknown; with `explain`
        each record's `explanation` too (pipeline.predict.explain)."""
        if not explain:
            return self.finish(texts, {}, batch_size)
        records, explanations = self.explained(texts, batch_size)
        for record, explanation in zip(records, explanations, strict=True):
            record["explanation"] = explanation
        return records

    def explained(self, texts: list[str], batch_size: int) -> tuple[list[dict], list[dict]]:
        """The records of `texts` and an explanation of each."""
        raise NotImplementedError

    def analyzed_members(self) -> list:
        """The bundles whose morpheme analysis `stream_records` may run in worker processes."""
        raise NotImplementedError

    def finish(self, texts: list[str], pending_ids: dict, batch_size: int) -> list[dict]:
        """The records of `texts`; `pending_ids`: the padded ids worker processes are making of them, by id() of
        the member bundle (`analyzed_members`), computed here for the members not in it."""
        raise NotImplementedError

    def predict_stream(self, batches: Iterable[list[str]], workers: int = 1, batch_size: int = BATCH_SIZE,
                       pool_after: int = 0) -> Iterator[list[dict]]:
        """Records for each batch of texts, in order, as soon as they are computed (see `stream_records`)."""
        from pipeline.predict.streaming import stream_records

        return stream_records(self, batches, workers, batch_size, pool_after)


def threshold_of(manifest: dict) -> float:
    """The decision threshold bundle.json records; THRESHOLD for a bundle that records none. PipelineError for
    one that is not a number between 0 and 1 (a damaged bundle.json)."""
    entry = manifest.get("threshold")
    if entry is None:
        return THRESHOLD
    value = entry.get("value") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise PipelineError(f"bundle.json of {manifest.get('corpus')}/{manifest.get('tok')} records the threshold "
                            f"{entry!r}, not a probability between 0 and 1: it is damaged - re-make the bundle")
    return float(value)


def val_accuracy_of(manifest: dict) -> float | None:
    """A bundle's validation accuracy at its decision threshold (bundle.json), else the best epoch's at 0.5
    (bundles made before thresholds); None if it records neither."""
    entry = manifest.get("threshold")
    if isinstance(entry, dict) and isinstance(entry.get("val_accuracy"), (int, float)):
        return float(entry["val_accuracy"])
    value = (manifest.get("training") or {}).get("best_val_accuracy")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def unknown_rows(x: np.ndarray) -> np.ndarray:
    """Rows of padded ids with no token of the vocabulary (only padding and out-of-vocabulary ids)."""
    from pipeline.text.vocab import OOV_ID

    return ~(np.asarray(x) > OOV_ID).any(axis=1)


def to_records(texts, probabilities, empty, unknown, threshold: float) -> list[dict]:
    """One record per text: label by `threshold`; `empty`: nothing to read after cleaning; `unknown`: no token
    the model knows (empty reviews included), so its answer says nothing about the text."""
    if not np.isfinite(probabilities).all():    # damaged weights: NaN is no answer, and not JSON either
        raise PipelineError("the network gave a probability that is not a number: its weights are damaged; "
                            "re-make the bundle (ksent train)")
    return [{"text": text, "label": int(p >= threshold), "sentiment": "positive" if p >= threshold else "negative",
             "probability": float(p), "empty": bool(e), "unknown": bool(u)}
            for text, p, e, u in zip(texts, probabilities, empty, unknown, strict=True)]
