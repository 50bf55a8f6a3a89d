"""One writer per output folder: an OS file lock beside the folder, released however its holder dies."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.core.commit import recover
from pipeline.errors import write_error

LOCK_POLL_S = 0.2


def lock_path(folder: Path | str) -> Path:
    """The lock of a folder lives beside it, so that swapping the folder keeps the lock."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str, echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold `folder`'s writer lock: waits (saying for whom) while another process holds it.

    The OS releases the lock when its holder dies, however it dies, so a killed run never
    leaves a stale lock. Different folders (corpora, tokenizations) never block each other.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):           # filelock would poll forever on a lock file it may not create
            pass
    except OSError as exc:
        raise write_error(exc, what) from None
    lock = FileLock(str(path), thread_local=False)
    owner = path.with_name(path.name + ".owner")
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else "another process"
            (echo or echo_stderr)(f"{what}: waiting for {holder} to finish writing {folder} ...")
            lock.acquire(poll_interval=LOCK_POLL_S)
    except OSError as exc:
        raise write_error(exc, what) from None
    try:
        with contextlib.suppress(OSError):
            command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
            owner.write_text(f"pid {os.getpid()} ({command})", encoding="utf-8", errors="backslashreplace")
        recover(folder)
        yield
    finally:
        lock.release()


def echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

