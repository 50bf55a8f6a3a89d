"""Reading a declared corpus's files with real parsers, in partitions, into the common table

    id (str) | text (str) | label (int8: 1 = positive) | rating (Int8, <NA> if none) | source (str)

CSV and TSV: Python's csv module (RFC 4180 quoting: commas, quotes and newlines inside fields; or no
quoting); JSON Lines: json, one object a line; Parquet: pyarrow. Every row becomes a table row or a
problem counted by reason (invalid UTF-8, wrong field count, unmapped label, neutral rating...):
nothing is dropped silently. A row without an id column gets the number of the line it starts on
(Parquet: its row number).

A file is cut into partitions of whole rows (`file_parts`), so that the clean stage can parse them on
several workers and still write the rows in file order: text files at row ends (pipeline.corpora.partitions),
Parquet at row groups. A gzipped file cannot be entered in the middle: it is one partition, read as it is
decompressed (`unpacked_lines`), or unpacked to a plain file first (`unpack`, the clean stage) to be cut.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pipeline.corpora.partitions import (
    MAX_FIELD_CHARS,
    MAX_ROW_LINES,
    SCAN_CHUNK,
    line_blocks,
    quoted_blocks,
    runaway_quote,
)
from pipeline.corpora.spec import Corpus, Format, encoding_hint
from pipeline.errors import PipelineError

BLOCK_BYTES = 4 << 20          # raw bytes per partition (~40,000 NSMC lines)
ROW_GROUPS_PER_PART = 1        # Parquet: row groups per partition
# A compressed file may unpack to at most MAX_UNPACK_RATIO times its size (at least MIN_UNPACK_LIMIT bytes)
MAX_UNPACK_RATIO = 30
MIN_UNPACK_LIMIT = 64 << 20
_BOM = b"\xef\xbb\xbf"

# part = (start, end, first line, column names): bytes [start, end) of a text file whose first row starts on line
# `first line`; for Parquet, row groups [start, end) whose first row is row `first line`; end None = to the end.
Part = tuple


def is_gzip(path: Path | str, fmt: Format) -> bool:
    if fmt.compression != "auto":
        return fmt.compression == "gzip"
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open(path: Path | str, fmt: Format):
    return gzip.open(path, "rb") if is_gzip(path, fmt) else open(path, "rb")


def _csv_options(fmt: Format) -> dict:
    if fmt.quoting:
        return {"delimiter": fmt.delimiter, "quotechar": '"', "doublequote": True, "strict": False}
    return {"delimiter": fmt.delimiter, "quoting": csv.QUOTE_NONE, "strict": False}


def _decoded_lines(raw_lines):
    # undecodable bytes become lone surrogates, found per row afterwards (`_valid_text`): a bad byte costs its
    # row, not a guess at where rows end
    for raw in raw_lines:
        yield raw.decode("utf-8", "surrogateescape")


def _valid_text(values) -> bool:
    try:
        for value in values:
            if isinstance(value, str):
                value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def column_names(path: Path | str, corpus: Corpus, fmt: Format) -> tuple[str, ...] | None:
    """The file's column names (its header, the declared names, Parquet's schema); None for JSON Lines."""
    if fmt.kind in ("tsv", "csv"):
        if not fmt.header:
            return fmt.names
        try:
            with _open(path, fmt) as fh:
                first = fh.readline(MAX_FIELD_CHARS)
                if fmt.quoting:             # a quoted header name may hold a newline: read on to the end of the row
                    while first.count(b'"') % 2 and (more := fh.readline(MAX_FIELD_CHARS)):
                        first += more
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise PipelineError(f"cannot read {path}: {exc}") from None
        if first.startswith(_BOM):
            first = first[len(_BOM):]
        if not first.strip():
            raise PipelineError(f"{path} is empty: no header row (declaration {corpus.origin})")
        try:
            if b"\0" in first:                  # valid UTF-8, but no text table: UTF-16 without a byte-order mark
                raise UnicodeDecodeError("utf-8", first, first.index(b"\0"), first.index(b"\0") + 1, "NUL")
            header = next(csv.reader([first.decode("utf-8")], **_csv_options(fmt)))
        except UnicodeDecodeError:
            raise PipelineError(f"{path}: the header row is not UTF-8 text; {encoding_hint(path)}") from None
        except csv.Error as exc:
            hint = ("its lines end in a carriage return only (old Mac files): convert them, e.g. `tr '\\r' '\\n'`"
                    if b"\r" in first.rstrip(b"\r\n") else "is it a text table at all?")
            raise PipelineError(f"{path}: the header row cannot be read as {fmt.kind.upper()} ({exc}) - "
                                f"{hint}") from None
        return tuple(name.strip() for name in header)
    if fmt.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return tuple(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors have no common public type
            raise PipelineError(f"{path} is not a Parquet file ({str(exc)[:200]})") from None
    return None


def check_columns(path: Path | str, corpus: Corpus, fmt: Format, names: tuple[str, ...] | None,
                  wanted: tuple[str, ...]) -> None:
    """PipelineError naming a declared column the file does not have, with the columns it has."""
    if names is None:
        return
    twice = [c for c in wanted if names.count(c) > 1]
    if twice:
        raise PipelineError(f"{Path(path).name}'s header names the column {twice[0]!r} {names.count(twice[0])} times "
                            f"(declared in {corpus.origin}): rename the others, so that it is clear which one to read")
    missing = [c for c in wanted if c not in names]
    if missing:
        raise PipelineError(f"{Path(path).name} has no column {missing[0]!r} (declared in {corpus.origin}); its "
                            f"columns: {', '.join(names) or '(none)'}")


def file_parts(path: Path | str, corpus: Corpus, fmt: Format, block_bytes: int = BLOCK_BYTES,
               wanted: tuple[str, ...] | None = None) -> list[Part]:
    """The partitions of one file, after checking that it has the `wanted` columns (default: the corpus's)."""
    path = Path(path)
    names = column_names(path, corpus, fmt)
    check_columns(path, corpus, fmt, names, corpus.columns if wanted is None else wanted)
    if fmt.kind == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        parts, first = [], 1
        for start in range(0, meta.num_row_groups, ROW_GROUPS_PER_PART):
            stop = min(start + ROW_GROUPS_PER_PART, meta.num_row_groups)
            parts.append((start, stop, first, names))
            first += sum(meta.row_group(i).num_rows for i in range(start, stop))
        return parts
    if is_gzip(path, fmt):
        return [(0, None, 1, names)]
    if fmt.line_based:
        blocks = line_blocks(path, block_bytes)
    else:
        blocks = quoted_blocks(path, block_bytes)
    return [(start, end, first, names) for start, end, first in blocks]


def unpack_limit(path: Path | str) -> int:
    """The most bytes a compressed file may unpack to: MAX_UNPACK_RATIO times its size, at least
    MIN_UNPACK_LIMIT (text compresses 3-10x; a gzip bomb, hundreds of times)."""
    return max(MIN_UNPACK_LIMIT, MAX_UNPACK_RATIO * Path(path).stat().st_size)


def _past_limit(path: Path | str, limit: int) -> PipelineError:
    return PipelineError(f"{path} unpacks to more than {limit:,} bytes ({MAX_UNPACK_RATIO} times its "
                         f"{Path(path).stat().st_size:,}): refused as a likely gzip bomb - if it is real data, "
                         f"decompress it yourself (gunzip) and give ksent the plain file")


@contextlib.contextmanager
def _reading(path: Path | str):
    """Read errors of a (possibly gzip) file as one-line PipelineErrors."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise PipelineError(f"{path} is not a complete gzip file ({exc or type(exc).__name__}) - fetch it "
                            f"again") from None
    except OSError as exc:
        raise PipelineError(f"cannot read {path} ({exc.strerror or exc}) - does this worker see the data folder "
                            f"at the same path?") from None


def unpacked_lines(path: Path | str) -> Iterator[bytes]:
    """The lines of a gzip file, decompressed as they are read (memory: one line), refused by name - before
    memory holds more - once the file unpacks past unpack_limit."""
    limit, total = unpack_limit(path), 0
    with _reading(path), gzip.open(path, "rb") as fh:
        while line := fh.readline(limit - total + 1):   # a line never longer than what the limit leaves
            total += len(line)
            if total > limit:
                raise _past_limit(path, limit)
            yield line


def unpack(path: Path | str, target: Path | str) -> None:
    """Decompress the gzip file `path` into `target`, a chunk at a time, under the same limit."""
    limit, total = unpack_limit(path), 0
    with _reading(path), gzip.open(path, "rb") as fh, open(target, "wb") as out:
        while chunk := fh.read(SCAN_CHUNK):
            total += len(chunk)
            if total > limit:
                raise _past_limit(path, limit)
            out.write(chunk)


def _part_lines(path: Path | str, part: Part, fmt: Format) -> Iterator[bytes]:
    """The raw lines of one partition, without a leading byte order mark: a gzip file streamed, a plain part
    (a few MB) read at once."""
    start, end = part[0], part[1]
    if end is None:
        lines = unpacked_lines(path)
    else:
        with _reading(path), open(path, "rb") as fh:
            fh.seek(start)
            lines = io.BytesIO(fh.read(end - start))
    first = next(lines, b"")
    if start == 0 and first.startswith(_BOM):
        first = first[len(_BOM):]
    return itertools.chain([first] if first else [], lines)


class _Rows:
    """The common table's columns, filled row by row."""

    def __init__(self, corpus: Corpus, source: str):
        self.corpus, self.source = corpus, source
        self.ids, self.texts, self.labels, self.ratings, self.sources = [], [], [], [], []
        self.problems: Counter = Counter()
        self.unmapped: Counter = Counter()      # label values no rule maps (the first 20 distinct ones)

    def add(self, row: dict, number: int) -> None:
        corpus = self.corpus
        if not _valid_text(row.values()):
            self.problems["invalid UTF-8"] += 1
            return
        if any(column not in row for column in corpus.columns):
            self.problems["missing column"] += 1
            return
        source = self.source
        if corpus.split.column:
            source = corpus.split.source(row[corpus.split.column])
            if source is None:
                self.problems["unmapped split value"] += 1
                return
        doc_id = None
        if corpus.id:
            doc_id = row[corpus.id]
            doc_id = "" if doc_id is None else str(doc_id)
            if not doc_id:
                self.problems["missing id"] += 1
                return
        labelled = corpus.label.label(row[corpus.label.column])
        if isinstance(labelled, str):
            self.problems[labelled] += 1
            value = str(row[corpus.label.column])
            if labelled == "unmapped label" and (value in self.unmapped or len(self.unmapped) < 20):
                self.unmapped[value] += 1
            return
        text = row[corpus.text]
        if text is None:
            text = ""
        elif not isinstance(text, str):
            self.problems["text is not a string"] += 1
            return
        if corpus.format.unquote:
            text = unquote_csv_field(text, corpus.format.unquote)
        self.ids.append(doc_id if doc_id is not None else str(number))
        self.texts.append(text)
        self.labels.append(labelled[0])
        self.ratings.append(labelled[1])
        self.sources.append(source)

    def frame(self):
        import pandas as pd

        return pd.DataFrame({
            "id": pd.Series(self.ids, dtype="string"),
            "text": pd.Series(self.texts, dtype="string"),
            "label": pd.Series(self.labels, dtype="int8"),
            "rating": pd.Series(self.ratings, dtype="Int8"),
            "source": pd.Series(self.sources, dtype="string"),
        })


def read_part(path: Path | str, part: Part, corpus: Corpus, source: str, fmt: Format | None = None):
    """One partition of a labelled file: (rows in the common schema, problems by reason, lines or rows read)."""
    fmt = fmt or corpus.format
    rows = _Rows(corpus, source)
    for number, row in iter_rows(path, part, fmt, rows.problems):
        rows.add(row, number)
    return rows.frame(), rows.problems, len(rows.ids) + sum(rows.problems.values())


def read_file(path: Path | str, corpus: Corpus, source: str):
    """A whole labelled file: (rows in the common schema, problems by reason)."""
    import pandas as pd

    frames, problems = [], Counter()
    for part in file_parts(path, corpus, corpus.format):
        frame, bad, _ = read_part(path, part, corpus, source)
        frames.append(frame)
        problems.update(bad)
    return pd.concat(frames, ignore_index=True), problems


def read_corpus(corpus: Corpus, raw_dir: Path | str):
    """Every labelled file of `corpus` under `raw_dir` read whole into one table in the common schema, and the
    problems by reason (the clean stage reads them in partitions instead)."""
    import pandas as pd

    frames, problems = [], Counter()
    for f in corpus.files:
        frame, bad = read_file(Path(raw_dir) / f.name, corpus, f.source)
        frames.append(frame)
        problems.update(bad)
    return pd.concat(frames, ignore_index=True), problems


def iter_rows(path: Path | str, part: Part, fmt: Format, problems: Counter):
    """(line or row number, {column: value}) of each row of a partition; rows that cannot be parsed are
    counted in `problems` instead."""
    start, _, first, names = part
    if fmt.kind == "parquet":
        yield from _parquet_rows(path, part)
        return
    lines = _part_lines(path, part, fmt)
    if fmt.kind == "jsonl":
        yield from _json_rows(lines, first, problems)
    elif fmt.kind == "lines":
        for number, line in enumerate(_decoded_lines(lines), start=first):
            yield number, {"text": line.rstrip("\r\n")}
    else:
        yield from _csv_rows(lines, first, names, fmt, skip_header=start == 0 and fmt.header, problems=problems,
                             path=path)


def _csv_rows(lines, first: int, names: tuple[str, ...], fmt: Format, skip_header: bool, problems: Counter,
              path=""):
    if csv.field_size_limit() < MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(_decoded_lines(lines), **_csv_options(fmt))
    width = len(names)
    while True:
        before = reader.line_num
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if fmt.quoting and "unexpected end of data" in str(exc):        # a quote open at the end of the file
                raise runaway_quote(path, first + before) from None
            problems["unparseable row"] += 1
            continue
        if fmt.quoting and reader.line_num - before > MAX_ROW_LINES:
            raise runaway_quote(path, first + before, first + reader.line_num - 1)
        if skip_header:
            skip_header = False
            continue
        if len(fields) != width:
            if not _valid_text(fields):
                problems["invalid UTF-8"] += 1
            else:
                problems["wrong field count"] += 1
            continue
        yield first + before, dict(zip(names, fields, strict=True))


def _json_rows(lines, first: int, problems: Counter):
    for number, line in enumerate(_decoded_lines(lines), start=first):
        if not line.strip():
            problems["blank line"] += 1
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError):
            problems["invalid UTF-8" if not _valid_text([line]) else "invalid JSON"] += 1
            continue
        if not isinstance(row, dict):
            problems["not a JSON object"] += 1
            continue
        yield number, row


