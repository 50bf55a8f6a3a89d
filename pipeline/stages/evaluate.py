"""evaluate: score a trained bundle on the test split (the report stage then lists it in REPORT.md).

Inputs: data/processed/<corpus>/<tok>/test.parquet (+ its tokenizer.json, to check it is the
model's, and train/val.parquet, for the texts seen in training) and the bundle
artifacts/<corpus>-<tok>/ (model.onnx, model.keras, tokenizer.json, bundle.json, train.manifest.json).
Outputs beside the bundle: metrics.json, confusion.png, predictions.csv (id, text, label,
probability, predicted).

The model is loaded through pipeline.predict.loading.load_bundle and scored with the same runtime
(model.onnx) and batching code as `ksent predict`, so evaluated and served probabilities agree.
Besides the whole test split, metrics are given for the rows whose raw text is
unique within it (stock phrases such as "굿" or "최고" repeat many times in NSMC's
test file and weigh on its accuracy) and for the rows whose raw text does not occur in
the train or validation split (NSMC's upstream files share about 1,600 texts).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.core.files import sha256_file, write_json
from pipeline.core.progress import blockwise
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.errors import PipelineError
from pipeline.model import padded
from pipeline.model.scoring import plot_confusion, split_metrics, summary, write_predictions


def plan(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR,
         artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> Stage:
    src, label = layout.processed_dir(data_dir, corpus, tok), layout.label(corpus, tok)
    bundle_dir = layout.bundle_dir(artifacts_dir, corpus, tok)
    inputs = {name: Input(src / name, "pad", label=label) for name in ("test.parquet", "train.parquet", "val.parquet")}
    inputs["processed tokenizer.json"] = Input(src / layout.TOKENIZER_FILE, "pad", label=label)
    inputs.update({name: Input(bundle_dir / name, "train", label=label)
                   for name in ("model.keras", "model.onnx", layout.TOKENIZER_FILE, layout.BUNDLE_FILE)})
    return Stage("evaluate", label, bundle_dir, inputs=inputs, params={},
                 outputs=(layout.METRICS_FILE, "confusion.png", "predictions.csv"))


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, t.tok, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return evaluate(t.corpus, t.tok, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **kwargs)


def evaluate(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR,
             artifacts_dir: Path | str = layout.ARTIFACTS_DIR, force: bool = False,
             echo: Callable[[str], None] | None = None) -> StageResult:
    """Score <artifacts_dir>/<corpus>-<tok>/ on the test split, at the decision threshold its bundle.json records;
    write its metrics."""
    stage = plan(corpus, tok, data_dir=data_dir, artifacts_dir=artifacts_dir)
    inputs = {name: inp.path for name, inp in stage.inputs.items()}
    bundle_dir, label = stage.folder, stage.label

    def run(out: Staging) -> StageResult:
        from pipeline.predict.loading import load_bundle
        from pipeline.predict.runtime import PROGRESS_BLOCK

        bundle = load_bundle(bundle_dir)
        if sha256_file(inputs["processed tokenizer.json"]) != bundle.manifest["tokenizer"]["sha256"]:
            raise PipelineError(f"evaluate {label}: {inputs['test.parquet'].parent}/ was padded with a different "
                                f"tokenizer.json than the model was trained with - re-run "
                                f"`ksent train --corpus {corpus}` (see `ksent status`)")
        test = padded.read(inputs["test.parquet"], label)
        x, y, ids, texts = test["x"], test["label"], test["id"], test["text"]
        if not len(y):
            raise PipelineError(f"evaluate {label}: the test split is empty")
        if x.ndim != 2 or x.shape[1] != bundle.preprocessor.maxlen:
            raise PipelineError(f"evaluate {label}: test.parquet has shape {x.shape}, the bundle's "
                                f"maxlen is {bundle.preprocessor.maxlen} - re-run the pad and train stages")
        probability = blockwise(bundle.predict_ids, x, f"evaluate {label}: predicting", PROGRESS_BLOCK)
        seen = np.concatenate([padded.read(inputs[name], label, ("text",))["text"]
                               for name in ("train.parquet", "val.parquet")])
        trained = bundle.manifest.get("training") or {}
        metrics = {
            "corpus": corpus, "tokenizer": tok, "n_test": int(len(y)),
            **split_metrics(y, probability, texts, seen, bundle.threshold),
            "empty_test_rows": int((~x.any(axis=1)).sum()),
            "vocab_size": int(bundle.preprocessor.vocab_size), "maxlen": int(bundle.preprocessor.maxlen),
            "params": int(bundle.manifest["model"]["params"]),
            # the network predict runs (model.keras holds its save time, so its size varies from run to run)
            "model_bytes": (bundle_dir / bundle.manifest.get("onnx", bundle.manifest["model"])["file"]).stat().st_size,
            # no durations: the same bundle and split give the same metrics.json, byte for byte
            **{k: trained.get(k) for k in ("epochs_run", "best_epoch", "best_val_accuracy")},
            "val_accuracy": bundle.manifest.get("threshold", {}).get("val_accuracy"),
        }
        write_json(out.path(layout.METRICS_FILE), metrics)
        plot_confusion(out.path("confusion.png"), metrics["confusion_matrix"],
                       f"{corpus} / {tok}: accuracy {metrics['accuracy']:.4f}")
        write_predictions(out.path("predictions.csv"), ids, texts, y, probability, bundle.threshold)
        return StageResult(summary=summary(f"evaluate {label}", metrics), counts={k: metrics[k] for k in (
            "n_test", "accuracy", "f1", "roc_auc", "empty_test_rows")})

    return run_stage(stage, run, force=force, echo=echo)
