"""dedupe: exact duplicate texts (after cleaning), conflicting labels, train/test leakage.

Policies (defaults in pipeline.params.DEDUPE):
- duplicates among training rows: one row per text is kept (the first);
- conflicts, the same text with different labels among training rows:
  `drop` every such row | `majority` keep the majority label (ties dropped) | `first` keep the first row;
- leakage, a text in both an upstream train and test file:
  `drop-train` remove it from train, so the test rows stay exactly as published | `keep` only report it;
- test rows stay as published (duplicates included) unless `dedupe_test`.

Every policy decides per text, so the stage partitions by text: on the engine
(pipeline.core.engine), pass 1 turns each row group of clean.parquet into a slim table whose texts
are 128-bit BLAKE2b keys, spilled into the staging folder ordered by hash bucket; pass 2
applies the policies (`dedupe_table`) to one bucket at a time (about BUCKET_ROWS rows). The
kept rows are then streamed from clean.parquet in order. No process holds more than a
bucket's keys or a row group's text; this one keeps two flags per row.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline import layout, params as defaults
from pipeline.core.engine import DEFAULT_WORKERS, Engine
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import ParquetRowGroupWriter, read_rows, row_group_ranges
from pipeline.errors import PipelineError

BUCKET_ROWS = 250_000       # rows per hash bucket, on average: what pass 2 holds at once
LOCAL_BELOW = 16            # fewer row groups than this run in this process (as pad)


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
    else:                       # "first" (pipeline.params.DEDUPE declares the policies; plan checks them)
        first_label = rows.drop_duplicates("text").set_index("text")["label"]
        keep = rows["label"] == rows["text"].map(first_label)
    return rows[keep], n_texts, int((~keep).sum())


def dedupe_table(table: pd.DataFrame, *, conflicts: str, leakage: str, dedupe_test: bool
                 ) -> tuple[pd.DataFrame, dict]:
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


def spill_keys(path: str, start: int, stop: int, corpus: str, spill: str, n_buckets: int) -> list[int]:
    """Pass 1, rows [start, stop) of clean.parquet: row, text as a 128-bit BLAKE2b key ("" for an empty
    text), label and source, written to <spill>/<start>.parquet one row group per hash bucket (rows in
    order within it). Returns the rows per bucket."""
    import pyarrow as pa

    rows = read_rows(path, start, stop, "clean", corpus, ["text", "label", "source"]).to_pandas()
    keys = [hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest() if text else ""
            for text in rows["text"].fillna("")]
    bucket = np.array([int(key[:8], 16) % n_buckets if key else 0 for key in keys], dtype=np.int64)
    table = pd.DataFrame({"row": np.arange(start, stop), "text": keys, "label": rows["label"].to_numpy(),
                          "source": rows["source"].to_numpy()}).iloc[np.argsort(bucket, kind="stable")]
    sizes = np.bincount(bucket, minlength=n_buckets)
    target = Path(spill) / f"{start:012d}.parquet"
    temp = target.with_suffix(f".tmp-{os.getpid()}")          # a retried partition rewrites it whole
    with pq.ParquetWriter(temp, pa.Schema.from_pandas(table, preserve_index=False)) as writer:
        offset = 0
        for size in sizes[sizes > 0]:
            writer.write_table(pa.Table.from_pandas(table.iloc[offset:offset + size], preserve_index=False))
            offset += size
    os.replace(temp, target)
    return sizes.tolist()


def dedupe_bucket(spill: str, bucket: int, pieces: list[tuple[int, int, int]], corpus: str, conflicts: str,
                  leakage: str, dedupe_test: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pass 2: the policies applied to one hash bucket, gathered from every partition's spill file
    (`pieces`: partition start, offset and rows of the bucket in it). Kept train rows, kept test rows, counts."""
    parts = [pd.DataFrame({"row": np.zeros(0, np.int64), "text": [], "label": np.zeros(0, np.int8), "source": []})]
    for start, offset, n in pieces:
        parts.append(read_rows(Path(spill) / f"{start:012d}.parquet", offset, offset + n, "dedupe", corpus
                               ).to_pandas())
    table = pd.concat(parts, ignore_index=True)
    kept, counts = dedupe_table(table, conflicts=conflicts, leakage=leakage, dedupe_test=dedupe_test)
    is_test = (kept["source"] == "test").to_numpy()
    rows = kept["row"].to_numpy(dtype=np.int64)
    return rows[~is_test], rows[is_test], counts


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


