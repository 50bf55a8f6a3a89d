"""Progress of a long stage on the terminal: one line rewritten in place on a TTY; in a log (output not a
TTY) only the lines that matter, each once, and no carriage returns."""
from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open = False                  # a rewritten line is on the terminal, not ended yet

    def transient(self, text: str) -> None:
        """A state worth seeing only live (batch 12/55): shown on a terminal, left out of a log."""
        if self.tty:
            self._rewrite(text)

    def line(self, text: str) -> None:
        """A step (epoch 3/8 with its figures): rewrites the terminal line; one line in a log."""
        if self.tty:
            self._rewrite(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the rewritten line, so that what follows starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def _rewrite(self, text: str) -> None:
        self.stream.write(f"\r{text}\033[K")
        self.stream.flush()
        self._open = True


def blockwise(fn, rows, what: str, block: int, stream: TextIO | None = None):
    """fn(rows) computed over blocks of rows and concatenated (numpy), showing "<what>: rows n/N" on a
    terminal while it runs (nothing in a log: the stage's summary line says what was done)."""
    import numpy as np

    shown, total = Progress(stream), len(rows)
    if total <= block:
        return fn(rows)
    parts = []
    for start in range(0, total, block):
        shown.transient(f"{what}: rows {start:,}/{total:,}")
        parts.append(fn(rows[start:start + block]))
    shown.transient(f"{what}: rows {total:,}/{total:,}")
    shown.close()
    return np.concatenate(parts)
