"""Aisle SDK: personalized recommendations and semantic product search served by Triton.

    from aisle import RecClient
    with RecClient("127.0.0.1:8001") as client:
        recs = client.recommend(query="red running shoes", k=10)

``AsyncRecClient`` is the asyncio twin with the same methods.
"""

from aisle_contract.experiments import Arm, Assignment, Experiment, ExperimentError

from .aio import AsyncRecClient
from .cache import CacheStats
from .client import RecClient
from .errors import (
    AisleError,
    ClientClosed,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotReady,
    Overloaded,
    PermissionDenied,
    ServerError,
    ServerUnavailable,
    StateUnavailable,
)
from .exposure_log import ExposureStats
from .exposures import exposure_event
from .policy import CallInfo, RetryPolicy
from .requests import ItemUpdate, RankingKnobs, RecommendRequest, TrackEvent
from .types import ItemChanged, Recommendation, Recommendations, RuleSetInfo, ScoreComponents, Tracked

__all__ = [
    "AisleError",
    "Arm",
    "Assignment",
    "AsyncRecClient",
    "CacheStats",
    "CallInfo",
    "ClientClosed",
    "DeadlineExceeded",
    "Experiment",
    "ExperimentError",
    "ExposureStats",
    "InvalidRequest",
    "ItemChanged",
    "ItemUpdate",
    "ModelNotReady",
    "Overloaded",
    "PermissionDenied",
    "RankingKnobs",
    "RecClient",
    "RecommendRequest",
    "Recommendation",
    "Recommendations",
    "RetryPolicy",
    "RuleSetInfo",
    "ScoreComponents",
    "ServerError",
    "ServerUnavailable",
    "StateUnavailable",
    "TrackEvent",
    "Tracked",
    "exposure_event",
]
__version__ = "0.1.0"
