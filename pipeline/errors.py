"""The errors every layer raises, and the one number check: at the bottom, so that text/,
corpora and the stage runner can all raise them without importing each other."""
from __future__ import annotations

import errno
import math


class PipelineError(Exception):
    """An error a user can act on; the CLI prints its message without a traceback (exit 1)."""


class ParameterError(PipelineError, ValueError):
    """A parameter out of range or of the wrong kind (the CLI exits 2, as for a usage error)."""


class MissingInputError(PipelineError):
    def __init__(self, stage: str, label: str, paths: list[str], hint: str = "run the earlier stages first "
                                                                             "(or `ksent run`)"):
        super().__init__(f"{stage} {label}: missing input {', '.join(paths)} - {hint}")


def check_number(name: str, value, low: float, high: float = math.inf, *, integer: bool = False,
                 low_open: bool = False, high_open: bool = False):
    """`value` if it is a number (an int if `integer`; not a bool, not NaN) within the bounds, else ParameterError."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = (f"{b:g}" if isinstance(b, float) else str(b) for b in (low, high))
        if math.isinf(high):
            bounds = f"{'greater than' if low_open else 'at least'} {lo}"
        else:
            bounds = f"between {lo} and {hi}, in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        raise ParameterError(f"{name} must be {bounds}{' (an integer)' if integer else ''}, got {value!r}")
    return value


def write_error(exc: OSError, what: str) -> PipelineError:
    """A one-line message for a failed write (disk full, read-only folder, no permission)."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}.get(exc.errno, exc.strerror or str(exc))
    return PipelineError(f"{what}: cannot write{where}: {reason} - the previous outputs are kept; "
                         f"free space or fix permissions, then re-run")
