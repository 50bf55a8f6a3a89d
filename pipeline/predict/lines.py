"""Reviews in, one per line; results out, one per line (`ksent predict`).

Input lines: a line ends at `\\n` or `\\r\\n`, nothing else. A lone `\\r` and the other
characters `str.splitlines()` breaks on (U+2028, U+2029, \\x0b, \\x0c, \\x1c-\\x1e, \\x85)
stay inside the review, so N newline-terminated lines always give N results. A final
line without a newline counts; a trailing newline adds no empty line; an empty line is
an empty review; a UTF-8 BOM at the start of the input is dropped.
"""
from __future__ import annotations

import re
import select
import sys
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.errors import PipelineError
from pipeline.predict.predictor import MAX_CHARS

CHUNK_SIZE = 1 << 16
# bytes kept of each end of a line longer than twice this: the MAX_CHARS characters the model can read
# from either end, at up to 4 bytes each
KEEP_BYTES = 4 * MAX_CHARS
IDLE_FLUSH_S = 0.05    # a partial batch is answered once its input has paused this long
EMPTY = "<empty>"
_BOM = b"\xef\xbb\xbf"
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
# What escape() rewrites: the backslash, the control characters (Unicode category Cc, fixed by
# Unicode's stability policy as C0, DEL and C1) and the line/paragraph separators U+2028/U+2029
# (Zl, Zp). One regex pass: a per-character loop took ~30 us of each review's output line.
_SPECIAL = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


def stdin_stream() -> BinaryIO:
    """The binary standard input; PipelineError if it is closed (`ksent predict <&-`)."""
    stream = sys.stdin  # None when file descriptor 0 was closed at start-up
    if stream is None or stream.closed:
        raise PipelineError("standard input is closed; give reviews as arguments or with --file")
    return stream.buffer


