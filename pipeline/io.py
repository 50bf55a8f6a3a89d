"""Atomic writes, hashing and stage manifests: the stage contract of CONVENTIONS.md.

Every stage writes its outputs through `atomic_path` (temp file in the same
folder, then `os.replace`), so an interrupted stage leaves the previous good
output or nothing. `run_stage` skips a stage whose manifest says the same
inputs and parameters already produced the current outputs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

MANIFEST_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)
_TRACKED_LIBRARIES = ("ksent", "numpy", "pandas", "pyarrow", "scikit-learn", "tensorflow", "keras",
                      "konlpy", "python-mecab-ko", "kiwipiepy", "gensim")


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions of a new file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: Path | str, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path | str, obj) -> None:
    write_text(target, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


@dataclass
class StageResult:
    """What a stage function reports back: counts for the manifest and one summary line."""
    summary: str
    counts: dict = field(default_factory=dict)
    skipped: bool = False


def manifest_path(output_dir: Path, stage: str) -> Path:
    return Path(output_dir) / f"{stage}.manifest.json"


def _hashes(paths: dict[str, Path]) -> dict[str, str | None]:
    return {name: (sha256_file(p) if Path(p).is_file() else None) for name, p in sorted(paths.items())}


def _canonical(params: dict) -> dict:
    # JSON round trip so tuples/Paths compare equal to what the manifest stored
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def is_up_to_date(manifest_file: Path, inputs: dict[str, Path], params: dict,
                  outputs: dict[str, Path]) -> bool:
    if not manifest_file.is_file():
        return False
    try:
        manifest = read_json(manifest_file)
    except (OSError, ValueError):
        return False
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return False
    if manifest.get("params") != _canonical(params):
        return False
    if manifest.get("inputs") != _hashes(inputs):
        return False
    current = _hashes(outputs)
    return None not in current.values() and manifest.get("outputs") == current


def run_stage(stage: str, label: str, output_dir: Path, *, inputs: dict[str, Path], params: dict,
              outputs: dict[str, Path], run: Callable[[], StageResult], force: bool = False,
              echo: Callable[[str], None] | None = None) -> StageResult:
    """Run `run()` unless the manifest proves its outputs are current; then write the manifest.

    `label` names the unit of work in the summary line, e.g. "nsmc" or "nsmc/word".
    """
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    missing = [name for name, p in inputs.items() if not Path(p).is_file()]
    if missing:
        raise MissingInputError(stage, label, [str(inputs[m]) for m in missing])
    mfile = manifest_path(output_dir, stage)
    if not force and is_up_to_date(mfile, inputs, params, outputs):
        previous = read_json(mfile)
        result = StageResult(summary=f"{stage} {label}: up to date, skipped "
                                     f"(last run: {previous.get('summary', '')})",
                             counts=previous.get("counts", {}), skipped=True)
        echo(result.summary)
        return result
    started = time.perf_counter()
    result = run()
    duration = time.perf_counter() - started
    write_json(mfile, {
        "manifest_version": MANIFEST_VERSION,
        "stage": stage,
        "label": label,
        "params": _canonical(params),
        "inputs": _hashes(inputs),
        "outputs": _hashes(outputs),
        "counts": result.counts,
        "summary": result.summary,
        "duration_s": round(duration, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
    })
    echo(f"{result.summary} [{duration:.1f}s]")
    return result


class PipelineError(Exception):
    """An error a user can act on; the CLI prints its message without a traceback."""


class MissingInputError(PipelineError):
    def __init__(self, stage: str, label: str, paths: list[str]):
        super().__init__(f"{stage} {label}: missing input {', '.join(paths)} - "
                         f"run the earlier stages first (or `ksent run`)")
