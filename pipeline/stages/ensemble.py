"""ensemble: combine a corpus's trained bundles into one, artifacts/<corpus>-ensemble/, and score it.

Inputs: each member bundle's bundle.json (which pins its network and tokenizer files by
checksum; the default members are every single-model bundle of the corpus in
artifacts/), and each member's val.parquet, test.parquet and train.parquet (pad stage) for the rows
it was scored on. Outputs in artifacts/<corpus>-ensemble/: bundle.json (kind "ensemble":
the members by name and bundle.json checksum, their weights), metrics.json,
predictions.csv and confusion.png as the evaluate stage writes them.

The combination is the equal-weight mean of the members' log-odds (or of their probabilities,
`combination="mean"`; pipeline.params.ENSEMBLE says why): nothing is fitted, so
the validation accuracy recorded (which picks the default model) is an honest estimate,
not a figure the weights were tuned on. Predicting with the ensemble bundle replays each
member's own preprocessing and averages the same way (`pipeline.predict.ensemble.combine`), so
`ksent predict --model artifacts/nsmc-ensemble` gives the probabilities scored here.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout, params as defaults
from pipeline.core.files import read_json, sha256_file, write_json
from pipeline.core.progress import blockwise
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, library_versions, run_stage
from pipeline.errors import ParameterError, PipelineError
from pipeline.model import padded
from pipeline.model.scoring import plot_confusion, split_metrics, summary, write_predictions
from pipeline.stages import ENSEMBLE_TOK, run_threshold, trained_bundles


def member_names(corpus: str, artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> list[str]:
    """Every single-model bundle of `corpus` in `artifacts_dir`, by folder name; not the distill stage's students,
    which the ensemble teaches."""
    return list(trained_bundles(corpus, artifacts_dir))


def _remake(corpus: str, tok: str) -> str:
    """The command that re-makes every bundle of `corpus` from its current split, then the ensemble."""
    return f"`ksent run --corpus {corpus} {layout.tokenizer_args(tok)}` (it re-makes every trained tokenization)"


def _member_tok(bundle_dir: Path, corpus: str) -> str:
    """The tokenization of member `bundle_dir`, a trained bundle of `corpus` (refused by name otherwise: its ids
    would be another corpus's vocabulary's)."""
    try:
        manifest = read_json(bundle_dir / layout.BUNDLE_FILE)
        tok, of = manifest.get("tok"), manifest.get("corpus")
    except (OSError, ValueError, AttributeError):
        raise PipelineError(f"ensemble: {bundle_dir} is not a trained bundle (no readable bundle.json) - train it, "
                            f"or leave it out with --member") from None
    if not isinstance(tok, str):
        raise PipelineError(f"ensemble: {bundle_dir}/bundle.json is damaged - re-run its train stage")
    if of != corpus or manifest.get("kind", "model") != "model":
        raise ParameterError(f"ensemble {corpus}: {bundle_dir.name} is a {manifest.get('kind', 'model')} of corpus "
                             f"{of}, not a trained bundle of {corpus} - an ensemble's members are bundles of its own "
                             f"corpus (leave it out with --member)")
    return tok


def plan(corpus: str, *, members: list[str] | tuple[str, ...] | None = None,
         combination: str = defaults.ENSEMBLE["combination"], threshold=defaults.ENSEMBLE["threshold"],
         data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> Stage:
    params = defaults.ENSEMBLE.resolve({"combination": combination, "threshold": threshold},
                                       prefix=f"ensemble {corpus}: ")
    artifacts_dir = Path(artifacts_dir)
    members = sorted(set(members or member_names(corpus, artifacts_dir)))
    if len(members) < 2:
        raise ParameterError(f"ensemble {corpus}: needs at least 2 trained bundles of the corpus, found "
                             f"{len(members)} ({', '.join(members) or 'none'}) - train more tokenizations first "
                             f"(`ksent run --corpus {corpus} --tokenizer char`)")
    inputs = {}
    for name in members:
        bundle_dir = artifacts_dir / name
        tok = _member_tok(bundle_dir, corpus)
        label = layout.label(corpus, tok)
        inputs[f"{name}/{layout.BUNDLE_FILE}"] = Input(bundle_dir / layout.BUNDLE_FILE, "train", label=label)
        src = layout.processed_dir(data_dir, corpus, tok)
        for split in layout.SPLITS:
            inputs[f"{name}/{split}.parquet"] = Input(src / f"{split}.parquet", "pad", label=label)
        inputs[f"{name}/processed tokenizer.json"] = Input(src / layout.TOKENIZER_FILE, "pad", label=label)
    return Stage("ensemble", corpus, layout.bundle_dir(artifacts_dir, corpus, ENSEMBLE_TOK), inputs=inputs,
                 params={"members": members, **params},
                 outputs=(layout.BUNDLE_FILE, layout.METRICS_FILE, "predictions.csv", "confusion.png"),
                 whole_folder=True)


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **run_threshold(t))


def run_for(t: Target, **kwargs) -> StageResult:
    return ensemble(t.corpus, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **run_threshold(t), **kwargs)


def ensemble(corpus: str, *, members: list[str] | tuple[str, ...] | None = None,
             combination: str = defaults.ENSEMBLE["combination"], threshold=defaults.ENSEMBLE["threshold"],
             data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
             force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    """Combine the members (default: every single-model bundle of `corpus`), choose the decision threshold on the
    validation split (`threshold`: pipeline.params.ENSEMBLE) and score the ensemble."""
    from pipeline.model.scoring import choose_threshold, threshold_text
    from pipeline.predict.bundle import FORMAT, FORMAT_VERSION
    from pipeline.predict.ensemble import combine
    from pipeline.predict.loading import load_bundle
    from pipeline.predict.predictor import val_accuracy_of
    from pipeline.predict.runtime import PROGRESS_BLOCK

    stage = plan(corpus, members=members, combination=combination, threshold=threshold, data_dir=data_dir,
                 artifacts_dir=artifacts_dir)
    names, combination = stage.params["members"], stage.params["combination"]
    weights = [1.0 / len(names)] * len(names)
    label = f"ensemble {corpus}"

    def split_rows(name: str, split: str, fields: tuple[str, ...]) -> dict:
        return padded.read(stage.inputs[f"{name}/{split}.parquet"].path, f"{corpus}/{name}", fields)

    def run(out: Staging) -> StageResult:
        bundles = [load_bundle(Path(artifacts_dir) / name) for name in names]
        for name, bundle in zip(names, bundles, strict=True):
            padded_with = stage.inputs[f"{name}/processed tokenizer.json"].path
            if sha256_file(padded_with) != bundle.manifest["tokenizer"]["sha256"]:
                raise PipelineError(f"{label}: {name} was trained on other data than {padded_with.parent}/ holds "
                                    f"now (the split or the vocabulary changed since) - re-make the corpus's bundles: "
                                    f"{_remake(corpus, bundle.tok)}")
        probabilities, reference = {}, {}
        for split in ("val", "test"):
            member_p = []
            for name, bundle in zip(names, bundles, strict=True):
                rows = split_rows(name, split, ("x", "label", "id", "text"))
                if split not in reference:
                    reference[split] = rows
                elif not np.array_equal(rows["id"], reference[split]["id"]):
                    raise PipelineError(f"{label}: {name}'s {split} split holds other rows than {names[0]}'s - "
                                        f"re-make the corpus's bundles from one split: "
                                        f"{_remake(corpus, bundle.tok)}")
                member_p.append(blockwise(bundle.predict_ids, rows["x"], f"{label}: {name} on {split}",
                                                PROGRESS_BLOCK))
            probabilities[split] = combine(member_p, weights, combination)
        chosen = choose_threshold(reference["val"]["label"], probabilities["val"], stage.params["threshold"])
        val_accuracy = chosen["val_accuracy"]
        test = reference["test"]
        seen = np.concatenate([split_rows(names[0], s, ("text",))["text"] for s in ("train", "val")])
        member_val = {name: val_accuracy_of(b.manifest) for name, b in zip(names, bundles, strict=True)}
        train_seconds = [b.manifest.get("training", {}).get("train_seconds") for b in bundles]
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "ensemble", "corpus": corpus,
            "tok": ENSEMBLE_TOK, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "members": [{"name": name, "tok": b.tok, "bundle_sha256": sha256_file(b.directory / layout.BUNDLE_FILE)}
                        for name, b in zip(names, bundles, strict=True)],
            "combination": combination, "weights": weights, "threshold": chosen,
            "training": {"best_val_accuracy": round(val_accuracy, 6), "member_val_accuracy": member_val,
                         "train_seconds": sum(s for s in train_seconds if s)},
            "versions": library_versions(),
        }
        write_json(out.path(layout.BUNDLE_FILE), manifest)
        y = test["label"]
        if not len(y):
            raise PipelineError(f"{label}: the test split is empty")
        metrics = {
            "corpus": corpus, "tokenizer": ENSEMBLE_TOK, "n_test": int(len(y)),
            **split_metrics(y, probabilities["test"], test["text"], seen, chosen["value"]),
            "members": names, "vocab_size": None, "maxlen": None,
            "params": sum(int(b.manifest["model"]["params"]) for b in bundles),
            "model_bytes": sum((b.directory / b.manifest.get("onnx", b.manifest["model"])["file"]).stat().st_size
                               for b in bundles),
            "best_val_accuracy": round(val_accuracy, 6), "val_accuracy": round(val_accuracy, 6),
        }
        write_json(out.path(layout.METRICS_FILE), metrics)
        plot_confusion(out.path("confusion.png"), metrics["confusion_matrix"],
                       f"{corpus} / ensemble: accuracy {metrics['accuracy']:.4f}")
        write_predictions(out.path("predictions.csv"), test["id"], test["text"], y, probabilities["test"],
                          chosen["value"])
        line = (f"{summary(label, metrics)}; val accuracy {val_accuracy:.4f}, {threshold_text(chosen)} (members: "
                f"{', '.join(f'{n} {v:.4f}' for n, v in member_val.items() if v is not None)})")
        return StageResult(summary=line, counts={"n_test": metrics["n_test"], "accuracy": metrics["accuracy"],
                                                 "best_val_accuracy": round(val_accuracy, 6)})

    return run_stage(stage, run, force=force, echo=echo)
