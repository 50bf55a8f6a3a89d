"""download: fetch a corpus's upstream files into data/raw/<corpus>/, verified.

Sources: the declared URL or local path, or a mirror base (local folder, file:// or
http(s):// URL) laid out as <BASE>/<corpus>/<upstream file name>. Each file is
streamed into the stage's staging folder while a progress bar runs and verified
against its pinned checksum (a file declared without one: the checksum recorded in
checksums.json at its first download), then renamed into place: a failure of any kind leaves
no unverified file behind, and the manifest (pipeline.core.stage.run_stage) is
written once every file is there. A present file whose checksum matches is kept.
"""
from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from pipeline import layout
from pipeline.core import files
from pipeline.core.files import atomic_path
from pipeline.core.stage import DECLARATION, Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.corpora import CorpusFile, file_checksum, get_corpus, recorded_checksum, verify_file
from pipeline.corpora.spec import RECORDED
from pipeline.errors import PipelineError
from pipeline.params import DOWNLOAD

MIRROR_ENV = "KSENT_MIRROR"
_CHUNK = 1 << 16
MAX_UNSIZED_BYTES = 4 << 30     # the most a file of unknown size may be (the pinned ones stop at their size)


class DownloadError(PipelineError):
    pass


class ChecksumError(DownloadError):
    pass


class NotFoundError(DownloadError):
    """The source has no such file (a folder or file:// path that does not exist, HTTP 404 or 410)."""


class _Transient(Exception):
    """A failure worth retrying (network hiccup, server error, connection dropped mid-file)."""


def source_url(spec: CorpusFile, corpus: str, mirror: str | None) -> str:
    """Where `spec` is fetched from: a local file (a declared `path` or file:// URL) where it is, else the
    mirror's copy when a mirror is given, else its URL."""
    if not mirror or spec.local_path is not None:
        if not spec.url:
            raise DownloadError(f"{corpus}: {spec.name} has no URL, only a mirror has it - give --mirror BASE "
                                f"(e.g. --mirror ../shared/corpora) or set {MIRROR_ENV}")
        return spec.url
    folder = spec.mirror_folder or corpus
    if "://" in mirror:
        return f"{mirror.rstrip('/')}/{folder}/{spec.name}"
    return (Path(mirror).expanduser().resolve() / folder / spec.name).as_uri()


def _fetch(url: str, dest: Path, name: str, timeout: float, progress: bool, limit: int,
           size: int | None = None, deadline: float = DOWNLOAD["deadline"]) -> None:
    """Stream `url` into `dest`, at most `limit` bytes (and exactly `size`, the declared size, if given) within
    `deadline` seconds; raise _Transient for retryable failures, DownloadError otherwise."""
    started = time.monotonic()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        if exc.code in (404, 410):
            raise NotFoundError(f"HTTP {exc.code} {exc.reason} for {url}") from None
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, FileNotFoundError) or (isinstance(reason, str) and "No such file" in reason):
            raise NotFoundError(f"not found: {url}") from None
        raise _Transient(str(reason.strerror if isinstance(reason, OSError) and reason.strerror
                             else reason)) from None
    except (TimeoutError, ConnectionError) as exc:
        raise _Transient(str(exc) or type(exc).__name__) from None
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None and expected > limit:
            raise DownloadError(f"{name}: the server announces {expected:,} bytes, more than the {limit:,} expected "
                                f"({url}); nothing was kept")
        received = 0
        with open(dest, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                                           desc=name, leave=False,
                                           disable=None if progress else True) as bar:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                    raise _Transient(f"connection dropped after {received:,} bytes ({type(exc).__name__})") from None
                if not block:
                    break
                out.write(block)
                received += len(block)
                if time.monotonic() - started > deadline:       # a source that trickles: no read ever times out
                    raise _Transient(f"only {received:,} bytes arrived in {deadline:g} s (--deadline)")
                if received > limit:        # a stream that runs on: stop now, not after filling the disk
                    raise DownloadError(f"{name}: the server sent more than the {limit:,} bytes expected ({url}); "
                                        f"the partial file was discarded")
                bar.update(len(block))
    if expected is not None and received != expected:
        raise _Transient(f"connection dropped after {received:,} of {expected:,} bytes")
    if size is not None and received != size:           # a source that ends early without saying how long it is
        raise _Transient(f"only {received:,} of the {size:,} bytes its declared size says arrived")


