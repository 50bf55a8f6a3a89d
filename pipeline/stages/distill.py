"""distill: one network taught by the corpus's ensemble, artifacts/<corpus>-<tok>-student/.

The teacher (artifacts/<corpus>-ensemble/, several networks and preprocessings per review; or, with
`teacher` a tokenization, the corpus's one bundle of it: self-training, e.g. of a model adapted from
another corpus's on few labels) labels unlabeled reviews with its probabilities; the student, one
tokenization's Embedding + LSTM like every ksent bundle, trains on the gold-labelled train split plus
those reviews, with binary cross-entropy against the teacher's probability (soft targets carry what the
teacher is unsure of), each teacher-labelled review weighing `soft_weight` against a gold
one. The student then predicts at one network's cost. It is an ordinary bundle:
`ksent predict`, the API, `ksent serve`, explanations and the default-model choice treat it
as one; its bundle.json says which teacher taught it, and the ensemble stage leaves students
out of its members (a student of the ensemble cannot be one of its teachers).

Inputs: the teacher's bundle.json (an ensemble's pins its members by checksum: retraining a member
re-makes the ensemble, which re-runs this stage), the student tokenization's train, val and
test tables and tokenizer.json (pad stage) and vectors.npz (pretrain stage) to start the
Embedding, split.parquet (the held-out texts), and the unlabeled reviews: by default the
corpus's registered unlabeled file (as the pretrain stage reads it). A line whose cleaned
text equals a validation or test review's is dropped and counted, as in pretrain; so are
lines empty after cleaning. At most `unlabeled_rows` lines are used (the first ones), which
bounds the stage's memory and time.

The student's tokenization (`student="auto"`) is that of the teacher's morpheme member, else of its
member with the best validation accuracy, or a one-bundle teacher's own; and its network is that
member's (the train stage's parameters recorded in its bundle.json) unless `network` or `units` say
otherwise; the epoch with the lowest validation loss (gold labels) is kept. Outputs: the bundle files the
train stage writes, plus metrics.json, predictions.csv and confusion.png as evaluate writes them.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout, params as defaults
from pipeline.core.engine import DEFAULT_WORKERS
from pipeline.core.files import read_json, sha256_file, write_json
from pipeline.core.progress import Progress
from pipeline.core.stage import DECLARATION, Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import read_table
from pipeline.corpora import get_corpus
from pipeline.errors import MissingInputError, ParameterError, PipelineError
from pipeline.model import padded, training
from pipeline.model.distillation import fit_student
from pipeline.stages import (
    ENSEMBLE_TOK,
    STUDENT_OUTPUTS,
    STUDENT_SUFFIX,
    UnlabeledFilter,
    labels_key,
    read_unlabeled,
    registered_unlabeled,
    run_threshold,
    student_architecture,
    teacher_labels,
    write_student,
)
from pipeline.text.segment import Segmenter

LABEL_BLOCK = 20_000        # unlabeled reviews labelled per teacher call (a progress line each)


def _teacher_manifest(corpus: str, teacher: str, artifacts_dir: Path) -> dict | None:
    """The teacher's bundle.json (its folder: the corpus's ensemble's, or its bundle of tokenization `teacher`,
    both layout.bundle_dir), or None if it is not made (yet)."""
    try:
        manifest = read_json(layout.bundle_dir(artifacts_dir, corpus, teacher) / layout.BUNDLE_FILE)
    except (OSError, ValueError):
        return None
    kind = "ensemble" if teacher == ENSEMBLE_TOK else "model"
    return manifest if isinstance(manifest, dict) and manifest.get("kind", "model") == kind else None


def student_tok(corpus: str, student: str, artifacts_dir: Path, teacher: str = ENSEMBLE_TOK) -> str:
    """The student's tokenization: `student` itself, or ("auto") a single teacher's, or that of the ensemble's
    morpheme member with the best validation accuracy, else of its best member (before the teacher exists: the
    default tokenization). Morpheme first: with few labels a char member can edge the morpheme one on validation
    while the morpheme student is still the better student (pipeline.params.DISTILL)."""
    if student != "auto":
        return student
    if teacher != ENSEMBLE_TOK:
        return teacher
    manifest = _teacher_manifest(corpus, teacher, artifacts_dir) or {}
    val = manifest.get("training", {}).get("member_val_accuracy") or {}
    members = {m.get("name"): m.get("tok") for m in manifest.get("members", []) if isinstance(m, dict)}
    morpheme = {name: tok for name, tok in members.items()
                if isinstance(tok, str) and layout.tokenizer_kind(tok) == "morpheme"}
    members = morpheme or members
    best = max(members, key=lambda name: (val.get(name) or 0.0, str(name)), default=None)
    if best is None or not isinstance(members[best], str):
        return Segmenter(defaults.TOKENIZE["tokenizer"], backend=defaults.TOKENIZE["backend"]).name()
    return members[best]


def _member(corpus: str, tok: str, teacher: str, artifacts_dir: Path) -> Path | None:
    """The teacher's network of tokenization `tok` (the student is the same network), if it has one: the teacher
    itself, or its ensemble's member."""
    if teacher != ENSEMBLE_TOK:
        return layout.bundle_dir(artifacts_dir, corpus, teacher) if teacher == tok else None
    for member in (_teacher_manifest(corpus, teacher, artifacts_dir) or {}).get("members", []):
        if isinstance(member, dict) and member.get("tok") == tok and isinstance(member.get("name"), str):
            return artifacts_dir / member["name"]
    return None


