"""Validate SDK arguments and turn them into Triton tensors — before any network call.

Shared by the sync and asyncio clients. A bad argument raises ``InvalidRequest`` naming it.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import InvalidRequest

MAX_K = 1000
HistoryItem = tuple[str, float]


@dataclass(frozen=True)
class Tensor:
    name: str
    array: np.ndarray
    datatype: str


def _utf8(name: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise InvalidRequest(f"{name} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{name} is not encodable as UTF-8: {exc.reason}") from None


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}")
    return float(value)


def validate_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and _number("timeout_s", timeout_s) <= 0:
        raise InvalidRequest(f"timeout_s must be > 0, got {timeout_s!r}")
    return timeout_s


def recommend_tensors(
    query: str | None, history: Iterable[HistoryItem] | None, k: int, now: float | None = None
) -> list[Tensor]:
    """Tensors of one ``recommend`` request (batch of one row)."""
    query_bytes = _utf8("query", "" if query is None else query)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= MAX_K:
        raise InvalidRequest(f"k must be an int in [1, {MAX_K}], got {k!r}")
    ids, stamps = [], []
    for i, item in enumerate(history or ()):
        if not isinstance(item, Sequence) or isinstance(item, (str, bytes)) or len(item) != 2:
            raise InvalidRequest(f"history[{i}] must be an (item_id, unix_ts) pair, got {item!r}")
        item_id = _utf8(f"history[{i}] item_id", item[0])
        if not item_id:
            raise InvalidRequest(f"history[{i}] item_id is empty")
        ids.append(item_id)
        stamps.append(_number(f"history[{i}] timestamp", item[1]))
    tensors = [
        Tensor("QUERY", np.array([[query_bytes]], dtype=object), "BYTES"),
        Tensor("K", np.array([[int(k)]], dtype=np.int32), "INT32"),
    ]
    if ids:
        tensors.append(Tensor("HISTORY_IDS", np.array([ids], dtype=object), "BYTES"))
        tensors.append(Tensor("HISTORY_TS", np.array([stamps], dtype=np.float64), "FP64"))
    if now is not None:
        tensors.append(Tensor("NOW", np.array([[_number("now", now)]], dtype=np.float64), "FP64"))
    return tensors


def embed_tensors(texts: Sequence[str]) -> list[Tensor]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InvalidRequest("texts must be a non-empty sequence of str")
    encoded = [_utf8(f"texts[{i}]", t) for i, t in enumerate(texts)]
    return [Tensor("TEXT", np.array(encoded, dtype=object).reshape(-1, 1), "BYTES")]
