"""Everything ``RecClient`` and ``AsyncRecClient`` do, written once and without I/O.

Each public operation is a *plan*: a generator that validates the arguments, consults the caches
and the single-flight table, builds the request, and then ``yield``s a ``Step`` — a tritonclient
``Call``, a ``Sleep`` before a retry, a ``Wait`` on another caller's future, a ``Gather`` of
sub-plans — and receives the reply (or has the error thrown in) to decide what comes next: retry,
fall back row by row, cache, map the error. The clients are drivers that only perform steps: on the
calling thread (``client.py``) or on the event loop (``aio.py``). Why: the two clients had drifted
apart while repeating ~270 lines; now a rule lives in one place, and the unit tests of the plans
cover both clients (the same design as sans-I/O protocol libraries such as h11).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar, Unpack

import numpy as np
import numpy.typing as npt
from tritonclient.grpc import InferInput, KeepAliveOptions

from aisle_contract import (
    CATALOG_MODEL,
    DEFAULT_RULE_SET,
    EMBED_MODELS,
    MAX_BATCH,
    MAX_CATALOG_BATCH,
    MAX_MESSAGE_BYTES,
    MAX_TRACK_BATCH,
    RECOMMEND_MODEL,
    RULES_MODEL,
    TRACK_MODEL,
)
from aisle_contract.experiments import Assignment, Experiment

from .batching import Pending, plan_batches, settle
from .cache import MISSING, Flights, ResultCache, embed_key, fail_waiters, recommend_key
from .errors import AisleError, ClientClosed, DeadlineExceeded, InvalidRequest, ServerUnavailable, from_triton
from .exposure_log import DEFAULT_CAPACITY, DEFAULT_FLUSH_MS, ExposureBuffer, ExposureStats
from .exposures import exposure_event
from .plans import Call, Gather, Plan, Sleep, Wait
from .policy import CallInfo, Deadline, RetryPolicy
from .requests import (
    HistoryItem,
    ItemUpdate,
    RankingKnobs,
    RecommendRequest,
    Tensor,
    TrackEvent,
    batch_recommend_tensors,
    catalog_tensors,
    embed_tensors,
    rules_tensors,
    track_tensors,
    validate_texts,
    validate_timeout,
    validate_tower,
)
from .responses import (
    InferResult,
    Vector,
    changed_from,
    copy_recommendations,
    embeddings_from,
    recommendations_from,
    rule_set_from,
    tracked_from,
)
from .types import ItemChanged, Recommendations, RuleSetInfo, Tracked

LOG = logging.getLogger("aisle")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_RETRY = RetryPolicy()
EMBED_BATCH = MAX_BATCH  # the embed ensembles' max_batch_size


# -- transport helpers ---------------------------------------------------------------------------------
LoadBalancing = Literal["auto", "round_robin", "pick_first"]
LOAD_BALANCING: tuple[LoadBalancing, ...] = ("auto", "round_robin", "pick_first")
#: Targets in gRPC's resolver form that may name several servers (gRPC's naming doc): ``dns:`` (every
#: A/AAAA record of the name, re-resolved as servers come and go) and ``ipv4:``/``ipv6:`` (a static list).
MULTI_ADDRESS_SCHEMES = ("dns:", "ipv4:", "ipv6:")
#: Least time between two DNS resolutions of a ``dns:`` target (gRPC's default is 30 s). gRPC resolves
#: again when a connection drops (a pod goes, or the server's max connection age closes it), so this
#: bounds how soon a round-robin channel sees a pod the autoscaler added.
DNS_MIN_RESOLUTION_INTERVAL_MS = 10_000


def lb_policy(url: str, load_balancing: str = "auto") -> str:
    """gRPC's load-balancing policy for a channel to ``url``: ``"round_robin"`` or ``"pick_first"``.

    ``"auto"`` picks ``round_robin`` for a target that may name several servers —
    ``dns:///aisle-triton-pods.aisle.svc.cluster.local:8001`` (a headless Service: one address per
    ready pod) or ``ipv4:10.0.0.1:8001,10.0.0.2:8001`` — so every server takes a share of the calls,
    and ``pick_first`` (gRPC's default: one connection) for a plain ``host:port``, whose channel stays
    exactly what it was. Why: one HTTP/2 connection carries all of a channel's calls, so behind a
    ClusterIP Service ``pick_first`` pins a client to one pod; ``round_robin`` keeps a connection to
    every address and sends each call to the next ready one.
    """
    if load_balancing not in LOAD_BALANCING:
        raise InvalidRequest(f"load_balancing must be one of {', '.join(LOAD_BALANCING)}; got {load_balancing!r}")
    if load_balancing != "auto":
        return load_balancing
    return "round_robin" if url.lower().startswith(MULTI_ADDRESS_SCHEMES) else "pick_first"


def channel_args(
    reconnect_backoff_ms: tuple[int, int] = (100, 1000), policy: str = "pick_first"
) -> list[tuple[str, object]]:
    """tritonclient's default channel options plus a short reconnect backoff (and ``policy``'s options).

    gRPC's default reconnect backoff grows to 120 s; after a server restart a channel could sit in
    TRANSIENT_FAILURE, failing calls fast, long after the server is back. Capping it at a second
    makes the one channel reconnect promptly, so retries find the restarted server. ``round_robin``
    adds gRPC's policy name and a shorter DNS re-resolution interval; ``pick_first`` adds nothing
    (it is gRPC's default).
    """
    keepalive = KeepAliveOptions()
    initial, maximum = reconnect_backoff_ms
    balancing: list[tuple[str, object]] = []
    if policy == "round_robin":
        balancing = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_RESOLUTION_INTERVAL_MS),
        ]
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),  # the contract's cap, not gRPC's 2 GB
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", initial),
        ("grpc.min_reconnect_backoff_ms", initial),
        ("grpc.max_reconnect_backoff_ms", maximum),
        *balancing,
    ]


def clone_error(error: AisleError) -> AisleError:
    """A fresh exception per caller: one instance raised in many threads would share a traceback."""
    clone = type(error)(str(error), error.code)
    clone.__cause__ = error.__cause__
    return clone


def as_inputs(tensors: Sequence[Tensor], infer_input: type[InferInput] = InferInput) -> list[InferInput]:
    """tritonclient ``InferInput``s (sync and aio share the class) from our tensors."""
    inputs = []
    for tensor in tensors:
        item = infer_input(tensor.name, list(tensor.array.shape), tensor.datatype)
        item.set_data_from_numpy(tensor.array)
        inputs.append(item)
    return inputs


def _batch_signature(item: Pending) -> tuple[Any, ...]:
    signature: tuple[Any, ...] = item.request.batch_signature
    return signature


def _many_signature(pair: tuple[int, RecommendRequest]) -> tuple[Any, ...]:
    return pair[1].batch_signature


def _check_experiment(experiment: object) -> None:
    if experiment is not None and not isinstance(experiment, Experiment):
        raise InvalidRequest(f"experiment must be an aisle.Experiment, got {type(experiment).__name__}")


class Batcher(Protocol):
    """What the core needs of a micro-batcher (``ThreadBatcher``, ``AsyncBatcher``)."""

    def submit(self, item: Pending) -> None: ...


class ExposureLog(Protocol):
    """What the core needs of an exposure log shell (``ThreadExposureLog``, ``AsyncExposureLog``)."""

    def add(self, event: TrackEvent) -> None: ...

    def stats(self) -> ExposureStats: ...


class ClientCore:
    """Configuration, caches, timing and every operation's plan; a subclass drives the plans.

    A driver sets ``_new_future`` (a future another thread or task can wait on), ``_new_batcher``
    (its micro-batcher class), ``_new_exposure_log`` (its exposure log shell) and implements
    ``_open_channel`` and ``_drive``.
    """

    _new_future: Callable[[], Any]
    _new_batcher: Callable[..., Batcher]
    _new_exposure_log: Callable[..., ExposureLog]

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        load_balancing: LoadBalancing = "auto",
        timeout_s: float = 2.0,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        wait_ready_s: float | None = None,
        embed_cache_size: int = 10_000,
        embed_cache_ttl_s: float = 3600.0,
        recommend_cache_size: int = 0,
        recommend_cache_ttl_s: float = 30.0,
        history_bucket_s: float = 60.0,
        max_delay_ms: float | None = None,
        max_batch: int = MAX_BATCH,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: Mapping[str, str] | None = None,
        on_call: Callable[[CallInfo], None] | None = None,
        experiment: Experiment | None = None,
        log_exposures: bool = False,
        exposure_capacity: int = DEFAULT_CAPACITY,
        exposure_flush_ms: float = DEFAULT_FLUSH_MS,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidRequest(f"url must be a non-empty 'host:port' or gRPC target str, got {url!r}")
        self.url = url
        self.load_balancing = lb_policy(url, load_balancing)  # what "auto" became for this url
        self.timeout_s: float = validate_timeout(timeout_s)  # type: ignore[assignment]  # a float in, the same float out
        if self.timeout_s is None:
            raise InvalidRequest("timeout_s must be > 0, got None")
        self.retry = retry or RetryPolicy(max_attempts=1)
        self.wait_ready_s = validate_timeout(wait_ready_s)
        bucket_ok = isinstance(history_bucket_s, (int, float)) and math.isfinite(history_bucket_s)
        if not (bucket_ok and history_bucket_s > 0):
            raise InvalidRequest(f"history_bucket_s must be > 0, got {history_bucket_s!r}")
        self.history_bucket_s = float(history_bucket_s)
        self._embed_cache: ResultCache[Vector] | None = (
            ResultCache(embed_cache_size, embed_cache_ttl_s) if embed_cache_size else None
        )
        self._recommend_cache: ResultCache[Recommendations] | None = (
            ResultCache(recommend_cache_size, recommend_cache_ttl_s) if recommend_cache_size else None
        )
        if max_delay_ms is not None and not (
            isinstance(max_delay_ms, (int, float)) and math.isfinite(max_delay_ms) and max_delay_ms >= 0
        ):
            raise InvalidRequest(f"max_delay_ms must be a number >= 0 or None, got {max_delay_ms!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_BATCH:
            raise InvalidRequest(f"max_batch must be an int in [1, {MAX_BATCH}], got {max_batch!r}")
        self.max_delay_ms = max_delay_ms
        self.max_batch = max_batch
        ssl = ssl or bool(root_certificates or private_key or certificate_chain)  # certificates mean TLS
        self._tls = {
            "ssl": ssl,
            "root_certificates": root_certificates,
            "private_key": private_key,
            "certificate_chain": certificate_chain,
        }
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._on_call = on_call
        if experiment is not None and not isinstance(experiment, Experiment):
            raise InvalidRequest(f"experiment must be an aisle.Experiment or None, got {type(experiment).__name__}")
        self.experiment = experiment  # every recommend with a user_id and no experiment of its own
        if not isinstance(log_exposures, bool):
            raise InvalidRequest(f"log_exposures must be a bool, got {log_exposures!r}")
        if not (
            isinstance(exposure_flush_ms, (int, float)) and math.isfinite(exposure_flush_ms) and exposure_flush_ms > 0
        ):
            raise InvalidRequest(f"exposure_flush_ms must be a number > 0, got {exposure_flush_ms!r}")
        self._exposure_buffer = ExposureBuffer(exposure_capacity) if log_exposures else None
        self.exposure_flush_ms = float(exposure_flush_ms)
        self._last_call: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
            f"aisle_last_call_{id(self)}", default=None
        )
        self._start()

    # -- lifecycle -------------------------------------------------------------------------------
    def _start(self) -> None:
        """Open the transport, then the single-flight table and the micro-batcher."""
        self._closed = False
        self._triton: Any = self._open_channel()
        self._flights: Flights[Any] = Flights(self._new_future)
        self._batcher: Batcher | None = None
        if self.max_delay_ms is not None:
            window_s = self.max_delay_ms / 1e3
            self._batcher = self._new_batcher(self._run_batch, self.max_batch, window_s, _batch_signature)
        self._exposures: ExposureLog | None = None
        if self._exposure_buffer is not None:
            flush_s = self.exposure_flush_ms / 1e3
            self._exposures = self._new_exposure_log(self._send_exposures, self._exposure_buffer, flush_s)

    def _open_channel(self) -> Any:
        """The tritonclient of this client (or ``None`` until first use)."""
        raise NotImplementedError

    def _drive(self, plan: Plan[T]) -> Any:
        """Run ``plan`` to its end: its result (sync), or an awaitable of it (asyncio)."""
        raise NotImplementedError

    def _new_channel(self, client_class: Callable[..., T]) -> T:
        """A tritonclient of ``client_class`` on one channel to ``url``; unreadable TLS files are the caller's error.

        tritonclient hands ``url`` to gRPC as the channel's target, so a ``dns:``/``ipv4:`` target
        and ``load_balancing``'s channel options reach gRPC as they are.
        """
        try:
            return client_class(self.url, channel_args=channel_args(policy=self.load_balancing), **self._tls)
        except OSError as exc:
            raise InvalidRequest(f"TLS files: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a bad url or certificate: no tritonclient error leaks
            raise from_triton(exc) from None

    def _begin_close(self) -> bool:
        """Refuse new calls from now on; False when the client was closed already."""
        if self._closed:
            return False
        self._closed = True
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> ClientClosed:
        return ClientClosed(f"the client of {self.url} is closed; calling it after close() is a bug")

    def _run_batch(self, items: list[Pending]) -> Any:
        """The micro-batcher's callback: drive one batch's plan (a coroutine on the asyncio client)."""
        return self._drive(self._batch_plan(items))

    def _send_exposures(self, events: list[TrackEvent]) -> Any:
        """The exposure log's callback: one ``track`` request of ≤ 64 events (a coroutine on the asyncio client).

        Not a public call: it runs after ``close()`` began (the final flush) and records no ``CallInfo``.
        """
        return self._drive(self._track_rows(events, self._deadline(None), CallInfo("exposures")))

    def exposure_stats(self) -> ExposureStats | None:
        """Counts of the exposure log (``log_exposures=True``): logged, sent, queued, dropped, failed,
        retried, batches; ``None`` when it is off."""
        return self._exposures.stats() if self._exposures is not None else None

    def _log_exposure(self, recs: Recommendations, user_id: str | None) -> None:
        if self._exposures is not None and user_id:
            self._exposures.add(exposure_event(recs, user_id))

    # -- timing ----------------------------------------------------------------------------------
    @property
    def last_call(self) -> CallInfo | None:
        """Timing of the latest call made from this thread (or asyncio task) on this client."""
        return self._last_call.get()

    @contextlib.contextmanager
    def _recorded(self, method: str) -> Iterator[CallInfo]:
        """Time a public call and record its ``CallInfo`` (``last_call``, ``on_call``), error or not."""
        info = CallInfo(method)
        try:
            self._check_open()
            yield info
        except AisleError as error:
            self._record(info, error)
            raise
        self._record(info)

    def _record(self, info: CallInfo, error: BaseException | None = None) -> None:
        info.finish(error)
        self._last_call.set(info)
        LOG.debug(
            "%s %.2f ms attempts=%d cache=%s rows=%d error=%s",
            info.method,
            info.elapsed_s * 1e3,
            info.attempts,
            info.cache,
            info.batch_rows,
            info.error,
        )
        if self._on_call is not None:
            try:
                self._on_call(info)
            except Exception:
                LOG.exception("on_call hook failed")  # a metrics hook must never break a call

    def _deadline(self, timeout_s: float | None) -> Deadline:
        return Deadline(validate_timeout(timeout_s) or self.timeout_s)

    # -- caches ----------------------------------------------------------------------------------
    def cache_stats(self) -> dict[str, object]:
        """``{"embed": CacheStats | None, "recommend": CacheStats | None}`` (None: cache disabled)."""
        return {
            "embed": self._embed_cache.stats() if self._embed_cache else None,
            "recommend": self._recommend_cache.stats() if self._recommend_cache else None,
        }

    def clear_caches(self) -> None:
        for cache in (self._embed_cache, self._recommend_cache):
            if cache is not None:
                cache.clear()

    def _recommend_lookup(
        self, request: RecommendRequest, use_cache: bool, info: CallInfo
    ) -> tuple[tuple[Any, ...] | None, Any]:
        """``(key, value)``: the key is None when no cache applies; value is MISSING on a miss."""
        if self._recommend_cache is None:
            return None, MISSING
        if request.user_id:  # the answer depends on the shopper's stored events: read them every time
            info.cache = "bypass"
            return None, MISSING
        if not use_cache:
            info.cache = "bypass"
            return None, MISSING
        key = recommend_key(request, self.history_bucket_s)
        value = self._recommend_cache.get(key)
        info.cache = "miss" if value is MISSING else "hit"
        return key, (MISSING if value is MISSING else copy_recommendations(value))  # type: ignore[arg-type]  # not MISSING: a cached Recommendations

    def _recommend_store(self, key: tuple[Any, ...] | None, recs: Recommendations | AisleError) -> None:
        if key is not None and self._recommend_cache is not None and not isinstance(recs, AisleError):
            self._recommend_cache.put(key, copy_recommendations(recs))

    def _embed_lookup(
        self, tower: str, texts: Sequence[str], use_cache: bool, info: CallInfo
    ) -> tuple[dict[str, Vector], list[str]]:
        """Vectors already cached (by text) and the distinct texts still to fetch, in first-seen order."""
        found: dict[str, Vector] = {}
        missing: list[str] = []
        cache = self._embed_cache if use_cache else None
        info.cache = None if self._embed_cache is None else ("bypass" if not use_cache else "hit")
        for text in dict.fromkeys(texts):
            value = cache.get(embed_key(tower, text)) if cache is not None else MISSING
            if value is MISSING:
                missing.append(text)
            else:
                found[text] = value  # type: ignore[assignment]  # not MISSING: a cached vector
        if cache is not None and missing:
            info.cache = "miss"
        return found, missing

    def _embed_store(self, tower: str, text: str, vector: Vector, use_cache: bool) -> None:
        if self._embed_cache is not None and use_cache:
            vector.flags.writeable = False  # shared by every later hit
            self._embed_cache.put(embed_key(tower, text), vector)

    # -- transport: one call, and inference with retries -----------------------------------------
    def _call(self, method: str, *args: object, deadline: Deadline, **kwargs: object) -> Plan[Any]:
        """One tritonclient call with what is left of ``deadline``; every error comes back an ``AisleError``."""
        timeout = deadline.check(method)
        try:
            return (yield Call(method, args, {**kwargs, "headers": self.headers or None, "client_timeout": timeout}))
        except AisleError:
            raise
        except Exception as exc:  # noqa: BLE001 - tritonclient, grpc and closed-channel errors all map
            if self._closed:  # close() cut the channel under this call
                raise self._closed_error() from None
            raise from_triton(exc) from None

    def _infer(self, model: str, tensors: Sequence[Tensor], deadline: Deadline, info: CallInfo) -> Plan[InferResult]:
        """``model`` on ``tensors``, retried by ``self.retry`` with backoff, never past ``deadline``."""
        inputs = as_inputs(tensors)
        attempt = 0
        while True:
            attempt += 1
            info.attempts = attempt
            try:
                result: InferResult = yield from self._call("infer", model, inputs, deadline=deadline)
                return result
            except AisleError as error:
                delay = self.retry.next_delay(error, attempt, deadline.remaining())
                if delay is None:
                    raise
                LOG.info(
                    "%s attempt %d failed (%s: %s); retrying in %.0f ms",
                    model,
                    attempt,
                    type(error).__name__,
                    error,
                    delay * 1e3,
                )
            yield Sleep(delay)

    # -- health and metadata ---------------------------------------------------------------------
    def _admin(self, method: str, *args: object, timeout_s: float | None = None, **kwargs: object) -> Plan[Any]:
        """A health or metadata call (not retried: these answer how the server is right now)."""
        self._check_open()
        return (yield from self._call(method, *args, deadline=self._deadline(timeout_s), **kwargs))

    def _answers(self, method: str, *args: object, timeout_s: float | None) -> Plan[bool]:
        """Whether ``method`` answers true; False instead of a server error (a closed client still raises)."""
        try:
            return bool((yield from self._admin(method, *args, timeout_s=timeout_s)))
        except ClientClosed:
            raise
        except AisleError:
            return False

    def _plan_is_live(self, *, timeout_s: float | None = None) -> Plan[bool]:
        """Whether the server process answers (False instead of raising when it does not)."""
        return (yield from self._answers("is_server_live", timeout_s=timeout_s))

    def _plan_is_ready(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> Plan[bool]:
        """Whether the server and ``model`` are ready to serve (False instead of raising)."""
        return (yield from self._answers("is_server_ready", timeout_s=timeout_s)) and (
            yield from self._answers("is_model_ready", model, timeout_s=timeout_s)
        )

    def _plan_wait_ready(self, timeout_s: float = 60.0, model: str = RECOMMEND_MODEL) -> Plan[None]:
        """Wait until the server and ``model`` are ready, or raise ``ServerUnavailable``."""
        deadline = Deadline(timeout_s)
        while not (yield from self._plan_is_ready(model, timeout_s=max(min(deadline.remaining(), 1.0), 0.01))):
            if deadline.remaining() <= 0:
                raise ServerUnavailable(f"{self.url}: model {model!r} not ready after {timeout_s}s")
            yield Sleep(min(0.1, max(deadline.remaining(), 0.0)))

    def _plan_inference_statistics(
        self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None
    ) -> Plan[dict[str, Any]]:
        """Triton's per-model statistics (success count, cache hits, queue/compute time)."""
        return (yield from self._json("get_inference_statistics", model, timeout_s))

    def _json(self, method: str, model: str, timeout_s: float | None) -> Plan[dict[str, Any]]:
        """A metadata call's answer in Triton's JSON form."""
        answer: dict[str, Any] = yield from self._admin(method, model, as_json=True, timeout_s=timeout_s)
        return answer

    def _plan_model_metadata(
        self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None
    ) -> Plan[dict[str, Any]]:
        """Inputs, outputs and versions of ``model`` as a dict (Triton's JSON form)."""
        return (yield from self._json("get_model_metadata", model, timeout_s))

    def _plan_model_config(
        self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None
    ) -> Plan[dict[str, Any]]:
        """``model``'s configuration as Triton's JSON form (``max_batch_size``, ``input``, ...)."""
        config: dict[str, Any] = (yield from self._json("get_model_config", model, timeout_s))["config"]
        return config

    # -- recommend -------------------------------------------------------------------------------
    def _plan_recommend(
        self,
        query: str | None = "",
        history: Iterable[HistoryItem] | None = (),
        k: int = 10,
        *,
        now: float | None = None,
        exclude_ids: Sequence[str] = (),
        allow_categories: Sequence[str] = (),
        deny_categories: Sequence[str] = (),
        user_id: str | None = None,
        timeout_s: float | None = None,
        cache: bool = True,
        explain: bool = False,
        experiment: Experiment | None = None,
        **ranking: Unpack[RankingKnobs],
    ) -> Plan[Recommendations]:
        """The ``k`` best items for a search ``query`` and/or a shopper's recent ``history``.

        ``history`` is a sequence of ``(item_id, unix_ts)`` pairs (or ``(item_id, unix_ts,
        event_type)`` triples), most recent last. With neither a query nor history, the answer is
        the popularity/freshness fallback. ``now`` pins the request's clock (reproducible replays);
        by default the server's time is used. ``exclude_ids``/``allow_categories``/``deny_categories``
        filter the results; keyword ``ranking`` options (``RankingKnobs``: ``diversity``,
        ``diversity_method``, ``recency_half_life_s``, ``search_mode``, ...) override the server's
        defaults for this call. ``cache=False`` bypasses the (opt-in) recommend cache for this call.
        ``user_id`` adds that shopper's most recent tracked events (``track``) to ``history`` on the
        server, read at the time of the call: a tracked event shows in the very next recommend (such
        calls never use the recommend cache). With the server's state store down, the call is
        answered from ``history`` alone. ``explain=True``: each ``Recommendation.explanation`` holds
        the ``ScoreComponents`` its score adds up from (off by default, and then free).
        ``experiment`` (or, for a call with ``user_id``, the client's): the arm ``user_id`` is assigned applies its
        knobs (over the caller's for the knobs it sets) and model variant, and the answer records
        ``experiment`` and ``arm``. Every answer has a new ``request_id``.
        """
        with self._recorded("recommend") as info:
            deadline = self._deadline(timeout_s)
            _check_experiment(experiment)
            if experiment is not None and user_id is None:
                raise InvalidRequest("experiment needs user_id: arms are assigned by shopper")
            request = RecommendRequest(
                query, history, k, now, exclude_ids, allow_categories, deny_categories, ranking, user_id, explain
            )
            request, assignment = self._in_arm(request, experiment)
            result = yield from self._recommend_one(request, deadline, cache, info)
            if assignment is not None:
                result.experiment, result.arm = assignment.experiment, assignment.arm
            self._log_exposure(result, request.user_id)
        return result

    def _in_arm(
        self, request: RecommendRequest, experiment: Experiment | None
    ) -> tuple[RecommendRequest, Assignment | None]:
        """``request`` as the arm of its shopper asks (the arm's knobs over the caller's, its model), and the arm.

        ``experiment`` defaults to the client's; a request without ``user_id`` stays outside it.
        """
        experiment = experiment or self.experiment
        if experiment is None or request.user_id is None:
            return request, None
        assignment = experiment.assign(request.user_id)
        knobs = {**dict(request.knobs), **assignment.knobs}  # the arm's knobs are checked by Experiment
        return dataclasses.replace(request, ranking=knobs, model=assignment.model or request.model), assignment

    def _recommend_one(
        self, request: RecommendRequest, deadline: Deadline, use_cache: bool, info: CallInfo
    ) -> Plan[Recommendations]:
        """Cache, then single flight: the first of identical concurrent misses asks, the others wait for it."""
        key, value = self._recommend_lookup(request, use_cache, info)
        if value is not MISSING:
            hit: Recommendations = value
            return hit
        if key is None:
            return (yield from self._recommend_uncached(request, deadline, info))
        future, leader = self._flights.claim(key)
        if not leader:
            info.cache = "shared"
            try:
                return copy_recommendations((yield Wait(future, deadline, "recommend")))
            except DeadlineExceeded:
                if deadline.expired():
                    raise
                return (yield from self._recommend_uncached(request, deadline, info))  # the leader had less time
        try:
            recs = yield from self._recommend_uncached(request, deadline, info)
            self._recommend_store(key, recs)
            future.set_result(recs)
            return copy_recommendations(recs)
        except BaseException as error:
            fail_waiters(future, error)
            raise
        finally:
            self._flights.release(key)

    def _recommend_uncached(
        self, request: RecommendRequest, deadline: Deadline, info: CallInfo
    ) -> Plan[Recommendations]:
        """One row from the server: through the micro-batcher when it is on, else a request of its own."""
        if self._batcher is not None:
            item = Pending(request, deadline, self._new_future(), info)
            self._batcher.submit(item)
            row: Recommendations = yield Wait(item.future, deadline, "recommend")
            return row
        (result,) = yield from self._recommend_rows([request], deadline, info)
        if isinstance(result, AisleError):
            raise result
        return result

    def _recommend_rows(
        self, requests: Sequence[RecommendRequest], deadline: Deadline, info: CallInfo
    ) -> Plan[list[Recommendations | AisleError]]:
        """One Triton request for ``requests``; on INVALID_ARGUMENT, row by row so only its owner fails."""
        info.batch_rows = len(requests)
        try:
            result = yield from self._infer(requests[0].model, batch_recommend_tensors(requests), deadline, info)
        except InvalidRequest as error:
            if len(requests) == 1:
                return [error]
            LOG.info("batch of %d rejected (%s); resending row by row", len(requests), error)
            rows = yield Gather([self._recommend_rows([r], deadline, CallInfo("recommend")) for r in requests])
            info.batch_rows = 1
            return [row[0] for row in rows]
        except AisleError as error:
            return [clone_error(error) for _ in requests]
        return recommendations_from(result)  # type: ignore[return-value]  # the plan's InferResult protocol vs tritonclient's class

    def _batch_plan(self, items: list[Pending]) -> Plan[None]:
        """A micro-batch: one request for the group, and each caller's future gets its own row or error."""
        batch_info = CallInfo("recommend")
        deadline = Deadline.latest([item.deadline for item in items])
        try:
            results = yield from self._recommend_rows([item.request for item in items], deadline, batch_info)
        except BaseException as error:
            for item in items:
                fail_waiters(item.future, error)
            raise
        for item, result in zip(items, results, strict=False):  # the server answers every row
            item.info.attempts, item.info.batch_rows = batch_info.attempts, batch_info.batch_rows
            settle(item.future, result)

    def _plan_recommend_many(
        self,
        requests: Sequence[RecommendRequest | Mapping[str, object]],
        *,
        timeout_s: float | None = None,
        cache: bool = True,
        return_exceptions: bool = False,
        experiment: Experiment | None = None,
    ) -> Plan[list[Recommendations | AisleError]]:
        """Many ``recommend`` requests in as few Triton requests as possible (≤ 64 rows each).

        Each element is a ``RecommendRequest`` or a mapping of ``recommend``'s arguments
        (``query``, ``history``, ``k``, ``now``, filters, ranking options); all are validated before
        anything is sent. Results come back in order. A row the server rejects fails alone: with
        ``return_exceptions=True`` its ``AisleError`` takes its place in the list, otherwise the
        first error is raised. The asyncio client sends the Triton requests of a large call concurrently.
        ``experiment`` (default: the client's) applies to the rows with a ``user_id``, as in ``recommend``;
        rows without one stay outside it.
        """
        with self._recorded("recommend_many") as info:
            deadline = self._deadline(timeout_s)
            if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
                raise InvalidRequest("requests must be a sequence of RecommendRequest or mappings")
            _check_experiment(experiment)
            rows, arms = [], []
            for i, r in enumerate(requests):
                row, assignment = self._in_arm(RecommendRequest.coerce(r, i), experiment)
                rows.append(row)
                arms.append(assignment)
            looked_up = [self._recommend_lookup(row, cache, CallInfo("recommend")) for row in rows]
            results: list[Any] = [value for _, value in looked_up]
            todo = [(i, rows[i]) for i, value in enumerate(results) if value is MISSING]
            groups = plan_batches(todo, self.max_batch, _many_signature)
            sends = [self._recommend_rows([row for _, row in group], deadline, info) for group in groups]
            outcomes = (yield Gather(sends)) if sends else []
            for group, outcome in zip(groups, outcomes, strict=True):
                for (i, _), result in zip(group, outcome, strict=False):
                    results[i] = result
                    self._recommend_store(looked_up[i][0], result)
            for row, assignment, result in zip(rows, arms, results, strict=True):
                if isinstance(result, AisleError):
                    continue
                if assignment is not None:
                    result.experiment, result.arm = assignment.experiment, assignment.arm
                self._log_exposure(result, row.user_id)
            if not return_exceptions:
                for result in results:
                    if isinstance(result, AisleError):
                        raise result
        return results

    # -- track -----------------------------------------------------------------------------------
    def _plan_track(
        self,
        user_id: str,
        item_id: str,
        event_type: str,
        ts: float | None = None,
        event_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Plan[Tracked]:
        """Record that ``user_id`` did ``event_type`` (``view``, ``click``, ``add_to_cart``, ``purchase``
        or the server's own list) with ``item_id`` at ``ts`` (unix seconds; default now).

        Durable once it returns: the server stored it in its state store (fsynced) or had stored an
        event with the same ``event_id`` before (``Tracked.stored`` False). ``event_id`` (default: a
        new UUID, kept across this call's retries) makes tracking idempotent: pass your own to dedupe
        resends. ``properties``: a JSON-serializable mapping, ≤ 4 KiB. A bad field raises
        ``InvalidRequest`` naming it; a state store that is down raises ``StateUnavailable``
        (retryable, retried by the ``retry`` policy within the deadline).
        """
        with self._recorded("track") as info:
            deadline = self._deadline(timeout_s)
            event = TrackEvent(user_id, item_id, event_type, ts, event_id, properties)
            (tracked,) = yield from self._track_rows([event], deadline, info)
        return tracked

    def _plan_track_many(
        self, events: Sequence[TrackEvent | Mapping[str, Any]], *, timeout_s: float | None = None
    ) -> Plan[list[Tracked]]:
        """``track`` many events (``TrackEvent`` or mappings of ``track``'s arguments), ≤ 64 per
        Triton request; all are validated before anything is sent. Results come back in order.

        Not atomic across requests: if one fails, events of other requests may be stored; calling
        again with the same events (their ids fixed in ``TrackEvent``) stores each exactly once.
        """
        with self._recorded("track_many") as info:
            deadline = self._deadline(timeout_s)
            if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence) or not events:
                raise InvalidRequest("events must be a non-empty sequence of TrackEvent or mappings")
            rows = [TrackEvent.coerce(event, i) for i, event in enumerate(events)]
            chunks = [rows[i : i + MAX_TRACK_BATCH] for i in range(0, len(rows), MAX_TRACK_BATCH)]
            info.batch_rows = len(rows)
            done = yield Gather([self._track_rows(chunk, deadline, CallInfo("track")) for chunk in chunks])
        return [tracked for chunk in done for tracked in chunk]

    def _track_rows(self, events: Sequence[TrackEvent], deadline: Deadline, info: CallInfo) -> Plan[list[Tracked]]:
        info.batch_rows = len(events)
        result = yield from self._infer(TRACK_MODEL, track_tensors(events), deadline, info)
        return tracked_from(result)

    # -- catalog ---------------------------------------------------------------------------------
    def _plan_update_items(
        self, items: Sequence[ItemUpdate | Mapping[str, Any]], *, timeout_s: float | None = None
    ) -> Plan[list[ItemChanged]]:
        """Change the live catalog: insert, change fields of, hide or delete items (``ItemUpdate`` or
        flat mappings: ``item_id``, optional ``op``, the fields), without a re-index.

        Durable once it returns (logged in the state store); every ``rerank`` instance serves the
        change within its poll interval (0.2 s by default). New items and changed titles or
        descriptions are embedded by the server's item tower. All changes are checked before
        anything is sent; they go in order, ≤ 64 per Triton request, each request all or nothing.
        A bad field raises ``InvalidRequest`` naming it; a state store that is down,
        ``StateUnavailable`` (retryable: sending the same changes again is harmless).
        """
        with self._recorded("update_items") as info:
            deadline = self._deadline(timeout_s)
            if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence) or not items:
                raise InvalidRequest("items must be a non-empty sequence of ItemUpdate or mappings")
            rows = [ItemUpdate.coerce(item, i) for i, item in enumerate(items)]
            info.batch_rows = len(rows)
            changed: list[ItemChanged] = []
            for start in range(0, len(rows), MAX_CATALOG_BATCH):  # in order: later changes may build on earlier
                chunk = rows[start : start + MAX_CATALOG_BATCH]
                result = yield from self._infer(CATALOG_MODEL, catalog_tensors(chunk), deadline, CallInfo("catalog"))
                changed.extend(changed_from(result, [u.item_id for u in chunk]))
        return changed

    # -- merchandising rules ---------------------------------------------------------------------
    def _plan_set_rules(
        self,
        rules: Mapping[str, Any] | Sequence[Mapping[str, Any]] | str,
        rule_set: str = DEFAULT_RULE_SET,
        *,
        check_only: bool = False,
        timeout_s: float | None = None,
    ) -> Plan[RuleSetInfo]:
        """Store ``rules`` (``{"rules": [...]}``, a list of rules or its JSON text; docs/merchandising.md)
        as the newest version of ``rule_set``; every ``rerank`` instance applies it within its poll
        interval (0.2 s by default). A malformed rule raises ``InvalidRequest`` naming its place
        (``rules[2].match, column 7: unknown name 'prise'``) and nothing is stored. ``check_only``:
        check without storing (version 0 in the answer)."""
        return (yield from self._rules("check" if check_only else "set", rule_set, rules, timeout_s))

    def _plan_list_rules(
        self, rule_set: str = DEFAULT_RULE_SET, *, timeout_s: float | None = None
    ) -> Plan[RuleSetInfo]:
        """``rule_set``'s newest version, its rules and the history of its versions (version 0: none)."""
        return (yield from self._rules("list", rule_set, None, timeout_s))

    def _plan_rollback_rules(
        self, rule_set: str = DEFAULT_RULE_SET, to: int | None = None, *, timeout_s: float | None = None
    ) -> Plan[RuleSetInfo]:
        """Put back version ``to`` of ``rule_set`` (default: the one before the newest; 0: no rules),
        stored as a new version, so a rollback can itself be rolled back."""
        if to is not None and (isinstance(to, bool) or not isinstance(to, int) or to < 0):
            raise InvalidRequest(f"to must be a version number >= 0, got {to!r}")
        return (yield from self._rules("rollback", rule_set, None if to is None else {"to": to}, timeout_s))

    def _rules(self, op: str, rule_set: str, rules: object, timeout_s: float | None) -> Plan[RuleSetInfo]:
        with self._recorded("rules") as info:
            deadline = self._deadline(timeout_s)
            result = yield from self._infer(RULES_MODEL, rules_tensors(op, rule_set, rules), deadline, info)
        return rule_set_from(result)

    # -- embed -----------------------------------------------------------------------------------
    def _plan_embed(
        self, texts: Sequence[str], *, tower: str = "query", timeout_s: float | None = None, cache: bool = True
    ) -> Plan[npt.NDArray[np.float32]]:
        """L2-normalized embeddings, float32 of shape (len(texts), d), from the query or item tower.

        Cached by exact text (``cache=False`` bypasses); identical texts in flight from other
        threads or tasks are fetched once.
        """
        with self._recorded("embed") as info:
            deadline = self._deadline(timeout_s)
            texts = validate_texts(texts)
            tower = validate_tower(tower)
            found, missing = self._embed_lookup(tower, texts, cache, info)
            if missing:
                found.update((yield from self._embed_fetch(tower, missing, deadline, cache, info)))
            result: npt.NDArray[np.float32] = np.stack([found[t] for t in texts]).astype(np.float32, copy=False)
        return result

    def _embed_claim(
        self, tower: str, texts: list[str], use_cache: bool
    ) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """``(lead, follow)``: texts this call fetches (with their flight's future, if any) and texts
        another call is fetching already (with the future to wait on)."""
        lead: list[tuple[str, Any]] = []
        follow: list[tuple[str, Any]] = []
        for text in texts:
            if use_cache and self._embed_cache is not None:
                future, leader = self._flights.claim(("embed", tower, text))
                (lead if leader else follow).append((text, future))
            else:
                lead.append((text, None))
        return lead, follow

    def _embed_fetch(
        self, tower: str, texts: list[str], deadline: Deadline, use_cache: bool, info: CallInfo
    ) -> Plan[dict[str, Vector]]:
        """Vectors of ``texts`` from the server (≤ 64 per request), sharing flights with other callers."""
        lead, follow = self._embed_claim(tower, texts, use_cache)
        out: dict[str, Vector] = {}
        try:
            for start in range(0, len(lead), EMBED_BATCH):
                chunk = lead[start : start + EMBED_BATCH]
                tensors = embed_tensors([text for text, _ in chunk])
                result = yield from self._infer(EMBED_MODELS[tower], tensors, deadline, info)
                for (text, future), vector in zip(chunk, embeddings_from(result), strict=False):
                    self._embed_store(tower, text, vector, use_cache)
                    out[text] = vector
                    if future is not None:
                        future.set_result(vector)
        except BaseException as error:
            for _, future in lead:
                if future is not None:
                    fail_waiters(future, error)
            raise
        finally:
            for text, future in lead:
                if future is not None:
                    self._flights.release(("embed", tower, text))
        for text, future in follow:
            info.cache = "shared"
            out[text] = yield Wait(future, deadline, "embed")
        return out
