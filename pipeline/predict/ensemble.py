"""An ensemble bundle: member bundles whose probabilities are combined (written by the ensemble stage)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.params import ENSEMBLE
from pipeline.predict.predictor import Predictor, to_records, unknown_rows
from pipeline.predict.runtime import BATCH_SIZE

COMBINATIONS = ENSEMBLE.params["combination"].choices
_EPS = 1e-7


def combine(probabilities: list[np.ndarray], weights: list[float],
            combination: str = ENSEMBLE["combination"]) -> np.ndarray:
    """An ensemble's P(positive), float32, from its members' (one order of summation, so that the ensemble
    stage and prediction compute the same numbers).

    "mean": the weighted mean of the probabilities; "logit-mean": the sigmoid of the weighted mean
    of their log-odds, so a member that is sure counts for more than one that is barely sure.
    """
    if combination not in COMBINATIONS:
        raise PipelineError(f"unknown ensemble combination {combination!r} (this ksent knows "
                            f"{', '.join(COMBINATIONS)}) - re-run `ksent ensemble` or update ksent")
    total = np.zeros(len(probabilities[0]), dtype=np.float64)
    for p, w in zip(probabilities, weights, strict=True):
        p = np.asarray(p, dtype=np.float64)
        if combination == "logit-mean":
            p = np.clip(p, _EPS, 1 - _EPS)
            p = np.log(p) - np.log1p(-p)
        total += w * p
    if combination == "logit-mean":
        total = 1.0 / (1.0 + np.exp(-total))
    return total.astype(np.float32)


@dataclass
class EnsembleBundle(Predictor):
    """Bundles whose probabilities are averaged (written by the ensemble stage); predicts like a Bundle.

    Each member replays its own preprocessing, so an ensemble may mix tokenizations.
    """
    directory: Path
    members: list                          # of pipeline.predict.bundle.Bundle
    weights: list[float]
    manifest: dict
    notes: tuple[str, ...] = ()
    combination: str = "mean"               # see `combine`

    @property
    def runtime(self) -> str:
        return "+".join(sorted({m.runtime for m in self.members}))

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        return self.proba_of_ids([m.transform(texts) for m in self.members], batch_size)

    def _records(self, texts: list[str], xs: list[np.ndarray], batch_size: int) -> list[dict]:
        """The records from each member's padded ids: empty (unknown) where no member saw a (known) token."""
        return to_records(texts, self.proba_of_ids(xs, batch_size), np.logical_and.reduce([~x.any(axis=1) for x in xs]),
                          np.logical_and.reduce([unknown_rows(x) for x in xs]), self.threshold)

    def explained(self, texts: list[str], batch_size: int) -> tuple[list[dict], list[dict]]:
        """One explanation per member, on that member's own tokens, with its weight."""
        from pipeline.predict.explain import explain_many

        token_lists = [m.tokens(texts) for m in self.members]    # each member segments once
        records = self._records(texts, [m.preprocessor.ids(t) for m, t in zip(self.members, token_lists, strict=True)],
                                batch_size)
        per_member = [explain_many(m, texts, t) for m, t in zip(self.members, token_lists, strict=True)]
        return records, [{"members": [{"name": m.directory.name, "weight": w, **explanations[i]}
                                      for m, w, explanations in zip(self.members, self.weights, per_member,
                                                                    strict=True)]}
                         for i in range(len(records))]

    def analyzed_members(self) -> list:
        return [m for m in self.members if m.preprocessor.segmenter.kind == "morpheme"]

    def member_ids(self, texts: list[str], pending_ids: dict | None = None) -> list[np.ndarray]:
        """Each member's padded ids of `texts`; `pending_ids`: the analyzed members' ids of them, being
        computed in worker processes (pending SegmentPool results by id(member)), where there are some."""
        pending_ids = pending_ids or {}
        return [pending_ids[id(m)].ids() if id(m) in pending_ids else m.transform(texts) for m in self.members]

    def proba_of_ids(self, xs: list[np.ndarray], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """P(positive) from each member's padded ids (`member_ids`)."""
        return combine([m.predict_ids(x, batch_size) for m, x in zip(self.members, xs, strict=True)],
                       self.weights, self.combination)

    def finish(self, texts: list[str], pending_ids: dict, batch_size: int) -> list[dict]:
        return self._records(texts, self.member_ids(texts, pending_ids), batch_size)
