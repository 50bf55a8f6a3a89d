"""evaluate: score a trained bundle on the test split, then rewrite the comparison report.

Inputs: data/processed/<corpus>/<tok>/test.npz (+ its tokenizer.json, to check it is the
model's, and train.npz/val.npz, for the texts seen in training) and the bundle
artifacts/<corpus>-<tok>/ (model.onnx, model.keras, tokenizer.json, bundle.json, train.manifest.json).
Outputs beside the bundle: metrics.json, confusion.png, predictions.csv (id, text, label,
probability, predicted). Then artifacts/REPORT.md is regenerated from every bundle's
metrics.json (`write_report`).

The model is loaded through pipeline.bundle.load_bundle and scored with the same runtime
(model.onnx) and batching code as `ksent predict`, so evaluated and served probabilities agree.
Besides the whole test split, metrics are given for the rows whose raw text is
unique within it (stock phrases such as "굿" or "최고" repeat many times in NSMC's
test file and weigh on its accuracy) and for the rows whose raw text does not occur in
the train or validation split (NSMC's upstream files share about 1,600 texts).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import params as defaults
from pipeline.io import (
    Input,
    PipelineError,
    Stage,
    StageResult,
    Staging,
    folder_lock,
    read_json,
    read_npz,
    run_stage,
    sha256_file,
    write_json,
    write_text,
)

REPORT_FILE = "REPORT.md"


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


def _plot_confusion(path: Path, matrix: dict, title: str) -> None:
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


def _write_predictions(path: Path, ids, texts, labels, probability: np.ndarray, threshold: float) -> None:
    import pandas as pd

    table = pd.DataFrame({"id": np.asarray(ids, dtype=str), "text": np.asarray(texts, dtype=str),
                          "label": np.asarray(labels, dtype=int),
                          # float64 holding the float32 exactly; written with full (repr) precision
                          "probability": probability.astype(np.float64),
                          "predicted": (probability >= threshold).astype(int)})
    table.to_csv(path, index=False)


def plan(corpus: str, tok: str, *, data_dir: Path | str = defaults.DATA_DIR,
         artifacts_dir: Path | str = defaults.ARTIFACTS_DIR) -> Stage:
    from pipeline.bundle import THRESHOLD

    src = Path(data_dir) / "processed" / corpus / tok
    bundle_dir = Path(artifacts_dir) / f"{corpus}-{tok}"
    inputs = {name: Input(src / name, "pad") for name in ("test.npz", "train.npz", "val.npz")}
    inputs["processed tokenizer.json"] = Input(src / "tokenizer.json", "pad")
    inputs.update({name: Input(bundle_dir / name, "train")
                   for name in ("model.keras", "model.onnx", "tokenizer.json", "bundle.json")})
    return Stage("evaluate", f"{corpus}/{tok}", bundle_dir, inputs=inputs, params={"threshold": THRESHOLD},
                 outputs=("metrics.json", "confusion.png", "predictions.csv"))


def evaluate(corpus: str, tok: str, *, data_dir: Path | str = defaults.DATA_DIR,
             artifacts_dir: Path | str = defaults.ARTIFACTS_DIR, force: bool = False,
             echo: Callable[[str], None] | None = None) -> StageResult:
    """Score <artifacts_dir>/<corpus>-<tok>/ on the test split; write metrics and REPORT.md."""
    from pipeline.bundle import THRESHOLD

    stage = plan(corpus, tok, data_dir=data_dir, artifacts_dir=artifacts_dir)
    inputs = {name: inp.path for name, inp in stage.inputs.items()}
    bundle_dir, label = stage.folder, stage.label

    def run(out: Staging) -> StageResult:
        from pipeline.bundle import load_bundle

        bundle = load_bundle(bundle_dir)
        if sha256_file(inputs["processed tokenizer.json"]) != bundle.manifest["tokenizer"]["sha256"]:
            raise PipelineError(f"evaluate {label}: {inputs['test.npz'].parent}/ was padded with a different "
                                f"tokenizer.json than the model was trained with - re-run "
                                f"`ksent train --corpus {corpus}` (see `ksent status`)")
        test = read_npz(inputs["test.npz"], "pad", label, ("x", "y", "ids", "text"))
        x, y, ids, texts = test["x"], test["y"], test["ids"], test["text"]
        if not len(y):
            raise PipelineError(f"evaluate {label}: the test split is empty")
        if x.ndim != 2 or x.shape[1] != bundle.preprocessor.maxlen:
            raise PipelineError(f"evaluate {label}: test.npz has shape {x.shape}, the bundle's "
                                f"maxlen is {bundle.preprocessor.maxlen} - re-run the pad and train stages")
        probability = bundle.predict_ids(x)
        unique = unique_text_mask(texts)
        seen = np.concatenate([read_npz(inputs[name], "pad", label, ("text",))["text"]
                               for name in ("train.npz", "val.npz")])
        unseen = ~np.isin(texts, seen)
        trained = bundle.manifest.get("training") or {}
        metrics = {
            "corpus": corpus, "tokenizer": tok, "threshold": THRESHOLD, "n_test": int(len(y)),
            **{k: v for k, v in compute_metrics(y, probability, THRESHOLD).items() if k != "n"},
            "unique_text_test": {"description": "test rows whose raw text occurs exactly once in the test split",
                                 **compute_metrics(y[unique], probability[unique], THRESHOLD)},
            "unseen_text_test": {"description": "test rows whose raw text occurs in neither the train nor the "
                                                "validation split",
                                 **compute_metrics(y[unseen], probability[unseen], THRESHOLD)},
            "empty_test_rows": int((~x.any(axis=1)).sum()),
            "vocab_size": int(bundle.preprocessor.vocab_size), "maxlen": int(bundle.preprocessor.maxlen),
            "params": int(bundle.manifest["model"]["params"]),
            "model_bytes": (bundle_dir / "model.keras").stat().st_size,
            **{k: trained.get(k) for k in ("train_seconds", "epochs_run", "best_epoch", "best_val_accuracy")},
        }
        write_json(out.path("metrics.json"), metrics)
        _plot_confusion(out.path("confusion.png"), metrics["confusion_matrix"],
                        f"{corpus} / {tok}: accuracy {metrics['accuracy']:.4f}")
        _write_predictions(out.path("predictions.csv"), ids, texts, y, probability, THRESHOLD)
        summary = (f"evaluate {label}: test accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}, "
                   f"ROC-AUC {_fmt(metrics['roc_auc'])} on {len(y):,} rows; unique-text rows "
                   f"{metrics['unique_text_test']['n']:,}: accuracy {_fmt(metrics['unique_text_test']['accuracy'])}; "
                   f"rows unseen in training {metrics['unseen_text_test']['n']:,}: accuracy "
                   f"{_fmt(metrics['unseen_text_test']['accuracy'])}")
        return StageResult(summary=summary, counts={k: metrics[k] for k in (
            "n_test", "accuracy", "f1", "roc_auc", "empty_test_rows")})

    result = run_stage(stage, run, force=force, echo=echo)
    write_report(artifacts_dir)
    return result


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _size(n_bytes) -> str:
    if n_bytes is None:
        return "-"
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e3:.0f} kB"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    return f"{seconds / 60:.1f} min" if seconds >= 100 else f"{seconds:.0f} s"


def write_report(artifacts_dir: Path | str = defaults.ARTIFACTS_DIR) -> Path:
    """Rewrite <artifacts_dir>/REPORT.md: one table row per <bundle>/metrics.json, best first per corpus."""
    path = Path(artifacts_dir) / REPORT_FILE
    with folder_lock(path, "report"):           # read every metrics.json and write, as one writer
        write_text(path, _report(Path(artifacts_dir)))
    return path


def _report(artifacts_dir: Path) -> str:
    rows, unreadable = [], []
    for path in sorted(artifacts_dir.glob("*/metrics.json")):
        try:
            m = read_json(path)
            rows.append((m["corpus"], -(m.get("accuracy") or 0.0), m["tokenizer"], path.parent.name, m))
        except (OSError, ValueError, KeyError, TypeError):
            unreadable.append(path.parent.name)
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
            f"| {m.get('vocab_size', 0):,} | {m.get('maxlen', '-')} | {m.get('params', 0):,} "
            f"| {_duration(m.get('train_seconds'))} | {_size(m.get('model_bytes'))} "
            f"| [curves]({folder}/curves.png) · [confusion]({folder}/confusion.png) |")
    if not rows:
        lines.append("| *no evaluated models yet: run `ksent run --corpus nsmc`* ||||||||||||||")
    if unreadable:
        lines += ["", f"Unreadable metrics.json (skipped): {', '.join(unreadable)}."]
    return "\n".join(lines) + "\n"