def plan(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
         unlabeled: str | Path = "auto", **params) -> Stage:
    params = defaults.DISTILL.resolve(params, prefix=f"distill {corpus}: ")
    artifacts_dir = Path(artifacts_dir)
    teacher = params["teacher"]
    if teacher.endswith(STUDENT_SUFFIX):
        raise ParameterError(f"distill {corpus}: --teacher {teacher} is a student; the teacher is the corpus's "
                             f"ensemble or one of its trained bundles (a tokenization: word, char, morpheme-mecab...)")
    tok = student_tok(corpus, params["student"], artifacts_dir, teacher)
    src, label = layout.processed_dir(data_dir, corpus, tok), layout.label(corpus, tok)
    teacher_dir = layout.bundle_dir(artifacts_dir, corpus, teacher)
    producer = ("ensemble", corpus) if teacher == ENSEMBLE_TOK else ("train", layout.label(corpus, teacher))
    inputs = {"teacher bundle.json": Input(teacher_dir / layout.BUNDLE_FILE, producer[0], label=producer[1]),
              layout.SPLIT_FILE: Input(layout.split_path(data_dir, corpus), "split", label=corpus),
              **{name: Input(src / name, "pad", label=label)
                 for name in ("train.parquet", "val.parquet", "test.parquet", layout.TOKENIZER_FILE)}}
    arch = student_architecture(tok, _member(corpus, tok, teacher, artifacts_dir), params)
    if arch["embeddings"] == "pretrained":
        inputs[layout.VECTORS_FILE] = Input(src / layout.VECTORS_FILE, "pretrain", label=label)
    unlabeled = str(unlabeled)
    declared = {}
    if unlabeled == "auto":
        registered = registered_unlabeled(corpus, data_dir)
        if registered is not None:          # else `distill` refuses to run (planned, so `ksent status` shows it)
            inputs["unlabeled"] = registered
            declared = get_corpus(corpus).declared("distill")       # how the registered file is read
    elif unlabeled == "none":
        raise ParameterError(f"distill {corpus}: the student learns from unlabeled reviews - give a file with "
                             f"--unlabeled PATH (UTF-8, one review a line), or leave it at auto")
    else:
        inputs["unlabeled"] = Input(Path(unlabeled), None)
    if teacher == ENSEMBLE_TOK:         # the parameters (and so the manifests) of before --teacher
        params = {k: v for k, v in params.items() if k != "teacher"}
    return Stage("distill", corpus, layout.bundle_dir(artifacts_dir, corpus, tok + STUDENT_SUFFIX), inputs=inputs,
                 params={**params, "student": tok, "unlabeled": unlabeled,
                         **({DECLARATION: declared} if declared else {}), "architecture": arch},
                 outputs=STUDENT_OUTPUTS, optional_outputs=("model.int8.onnx",), whole_folder=True)


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **run_threshold(t))


def run_for(t: Target, **kwargs) -> StageResult:
    return distill(t.corpus, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **run_threshold(t), **kwargs)


