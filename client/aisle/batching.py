"""Client-side micro-batching: concurrent single calls become one batched Triton request.

Why on the client when Triton batches dynamically too: every Triton request costs a gRPC round
trip, an ensemble schedule and a Python-backend hand-off per composing model; B callers in one
request pay that once. The window is short (``max_delay_ms``) and opens with the first waiting
call, so a lone caller waits at most that long.

The collection shells (a thread for ``RecClient``, an event-loop timer for ``AsyncRecClient``) are
the only parts that differ; which calls may share a request is ``plan_batches``, pure and tested.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, Sequence, TypeVar

from .policy import CallInfo, Deadline

LOG = logging.getLogger("aisle")
T = TypeVar("T")


@dataclass(eq=False)
class Pending:
    """One caller's row waiting for a batch; ``future`` gets its own result or its own error."""

    request: Any
    deadline: Deadline
    future: Any
    info: CallInfo = field(default_factory=lambda: CallInfo("batched"))


def plan_batches(items: Sequence[T], max_batch: int, group_key: Callable[[T], Hashable]) -> list[list[T]]:
    """Split ``items`` into requests: equal ``group_key`` (e.g. "has NOW") and at most ``max_batch`` rows.

    Arrival order is kept inside each group, so results map back to callers by position.
    """
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(group_key(item), []).append(item)
    return [group[i : i + max_batch] for group in groups.values() for i in range(0, len(group), max_batch)]


def settle(future: Any, result: Any) -> None:
    """Resolve a caller's future with a value or an exception, unless it gave up already."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class ThreadBatcher:
    """Collects ``Pending`` rows from many threads and hands each batch to ``run`` on a worker pool.

    The pool lets a new batch go out while earlier ones are still on the wire.
    """

    def __init__(
        self,
        run: Callable[[list[Pending]], None],
        max_batch: int,
        max_delay_s: float,
        group_key: Callable[[Pending], Hashable],
        workers: int = 4,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._group_key = group_key
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="aisle-batch")
        self._closed = False
        self._thread = threading.Thread(target=self._collect, name="aisle-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Pending) -> None:
        if self._closed:
            from .errors import ServerUnavailable

            raise ServerUnavailable("client is closed")
        self._queue.put(item)

    def _collect(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            items = [first]
            window_ends = time.monotonic() + self._max_delay_s
            while len(items) < self._max_batch:
                left = window_ends - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
            for group in plan_batches(items, self._max_batch, self._group_key):
                self._pool.submit(self._run_safely, group)

    def _run_safely(self, group: list[Pending]) -> None:
        try:
            self._run(group)
        except BaseException as exc:  # noqa: BLE001 - a bug must reach the callers, not kill the pool
            LOG.exception("micro-batch failed")
            for item in group:
                settle(item.future, exc)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._pool.shutdown(wait=True)


class AsyncBatcher:
    """The asyncio twin of ``ThreadBatcher``: a timer on the loop instead of a collector thread."""

    def __init__(
        self,
        run: Callable[[list[Pending]], Awaitable[None]],
        max_batch: int,
        max_delay_s: float,
        group_key: Callable[[Pending], Hashable],
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._group_key = group_key
        self._pending: list[Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    def submit(self, item: Pending) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay_s, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._pending = self._pending, []
        for group in plan_batches(items, self._max_batch, self._group_key):
            task = asyncio.get_running_loop().create_task(self._run_safely(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_safely(self, group: list[Pending]) -> None:
        try:
            await self._run(group)
        except BaseException as exc:  # noqa: BLE001
            LOG.exception("micro-batch failed")
            for item in group:
                settle(item.future, exc)

    async def close(self) -> None:
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
