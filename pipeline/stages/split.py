"""split: decide train / validation / test membership, seeded and stratified by label.

Runs before any vocabulary or maxlen is fitted (the pad stage fits them on the
train rows only), and is shared by every tokenization of a corpus, so all
models of a corpus are compared on the same rows. Rows whose source already says
(an upstream test file, or a declared split column) keep it; the split that is not
given is carved out of the rest: validation as `val_ratio` of the train rows when
there is a test file, else test and validation as `test_ratio` / `val_ratio` of
all rows. A corpus declaration may set its own defaults for the three parameters.

Output `data/interim/<corpus>/split.parquet`: the deduplicated rows in the same
order with a `split` column; `split_report.json`: rows and class balance per split.
Membership is decided from the label and source columns alone; the rows are then
streamed through one row group at a time, so memory does not grow with the text.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline import layout, params as defaults
from pipeline.core.files import write_json
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import ParquetRowGroupWriter, read_rows, read_table, row_group_ranges
from pipeline.corpora import CORPORA
from pipeline.corpora.spec import split_problem
from pipeline.errors import ParameterError


def _stratified(index: np.ndarray, labels: pd.Series, size: float, seed: int):
    return train_test_split(index, test_size=size, stratify=labels.loc[index], random_state=seed)


def assign_splits(table: pd.DataFrame, *, seed: int, val_ratio: float, test_ratio: float) -> pd.Series:
    split = pd.Series("train", index=table.index, dtype="object")
    given = table["source"].isin(["test", "val"])
    split[given] = table.loc[given, "source"]
    pool = table.index[~given].to_numpy()
    has_test, has_val = (table["source"] == "test").any(), (table["source"] == "val").any()
    if not has_test:
        pool, test_idx = _stratified(pool, table["label"], test_ratio, seed)
        split[test_idx] = "test"
        if not has_val:
            val_ratio = val_ratio / (1 - test_ratio)  # val_ratio is a share of all rows here
    if not has_val:
        _, val_idx = _stratified(pool, table["label"], val_ratio, seed)
        split[val_idx] = "val"
    return split.astype("string")


def split_report(table: pd.DataFrame) -> dict:
    report = {}
    for name in layout.SPLITS:
        labels = table.loc[table["split"] == name, "label"]
        report[name] = {"rows": int(labels.size), "positive": int(labels.sum()),
                        "positive_share": round(float(labels.mean()), 4) if labels.size else None}
    return report


def _check_sizes(table: pd.DataFrame, val_ratio: float, test_ratio: float, corpus: str) -> None:
    """Refuse ratios that would leave a split empty or without both classes (sklearn's error is opaque)."""
    counts = {str(source): {int(label): int(n) for label, n in group["label"].value_counts().items()}
              for source, group in table.groupby("source")}
    problem = split_problem(counts, val_ratio, test_ratio)
    if problem:
        raise ParameterError(f"split {corpus}: {problem}")


def _write_with_split(source: Path, split: pd.Series, target: Path, corpus: str) -> None:
    """dedupe.parquet's rows with the `split` column added, one row group at a time."""
    import pyarrow as pa

    def with_split(start: int, stop: int):
        rows = read_rows(source, start, stop, "dedupe", corpus).to_pandas()
        rows["split"] = pd.Series(split.iloc[start:stop].to_numpy(), dtype="string")
        return pa.Table.from_pandas(rows, preserve_index=False)

    ranges = row_group_ranges(source) or [(0, 0)]
    first = with_split(*ranges[0])
    with ParquetRowGroupWriter(target, first.schema) as writer:
        writer.write(first)
        for start, stop in ranges[1:]:
            writer.write(with_split(start, stop).cast(first.schema))


def plan(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, **params) -> Stage:
    """`params`: pipeline.params.SPLIT (seed, val_ratio, test_ratio)."""
    declared = CORPORA.get(corpus)          # a declaration may set the corpus's own defaults
    params = defaults.SPLIT.resolve(params, {**defaults.SPLIT, **dict(declared.split.defaults if declared else ())})
    if params["val_ratio"] + params["test_ratio"] >= 1:
        raise ParameterError(f"val_ratio + test_ratio must be below 1, got {params['val_ratio']} + "
                             f"{params['test_ratio']}")
    folder = layout.interim_dir(data_dir, corpus)
    return Stage("split", corpus, folder,
                 inputs={"dedupe.parquet": Input(folder / "dedupe.parquet", "dedupe", label=corpus)},
                 params=params,
                 outputs=(layout.SPLIT_FILE, "split_report.json"))


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, data_dir=t.data_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return split(t.corpus, data_dir=t.data_dir, **kwargs)


def split(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, force: bool = False,
          echo: Callable[[str], None] | None = None, **params) -> StageResult:
    """Write split.parquet; `params`: pipeline.params.SPLIT."""
    stage = plan(corpus, data_dir=data_dir, **params)
    seed, val_ratio, test_ratio = (stage.params[k] for k in ("seed", "val_ratio", "test_ratio"))

    def run(out: Staging) -> StageResult:
        source = stage.inputs["dedupe.parquet"].path
        # membership needs only the labels and sources; the rows themselves are streamed by row group
        table = read_table(source, "dedupe", corpus, columns=["source", "label"])
        _check_sizes(table, val_ratio, test_ratio, corpus)
        table["split"] = assign_splits(table, seed=seed, val_ratio=val_ratio, test_ratio=test_ratio)
        _write_with_split(source, table["split"], out.path(layout.SPLIT_FILE), corpus)
        report = split_report(table)
        write_json(out.path("split_report.json"), report)
        parts = ", ".join(f"{name} {r['rows']:,} ({r['positive_share']:.1%} positive)"
                          for name, r in report.items() if r["rows"])
        return StageResult(summary=f"split {corpus}: {parts}", counts=report)

    return run_stage(stage, run, force=force, echo=echo)
