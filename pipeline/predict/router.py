"""A router bundle: one expert bundle per corpus (domain) and a gate that says which corpus a review is
like (written by the router stage). P(positive) = sum over corpora of P(corpus | text) * that corpus's
expert's P(positive): a movie review is answered by the movie model, a shopping review by the
shopping model, and a review like both by both."""
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

    @staticmethod
    def _weighted(weights: np.ndarray, probabilities: list) -> np.ndarray:
        """sum over experts of P(corpus) * that expert's P(positive), float32."""
        total = sum(weights[:, d] * np.asarray(p, dtype=np.float64) for d, p in enumerate(probabilities))
        return np.asarray(total, dtype=np.float32)

    def _mix(self, texts: list[str], weights: np.ndarray, records: list[list[dict]]) -> list[dict]:
        """The records of `texts` from each expert's records."""
        probability = self._weighted(weights, [[r["probability"] for r in recs] for recs in records])
        empty = np.logical_and.reduce([[r["empty"] for r in recs] for recs in records])
        return to_records(texts, probability, empty)

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        return self._weighted(self._gate(texts), [e.predict_proba(texts, batch_size) for e in self.experts])

    def predict(self, texts: list[str], batch_size: int = BATCH_SIZE, explain: bool = False) -> list[dict]:
        """As Bundle.predict; an explanation is the gate's weights and each expert's own explanation."""
        weights = self._gate(texts)
        per_expert = [e.predict(texts, batch_size, explain=explain) for e in self.experts]
        records = self._mix(texts, weights, per_expert)
        if explain:
            for i, record in enumerate(records):
                record["explanation"] = {"experts": [
                    {"name": e.directory.name, "domain": d, "weight": float(weights[i, k]),
                     "probability": per_expert[k][i]["probability"], **per_expert[k][i]["explanation"]}
                    for k, (d, e) in enumerate(zip(self.gate.domains, self.experts, strict=True))]}
        return records

    def analyzed_members(self) -> list:
        return [m for e in self.experts for m in e.analyzed_members()]

    def finish(self, texts: list[str], pending_ids: dict, batch_size: int) -> list[dict]:
        return self._mix(texts, self._gate(texts), [e.finish(texts, pending_ids, batch_size) for e in self.experts])
