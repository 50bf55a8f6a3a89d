"""Scoring a model's test probabilities: metrics, predictions.csv, the confusion plot and REPORT.md.

Shared by the evaluate stage (one bundle) and the ensemble stage (several bundles combined),
so both report the same figures the same way.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def compute_metrics(y_true, probability, threshold: float = 0.5) -> dict:
    """Accuracy, balanced accuracy, each class's recall, precision, recall, F1 (positive class = 1), ROC-AUC
    and the confusion matrix, at `threshold`.

    ROC-AUC is None when only one class is present, and so is a class's recall without that class;
    everything is None for no rows.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, dtype=float)
    if len(y_true) == 0:
        return {"n": 0, "accuracy": None, "balanced_accuracy": None, "recall_negative": None,
                "recall_positive": None, "precision": None, "recall": None, "f1": None, "roc_auc": None,
                "confusion_matrix": None}
    predicted = (probability >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    recall_negative = float(tn / (tn + fp)) if tn + fp else None
    recall_positive = float(tp / (tp + fn)) if tp + fn else None
    recalls = [r for r in (recall_negative, recall_positive) if r is not None]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        # the mean of the two classes' recalls: what a model that calls every review positive scores 0.5 on
        "balanced_accuracy": float(np.mean(recalls)),
        "recall_negative": recall_negative,
        "recall_positive": recall_positive,
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, probability)) if len(set(y_true)) == 2 else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)     # the thresholds choose_threshold tries
SMOOTHING = 2                                                    # grid steps on either side averaged over
SIGNIFICANCE_Z = 1.96                                            # McNemar's test at p < 0.05 (two-sided)


def choose_threshold(y_true, probability, rule) -> dict:
    """The decision threshold for a model's validation labels `y_true` and probabilities, by `rule`, and how
    the model scores at it and at 0.5 (the bundle.json entry every predictor applies).

    "accuracy": the threshold with the best validation accuracy - kept at 0.5 unless the reviews it gets
    right that 0.5 gets wrong outnumber the reverse significantly (McNemar's test, p < 0.05), so a balanced
    corpus's threshold does not drift with validation noise. "balanced": the best balanced accuracy (the
    mean of the classes' recalls), for a corpus where one class is rare. A number: that threshold. Scores
    are averaged over neighbouring thresholds (SMOOTHING) before the best is taken, ties going to the
    threshold nearest 0.5.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probability, dtype=np.float64)
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        value = float(rule)
    elif rule in ("accuracy", "balanced") and len(y) and len(set(y)) == 2:
        score = "accuracy" if rule == "accuracy" else "balanced_accuracy"
        scores = np.array([_score(y, p >= t, score) for t in THRESHOLD_GRID])
        smoothed = np.array([scores[max(0, i - SMOOTHING):i + SMOOTHING + 1].mean() for i in range(len(scores))])
        best = np.flatnonzero(smoothed >= smoothed.max() - 1e-12)
        value = float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]])
        if rule == "accuracy":
            gained = int(((p >= value) == y).sum() - ((p >= 0.5) == y).sum())
            changed = int(((p >= value) != (p >= 0.5)).sum())
            if gained <= SIGNIFICANCE_Z * np.sqrt(changed):
                value = 0.5
    elif rule in ("accuracy", "balanced"):
        value = 0.5                     # one class only: nothing to choose on
    else:
        raise ValueError(f"threshold rule must be accuracy, balanced or a number, got {rule!r}")
    at = compute_metrics(y, p, value)
    half = compute_metrics(y, p, 0.5)
    return {"value": value, "rule": rule if isinstance(rule, str) else "fixed",
            "val_accuracy": _rounded(at["accuracy"]), "val_balanced_accuracy": _rounded(at["balanced_accuracy"]),
            "at_0.5": {"val_accuracy": _rounded(half["accuracy"]),
                       "val_balanced_accuracy": _rounded(half["balanced_accuracy"])}}


def threshold_text(entry: dict) -> str:
    """How a summary line names a threshold entry: "threshold 0.5", or "threshold 0.62 (val balanced accuracy
    0.8100, 0.7900 at 0.5)"."""
    if entry["value"] == 0.5:
        return "threshold 0.5"
    score = "balanced_accuracy" if entry["rule"] == "balanced" else "accuracy"
    name = score.replace("_", " ")
    return (f"threshold {entry['value']:g} (val {name} {entry[f'val_{score}']:.4f}, "
            f"{entry['at_0.5'][f'val_{score}']:.4f} at 0.5)")


