"""A/B experiments: named arms, and which arm a shopper gets — the same in every process.

An ``Experiment`` has a name, a salt and arms; each arm has a share of all traffic, ranking knobs
(overrides of ``RankingConfig``) and optionally a model variant (the name of a parallel
``recommend`` ensemble serving other towers, another user encoder or index version). An optional
``holdout`` share of shoppers gets the server's defaults and is reported as the arm ``"holdout"``.

Assignment hashes the salt and the shopper id with BLAKE2b (not Python's ``hash``, which is salted
per process) into a number uniform in [0, 1), and walks the cumulative shares: holdout first, then
the arms in order. So every SDK process and replica gives a shopper the same arm, a new salt
reshuffles everyone, and changing shares moves only the shoppers whose number lies between an old
and a new boundary (docs/experiments.md). Plain Python: the SDK and the toolchain
(``aisle experiment report``) import it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import OVERRIDABLE, RankingConfig

#: The arm name of shoppers in an experiment's holdout.
HOLDOUT = "holdout"
#: How far the shares (holdout included) may sum from 1.
SHARE_TOLERANCE = 1e-9
_BUCKETS = float(1 << 64)


class ExperimentError(ValueError):
    """An experiment's configuration is invalid; ``field`` names the offending field (``arms[1].share``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def unit_hash(salt: str, shopper_id: str) -> float:
    """A number in [0, 1) from ``salt`` and ``shopper_id``, uniform over ids, equal in every process."""
    digest = hashlib.blake2b(f"{salt}\x00{shopper_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _BUCKETS


def _name(field_name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ExperimentError(field_name, f"must be a non-empty str, got {value!r}")
    return value


def _share(field_name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExperimentError(field_name, f"must be a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ExperimentError(field_name, f"must be in [0, 1], got {value!r}")
    return float(value)


def check_knobs(field_name: str, knobs: Mapping[str, object]) -> dict[str, object]:
    """Knob overrides an arm may set: names of ``OVERRIDABLE``, values ``RankingConfig`` accepts."""
    unknown = sorted(set(knobs) - set(OVERRIDABLE))
    if unknown:
        raise ExperimentError(field_name, f"unknown ranking knob(s) {unknown}; known: {sorted(OVERRIDABLE)}")
    types = {f.name: f.type for f in fields(RankingConfig)}
    for name, value in knobs.items():
        expected = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}[str(types[name])]
        if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
            raise ExperimentError(f"{field_name}.{name}", f"must be a {types[name]}, got {value!r}")
    try:
        replace(RankingConfig(), **knobs).validate()  # type: ignore[arg-type]  # names and types checked above
    except ValueError as exc:
        raise ExperimentError(field_name, str(exc)) from None
    return dict(knobs)


@dataclass(frozen=True)
class Arm:
    """One arm: its ``share`` of all traffic, ranking ``knobs`` and an optional ``model`` variant."""

    name: str
    share: float
    knobs: Mapping[str, object] = field(default_factory=dict)
    #: a parallel ``recommend`` ensemble's name (None: the default ``recommend``)
    model: str | None = None


@dataclass(frozen=True)
class Assignment:
    """The arm one shopper gets: what ``recommend`` applies and records."""

    experiment: str
    arm: str
    knobs: Mapping[str, object]
    model: str | None


@dataclass(frozen=True)
class Experiment:
    """A named experiment; constructing it validates it (``ExperimentError`` names the field).

    Arm shares and ``holdout`` are fractions of all traffic and sum to 1. ``control`` (default: the
    first arm) is what the report compares the other arms with.
    """

    name: str
    salt: str
    arms: Sequence[Arm]
    holdout: float = 0.0
    control: str | None = None

    def __post_init__(self) -> None:
        _name("name", self.name)
        _name("salt", self.salt)
        _share("holdout", self.holdout)
        if isinstance(self.arms, (str, bytes)) or not isinstance(self.arms, Sequence) or not self.arms:
            raise ExperimentError("arms", "must be a non-empty sequence of Arm")
        arms = tuple(self.arms)
        seen: set[str] = set()
        for i, arm in enumerate(arms):
            if not isinstance(arm, Arm):
                raise ExperimentError(f"arms[{i}]", f"must be an Arm, got {type(arm).__name__}")
            name = _name(f"arms[{i}].name", arm.name)
            if name in seen or name == HOLDOUT:
                raise ExperimentError(f"arms[{i}].name", f"{name!r} is used twice or reserved")
            seen.add(name)
            _share(f"arms[{i}].share", arm.share)
            if not isinstance(arm.knobs, Mapping):
                raise ExperimentError(f"arms[{i}].knobs", "must be a mapping of ranking knobs")
            check_knobs(f"arms[{i}].knobs", arm.knobs)
            if arm.model is not None:
                _name(f"arms[{i}].model", arm.model)
        total = self.holdout + sum(arm.share for arm in arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ExperimentError("arms", f"shares plus holdout sum to {total!r}, not 1")
        if self.control is not None and self.control not in seen:
            raise ExperimentError("control", f"{self.control!r} is not an arm: {sorted(seen)}")
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "control", self.control or arms[0].name)

    @property
    def shares(self) -> dict[str, float]:
        """Configured share of each arm (and of the holdout, when there is one)."""
        shares = {HOLDOUT: self.holdout} if self.holdout else {}
        return shares | {arm.name: arm.share for arm in self.arms}

    def arm_of(self, shopper_id: str) -> str:
        """The arm name ``shopper_id`` gets (``HOLDOUT`` for the holdout)."""
        return self.assign(shopper_id).arm

    def assign(self, shopper_id: str) -> Assignment:
        """The shopper's arm: deterministic from the salt and the id (``unit_hash``)."""
        _name("shopper_id", shopper_id)
        u = unit_hash(self.salt, shopper_id)
        edge = self.holdout
        if u < edge:
            return Assignment(self.name, HOLDOUT, {}, None)
        for arm in self.arms:
            edge += arm.share
            if u < edge:
                return Assignment(self.name, arm.name, arm.knobs, arm.model)
        last = self.arms[-1]  # float rounding at the very top of [0, 1)
        return Assignment(self.name, last.name, last.knobs, last.model)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Experiment:
        """From a JSON-like mapping: ``{"name", "salt", "arms": [{"name", "share", "knobs", "model"}], "holdout", "control"}``."""
        if not isinstance(data, Mapping):
            raise ExperimentError("experiment", "must be a mapping")
        unknown = sorted(set(data) - {"name", "salt", "arms", "holdout", "control"})
        if unknown:
            raise ExperimentError("experiment", f"unknown field(s) {unknown}")
        raw_arms = data.get("arms")
        if not isinstance(raw_arms, list):
            raise ExperimentError("arms", "must be a list of arms")
        arms = []
        for i, raw in enumerate(raw_arms):
            if not isinstance(raw, Mapping) or set(raw) - {"name", "share", "knobs", "model"}:
                raise ExperimentError(f"arms[{i}]", "must be a mapping of name, share, knobs, model")
            arms.append(Arm(raw.get("name"), raw.get("share"), raw.get("knobs", {}), raw.get("model")))  # type: ignore[arg-type]  # checked by Experiment
        return cls(data.get("name"), data.get("salt"), arms, data.get("holdout", 0.0), data.get("control"))  # type: ignore[arg-type]  # checked by __post_init__

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        """From a JSON file (``from_mapping``'s layout)."""
        return cls.from_mapping(json.loads(Path(path).read_text(encoding="utf-8")))
