"""``RecClient``: the synchronous Aisle SDK over Triton's gRPC API.

One gRPC channel per client, reused by every call and safe to share between threads (gRPC
channels and stubs are thread-safe; everything else the client mutates is behind a lock). Every
call has a deadline (``timeout_s``) that bounds micro-batching, retries and backoff together;
arguments are validated before anything goes on the wire; failures surface as ``aisle.errors``
exceptions only.
"""
from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Callable, Iterable, Mapping, Sequence, Unpack

import numpy as np
import tritonclient.grpc as grpcclient

from ._core import EMBED_MODELS, RECOMMEND_MODEL, ClientCore, as_inputs, channel_args, clone_error
from .batching import Pending, ThreadBatcher, plan_batches
from .cache import MISSING as _MISSING
from .cache import Flights
from .errors import AisleError, DeadlineExceeded, InvalidRequest, ServerUnavailable, from_triton
from .policy import CallInfo, Deadline, RetryPolicy
from .requests import (
    MAX_BATCH,
    HistoryItem,
    RankingKnobs,
    RecommendRequest,
    Tensor,
    batch_recommend_tensors,
    embed_tensors,
    validate_texts,
    validate_tower,
)
from .responses import copy_recommendations, parse_recommendations, split_recommendations
from .types import Recommendations

LOG = logging.getLogger("aisle")

__all__ = ["RecClient", "parse_recommendations", "RECOMMEND_MODEL", "EMBED_MODELS"]
EMBED_BATCH = MAX_BATCH  # the embed ensembles' max_batch_size


def _wait(future: concurrent.futures.Future, deadline: Deadline, what: str) -> object:
    try:
        return future.result(timeout=max(deadline.remaining(), 0.0))
    except concurrent.futures.TimeoutError:
        raise DeadlineExceeded(f"{what}: deadline of {deadline.timeout_s:.3f}s exceeded") from None


