"""A router bundle: one expert bundle per corpus (domain) and a gate that says which corpus a review is
like (written by the router stage). P(positive) = sum over corpora of P(corpus | text) * that corpus's
expert's P(positive): a movie review is answered by the movie model, a shopping review by the
shopping model, and a review like both by both.

Each expert's probability is first moved so that its own decision threshold sits at 0.5 (its log-odds
minus the threshold's): the router's threshold is 0.5, and a review the gate sends to one expert gets
that expert's label."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.model.gate import DomainGate
from pipeline.predict.predictor import MAX_CHARS, Predictor, to_records
from pipeline.predict.runtime import BATCH_SIZE


@dataclass
class RouterBundle(Predictor):
    directory: Path
    experts: list                     # Predictors (bundles or ensembles), in the gate's domain order
    gate: DomainGate
    manifest: dict
    notes: tuple[str, ...] = ()

    @property
    def runtime(self) -> str:
        return "+".join(sorted({part for e in self.experts for part in e.runtime.split("+")}))

    def _gate(self, texts: list[str]) -> np.ndarray:
        return self.gate.proba([t[-MAX_CHARS:] for t in texts])

    @property
    def threshold(self) -> float:
        return 0.5                      # the experts' own thresholds are applied before mixing (`_weighted`)

    def _weighted(self, weights: np.ndarray, probabilities: list) -> np.ndarray:
        """sum over experts of P(corpus) * that expert's P(positive) moved to its threshold, float32."""
        total = sum(weights[:, d] * at_threshold(p, e.threshold)
                    for d, (p, e) in enumerate(zip(probabilities, self.experts, strict=True)))
        return np.asarray(total, dtype=np.float32)

    def _mix(self, texts: list[str], weights: np.ndarray, records: list[list[dict]]) -> list[dict]:
        """The records of `texts` from each expert's records."""
        probability = self._weighted(weights, [[r["probability"] for r in recs] for recs in records])
        empty = np.logical_and.reduce([[r["empty"] for r in recs] for recs in records])
        unknown = np.logical_and.reduce([[r["unknown"] for r in recs] for recs in records])
        return to_records(texts, probability, empty, unknown, self.threshold)

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        return self._weighted(self._gate(texts), [e.predict_proba(texts, batch_size) for e in self.experts])

    def explained(self, texts: list[str], batch_size: int) -> tuple[list[dict], list[dict]]:
        """The gate's weights and each expert's own explanation."""
        weights = self._gate(texts)
        per_expert = [e.predict(texts, batch_size, explain=True) for e in self.experts]
        records = self._mix(texts, weights, per_expert)
        return records, [{"experts": [
            {"name": e.directory.name, "domain": d, "weight": float(weights[i, k]),
             "probability": per_expert[k][i]["probability"], **per_expert[k][i]["explanation"]}
            for k, (d, e) in enumerate(zip(self.gate.domains, self.experts, strict=True))]}
            for i in range(len(records))]

    def analyzed_members(self, domain: str | None = None) -> list:
        """The members whose ids can be analysed ahead: every expert's, or only `domain`'s expert's."""
        return [m for e in (self.experts if domain is None else [self.expert(domain)]) for m in e.analyzed_members()]

    def expert(self, domain: str) -> Predictor:
        return self.experts[list(self.gate.domains).index(domain)]

    def finish(self, texts: list[str], pending_ids: dict, batch_size: int,
               domain: str | None = None) -> list[dict]:
        """The records of `texts`. With `domain` - texts known to come from that corpus - the known corpus takes the
        gate's place: only its expert runs, as if the gate had given it all the weight."""
        if domain is None:
            return self._mix(texts, self._gate(texts),
                             [e.finish(texts, pending_ids, batch_size) for e in self.experts])
        expert = self.expert(domain)
        records = expert.finish(texts, pending_ids, batch_size)
        probability = at_threshold([r["probability"] for r in records], expert.threshold).astype(np.float32)
        return to_records(texts, probability, [r["empty"] for r in records], [r["unknown"] for r in records],
                          self.threshold)


def at_threshold(probability, threshold: float) -> np.ndarray:
    """`probability` moved so that `threshold` maps to 0.5: the sigmoid of its log-odds minus the threshold's
    (the identity for 0.5), float64."""
    p = np.asarray(probability, dtype=np.float64)
    if threshold == 0.5:
        return p
    shift = np.log(threshold) - np.log1p(-threshold)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    return 1.0 / (1.0 + np.exp(-(logit - shift)))
