"""The stage contract of CONVENTIONS.md: locks, verified inputs, outputs committed as one set, manifests.

A stage is described by a `Stage` (name, output folder, inputs, parameters, output
files) and run by `run_stage`, which

1. takes the output folder's lock (`folder_lock`: one writer per folder; a second run
   waits, saying for whom) and clears what a killed run left there;
2. checks every input against the manifest of the stage that wrote it (`verify_inputs`):
   a changed, mixed or foreign file is refused with the command that re-makes it;
3. skips the stage when its manifest says these inputs and parameters made the current
   outputs (`--force` re-runs);
4. otherwise lets the stage write all its outputs into a fresh staging folder and
   publishes them together with the manifest (`_commit`): either the whole set or none.

Publishing a set of files is not one rename, so it is journaled: the staging folder is
renamed to `.<stage>.commit` (the commit point), then its files are moved into place,
the manifest last. Whoever next holds the folder's lock, or reads from the folder,
finishes an interrupted move first (`recover`). A stage that owns its whole folder (a
model bundle) is swapped in as a folder instead: one atomic exchange of two folders.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

MANIFEST_VERSION = 2
_UMASK = os.umask(0)
os.umask(_UMASK)
_TRACKED_LIBRARIES = ("ksent", "numpy", "pandas", "pyarrow", "scikit-learn", "tensorflow", "keras",
                      "konlpy", "python-mecab-ko", "kiwipiepy", "gensim")
LOCK_POLL_S = 0.2
# Test hook: SIGKILL this process right after its N-th rename in a commit (fault-injection tests).
KILL_AFTER_RENAME_ENV = "KSENT_TEST_KILL_AFTER_RENAME"
_renames = 0


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


# --- files ------------------------------------------------------------------------------------

def _renamed() -> None:
    global _renames
    _renames += 1
    if os.environ.get(KILL_AFTER_RENAME_ENV) == str(_renames):
        os.kill(os.getpid(), signal.SIGKILL)


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
        _renamed()
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
# workers (pipeline.engine). Fixed, so a table's bytes do not depend on how it was computed.
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


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def write_error(exc: OSError, what: str) -> PipelineError:
    """A one-line message for a failed write (disk full, read-only folder, no permission)."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}.get(exc.errno, exc.strerror or str(exc))
    return PipelineError(f"{what}: cannot write{where}: {reason} - the previous outputs are kept; "
                         f"free space or fix permissions, then re-run")


# --- locks ------------------------------------------------------------------------------------

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
    except OSError as exc:
        raise write_error(exc, what) from None
    lock = FileLock(str(path), thread_local=False)
    owner = path.with_name(path.name + ".owner")
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else "another process"
            (echo or _stderr)(f"{what}: waiting for {holder} to finish writing {folder} ...")
            lock.acquire(poll_interval=LOCK_POLL_S)
    except OSError as exc:
        raise write_error(exc, what) from None
    try:
        with contextlib.suppress(OSError):
            command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
            owner.write_text(f"pid {os.getpid()} ({command})", encoding="utf-8")
        recover(folder)
        yield
    finally:
        lock.release()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- commit -----------------------------------------------------------------------------------

