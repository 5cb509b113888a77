"""Exposure logging off the caller's path: ``RecClient(..., log_exposures=True)``.

Every answer to a ``recommend`` call with a ``user_id`` becomes an ``exposure`` event
(``exposure_event``) that waits in a bounded buffer; a background sender ships the waiting events
with ``track`` requests of at most 64 rows (``MAX_TRACK_BATCH``, one fsync each), as soon as a full
batch waits and at least every ``flush_ms``. ``close()`` sends what is left.

The choices, all visible in ``ExposureStats``:

- bounded: at most ``capacity`` events wait; a new event when the buffer is full drops the
  *oldest* one (the caller is never blocked, memory never grows) and counts it in ``dropped``;
- a batch that fails with a retryable error (server or state store down) goes back to the front
  of the buffer and is sent again on a later tick, at most ``max_attempts`` times per event
  (``retried`` counts the requeued events); a non-retryable error, or the last attempt, counts its
  events in ``failed``;
- ``close()`` keeps sending for at most ``close_timeout_s``; what is still waiting then is counted
  in ``dropped``. So ``sent + dropped + failed + queued`` always equals the events logged.

``ExposureBuffer`` is the bookkeeping, pure and clock-free (unit-tested); the shells own the timing:
a thread for ``RecClient``, a task on the event loop for ``AsyncRecClient`` — the same split as
the micro-batcher (``batching``). Both send through the client's own plan (``_core``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aisle_contract import MAX_TRACK_BATCH

from .errors import AisleError, InvalidRequest
from .requests import TrackEvent

LOG = logging.getLogger("aisle")
DEFAULT_CAPACITY = 10_000
DEFAULT_FLUSH_MS = 200.0
DEFAULT_MAX_ATTEMPTS = 3

#: An event waiting to be sent, with the number of sends it failed already.
Entry = tuple[TrackEvent, int]


@dataclass(frozen=True)
class ExposureStats:
    """Counts of a client's exposure log since it was opened (``client.exposure_stats()``)."""

    logged: int  # events handed to the log
    sent: int  # stored by the server (or found stored already: a resend)
    queued: int  # waiting now, in flight included
    dropped: int  # pushed out of a full buffer, or still waiting when close() gave up
    failed: int  # refused (non-retryable error) or out of attempts
    retried: int  # events requeued after a retryable failure
    batches: int  # track requests that succeeded


