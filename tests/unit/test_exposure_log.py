"""The exposure log's bookkeeping (``ExposureBuffer``: bound, batches, retries, counts) and its two shells.

The shells send through a plain callable here (the client's plan in production; the end-to-end
experiment test covers that path against a real server).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aisle import ExposureStats, InvalidRequest, ServerUnavailable, TrackEvent
from aisle.exposure_log import AsyncExposureLog, ExposureBuffer, ThreadExposureLog


def _event(n: int) -> TrackEvent:
    return TrackEvent(f"u{n}", f"i{n}", "exposure", ts=1_700_000_000.0 + n, event_id=f"r{n}")


def _ids(batch) -> list[str]:
    return [event.event_id for event, _ in batch]


def _accounted(stats: ExposureStats) -> int:
    return stats.sent + stats.queued + stats.dropped + stats.failed


def test_batches_hold_at_most_64_events_oldest_first():
    buffer = ExposureBuffer(capacity=1000)
    full = [buffer.add(_event(n)) for n in range(130)]
    assert full.index(True) == 63  # the 64th event makes a full batch: send now
    batches = [buffer.take(), buffer.take(), buffer.take(), buffer.take()]
    assert [len(b) for b in batches] == [64, 64, 2, 0]
    assert _ids(batches[0])[:2] == ["r0", "r1"] and _ids(batches[2]) == ["r128", "r129"]
    assert buffer.stats().queued == 130  # in flight until settled


def test_a_full_buffer_drops_the_oldest_and_counts_it():
    buffer = ExposureBuffer(capacity=10, batch_size=4)
    for n in range(25):
        buffer.add(_event(n))
    stats = buffer.stats()
    assert (stats.logged, stats.queued, stats.dropped) == (25, 10, 15)
    assert _ids(buffer.take()) == ["r15", "r16", "r17", "r18"]  # the newest ten stayed


def test_a_sent_batch_is_counted():
    buffer = ExposureBuffer(batch_size=3)
    for n in range(5):
        buffer.add(_event(n))
    for _ in range(2):
        buffer.settle(buffer.take(), None)
    stats = buffer.stats()
    assert (stats.sent, stats.batches, stats.queued, stats.failed) == (5, 2, 0, 0)
    assert _accounted(stats) == stats.logged


def test_a_retryable_failure_requeues_in_front_until_attempts_run_out():
    buffer = ExposureBuffer(batch_size=2, max_attempts=3)
    for n in range(3):
        buffer.add(_event(n))
    for _ in range(3):
        batch = buffer.take()
        assert _ids(batch) == ["r0", "r1"]  # the failed batch goes first again
        buffer.settle(batch, ServerUnavailable("down"))
    stats = buffer.stats()
    assert (stats.retried, stats.failed, stats.queued) == (4, 2, 1)
    assert _ids(buffer.take()) == ["r2"]
    assert _accounted(buffer.stats()) == 3


def test_a_non_retryable_failure_is_counted_at_once():
    buffer = ExposureBuffer(batch_size=2)
    buffer.add(_event(0))
    buffer.settle(buffer.take(), InvalidRequest("bad"))
    stats = buffer.stats()
    assert (stats.failed, stats.retried, stats.queued) == (1, 0, 0)


def test_requeued_events_respect_the_bound():
    buffer = ExposureBuffer(capacity=4, batch_size=2)
    for n in range(4):
        buffer.add(_event(n))
    batch = buffer.take()  # r0, r1 in flight; r2, r3 wait
    for n in range(4, 6):
        buffer.add(_event(n))  # the buffer is full again
    buffer.settle(batch, ServerUnavailable("down"))  # back in front, so the oldest go first
    stats = buffer.stats()
    assert (stats.queued, stats.dropped, stats.retried) == (4, 2, 2)
    assert _ids(buffer.take()) == ["r2", "r3"]
    assert _accounted(buffer.stats()) == 6


def test_drop_all_counts_what_was_waiting():
    buffer = ExposureBuffer()
    for n in range(7):
        buffer.add(_event(n))
    buffer.drop_all()
    assert (buffer.stats().dropped, buffer.stats().queued) == (7, 0)


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5])
def test_a_bad_capacity_is_refused(capacity):
    with pytest.raises(InvalidRequest, match="exposure_capacity"):
        ExposureBuffer(capacity=capacity)


class Recorder:
    """A ``send`` that records batches and fails the first ``failures`` calls with a retryable error."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.lock = threading.Lock()

    def __call__(self, events: list[TrackEvent]) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise ServerUnavailable("down")
            self.batches.append([e.event_id for e in events])


def test_the_thread_shell_sends_full_batches_and_flushes_the_rest_on_close():
    send = Recorder(failures=1)
    log = ThreadExposureLog(send, ExposureBuffer(), flush_s=0.01)
    for n in range(150):
        log.add(_event(n))
    log.close(timeout_s=30)
    sent = [event_id for batch in send.batches for event_id in batch]
    assert sorted(sent, key=lambda e: int(e[1:])) == [f"r{n}" for n in range(150)]
    assert max(len(batch) for batch in send.batches) <= 64
    stats = log.stats()
    assert (stats.sent, stats.queued, stats.dropped, stats.failed) == (150, 0, 0, 0)
    assert stats.retried > 0  # the first batch failed once and was sent again


def test_the_thread_shell_sends_without_close_within_its_tick():
    send = Recorder()
    log = ThreadExposureLog(send, ExposureBuffer(), flush_s=0.01)
    log.add(_event(1))  # far from a full batch: only the tick sends it
    for _ in range(2000):
        if log.stats().sent:
            break
        time.sleep(0.005)
    assert send.batches == [["r1"]]
    log.close(timeout_s=5)


def test_the_thread_shell_gives_up_at_its_close_deadline_and_counts_it():
    log = ThreadExposureLog(Recorder(failures=10**6), ExposureBuffer(max_attempts=10**6), flush_s=0.01)
    for n in range(5):
        log.add(_event(n))
    log.close(timeout_s=0.05)
    stats = log.stats()
    assert (stats.sent, stats.queued, stats.dropped) == (0, 0, 5)


def test_the_async_shell_sends_everything_by_close():
    sent: list[list[str]] = []

    async def send(events: list[TrackEvent]) -> None:
        await asyncio.sleep(0)
        sent.append([e.event_id for e in events])

    async def scenario() -> ExposureStats:
        log = AsyncExposureLog(send, ExposureBuffer(), flush_s=0.01)
        for n in range(100):
            log.add(_event(n))
        await log.close(timeout_s=30)
        return log.stats()

    stats = asyncio.run(scenario())
    assert [len(b) for b in sent] == [64, 36]
    assert (stats.sent, stats.batches, stats.queued, stats.dropped) == (100, 2, 0, 0)
