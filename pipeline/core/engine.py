"""The engine of the data stages: Dask (distributed), on this machine or on an existing cluster.

A stage splits its input into partitions (the row groups of its input Parquet file, or
blocks of lines) and hands the engine one function call per partition; `Engine.map`
yields the results in partition order, whichever worker finished first, so a stage's
output is the same bytes for any number of workers. At most `2 x workers` partitions are
in flight: the stage holds a bounded number of results however large the corpus is.

Where the calls run:
- an existing Dask cluster when a scheduler address is given (`--scheduler`, or the
  KSENT_SCHEDULER environment variable). Its workers must import this ksent and, for
  stages that read their partitions by path, see the data folder at the same path
  (shared storage). Start workers single-threaded (`dask worker ADDR --nthreads 1`):
  morpheme analyzers are built once per worker process and are not shared by threads;
- otherwise, for `workers` > 1, a LocalCluster of that many single-threaded worker
  processes, started when the stage needs it and stopped when it ends (~1 s);
- otherwise (one worker, or fewer partitions than the stage's `local_below`, no
  scheduler) in this process, with the same functions: no cluster to start for small
  inputs and cheap work.

A worker that dies mid-stage (killed, out of memory) is replaced and its partitions are
recomputed (Dask retries each up to `distributed.scheduler.allowed-failures` times); if
they keep killing workers the stage fails with a PipelineError and publishes nothing.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipeline.errors import PipelineError

SCHEDULER_ENV = "KSENT_SCHEDULER"
NO_WORKERS_TIMEOUT_S = 60.0     # a stage whose cluster lost every worker fails after this long without one
POLL_S = 1.0


def default_workers() -> int:
    """CPU cores this process may use (respects taskset/cgroup affinity where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


DEFAULT_WORKERS = default_workers()


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The Dask scheduler to use: `scheduler`, else $KSENT_SCHEDULER, else None (this machine)."""
    return scheduler or os.environ.get(SCHEDULER_ENV) or None


def where(workers: int, scheduler: str | None = None) -> str:
    """Where a cluster of `workers` (or at `scheduler`) runs, for summaries."""
    address = scheduler_address(scheduler)
    if address:
        return f"Dask scheduler {address}"
    return f"{workers} Dask workers" if workers > 1 else "1 process"


def _quiet_cluster_logs() -> None:
    """The cluster's own tracebacks (a scheduler or worker gone) stay off the terminal: the stage says
    what happened in one line. KSENT_VERBOSE=1 (`ksent --verbose`) shows them."""
    from pipeline.core import quiet

    if quiet.enabled():
        for name in ("distributed.client", "distributed.core", "distributed.comm", "distributed.batched"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def client(workers: int, scheduler: str | None = None) -> Iterator[Any]:
    """A distributed.Client: to `scheduler` (or $KSENT_SCHEDULER), else to a LocalCluster of `workers`."""
    from distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address:
        _quiet_cluster_logs()
        try:
            c = Client(address, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise PipelineError(f"cannot reach the Dask scheduler at {address} ({exc}) - start it with "
                                f"`dask scheduler`, or drop --scheduler/{SCHEDULER_ENV} to run on this machine"
                                ) from None
        with c:
            if not c.scheduler_info().get("workers"):
                try:
                    c.wait_for_workers(1, timeout=60)
                except TimeoutError:
                    raise PipelineError(f"the Dask scheduler at {address} has no workers (waited 60 s) - start "
                                        f"some with `dask worker {address} --nthreads 1`") from None
            yield c
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def _result(c, future, what: str):
    """`future.result()`, but a cluster left without any worker fails the stage after NO_WORKERS_TIMEOUT_S
    (Dask would wait for a new one forever: the tasks of a dead last worker are only rescheduled)."""
    alone_since = None
    while True:
        try:
            return future.result(timeout=POLL_S)
        except TimeoutError:
            if c.scheduler_info().get("workers"):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > NO_WORKERS_TIMEOUT_S:
                raise PipelineError(f"{what}: the Dask cluster has had no worker for {NO_WORKERS_TIMEOUT_S:g} s (did "
                                    f"they die? see their logs) - nothing was published; start workers (`dask worker "
                                    f"ADDRESS --nthreads 1`) and re-run") from None


class Shared:
    """An argument of every partition's call that is large (a vocabulary): `Engine.map` sends it to
    each worker once (Dask scatter) instead of with every call, where the scheduler would also
    keep a copy per call."""

    def __init__(self, value: Any):
        self.value = value
        self._future = None


class Engine:
    """Where a stage's partitions run; a cluster (if any) starts at the first `map` and stops on exit.

        with Engine(workers=2) as eng:
            counts = list(eng.map(count, parts, what="pad"))
            arrays = list(eng.map(index, parts, what="pad"))      # same cluster
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None):
        self.workers, self.scheduler = max(1, workers), scheduler_address(scheduler)
        self._stack = contextlib.ExitStack()
        self._client = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def where(self) -> str:
        """Where the partitions ran: "1 process" unless a cluster was used."""
        return where(self.workers, self.scheduler) if self._client is not None else "1 process"

    def map(self, fn: Callable, partitions: Iterable[tuple], *, what: str = "stage",
            local_below: int = 2) -> Iterator[Any]:
        """`fn(*args)` for every `args` in `partitions`, yielded in order (see the module doc for where).

        Without a scheduler, fewer than `local_below` partitions run in this process: for a
        stage whose partitions are cheap, a local cluster's start (~1-2 s) costs more than it saves.
        """
        partitions = list(partitions)
        if not self.scheduler and (self.workers <= 1 or len(partitions) < max(2, local_below)):
            for args in partitions:
                yield fn(*(a.value if isinstance(a, Shared) else a for a in args))
            return
        from distributed import KilledWorker
        from distributed.comm import CommClosedError

        if self._client is None:
            self._client = self._stack.enter_context(client(self.workers, self.scheduler))
        c = self._client
        window = 2 * max(1, len(c.scheduler_info().get("workers", {})) or self.workers)
        pending: deque = deque()
        todo = iter(enumerate(partitions))
        run = os.urandom(4).hex()

        def shared(arg):
            if not isinstance(arg, Shared):
                return arg
            if arg._future is None:
                arg._future = c.scatter(arg.value, broadcast=True, hash=False)
            return arg._future

        def submit_next() -> None:
            for i, args in todo:
                pending.append(c.submit(fn, *map(shared, args), pure=False, key=f"{what}-{run}-{i}"))
                return

        for _ in range(window):
            submit_next()
        try:
            while pending:
                future = pending.popleft()
                try:
                    result = _result(c, future, what)
                except KilledWorker as exc:
                    raise PipelineError(f"{what}: partition after partition killed its Dask worker ({exc}) - "
                                        f"nothing was published; check the workers' memory and logs") from None
                except (concurrent.futures.CancelledError, ConnectionError, CommClosedError) as exc:  # scheduler gone
                    raise PipelineError(f"{what}: lost the Dask scheduler mid-stage ({type(exc).__name__}) - nothing "
                                        f"was published; restart it (`dask scheduler`) and its workers, then "
                                        f"re-run") from None
                except ImportError as exc:          # a worker without ksent or one of its libraries
                    raise PipelineError(f"{what}: a Dask worker cannot import {exc.name or exc} - install this "
                                        f"ksent (`make setup`) where the workers run") from None
                del future
                submit_next()
                yield result
        finally:
            for future in pending:
                future.cancel()


