"""SegmentPool: worker processes that each load a segmenter's morpheme analyzer once (one JVM per
worker for Okt) and segment chunks of documents, in order (`Segmenter.segment_many`, streamed
prediction).

Worker processes start with "forkserver" (or "spawn" where there is none), never "fork":
forking a process that runs a JVM (Okt, through JPype) or other threads (kiwi, tqdm's
monitor, TensorFlow) can deadlock the child. The cost is a fresh interpreter per worker: a
pool of 2 mecab workers is ready in ~0.3 s; an Okt worker needs 5-12 s (on a busy 2-core
machine) to start its JVM and load its dictionaries, so Okt pays off with several workers
only on thousands of documents.
Workers never outlive the main process, however it ends (SIGKILL included, see
`_exit_with_main_process`), and leaving a `SegmentPool` by an exception (Ctrl-C, or the
SystemExit of a SIGTERM handler) stops them at once instead of finishing the queued chunks.
concurrent.futures has no public way to do either, so three private attributes are used, each
where it is needed, with the reason and the test that guards it.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pipeline.errors import PipelineError
from pipeline.text import morph
from pipeline.text.segment import Segmenter, progress_bar

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
MAX_CHUNK = 500       # documents per task sent to a worker process


_WORKER: dict[str, Any] = {}


def segment_many(segmenter: Segmenter, texts: Sequence[str], workers: int = 1,
                 progress: bool = True) -> list[list[str]]:
    """`segmenter.segment` of every text, in order; identical output for any number of workers: morpheme
    analysis on several workers in a SegmentPool (kiwi: its own threads), everything else in this process."""
    texts = list(texts)
    workers = max(1, int(workers or 1))
    if segmenter.uses_processes(workers, len(texts)):
        with SegmentPool(segmenter, min(workers, len(texts))) as pool:
            return pool.map(texts, progress=progress)
    return segmenter.segment_in_process(texts, workers, progress)


def _init_worker(segmenter: Segmenter, barrier, lifeline, preprocessor=None) -> None:
    _exit_with_main_process(lifeline)
    # Ctrl-C signals the whole process group: the main process alone decides, and stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["segmenter"], _WORKER["barrier"], _WORKER["preprocessor"] = segmenter, barrier, preprocessor
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
    # private: multiprocessing offers no public way to drop the inherited alive fd (test_orphans.py)
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


def _segment_chunk(texts: list[str]) -> list[list[str]]:
    segment = _WORKER["segmenter"].segment
    return [segment(t) for t in texts]


def _ids_chunk(texts: list[str]):
    """The preprocessor's padded ids of raw texts (`transform`: normalized, segmented, looked up and padded
    here), so that the main process only receives a small int32 array (not token lists to unpickle). Its
    segmenter is the pool's (checked in SegmentPool), so it analyses with the analyzer warmed up in this
    process (morph.get_backend keeps one per backend and options)."""
    return _WORKER["preprocessor"].transform(texts)


class SegmentPool:
    """`workers` processes, each with the segmenter's analyzer loaded once.

    Creating the pool waits until every worker has loaded (and warmed up) its analyzer;
    `pids` are the workers' process ids.

        with SegmentPool(segmenter, 2) as pool:
            tokens = pool.map(texts)
    """

    def __init__(self, segmenter: Segmenter, workers: int, start_method: str | None = None,
                 timeout: float = 600.0, preprocessor=None):
        if segmenter.kind == "morpheme":
            morph.backend_class(segmenter.backend).check_available()  # a clear error here, not in a worker
        self.segmenter, self.workers, self._timeout = segmenter, workers, timeout
        if preprocessor is not None and preprocessor.segmenter.to_dict() != segmenter.to_dict():
            raise ValueError("the preprocessor's segmenter must be the pool's")
        self._preprocessor = preprocessor   # for submit_ids
        self.start_method = start_method or START_METHOD
        ctx = multiprocessing.get_context(self.start_method)
        # this process keeps the only write end: the workers exit when it closes (_exit_with_main_process)
        lifeline, self._lifeline = ctx.Pipe(duplex=False)
        self._executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(segmenter, ctx.Barrier(workers), lifeline, preprocessor))
        try:
            ready = [self._executor.submit(_wait_ready, timeout) for _ in range(workers)]
            self.pids = sorted(f.result() for f in ready)
        except BaseException as exc:
            self.close(now=True)
            if isinstance(exc, BrokenProcessPool):
                raise PipelineError(f"a {segmenter.name()} worker process failed to start ({exc}); "
                                    f"try workers=1 to see the error in this process") from None
            raise

    def map(self, texts: Sequence[str], progress: bool = True, chunksize: int | None = None) -> list[list[str]]:
        texts = list(texts)
        out: list[list[str]] = []
        # ~8 chunks per worker for balance, at most MAX_CHUNK for a live bar
        pending = self.submit(texts, chunksize, chunks_per_worker=8)
        with progress_bar(len(texts), progress, f"tokenize {self.segmenter.name()}") as bar:
            for chunk in pending.chunks():
                out.extend(chunk)
                bar.update(len(chunk))
        return out

    def submit(self, texts: Sequence[str], chunksize: int | None = None,
               chunks_per_worker: int = 2, task=_segment_chunk) -> PendingSegments:
        """Queue `texts` for segmentation and return at once; `.result()` waits for their tokens, in order."""
        texts = list(texts)
        if chunksize is None:
            chunksize = max(1, min(MAX_CHUNK, -(-len(texts) // (chunks_per_worker * self.workers))))
        try:
            return PendingSegments(self, [self._executor.submit(task, texts[i:i + chunksize])
                                          for i in range(0, len(texts), chunksize)])
        except BrokenProcessPool as exc:            # a worker died before these were queued
            raise self.died(exc) from None

    def submit_ids(self, texts: Sequence[str]) -> PendingSegments:
        """Queue raw `texts` for the whole preprocessing (the pool's `preprocessor`: normalize, segment,
        ids, pad); `.result()` waits for their padded int32 ids, in order."""
        if self._preprocessor is None:
            raise ValueError("submit_ids needs a SegmentPool made with a preprocessor")
        return self.submit(texts, task=_ids_chunk)

    def worker_dead(self) -> bool:
        """A worker process has exited (they only exit when the pool closes: the pool is broken)."""
        return any(p.exitcode is not None for p in list((self._executor._processes or {}).values()))

    def died(self, exc: BrokenProcessPool) -> PipelineError:
        return PipelineError(f"a {self.segmenter.name()} worker process died ({exc}); "
                             f"try fewer workers (each Okt worker runs its own JVM)")

    def close(self, now: bool = False) -> None:
        """Stop the workers once the queued chunks are done, or with `now` at once, dropping them."""
        executor = self._executor
        # private: shutdown() forgets the processes, and only they can be killed when stuck in C code
        # holding the GIL; and only this queue's write end lets a reader see EOF (test_segment.py:
        # test_pool_stops_at_once_when_an_exception_leaves_it; test_orphans.py)
        processes = list((executor._processes or {}).values())
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
    """The tokens of texts queued with `SegmentPool.submit` (or their ids: `submit_ids`)."""

    def __init__(self, pool: SegmentPool, futures: list):
        self._pool, self._futures = pool, futures

    def chunks(self) -> Iterator[list[list[str]]]:
        """The tokens chunk by chunk, in submission order (= input order), as each is ready."""
        try:
            for future in self._futures:
                yield self._result(future)
        except BrokenProcessPool as exc:
            raise self._pool.died(exc) from None

    def _result(self, future):
        # The executor marks the futures broken when a worker dies - unless the worker died while
        # sending a result: then the executor's thread waits forever for the rest of that message
        # (close(now=True) ends that wait), and so would we. So look at the workers every second.
        while True:
            try:
                return future.result(timeout=1.0)
            except FutureTimeout:
                if self._pool.worker_dead():
                    raise BrokenProcessPool("a worker process exited while its results were awaited") from None

    def result(self) -> list[list[str]]:
        return [tokens for chunk in self.chunks() for tokens in chunk]

    def ids(self):
        """The padded ids of texts queued with `SegmentPool.submit_ids`, one int32 array."""
        import numpy as np

        chunks = list(self.chunks())
        return np.concatenate(chunks) if chunks else np.zeros((0, self._pool._preprocessor.maxlen), np.int32)
