"""pretrain: learn token vectors for the Embedding layer from the train split plus unlabeled reviews.

Inputs: the tokenize stage's tokens.parquet + segmenter.json, the split stage's split.parquet,
the clean stage's normalizer.json and, optionally, unlabeled reviews: UTF-8 text, one review
a line, gzipped or not. By default (`unlabeled="auto"`) that is the corpus's registered
unlabeled file if the download stage fetched it (verified against its pinned SHA-256);
`unlabeled=PATH` takes any file (recorded by its SHA-256), `unlabeled="none"` none.
Output in data/processed/<corpus>/<tok>/: vectors.npz (tokens, vectors, train_counts,
unlabeled_counts), which the pad stage may use to extend the vocabulary and the train
stage starts the Embedding layer from.

Unlabeled lines go through the corpus's normalizer and segmenter in blocks of ROW_GROUP_ROWS
lines, on the engine (pipeline.core.engine) for morpheme analysis, like the tokenize stage.
A line whose cleaned text equals a validation or test review's is dropped and counted: no
held-out text may shape the model. Validation and test rows themselves are never read.
Same inputs and parameters, same vectors (one gensim worker thread).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout, params as defaults
from pipeline.core.engine import DEFAULT_WORKERS, Engine
from pipeline.core.files import save_npz
from pipeline.core.progress import Progress
from pipeline.core.stage import DECLARATION, Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import ROW_GROUP_ROWS, read_json_from, read_split_tokens
from pipeline.corpora import get_corpus
from pipeline.model.embeddings import learn_vectors
from pipeline.stages import UnlabeledFilter, read_unlabeled, registered_unlabeled, tokenized_inputs
from pipeline.text.normalize import Normalizer
from pipeline.text.segment import Segmenter


def plan(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR, unlabeled: str | Path = "auto",
         **params) -> Stage:
    params = defaults.PRETRAIN.resolve(params, prefix="pretrain: ")
    folder, label = layout.processed_dir(data_dir, corpus, tok), layout.label(corpus, tok)
    inputs = tokenized_inputs(data_dir, corpus, tok)
    unlabeled = str(unlabeled)
    declared = {}
    if unlabeled == "auto":
        registered = registered_unlabeled(corpus, data_dir)
        if registered and registered.path.is_file():
            inputs["unlabeled"] = registered
            declared = get_corpus(corpus).declared("pretrain")      # how the registered file is read
    elif unlabeled != "none":
        inputs["unlabeled"] = Input(Path(unlabeled), None)
    return Stage("pretrain", label, folder, inputs=inputs,
                 params={**params, "unlabeled": unlabeled, **({DECLARATION: declared} if declared else {})},
                 outputs=(layout.VECTORS_FILE,))


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, t.tok, data_dir=t.data_dir, unlabeled=t.unlabeled,
                **defaults.pretrain_params(t.tok, t.train_params))


def run_for(t: Target, **kwargs) -> StageResult:
    return pretrain(t.corpus, t.tok, data_dir=t.data_dir, unlabeled=t.unlabeled, workers=t.workers,
                    scheduler=t.scheduler, **defaults.pretrain_params(t.tok, t.train_params), **kwargs)


def pretrain(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR, unlabeled: str | Path = "auto",
             workers: int | None = None, scheduler: str | None = None, force: bool = False,
             echo: Callable[[str], None] | None = None,
             **params) -> StageResult:
    """Learn vectors.npz for <data_dir>/processed/<corpus>/<tok>/; `params` override pipeline.params.PRETRAIN."""
    stage = plan(corpus, tok, data_dir=data_dir, unlabeled=unlabeled, **params)
    params = stage.params
    inputs = {name: inp.path for name, inp in stage.inputs.items()}

    def run(out: Staging) -> StageResult:
        tokens, rows = read_split_tokens(inputs[layout.TOKENS_FILE], inputs[layout.SPLIT_FILE], "pretrain",
                                         stage.label, split_columns=["id", "text", "split"])
        in_train = (rows["split"] == "train").to_numpy()
        canonical: dict[str, str] = {}      # one str object per distinct token: ~10x less memory
        train_tokens = [[canonical.setdefault(t, t) for t in seq]
                        for seq, keep in zip(tokens["tokens"], in_train, strict=True) if keep]
        counts = {"train_reviews": len(train_tokens), "unlabeled_lines": 0}
        unlabeled_tokens: list[list[str]] = []
        if "unlabeled" in inputs:
            unlabeled_tokens = _unlabeled_tokens(inputs, rows, stage.label, workers, scheduler, counts,
                                                 registered=str(unlabeled) == "auto")
            unlabeled_tokens = [[canonical.setdefault(t, t) for t in seq] for seq in unlabeled_tokens]
        shown, started = Progress(), time.perf_counter()
        sentences = len(train_tokens) + len(unlabeled_tokens)
        learned, vectors = learn_vectors(
            train_tokens + unlabeled_tokens, method=params["method"], dim=params["dim"], window=params["window"],
            epochs=params["epochs"], min_count=params["min_count"], seed=params["seed"],
            on_epoch=lambda done, epochs: shown.line(
                f"  pretrain {stage.label}: {params['method']} epoch {done}/{epochs} over {sentences:,} reviews "
                f"({time.perf_counter() - started:.0f} s)"))
        shown.close()
        train_counts = Counter(t for seq in train_tokens for t in seq)
        unlabeled_counts = Counter(t for seq in unlabeled_tokens for t in seq)
        save_npz(out.path(layout.VECTORS_FILE), tokens=np.array(learned, dtype=str), vectors=vectors,
                 train_counts=np.array([train_counts[t] for t in learned], dtype=np.int64),
                 unlabeled_counts=np.array([unlabeled_counts[t] for t in learned], dtype=np.int64))
        counts.update(tokens=len(learned), unlabeled_only_tokens=sum(1 for t in learned if not train_counts[t]),
                      sentences=len(train_tokens) + len(unlabeled_tokens))
        if "unlabeled" in inputs:
            source = (f"{counts['train_reviews']:,} train reviews + {counts['unlabeled_used']:,} unlabeled "
                      f"({counts['unlabeled_lines']:,} lines: {counts['heldout_text']:,} with a validation/test "
                      f"review's text, {counts['empty']:,} empty after cleaning"
                      + (f", {counts['invalid_utf8']:,} not UTF-8" if counts["invalid_utf8"] else "") + " dropped)")
        else:
            source = f"{counts['train_reviews']:,} train reviews (no unlabeled text)"
        summary = (f"pretrain {stage.label}: {params['method']} {params['dim']}-d vectors for {len(learned):,} tokens "
                   f"({counts['unlabeled_only_tokens']:,} only in unlabeled text) from {source}")
        return StageResult(summary=summary, counts=counts)

    return run_stage(stage, run, force=force, echo=echo)


def _unlabeled_tokens(inputs: dict, rows, label: str, workers: int | None,
                      scheduler: str | None, counts: dict, registered: bool) -> list[list[str]]:
    """Segmented unlabeled lines, minus those whose cleaned text is a validation or test review's."""
    normalizer = Normalizer.from_dict(read_json_from(inputs["normalizer.json"], "clean", label.split("/")[0]))
    segmenter = Segmenter.from_dict(read_json_from(inputs["segmenter.json"], "tokenize", label))
    lines, problems = read_unlabeled(inputs["unlabeled"], label.split("/")[0], registered)
    usable = UnlabeledFilter(rows)
    used = segmenter.workers_used(DEFAULT_WORKERS if workers is None else workers)
    n_lines = len(lines)
    blocks = [(lines[start:start + ROW_GROUP_ROWS], normalizer, segmenter)
              for start in range(0, n_lines, ROW_GROUP_ROWS)]
    del lines
    kept: list[list[str]] = []
    with Engine(used, scheduler) as eng:
        for cleaned, tokens in eng.map(prepare_lines, blocks, what=f"pretrain {label}"):
            kept.extend(seq for text, seq in zip(cleaned, tokens, strict=True) if usable.keep(text))
        runs_on = eng.where
    counts.update(**usable.counts(n_lines, problems, len(kept)), engine=runs_on)
    return kept


def prepare_lines(lines: list[str], normalizer: Normalizer, segmenter: Segmenter) -> tuple[list[str], list[list[str]]]:
    """Cleaned text and tokens of each line (runs on a worker); empty text gets no tokens."""
    cleaned = [normalizer(line) for line in lines]
    return cleaned, [segmenter.segment(text) if text.strip() else [] for text in cleaned]