def distill(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
            unlabeled: str | Path = "auto", force: bool = False, echo: Callable[[str], None] | None = None,
            **params) -> StageResult:
    """Label unlabeled reviews with the corpus's ensemble and train the student bundle on them and the train split;
    `params` override pipeline.params.DISTILL."""
    stage = plan(corpus, data_dir=data_dir, artifacts_dir=artifacts_dir, unlabeled=unlabeled, **params)
    teacher_path = stage.inputs["teacher bundle.json"].path
    teacher = stage.params.get("teacher", ENSEMBLE_TOK)
    if _teacher_manifest(corpus, teacher, Path(artifacts_dir)) is None:
        raise MissingInputError("distill", corpus, [str(teacher_path)], hint=(
            f"the teacher is the corpus's ensemble: make it first (`ksent ensemble --corpus {corpus}`)"
            if teacher == ENSEMBLE_TOK else
            f"the teacher is the corpus's {teacher} bundle: train it first (`ksent run --corpus {corpus} "
            f"{layout.tokenizer_args(teacher)}`)"))
    if "unlabeled" not in stage.inputs:
        raise ParameterError(f"distill {corpus}: the corpus declares no unlabeled file - give one with "
                             f"--unlabeled PATH (UTF-8, one review a line)")
    params = stage.params
    tok = params["student"]
    inputs = {name: inp.path for name, inp in stage.inputs.items()}
    label = f"distill {corpus}"

    def run(out: Staging) -> StageResult:
        from pipeline.model.scoring import choose_threshold, threshold_text
        from pipeline.predict import bundle
        from pipeline.predict.loading import load_bundle
        from pipeline.predict.predictor import THRESHOLD
        from pipeline.predict.runtime import BATCH_SIZE, ONNX_FILE, OnnxNetwork, export_onnx, predict_ids

        preprocessor = bundle.load_preprocessor(inputs[layout.TOKENIZER_FILE])
        pad_label = layout.label(corpus, tok)
        gold = {split: padded.read(inputs[f"{split}.parquet"], pad_label, ("id", "label", "text", "x"))
                for split in layout.SPLITS}
        started = time.perf_counter()
        texts, counts = _usable_unlabeled(inputs, corpus, registered=params["unlabeled"] == "auto",
                                          limit=params["unlabeled_rows"])
        teacher = inputs["teacher bundle.json"]
        keys = {corpus: labels_key(teacher, preprocessor, texts, LABEL_BLOCK, BATCH_SIZE)}
        cache = layout.teacher_labels_cache(artifacts_dir, stage.folder.name)
        soft_x, soft_p = teacher_labels(cache, keys, lambda _: _label(
            _as_ensemble(load_bundle(teacher.parent)), preprocessor, texts, label, workers=DEFAULT_WORKERS))[corpus]
        texts.clear()
        label_seconds = time.perf_counter() - started

        x = np.concatenate([gold["train"]["x"], soft_x])
        y = np.concatenate([gold["train"]["label"].astype(np.float32), soft_p])
        w = np.concatenate([np.ones(len(gold["train"]["x"]), np.float32),
                            np.full(len(soft_x), params["soft_weight"], np.float32)])
        del soft_x
        model, history, timer, seconds, pretrained_rows = fit_student(
            x, y, w, gold["val"]["x"], gold["val"]["label"], None, preprocessor,
            [inputs[layout.VECTORS_FILE]] if layout.VECTORS_FILE in inputs else [], params,
            out.path("best.weights.h5"), label, threshold=THRESHOLD)
        del x, y, w
        serving = training.save_for_serving(model, out.path("best.weights.h5"), out.path("model.keras"))
        out.path("best.weights.h5").unlink(missing_ok=True)
        onnx_entry = export_onnx(serving, out.path(ONNX_FILE), check_ids=gold["val"]["x"],
                                 check_labels=gold["val"]["label"], padding=preprocessor.padding)
        threshold = choose_threshold(gold["val"]["label"], predict_ids(OnnxNetwork(out.path(ONNX_FILE)),
                                                                       gold["val"]["x"]), params["threshold"])
        shutil.copyfile(inputs[layout.TOKENIZER_FILE], out.path(layout.TOKENIZER_FILE))

        distillation = {"teacher": stage.inputs["teacher bundle.json"].path.parent.name,
                        "teacher_bundle_sha256": sha256_file(inputs["teacher bundle.json"]),
                        "soft_weight": params["soft_weight"], "teacher_labelled_rows": int(len(soft_p)),
                        "gold_rows": int(len(gold["train"]["x"])), **counts}
        trained = write_student(out, corpus=corpus, tok=tok, preprocessor=preprocessor, model=model,
                                fitted=(history, timer), params=params, seconds=seconds + label_seconds,
                                onnx=onnx_entry, threshold=threshold, distillation=distillation)
        best = trained["best_epoch"] - 1

        from pipeline.model.scoring import plot_confusion, split_metrics, summary, write_predictions

        test = gold["test"]
        probability = predict_ids(OnnxNetwork(out.path(ONNX_FILE)), test["x"])
        seen = np.concatenate([gold["train"]["text"], gold["val"]["text"]])
        metrics = {
            "corpus": corpus, "tokenizer": f"{tok} student", "n_test": int(len(test["label"])),
            **split_metrics(test["label"], probability, test["text"], seen, threshold["value"]),
            "vocab_size": int(preprocessor.vocab_size), "maxlen": int(preprocessor.maxlen),
            "params": int(model.count_params()), "model_bytes": out.path(ONNX_FILE).stat().st_size,
            **{k: trained[k] for k in ("epochs_run", "best_epoch", "best_val_accuracy")},
            "val_accuracy": threshold["val_accuracy"],
            "teacher": distillation["teacher"],
        }
        write_json(out.path(layout.METRICS_FILE), metrics)
        plot_confusion(out.path("confusion.png"), metrics["confusion_matrix"],
                       f"{corpus} / {tok} student: accuracy {metrics['accuracy']:.4f}")
        write_predictions(out.path("predictions.csv"), test["id"], test["text"], test["label"], probability,
                          threshold["value"])
        line = (f"{summary(label, metrics)}; val accuracy {trained['best_val_accuracy']:.4f} at epoch {best + 1}, "
                f"{threshold_text(threshold)}; "
                f"{len(gold['train']['x']):,} gold + {len(soft_p):,} teacher-labelled reviews "
                f"({counts['heldout_text']:,} with a validation/test review's text, {counts['empty']:,} empty "
                f"dropped), labelled in {label_seconds:.0f} s, trained in {seconds:.0f} s"
                + (f"; note: {onnx_entry['note']}" if onnx_entry.get("note") else ""))
        return StageResult(summary=line, counts={**counts, "teacher_labelled_rows": int(len(soft_p)),
                                                 "pretrained_rows": pretrained_rows, "accuracy": metrics["accuracy"],
                                                 "best_val_accuracy": trained["best_val_accuracy"],
                                                 "label_seconds": round(label_seconds, 1),
                                                 "train_seconds": round(seconds, 1)})

    return run_stage(stage, run, force=force, echo=echo)


