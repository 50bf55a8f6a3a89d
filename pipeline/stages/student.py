"""student: one network for every corpus, taught by the router, artifacts/student/.

With bundles of two or more corpora the router answers every review with the gate and every
corpus's expert (each an ensemble of several networks). This stage distils it into one network, as
the distill stage distils one corpus's ensemble: the router labels each corpus's unlabeled reviews
with its probabilities, and one Embedding + LSTM trains on those and on every corpus's gold train
split. So that a small corpus is not drowned by a large one, a corpus of n rows (gold and
teacher-labelled) weighs in proportion to n^(1 - balance) in total; the validation loss that picks the
epoch weighs every corpus the same, as the default model's choice does.

One preprocessing serves every corpus: the largest corpus's tokenizer.json (by train rows) with every
other corpus's tokens appended (pipeline.text.preprocess.Preprocessor.merged: the same normalizer and
segmenter are required), the longest maxlen, and each token's pretrained vector from the largest
corpus that has one. Unlabeled reviews whose cleaned text is any corpus's validation or test text are
dropped and counted, as in distill.

Inputs: the router's bundle.json (which pins its experts by checksum: a retrained expert re-makes the
router, which re-makes this student), and per corpus its split.parquet, the student tokenization's
padded splits, tokenizer.json and vectors.npz, and its registered unlabeled file if it declares one.
Outputs: a bundle like any other (bundle.json: corpus "a+b", the teacher and each corpus's rows and
weight), metrics.json (each corpus's test figures, and their mean), predictions.csv (ids prefixed by
corpus), confusion.png. The domains stage scores it on each corpus like every bundle, and it is the
default model when its validation accuracy averaged over the corpora is the best.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout, params as defaults
from pipeline.core.engine import DEFAULT_WORKERS
from pipeline.core.files import sha256_file, write_json
from pipeline.core.progress import Progress
from pipeline.core.stage import DECLARATION, Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import read_table
from pipeline.corpora import get_corpus
from pipeline.errors import ParameterError, PipelineError
from pipeline.model import padded, training
from pipeline.model.distillation import fit_student
from pipeline.stages import (
    NETWORK_SHAPE,
    STUDENT_OUTPUTS,
    UnlabeledFilter,
    labels_key,
    read_unlabeled,
    recorded_preprocessing,
    registered_unlabeled,
    router_experts,
    run_threshold,
    student_architecture,
    teacher_labels,
    train_rows,
    trained_bundles,
    write_student,
)
from pipeline.text.segment import Segmenter

FOLDER = "student"
ROUTER_FOLDER = "router"            # the router stage's folder: the teacher
LABEL_BLOCK = 20_000                # unlabeled reviews labelled per teacher call (a progress line each)


def student_tok(corpora: list[str], student: str, artifacts_dir: Path) -> str:
    """`student` itself, or ("auto") the tokenization every corpus has a trained bundle of with the best validation
    accuracy averaged over the corpora (none in common: the default tokenization)."""
    if student != "auto":
        return student
    trained = [{tok: layout.bundle_dir(artifacts_dir, corpus, tok) for tok in trained_bundles(corpus, artifacts_dir)
                .values()} for corpus in corpora]
    common = set.intersection(*(set(t) for t in trained)) if trained else set()
    if not common:
        return Segmenter(defaults.TOKENIZE["tokenizer"], backend=defaults.TOKENIZE["backend"]).name()
    from pipeline.predict.selection import validation_accuracy

    return max(sorted(common), key=lambda tok: sum(validation_accuracy(t[tok]) for t in trained))


def plan(*, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
         **params) -> Stage:
    params = defaults.STUDENT.resolve(params, prefix="student: ")
    artifacts_dir = Path(artifacts_dir)
    corpora = sorted(router_experts(artifacts_dir, data_dir))
    if len(corpora) < 2:
        raise ParameterError(f"student: the router teaches it, which needs trained bundles of at least 2 corpora, "
                             f"found {', '.join(corpora) or 'none'} (one corpus: `ksent distill`)")
    tok = student_tok(corpora, params["student"], artifacts_dir)
    unpadded = [c for c in corpora if not (layout.processed_dir(data_dir, c, tok) / layout.TOKENIZER_FILE).is_file()]
    if unpadded:            # bundles brought in without their data, say: nothing to learn from
        raise ParameterError(f"student: learns from every corpus's {tok} padded splits, and "
                             f"{', '.join(unpadded)} has none in {data_dir} (`ksent run --corpus {unpadded[0]} "
                             f"--tokenizer {tok.split('-')[0]}` makes them)")
    _check_one_preprocessing(corpora, tok, data_dir)
    largest = max(corpora, key=lambda c: (train_rows(data_dir, c), c))
    member = layout.bundle_dir(artifacts_dir, largest, tok)        # its network is the student's (and its start)
    arch = student_architecture(tok, member, params)
    if params["start"] == "member":
        _check_same_network(arch, student_architecture(tok, member), member)
    inputs = {"router bundle.json": Input(artifacts_dir / ROUTER_FOLDER / layout.BUNDLE_FILE, "router")}
    if params["start"] == "member":
        inputs[f"{member.name}/model.keras"] = Input(member / "model.keras", "train", label=layout.label(largest, tok))
    declared = {}
    for corpus in corpora:
        src, label = layout.processed_dir(data_dir, corpus, tok), layout.label(corpus, tok)
        inputs[f"{corpus}/{layout.SPLIT_FILE}"] = Input(layout.split_path(data_dir, corpus), "split", label=corpus)
        for name in ("train.parquet", "val.parquet", "test.parquet", layout.TOKENIZER_FILE):
            inputs[f"{label}/{name}"] = Input(src / name, "pad", label=label)
        if arch["embeddings"] == "pretrained":
            inputs[f"{label}/{layout.VECTORS_FILE}"] = Input(src / layout.VECTORS_FILE, "pretrain", label=label)
        unlabeled = registered_unlabeled(corpus, data_dir)
        if unlabeled is not None:
            inputs[f"{corpus}/unlabeled"] = unlabeled
            declared[corpus] = get_corpus(corpus).declared("distill")     # how the registered file is read
    return Stage("student", "", artifacts_dir / FOLDER, inputs=inputs,
                 params={**params, "student": tok, "corpora": corpora, "largest": largest,
                         **({DECLARATION: declared} if declared else {}), "architecture": arch},
                 outputs=STUDENT_OUTPUTS, optional_outputs=("model.int8.onnx",), whole_folder=True)


def _check_one_preprocessing(corpora: list[str], tok: str, data_dir: Path | str) -> None:
    """ParameterError (the stage is then left out, the router staying the corpora's model) where the corpora are
    cleaned or segmented differently: one network cannot read them all the same way (a stage not made yet: its
    stage's input check says so)."""
    seen: dict[str, tuple[str, object]] = {}
    for corpus in corpora:
        for what, value in recorded_preprocessing(data_dir, corpus, tok).items():
            first = seen.setdefault(what, (corpus, value))
            if first[1] != value:
                raise ParameterError(f"student: {first[0]} and {corpus} differ in their {what} ({first[1]} against "
                                     f"{value}): one network cannot read both - the router stays their model")


def _check_same_network(arch: dict, members: dict, member: Path) -> None:
    """ParameterError, before minutes of labelling, where `--start member` cannot copy the member's weights: the
    student's network (`arch`) is not the member's (--units or --network gave another)."""
    if any(arch[k] != members[k] for k in NETWORK_SHAPE):
        def text(a: dict) -> str:
            return f"{a['layers']} x {'bi' if a['bidirectional'] else ''}{a['cell']}-{a['units']}"
        raise ParameterError(f"student: --start member copies the weights of {member.name}, a {text(members)} "
                             f"network, into a {text(arch)} one: keep the member's network, or add --start vectors")


def plan_for(t: Target) -> Stage:
    return plan(data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **run_threshold(t))


def run_for(t: Target, **kwargs) -> StageResult:
    return student(data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **run_threshold(t), **kwargs)


def corpus_weights(rows: dict[str, int], balance: float) -> dict[str, float]:
    """Each corpus's weight per row: a corpus of n rows weighs n^(1 - balance) in total, scaled so that the mean
    row weighs 1 (balance 0: every row 1; balance 1: every corpus the same in total)."""
    share = {corpus: n ** (1.0 - balance) for corpus, n in rows.items() if n}
    total_rows, total_share = sum(rows.values()), sum(share.values())
    return {corpus: (share[corpus] / total_share) * total_rows / n if n else 0.0 for corpus, n in rows.items()}


def student(*, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
            force: bool = False, echo: Callable[[str], None] | None = None, **params) -> StageResult:
    """Label every corpus's unlabeled reviews with the router and train one student bundle on them and every
    corpus's train split; `params` override pipeline.params.STUDENT."""
    stage = plan(data_dir=data_dir, artifacts_dir=artifacts_dir, **params)
    params = stage.params
    tok, corpora = params["student"], params["corpora"]
    inputs = {name: inp.path for name, inp in stage.inputs.items()}

    def run(out: Staging) -> StageResult:
        from pipeline.model.scoring import (
            choose_threshold,
            plot_confusion,
            split_metrics,
            threshold_text,
            write_predictions,
        )
        from pipeline.predict import bundle
        from pipeline.predict.loading import load_bundle
        from pipeline.predict.predictor import THRESHOLD
        from pipeline.predict.runtime import BATCH_SIZE, ONNX_FILE, OnnxNetwork, export_onnx, predict_ids

        own = {c: bundle.load_preprocessor(inputs[f"{layout.label(c, tok)}/{layout.TOKENIZER_FILE}"]) for c in corpora}
        gold = {c: {split: padded.read(inputs[f"{layout.label(c, tok)}/{split}.parquet"], layout.label(c, tok),
                                       ("id", "label", "text", "x")) for split in layout.SPLITS} for c in corpora}
        by_size = [params["largest"], *(c for c in corpora if c != params["largest"])]    # the largest corpus first
        try:
            joint = own[by_size[0]].merged([own[c] for c in by_size[1:]])
        except PipelineError as exc:
            raise PipelineError(f"student: the corpora's {tok} preprocessings cannot be one: {exc}") from None
        # train and validation: each corpus's ids re-indexed; test as `ksent predict` reads it (a corpus's own,
        # shorter maxlen cuts long reviews the student keeps: its test figures would not be what it answers)
        for c in corpora:
            for split in ("train", "val"):
                gold[c][split]["x"] = joint.reindex(gold[c][split]["x"], own[c])
            test = gold[c]["test"]["text"].tolist()
            gold[c]["test"]["x"] = joint.transform(test, workers=DEFAULT_WORKERS if len(test) > LABEL_BLOCK else 1)

        started = time.perf_counter()
        texts, counts = _usable_unlabeled(inputs, corpora, joint.normalizer, params["unlabeled_rows"])
        domain = {c: c if params["routing"] == "origin" else None for c in corpora}
        keys = {c: labels_key(inputs["router bundle.json"], joint, texts[c], LABEL_BLOCK, BATCH_SIZE, domain[c])
                for c in corpora}
        # the router loaded when a corpus has to be labelled: not at all if every corpus's labels are kept
        teacher = functools.cache(lambda: load_bundle(inputs["router bundle.json"].parent))
        soft = teacher_labels(layout.teacher_labels_cache(artifacts_dir, FOLDER), keys, lambda c: _label(
            teacher(), joint, texts[c], f"student: {c}", workers=DEFAULT_WORKERS, domain=domain[c]))
        texts.clear()
        teacher.cache_clear()
        label_seconds = time.perf_counter() - started

        rows = {c: len(gold[c]["train"]["x"]) + len(soft[c][0]) for c in corpora}
        weight = corpus_weights(rows, params["balance"])
        x = np.concatenate([a for c in corpora for a in (gold[c]["train"]["x"], soft[c][0])])
        y = np.concatenate([a for c in corpora for a in (gold[c]["train"]["label"].astype(np.float32), soft[c][1])])
        w = np.concatenate([a for c in corpora for a in (
            np.full(len(gold[c]["train"]["x"]), weight[c], np.float32),
            np.full(len(soft[c][0]), weight[c] * params["soft_weight"], np.float32))])
        val_x = np.concatenate([gold[c]["val"]["x"] for c in corpora])
        val_y = np.concatenate([gold[c]["val"]["label"] for c in corpora])
        n_val = {c: len(gold[c]["val"]["x"]) for c in corpora}
        val_w = np.concatenate([np.full(n_val[c], len(val_y) / (len(corpora) * n_val[c]) if n_val[c] else 0.0,
                                        np.float32) for c in corpora])
        vectors = [inputs[f"{layout.label(c, tok)}/{layout.VECTORS_FILE}"] for c in by_size
                   if f"{layout.label(c, tok)}/{layout.VECTORS_FILE}" in inputs]
        member = next((path for name, path in inputs.items() if name.endswith("/model.keras")), None)
        parent = (member, joint.vocabulary.id_map(own[by_size[0]].vocabulary, missing=-1)) if member else None
        model, history, timer, seconds, pretrained_rows = fit_student(
            x, y, w, val_x, val_y, val_w, joint, vectors, params, out.path("best.weights.h5"), "student",
            threshold=THRESHOLD, parent=parent)
        del x, y, w
        serving = training.save_for_serving(model, out.path("best.weights.h5"), out.path("model.keras"))
        out.path("best.weights.h5").unlink(missing_ok=True)
        onnx_entry = export_onnx(serving, out.path(ONNX_FILE), check_ids=val_x, check_labels=val_y,
                                 padding=joint.padding)
        network = OnnxNetwork(out.path(ONNX_FILE))
        threshold = choose_threshold(val_y, predict_ids(network, val_x), params["threshold"])
        out.path(layout.TOKENIZER_FILE).write_text(joint.to_json(), encoding="utf-8")

        name = "+".join(corpora)
        distillation = {"teacher": ROUTER_FOLDER, "teacher_bundle_sha256": sha256_file(inputs["router bundle.json"]),
                        "routing": params["routing"],
                        "soft_weight": params["soft_weight"], "balance": params["balance"],
                        "started_from": member.parent.name if member else "vectors",
                        "corpora": {c: {"gold_rows": int(len(gold[c]["train"]["x"])),
                                        "teacher_labelled_rows": int(len(soft[c][1])),
                                        "row_weight": round(weight[c], 6), **counts[c]} for c in corpora}}
        trained = write_student(out, corpus=name, tok=tok, preprocessor=joint, model=model, fitted=(history, timer),
                                params=params, seconds=seconds + label_seconds, onnx=onnx_entry, threshold=threshold,
                                distillation=distillation)
        best = trained["best_epoch"] - 1

        per_corpus = {}
        for c in corpora:
            test = gold[c]["test"]
            probability = predict_ids(network, test["x"])
            seen = np.concatenate([gold[c]["train"]["text"], gold[c]["val"]["text"]])
            per_corpus[c] = {"n_test": int(len(test["label"])), "probability": probability,
                             **split_metrics(test["label"], probability, test["text"], seen, threshold["value"])}
        mean = {key: round(float(np.mean([per_corpus[c][key] for c in corpora])), 6)
                for key in ("accuracy", "balanced_accuracy", "f1", "roc_auc")}
        metrics = {"corpus": name, "tokenizer": f"{tok} student", "n_test": sum(m["n_test"] for m in
                                                                                per_corpus.values()),
                   **mean, "threshold": threshold["value"], "averaged_over": corpora,
                   "per_corpus": {c: {k: v for k, v in m.items() if k != "probability"} for c, m in per_corpus.items()},
                   "vocab_size": int(joint.vocab_size), "maxlen": int(joint.maxlen),
                   "params": int(model.count_params()), "model_bytes": out.path(ONNX_FILE).stat().st_size,
                   **{k: trained[k] for k in ("epochs_run", "best_epoch", "best_val_accuracy")},
                   "val_accuracy": threshold["val_accuracy"], "teacher": ROUTER_FOLDER}
        write_json(out.path(layout.METRICS_FILE), metrics)
        pooled = [np.concatenate([gold[c]["test"][k] for c in corpora]) for k in ("label", "text")]
        pooled_p = np.concatenate([per_corpus[c]["probability"] for c in corpora])
        confusion = split_metrics(pooled[0], pooled_p, pooled[1], pooled[1][:0], threshold["value"])
        plot_confusion(out.path("confusion.png"), confusion["confusion_matrix"],
                       f"{name} / {tok} student: accuracy {confusion['accuracy']:.4f} (all test splits)")
        write_predictions(out.path("predictions.csv"),
                          np.concatenate([[f"{c}:{i}" for i in gold[c]["test"]["id"]] for c in corpora]),
                          pooled[1], pooled[0], pooled_p, threshold["value"])
        figures = ", ".join(f"{c} {per_corpus[c]['accuracy']:.4f}" for c in corpora)
        line = (f"student: test accuracy {figures}; val accuracy {trained['best_val_accuracy']:.4f} (corpora "
                f"weighing the same) at epoch {best + 1}, {threshold_text(threshold)}; "
                + ", ".join(f"{c}: {len(gold[c]['train']['x']):,} gold + {len(soft[c][1]):,} teacher-labelled "
                            f"(weight {weight[c]:.2f})" for c in corpora)
                + f"; labelled in {label_seconds:.0f} s, trained in {seconds:.0f} s"
                + (f"; note: {onnx_entry['note']}" if onnx_entry.get("note") else ""))
        return StageResult(summary=line, counts={"accuracy": {c: per_corpus[c]["accuracy"] for c in corpora},
                                                 "best_val_accuracy": trained["best_val_accuracy"],
                                                 "row_weight": weight, "pretrained_rows": pretrained_rows,
                                                 "label_seconds": round(label_seconds, 1),
                                                 "train_seconds": round(seconds, 1)})

    return run_stage(stage, run, force=force, echo=echo)


def _usable_unlabeled(inputs: dict, corpora: list[str], normalizer, limit: int) -> tuple[dict, dict]:
    """Each corpus's unlabeled lines to label (none if it declares none): not empty after cleaning, not any corpus's
    validation or test text, the first `limit` (0: all); and each corpus's counts."""
    import pandas as pd

    split_rows = pd.concat([read_table(inputs[f"{c}/{layout.SPLIT_FILE}"], "split", c, columns=["text", "split"])
                            for c in corpora], ignore_index=True)
    texts, counts = {}, {}
    for corpus in corpora:
        usable = UnlabeledFilter(split_rows)
        if f"{corpus}/unlabeled" not in inputs:
            texts[corpus], counts[corpus] = [], {"unlabeled_used": 0}
            continue
        lines, problems = read_unlabeled(inputs[f"{corpus}/unlabeled"], corpus, registered=True)
        texts[corpus] = usable.first(lines, normalizer, limit)
        counts[corpus] = usable.counts(len(lines), problems, len(texts[corpus]))
    return texts, counts


def _label(teacher, joint, texts: list[str], label: str, workers: int = 1,
           domain: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The student's padded ids of `texts` and the teacher's P(positive), a block at a time with progress; with
    `domain` (the corpus the texts come from) the router's expert of that corpus answers in place of the gate's mix.

    As `ksent predict --file` does it, with workers > 1 the morpheme analysis of the next block - for the
    teacher's networks and for the student's ids - runs in worker processes while this process runs the
    teacher's networks on the current one; each block is scored as one call either way, so the same numbers."""
    import contextlib
    from types import SimpleNamespace

    from pipeline.predict.runtime import BATCH_SIZE
    from pipeline.predict.streaming import analysed_ahead

    student = SimpleNamespace(preprocessor=joint, cap=lambda text: text)       # analysed as transform does
    analyzed = [*teacher.analyzed_members(domain), student] if workers > 1 and len(texts) > LABEL_BLOCK else []
    shown = Progress()
    xs, ps = [np.zeros((0, joint.maxlen), np.int32)], [np.zeros(0, np.float32)]
    started, done = time.perf_counter(), 0
    blocks = (texts[start:start + LABEL_BLOCK] for start in range(0, len(texts), LABEL_BLOCK))
    with contextlib.closing(analysed_ahead(analyzed, blocks, workers, ahead=1)) as ahead:
        for block, pending_ids in ahead:      # the next block analysed in workers while this one is scored
            xs.append(pending_ids.pop(id(student)).ids() if pending_ids else joint.transform(block))
            records = teacher.finish(block, pending_ids, BATCH_SIZE, domain)
            ps.append(np.array([r["probability"] for r in records], dtype=np.float32))
            done += len(block)
            shown.line(f"  {label}: the teacher labelled {done:,}/{len(texts):,} reviews "
                       f"({time.perf_counter() - started:.0f} s)")
    shown.close()
    p = np.concatenate(ps)
    if not np.isfinite(p).all():
        raise PipelineError(f"{label}: the teacher gave a probability that is not a number - re-make the router")
    return np.concatenate(xs), p
