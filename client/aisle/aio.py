"""``AsyncRecClient``: the asyncio Aisle SDK over ``tritonclient.grpc.aio``.

The same methods, arguments, caches, micro-batching, retries and errors as ``RecClient`` — the
shared logic lives in ``_core``, ``requests``, ``responses``, ``cache``, ``policy`` and
``batching``; this module is the await-ing shell. One client belongs to one event loop; the gRPC
channel is opened on first use inside that loop.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable, Mapping, Sequence, Unpack

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from ._core import EMBED_MODELS, RECOMMEND_MODEL, ClientCore, as_inputs, channel_args, clone_error
from .batching import AsyncBatcher, Pending, plan_batches
from .cache import MISSING, Flights
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
from .responses import copy_recommendations, split_recommendations
from .types import Recommendations

LOG = logging.getLogger("aisle")


async def _wait(future: asyncio.Future, deadline: Deadline, what: str) -> Any:
    """Await a shared future for at most the caller's remaining time (never cancelling it for others)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline.remaining(), 0.0))
    except (asyncio.TimeoutError, TimeoutError):
        raise DeadlineExceeded(f"{what}: deadline of {deadline.timeout_s:.3f}s exceeded") from None


def _silence(future: asyncio.Future) -> None:
    """Mark a shared future's exception as retrieved (its followers may all have gone)."""
    if future.done() and not future.cancelled():
        future.exception()