def _parquet_rows(path, part: Part):
    import pyarrow.parquet as pq

    start, stop, first, names = part
    try:
        table = pq.ParquetFile(path).read_row_groups(list(range(start, stop)))
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors have no common public type
        raise PipelineError(f"{path}: row group(s) {start}-{stop - 1} cannot be read ({str(exc)[:200]}) - the "
                            f"file is damaged: write or fetch it again") from None
    columns = table.to_pydict()
    for i in range(table.num_rows):
        yield first + i, {name: columns[name][i] for name in names}


def read_texts(path: Path | str, fmt: Format, text: str, corpus: Corpus) -> tuple[list[str], Counter, int]:
    """The texts of an unlabeled file (column `text`; "lines": every line), problems by reason, rows read."""
    problems: Counter = Counter()
    texts: list[str] = []
    if fmt.kind == "lines":
        text, wanted = "text", ()
    else:
        wanted = (text,)
    for part in file_parts(path, corpus, fmt, wanted=wanted):
        for _, row in iter_rows(path, part, fmt, problems):
            value = row.get(text)
            if not _valid_text([value]):
                problems["invalid UTF-8"] += 1
            elif not isinstance(value, str):
                problems["missing text"] += 1
            else:
                texts.append(value)
    return texts, problems, len(texts) + sum(problems.values())


def unquote_csv_field(field: str, layers: int = 1) -> str:
    """Undo up to `layers` layers of CSV quoting (a field `"x ""y"" z"` reads as `x "y" z`).

    NSMC's documents that contain a quote were CSV-quoted twice upstream (all 856 of
    them unquote cleanly exactly twice; 31 still start and end with a quote after
    that, because the review itself did). Read naively (QUOTE_NONE) the quote
    marks stay in the text; read with a CSV parser a stray quote merges rows. NSMC is
    read as TSV without quoting, so no row can merge, and well-formed quoted fields are
    unquoted here (its declaration's `unquote = 2`).
    """
    for _ in range(layers):
        if not (len(field) >= 2 and field[0] == '"' and field[-1] == '"'):
            break
        inner = field[1:-1]
        if '"' in inner.replace('""', ""):
            break
        field = inner.replace('""', '"')
    return field