class ExposureBuffer:
    """The waiting exposures and their counts; not thread-safe, no clock (the shells lock and time it)."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        batch_size: int = MAX_TRACK_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidRequest(f"exposure_capacity must be an int >= 1, got {capacity!r}")
        if not 1 <= batch_size <= MAX_TRACK_BATCH:
            raise InvalidRequest(f"batch_size must be in [1, {MAX_TRACK_BATCH}], got {batch_size!r}")
        if max_attempts < 1:
            raise InvalidRequest(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.capacity, self.batch_size, self.max_attempts = capacity, batch_size, max_attempts
        self._waiting: collections.deque[Entry] = collections.deque()
        self._in_flight = 0
        self._logged = self._sent = self._dropped = self._failed = self._retried = self._batches = 0

    def __len__(self) -> int:
        """Events waiting to be taken (not those in flight)."""
        return len(self._waiting)

    def add(self, event: TrackEvent) -> bool:
        """Queue ``event`` (dropping the oldest when full); True when a full batch waits: send now."""
        self._logged += 1
        self._waiting.append((event, 0))
        self._trim()
        return self.full()

    def full(self) -> bool:
        return len(self._waiting) >= self.batch_size

    def take(self) -> list[Entry]:
        """The next batch to send (oldest first, ≤ ``batch_size``); empty when nothing waits."""
        batch = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
        self._in_flight += len(batch)
        return batch

    def settle(self, batch: list[Entry], error: BaseException | None) -> None:
        """Count a sent ``batch``, or requeue it (front, within the bound) after a retryable ``error``."""
        self._in_flight -= len(batch)
        if error is None:
            self._sent += len(batch)
            self._batches += 1
            return
        retryable = isinstance(error, AisleError) and error.retryable
        again = [(event, tries + 1) for event, tries in batch if retryable and tries + 1 < self.max_attempts]
        self._failed += len(batch) - len(again)
        self._retried += len(again)
        self._waiting.extendleft(reversed(again))  # they were the oldest: they stay first
        self._trim()

    def drop_all(self) -> None:
        """Give up on everything waiting (``close()`` ran out of time); counted in ``dropped``."""
        self._dropped += len(self._waiting)
        self._waiting.clear()

    def stats(self) -> ExposureStats:
        return ExposureStats(
            self._logged,
            self._sent,
            len(self._waiting) + self._in_flight,
            self._dropped,
            self._failed,
            self._retried,
            self._batches,
        )

    def _trim(self) -> None:
        while len(self._waiting) > self.capacity:
            self._waiting.popleft()
            self._dropped += 1


def _outcome(send: Callable[[list[TrackEvent]], object], batch: list[Entry]) -> BaseException | None:
    try:
        send([event for event, _ in batch])
    except AisleError as error:
        LOG.warning("exposure log: %d events not sent (%s: %s)", len(batch), type(error).__name__, error)
        return error
    except Exception as error:  # a bug must be counted, not kill the sender
        LOG.exception("exposure log: sending %d events failed", len(batch))
        return error
    return None


class ThreadExposureLog:
    """``RecClient``'s shell: a daemon thread sends the buffer's batches; ``add`` only appends."""

    def __init__(self, send: Callable[[list[TrackEvent]], object], buffer: ExposureBuffer, flush_s: float) -> None:
        self._send, self._buffer, self._flush_s = send, buffer, flush_s
        self._cond = threading.Condition()
        self._closing = False
        self._close_by = float("inf")
        self._thread = threading.Thread(target=self._loop, name="aisle-exposures", daemon=True)
        self._thread.start()

    def add(self, event: TrackEvent) -> None:
        with self._cond:
            if self._buffer.add(event):
                self._cond.notify()

    def stats(self) -> ExposureStats:
        with self._cond:
            return self._buffer.stats()

    def close(self, timeout_s: float) -> None:
        """Send what waits (for at most ``timeout_s`` more), then stop the thread."""
        with self._cond:
            if self._closing:
                return
            self._closing, self._close_by = True, time.monotonic() + timeout_s
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._closing:
                    self._cond.wait_for(lambda: self._closing or self._buffer.full(), timeout=self._flush_s)
                if self._closing and (not len(self._buffer) or time.monotonic() >= self._close_by):
                    self._buffer.drop_all()
                    return
            if not self._send_waiting():
                time.sleep(self._flush_s)  # a failed round waits a tick: no hot loop against a down server

    def _send_waiting(self) -> bool:
        """Send every waiting batch; False at the first failure (its events are requeued or counted)."""
        while True:
            with self._cond:
                batch = self._buffer.take()
            if not batch:
                return True
            error = _outcome(self._send, batch)
            with self._cond:
                self._buffer.settle(batch, error)
            if error is not None:
                return False


class AsyncExposureLog:
    """``AsyncRecClient``'s shell: a task on the loop (started by the first event) sends the batches."""

    def __init__(
        self, send: Callable[[list[TrackEvent]], Awaitable[object]], buffer: ExposureBuffer, flush_s: float
    ) -> None:
        self._send, self._buffer, self._flush_s = send, buffer, flush_s
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._close_by = float("inf")

    def add(self, event: TrackEvent) -> None:
        """Queue ``event``; called on the loop (from a plan), so no lock is needed."""
        full = self._buffer.add(event)
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="aisle-exposures")
        if full and self._wake is not None:
            self._wake.set()

    def stats(self) -> ExposureStats:
        return self._buffer.stats()

    async def close(self, timeout_s: float) -> None:
        if self._closing:
            return
        self._closing, self._close_by = True, time.monotonic() + timeout_s
        if self._task is not None and self._wake is not None:
            self._wake.set()
            await self._task

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):  # a tick passed without a full batch
                    await asyncio.wait_for(self._wake.wait(), timeout=self._flush_s)
                self._wake.clear()
            if self._closing and (not len(self._buffer) or time.monotonic() >= self._close_by):
                self._buffer.drop_all()
                return
            if not await self._send_waiting():
                await asyncio.sleep(self._flush_s)

    async def _send_waiting(self) -> bool:
        while batch := self._buffer.take():
            error: BaseException | None = None
            try:
                await self._send([event for event, _ in batch])
            except Exception as exc:  # noqa: BLE001 - counted like the thread shell's
                LOG.warning("exposure log: %d events not sent (%s: %s)", len(batch), type(exc).__name__, exc)
                error = exc
            self._buffer.settle(batch, error)
            if error is not None:
                return False
        return True
