"""pad: fit the vocabulary and maxlen on the train split, index and pad every split.

Inputs: the tokenize stage's tokens.parquet + segmenter.json, the split stage's
split.parquet, the clean stage's normalizer.json and, with `pretrained_words` > 0, the
pretrain stage's vectors.npz: the vocabulary (train tokens seen `min_freq` times, at most
`max_words` ids) is then extended by up to `pretrained_words` tokens that have pretrained
vectors, most frequent first - mostly tokens of the unlabeled reviews. Outputs in
data/processed/<corpus>/<tok>/: train.parquet, val.parquet, test.parquet (id, label, text: the
review as published, x: padded int32 ids; see pipeline.model.padded), tokenizer.json (everything
`predict` needs to replay the preprocessing), vocab_report.json and lengths.png.
Nothing is learned from validation or test rows.

Both passes run per partition on the engine; the padded rows stream into the split tables
in row order, so this process never holds a split.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import layout, params as defaults
from pipeline.core.engine import DEFAULT_WORKERS, Engine, Shared
from pipeline.core.files import write_json, write_text
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import ParquetRowGroupWriter, read_json_from, read_npz, read_rows, row_group_ranges
from pipeline.errors import PipelineError
from pipeline.layout import SPLITS
from pipeline.model import padded
from pipeline.stages import PARENT_TOKENIZER, bundle_producer, target_parent, tokenized_inputs
from pipeline.text.normalize import Normalizer
from pipeline.text.preprocess import Preprocessor
from pipeline.text.segment import Segmenter
from pipeline.text.sequences import length_for_coverage
from pipeline.text.vocab import OOV_ID, Vocabulary

# Fewer partitions (row groups of 20,000 rows) than this are padded in this process: at NSMC's
# 193,499 rows (10) 2 local workers were no faster than one process (bench_scale.py: 0.97x),
# at 1,000,000 rows 1.35x faster.
LOCAL_BELOW = 16


def _plot_lengths(path: Path, lengths: np.ndarray, maxlen: int, coverage: float, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=min(100, max(10, int(lengths.max(initial=1)) + 1)), color="#4c72b0")
    ax.axvline(maxlen, color="#c44e52", linestyle="--",
               label=f"maxlen = {maxlen} ({(lengths <= maxlen).mean():.1%} of train fit)")
    ax.set(xlabel="tokens per review (train split)", ylabel="reviews", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def _partitions(tokens_path: Path, split_path: Path, label: str) -> list[tuple[int, int]]:
    """Row ranges (the row groups of tokens.parquet), once both files are known to have the same rows."""
    try:
        parts = row_group_ranges(tokens_path)
        n_split = sum(b - a for a, b in row_group_ranges(split_path))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        raise PipelineError(f"pad {label}: cannot read {tokens_path} or {split_path} ({type(exc).__name__}) - "
                            f"re-run the stage that wrote it with --force") from None
    if (parts[-1][1] if parts else 0) != n_split:
        raise PipelineError(f"pad {label}: tokens.parquet does not match split.parquet row for row - re-run "
                            f"`ksent tokenize --corpus {label.split('/')[0]}` (the dedupe output changed)")
    return parts


def _read_partition(tokens_path: str, split_path: str, start: int, stop: int, label: str,
                    columns: list[str]) -> tuple[list[list[str]], pd.DataFrame]:
    """Tokens and split rows [start, stop), checked to be the same reviews (runs on a worker)."""
    tokens = read_rows(tokens_path, start, stop, "tokenize", label, ["id", "tokens"])
    rows = read_rows(split_path, start, stop, "split", label.split("/")[0], columns).to_pandas()
    if tokens.column("id").to_pylist() != rows["id"].astype(str).tolist():
        raise PipelineError(f"pad {label}: tokens.parquet does not match split.parquet row for row - re-run "
                            f"`ksent tokenize --corpus {label.split('/')[0]}` (the dedupe output changed)")
    return tokens.column("tokens").to_pylist(), rows


def count_partition(tokens_path: str, split_path: str, start: int, stop: int,
                    label: str) -> tuple[Counter, np.ndarray]:
    """Token counts and token lengths of the train rows among rows [start, stop)."""
    token_lists, rows = _read_partition(tokens_path, split_path, start, stop, label, ["id", "split"])
    train = [seq for seq, split in zip(token_lists, rows["split"], strict=True) if split == "train"]
    return Counter(tok for seq in train for tok in seq), np.array([len(seq) for seq in train], dtype=np.int32)


def index_partition(tokens_path: str, split_path: str, start: int, stop: int, label: str,
                    pre: Preprocessor) -> dict[str, dict]:
    """Rows [start, stop) of each split as a table of padded rows (pipeline.model.padded), with OOV and token counts."""
    token_lists, rows = _read_partition(tokens_path, split_path, start, stop, label,
                                        ["id", "split", "label", "raw"])
    out = {}
    for name in SPLITS:
        mask = (rows["split"] == name).to_numpy()
        seqs = [seq for seq, keep in zip(token_lists, mask, strict=True) if keep]
        ids = pre.vocabulary.transform(seqs)
        out[name] = {"table": padded.to_table(pre.pad(ids), rows.loc[mask, "label"].to_numpy(dtype=np.int8),
                                              rows.loc[mask, "id"].astype(str), rows.loc[mask, "raw"], pre.maxlen),
                     "oov": sum(i == OOV_ID for seq in ids for i in seq), "tokens": sum(map(len, ids))}
    return out


def plan(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR, parent: Path | None = None,
         **params) -> Stage:
    """`params`: pipeline.params.PAD (max_words, pretrained_words, min_freq, maxlen, coverage, padding,
    truncating); `parent`: the bundle the network will start from (--init-from), whose vocabulary comes first."""
    params = defaults.PAD.resolve(params)
    folder, label = layout.processed_dir(data_dir, corpus, tok), layout.label(corpus, tok)
    inputs = tokenized_inputs(data_dir, corpus, tok)
    if params["pretrained_words"]:
        inputs[layout.VECTORS_FILE] = Input(folder / layout.VECTORS_FILE, "pretrain", label=label)
    if parent is not None:
        inputs[PARENT_TOKENIZER] = Input(parent / layout.TOKENIZER_FILE, bundle_producer(parent), label=parent.name,
                                        edge=False)
    return Stage("pad", label, folder, inputs=inputs,
                 params={**params, **({"parent": parent.name} if parent is not None else {})},
                 outputs=(*(f"{name}.parquet" for name in SPLITS), layout.TOKENIZER_FILE, "vocab_report.json",
                          "lengths.png"))


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, t.tok, data_dir=t.data_dir, parent=target_parent(t))


def run_for(t: Target, **kwargs) -> StageResult:
    return pad(t.corpus, t.tok, data_dir=t.data_dir, workers=t.workers, scheduler=t.scheduler,
               parent=target_parent(t), **kwargs)


def pad(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR, workers: int | None = None,
        scheduler: str | None = None, force: bool = False, echo: Callable[[str], None] | None = None,
        parent: Path | None = None, **params) -> StageResult:
    """Fit the vocabulary and maxlen, write the padded split tables; `params`: pipeline.params.PAD. With `parent` (a
    bundle the network will start from) the vocabulary is the parent's with the corpus's new tokens appended."""
    stage = plan(corpus, tok, data_dir=data_dir, parent=parent, **params)
    max_words, pretrained_words, min_freq, maxlen, coverage, padding, truncating = (
        stage.params[k] for k in ("max_words", "pretrained_words", "min_freq", "maxlen", "coverage", "padding",
                                  "truncating"))
    inputs = {name: inp.path for name, inp in stage.inputs.items()}
    label = stage.label

    def run(out: Staging) -> StageResult:
        parts = _partitions(inputs[layout.TOKENS_FILE], inputs[layout.SPLIT_FILE], label)
        paths = (str(inputs[layout.TOKENS_FILE].resolve()), str(inputs[layout.SPLIT_FILE].resolve()))
        with Engine(DEFAULT_WORKERS if workers is None else workers, scheduler) as eng:
            # pass 1: train token counts and lengths, per partition, merged here (ties broken by token)
            counts: Counter = Counter()
            lengths = []
            for part_counts, part_lengths in eng.map(count_partition, [(*paths, a, b, label) for a, b in parts],
                                                     what=f"pad {label}: vocabulary", local_below=LOCAL_BELOW):
                counts.update(part_counts)
                lengths.append(part_lengths)
            train_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
            vocab = Vocabulary(max_words=max_words, min_freq=min_freq).fit_counts(counts)
            train_vocab = vocab.size
            if pretrained_words:
                pretrained = read_npz(inputs[layout.VECTORS_FILE], "pretrain", label, ("tokens", "train_counts",
                                                                                 "unlabeled_counts"))
                vocab.extend(zip(pretrained["tokens"].tolist(),
                                 (pretrained["train_counts"] + pretrained["unlabeled_counts"]).tolist(),
                                 strict=True), pretrained_words)
            chosen = length_for_coverage(train_lengths, coverage) if maxlen == "auto" else int(maxlen)
            pre = Preprocessor(
                normalizer=Normalizer.from_dict(read_json_from(inputs["normalizer.json"], "clean", corpus)),
                segmenter=Segmenter.from_dict(read_json_from(inputs["segmenter.json"], "tokenize", label)),
                vocabulary=vocab, maxlen=chosen, padding=padding, truncating=truncating)
            own_size = vocab.size
            if parent is not None:          # the parent's ids stay as they are, so its Embedding rows stay valid
                from pipeline.predict.bundle import load_preprocessor

                learned = load_preprocessor(inputs[PARENT_TOKENIZER])
                try:
                    vocab = learned.merged([pre]).vocabulary
                except PipelineError as exc:
                    raise PipelineError(f"pad {label}: cannot start from {parent.name}: {exc}") from None
                pre = Preprocessor(pre.normalizer, pre.segmenter, vocab, chosen, padding, truncating)
            # pass 2: every split indexed and padded, per partition, written in row order as it arrives
            rows, oov, total = (dict.fromkeys(SPLITS, 0) for _ in range(3))
            with ExitStack() as writing:
                writers = {name: writing.enter_context(ParquetRowGroupWriter(out.path(f"{name}.parquet"),
                                                                             padded.schema(chosen)))
                           for name in SPLITS}
                shared_pre = Shared(pre)                    # the vocabulary goes to each worker once
                for indexed in eng.map(index_partition, [(*paths, a, b, label, shared_pre) for a, b in parts],
                                       what=f"pad {label}: ids", local_below=LOCAL_BELOW):
                    for name in SPLITS:
                        writers[name].write(indexed[name]["table"])
                        rows[name] += indexed[name]["table"].num_rows
                        oov[name] += indexed[name]["oov"]
                        total[name] += indexed[name]["tokens"]
            runs_on = eng.where

        report = {"vocab_size": vocab.size, "pretrained_words": own_size - train_vocab, "maxlen": chosen,
                  **({"parent": parent.name, "parent_vocab_size": learned.vocab_size} if parent is not None else {}),
                  "maxlen_mode": "auto" if maxlen == "auto" else "fixed",
                  "train_sequences_fitting": (round(float((train_lengths <= chosen).mean()), 4)
                                              if len(train_lengths) else None), "train_token_coverage": None}
        for name in SPLITS:
            report[f"{name}_rows"] = rows[name]
            rate = oov[name] / total[name] if total[name] else 0.0
            if name == "train":
                report["train_token_coverage"] = round(1 - rate, 4)
            else:
                report[f"{name}_oov_rate"] = round(rate, 4)
        write_text(out.path(layout.TOKENIZER_FILE), pre.to_json())
        write_json(out.path("vocab_report.json"), report)
        _plot_lengths(out.path("lengths.png"), train_lengths, chosen, coverage, f"{corpus} / {tok}")
        how = f"{report['train_sequences_fitting']:.1%} of train fit" if len(train_lengths) else "no train rows"
        vocabulary = (f"{learned.vocab_size:,} of {parent.name}'s and {vocab.size - learned.vocab_size:,} new"
                      if parent is not None else f"{report['pretrained_words']:,} from pretraining")
        summary = (f"pad {corpus}/{tok}: vocabulary {vocab.size:,} ids ({vocabulary}; "
                   f"{report['train_token_coverage']:.1%} of train tokens), maxlen {chosen} "
                   f"({report['maxlen_mode']}, {how}), OOV rate val "
                   f"{report.get('val_oov_rate', 0):.1%} test {report.get('test_oov_rate', 0):.1%}; rows "
                   + ", ".join(f"{name} {report[f'{name}_rows']:,}" for name in SPLITS))
        return StageResult(summary=summary, counts={**report, "partitions": len(parts), "engine": runs_on})

    return run_stage(stage, run, force=force, echo=echo)