def _as_ensemble(teacher):
    """The teacher as an ensemble (of one network, when it is one bundle): what `_label` reads."""
    from pipeline.predict.bundle import Bundle
    from pipeline.predict.ensemble import EnsembleBundle

    if not isinstance(teacher, Bundle):
        return teacher
    return EnsembleBundle(directory=teacher.directory, members=[teacher], weights=[1.0], manifest=teacher.manifest,
                          notes=teacher.notes)


def _usable_unlabeled(inputs: dict, corpus: str, registered: bool, limit: int) -> tuple[list[str], dict]:
    """The unlabeled lines to label: not empty after cleaning, not a validation or test review's cleaned text,
    the first `limit` of them (0: all)."""
    from pipeline.text.preprocess import Preprocessor

    normalizer = Preprocessor.load(inputs[layout.TOKENIZER_FILE]).normalizer
    usable = UnlabeledFilter(read_table(inputs[layout.SPLIT_FILE], "split", corpus, columns=["text", "split"]))
    lines, problems = read_unlabeled(inputs["unlabeled"], corpus, registered)
    kept = usable.first(lines, normalizer, limit)
    return kept, usable.counts(len(lines), problems, len(kept))


def _label(teacher, preprocessor, texts: list[str], label: str,
           workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The student's padded ids of `texts` and the teacher's P(positive), a block at a time with progress.

    As `ksent predict --file` does it, with workers > 1 the morpheme analysis of the next block runs in
    worker processes while this process runs the teacher's networks on the current one; and the student's
    ids are those of the teacher's member with the student's preprocessing (the same tokenizer.json), so no
    review is analysed twice. Either way the same numbers: each block is scored as one call.
    """
    import contextlib

    from pipeline.predict.streaming import analysed_ahead

    fingerprint = preprocessor.fingerprint()
    same = next((i for i, m in enumerate(teacher.members) if m.preprocessor.fingerprint() == fingerprint), None)
    analyzed = teacher.analyzed_members() if workers > 1 and len(texts) > LABEL_BLOCK else []
    shown = Progress()
    xs, ps = [], []
    started = time.perf_counter()
    blocks = (texts[start:start + LABEL_BLOCK] for start in range(0, len(texts), LABEL_BLOCK))
    with contextlib.closing(analysed_ahead(analyzed, blocks, workers, ahead=1)) as ahead:
        for block, pending_ids in ahead:      # the next block analysed in workers while this one is scored
            member_x = teacher.member_ids(block, pending_ids)
            xs.append(member_x[same] if same is not None else preprocessor.transform(block))
            ps.append(teacher.proba_of_ids(member_x).astype(np.float32))
            shown.line(f"  {label}: the teacher labelled {sum(len(x) for x in xs):,}/{len(texts):,} reviews "
                       f"({time.perf_counter() - started:.0f} s)")
    shown.close()
    if not xs:
        raise PipelineError(f"{label}: no unlabeled review is left to label (all empty or held-out text)")
    p = np.concatenate(ps)
    if not np.isfinite(p).all():
        raise PipelineError(f"{label}: the teacher gave a probability that is not a number - re-make it")
    return np.concatenate(xs), p