def fetch_verified(spec: CorpusFile, url: str, target: Path, *, retries: int, backoff: float, timeout: float,
                   progress: bool = True, deadline: float = DOWNLOAD["deadline"],
                   sleep: Callable[[float], None] = time.sleep,
                   echo: Callable[[str], None] = print, recorded: str | None = None,
                   record: Path | None = None) -> str:
    """Download `url` to `target` atomically, retrying transient failures with exponential backoff; verify it
    against the pinned checksum, else the `recorded` one. Returns its checksum."""
    with atomic_path(target) as tmp:
        for attempt in range(retries + 1):
            try:
                _fetch(url, tmp, spec.name, timeout, progress, spec.size or MAX_UNSIZED_BYTES, spec.size, deadline)
                break
            except _Transient as exc:
                if spec.local_path is not None:          # waiting does not change a local file: no retry
                    raise DownloadError(f"{spec.name}: {exc} ({url})") from None
                if attempt == retries:
                    raise DownloadError(f"{spec.name}: giving up after {retries + 1} attempts: {exc} ({url})") from None
                delay = backoff * 2 ** attempt
                echo(f"  {spec.name}: {exc}; retrying in {delay:g}s ({attempt + 1}/{retries})")
                sleep(delay)
        ok, actual = verify_file(tmp, spec, recorded)
        if not ok:
            pin = "expected" if spec.pinned else "recorded at its first download"
            raise ChecksumError(f"{spec.name}: checksum mismatch ({spec.checksum_kind()} {pin} "
                                f"{spec.expected_checksum() or recorded}, got {actual}) from {url}; the file was "
                                f"discarded" + ("" if spec.pinned else f" (if the source changed on purpose, delete "
                                                                       f"{record or RECORDED})"))
    return actual


def _recorded(raw_dir: Path, name: str, force: bool) -> str | None:
    try:
        return recorded_checksum(raw_dir, name)
    except PipelineError:
        if force:
            return None
        raise


def tracked(f: CorpusFile) -> bool:
    """Whether `f` is a local file the declaration names without a pin: the user's own export, followed like
    any input (an edited file is fetched again) rather than held to the checksum of its first download."""
    return f.local_path is not None and not f.pinned


def plan(corpus: str, *, data_dir: Path | str = layout.DATA_DIR) -> Stage:
    """The corpus's files as declared (sources and pins: the parameters) into data/raw/<corpus>/; a tracked
    local file is an input too. The unlabeled reviews are an optional output (not every source has them)."""
    spec = get_corpus(corpus)
    optional = ((spec.unlabeled.name,) if spec.unlabeled else ()) + (
        (RECORDED,) if any(not f.pinned for f in spec.downloads) else ())
    inputs = {f"{f.name} (source)": Input(f.local_path, None, label=corpus) for f in spec.downloads
              if tracked(f) and f.local_path.is_file()}
    return Stage("download", corpus, layout.raw_dir(data_dir, corpus), inputs=inputs,
                 params={DECLARATION: spec.declared("download")},
                 outputs=tuple(f.name for f in spec.files), optional_outputs=optional, keeps_outputs=True)


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, data_dir=t.data_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return download(t.corpus, data_dir=t.data_dir, mirror=t.mirror, **kwargs)


