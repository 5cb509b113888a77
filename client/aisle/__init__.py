"""Aisle SDK: personalized recommendations and semantic product search served by Triton.

    from aisle import RecClient
    with RecClient("127.0.0.1:8001") as client:
        recs = client.recommend(query="red running shoes", k=10)
"""
from .client import RecClient
from .errors import (
    AisleError,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotReady,
    Overloaded,
    ServerError,
    ServerUnavailable,
)
from .types import Recommendation, Recommendations

__all__ = [
    "AisleError",
    "DeadlineExceeded",
    "InvalidRequest",
    "ModelNotReady",
    "Overloaded",
    "RecClient",
    "Recommendation",
    "Recommendations",
    "ServerError",
    "ServerUnavailable",
]
__version__ = "0.1.0"
