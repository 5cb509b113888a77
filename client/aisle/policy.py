"""Deadlines, retries and per-call timing: pure logic shared by the sync and asyncio clients.

Why a ``Deadline`` object and not a timeout per attempt: a caller's ``timeout_s`` bounds the whole
call — waiting in the micro-batcher, every retry and every backoff — so each step asks the deadline
what is left instead of starting a fresh timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import AisleError, DeadlineExceeded, InvalidRequest


class Deadline:
    """An absolute point on the monotonic clock by which a call must finish."""

    __slots__ = ("at", "timeout_s")

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.at = clock() + timeout_s

    def remaining(self, clock: Callable[[], float] = time.monotonic) -> float:
        return self.at - clock()

    def expired(self, clock: Callable[[], float] = time.monotonic) -> bool:
        return self.remaining(clock) <= 0

    def check(self, what: str = "call") -> float:
        """Seconds left, or ``DeadlineExceeded`` if none are."""
        left = self.remaining()
        if left <= 0:
            raise self.exceeded(what)
        return left

    def exceeded(self, what: str) -> DeadlineExceeded:
        """The error of a call (or a wait inside it) that ran out of this deadline."""
        return DeadlineExceeded(f"{what}: deadline of {self.timeout_s:.3f}s exceeded")

    @staticmethod
    def latest(deadlines: list[Deadline]) -> Deadline:
        """The deadline of a request that serves several callers: the last of theirs."""
        return max(deadlines, key=lambda d: d.at)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, only for retryable errors, never past the deadline.

    Retryable are the errors whose class says so (``ServerUnavailable``: down or restarting;
    ``Overloaded``: queue full; ``ModelNotReady``: still loading); ``InvalidRequest`` and
    ``DeadlineExceeded`` never are. Full jitter (a delay drawn uniformly in [0, cap]) spreads the
    retries of many clients after a restart instead of having them all arrive together.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidRequest(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise InvalidRequest("backoffs must be >= 0 and multiplier >= 1")

    def backoff_cap(self, attempt: int) -> float:
        """Upper bound of the wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))

    def next_delay(
        self, error: AisleError, attempt: int, remaining_s: float, rng: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to give up and raise ``error``.

        Gives up when the error is not retryable, the attempts are spent, or the wait would leave no
        time for another attempt before the deadline.
        """
        if not error.retryable or attempt >= self.max_attempts:
            return None
        cap = self.backoff_cap(attempt)
        delay = cap * rng() if self.jitter else cap
        if delay >= remaining_s:
            return None
        return delay


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass
class CallInfo:
    """What one SDK call cost, for the caller's own metrics.

    ``elapsed_s`` is wall time inside the SDK; ``attempts`` server attempts (0 for a cache hit);
    ``cache`` is ``"hit"``, ``"miss"``, ``"shared"`` (waited for an identical in-flight call),
    ``"bypass"`` or ``None`` when no cache applies; ``batch_rows`` the rows of the Triton request
    that carried this call (> 1 when micro-batched); ``error`` the exception class name on failure.
    """

    method: str
    started: float = field(default_factory=time.perf_counter)
    elapsed_s: float = 0.0
    attempts: int = 0
    cache: str | None = None
    batch_rows: int = 0
    error: str | None = None

    def finish(self, error: BaseException | None = None) -> CallInfo:
        self.elapsed_s = time.perf_counter() - self.started
        if error is not None:
            self.error = type(error).__name__
        return self