def plan(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, **params) -> Stage:
    """`params`: pipeline.params.DEDUPE (conflicts, leakage, dedupe_test)."""
    folder = layout.interim_dir(data_dir, corpus)
    return Stage("dedupe", corpus, folder,
                 inputs={"clean.parquet": Input(folder / "clean.parquet", "clean", label=corpus)},
                 params=defaults.DEDUPE.resolve(params),
                 outputs=("dedupe.parquet",))


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, data_dir=t.data_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return dedupe(t.corpus, data_dir=t.data_dir, workers=t.workers, scheduler=t.scheduler, **kwargs)


def dedupe(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, workers: int | None = None,
           scheduler: str | None = None, force: bool = False, echo: Callable[[str], None] | None = None,
           **params) -> StageResult:
    """Deduplicate clean.parquet into dedupe.parquet; `params`: pipeline.params.DEDUPE."""
    stage = plan(corpus, data_dir=data_dir, **params)
    conflicts, leakage, dedupe_test = (stage.params[k] for k in ("conflicts", "leakage", "dedupe_test"))

    def run(out: Staging) -> StageResult:
        source = stage.inputs["clean.parquet"].path
        parts = row_group_ranges(source)
        n_rows = parts[-1][1] if parts else 0
        n_buckets = max(1, math.ceil(n_rows / BUCKET_ROWS))
        spill = out.path("keys")                        # in the staging folder: seen by the workers, never published
        spill.mkdir()
        clean_path, spill_dir = str(source.resolve()), str(spill.resolve())
        keep_train, keep_test = np.zeros(n_rows, bool), np.zeros(n_rows, bool)
        counts: dict = {}
        with Engine(DEFAULT_WORKERS if workers is None else workers, scheduler) as eng:
            sizes = list(eng.map(spill_keys, [(clean_path, a, b, corpus, spill_dir, n_buckets) for a, b in parts],
                                 what=f"dedupe {corpus}: keys", local_below=LOCAL_BELOW))
            offsets = [np.concatenate([[0], np.cumsum(s)[:-1]]) for s in sizes]
            buckets = [(spill_dir, b, [(a, int(off[b]), n[b]) for (a, _), off, n in zip(parts, offsets, sizes,
                                                                                        strict=True) if n[b]],
                        corpus, conflicts, leakage, dedupe_test) for b in range(n_buckets)]
            for train_rows, test_rows, bucket_counts in eng.map(dedupe_bucket, buckets, what=f"dedupe {corpus}",
                                                                local_below=2):
                keep_train[train_rows] = True
                keep_test[test_rows] = True
                for key, value in bucket_counts.items():
                    counts[key] = counts.get(key, 0) + value
            runs_on = eng.where
        shutil.rmtree(spill)
        if not counts["train_out"]:
            raise PipelineError(f"dedupe {corpus}: no training rows left (policy conflicts={conflicts!r})")
        # train rows, then test rows, each in the order of clean.parquet (as dedupe_table orders them)
        positions = np.concatenate([np.flatnonzero(keep_train), np.flatnonzero(keep_test)])
        _write_rows(source, positions, out.path("dedupe.parquet"), corpus)
        return StageResult(summary=_summary(corpus, counts, conflicts, leakage, dedupe_test),
                           counts={**counts, "buckets": n_buckets, "engine": runs_on})

    return run_stage(stage, run, force=force, echo=echo)