def _score(y: np.ndarray, predicted: np.ndarray, score: str) -> float:
    if score == "accuracy":
        return float((predicted == y).mean())
    return float(np.mean([(predicted[y == k] == k).mean() for k in (0, 1)]))


def _rounded(value):
    return None if value is None else round(float(value), 6)


def unique_text_mask(texts) -> np.ndarray:
    """True for rows whose text occurs exactly once in `texts`."""
    _, inverse, counts = np.unique(np.asarray(texts, dtype=str), return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)] == 1


def plot_confusion(path: Path, matrix: dict, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = np.array([[matrix["tn"], matrix["fp"]], [matrix["fn"], matrix["tp"]]])
    share = cells / max(cells.sum(), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(cells, cmap="Blues")
    for (i, j), count in np.ndenumerate(cells):
        ax.text(j, i, f"{count:,}\n{share[i, j]:.1%}", ha="center", va="center",
                color="white" if count > cells.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["negative", "positive"],
           yticklabels=["negative", "positive"], xlabel="predicted", ylabel="true label", title=title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_predictions(path: Path, ids, texts, labels, probability: np.ndarray, threshold: float) -> None:
    import pandas as pd

    table = pd.DataFrame({"id": np.asarray(ids, dtype=str), "text": np.asarray(texts, dtype=str),
                          "label": np.asarray(labels, dtype=int),
                          # float64 holding the float32 exactly; written with full (repr) precision
                          "probability": probability.astype(np.float64),
                          "predicted": (probability >= threshold).astype(int)})
    table.to_csv(path, index=False)


def split_metrics(y, probability, texts, seen_texts, threshold: float) -> dict:
    """Metrics at `threshold` on the whole test split, on its rows with unique text and on those unseen in
    training; and the whole split's accuracy and balanced accuracy at 0.5, for comparison."""
    unique = unique_text_mask(texts)
    unseen = ~np.isin(texts, seen_texts)
    half = compute_metrics(y, probability, 0.5)
    return {
        "threshold": float(threshold),
        **{k: v for k, v in compute_metrics(y, probability, threshold).items() if k != "n"},
        "at_0.5": {"accuracy": half["accuracy"], "balanced_accuracy": half["balanced_accuracy"]},
        "unique_text_test": {"description": "test rows whose raw text occurs exactly once in the test split",
                             **compute_metrics(y[unique], probability[unique], threshold)},
        "unseen_text_test": {"description": "test rows whose raw text occurs in neither the train nor the "
                                            "validation split",
                             **compute_metrics(y[unseen], probability[unseen], threshold)},
    }


def summary(label: str, metrics: dict) -> str:
    """The one-line summary evaluate and ensemble print."""
    return (f"{label}: test accuracy {metrics['accuracy']:.4f}, "
            f"balanced {format_figure(metrics.get('balanced_accuracy'))} "
            f"(threshold {metrics.get('threshold', 0.5):g}), F1 {metrics['f1']:.4f}, "
            f"ROC-AUC {format_figure(metrics['roc_auc'])} on {metrics['n_test']:,} rows; unique-text rows "
            f"{metrics['unique_text_test']['n']:,}: accuracy {format_figure(metrics['unique_text_test']['accuracy'])}; "
            f"rows unseen in training {metrics['unseen_text_test']['n']:,}: accuracy "
            f"{format_figure(metrics['unseen_text_test']['accuracy'])}")


def format_figure(value, digits: int = 4) -> str:
    """A metric as printed: 4 decimals, '-' for none."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
