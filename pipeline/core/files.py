"""Files written atomically (temp file beside the target, then rename), read back, hashed."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

UMASK = os.umask(0)
os.umask(UMASK)


def renamed() -> None:
    """Called after every rename that publishes a file or a folder: the point where the fault-injection
    tests kill a process (they replace this function in the process they start)."""


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~UMASK)  # mkstemp makes 0600; give the usual permissions of a new file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
        renamed()
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: Path | str, text: str) -> None:
    """Always valid UTF-8: a lone surrogate (a path or argument that was not UTF-8) is written as its \\u escape,
    which inside a JSON string is JSON's own escape for it."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")


def json_safe(obj):
    """obj with NaN and infinities as None: they are not JSON (json.dumps would write NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(value) for value in obj]
    return obj


def write_json(target: Path | str, obj) -> None:
    write_text(target, json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False, indent=2) + "\n")


def read_json(path: Path | str):
    return json.loads(Path(path).read_text(encoding="utf-8"))


_DIGESTS: dict[tuple, str] = {}      # (device, inode, size, mtime, ctime) -> SHA-256, for this process
_DIGESTS_KEPT = 4096
_SETTLED_S = 2.0       # file times tick coarsely (a few ms): a file changed more recently than this is read again


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """The file's SHA-256. For a file last changed more than _SETTLED_S ago it is remembered for this process
    while the file's inode, size and times stay the same (any write or rename changes its ctime), so the
    stage graph, which checks one file many times, reads it once."""
    import time

    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _DIGESTS:
            return _DIGESTS[key]
        h = hashlib.sha256()
        while block := f.read(chunk):
            h.update(block)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_S * 1e9:
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()


def save_npz(path: Path | str, **arrays) -> None:
    """Like numpy.savez_compressed, but byte-identical for identical arrays (no zip timestamps)."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


# Tables are written in row groups of this many rows: the partitions the engine hands its