def download(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, mirror: str | None = None, force: bool = False,
             progress: bool = True, echo: Callable[[str], None] | None = None, **params) -> StageResult:
    """Fetch and verify the corpus's files; `params`: pipeline.params.DOWNLOAD (retries, timeout, backoff,
    deadline).

    Files already present and matching their pins are kept (`force` fetches them again). The stage
    also re-runs while the optional unlabeled file is absent but a source for it is given."""
    spec = get_corpus(corpus)
    retries, timeout, backoff, deadline = (DOWNLOAD.resolve(params)[k]
                                           for k in ("retries", "timeout", "backoff", "deadline"))
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    stage = plan(corpus, data_dir=data_dir)
    raw_dir = stage.folder
    unlabeled_source = spec.unlabeled and (spec.unlabeled.url or mirror)
    wanted = not force and unlabeled_source and not (raw_dir / spec.unlabeled.name).is_file()

    def run(out: Staging) -> StageResult:
        fetched, kept, notes = [], [], []
        # a tracked local file is held to its current content, not to the checksum of its first download;
        # --force rebuilds a damaged record (fetching every file again), without it a damaged record stops here
        recorded = {f.name: (file_checksum(f.local_path, f.checksum_kind()) if tracked(f) and f.local_path.is_file()
                             else _recorded(raw_dir, f.name, force)) for f in spec.downloads if not f.pinned}
        to_fetch = list(spec.files)
        if spec.unlabeled:                  # optional: only where a mirror or URL has it
            if unlabeled_source or (raw_dir / spec.unlabeled.name).is_file():
                to_fetch.append(spec.unlabeled)
            else:
                notes.append(f"no source for the unlabeled reviews {spec.unlabeled.name} without --mirror "
                             f"(pretraining uses the train split alone)")
        for f in to_fetch:
            target = raw_dir / f.name
            if f.local_path is not None and f.local_path.exists() and not f.local_path.is_file():
                raise DownloadError(f"{f.local_path} is not a regular file (a pipe, device or folder) - declare the "
                                    f"file itself (declaration {spec.origin})")
            if (not force and target.is_file() and (f.pinned or recorded.get(f.name))
                    and verify_file(target, f, recorded.get(f.name))[0]):
                kept.append(f.name)         # stays in place (Stage.keeps_outputs)
                continue
            try:
                checksum = fetch_verified(f, source_url(f, corpus, mirror), out.path(f.name), retries=retries,
                                          backoff=backoff, timeout=timeout, progress=progress, deadline=deadline,
                                          echo=echo or print,
                                          recorded=recorded.get(f.name), record=raw_dir / RECORDED)
            except NotFoundError as exc:
                if f is not spec.unlabeled:
                    raise
                notes.append(f"the mirror has no unlabeled reviews ({exc}; pretraining uses the train split alone)")
                continue
            # published as soon as verified: a later file's failure keeps it (its pin vouches for it);
            # the manifest comes only with the whole set
            if f.local_path is not None:        # a private export stays private: no more readers than the source
                os.chmod(out.path(f.name), os.stat(out.path(f.name)).st_mode & os.stat(f.local_path).st_mode & 0o666)
            os.replace(out.path(f.name), target)
            files.renamed()
            fetched.append(f.name)
            if not f.pinned and (tracked(f) or not recorded.get(f.name)):  # first download: from now on the pin
                recorded[f.name] = checksum
                files.write_json(raw_dir / RECORDED, {k: v for k, v in sorted(recorded.items()) if v})
        # a tracked file's record is its source's checksum: a damaged or stale checksums.json is written anew
        # (a kept file was just verified against it), never vouched for as it is
        if any(tracked(f) for f in spec.downloads):
            wanted = {k: v for k, v in sorted(recorded.items()) if v}
            try:
                current = files.read_json(raw_dir / RECORDED)
            except (OSError, ValueError):
                current = None
            if current != wanted:
                files.write_json(raw_dir / RECORDED, wanted)
                notes.append(f"{RECORDED} written anew")
        if fetched:
            summary = (f"download {corpus}: fetched and verified {', '.join(fetched)}"
                       + (f"; {len(kept)} already verified" if kept else ""))
        else:
            summary = f"download {corpus}: {len(kept)} files already verified"
        return StageResult(summary=summary + "".join(f"; {n}" for n in notes),
                           counts={"fetched": len(fetched), "kept": len(kept)})

    return run_stage(stage, run, force=bool(force or wanted), echo=echo)
