"""pad: fit the vocabulary and maxlen on the train split, index and pad every split.

Inputs: the tokenize stage's tokens.parquet + segmenter.json, the split stage's
split.parquet and the clean stage's normalizer.json. Outputs in
data/processed/<corpus>/<tok>/: train.npz, val.npz, test.npz (x: padded int32 ids,
y: labels, ids, text: the review as published), tokenizer.json (everything
`predict` needs to replay the preprocessing), vocab_report.json and lengths.png.
Nothing is learned from validation or test rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import params as defaults
from pipeline.io import PipelineError, StageResult, atomic_path, read_json, run_stage, write_json, write_text
from pipeline.stages.split import SPLITS
from pipeline.text.normalize import Normalizer
from pipeline.text.preprocess import Preprocessor
from pipeline.text.segment import Segmenter
from pipeline.text.sequences import SIDES, length_for_coverage
from pipeline.text.vocab import Vocabulary


def processed_dir(data_dir: Path | str, corpus: str, tok: str) -> Path:
    return Path(data_dir) / "processed" / corpus / tok


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def pad(corpus: str, tok: str, *, data_dir: Path | str = "data", max_words: int = defaults.PAD["max_words"],
        min_freq: int = defaults.PAD["min_freq"], maxlen: int | str = defaults.PAD["maxlen"],
        coverage: float = defaults.PAD["coverage"], padding: str = defaults.PAD["padding"],
        truncating: str = defaults.PAD["truncating"], force: bool = False,
        echo: Callable[[str], None] | None = None) -> StageResult:
    if padding not in SIDES or truncating not in SIDES:
        raise PipelineError("padding and truncating must each be 'pre' or 'post'")
    if maxlen != "auto" and (not str(maxlen).isdigit() or int(maxlen) < 1):
        raise PipelineError(f"maxlen must be a positive integer or 'auto', got {maxlen!r}")
    interim = Path(data_dir) / "interim" / corpus
    out_dir = processed_dir(data_dir, corpus, tok)
    inputs = {"tokens.parquet": out_dir / "tokens.parquet", "segmenter.json": out_dir / "segmenter.json",
              "split.parquet": interim / "split.parquet", "normalizer.json": interim / "normalizer.json"}
    outputs = {f"{name}.npz": out_dir / f"{name}.npz" for name in SPLITS}
    outputs.update({name: out_dir / name for name in ("tokenizer.json", "vocab_report.json", "lengths.png")})

    def run() -> StageResult:
        tokens = pd.read_parquet(inputs["tokens.parquet"])
        rows = pd.read_parquet(inputs["split.parquet"])
        if len(tokens) != len(rows) or not np.array_equal(tokens["id"].to_numpy(dtype=str),
                                                          rows["id"].to_numpy(dtype=str)):
            raise PipelineError(f"pad {corpus}/{tok}: tokens.parquet does not match split.parquet row for row "
                                f"- re-run `ksent tokenize --corpus {corpus}` (the dedupe output changed)")
        token_lists = [list(t) for t in tokens["tokens"]]
        in_split = {name: (rows["split"] == name).to_numpy() for name in SPLITS}
        train_tokens = [t for t, keep in zip(token_lists, in_split["train"]) if keep]

        vocab = Vocabulary(max_words=max_words, min_freq=min_freq).fit(train_tokens)
        train_lengths = np.array([len(t) for t in train_tokens])
        chosen = length_for_coverage(train_lengths, coverage) if maxlen == "auto" else int(maxlen)
        pre = Preprocessor(normalizer=Normalizer.from_dict(read_json(inputs["normalizer.json"])),
                           segmenter=Segmenter.from_dict(read_json(inputs["segmenter.json"])),
                           vocabulary=vocab, maxlen=chosen, padding=padding, truncating=truncating)

        report = {"vocab_size": vocab.size, "maxlen": chosen, "maxlen_mode": "auto" if maxlen == "auto" else "fixed",
                  "train_sequences_fitting": round(float((train_lengths <= chosen).mean()), 4) if len(train_lengths) else None,
                  "train_token_coverage": round(1 - vocab.oov_rate(train_tokens), 4)}
        ids = vocab.transform(token_lists)
        for name in SPLITS:
            mask = in_split[name]
            split_ids = [seq for seq, keep in zip(ids, mask) if keep]
            _save_npz(outputs[f"{name}.npz"], x=pre.pad(split_ids),
                      y=rows.loc[mask, "label"].to_numpy(dtype=np.int8),
                      ids=rows.loc[mask, "id"].to_numpy(dtype=str), text=rows.loc[mask, "raw"].to_numpy(dtype=str))
            report[f"{name}_rows"] = int(mask.sum())
            if name != "train":
                report[f"{name}_oov_rate"] = round(vocab.oov_rate(t for t, keep in zip(token_lists, mask) if keep), 4)
        write_text(outputs["tokenizer.json"], pre.to_json())
        write_json(outputs["vocab_report.json"], report)
        _plot_lengths(outputs["lengths.png"], train_lengths, chosen, coverage, f"{corpus} / {tok}")
        how = f"{report['train_sequences_fitting']:.1%} of train fit" if len(train_lengths) else "no train rows"
        summary = (f"pad {corpus}/{tok}: vocabulary {vocab.size:,} ids ({report['train_token_coverage']:.1%} of "
                   f"train tokens), maxlen {chosen} ({report['maxlen_mode']}, {how}), OOV rate val "
                   f"{report.get('val_oov_rate', 0):.1%} test {report.get('test_oov_rate', 0):.1%}; rows "
                   + ", ".join(f"{name} {report[f'{name}_rows']:,}" for name in SPLITS))
        return StageResult(summary=summary, counts=report)

    return run_stage("pad", f"{corpus}/{tok}", out_dir, inputs=inputs,
                     params={"max_words": max_words, "min_freq": min_freq, "maxlen": maxlen, "coverage": coverage,
                             "padding": padding, "truncating": truncating},
                     outputs=outputs, run=run, force=force, echo=echo)
