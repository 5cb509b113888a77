"""``RecClient``: the synchronous Aisle SDK over Triton's gRPC API — a blocking driver of the core.

Every operation is written once, as a plan in ``_core``; this module only performs the plans'
steps on the calling thread (a tritonclient call, a sleep, a wait on a ``concurrent.futures``
future) and runs the micro-batcher on threads. One gRPC channel per client, reused by every call
and safe to share between threads (gRPC channels and stubs are thread-safe; everything else the
client mutates is behind a lock).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import tritonclient.grpc as grpcclient

from aisle_contract import EMBED_MODELS, RECOMMEND_MODEL

from ._core import ClientCore
from .batching import ThreadBatcher
from .exposure_log import ThreadExposureLog
from .plans import Call, Gather, Plan, Run, Sleep, Step, Wait, public
from .responses import parse_recommendations

__all__ = ["EMBED_MODELS", "RECOMMEND_MODEL", "RecClient", "parse_recommendations"]
P = ParamSpec("P")
T = TypeVar("T")


def _blocking(plan: Callable[Concatenate[ClientCore, P], Plan[T]]) -> Callable[Concatenate[RecClient, P], T]:
    """A public method that runs ``plan`` to its end on the calling thread."""

    def method(self: RecClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._drive(plan(self, *args, **kwargs))

    return public(plan, method)


def _wait(future: concurrent.futures.Future[Any], step: Wait) -> Any:
    try:
        return future.result(timeout=max(step.deadline.remaining(), 0.0))
    except TimeoutError:
        raise step.deadline.exceeded(step.what) from None


class RecClient(ClientCore):
    """Recommendations and embeddings from an Aisle deployment (thread-safe; one channel).

    >>> with RecClient("127.0.0.1:8001") as client:  # doctest: +SKIP
    ...     recs = client.recommend(query="red running shoes", k=10)

    ``url``: ``host:port``, or a gRPC target naming several servers — ``dns:///NAME:8001`` (a
    headless Service: every ready pod) or ``ipv4:10.0.0.1:8001,10.0.0.2:8001``. ``load_balancing``:
    ``"auto"`` (default) spreads calls round-robin over every server of a ``dns:``/``ipv4:``/``ipv6:``
    target and keeps gRPC's one connection (``pick_first``) for a plain ``host:port``;
    ``"round_robin"`` or ``"pick_first"`` force gRPC's policy; ``client.load_balancing`` says which applies.
    ``timeout_s``: default deadline of a call. ``retry``: ``RetryPolicy`` for retryable errors
    (``None``: no retries). ``wait_ready_s``: block in the constructor until the server and
    ``recommend`` are ready. ``embed_cache_size``/``embed_cache_ttl_s``: LRU+TTL cache of embeddings
    by text (0 disables). ``recommend_cache_size`` (opt-in, 0 = off), ``recommend_cache_ttl_s``,
    ``history_bucket_s``: cache of recommendations by normalized request. ``max_delay_ms``: turn on
    micro-batching of concurrent ``recommend`` calls (window length; ``None`` = off), up to
    ``max_batch`` rows per Triton request (also ``recommend_many``'s group size). For
    micro-batching pick about half the concurrent callers (16 for 32): two batches in flight let
    the server's stages overlap — 3.1x single calls' throughput vs 2.6x at 64
    (``python -m perf.bench_sdk --workload feed``). ``ssl``/``root_certificates``/``private_key``/``certificate_chain``: TLS
    (file paths). ``headers``: sent with every call (e.g. Triton's restricted-protocol key).
    ``on_call``: called with a ``CallInfo`` after every call. ``experiment``: an ``Experiment`` for
    every call with a ``user_id``. ``log_exposures=True``: the exposure of every answer to a call
    with a ``user_id`` is sent in the background (``track`` batches of ≤ 64, at least every
    ``exposure_flush_ms``; at most ``exposure_capacity`` wait, the oldest dropped beyond;
    ``exposure_stats()`` counts sent, dropped, failed). A closed client raises ``ClientClosed``.
    """

    _new_future = concurrent.futures.Future
    _new_batcher = ThreadBatcher
    _new_exposure_log = ThreadExposureLog

    # -- calls -----------------------------------------------------------------------------------
    recommend = _blocking(ClientCore._plan_recommend)
    recommend_many = _blocking(ClientCore._plan_recommend_many)
    embed = _blocking(ClientCore._plan_embed)
    track = _blocking(ClientCore._plan_track)
    track_many = _blocking(ClientCore._plan_track_many)
    update_items = _blocking(ClientCore._plan_update_items)
    set_rules = _blocking(ClientCore._plan_set_rules)
    list_rules = _blocking(ClientCore._plan_list_rules)
    rollback_rules = _blocking(ClientCore._plan_rollback_rules)

    # -- lifecycle -------------------------------------------------------------------------------
    def _open_channel(self) -> grpcclient.InferenceServerClient:
        return self._new_channel(grpcclient.InferenceServerClient)

    def _start(self) -> None:
        super()._start()
        if self.wait_ready_s is not None:
            try:
                self.wait_ready(self.wait_ready_s)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Refuse new calls, let the micro-batcher's batches in flight finish, send the exposures
        still waiting (for at most ``timeout_s``), close the channel."""
        if not self._begin_close():
            return
        if self._batcher is not None:
            self._batcher.close()  # type: ignore[attr-defined]  # the core holds it as the Batcher protocol; this driver made a ThreadBatcher
        if self._exposures is not None:
            self._exposures.close(self.timeout_s)  # type: ignore[attr-defined]  # this driver made a ThreadExposureLog
        self._triton.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- health ----------------------------------------------------------------------------------
    is_live = _blocking(ClientCore._plan_is_live)
    is_ready = _blocking(ClientCore._plan_is_ready)
    wait_ready = _blocking(ClientCore._plan_wait_ready)

    # -- the driver ------------------------------------------------------------------------------
    def _drive(self, plan: Plan[T]) -> T:
        """Run ``plan`` on this thread: perform each step it yields and resume it with the outcome."""
        run = Run(plan)
        while not run.done:
            run.perform_with(self._perform)
        return run.result

    def _perform(self, step: Step) -> Any:
        match step:
            case Call():
                return getattr(self._triton, step.method)(*step.args, **step.kwargs)
            case Sleep():
                return time.sleep(step.seconds)
            case Wait():
                return _wait(step.future, step)
            case Gather():
                return [self._drive(plan) for plan in step.plans]  # one after another
        raise TypeError(f"not a step: {step!r}")

    # -- metadata --------------------------------------------------------------------------------
    model_metadata = _blocking(ClientCore._plan_model_metadata)
    model_config = _blocking(ClientCore._plan_model_config)
    inference_statistics = _blocking(ClientCore._plan_inference_statistics)
