"""split: decide train / validation / test membership, seeded and stratified by label.

Runs before any vocabulary or maxlen is fitted (the pad stage fits them on the
train rows only), and is shared by every tokenization of a corpus, so all
models of a corpus are compared on the same rows. A corpus with an upstream test
file keeps it as the test split and carves validation out of its train rows
(`val_ratio` of them); a corpus without one is split `test_ratio` / `val_ratio`
of all rows.

Output `data/interim/<corpus>/split.parquet`: the deduplicated rows in the same
order with a `split` column; `split_report.json`: rows and class balance per split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pipeline import params as defaults
from pipeline.io import PipelineError, StageResult, atomic_path, run_stage, write_json

SPLITS = ("train", "val", "test")


def _stratified(index: np.ndarray, labels: pd.Series, size: float, seed: int):
    return train_test_split(index, test_size=size, stratify=labels.loc[index], random_state=seed)


def assign_splits(table: pd.DataFrame, *, seed: int, val_ratio: float, test_ratio: float) -> pd.Series:
    split = pd.Series("train", index=table.index, dtype="object")
    has_test = (table["source"] == "test").any()
    if has_test:
        split[table["source"] == "test"] = "test"
        pool = table.index[table["source"] != "test"].to_numpy()
    else:
        pool, test_idx = _stratified(table.index.to_numpy(), table["label"], test_ratio, seed)
        split[test_idx] = "test"
        val_ratio = val_ratio / (1 - test_ratio)  # val_ratio is a share of all rows here
    _, val_idx = _stratified(pool, table["label"], val_ratio, seed)
    split[val_idx] = "val"
    return split.astype("string")


def split_report(table: pd.DataFrame) -> dict:
    report = {}
    for name in SPLITS:
        labels = table.loc[table["split"] == name, "label"]
        report[name] = {"rows": int(labels.size), "positive": int(labels.sum()),
                        "positive_share": round(float(labels.mean()), 4) if labels.size else None}
    return report


def split(corpus: str, *, data_dir: Path | str = "data", seed: int = defaults.SPLIT["seed"],
          val_ratio: float = defaults.SPLIT["val_ratio"], test_ratio: float = defaults.SPLIT["test_ratio"],
          force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    for name, ratio in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if not 0 < ratio < 1:
            raise PipelineError(f"{name} must be between 0 and 1, got {ratio}")
    out_dir = Path(data_dir) / "interim" / corpus
    source, target, report_path = out_dir / "dedupe.parquet", out_dir / "split.parquet", out_dir / "split_report.json"

    def run() -> StageResult:
        table = pd.read_parquet(source)
        table["split"] = assign_splits(table, seed=seed, val_ratio=val_ratio, test_ratio=test_ratio)
        with atomic_path(target) as tmp:
            table.to_parquet(tmp, index=False)
        report = split_report(table)
        write_json(report_path, report)
        parts = ", ".join(f"{name} {r['rows']:,} ({r['positive_share']:.1%} positive)"
                          for name, r in report.items() if r["rows"])
        return StageResult(summary=f"split {corpus}: {parts}", counts=report)

    return run_stage("split", corpus, out_dir, inputs={"dedupe.parquet": source},
                     params={"seed": seed, "val_ratio": val_ratio, "test_ratio": test_ratio},
                     outputs={"split.parquet": target, "split_report.json": report_path},
                     run=run, force=force, echo=echo)
