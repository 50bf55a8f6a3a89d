"""Decision thresholds (pipeline.model.scoring.choose_threshold): chosen on validation, applied by predictors."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.model.scoring import choose_threshold, compute_metrics
from pipeline.predict.predictor import threshold_of, to_records
from pipeline.predict.router import at_threshold


def _calibrated(n: int, positive_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a calibrated model: P(label = 1 | p) = p."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(np.log(positive_share / (1 - positive_share)), 1.5, n)
    p = 1 / (1 + np.exp(-logit))
    return (rng.random(n) < p).astype(int), p


def test_accuracy_keeps_0_5_for_a_calibrated_model_and_moves_for_a_biased_one():
    y, p = _calibrated(20_000, 0.5, seed=1)
    assert choose_threshold(y, p, "accuracy")["value"] == 0.5      # validation noise does not move it
    biased = 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p) + 1.5)))  # the same model, saying positive too often
    moved = choose_threshold(y, biased, "accuracy")
    assert moved["value"] > 0.7 and moved["val_accuracy"] > moved["at_0.5"]["val_accuracy"] + 0.02


def test_balanced_raises_the_rare_class_recall_on_imbalanced_labels():
    y, p = _calibrated(20_000, 0.8, seed=2)                        # 80% positive
    chosen = choose_threshold(y, p, "balanced")
    assert chosen["value"] > 0.6
    at, half = compute_metrics(y, p, chosen["value"]), compute_metrics(y, p, 0.5)
    assert at["balanced_accuracy"] > half["balanced_accuracy"] + 0.03
    assert at["recall_negative"] > half["recall_negative"]
    assert chosen["val_balanced_accuracy"] == pytest.approx(at["balanced_accuracy"], abs=1e-6)


def test_a_number_is_taken_as_it_is_and_one_class_keeps_0_5():
    y, p = _calibrated(1000, 0.5, seed=3)
    assert choose_threshold(y, p, 0.3)["value"] == 0.3 and choose_threshold(y, p, 0.3)["rule"] == "fixed"
    assert choose_threshold(np.ones(50, int), p[:50], "balanced")["value"] == 0.5
    with pytest.raises(ValueError):
        choose_threshold(y, p, "recall")


def test_records_follow_the_threshold_and_a_damaged_one_is_refused():
    records = to_records(["a", "b"], np.array([0.55, 0.7]), [False, False], [False, False], 0.6)
    assert [r["label"] for r in records] == [0, 1]
    assert threshold_of({}) == 0.5 and threshold_of({"threshold": {"value": 0.62}}) == 0.62
    for damaged in ({"value": 1.5}, {"value": "0.5"}, {"value": True}, "0.5"):
        with pytest.raises(PipelineError, match="damaged"):
            threshold_of({"threshold": damaged, "corpus": "c", "tok": "t"})


def test_a_router_moves_each_experts_probability_to_its_threshold():
    p = np.array([0.0, 0.3, 0.62, 0.9, 1.0])
    moved = at_threshold(p, 0.62)
    assert moved[2] == pytest.approx(0.5) and moved[0] == 0 and moved[-1] == 1
    assert np.all(np.diff(moved) > 0) and ((moved >= 0.5) == (p >= 0.62)).all()
    np.testing.assert_array_equal(at_threshold(p, 0.5), p)
