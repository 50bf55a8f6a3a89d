"""Cutting a text file into partitions of whole rows without parsing it: at newlines for line-based formats;
for quoted CSV at a newline after an even number of quote characters (under RFC 4180 quotes come in pairs
inside a row, so that newline ends a row; a newline inside a quoted field is never a cut). A quote that never
closes is refused naming the line it opens on, rather than let it swallow the rows after it."""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError

MAX_FIELD_CHARS = 1 << 24      # csv's field limit (default 131,072): a review may be long; a runaway quote stops here
# A quoted row spanning more lines than this is taken for a stray quote that swallowed the rows after it, and the
# file is refused naming the line (a review with this many line breaks is not one); so is a quote still open at
# the end of the file.
MAX_ROW_LINES = 500
SCAN_CHUNK = 1 << 20


def line_blocks(path: Path | str, block_bytes: int) -> list[tuple[int, int, int]]:
    """(start byte, end byte, number of the first line) of consecutive blocks of whole lines, each about
    `block_bytes` long."""
    size = Path(path).stat().st_size
    blocks, start, first_line = [], 0, 1
    with open(path, "rb") as fh:
        while start < size:
            if start + block_bytes >= size:
                end = size
            else:
                fh.seek(start + block_bytes)
                fh.readline()                       # to the end of the line the target falls in
                end = fh.tell()
            fh.seek(start)
            newlines, left = 0, end - start
            while left:
                chunk = fh.read(min(left, SCAN_CHUNK))
                newlines += chunk.count(b"\n")
                left -= len(chunk)
            blocks.append((start, end, first_line))
            first_line += newlines
            start = end
    return blocks


def quoted_blocks(path: Path | str, block_bytes: int) -> list[tuple[int, int, int]]:
    """Like `line_blocks`, for RFC 4180 CSV: each block ends at a newline after an even number of quotes
    (counted from the start of the file), i.e. at the end of a row, never inside a quoted field."""
    size = Path(path).stat().st_size
    blocks: list[tuple[int, int, int]] = []
    start, first_line, target = 0, 1, block_bytes
    odd, newlines, offset = 0, 0, 0             # quote parity and newlines in [0, offset + i)
    with open(path, "rb") as fh:
        while chunk := fh.read(SCAN_CHUNK):
            i = 0
            while i < len(chunk):
                if offset + i < target:             # before the target: count up to it (or the chunk's end)
                    j = min(len(chunk), target - offset)
                    odd ^= chunk.count(b'"', i, j) & 1
                    newlines += chunk.count(b"\n", i, j)
                    i = j
                    continue
                j = chunk.find(b"\n", i)            # past it: look for a newline outside quotes
                if j < 0:
                    odd ^= chunk.count(b'"', i) & 1
                    break
                odd ^= chunk.count(b'"', i, j) & 1
                newlines += 1
                i = j + 1
                if not odd and offset + i < size:
                    blocks.append((start, offset + i, first_line))
                    start, first_line, target = offset + i, newlines + 1, offset + i + block_bytes
                elif odd and offset + i - target > MAX_FIELD_CHARS:     # no row ends: a quote that never closes
                    raise runaway_quote(path, _opening_line(path, start, first_line), newlines + 1,
                                        f"{MAX_FIELD_CHARS:,} characters")
            offset += len(chunk)
    if odd:                                         # the last row's quote never closes
        raise runaway_quote(path, _opening_line(path, start, first_line))
    if start < size:
        blocks.append((start, size, first_line))
    return blocks


def _opening_line(path: Path | str, start: int, first_line: int) -> int:
    """The line, in the block from byte `start` (line `first_line`), at whose start the quotes were last balanced
    before they stopped being: where the quoted field that never closes opens."""
    odd, line, opened = 0, first_line, first_line
    with open(path, "rb") as fh:
        fh.seek(start)
        for raw in fh:
            if not odd:
                opened = line
            odd ^= raw.count(b'"') & 1
            line += 1
    return opened


def runaway_quote(path, line: int, last: int | None = None, within: str = f"{MAX_ROW_LINES} lines") -> PipelineError:
    """The error for a quoted field that opens on `line` and does not close (within `within`, still open on line
    `last`; last None: before the end of the file)."""
    where = "before the end of the file" if last is None else f"within {within} (still open on line {last:,})"
    return PipelineError(f"{path}: line {line:,}: a quoted field opens here and does not close {where} - a stray "
                         f"quote would swallow the rows after it: fix that row (a quote inside a quoted field is "
                         f"written twice, \"\"), or declare quoting = \"none\" if the file does not quote fields")
