"""The pad stage's split tables: data/processed/<corpus>/<tok>/{train,val,test}.parquet.

One row per review: `id`, `label` (int8 0/1), `text` (the review as published) and `x`,
its padded ids (a fixed-size list of `maxlen` int32). Written in row groups of
tables.ROW_GROUP_ROWS rows, so the pad stage streams its results into them and train reads
them back a few row groups at a time (pipeline.stages.train: shards) - neither holds a
whole split in memory. Shared here because stage modules do not import each other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.tables import read_rows, row_group_ranges, unreadable
from pipeline.errors import PipelineError
from pipeline.layout import rerun_command

COLUMNS = ("id", "label", "text", "x")


def schema(maxlen: int):
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("label", pa.int8()), ("text", pa.string()),
                      ("x", pa.list_(pa.int32(), maxlen))])


def to_table(x: np.ndarray, label: np.ndarray, ids, text, maxlen: int):
    """An Arrow table of padded rows (x: int32 array of shape (rows, maxlen))."""
    import pyarrow as pa

    x = np.ascontiguousarray(x, dtype=np.int32).reshape(-1, maxlen)
    return pa.table([pa.array(list(ids), pa.string()), pa.array(np.asarray(label, dtype=np.int8)),
                     pa.array(list(text), pa.string()),
                     pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), maxlen)], schema=schema(maxlen))


def to_arrays(table) -> dict[str, np.ndarray]:
    """The columns of an Arrow table of padded rows as NumPy arrays (x two-dimensional)."""
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "x":
            width = column.type.list_size
            values = column.combine_chunks().flatten() if column.num_chunks else []
            out[name] = np.asarray(values, dtype=np.int32).reshape(-1, width)
        elif name == "label":
            out[name] = column.to_numpy().astype(np.int8, copy=False)
        else:
            out[name] = np.asarray(column.to_pylist(), dtype=str)
    return out


def read(path: Path | str, label: str, columns: tuple[str, ...] = COLUMNS) -> dict[str, np.ndarray]:
    """`columns` of a whole split table written by the pad stage of `label` (checked to be one)."""
    return to_arrays(read_rows(path, 0, describe(path, label)["rows"], "pad", label, list(columns)))


def describe(path: Path | str, label: str) -> dict:
    """Rows, maxlen and row-group ranges of a split table, from its footer; PipelineError if it is not one."""
    import pyarrow.parquet as pq

    try:
        arrow_schema = pq.read_schema(path)
        ranges = row_group_ranges(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        raise unreadable(Path(path), "pad", label, exc) from None
    names = arrow_schema.names
    x_type = arrow_schema.field("x").type if "x" in names else None
    if sorted(names) != sorted(COLUMNS) or getattr(x_type, "list_size", None) is None:
        raise PipelineError(f"{path} is not a table the pad stage writes (columns {', '.join(names)}) - re-run "
                            f"`{rerun_command('pad', label)} --force`")
    return {"rows": ranges[-1][1] if ranges else 0, "maxlen": x_type.list_size, "row_groups": ranges}