def _journal(folder: Path, stage: str) -> Path:
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
            shutil.rmtree(old, ignore_errors=True)
    for leftover in folder.parent.glob(f".{folder.name}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for part in folder.parent.glob(f".{folder.name}.*.part"):  # atomic_path's temp file, for a file target
        part.unlink(missing_ok=True)
    if not folder.is_dir():
        return
    for journal in folder.glob(".*.commit"):
        _roll_forward(journal, folder)
    for leftover in folder.glob(".*.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for part in folder.glob(".*.part"):
        part.unlink(missing_ok=True)


def _roll_forward(journal: Path, folder: Path) -> None:
    manifests = sorted(journal.glob("*.manifest.json"))
    for path in sorted(set(journal.iterdir()) - set(manifests)) + manifests:   # the manifest last
        os.replace(path, folder / path.name)
        _renamed()
    journal.rmdir()


def _rename_exchange(a: Path, b: Path) -> bool:
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


def _commit(staging: Path, folder: Path, stage: str, whole_folder: bool) -> None:
    if whole_folder:
        if not folder.exists():
            os.replace(staging, folder)
        elif _rename_exchange(staging, folder):
            pass
        else:
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            os.replace(folder, old)
            _renamed()
            os.replace(staging, folder)
            staging = old
        _renamed()
        shutil.rmtree(staging, ignore_errors=True)
        return
    journal = _journal(folder, stage)
    os.replace(staging, journal)            # the commit point
    _renamed()
    _roll_forward(journal, folder)


# --- stages -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    """A file a stage reads: written by stage `stage` (checked against its manifest), or by
    nobody we know (`stage=None`), then checked by `check(path)` if given."""
    path: Path
    stage: str | None
    check: Callable[[Path], None] | None = None


@dataclass
class Stage:
    """What a stage reads, which parameters it takes and what it writes (file names in `folder`).

    `whole_folder`: the stage owns `folder` (a model bundle) and replaces it whole; any file
    another stage later adds to it (evaluate's metrics) goes with the old folder.
    """
    name: str
    label: str
    folder: Path
    inputs: dict[str, Input]
    params: dict
    outputs: tuple[str, ...]
    whole_folder: bool = False

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.folder, self.name)

    def output_paths(self) -> dict[str, Path]:
        return {name: self.folder / name for name in self.outputs}

    def command(self) -> str:
        return rerun_command(self.name, self.label)


@dataclass
class StageResult:
    """What a stage reports back: counts for the manifest and one summary line."""
    summary: str
    counts: dict = field(default_factory=dict)
    skipped: bool = False


class Staging:
    """The folder a running stage writes its outputs into; published by run_stage when it returns."""

    def __init__(self, path: Path):
        self.dir = path

    def path(self, name: str) -> Path:
        return self.dir / name


def manifest_path(output_dir: Path | str, stage: str) -> Path:
    return Path(output_dir) / f"{stage}.manifest.json"


def rerun_command(stage: str, label: str) -> str:
    """`ksent <stage> ...` for a label "corpus" or "corpus/tok" (tok as Segmenter.name())."""
    corpus, _, tok = label.partition("/")
    args = f"--corpus {corpus}"
    if tok:
        kind, _, rest = tok.partition("-")
        args += f" --tokenizer {kind}"
        if kind == "morpheme" and rest:
            args += f" --backend {rest}"
        elif rest == "jamo":
            args += " --jamo"
    return f"ksent {stage} {args}"


def _canonical(params: dict) -> dict:
    # JSON round trip so tuples/Paths compare equal to what the manifest stored
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def read_manifest(path: Path) -> dict | None:
    """A stage manifest, or None if it is missing; PipelineError if it is unreadable."""
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path} is unreadable ({type(exc).__name__}) - re-run the stage that wrote it "
                            f"with --force") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs"), dict):
        raise PipelineError(f"{path} is not a ksent stage manifest - re-run the stage that wrote it with --force")
    return manifest


def _guess_label(folder: Path) -> str:
    """The label of the stage that writes `folder`, from the data layout (for messages only)."""
    if folder.parent.name == "interim":
        return folder.name
    if folder.parent.parent.name == "processed":
        return f"{folder.parent.name}/{folder.name}"
    return folder.name.replace("-", "/", 1)         # artifacts/<corpus>-<tok>


def verify_inputs(stage: Stage) -> dict[str, str]:
    """SHA-256 of every input, each checked against what its producing stage's manifest recorded.

    Raises PipelineError naming the stage to re-run for a missing, changed, mixed or foreign file.
    """
    missing = [str(i.path) for i in stage.inputs.values() if not i.path.is_file()]
    if missing:
        raise MissingInputError(stage.name, stage.label, missing)
    hashes = {}
    for name, inp in sorted(stage.inputs.items()):
        if inp.stage and _journal(inp.path.parent, inp.stage).exists():   # an interrupted commit: finish it
            with folder_lock(inp.path.parent, f"{stage.name} {stage.label}"):
                pass
        hashes[name] = sha256_file(inp.path)
        problem = input_problem(inp, hashes[name])
        if problem:
            raise PipelineError(f"{stage.name} {stage.label}: {problem}")
    return hashes


def input_problem(inp: Input, digest: str) -> str | None:
    """Why the file `inp` (SHA-256 `digest`) is not what its producer made, naming what to re-run; None if it is."""
    if inp.stage is None:
        try:
            if inp.check:
                inp.check(inp.path)
        except PipelineError as exc:
            return str(exc)
        return None
    mfile = manifest_path(inp.path.parent, inp.stage)
    command = rerun_command(inp.stage, _guess_label(inp.path.parent))
    try:
        manifest = read_manifest(mfile)
    except PipelineError as exc:
        return f"{exc} (`{command} --force`)"
    if manifest is None:
        return (f"{inp.path} has no {mfile.name} beside it, so nothing says which run made it - "
                f"re-run `{command} --force`")
    if manifest["outputs"].get(inp.path.name) != digest:
        return (f"{inp.path} is not the file the {inp.stage} stage recorded in {mfile.name} (changed, truncated, "
                f"or left from another run) - re-run `{manifest.get('command', command)} --force`")
    return None


def stale_reasons(stage: Stage, input_hashes: dict[str, str | None]) -> list[str]:
    """Why the stage's manifest does not vouch for its current outputs; [] when up to date."""
    try:
        manifest = read_manifest(stage.manifest_path)
    except PipelineError:
        return [f"{stage.manifest_path.name} is unreadable"]
    if manifest is None:
        return ["never run" if not any(p.exists() for p in stage.output_paths().values())
                else f"no {stage.manifest_path.name}"]
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return [f"manifest version {manifest.get('manifest_version')} (this ksent writes {MANIFEST_VERSION})"]
    reasons = []
    recorded, wanted = manifest.get("params") or {}, _canonical(stage.params)
    for key in sorted(set(recorded) | set(wanted)):
        if recorded.get(key) != wanted.get(key):
            reasons.append(f"parameter {key}: {json.dumps(recorded.get(key), ensure_ascii=False)} -> "
                           f"{json.dumps(wanted.get(key), ensure_ascii=False)}")
    recorded_in = manifest.get("inputs") or {}
    for name in sorted(set(recorded_in) | set(input_hashes)):
        if recorded_in.get(name) != input_hashes.get(name):
            reasons.append(f"input {name} changed" if input_hashes.get(name) else f"input {name} missing")
    for name, path in stage.output_paths().items():
        if not path.is_file():
            reasons.append(f"output {name} missing")
        elif manifest["outputs"].get(name) != sha256_file(path):
            reasons.append(f"output {name} changed since the run")
    return reasons


def adopt_outputs(stage: str, label: str, folder: Path | str, names: list[str], params: dict | None = None) -> Path:
    """Write a manifest that vouches for files made outside ksent as `stage`'s outputs (fixtures, imports).

    Later stages then accept exactly these files, and refuse them once they change.
    """
    folder = Path(folder)
    path = manifest_path(folder, stage)
    write_json(path, {"manifest_version": MANIFEST_VERSION, "stage": stage, "label": label,
                      "command": rerun_command(stage, label), "params": _canonical(params or {}), "inputs": {},
                      "outputs": {name: sha256_file(folder / name) for name in sorted(names)},
                      "counts": {}, "summary": f"{stage} {label}: adopted files made outside ksent",
                      "versions": library_versions()})
    return path


def run_stage(stage: Stage, run: Callable[[Staging], StageResult], *, force: bool = False,
              echo: Callable[[str], None] | None = None) -> StageResult:
    """Run `run(staging)` unless the manifest proves the outputs current; publish outputs + manifest as one set."""
    echo = echo or _stderr
    what = f"{stage.name} {stage.label}"
    with folder_lock(stage.folder, what, echo):
        input_hashes = verify_inputs(stage)
        if not force and not stale_reasons(stage, input_hashes):
            previous = read_json(stage.manifest_path)
            result = StageResult(summary=f"{what}: up to date, skipped (last run: {previous.get('summary', '')})",
                                 counts=previous.get("counts", {}), skipped=True)
            echo(result.summary)
            return result
        parent = stage.folder.parent if stage.whole_folder else stage.folder
        prefix = f".{stage.folder.name}.staging-" if stage.whole_folder else f".{stage.name}.staging-"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            os.chmod(staging, 0o777 & ~_UMASK)
        except OSError as exc:
            raise write_error(exc, what) from None
        try:
            started = time.perf_counter()
            result = run(Staging(staging))
            duration = time.perf_counter() - started
            missing = [name for name in stage.outputs if not (staging / name).is_file()]
            if missing:
                raise PipelineError(f"{what}: the stage wrote no {', '.join(missing)} (a bug) - nothing was published")
            if verify_inputs(stage) != input_hashes:
                raise PipelineError(f"{what}: an input changed while the stage ran - nothing was published; re-run")
            write_json(manifest_path(staging, stage.name), {
                "manifest_version": MANIFEST_VERSION, "stage": stage.name, "label": stage.label,
                "command": stage.command(), "params": _canonical(stage.params), "inputs": input_hashes,
                "outputs": {name: sha256_file(staging / name) for name in sorted(stage.outputs)},
                "counts": result.counts, "summary": result.summary, "duration_s": round(duration, 3),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions(),
            })
            _commit(staging, stage.folder, stage.name, stage.whole_folder)
        except OSError as exc:
            raise write_error(exc, what) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    echo(f"{result.summary} [{duration:.1f}s]")
    return result


# --- reading what a stage wrote -----------------------------------------------------------------

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
