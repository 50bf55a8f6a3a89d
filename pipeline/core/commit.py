"""Publishing a set of files as one: the commit journal, rolled forward by whoever comes next.

Publishing a set of files is not one rename, so it is journaled: the staging folder is
renamed to `.<stage>.commit` (the commit point), then its files are moved into place,
the manifest last. Whoever next holds the folder's lock, or reads from the folder,
finishes an interrupted move first (`recover`). A stage that owns its whole folder (a
model bundle) is swapped in as a folder instead: one atomic exchange of two folders.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from pipeline.core import files


def remove(path: Path) -> None:
    """Delete a folder left over by a commit - or the symlink a bundle folder was, once swapped out
    (shutil.rmtree refuses symlinks, and ignoring that left `.staging-*` links behind)."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def journal_path(folder: Path, stage: str) -> Path:
    return folder / f".{stage}.commit"


def recover(folder: Path | str) -> None:
    """Finish commits a killed run left half done; delete its staging folders and temp files.

    Call only while holding `folder`'s lock (folder_lock does).
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    for old in folder.parent.glob(f".{folder.name}.old-*"):     # a folder swap without RENAME_EXCHANGE
        if not folder.exists():
            os.replace(old, folder)
        else:
            remove(old)
    for leftover in folder.parent.glob(f".{folder.name}.staging-*"):
        remove(leftover)
    for part in folder.parent.glob(f".{folder.name}.*.part"):  # atomic_path's temp file, for a file target
        part.unlink(missing_ok=True)
    if not folder.is_dir():
        return
    for journal in folder.glob(".*.commit"):
        _roll_forward(journal, folder)
    for leftover in folder.glob(".*.staging-*"):
        remove(leftover)
    for part in folder.glob(".*.part"):
        part.unlink(missing_ok=True)


def _roll_forward(journal: Path, folder: Path) -> None:
    manifests = sorted(journal.glob("*.manifest.json"))
    for path in sorted(set(journal.iterdir()) - set(manifests)) + manifests:   # the manifest last
        os.replace(path, folder / path.name)
        files.renamed()
    journal.rmdir()


def rename_exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit(staging: Path, folder: Path, stage: str, whole_folder: bool) -> None:
    if whole_folder:
        if not folder.exists():
            os.replace(staging, folder)
        elif rename_exchange(staging, folder):
            pass
        else:
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            os.replace(folder, old)
            files.renamed()
            os.replace(staging, folder)
            staging = old
        files.renamed()
        remove(staging)
        return
    journal = journal_path(folder, stage)
    os.replace(staging, journal)            # the commit point
    files.renamed()
    _roll_forward(journal, folder)

