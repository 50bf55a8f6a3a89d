"""The stage contract of CONVENTIONS.md: verified inputs, skipped when current, outputs committed as one set.

A stage is described by a `Stage` (name, output folder, inputs, parameters, output
files) and run by `run_stage`, which

1. takes the output folder's lock (`folder_lock`: one writer per folder; a second run
   waits, saying for whom) and clears what a killed run left there;
2. checks every input against the manifest of the stage that wrote it (`verify_inputs`):
   a changed, mixed or foreign file is refused with the command that re-makes it;
3. skips the stage when its manifest says these inputs and parameters made the current
   outputs (`--force` re-runs);
4. otherwise lets the stage write all its outputs into a fresh staging folder and
   publishes them together with the manifest (pipeline.core.commit): either the whole set or none.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import build_progress
from pipeline.core.commit import commit, journal_path, remove
from pipeline.core.files import UMASK, read_json, sha256_file, write_json
from pipeline.core.locks import echo_stderr, folder_lock
from pipeline.errors import MissingInputError, PipelineError, write_error
from pipeline.layout import ARTIFACTS_DIR, DATA_DIR, rerun_command

MANIFEST_VERSION = 2
_TRACKED_LIBRARIES = ("ksent", "numpy", "pandas", "pyarrow", "scikit-learn", "tensorflow", "keras",
                      "konlpy", "python-mecab-ko", "kiwipiepy", "gensim")


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


@dataclass(frozen=True)
class Input:
    """A file a stage reads, written by stage `stage` for `label` (None: by nobody we know). It is
    checked by `check(path)` if given (files that may be placed by hand, e.g. pinned raw files),
    else against its producer's manifest; the label names the command that re-makes it. The
    producers named here are the edges of the stage graph (pipeline.graph), unless `edge` is False: a file
    another target's stage made (a parent bundle's), checked the same way but never waited for."""
    path: Path
    stage: str | None
    check: Callable[[Path], None] | None = None
    label: str | None = None
    edge: bool = True


@dataclass
class Stage:
    """What a stage reads, which parameters it takes and what it writes (file names in `folder`).

    `whole_folder`: the stage owns `folder` (a model bundle) and replaces it whole; any file
    another stage later adds to it (evaluate's metrics) goes with the old folder.
    `optional_outputs`: files the stage writes when it can (download's optional unlabeled file).
    `keeps_outputs`: a run may leave an output it has verified in place instead of writing it
    again (download keeps the files that already match their pins).
    """
    name: str
    label: str
    folder: Path
    inputs: dict[str, Input]
    params: dict
    outputs: tuple[str, ...]
    whole_folder: bool = False
    optional_outputs: tuple[str, ...] = ()
    keeps_outputs: bool = False

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


@dataclass(frozen=True)
class Target:
    """What `ksent run` and `ksent status` work on: one corpus and tokenization, where its files live,
    and the run-wide options. Each stage module turns it into its plan (`plan_for`) and its run
    (`run_for`) for the stage graph (pipeline.graph)."""
    corpus: str
    segmenter: Any = None               # a pipeline.text.segment.Segmenter (None: corpus-wide stages only)
    data_dir: Path | str = DATA_DIR
    artifacts_dir: Path | str = ARTIFACTS_DIR
    mirror: str | None = None
    workers: int | None = None
    scheduler: str | None = None
    unlabeled: str = "auto"
    train_params: dict = field(default_factory=dict)
    stale: dict | None = None           # bundle name -> why `ksent run` would re-make it (pipeline.graph.stale_models)

    @property
    def tok(self) -> str:
        return self.segmenter.name()


class Staging:
    """The folder a running stage writes its outputs into; published by run_stage when it returns."""

    def __init__(self, path: Path):
        self.dir = path

    def path(self, name: str) -> Path:
        return self.dir / name


def manifest_path(output_dir: Path | str, stage: str) -> Path:
    return Path(output_dir) / f"{stage}.manifest.json"


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
    if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs"), dict) or not all(
            isinstance(manifest.get(key, {}), dict) for key in ("params", "inputs", "counts")):
        raise PipelineError(f"{path} is not a ksent stage manifest - re-run the stage that wrote it with --force")
    return manifest


def verify_inputs(stage: Stage) -> dict[str, str]:
    """SHA-256 of every input, each checked against what its producing stage's manifest recorded.

    Raises PipelineError naming the stage to re-run for a missing, changed, mixed or foreign file.
    """
    missing = [str(i.path) for i in stage.inputs.values() if not i.path.is_file()]
    if missing:
        raise MissingInputError(stage.name, stage.label, missing)
    hashes = {}
    for name, inp in sorted(stage.inputs.items()):
        if inp.stage and journal_path(inp.path.parent, inp.stage).exists():   # an interrupted commit: finish it
            with folder_lock(inp.path.parent, f"{stage.name} {stage.label}"):
                pass
        hashes[name] = sha256_file(inp.path)
        problem = input_problem(inp, hashes[name])
        if problem:
            raise PipelineError(f"{stage.name} {stage.label}: {problem}")
    return hashes


def input_problem(inp: Input, digest: str) -> str | None:
    """Why the file `inp` (SHA-256 `digest`) is not what its producer made, naming what to re-run; None if it is."""
    if inp.check is not None or inp.stage is None:
        try:
            if inp.check:
                inp.check(inp.path)
        except PipelineError as exc:
            return str(exc)
        return None
    mfile = manifest_path(inp.path.parent, inp.stage)
    command = rerun_command(inp.stage, inp.label) if inp.label else f"ksent {inp.stage}"
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


DECLARATION = "declaration"     # the parameter holding what a stage reads of a corpus declaration (Corpus.declared)


def declaration_changes(recorded: dict, wanted: dict) -> list[str]:
    """"declaration changed: [label]" for each part of a corpus declaration that differs."""
    return [f"declaration changed: {part}" for part in sorted(set(recorded) | set(wanted))
            if recorded.get(part) != wanted.get(part)]


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
        if key == DECLARATION:
            reasons += declaration_changes(recorded.get(key) or {}, wanted.get(key) or {})
        elif recorded.get(key) != wanted.get(key):
            reasons.append(f"parameter {key}: {json.dumps(recorded.get(key), ensure_ascii=False)} -> "
                           f"{json.dumps(wanted.get(key), ensure_ascii=False)}")
    recorded_in = manifest.get("inputs") or {}
    for name in sorted(set(recorded_in) | set(input_hashes)):
        if recorded_in.get(name) != input_hashes.get(name):
            reasons.append(f"input {name} changed" if input_hashes.get(name) else f"input {name} missing")
    recorded_optional = [name for name in stage.optional_outputs if name in manifest["outputs"]]
    for name in (*stage.outputs, *recorded_optional):
        path = stage.folder / name
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


def _private_if_inputs_are(stage: Stage, staging: Path) -> None:
    """What a stage makes of a file only its owner may read (a private export) is only its owner's too: the cleaned
    reviews, the tokens, the models trained on them. Nothing changes for inputs others may read."""
    if not any(not inp.path.stat().st_mode & 0o044 for inp in stage.inputs.values() if inp.path.is_file()):
        return
    for path in [staging, *staging.rglob("*")]:
        os.chmod(path, path.stat().st_mode & ~0o077)


def run_stage(stage: Stage, run: Callable[[Staging], StageResult], *, force: bool = False,
              echo: Callable[[str], None] | None = None) -> StageResult:
    """Run `run(staging)` unless the manifest proves the outputs current; publish outputs + manifest as one set."""
    echo = echo or echo_stderr
    what = f"{stage.name} {stage.label}".rstrip()
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
            os.chmod(staging, 0o777 & ~UMASK)
        except OSError as exc:
            raise write_error(exc, what) from None
        try:
            whole = build_progress.stage_started(what)     # within `make all`: where the whole build is
            if whole:
                echo(whole)
            started = time.perf_counter()
            result = run(Staging(staging))
            duration = time.perf_counter() - started
            written = {}
            for name in (*stage.outputs, *stage.optional_outputs):
                if (staging / name).is_file():
                    written[name] = sha256_file(staging / name)
                elif stage.keeps_outputs and (stage.folder / name).is_file():
                    written[name] = sha256_file(stage.folder / name)
            missing = [name for name in stage.outputs if name not in written]
            if missing:
                raise PipelineError(f"{what}: the stage wrote no {', '.join(missing)} (a bug) - nothing was published")
            if verify_inputs(stage) != input_hashes:
                raise PipelineError(f"{what}: an input changed while the stage ran - nothing was published; re-run")
            _private_if_inputs_are(stage, staging)
            write_json(manifest_path(staging, stage.name), {
                "manifest_version": MANIFEST_VERSION, "stage": stage.name, "label": stage.label,
                "command": stage.command(), "params": _canonical(stage.params), "inputs": input_hashes,
                "outputs": dict(sorted(written.items())),
                "counts": result.counts, "summary": result.summary, "duration_s": round(duration, 3),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions(),
            })
            commit(staging, stage.folder, stage.name, stage.whole_folder)
        except OSError as exc:
            raise write_error(exc, what) from None
        finally:
            if staging.exists() or staging.is_symlink():
                remove(staging)
    build_progress.stage_done(what, duration)
    echo(f"{result.summary} [{duration:.1f}s]")
    return result

