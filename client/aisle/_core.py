"""What ``RecClient`` and ``AsyncRecClient`` share beyond the transport: configuration, caches,
cache lookups, batch outcomes, timing hooks. The two clients differ only where one awaits.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions

from .cache import MISSING, Flights, ResultCache, embed_key, recommend_key
from .errors import AisleError, InvalidRequest
from .policy import CallInfo, Deadline, RetryPolicy
from .requests import MAX_BATCH, RecommendRequest, Tensor, validate_timeout
from .responses import copy_recommendations
from .types import Recommendations

LOG = logging.getLogger("aisle")

RECOMMEND_MODEL = "recommend"
EMBED_MODELS = {"query": "embed_query", "item": "embed_item"}


def channel_args(reconnect_backoff_ms: tuple[int, int] = (100, 1000)) -> list[tuple[str, object]]:
    """tritonclient's default channel options plus a short reconnect backoff.

    gRPC's default reconnect backoff grows to 120 s; after a server restart a channel could sit in
    TRANSIENT_FAILURE, failing calls fast, long after the server is back. Capping it at a second
    makes the one channel reconnect promptly, so retries find the restarted server.
    """
    keepalive = KeepAliveOptions()
    initial, maximum = reconnect_backoff_ms
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", initial),
        ("grpc.min_reconnect_backoff_ms", initial),
        ("grpc.max_reconnect_backoff_ms", maximum),
    ]


def clone_error(error: AisleError) -> AisleError:
    """A fresh exception per caller: one instance raised in many threads would share a traceback."""
    clone = type(error)(str(error), error.code)
    clone.__cause__ = error.__cause__
    return clone


def _batch_signature(item: object) -> tuple:
    return getattr(item, "request").batch_signature


class ClientCore:
    """Configuration and the await-free parts of a client."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        retry: RetryPolicy | None,
        wait_ready_s: float | None,
        embed_cache_size: int,
        embed_cache_ttl_s: float,
        recommend_cache_size: int,
        recommend_cache_ttl_s: float,
        history_bucket_s: float,
        max_delay_ms: float | None,
        max_batch: int,
        ssl: bool,
        root_certificates: str | None,
        private_key: str | None,
        certificate_chain: str | None,
        headers: Mapping[str, str] | None,
        on_call: Callable[[CallInfo], None] | None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidRequest(f"url must be a non-empty 'host:port' str, got {url!r}")
        self.url = url
        self.timeout_s = validate_timeout(timeout_s)
        if self.timeout_s is None:
            raise InvalidRequest("timeout_s must be > 0, got None")
        self.retry = retry or RetryPolicy(max_attempts=1)
        self.wait_ready_s = validate_timeout(wait_ready_s)
        if not (isinstance(history_bucket_s, (int, float)) and math.isfinite(history_bucket_s) and history_bucket_s > 0):
            raise InvalidRequest(f"history_bucket_s must be > 0, got {history_bucket_s!r}")
        self.history_bucket_s = float(history_bucket_s)
        self._embed_cache: ResultCache[np.ndarray] | None = (
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
        if (root_certificates or private_key or certificate_chain) and not ssl:
            ssl = True  # certificates only make sense over TLS
        self._tls = dict(
            ssl=ssl, root_certificates=root_certificates, private_key=private_key, certificate_chain=certificate_chain
        )
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._on_call = on_call
        self._last_call: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
            f"aisle_last_call_{id(self)}", default=None
        )

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
            info.method, info.elapsed_s * 1e3, info.attempts, info.cache, info.batch_rows, info.error,
        )
        if self._on_call is not None:
            try:
                self._on_call(info)
            except Exception:  # noqa: BLE001 - a metrics hook must never break a call
                LOG.exception("on_call hook failed")

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

    def _recommend_lookup(self, request: RecommendRequest, use_cache: bool, info: CallInfo) -> tuple[tuple | None, object]:
        """``(key, value)``: the key is None when no cache applies; value is MISSING on a miss."""
        if self._recommend_cache is None:
            return None, MISSING
        if not use_cache:
            info.cache = "bypass"
            return None, MISSING
        key = recommend_key(request, self.history_bucket_s)
        value = self._recommend_cache.get(key)
        info.cache = "miss" if value is MISSING else "hit"
        return key, (MISSING if value is MISSING else copy_recommendations(value))  # type: ignore[arg-type]

    def _embed_lookup(
        self, tower: str, texts: Sequence[str], use_cache: bool, info: CallInfo
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Vectors already cached (by text) and the distinct texts still to fetch, in first-seen order."""
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        cache = self._embed_cache if use_cache else None
        info.cache = None if self._embed_cache is None else ("bypass" if not use_cache else "hit")
        for text in dict.fromkeys(texts):
            value = cache.get(embed_key(tower, text)) if cache is not None else MISSING
            if value is MISSING:
                missing.append(text)
            else:
                found[text] = value  # type: ignore[assignment]
        if cache is not None and missing:
            info.cache = "miss"
        return found, missing

    def _embed_store(self, tower: str, text: str, vector: np.ndarray, use_cache: bool) -> None:
        if self._embed_cache is not None and use_cache:
            vector.flags.writeable = False  # shared by every later hit
            self._embed_cache.put(embed_key(tower, text), vector)

    @staticmethod
    def _embed_result(texts: Sequence[str], vectors: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.stack([vectors[t] for t in texts]).astype(np.float32, copy=False)

    def _group_key(self) -> Callable[[object], tuple]:
        return _batch_signature


def as_inputs(tensors: Sequence[Tensor], infer_input: type) -> list:
    """tritonclient ``InferInput``s (sync and aio share the class) from our tensors."""
    inputs = []
    for tensor in tensors:
        item = infer_input(tensor.name, list(tensor.array.shape), tensor.datatype)
        item.set_data_from_numpy(tensor.array)
        inputs.append(item)
    return inputs
