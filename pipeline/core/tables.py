"""Parquet tables in fixed row groups, and reading back what a stage wrote with an error that
names the stage to re-run."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.files import read_json
from pipeline.errors import PipelineError
from pipeline.layout import rerun_command

# Tables are written in row groups of this many rows: the partitions the engine hands its
# workers (pipeline.core.engine). Fixed, so a table's bytes do not depend on how it was computed.
ROW_GROUP_ROWS = 20_000


class ParquetRowGroupWriter:
    """Writes Arrow tables, handed over in any chunks, as one Parquet file in row groups of
    exactly ROW_GROUP_ROWS rows (the last one shorter): the same bytes however they were chunked.

        with ParquetRowGroupWriter(path, schema) as writer:
            for table in tables:
                writer.write(table)
    """

    def __init__(self, path: Path | str, schema):
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(path, schema)
        self._buffer: list = []
        self._buffered = 0

    def write(self, table) -> None:
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        import pyarrow as pa

        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer).combine_chunks()
        full = table.num_rows if final else table.num_rows - table.num_rows % ROW_GROUP_ROWS
        for start in range(0, full, ROW_GROUP_ROWS):
            self._writer.write_table(table.slice(start, min(ROW_GROUP_ROWS, full - start)),
                                     row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(full)
        self._buffer, self._buffered = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def close(self) -> None:
        self._flush(final=True)
        self._writer.close()

    def __enter__(self) -> ParquetRowGroupWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.close()


def row_group_ranges(path: Path | str) -> list[tuple[int, int]]:
    """(start, stop) row numbers of each row group of a Parquet file: partitions by row range."""
    import pyarrow.parquet as pq

    meta, ranges, start = pq.ParquetFile(path).metadata, [], 0
    for i in range(meta.num_row_groups):
        ranges.append((start, start + meta.row_group(i).num_rows))
        start += meta.row_group(i).num_rows
    return ranges


def read_rows(path: Path | str, start: int, stop: int, stage: str, label: str, columns: list[str] | None = None):
    """Rows [start, stop) of a Parquet table written by `stage`, as an Arrow table, reading only the row
    groups they are in; PipelineError naming the stage to re-run if it is unreadable (as `read_table`)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        groups, first, offset = [], None, 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset < stop and offset + n > start:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        if not groups:
            return pf.schema_arrow.empty_table().select(columns) if columns else pf.schema_arrow.empty_table()
        return pf.read_row_groups(groups, columns=columns).slice(start - first, stop - start)
    except FileNotFoundError:   # verify_inputs saw it: this process (a Dask worker) does not
        raise PipelineError(f"{path} not found where this runs - do the Dask workers see the data folder at "
                            f"the same path?") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        raise unreadable(Path(path), stage, label, exc) from None


def unreadable(path: Path, stage: str, label: str, exc: Exception) -> PipelineError:
    return PipelineError(f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}) - re-run "
                         f"`{rerun_command(stage, label)} --force`")


def read_table(path: Path | str, stage: str, label: str, columns: list[str] | None = None):
    """A Parquet table written by `stage`; PipelineError naming the stage to re-run if it is unreadable."""
    import pandas as pd

    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
        raise unreadable(Path(path), stage, label, exc) from None


def read_split_texts(path: Path | str, corpus: str, splits: tuple[str, ...]) -> dict:
    """split -> (raw texts, labels as int8) of the split stage's split.parquet of `corpus`, read once."""
    import numpy as np

    rows = read_table(path, "split", corpus, columns=["raw", "label", "split"])
    return {split: (rows.loc[rows["split"] == split, "raw"].fillna("").astype(str).tolist(),
                    rows.loc[rows["split"] == split, "label"].to_numpy(dtype=np.int8)) for split in splits}


def read_split_tokens(tokens_path: Path | str, split_path: Path | str, what: str, label: str,
                      split_columns: list[str] | None = None):
    """The tokenize stage's tokens.parquet and the split stage's split.parquet of `label` ("corpus/tok"),
    checked to hold the same rows in the same order (PipelineError naming the stage to re-run otherwise).
    `what` names the reading stage in the message."""
    import numpy as np

    corpus = label.split("/")[0]
    tokens = read_table(tokens_path, "tokenize", label)
    rows = read_table(split_path, "split", corpus, columns=split_columns)
    if len(tokens) != len(rows) or not np.array_equal(tokens["id"].to_numpy(dtype=str),
                                                      rows["id"].to_numpy(dtype=str)):
        raise PipelineError(f"{what} {label}: tokens.parquet does not match split.parquet row for row "
                            f"- re-run `ksent tokenize --corpus {corpus}` (the dedupe output changed)")
    return tokens, rows


def read_npz(path: Path | str, stage: str, label: str, keys: tuple[str, ...]) -> dict:
    """Arrays `keys` of an .npz written by `stage`; PipelineError naming the stage to re-run if damaged."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys}
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many kinds for a damaged file
        raise unreadable(Path(path), stage, label, exc) from None


def read_json_from(path: Path | str, stage: str, label: str, kind: type = dict):
    """JSON written by `stage`, of type `kind`; PipelineError naming the stage to re-run otherwise."""
    try:
        value = read_json(path)
    except (OSError, ValueError) as exc:
        raise unreadable(Path(path), stage, label, exc) from None
    if not isinstance(value, kind):
        raise PipelineError(f"{path} does not hold what the {stage} stage writes - re-run "
                            f"`{rerun_command(stage, label)} --force`")
    return value
