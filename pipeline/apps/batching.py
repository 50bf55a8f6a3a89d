"""Micro-batching for asyncio servers: concurrent requests share one model call.

A model call has a fixed cost (Python overhead, a session run) that dwarfs the cost of
one more row, so `MicroBatcher.submit` queues a request's items and one consumer task
combines the items of concurrent requests into calls of at most `max_batch` items. A
request waits at most `max_wait_ms` (counted from its arrival) for company; items
that arrive while the model is busy go into the next call at once, so the batch size
grows with the load by itself. Each request gets exactly its own results, in order;
a request larger than `max_batch` is split over several calls.

Model calls run one at a time in a single worker thread, off the event loop: the model
is not re-entrant (a morpheme analyzer instance is not thread-safe) and a second
thread would only fight the first for the same cores. Independent of any web
framework; `pipeline.apps.serve` uses it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pipeline.params import SERVE

__all__ = ["BatcherClosed", "MicroBatcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatcherClosed(RuntimeError):
    """The batcher was closed before this request's results were computed."""


@dataclass(eq=False)
class _Request:
    items: list
    future: asyncio.Future
    arrived: float                                  # time.monotonic() at submit
    taken: int = 0                                  # items already handed to a model call
    results: list = field(default_factory=list)


class MicroBatcher(Generic[Item, Result]):
    """Combine the items of concurrent `submit` calls into `predict(items) -> results` calls.

    `predict` runs in one worker thread and must return one result per item, in order.
    Create and use the batcher inside a running event loop; `close()` it when done.
    """

    def __init__(self, predict: Callable[[list[Item]], Sequence[Result]], *, max_batch: int = SERVE["max_batch"],
                 max_wait_ms: float = SERVE["max_wait_ms"], thread_name: str = "model"):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._queue: deque[_Request] = deque()
        self._queued_items = 0                      # items in the queue not yet handed to a model call
        self._wakeup: asyncio.Event | None = None
        self._consumer: asyncio.Task | None = None
        self._closed = False
        self.calls = 0                              # model calls made (batched ones), for tests and stats
        self.items = 0                              # items predicted in them

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """The results for `items`, computed together with other requests' items."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        items = list(items)
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._consumer is None:
            self._wakeup = asyncio.Event()
            self._consumer = loop.create_task(self._consume())
        request = _Request(items, loop.create_future(), time.monotonic())
        was_idle = not self._queue
        self._queue.append(request)
        self._queued_items += len(items)
        # wake the consumer only when it has something new to decide: the first request, or a full batch
        if was_idle or self._queued_items >= self.max_batch:
            self._wakeup.set()
        return await request.future

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `function(*args, **kwargs)` in the model thread, unbatched, between the batched calls."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    def refuse_waiting(self, reason: str) -> int:
        """Fail every request not yet handed to a model call with BatcherClosed(reason), and refuse new
        ones; the call running now finishes and answers its requests. Returns the requests refused."""
        self._closed = True
        refused = 0
        for request in list(self._queue):
            if request.taken == 0 and not request.future.done():
                request.future.set_exception(BatcherClosed(reason))
                self._queue.remove(request)
                self._queued_items -= len(request.items)
                refused += 1
        return refused

    async def close(self) -> None:
        """Stop the consumer; requests still queued fail with BatcherClosed. Waits for a running model call."""
        self._closed = True
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                pass
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(BatcherClosed("the server is shutting down"))
        self._queued_items = 0
        self._executor.shutdown(wait=True)

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch, parts = self._take_batch()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.predict, batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"predict returned {len(results)} results for {len(batch)} items")
            except asyncio.CancelledError:
                self._fail(parts, BatcherClosed("the server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - the requests in this batch get the error; others go on
                self._fail(parts, exc)
                continue
            self.calls += 1
            self.items += len(batch)
            start = 0
            for request, count in parts:
                request.results.extend(results[start:start + count])
                start += count
                if len(request.results) == len(request.items) and not request.future.done():
                    request.future.set_result(request.results)

    async def _wait_for_batch(self) -> None:
        """Return when a batch is full, or the oldest queued request has waited max_wait."""
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._queue[0].arrived + self.max_wait
        while self._queued_items < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> tuple[list, list[tuple[_Request, int]]]:
        """Up to max_batch items from the head of the queue, and how many came from which request."""
        batch: list = []
        parts: list[tuple[_Request, int]] = []
        while self._queue and len(batch) < self.max_batch:
            request = self._queue[0]
            if request.future.done():               # cancelled (client went away), or failed earlier
                self._queue.popleft()
                self._queued_items -= len(request.items) - request.taken
                continue
            count = min(len(request.items) - request.taken, self.max_batch - len(batch))
            batch.extend(request.items[request.taken:request.taken + count])
            request.taken += count
            self._queued_items -= count
            parts.append((request, count))
            if request.taken == len(request.items):
                self._queue.popleft()
        return batch, parts

    def _fail(self, parts: list[tuple[_Request, int]], exc: BaseException) -> None:
        for request, _ in parts:
            if not request.future.done():
                request.future.set_exception(exc)
            if request.taken < len(request.items):  # its remaining items are pointless now
                try:
                    self._queue.remove(request)
                except ValueError:
                    pass
                self._queued_items -= len(request.items) - request.taken
                request.taken = len(request.items)
