"""Client-side micro-batching: concurrent single calls become one batched Triton request.

Why on the client when Triton batches dynamically too: every Triton request costs a gRPC round
trip, an ensemble schedule and a Python-backend hand-off per composing model; B callers in one
request pay that once. The window is short (``max_delay_ms``) and opens with the first waiting
call, so a lone caller waits at most that long.

The bookkeeping — which rows wait, when the window is full, which rows may share a request — is
``Window`` and ``plan_batches``, pure and tested. What a batch does once it is sent is the core's
plan (``ClientCore._batch_plan``). Only the collection shells differ: a thread for ``RecClient``,
an event-loop timer for ``AsyncRecClient``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ClientClosed
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


class Window:
    """The rows collected for the next send: whether it is full, and the requests it splits into.

    Not thread-safe and clock-free: the shells own the timing (a queue timeout, a loop timer).
    """

    def __init__(self, max_batch: int, group_key: Callable[[Pending], Hashable]) -> None:
        self.max_batch = max_batch
        self._group_key = group_key
        self._items: list[Pending] = []

    def add(self, item: Pending) -> bool:
        """Collect ``item``; True when the window is full and must be sent now."""
        self._items.append(item)
        return len(self._items) >= self.max_batch

    def __len__(self) -> int:
        return len(self._items)

    def take(self) -> list[list[Pending]]:
        """Empty the window into Triton requests (rows that may share one, ``max_batch`` at most)."""
        items, self._items = self._items, []
        return plan_batches(items, self.max_batch, self._group_key)


def _fail_group(group: list[Pending], error: BaseException) -> None:
    """A batch that broke outside its plan (a bug) still answers each of its callers."""
    LOG.error("micro-batch failed", exc_info=error)
    for item in group:
        settle(item.future, error)


class ThreadBatcher:
    """Collects ``Pending`` rows from many threads and hands each batch to ``run`` on a worker pool.

    The pool lets a new batch go out while earlier ones are still on the wire.
    """

    def __init__(
        self,
        run: Callable[[list[Pending]], object],
        max_batch: int,
        max_delay_s: float,
        group_key: Callable[[Pending], Hashable],
        workers: int = 4,
    ) -> None:
        self._run = run
        self._window = Window(max_batch, group_key)
        self._max_delay_s = max_delay_s
        self._queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="aisle-batch")
        self._closed = False
        self._thread = threading.Thread(target=self._collect, name="aisle-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Pending) -> None:
        if self._closed:
            raise ClientClosed("the micro-batcher is closed")
        self._queue.put(item)

    def _collect(self) -> None:
        open_ = True
        while open_:
            first = self._queue.get()
            if first is None:
                break
            self._window.add(first)
            open_ = self._fill(time.monotonic() + self._max_delay_s)
            for group in self._window.take():
                self._pool.submit(self._run_safely, group)

    def _fill(self, window_ends: float) -> bool:
        """Add rows until the window is full or its time is up; False once ``close`` was asked for."""
        while True:
            left = window_ends - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            if self._window.add(item):
                return True

    def _run_safely(self, group: list[Pending]) -> None:
        try:
            self._run(group)
        except BaseException as exc:  # noqa: BLE001 - a bug must reach the callers, not kill the pool
            _fail_group(group, exc)

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
        run: Callable[[list[Pending]], Awaitable[object]],
        max_batch: int,
        max_delay_s: float,
        group_key: Callable[[Pending], Hashable],
    ) -> None:
        self._run = run
        self._window = Window(max_batch, group_key)
        self._max_delay_s = max_delay_s
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def submit(self, item: Pending) -> None:
        if self._closed:
            raise ClientClosed("the micro-batcher is closed")
        if self._window.add(item):
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay_s, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for group in self._window.take():
            task = asyncio.get_running_loop().create_task(self._run_safely(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_safely(self, group: list[Pending]) -> None:
        try:
            await self._run(group)
        except BaseException as exc:  # noqa: BLE001 - a bug must reach the callers, not vanish with the task
            _fail_group(group, exc)

    async def close(self) -> None:
        """Send what is waiting and let the batches in flight finish."""
        self._closed = True
        if len(self._window):
            self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
