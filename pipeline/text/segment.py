"""Segmentation: cleaned text -> token strings, by words, characters (or jamo) or morphemes.

    >>> Segmenter("word").segment("정말 재밌다")
    ['정말', '재밌다']
    >>> Segmenter("char", jamo=True).segment("한글")
    ['ㅎ', 'ㅏ', 'ㄴ', 'ㄱ', 'ㅡ', 'ㄹ']
    >>> Segmenter("morpheme", backend="mecab", pos_filter=("NN", "VA")).segment("영화가 재밌다")
    ['영화', '재밌']

A `Segmenter` is a frozen, hashable value that round-trips through `to_dict`/`from_dict`
(saved as segmenter.json and inside tokenizer.json), so `predict` segments exactly as
training did. Morpheme analyzers are the pluggable backends of `pipeline.text.morph`.

`segment_many` is order preserving and deterministic: the output does not depend on
the number of workers (each document is analyzed on its own). It is prediction's path
(`ksent predict --file`, the Python API): morpheme analysis with several workers runs in
a light `SegmentPool` of worker processes that load the analyzer once each (one JVM per
worker for Okt), fed chunks of documents; kiwi uses its own threads instead. The data
stages segment on their engine instead (pipeline.core.engine: Dask, partitions of a table).
Worker processes start with "forkserver" (or "spawn" where there is none), never
"fork": forking a process that runs a JVM (Okt, through JPype) or other threads (kiwi,
tqdm's monitor, TensorFlow) can deadlock the child. The cost is a fresh interpreter per
worker: a pool of 2 mecab workers is ready in ~0.3 s; an Okt worker needs 5-12 s (on a
busy 2-core machine) to start its JVM and load its dictionaries, so Okt pays off with
several workers only on thousands of documents.
Workers never outlive the main process, however it ends (SIGKILL included, see
`_exit_with_main_process`), and leaving a `SegmentPool` by an exception (Ctrl-C, or the
SystemExit of a SIGTERM handler) stops them at once instead of finishing the queued chunks.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields
from typing import Any

from pipeline.errors import PipelineError
from pipeline.text import morph

KINDS = ("word", "char", "morpheme")
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
BLOCK = 1000          # documents per progress-bar update in-process
MAX_CHUNK = 500       # documents per task sent to a worker process


# --- jamo ------------------------------------------------------------------------------------
# A precomposed syllable U+AC00 + (initial * 21 + medial) * 28 + final decomposes by
# arithmetic into 19 initials, 21 medials and 27 finals (+ none). We emit *compatibility*
# jamo (U+3131..U+318E, ㄱ ㅏ ...) rather than conjoining jamo (U+1100..U+11FF): they are
# the letters people type on their own in reviews (ㅋㅋ, ㅠㅠ, ㅡㅡ), so the ㅋ of 킄 and a
# typed ㅋ share one vocabulary entry. The price: an initial and a final consonant look
# the same (the ㄴ of 나 and of 안), so the position is implicit in the sequence order.
# The tables are derived from the Unicode names (HANGUL CHOSEONG KIYEOK -> HANGUL LETTER KIYEOK).

def _compatibility(conjoining: int) -> str:
    name = unicodedata.name(chr(conjoining))          # e.g. "HANGUL JONGSEONG RIEUL-KIYEOK"
    return unicodedata.lookup("HANGUL LETTER " + name.split(" ", 2)[2])


_INITIALS = tuple(_compatibility(cp) for cp in range(0x1100, 0x1113))         # 19
_MEDIALS = tuple(_compatibility(cp) for cp in range(0x1161, 0x1176))          # 21
_FINALS = ("",) + tuple(_compatibility(cp) for cp in range(0x11A8, 0x11C3))   # 1 + 27
_SYLLABLE_BASE, _SYLLABLES = 0xAC00, 19 * 21 * 28


def jamo_tokens(text: str) -> list[str]:
    """One token per jamo of each Hangul syllable; other non-space characters pass through."""
    out: list[str] = []
    for ch in text:
        s = ord(ch) - _SYLLABLE_BASE
        if 0 <= s < _SYLLABLES:
            out.append(_INITIALS[s // 588])
            out.append(_MEDIALS[s % 588 // 28])
            if s % 28:
                out.append(_FINALS[s % 28])
        elif not ch.isspace():
            out.append(ch)
    return out


# --- the segmenter ---------------------------------------------------------------------------

def _as_tuple(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    items = tuple(value)
    if not all(isinstance(v, str) and v for v in items):
        raise PipelineError(f"{what} must be non-empty strings, got {items!r}")
    return items


@dataclass(frozen=True)
class Segmenter:
    """How text becomes tokens. See the module docstring.

    kind: "word" (split on whitespace), "char" (every non-space character, or its jamo
        with `jamo=True`) or "morpheme" (a morpheme analyzer's output).
    backend, backend_options: the morpheme analyzer (default `morph.DEFAULT_BACKEND`)
        and its options (a mapping or (key, value) pairs, stored as sorted pairs with the
        backend's defaults filled in, e.g. (("max_chunk", 150), ("norm", False), ("stem", False))).
    pos_filter: keep only morphemes whose tag starts with one of these prefixes (() = all).
    stopwords: tokens dropped after segmentation (any kind; compared with the morpheme, not its tag).
    with_tags: emit "morpheme/TAG" tokens.
    """
    kind: str
    jamo: bool = False
    backend: str | None = None
    backend_options: tuple[tuple[str, Any], ...] = ()
    pos_filter: tuple[str, ...] = ()
    stopwords: tuple[str, ...] = ()
    with_tags: bool = False

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.kind not in KINDS:
            raise PipelineError(f"unknown tokenizer {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if self.jamo and self.kind != "char":
            raise PipelineError("jamo=True applies to the char tokenizer only")
        set_("pos_filter", _as_tuple(self.pos_filter, "pos_filter"))
        set_("stopwords", _as_tuple(self.stopwords, "stopwords"))
        options = self.backend_options
        if isinstance(options, Mapping):
            options = options.items()
        options = dict(options or ())
        if self.kind == "morpheme":
            backend = self.backend or morph.DEFAULT_BACKEND
            resolved = morph.backend_class(backend).resolve_options(options)  # unknown -> PipelineError
            set_("backend", backend)
            set_("backend_options", tuple(sorted(resolved.items())))
        elif self.backend or options or self.pos_filter or self.with_tags:
            raise PipelineError("backend, backend_options, pos_filter and with_tags apply to the "
                                f"morpheme tokenizer only, not {self.kind!r}")
        else:
            set_("backend_options", ())
        set_("_stopset", frozenset(self.stopwords))

    # --- identity ---------------------------------------------------------------------------
    def name(self) -> str:
        """Directory name under data/processed/<corpus>/ (filters and options live in the manifest)."""
        if self.kind == "morpheme":
            return f"morpheme-{self.backend}"
        return "char-jamo" if self.jamo else self.kind

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "jamo": self.jamo, "backend": self.backend,
             "backend_options": dict(self.backend_options), "backend_version": None,
             "pos_filter": list(self.pos_filter), "stopwords": list(self.stopwords),
             "with_tags": self.with_tags}
        if self.kind == "morpheme":
            d["backend_version"] = morph.backend_class(self.backend).version()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Segmenter:
        """Rebuild a saved segmenter; PipelineError if its backend is unknown or cannot load here.

        Warns (`warnings.warn`) when the installed backend version differs from the recorded one.
        """
        if not isinstance(d, Mapping) or "kind" not in d:
            raise PipelineError(f"not a segmenter description: {d!r}")
        known = {f.name for f in fields(cls)}
        seg = cls(**{k: v for k, v in d.items() if k in known})
        if seg.kind == "morpheme":
            backend = morph.backend_class(seg.backend)
            backend.check_available()
            installed, recorded = backend.version(), d.get("backend_version")
            if recorded and installed != recorded:
                warnings.warn(f"morpheme backend {seg.backend!r}: the tokens were made with version "
                              f"{recorded}, this installation has {installed} - segmentation, and so "
                              f"predictions, may differ", stacklevel=2)
        return seg

    # --- segmentation -----------------------------------------------------------------------
    def _analyzer(self, threads: int = 1) -> morph.MorphBackend:
        return morph.get_backend(self.backend, self.backend_options, threads=threads)

    def _from_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        prefixes, stop = self.pos_filter, self._stopset
        if prefixes:
            pairs = [(m, t) for m, t in pairs if t.startswith(prefixes)]
        if stop:
            pairs = [(m, t) for m, t in pairs if m not in stop]
        if self.with_tags:
            return [f"{m}/{t}" for m, t in pairs]
        return [m for m, _ in pairs]

    def segment(self, text: str) -> list[str]:
        """Tokens of one (cleaned) text; [] for empty or whitespace-only text."""
        if not text or text.isspace():
            return []
        if self.kind == "morpheme":
            return self._from_pairs(self._analyzer().analyze(text))
        if self.kind == "word":
            tokens = text.split()
        elif self.jamo:
            tokens = jamo_tokens(text)
        else:
            tokens = [ch for ch in text if not ch.isspace()]
        if self._stopset:
            tokens = [t for t in tokens if t not in self._stopset]
        return tokens

    def segment_many(self, texts: Sequence[str], workers: int = 1,
                     progress: bool = True) -> list[list[str]]:
        """`segment` of every text, in order; identical output for any number of workers.

        word/char always run in this process (they are cheap); morpheme analysis with
        workers > 1 runs in worker processes (`SegmentPool`), or kiwi's threads.
        """
        texts = list(texts)
        workers = max(1, int(workers or 1))
        if self.kind == "morpheme" and workers > 1 and len(texts) > 1:
            if morph.backend_class(self.backend).parallel == "thread":
                return self._segment_threaded(texts, workers, progress)
            with SegmentPool(self, min(workers, len(texts))) as pool:
                return pool.map(texts, progress=progress)
        out: list[list[str]] = []
        with _bar(len(texts), progress, f"tokenize {self.name()}") as bar:
            for start in range(0, len(texts), BLOCK):
                block = texts[start:start + BLOCK]
                out.extend(self.segment(t) for t in block)
                bar.update(len(block))
        return out

    def _segment_threaded(self, texts: list[str], threads: int, progress: bool) -> list[list[str]]:
        analyzer = self._analyzer(threads=threads)
        out: list[list[str]] = []
        with _bar(len(texts), progress, f"tokenize {self.name()}") as bar:
            for start in range(0, len(texts), BLOCK * threads):
                block = [t if t and not t.isspace() else "" for t in texts[start:start + BLOCK * threads]]
                out.extend(self._from_pairs(pairs) if t else []
                           for t, pairs in zip(block, analyzer.analyze_many(block), strict=True))
                bar.update(len(block))
        return out

    def workers_used(self, workers: int | None) -> int:
        """How many workers `segment_many(texts, workers)` really uses (word/char: 1)."""
        return max(1, int(workers or 1)) if self.kind == "morpheme" else 1

    def warm_up(self) -> None:
        """Load the analyzer (and, for Okt, start the JVM) before the first real document."""
        if self.kind == "morpheme":
            self._analyzer().analyze("영화가 정말 재밌었어요")


def _bar(total: int, progress: bool, desc: str):
    from tqdm import tqdm
    # disable=None: shown on a terminal, silent in logs and pipes
    return tqdm(total=total, desc=desc, unit="doc", unit_scale=True, disable=None if progress else True,
                file=sys.stderr, mininterval=0.5)


# --- worker processes ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(segmenter: Segmenter, barrier, lifeline) -> None:
    _exit_with_main_process(lifeline)
    # Ctrl-C signals the whole process group: the main process alone decides, and stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["segmenter"], _WORKER["barrier"] = segmenter, barrier
    segmenter.warm_up()


def _exit_with_main_process(lifeline) -> None:
    """Make this worker exit as soon as the main process is gone, however it ended.

    The main process holds the only write end of the `lifeline` pipe, so reading it here
    hits EOF exactly when that process has exited (the kernel closes its files, SIGKILL
    included) or closed the pool: a daemon thread waits for that. No pid is involved, so
    pid reuse cannot fool it, and it works wherever pipes do.
    On Linux a forkserver worker is also killed by the kernel when the forkserver dies
    (PR_SET_PDEATHSIG), which takes no GIL, in case C code (a JVM) holds it. The forkserver
    stops when the last copy of its "alive" pipe closes, and each worker inherits one:
    ours is dropped, or the forkserver would wait for us while we wait for it.
    Not for "spawn": there the parent is the thread that started us, which may end first.
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    alive = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_alive_fd", None)
    if sys.platform.startswith("linux") and alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the lifeline still works
    # Started after prctl: had the forkserver (so the main process) died before, the
    # lifeline is already at EOF and the thread exits at once - no race.
    threading.Thread(target=_exit_on_eof, args=(lifeline,), name="lifeline", daemon=True).start()


def _exit_on_eof(lifeline) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: returns only at EOF (as EOFError)
    except (EOFError, OSError):
        pass
    os._exit(1)


def _wait_ready(timeout: float) -> int:
    # every worker holds one of these tasks until all have arrived, so each runs exactly one
    _WORKER["barrier"].wait(timeout)
    return os.getpid()


def _cpu_seconds(timeout: float) -> float:
    _WORKER["barrier"].wait(timeout)
    return time.process_time()  # all threads of the worker (a JVM's GC and JIT threads too)


def _segment_chunk(texts: list[str]) -> list[list[str]]:
    segment = _WORKER["segmenter"].segment
    return [segment(t) for t in texts]


class SegmentPool:
    """`workers` processes, each with the segmenter's analyzer loaded once.

    Creating the pool waits until every worker has loaded (and warmed up) its analyzer,
    so `startup_s` is the start-up cost and `map` measures throughput alone.

        with SegmentPool(segmenter, 2) as pool:
            tokens = pool.map(texts)
    """

    def __init__(self, segmenter: Segmenter, workers: int, start_method: str | None = None,
                 timeout: float = 600.0):
        if segmenter.kind == "morpheme":
            morph.backend_class(segmenter.backend).check_available()  # a clear error here, not in a worker
        self.segmenter, self.workers, self._timeout = segmenter, workers, timeout
        self.start_method = start_method or START_METHOD
        ctx = multiprocessing.get_context(self.start_method)
        started = time.perf_counter()
        # this process keeps the only write end: the workers exit when it closes (_exit_with_main_process)
        lifeline, self._lifeline = ctx.Pipe(duplex=False)
        self._executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(segmenter, ctx.Barrier(workers), lifeline))
        try:
            ready = [self._executor.submit(_wait_ready, timeout) for _ in range(workers)]
            self.pids = sorted(f.result() for f in ready)
        except BaseException as exc:
            self.close(now=True)
            if isinstance(exc, BrokenProcessPool):
                raise PipelineError(f"a {segmenter.name()} worker process failed to start ({exc}); "
                                    f"try workers=1 to see the error in this process") from None
            raise
        self.startup_s = time.perf_counter() - started

    def map(self, texts: Sequence[str], progress: bool = True, chunksize: int | None = None) -> list[list[str]]:
        texts = list(texts)
        out: list[list[str]] = []
        # ~8 chunks per worker for balance, at most MAX_CHUNK for a live bar
        pending = self.submit(texts, chunksize, chunks_per_worker=8)
        with _bar(len(texts), progress, f"tokenize {self.segmenter.name()}") as bar:
            for chunk in pending.chunks():
                out.extend(chunk)
                bar.update(len(chunk))
        return out

    def submit(self, texts: Sequence[str], chunksize: int | None = None,
               chunks_per_worker: int = 2) -> PendingSegments:
        """Queue `texts` for segmentation and return at once; `.result()` waits for their tokens, in order."""
        texts = list(texts)
        if chunksize is None:
            chunksize = max(1, min(MAX_CHUNK, -(-len(texts) // (chunks_per_worker * self.workers))))
        try:
            return PendingSegments(self, [self._executor.submit(_segment_chunk, texts[i:i + chunksize])
                                          for i in range(0, len(texts), chunksize)])
        except BrokenProcessPool as exc:            # a worker died before these were queued
            raise self.died(exc) from None

    def died(self, exc: BrokenProcessPool) -> PipelineError:
        return PipelineError(f"a {self.segmenter.name()} worker process died ({exc}); "
                             f"try fewer workers (each Okt worker runs its own JVM)")

    def cpu_seconds(self) -> list[float]:
        """CPU time each worker process has used so far (for benchmarks)."""
        return [f.result() for f in [self._executor.submit(_cpu_seconds, self._timeout)
                                     for _ in range(self.workers)]]

    def close(self, now: bool = False) -> None:
        """Stop the workers once the queued chunks are done, or with `now` at once, dropping them."""
        executor = self._executor
        processes = list((executor._processes or {}).values())  # shutdown() forgets them
        results = executor._result_queue
        executor.shutdown(wait=not now, cancel_futures=True)
        self._lifeline.close()  # any worker still running exits at EOF
        if not now:
            return
        deadline = time.monotonic() + 2.0
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():  # stuck in C code that holds the GIL
                p.kill()
                p.join(1.0)
        # A worker that died while sending its result leaves half a message, which the
        # executor's thread would wait for forever (and the interpreter, at exit, for the
        # thread). With our copy of the pipe's write end closed it reads EOF instead.
        if results is not None:
            results._writer.close()

    def __enter__(self) -> SegmentPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(now=exc_type is not None)  # on an error, Ctrl-C or SIGTERM nobody wants the rest


class PendingSegments:
    """The tokens of texts queued with `SegmentPool.submit`."""

    def __init__(self, pool: SegmentPool, futures: list):
        self._pool, self._futures = pool, futures

    def chunks(self) -> Iterator[list[list[str]]]:
        """The tokens chunk by chunk, in submission order (= input order), as each is ready."""
        try:
            for future in self._futures:
                yield future.result()
        except BrokenProcessPool as exc:
            raise self._pool.died(exc) from None

    def result(self) -> list[list[str]]:
        return [tokens for chunk in self.chunks() for tokens in chunk]
