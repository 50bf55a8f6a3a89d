"""Scoring a model's test probabilities: metrics, predictions.csv, the confusion plot and REPORT.md.

Shared by the evaluate stage (one bundle) and the ensemble stage (several bundles combined),
so both report the same figures the same way.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.core.files import read_json


def compute_metrics(y_true, probability, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1 (positive class = 1), ROC-AUC and the confusion matrix.

    ROC-AUC is None when only one class is present; everything is None for no rows.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, dtype=float)
    if len(y_true) == 0:
        return {"n": 0, "accuracy": None, "precision": None, "recall": None, "f1": None, "roc_auc": None,
                "confusion_matrix": None}
    predicted = (probability >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, probability)) if len(set(y_true)) == 2 else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


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
    """Metrics on the whole test split, on its rows with unique text, and on those unseen in training."""
    unique = unique_text_mask(texts)
    unseen = ~np.isin(texts, seen_texts)
    return {
        **{k: v for k, v in compute_metrics(y, probability, threshold).items() if k != "n"},
        "unique_text_test": {"description": "test rows whose raw text occurs exactly once in the test split",
                             **compute_metrics(y[unique], probability[unique], threshold)},
        "unseen_text_test": {"description": "test rows whose raw text occurs in neither the train nor the "
                                            "validation split",
                             **compute_metrics(y[unseen], probability[unseen], threshold)},
    }


def summary(label: str, metrics: dict) -> str:
    """The one-line summary evaluate and ensemble print."""
    return (f"{label}: test accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}, "
            f"ROC-AUC {_fmt(metrics['roc_auc'])} on {metrics['n_test']:,} rows; unique-text rows "
            f"{metrics['unique_text_test']['n']:,}: accuracy {_fmt(metrics['unique_text_test']['accuracy'])}; "
            f"rows unseen in training {metrics['unseen_text_test']['n']:,}: accuracy "
            f"{_fmt(metrics['unseen_text_test']['accuracy'])}")


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _size(n_bytes) -> str:
    if n_bytes is None:
        return "-"
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.0f} kB"


def _count(value) -> str:
    return "-" if value is None else f"{value:,}"


def _plots(artifacts_dir: Path, folder: str) -> str:
    return " · ".join(f"[{name}]({folder}/{name}.png)" for name in ("curves", "confusion")
                      if (artifacts_dir / folder / f"{name}.png").is_file())


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds / 60:.1f} min" if seconds >= 100 else f"{seconds:.0f} s"


def _bundle_metrics(artifacts_dir: Path) -> list[tuple[str, dict | None]]:
    """(bundle folder name, its metrics.json, None if unreadable or not an object) for every evaluated bundle."""
    found = []
    for path in sorted(artifacts_dir.glob("*/metrics.json")):
        try:
            metrics = read_json(path)
        except (OSError, ValueError):
            metrics = None
        found.append((path.parent.name, metrics if isinstance(metrics, dict) else None))
    return found


def report_text(artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> tuple[str, int]:
    """REPORT.md's text: one table row per <bundle>/metrics.json, best first per corpus; and the row count."""
    artifacts_dir = Path(artifacts_dir)
    rows, unreadable = [], []
    for folder, m in _bundle_metrics(artifacts_dir):
        try:
            rows.append((m["corpus"], -(m.get("accuracy") or 0.0), m["tokenizer"], folder, m))
        except (KeyError, TypeError):
            unreadable.append(folder)
    lines = [
        "# ksent model report",
        "",
        "Regenerated by `ksent evaluate` (or `ksent report`) from every `<bundle>/metrics.json`; "
        "do not edit. Test figures are for comparison only: models are selected on validation "
        "accuracy. *Unique-text acc.* counts only the test rows whose raw text occurs once in the test split; "
        "*unseen-text acc.* only those whose raw text is in neither the train nor the validation split.",
        "",
        "| corpus | tokenizer | accuracy | F1 | ROC-AUC | unique-text acc. | unseen-text acc. | val acc. | vocab "
        "| maxlen | params | training | model size | plots |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for corpus, _, tok, folder, m in sorted(rows):
        unique, unseen = m.get("unique_text_test") or {}, m.get("unseen_text_test") or {}
        lines.append(
            f"| {corpus} | {tok} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('f1'))} | {_fmt(m.get('roc_auc'))} "
            f"| {_fmt(unique.get('accuracy'))} ({unique.get('n', 0):,}) "
            f"| {_fmt(unseen.get('accuracy'))} ({unseen.get('n', 0):,}) | {_fmt(m.get('best_val_accuracy'))} "
            f"| {_count(m.get('vocab_size'))} | {m.get('maxlen') or '-'} | {_count(m.get('params'))} "
            f"| {_duration(m.get('train_seconds'))} | {_size(m.get('model_bytes'))} "
            f"| {_plots(artifacts_dir, folder)} |")
    if not rows:
        lines.append("| *no evaluated models yet: run `ksent run --corpus nsmc`* ||||||||||||||")
    if unreadable:
        lines += ["", f"Unreadable metrics.json (skipped): {', '.join(unreadable)}."]
    from pipeline.stages.domains import matrix_lines

    lines += matrix_lines(artifacts_dir)
    return "\n".join(lines) + "\n", len(rows)


def summary_lines(artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> list[str]:
    """A short terminal table of every evaluated bundle (test and validation accuracy, training time), the
    router's figures on each corpus when there is one, and which model is the default: how `make all` ends."""
    artifacts_dir = Path(artifacts_dir)
    rows = []
    for folder, m in _bundle_metrics(artifacts_dir):
        try:
            rows.append((folder, _fmt(m.get("accuracy")), _fmt(m.get("best_val_accuracy")),
                         _duration(m.get("train_seconds"))))
        except (AttributeError, TypeError, ValueError):  # unreadable (None), or figures that are not numbers
            rows.append((folder, "unreadable", "-", "-"))
    try:
        domains = read_json(artifacts_dir / "domains.json")
        router = domains["bundles"]["router"]["cells"]
        for corpus in domains["corpora"]:
            rows.append((f"router on {corpus}", _fmt(router[corpus]["test"]["accuracy"]),
                         _fmt(router[corpus]["val"]["accuracy"]), "-"))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not rows:
        return [f"no evaluated model in {artifacts_dir}/"]
    header = ("model", "test acc.", "val. acc.", "training")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in
                       enumerate(zip(row, widths, strict=True))) for row in [header, *rows]]
    try:
        from pipeline.predict.selection import default_model_dir

        lines.append(f"default model (ksent predict without --model): {default_model_dir(artifacts_dir).name}")
    except Exception:  # noqa: BLE001 - a summary names no default rather than fail
        pass
    lines.append(f"details: {layout.report_path(artifacts_dir)}")
    return lines
