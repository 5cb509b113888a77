"""``RecClient``: the synchronous Aisle SDK over Triton's gRPC API.

One gRPC channel per client, reused by every call; safe to share between threads. Every call has
an explicit deadline (``timeout_s``, default from the constructor), arguments are validated before
anything goes on the wire, and failures surface as ``aisle.errors`` exceptions only.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .errors import InvalidRequest, ServerUnavailable, from_triton
from .requests import HistoryItem, Tensor, embed_tensors, recommend_tensors, validate_timeout
from .types import Recommendation, Recommendations

LOG = logging.getLogger("aisle")

RECOMMEND_MODEL = "recommend"
EMBED_MODELS = {"query": "embed_query", "item": "embed_item"}
EMBED_BATCH = 64  # the embed ensembles' max_batch_size


def _inputs(tensors: Sequence[Tensor]) -> list[grpcclient.InferInput]:
    inputs = []
    for tensor in tensors:
        infer_input = grpcclient.InferInput(tensor.name, list(tensor.array.shape), tensor.datatype)
        infer_input.set_data_from_numpy(tensor.array)
        inputs.append(infer_input)
    return inputs


def parse_recommendations(ids: np.ndarray, scores: np.ndarray, unknown: np.ndarray | None) -> Recommendations:
    """Row 0 of a ``recommend`` answer; empty ids are padding and are dropped."""
    items = [
        Recommendation(item_id=raw.decode("utf-8"), score=float(score))
        for raw, score in zip(ids[0], scores[0])
        if raw
    ]
    return Recommendations(items, unknown_history=int(unknown[0][0]) if unknown is not None else 0)


class RecClient:
    """Recommendations and embeddings from an Aisle deployment.

    >>> with RecClient("127.0.0.1:8001") as client:  # doctest: +SKIP
    ...     recs = client.recommend(query="red running shoes", k=10)
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        timeout_s: float = 2.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = validate_timeout(timeout_s)
        self.headers = dict(headers or {})
        try:
            self._client = grpcclient.InferenceServerClient(
                url,
                ssl=ssl,
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
        except InferenceServerException as exc:
            raise from_triton(exc) from None

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RecClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def is_ready(self, model: str = RECOMMEND_MODEL) -> bool:
        try:
            return bool(self._client.is_server_ready(headers=self.headers)) and bool(
                self._client.is_model_ready(model, headers=self.headers)
            )
        except InferenceServerException:
            return False

    def wait_ready(self, timeout_s: float = 60.0, model: str = RECOMMEND_MODEL) -> None:
        """Block until the server and ``model`` are ready, or raise ``ServerUnavailable``."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready(model):
            if time.monotonic() >= deadline:
                raise ServerUnavailable(f"{self.url}: model {model!r} not ready after {timeout_s}s")
            time.sleep(0.2)

    # -- calls ---------------------------------------------------------------------------------
    def _infer(self, model: str, tensors: Sequence[Tensor], timeout_s: float | None) -> grpcclient.InferResult:
        timeout = validate_timeout(timeout_s) or self.timeout_s
        try:
            return self._client.infer(model, _inputs(tensors), client_timeout=timeout, headers=self.headers)
        except InferenceServerException as exc:
            error = from_triton(exc)
            LOG.debug("%s failed: %s", model, error)
            raise error from None

    def recommend(
        self,
        query: str | None = "",
        history: Iterable[HistoryItem] | None = (),
        k: int = 10,
        *,
        now: float | None = None,
        timeout_s: float | None = None,
    ) -> Recommendations:
        """The ``k`` best items for a search ``query`` and/or a shopper's recent ``history``.

        ``history`` is a sequence of ``(item_id, unix_ts)`` pairs, most recent last. With neither a
        query nor history, the answer is the popularity/freshness fallback. ``now`` pins the
        request's clock (reproducible replays); by default the server's time is used.
        """
        result = self._infer(RECOMMEND_MODEL, recommend_tensors(query, history, k, now), timeout_s)
        return parse_recommendations(
            result.as_numpy("ITEM_IDS"), result.as_numpy("SCORES"), result.as_numpy("UNKNOWN_HISTORY")
        )

    def embed(self, texts: Sequence[str], *, tower: str = "query", timeout_s: float | None = None) -> np.ndarray:
        """L2-normalized embeddings, float32 of shape (len(texts), d), from the query or item tower."""
        if tower not in EMBED_MODELS:
            raise InvalidRequest(f"tower must be one of {sorted(EMBED_MODELS)}, got {tower!r}")
        tensors = embed_tensors(texts)[0]
        chunks = []
        for start in range(0, len(tensors.array), EMBED_BATCH):
            chunk = Tensor(tensors.name, tensors.array[start : start + EMBED_BATCH], tensors.datatype)
            chunks.append(self._infer(EMBED_MODELS[tower], [chunk], timeout_s).as_numpy("EMBEDDING"))
        return np.concatenate(chunks).astype(np.float32, copy=False)
