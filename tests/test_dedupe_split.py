"""dedupe policies and the seeded, stratified split."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.core.stage import adopt_outputs
from pipeline.errors import PipelineError
from pipeline.stages.dedupe import dedupe, dedupe_table
from pipeline.stages.split import assign_splits, split


def _table(rows):
    return pd.DataFrame(rows, columns=["id", "text", "label", "source"]).assign(
        raw=lambda t: t["text"], rating=pd.NA)


ROWS = [
    ("1", "좋다", 1, "train"), ("2", "좋다", 1, "train"), ("3", "좋다", 1, "train"),   # duplicates
    ("4", "애매", 1, "train"), ("5", "애매", 0, "train"), ("6", "애매", 1, "train"),   # conflict, majority 1
    ("7", "반반", 1, "train"), ("8", "반반", 0, "train"),                             # conflict, tie
    ("9", "최고", 1, "train"), ("10", "별로", 0, "train"),
    ("11", "최고", 1, "test"), ("12", "최고", 1, "test"), ("13", "", 0, "test"), ("14", "새로움", 0, "test"),
]


@pytest.mark.parametrize("policy, kept_conflicts", [("drop", []), ("majority", [("애매", 1)]),
                                                    ("first", [("반반", 1), ("애매", 1)])])
def test_conflict_policies(policy, kept_conflicts):
    out, counts = dedupe_table(_table(ROWS), conflicts=policy, leakage="keep", dedupe_test=False)
    train = out[out["source"] == "train"]
    assert train["text"].is_unique
    kept = sorted((t, y) for t, y in zip(train["text"], train["label"], strict=True) if t in ("애매", "반반"))
    assert kept == kept_conflicts
    assert counts["conflicting_texts"] == 2


def test_duplicates_leakage_and_test_rows_as_published():
    out, counts = dedupe_table(_table(ROWS), conflicts="drop", leakage="drop-train", dedupe_test=False)
    assert counts["duplicates_removed"] == 2
    assert counts["leaked_texts"] == 1 and counts["leaked_test_rows"] == 2
    assert out.loc[out["source"] == "train", "text"].tolist() == ["좋다", "별로"]
    assert out.loc[out["source"] == "test", "id"].tolist() == ["11", "12", "13", "14"]  # untouched
    assert counts["test_duplicates"] == 1


def test_leakage_keep_and_dedupe_test():
    out, counts = dedupe_table(_table(ROWS), conflicts="drop", leakage="keep", dedupe_test=True)
    assert "최고" in out.loc[out["source"] == "train", "text"].tolist()
    assert out.loc[out["source"] == "test", "id"].tolist() == ["11", "13", "14"]
    assert counts["test_out"] == 3


def test_dedupe_stage_summary_and_bad_policy(tmp_path):
    folder = tmp_path / "interim" / "c"
    folder.mkdir(parents=True)
    _table(ROWS).to_parquet(folder / "clean.parquet")
    adopt_outputs("clean", "c", folder, ["clean.parquet"])
    lines = []
    dedupe("c", data_dir=tmp_path, echo=lines.append)                   # defaults: majority, keep
    assert lines[0].startswith("dedupe c: train 10 -> 4 rows (3 duplicates removed; 2 texts with conflicting "
                               "labels, 3 rows removed by policy 'majority'")
    assert "1 texts also in test (2 test rows): kept (policy 'keep')" in lines[0]
    assert "test 4 -> 4 rows (1 duplicate rows kept as published)" in lines[0]
    with pytest.raises(PipelineError, match="conflicts must be one of drop, majority, first"):
        dedupe("c", data_dir=tmp_path, conflicts="vote")


def _many(n, source="train"):
    return pd.DataFrame({"id": [str(i) for i in range(n)], "text": [f"t{i}" for i in range(n)],
                         "label": [int(i % 4 == 0) for i in range(n)], "source": source})


def test_split_with_upstream_test_is_stratified_and_seeded():
    table = pd.concat([_many(1000), _many(200, "test").assign(id=lambda t: "x" + t["id"])], ignore_index=True)
    first = assign_splits(table, seed=7, val_ratio=0.1, test_ratio=0.1)
    assert first.equals(assign_splits(table, seed=7, val_ratio=0.1, test_ratio=0.1))
    assert not first.equals(assign_splits(table, seed=8, val_ratio=0.1, test_ratio=0.1))
    assert (first[table["source"] == "test"] == "test").all()
    assert (first == "val").sum() == 100
    assert table.loc[first == "val", "label"].mean() == pytest.approx(0.25)


def test_split_without_upstream_test_uses_ratios():
    table = _many(1000, "all")
    parts = assign_splits(table, seed=1, val_ratio=0.1, test_ratio=0.2).value_counts().to_dict()
    assert parts == {"train": 700, "test": 200, "val": 100}


def test_split_stage_writes_table_and_report(tmp_path):
    folder = tmp_path / "interim" / "c"
    folder.mkdir(parents=True)
    _many(500, "all").assign(raw="r", rating=pd.NA).to_parquet(folder / "dedupe.parquet")
    adopt_outputs("dedupe", "c", folder, ["dedupe.parquet"])
    result = split("c", data_dir=tmp_path, echo=lambda line: None)
    assert result.counts["train"]["rows"] + result.counts["val"]["rows"] + result.counts["test"]["rows"] == 500
    table = pd.read_parquet(folder / "split.parquet")
    assert table["id"].tolist() == [str(i) for i in range(500)]    # same rows, same order
    with pytest.raises(PipelineError, match="val_ratio must be between 0 and 1"):
        split("c", data_dir=tmp_path, val_ratio=1.5)
    # a manifest damaged into another shape ("params" not an object) is re-made, not a crash
    manifest = folder / "split.manifest.json"
    manifest.write_text(manifest.read_text().replace('"params": {', '"params": "x", "was": {', 1))
    again = split("c", data_dir=tmp_path, echo=lambda line: None)
    assert not again.skipped and json.loads(manifest.read_text())["params"]["seed"] == 42


POLICIES = [(c, leak, test) for c in ("drop", "majority", "first") for leak, test in (("drop-train", False),
                                                                                      ("keep", True))]


@pytest.mark.parametrize("conflicts, leakage, dedupe_test, bucket_rows, workers",
                         [(*p, 1_000, 1) for p in POLICIES] + [(*p, 4, 1) for p in POLICIES]
                         + [("majority", "keep", True, 4, 2)])          # 2 workers: a cluster start per case
def test_dedupe_stage_over_row_groups_gives_the_whole_table_result(tmp_path, monkeypatch, conflicts, leakage,
                                                                    dedupe_test, bucket_rows, workers):
    """The stage keys texts by hash per row group and applies the policies per hash bucket (on the
    engine's workers); the result must be the whole table's, for any number of buckets and workers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.stages import dedupe as stage

    monkeypatch.setattr(stage, "BUCKET_ROWS", bucket_rows)
    monkeypatch.setattr(stage, "LOCAL_BELOW", 2)

    folder = tmp_path / "interim" / "c"
    folder.mkdir(parents=True)
    rows = ROWS[:10] + ROWS[3:6] + ROWS[10:]                     # train rows after some test-like repeats
    table = _table(rows)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), folder / "clean.parquet", row_group_size=3)
    adopt_outputs("clean", "c", folder, ["clean.parquet"])
    result = dedupe("c", data_dir=tmp_path, conflicts=conflicts, leakage=leakage, dedupe_test=dedupe_test,
                    workers=workers, echo=lambda line: None)
    assert result.counts["buckets"] == (1 if bucket_rows > len(rows) else -(-len(rows) // bucket_rows))
    assert result.counts["engine"] == ("2 Dask workers" if workers > 1 else "1 process")
    assert sorted(p.name for p in folder.iterdir()) == ["clean.manifest.json", "clean.parquet",
                                                         "dedupe.manifest.json", "dedupe.parquet"]   # no spill left
    expected, counts = dedupe_table(pd.read_parquet(folder / "clean.parquet"), conflicts=conflicts, leakage=leakage,
                                    dedupe_test=dedupe_test)
    written = pd.read_parquet(folder / "dedupe.parquet")
    pd.testing.assert_frame_equal(written, expected.reset_index(drop=True))
    assert {key: result.counts[key] for key in counts} == counts