class AsyncRecClient(ClientCore):
    """``RecClient``'s asyncio twin; use ``async with AsyncRecClient(url) as client: ...``.

    Takes the same keyword arguments as ``RecClient``; ``wait_ready_s`` is honoured by
    ``async with`` (or ``await client.connect()``).
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
        self._triton: aioclient.InferenceServerClient | None = None
        self._flights: Flights = Flights(lambda: asyncio.get_running_loop().create_future())
        self._batcher: AsyncBatcher | None = None
        if max_delay_ms is not None:
            self._batcher = AsyncBatcher(self._run_batch, max_batch, max_delay_ms / 1e3, self._group_key())
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    def _client(self) -> aioclient.InferenceServerClient:
        if self._closed:
            raise ServerUnavailable("client is closed")
        if self._triton is None:
            try:
                self._triton = aioclient.InferenceServerClient(self.url, channel_args=channel_args(), **self._tls)
            except OSError as exc:
                raise InvalidRequest(f"TLS files: {exc}") from None
            except Exception as exc:  # noqa: BLE001
                raise from_triton(exc) from None
        return self._triton

    async def connect(self) -> "AsyncRecClient":
        """Open the channel now and, with ``wait_ready_s``, wait until the server is ready."""
        self._client()
        if self.wait_ready_s is not None:
            await self.wait_ready(self.wait_ready_s)
        return self

    async def close(self) -> None:
        if self._closed:
            return
        if self._batcher is not None:
            await self._batcher.close()
        self._closed = True
        if self._triton is not None:
            await self._triton.close()

    async def __aenter__(self) -> "AsyncRecClient":
        try:
            return await self.connect()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- health and metadata ---------------------------------------------------------------------
    async def _admin(self, method: str, *args: object, timeout_s: float | None = None, **kwargs: object) -> Any:
        deadline = self._deadline(timeout_s)
        try:
            return await getattr(self._client(), method)(
                *args, headers=self.headers or None, client_timeout=deadline.check(method), **kwargs
            )
        except AisleError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise from_triton(exc) from None

    async def is_live(self, *, timeout_s: float | None = None) -> bool:
        try:
            return bool(await self._admin("is_server_live", timeout_s=timeout_s))
        except AisleError:
            return False

    async def is_ready(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> bool:
        try:
            return bool(await self._admin("is_server_ready", timeout_s=timeout_s)) and bool(
                await self._admin("is_model_ready", model, timeout_s=timeout_s)
            )
        except AisleError:
            return False

    async def wait_ready(self, timeout_s: float = 60.0, model: str = RECOMMEND_MODEL) -> None:
        deadline = Deadline(timeout_s)
        while not await self.is_ready(model, timeout_s=max(min(deadline.remaining(), 1.0), 0.01)):
            if deadline.remaining() <= 0:
                raise ServerUnavailable(f"{self.url}: model {model!r} not ready after {timeout_s}s")
            await asyncio.sleep(min(0.1, max(deadline.remaining(), 0.0)))

    async def model_metadata(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> dict:
        return await self._admin("get_model_metadata", model, as_json=True, timeout_s=timeout_s)

    async def model_config(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> dict:
        return (await self._admin("get_model_config", model, as_json=True, timeout_s=timeout_s))["config"]

    async def inference_statistics(self, model: str = RECOMMEND_MODEL, *, timeout_s: float | None = None) -> dict:
        return await self._admin("get_inference_statistics", model, as_json=True, timeout_s=timeout_s)

    # -- transport with retries ------------------------------------------------------------------
    async def _infer(self, model: str, tensors: Sequence[Tensor], deadline: Deadline, info: CallInfo) -> Any:
        inputs = as_inputs(tensors, grpcclient.InferInput)
        attempt = 0
        while True:
            attempt += 1
            info.attempts = attempt
            left = deadline.check(model)
            try:
                return await self._client().infer(model, inputs, client_timeout=left, headers=self.headers or None)
            except AisleError:
                raise
            except Exception as exc:  # noqa: BLE001
                error = from_triton(exc)
            delay = self.retry.next_delay(error, attempt, deadline.remaining())
            if delay is None:
                raise error
            LOG.info("%s attempt %d failed (%s: %s); retrying in %.0f ms",
                     model, attempt, type(error).__name__, error, delay * 1e3)
            await asyncio.sleep(delay)

    async def _recommend_rows(
        self, requests: Sequence[RecommendRequest], deadline: Deadline, info: CallInfo
    ) -> list[Recommendations | AisleError]:
        info.batch_rows = len(requests)
        try:
            result = await self._infer(RECOMMEND_MODEL, batch_recommend_tensors(requests), deadline, info)
        except InvalidRequest as error:
            if len(requests) == 1:
                return [error]
            LOG.info("batch of %d rejected (%s); resending row by row", len(requests), error)
            rows = await asyncio.gather(*(self._recommend_rows([r], deadline, CallInfo("recommend")) for r in requests))
            info.batch_rows = 1
            return [row[0] for row in rows]
        except AisleError as error:
            return [clone_error(error) for _ in requests]
        return split_recommendations(
            result.as_numpy("ITEM_IDS"), result.as_numpy("SCORES"), result.as_numpy("UNKNOWN_HISTORY")
        )

    async def _run_batch(self, items: list[Pending]) -> None:
        batch_info = CallInfo("recommend")
        deadline = Deadline.latest([item.deadline for item in items])
        results = await self._recommend_rows([item.request for item in items], deadline, batch_info)
        for item, result in zip(items, results):
            item.info.attempts, item.info.batch_rows = batch_info.attempts, batch_info.batch_rows
            if not item.future.done():
                (item.future.set_exception if isinstance(result, BaseException) else item.future.set_result)(result)

    # -- recommend -------------------------------------------------------------------------------
    async def recommend(
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
        """See ``RecClient.recommend``."""
        with self._recorded("recommend") as info:
            deadline = self._deadline(timeout_s)
            request = RecommendRequest(query, history, k, now, exclude_ids, allow_categories, deny_categories, ranking)
            result = await self._recommend_one(request, deadline, cache, info)
        return result

    async def _recommend_one(
        self, request: RecommendRequest, deadline: Deadline, use_cache: bool, info: CallInfo
    ) -> Recommendations:
        key, value = self._recommend_lookup(request, use_cache, info)
        if value is not MISSING:
            return value  # type: ignore[return-value]
        if key is None:
            return await self._recommend_uncached(request, deadline, info)
        future, leader = self._flights.claim(key)
        if not leader:
            info.cache = "shared"
            try:
                return copy_recommendations(await _wait(future, deadline, "recommend"))
            except DeadlineExceeded:
                if deadline.expired():
                    raise
                return await self._recommend_uncached(request, deadline, info)
        try:
            recs = await self._recommend_uncached(request, deadline, info)
            self._recommend_cache.put(key, copy_recommendations(recs))  # type: ignore[union-attr]
            future.set_result(recs)
            return copy_recommendations(recs)
        except BaseException as error:
            future.set_exception(error if isinstance(error, Exception) else ServerUnavailable("call cancelled"))
            _silence(future)
            raise
        finally:
            self._flights.release(key)

    async def _recommend_uncached(self, request: RecommendRequest, deadline: Deadline, info: CallInfo) -> Recommendations:
        if self._batcher is not None:
            self._client()
            item = Pending(request, deadline, asyncio.get_running_loop().create_future(), info)
            self._batcher.submit(item)
            return await _wait(item.future, deadline, "recommend")
        (result,) = await self._recommend_rows([request], deadline, info)
        if isinstance(result, AisleError):
            raise result
        return result

    async def recommend_many(
        self,
        requests: Sequence[RecommendRequest | Mapping[str, object]],
        *,
        timeout_s: float | None = None,
        cache: bool = True,
        return_exceptions: bool = False,
    ) -> list[Recommendations | AisleError]:
        """See ``RecClient.recommend_many``; the Triton requests of a large call go out concurrently."""
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
                if value is MISSING:
                    todo.append(i)
                else:
                    results[i] = value
            groups = plan_batches([(i, rows[i]) for i in todo], self.max_batch, lambda pair: pair[1].batch_signature)
            outcomes = await asyncio.gather(
                *(self._recommend_rows([row for _, row in group], deadline, info) for group in groups)
            )
            for group, outcome in zip(groups, outcomes):
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
    async def embed(
        self, texts: Sequence[str], *, tower: str = "query", timeout_s: float | None = None, cache: bool = True
    ) -> np.ndarray:
        """See ``RecClient.embed``."""
        with self._recorded("embed") as info:
            deadline = self._deadline(timeout_s)
            texts = validate_texts(texts)
            tower = validate_tower(tower)
            found, missing = self._embed_lookup(tower, texts, cache, info)
            if missing:
                found.update(await self._embed_fetch(tower, missing, deadline, cache, info))
            result = self._embed_result(texts, found)
        return result

    async def _embed_fetch(
        self, tower: str, texts: list[str], deadline: Deadline, use_cache: bool, info: CallInfo
    ) -> dict[str, np.ndarray]:
        lead: list[tuple[str, asyncio.Future | None]] = []
        follow: list[tuple[str, asyncio.Future]] = []
        for text in texts:
            if use_cache and self._embed_cache is not None:
                future, leader = self._flights.claim(("embed", tower, text))
                (lead if leader else follow).append((text, future))
            else:
                lead.append((text, None))
        out: dict[str, np.ndarray] = {}
        try:
            for start in range(0, len(lead), MAX_BATCH):
                chunk = lead[start : start + MAX_BATCH]
                result = await self._infer(EMBED_MODELS[tower], embed_tensors([t for t, _ in chunk]), deadline, info)
                for (text, future), vector in zip(chunk, result.as_numpy("EMBEDDING")):
                    vector = np.array(vector, dtype=np.float32)
                    self._embed_store(tower, text, vector, use_cache)
                    out[text] = vector
                    if future is not None:
                        future.set_result(vector)
        except BaseException as error:
            for _, future in lead:
                if future is not None and not future.done():
                    future.set_exception(error if isinstance(error, Exception) else ServerUnavailable("call cancelled"))
                    _silence(future)
            raise
        finally:
            for text, future in lead:
                if future is not None:
                    self._flights.release(("embed", tower, text))
        for text, future in follow:
            info.cache = "shared"
            out[text] = await _wait(future, deadline, "embed")
        return out