def iter_lines(stream: BinaryIO, name: str, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    """Yield the lines of a binary stream in order, reading it `chunk_size` bytes at a time.

    Splitting happens on bytes, before decoding: b"\\n" never occurs inside a multi-byte
    UTF-8 character, so a character split across chunks is whole again in its line.
    Raises PipelineError naming the line (1-based) and byte offset (0-based) of invalid
    UTF-8, or saying why the stream could not be read; lines before it were yielded.
    """
    for lines, _ in _line_reads(stream, name, chunk_size):
        yield from lines


def argument_text(number: int, text: str) -> str:
    """A review given as a command-line argument; one that was not UTF-8 (the OS hands its bytes over as lone
    surrogates) is refused as stdin and files are, rather than classified as mojibake."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:               # the text before the first bad byte is valid UTF-8
        raise PipelineError(f"argument {number} is not valid UTF-8 (byte {len(text[:exc.start].encode())}); "
                            f"convert it first, e.g. iconv -f CP949 -t UTF-8") from None
    return text


def iter_line_batches(stream: BinaryIO, name: str, max_lines: int, chunk_size: int = CHUNK_SIZE,
                      idle_s: float = IDLE_FLUSH_S) -> Iterator[list[str]]:
    """The lines of `iter_lines` in lists of at most `max_lines`, for batched prediction.

    A batch is also handed on early when nothing more arrives for `idle_s` seconds (a
    pipe whose writer is slow, or a person typing): results appear as the input does,
    while a file, or a pipe that keeps up, is read in full batches.
    """
    batch: list[str] = []
    try:
        for lines, drained in _line_reads(stream, name, chunk_size):
            batch.extend(lines)
            while len(batch) >= max_lines:
                yield batch[:max_lines]
                batch = batch[max_lines:]
            if drained and batch and not _more_within(stream, idle_s):
                yield batch
                batch = []
    except PipelineError:
        if batch:                   # the lines before a bad one are answered first, then the error
            yield batch
        raise
    if batch:
        yield batch


def _more_within(stream: BinaryIO, seconds: float) -> bool:
    """Whether `stream` has more to read within `seconds` (False for a stream without a file descriptor)."""
    try:
        return bool(select.select([stream.fileno()], [], [], seconds)[0])
    except (AttributeError, OSError, ValueError):    # io.BytesIO and friends; io.UnsupportedOperation
        return False


def _whole_chars(head: bytes) -> bytes:
    """`head` without its last UTF-8 character if the cut left it incomplete."""
    i = len(head) - 1
    while i >= 0 and head[i] & 0xC0 == 0x80:       # back to the last byte that starts a character
        i -= 1
    if i < 0 or head[i] < 0x80:
        return head
    need = 2 if head[i] < 0xE0 else 3 if head[i] < 0xF0 else 4
    return head if len(head) - i >= need else head[:i]


class _Line:
    """The line being read, in pieces (so a long line is not re-copied per chunk), keeping at most
    KEEP_BYTES of its start and of its end: the model reads at most MAX_CHARS characters of a review,
    from one end, so a longer line loses its middle while it is read, and memory stays bounded on any
    input (a file without newlines, /dev/zero). Invalid UTF-8 in a dropped middle goes unnoticed."""

    def __init__(self):
        self.head: list[bytes] = []
        self.head_bytes = 0
        self.tail: list[bytes] = []
        self.tail_bytes = 0
        self.cut = 0                                # bytes dropped from the middle

    def add(self, piece: bytes) -> None:
        if self.head_bytes < KEEP_BYTES:
            room = KEEP_BYTES - self.head_bytes
            self.head.append(piece[:room])
            self.head_bytes += min(room, len(piece))
            piece = piece[room:]
        if piece:
            self.tail.append(piece)
            self.tail_bytes += len(piece)
            if self.tail_bytes > 2 * KEEP_BYTES:    # trimmed once it is twice the keep: amortized
                joined = b"".join(self.tail)
                self.cut += len(joined) - KEEP_BYTES
                self.tail, self.tail_bytes = [joined[-KEEP_BYTES:]], KEEP_BYTES

    def take(self, last: bytes = b"") -> tuple[bytes, int]:
        """The line's bytes, its middle dropped if it was long, and how many bytes it had in all."""
        self.add(last)
        head, tail, cut = b"".join(self.head), b"".join(self.tail), self.cut
        if cut or len(tail) > KEEP_BYTES:
            cut += max(0, len(tail) - KEEP_BYTES)
            tail = tail[-KEEP_BYTES:]
            start = 0
            while start < len(tail) and tail[start] & 0xC0 == 0x80:     # the tail from a whole character
                start += 1
            head, tail = _whole_chars(head), tail[start:]
        total = self.head_bytes + self.tail_bytes + self.cut
        self.__init__()
        return head + tail, total


def _line_reads(stream: BinaryIO, name: str, chunk_size: int) -> Iterator[tuple[list[str], bool]]:
    """(complete lines decoded from one read, whether that read drained what had arrived)."""
    pending = _Line()
    number, offset = 0, 0       # lines decoded so far; file offset of the current line's first byte

    def decode(line: tuple[bytes, int], ended: bool = True) -> str:
        nonlocal number, offset
        raw, size = line
        start = offset
        number, offset = number + 1, offset + size + 1
        if number == 1 and raw.startswith(_BOM):
            raw, start = raw[len(_BOM):], start + len(_BOM)
        if ended and raw.endswith(b"\r"):   # \r\n; a \r without \n after it stays in the line
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PipelineError(f"{name} is not valid UTF-8 (line {number}, byte {start + exc.start}); "
                                f"convert it first, e.g. iconv -f CP949 -t UTF-8") from None

    read = getattr(stream, "read1", stream.read)   # read1: whatever has arrived, so a pipe is not waited on
    while True:
        try:
            chunk = read(chunk_size)
        except OSError as exc:
            raise PipelineError(f"cannot read {name}: {exc.strerror or exc}") from None
        if not chunk:
            break
        *complete, rest = chunk.split(b"\n")
        lines: list[str] = []
        if complete:
            whole = [pending.take(complete[0])] + [(raw, len(raw)) if len(raw) <= 2 * KEEP_BYTES
                                                   else _Line().take(raw) for raw in complete[1:]]
            try:
                lines.extend(decode(line) for line in whole)
            except PipelineError:
                yield lines, True      # the lines before the bad one, then the error
                raise
        pending.add(rest)
        yield lines, len(chunk) < chunk_size
    last = pending.take()
    if last[1] and not (number == 0 and last[0] == _BOM):   # a BOM alone is an empty input, not an empty line
        yield [decode(last, ended=False)], True


def read_lines(stream: BinaryIO, name: str, chunk_size: int = CHUNK_SIZE) -> list[str]:
    """All lines of a binary stream (see `iter_lines`)."""
    return list(iter_lines(stream, name, chunk_size))


def open_input(path: str) -> tuple[BinaryIO, str]:
    """(binary stream, its name for messages) of the file at `path`, or of standard input for "-"
    (`--file -`). The caller closes a file it opened; standard input stays open."""
    if path == "-":
        return stdin_stream(), "standard input"
    try:
        return open(path, "rb"), path
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_path_lines(path: str) -> list[str]:
    """All lines of the file at `path`, or of standard input for "-" (`--file -`)."""
    stream, name = open_input(path)
    if path == "-":
        return read_lines(stream, name)
    with stream:
        return read_lines(stream, name)


def _escape_char(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text: str) -> str:
    """`text` on one line: backslash, tab, newline, CR and other control/separator characters escaped."""
    if text == "":
        return EMPTY
    if text == EMPTY:   # a review that really is "<empty>" must not read as an empty one
        return "\\x3c" + EMPTY[1:]
    return _SPECIAL.sub(_escape_char, text)


UNKNOWN_MARK = "(no known token)"


def format_plain(record: dict) -> str:
    """One output line for a prediction record: `LABEL<TAB>PROBABILITY<TAB>TEXT`, and a fourth column
    `(no known token)` when the model knows none of the review's tokens (record["unknown"]): its answer is
    the model's answer to nothing it recognizes, not a reading of the text.

    LABEL is 긍정 (positive) or 부정 (negative), PROBABILITY the probability of positive
    with 4 decimals. TEXT is the review, escaped so that the line never breaks:
    `\\\\` for a backslash, `\\t`, `\\n`, `\\r`, and `\\xHH` / `\\uHHHH` for the other
    control characters and U+2028/U+2029 (e.g. `\\x0b`, `\\x85`, `\\u2028`); all other
    characters as they are. An empty review is shown as `<empty>` (a review that is
    literally "<empty>" as `\\x3cempty>`). --json gives the exact text.
    """
    word = "긍정" if record["label"] == 1 else "부정"
    line = f"{word}\t{record['probability']:.4f}\t{escape(record['text'])}"
    return f"{line}\t{UNKNOWN_MARK}" if record.get("unknown") else line