class RecClient(ClientCore):
    """Recommendations and embeddings from an Aisle deployment (thread-safe; one channel).

    >>> with RecClient("127.0.0.1:8001") as client:  # doctest: +SKIP
    ...     recs = client.recommend(query="red running shoes", k=10)

    ``timeout_s``: default deadline of a call. ``retry``: ``RetryPolicy`` for retryable errors
    (``None``: no retries). ``wait_ready_s``: block in the constructor until the server and
    ``recommend`` are ready. ``embed_cache_size``/``embed_cache_ttl_s``: LRU+TTL cache of embeddings
    by text (0 disables). ``recommend_cache_size`` (opt-in, 0 = off), ``recommend_cache_ttl_s``,
    ``history_bucket_s``: cache of recommendations by normalized request. ``max_delay_ms``: turn on
    micro-batching of concurrent ``recommend`` calls (window length; ``None`` = off), up to
    ``max_batch`` rows per Triton request (also ``recommend_many``'s group size). For
    micro-batching pick about half the concurrent callers (16 for 32): two batches in flight let
    the server's stages overlap — 3.1x single calls' throughput vs 2.6x at 64
    (``perf/bench_sdk.py --workload feed``). ``ssl``/``root_certificates``/``private_key``/``certificate_chain``: TLS
    (file paths). ``headers``: sent with every call (e.g. Triton's restricted-protocol key).
    ``on_call``: called with a ``CallInfo`` after every call.
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        timeout_s: float = 2.0,
        retry: RetryPolicy | None = RetryPolicy(),
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
    ) -> None:
        super().__init__(
            url, timeout_s=timeout_s, retry=retry, wait_ready_s=wait_ready_s, embed_cache_size=embed_cache_size,
            embed_cache_ttl_s=embed_cache_ttl_s, recommend_cache_size=recommend_cache_size,
            recommend_cache_ttl_s=recommend_cache_ttl_s, history_bucket_s=history_bucket_s,
            max_delay_ms=max_delay_ms, max_batch=max_batch, ssl=ssl, root_certificates=root_certificates,
            private_key=private_key, certificate_chain=certificate_chain, headers=headers, on_call=on_call,
        )
        try:
            self._triton = grpcclient.InferenceServerClient(url, channel_args=channel_args(), **self._tls)
        except Exception as exc:  # noqa: BLE001 - bad certificate paths, bad url
            raise from_triton(exc) if not isinstance(exc, OSError) else InvalidRequest(f"TLS files: {exc}") from None
        self._flights: Flights = Flights(concurrent.futures.Future)
        self._batcher: ThreadBatcher | None = None
        if max_delay_ms is not None:
            self._batcher = ThreadBatcher(self._run_batch, max_batch, max_delay_ms / 1e3, self._group_key())
        self._closed = False
        if self.wait_ready_s is not None:
            try:
                self.wait_ready(self.wait_ready_s)
            except BaseException:
                self.close()
                raise

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the micro-batcher (in-flight batches finish) and close the channel."""
        if self._closed:
            return
        self._closed = True
        if self._batcher is not None:
            self._batcher.close()
        self._triton.close()

    def __enter__(self) -> "RecClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- health and metadata ---------------------------------------------------------------------
    def _admin(self, method: str, *args: object, timeout_s: float | None = None, **kwargs: object) -> object:
        deadline = self._deadline(timeout_s)
        try:
            return getattr(self._triton, method)(
                *args, headers=self.headers or None, client_timeout=deadline.check(method), **kwargs
            )
        except AisleError:
            raise
        except Exception as exc:  # noqa: BLE001 - no tritonclient exception leaks
            raise from_triton(exc) from None

    def is_live(self, *, timeout_s: float | None = None) -> bool:
        """Whether the server process answers (False instead of raising when it does not)."""
        try:
            return bool(self._admin("is_server_live", timeout_s=timeout_s))
        except AisleError:
            return False

    def is_ready(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> bool:
        """Whether the server and ``model`` are ready to serve (False instead of raising)."""
        try:
            return bool(self._admin("is_server_ready", timeout_s=timeout_s)) and bool(
                self._admin("is_model_ready", model, timeout_s=timeout_s)
            )
        except AisleError:
            return False

    def wait_ready(self, timeout_s: float = 60.0, model: str = RECOMMEND_MODEL) -> None:
        """Block until the server and ``model`` are ready, or raise ``ServerUnavailable``."""
        deadline = Deadline(timeout_s)
        while not self.is_ready(model, timeout_s=max(min(deadline.remaining(), 1.0), 0.01)):
            if deadline.remaining() <= 0:
                raise ServerUnavailable(f"{self.url}: model {model!r} not ready after {timeout_s}s")
            time.sleep(min(0.1, max(deadline.remaining(), 0.0)))

    def model_metadata(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> dict:
        """Inputs, outputs and versions of ``model`` as a dict (Triton's JSON form)."""
        return self._admin("get_model_metadata", model, as_json=True, timeout_s=timeout_s)  # type: ignore[return-value]

    def model_config(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> dict:
        return self._admin("get_model_config", model, as_json=True, timeout_s=timeout_s)["config"]  # type: ignore[index]

    def inference_statistics(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> dict:
        """Triton's per-model statistics (success count, cache hits, queue/compute time)."""
        return self._admin("get_inference_statistics", model, as_json=True, timeout_s=timeout_s)  # type: ignore[return-value]

    # -- transport with retries ------------------------------------------------------------------
    def _infer(self, model: str, tensors: Sequence[Tensor], deadline: Deadline, info: CallInfo) -> grpcclient.InferResult:
        inputs = as_inputs(tensors, grpcclient.InferInput)
        attempt = 0
        while True:
            attempt += 1
            info.attempts = attempt
            left = deadline.check(model)
            try:
                return self._triton.infer(model, inputs, client_timeout=left, headers=self.headers or None)
            except Exception as exc:  # noqa: BLE001 - tritonclient/grpc/closed-channel errors all map
                error = from_triton(exc)
            delay = self.retry.next_delay(error, attempt, deadline.remaining())
            if delay is None:
                raise error
            LOG.info("%s attempt %d failed (%s: %s); retrying in %.0f ms",
                     model, attempt, type(error).__name__, error, delay * 1e3)
            time.sleep(delay)

    def _recommend_rows(
        self, requests: Sequence[RecommendRequest], deadline: Deadline, info: CallInfo
    ) -> list[Recommendations | AisleError]:
        """One Triton request for ``requests``; on INVALID_ARGUMENT, row by row so only its owner fails."""
        info.batch_rows = len(requests)
        try:
            result = self._infer(RECOMMEND_MODEL, batch_recommend_tensors(requests), deadline, info)
        except InvalidRequest as error:
            if len(requests) == 1:
                return [error]
            LOG.info("batch of %d rejected (%s); resending row by row", len(requests), error)
            out: list[Recommendations | AisleError] = []
            for request in requests:
                out.extend(self._recommend_rows([request], deadline, CallInfo("recommend")))
            info.batch_rows = 1
            return out
        except AisleError as error:
            return [clone_error(error) for _ in requests]
        return split_recommendations(
            result.as_numpy("ITEM_IDS"), result.as_numpy("SCORES"), result.as_numpy("UNKNOWN_HISTORY")
        )

    def _run_batch(self, items: list[Pending]) -> None:
        """Micro-batcher worker: one request for the group, each caller gets its own row or error."""
        batch_info = CallInfo("recommend")
        deadline = Deadline.latest([item.deadline for item in items])
        results = self._recommend_rows([item.request for item in items], deadline, batch_info)
        for item, result in zip(items, results):
            item.info.attempts, item.info.batch_rows = batch_info.attempts, batch_info.batch_rows
            if not item.future.done():
                (item.future.set_exception if isinstance(result, BaseException) else item.future.set_result)(result)

    # -- recommend -------------------------------------------------------------------------------
    def recommend(
        self,
        query: str | None = "",
        history: Iterable[HistoryItem] | None = (),
        k: int = 10,
        *,
        now: float | None = None,
        exclude_ids: Sequence[str] = (),
        allow_categories: Sequence[str] = (),
        deny_categories: Sequence[str] = (),
        timeout_s: float | None = None,
        cache: bool = True,
        **ranking: Unpack[RankingKnobs],
    ) -> Recommendations:
        """The ``k`` best items for a search ``query`` and/or a shopper's recent ``history``.

        ``history`` is a sequence of ``(item_id, unix_ts)`` pairs, most recent last. With neither a
        query nor history, the answer is the popularity/freshness fallback. ``now`` pins the
        request's clock (reproducible replays); by default the server's time is used.
        ``exclude_ids``/``allow_categories``/``deny_categories`` filter the results; keyword
        ``ranking`` options (``RankingKnobs``: ``diversity``, ``diversity_method``,
        ``recency_half_life_s``, ``search_mode``, ...) override the server's defaults for this call.
        ``cache=False`` bypasses the (opt-in) recommend cache for this call.
        """
        with self._recorded("recommend") as info:
            deadline = self._deadline(timeout_s)
            request = RecommendRequest(query, history, k, now, exclude_ids, allow_categories, deny_categories, ranking)
            result = self._recommend_one(request, deadline, cache, info)
        return result

    def _recommend_one(self, request: RecommendRequest, deadline: Deadline, use_cache: bool, info: CallInfo) -> Recommendations:
        key, value = self._recommend_lookup(request, use_cache, info)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        if key is None:
            return self._recommend_uncached(request, deadline, info)
        future, leader = self._flights.claim(key)
        if not leader:
            info.cache = "shared"
            try:
                return copy_recommendations(_wait(future, deadline, "recommend"))  # type: ignore[arg-type]
            except DeadlineExceeded:
                if deadline.expired():
                    raise
                return self._recommend_uncached(request, deadline, info)  # the leader had less time than us
        try:
            recs = self._recommend_uncached(request, deadline, info)
            self._recommend_cache.put(key, copy_recommendations(recs))  # type: ignore[union-attr]
            future.set_result(recs)
            return copy_recommendations(recs)
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            self._flights.release(key)

    def _recommend_uncached(self, request: RecommendRequest, deadline: Deadline, info: CallInfo) -> Recommendations:
        if self._batcher is not None:
            item = Pending(request, deadline, concurrent.futures.Future(), info)
            self._batcher.submit(item)
            return _wait(item.future, deadline, "recommend")  # type: ignore[return-value]
        (result,) = self._recommend_rows([request], deadline, info)
        if isinstance(result, AisleError):
            raise result
        return result

    def recommend_many(
        self,
        requests: Sequence[RecommendRequest | Mapping[str, object]],
        *,
        timeout_s: float | None = None,
        cache: bool = True,
        return_exceptions: bool = False,
    ) -> list[Recommendations | AisleError]:
        """Many ``recommend`` requests in as few Triton requests as possible (≤ 64 rows each).

        Each element is a ``RecommendRequest`` or a mapping of ``recommend``'s arguments
        (``query``, ``history``, ``k``, ``now``); all are validated before anything is sent. Results
        come back in order. A row the server rejects fails alone: with ``return_exceptions=True``
        its ``AisleError`` takes its place in the list, otherwise the first error is raised.
        """
        with self._recorded("recommend_many") as info:
            deadline = self._deadline(timeout_s)
            if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
                raise InvalidRequest("requests must be a sequence of RecommendRequest or mappings")
            rows = [RecommendRequest.coerce(r, i) for i, r in enumerate(requests)]
            results: list = [None] * len(rows)
            keys: list = [None] * len(rows)
            todo = []
            for i, row in enumerate(rows):
                keys[i], value = self._recommend_lookup(row, cache, CallInfo("recommend"))
                if value is _MISSING:
                    todo.append(i)
                else:
                    results[i] = value
            for group in _plan([(i, rows[i]) for i in todo], self.max_batch):
                outcome = self._recommend_rows([row for _, row in group], deadline, info)
                for (i, _), result in zip(group, outcome):
                    results[i] = result
                    if keys[i] is not None and not isinstance(result, AisleError):
                        self._recommend_cache.put(keys[i], copy_recommendations(result))  # type: ignore[union-attr]
            if not return_exceptions:
                for result in results:
                    if isinstance(result, AisleError):
                        raise result
        return results

    # -- embed -----------------------------------------------------------------------------------
    def embed(
        self, texts: Sequence[str], *, tower: str = "query", timeout_s: float | None = None, cache: bool = True
    ) -> np.ndarray:
        """L2-normalized embeddings, float32 of shape (len(texts), d), from the query or item tower.

        Cached by exact text (``cache=False`` bypasses); identical texts in flight from other
        threads are fetched once.
        """
        with self._recorded("embed") as info:
            deadline = self._deadline(timeout_s)
            texts = validate_texts(texts)
            tower = validate_tower(tower)
            found, missing = self._embed_lookup(tower, texts, cache, info)
            if missing:
                found.update(self._embed_fetch(tower, missing, deadline, cache, info))
            result = self._embed_result(texts, found)
        return result

    def _embed_fetch(
        self, tower: str, texts: list[str], deadline: Deadline, use_cache: bool, info: CallInfo
    ) -> dict[str, np.ndarray]:
        lead: list[tuple[str, concurrent.futures.Future | None]] = []
        follow: list[tuple[str, concurrent.futures.Future]] = []
        for text in texts:
            if use_cache and self._embed_cache is not None:
                future, leader = self._flights.claim(("embed", tower, text))
                (lead if leader else follow).append((text, future))  # type: ignore[arg-type]
            else:
                lead.append((text, None))
        out: dict[str, np.ndarray] = {}
        try:
            for start in range(0, len(lead), EMBED_BATCH):
                chunk = lead[start : start + EMBED_BATCH]
                result = self._infer(EMBED_MODELS[tower], embed_tensors([t for t, _ in chunk]), deadline, info)
                for (text, future), vector in zip(chunk, result.as_numpy("EMBEDDING")):
                    vector = np.array(vector, dtype=np.float32)
                    self._embed_store(tower, text, vector, use_cache)
                    out[text] = vector
                    if future is not None:
                        future.set_result(vector)
        except BaseException as error:
            for _, future in lead:
                if future is not None and not future.done():
                    future.set_exception(error)
            raise
        finally:
            for text, future in lead:
                if future is not None:
                    self._flights.release(("embed", tower, text))
        for text, future in follow:
            info.cache = "shared"
            out[text] = _wait(future, deadline, "embed")  # type: ignore[assignment]
        return out


def _plan(indexed: list[tuple[int, RecommendRequest]], max_batch: int) -> list[list[tuple[int, RecommendRequest]]]:
    """``recommend_many``'s rows split into requests (same NOW-presence, ≤ max_batch rows)."""
    return plan_batches(indexed, max_batch, lambda pair: pair[1].batch_signature)
