"""dedupe: exact duplicate texts (after cleaning), conflicting labels, train/test leakage.

Policies (defaults in pipeline.params.DEDUPE):
- duplicates among training rows: one row per text is kept (the first);
- conflicts, the same text with different labels among training rows:
  `drop` every such row | `majority` keep the majority label (ties dropped) | `first` keep the first row;
- leakage, a text in both an upstream train and test file:
  `drop-train` remove it from train, so the test rows stay exactly as published | `keep` only report it;
- test rows stay as published (duplicates included) unless `dedupe_test`.

The stage applies the policies (`dedupe_table`) to a slim table whose texts are 128-bit
BLAKE2b keys, read one row group at a time, then streams the kept rows from clean.parquet
in order: memory grows with the number of rows, not with their text.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline import params as defaults
from pipeline.io import (
    Input,
    ParameterError,
    ParquetRowGroupWriter,
    PipelineError,
    Stage,
    StageResult,
    Staging,
    read_rows,
    row_group_ranges,
    run_stage,
)

CONFLICT_POLICIES = ("drop", "majority", "first")
LEAKAGE_POLICIES = ("drop-train", "keep")


def resolve_conflicts(rows: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, int, int]:
    """Apply the conflict policy; return (rows, conflicting texts, rows removed)."""
    n_labels = rows.groupby("text")["label"].transform("nunique")
    conflicted = n_labels > 1
    n_texts = int(rows.loc[conflicted, "text"].nunique())
    if policy == "drop":
        keep = ~conflicted
    elif policy == "majority":
        counts = rows[conflicted].groupby(["text", "label"]).size().unstack(fill_value=0)
        winners = counts.idxmax(axis=1)[counts.max(axis=1) * 2 > counts.sum(axis=1)]
        majority = rows["text"].map(winners)
        keep = ~conflicted | (rows["label"] == majority)
    elif policy == "first":
        first_label = rows.drop_duplicates("text").set_index("text")["label"]
        keep = rows["label"] == rows["text"].map(first_label)
    else:
        raise PipelineError(f"unknown conflict policy {policy!r}; choose one of {', '.join(CONFLICT_POLICIES)}")
    return rows[keep], n_texts, int((~keep).sum())


def dedupe_table(table: pd.DataFrame, *, conflicts: str, leakage: str, dedupe_test: bool
                 ) -> tuple[pd.DataFrame, dict]:
    if leakage not in LEAKAGE_POLICIES:
        raise ParameterError(f"unknown leakage policy {leakage!r}; choose one of {', '.join(LEAKAGE_POLICIES)}")
    is_test = table["source"] == "test"
    train, test = table[~is_test], table[is_test]
    counts: dict = {"train_in": len(train), "test_in": len(test)}

    train, counts["conflicting_texts"], counts["conflict_rows_removed"] = resolve_conflicts(train, conflicts)
    before = len(train)
    train = train.drop_duplicates("text", keep="first")
    counts["duplicates_removed"] = before - len(train)

    test_texts = set(test.loc[test["text"] != "", "text"])
    leaked = train["text"].isin(test_texts)
    counts["leaked_texts"] = int(leaked.sum())
    counts["leaked_test_rows"] = int(test["text"].isin(set(train.loc[leaked, "text"])).sum())
    if leakage == "drop-train":
        train = train[~leaked]
    counts["test_duplicates"] = int(test["text"].duplicated().sum())
    if dedupe_test:
        test = test.drop_duplicates("text", keep="first")
    counts["train_out"], counts["test_out"] = len(train), len(test)
    return pd.concat([train, test]).reset_index(drop=True), counts


def _summary(corpus: str, c: dict, conflicts: str, leakage: str, dedupe_test: bool) -> str:
    line = (f"dedupe {corpus}: train {c['train_in']:,} -> {c['train_out']:,} rows "
            f"({c['duplicates_removed']:,} duplicates removed; {c['conflicting_texts']:,} texts with "
            f"conflicting labels, {c['conflict_rows_removed']:,} rows removed by policy '{conflicts}'")
    if c["test_in"]:
        action = "removed from train" if leakage == "drop-train" else "kept (policy 'keep')"
        line += (f"; {c['leaked_texts']:,} texts also in test ({c['leaked_test_rows']:,} test rows): {action}); "
                 f"test {c['test_in']:,} -> {c['test_out']:,} rows ({c['test_duplicates']:,} duplicate rows "
                 f"{'removed' if dedupe_test else 'kept as published'})")
    else:
        line += ")"
    return line


def _text_keys(path: Path, corpus: str) -> pd.DataFrame:
    """row, text, label, source of clean.parquet, the text as a 128-bit BLAKE2b key ("" for an empty text):
    what the policies need, a fraction of the text's memory. Read one row group at a time."""
    parts = [pd.DataFrame({"row": np.zeros(0, np.int64), "text": [], "label": np.zeros(0, np.int8), "source": []})]
    for start, stop in row_group_ranges(path):
        rows = read_rows(path, start, stop, "clean", corpus, ["text", "label", "source"]).to_pandas()
        keys = [hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest() if text else ""
                for text in rows["text"].fillna("")]
        parts.append(pd.DataFrame({"row": np.arange(start, stop), "text": keys, "label": rows["label"].to_numpy(),
                                   "source": rows["source"].to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def _write_rows(path: Path, positions: np.ndarray, target: Path, corpus: str) -> None:
    """Rows `positions` of the Parquet file at `path`, in that order (runs of increasing positions:
    train rows, then test rows), streamed one row group at a time."""
    runs = np.split(positions, np.flatnonzero(np.diff(positions) <= 0) + 1)
    ranges = row_group_ranges(path)
    schema = pq.read_schema(path)
    with ParquetRowGroupWriter(target, schema) as writer:
        for run in runs:
            for start, stop in ranges:
                lo, hi = np.searchsorted(run, [start, stop])
                if hi > lo:
                    writer.write(read_rows(path, start, stop, "clean", corpus).take(run[lo:hi] - start))


def plan(corpus: str, *, data_dir: Path | str = "data", conflicts: str = defaults.DEDUPE["conflicts"],
         leakage: str = defaults.DEDUPE["leakage"], dedupe_test: bool = defaults.DEDUPE["dedupe_test"]) -> Stage:
    if conflicts not in CONFLICT_POLICIES:
        raise ParameterError(f"unknown conflict policy {conflicts!r}; choose one of {', '.join(CONFLICT_POLICIES)}")
    if leakage not in LEAKAGE_POLICIES:
        raise ParameterError(f"unknown leakage policy {leakage!r}; choose one of {', '.join(LEAKAGE_POLICIES)}")
    folder = Path(data_dir) / "interim" / corpus
    return Stage("dedupe", corpus, folder, inputs={"clean.parquet": Input(folder / "clean.parquet", "clean")},
                 params={"conflicts": conflicts, "leakage": leakage, "dedupe_test": bool(dedupe_test)},
                 outputs=("dedupe.parquet",))


def dedupe(corpus: str, *, data_dir: Path | str = "data", conflicts: str = defaults.DEDUPE["conflicts"],
           leakage: str = defaults.DEDUPE["leakage"], dedupe_test: bool = defaults.DEDUPE["dedupe_test"],
           force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    stage = plan(corpus, data_dir=data_dir, conflicts=conflicts, leakage=leakage, dedupe_test=dedupe_test)

    def run(out: Staging) -> StageResult:
        source = stage.inputs["clean.parquet"].path
        kept, counts = dedupe_table(_text_keys(source, corpus), conflicts=conflicts, leakage=leakage,
                                    dedupe_test=dedupe_test)
        if not counts["train_out"]:
            raise PipelineError(f"dedupe {corpus}: no training rows left (policy conflicts={conflicts!r})")
        _write_rows(source, kept["row"].to_numpy(), out.path("dedupe.parquet"), corpus)
        return StageResult(summary=_summary(corpus, counts, conflicts, leakage, dedupe_test), counts=counts)

    return run_stage(stage, run, force=force, echo=echo)
