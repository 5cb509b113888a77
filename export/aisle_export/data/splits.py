"""Temporal train/test splits of an interaction log, for offline evaluation and fine-tuning.

One *global* cutoff in time (a quantile of all timestamps), not per-user leave-last-out: with a
global cutoff nothing the model, the popularity counts or the knob tuning see comes from after the
moment the recommendations are made for, exactly as in production. Per-user leave-last-out would
train on other users' later ratings (e.g. a movie's popularity after its release), which flatters
popularity and freshness features. The price on MovieLens-100K is a smaller test set: only the
users active on both sides of the cutoff are evaluated.

- ``train``: every interaction strictly before the cutoff (what fine-tuning and popularity use).
- ``histories[user]``: the user's last ``max_history`` interactions before the cutoff, with times
  (``history_events[user]``: their event types).
- ``targets[user]``: the user's next ``n_targets`` distinct items at or after the cutoff that are
  *new* to the user (items it had before the cutoff are dropped).
- ``next_items[user]``: the user's next ``n_targets`` distinct items at or after the cutoff,
  repeats included; ``repeat_targets[user]``: those of them the user had before the cutoff (any
  time in the training period). A test user is one with at least one new target, as before.
- ``now``: the cutoff; the feed of every test user is computed "at" the cutoff.

A validation split for tuning knobs is the same construction applied to ``train`` alone
(:func:`validation_split`), so tuning never sees the test period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aisle_export.data.catalog import Catalog, read_catalog
from aisle_export.data.interactions import Interactions, LogReport, read_interactions, user_histories, user_sequences


@dataclass(frozen=True)
class TemporalSplit:
    cutoff: float
    train: Interactions
    histories: dict[str, list[tuple[str, float]]]  # test user → (item, ts) oldest → newest, all < cutoff
    targets: dict[str, list[str]]  # test user → next items, all at/after cutoff
    history_events: dict[str, list[str]] = field(default_factory=dict)  # test user → event type per history item
    next_items: dict[str, list[str]] = field(default_factory=dict)  # test user → next items, repeats included
    repeat_targets: dict[str, list[str]] = field(default_factory=dict)  # test user → next_items it had before

    @property
    def users(self) -> list[str]:
        return list(self.targets)

    def train_sequences(self, min_len: int = 1) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
        """Every shopper's training-period sequence (items, times, event types), oldest first."""
        return user_sequences(self.train, min_len=min_len)

    def train_histories(self, min_len: int = 1) -> dict[str, list[tuple[str, float]]]:
        """Every shopper's training-period (item, time) history, oldest first."""
        return user_histories(self.train, min_len=min_len)

    def summary(self) -> dict:
        return {
            "cutoff": self.cutoff,
            "train_interactions": len(self.train),
            "test_users": len(self.targets),
            "test_targets": sum(len(t) for t in self.targets.values()),
            "mean_history_len": float(np.mean([len(h) for h in self.histories.values()])) if self.histories else 0.0,
        }


def temporal_split(
    interactions: Interactions,
    quantile: float = 0.8,
    max_history: int = 50,
    n_targets: int = 10,
    min_history: int = 1,
    cutoff: float | None = None,
) -> TemporalSplit:
    """Split at ``cutoff`` (unix seconds), else at the ``quantile`` of all timestamps (see the module docstring)."""
    if len(interactions) == 0:
        raise ValueError("no interactions to split")
    if cutoff is None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile={quantile} must be in (0, 1)")
        cutoff = float(np.quantile(interactions.timestamp, quantile))
    first, last = float(interactions.timestamp.min()), float(interactions.timestamp.max())
    if not first < cutoff <= last:
        raise ValueError(
            f"cutoff {cutoff} must fall inside the log ({first} … {last}): "
            "some interactions before it and some at or after it"
        )
    before = interactions.timestamp < cutoff
    train = interactions.subset(before)
    past = user_histories(train, min_len=min_history)
    events = {user: sequence[2] for user, sequence in user_sequences(train, min_len=min_history).items()}
    future = user_histories(interactions.subset(~before))
    histories: dict[str, list[tuple[str, float]]] = {}
    history_events: dict[str, list[str]] = {}
    targets: dict[str, list[str]] = {}
    next_items: dict[str, list[str]] = {}
    repeat_targets: dict[str, list[str]] = {}
    for user, upcoming_events in future.items():
        if user not in past:
            continue  # a cold user gets the popularity fallback, not a personalized feed: not scored here
        seen = {item for item, _ in past[user]}
        upcoming: list[str] = []
        for item, _ in upcoming_events:
            if item not in seen and item not in upcoming:
                upcoming.append(item)
            if len(upcoming) == n_targets:
                break
        if upcoming:
            histories[user] = past[user][-max_history:]
            history_events[user] = events[user][-max_history:]
            targets[user] = upcoming
            following = list(dict.fromkeys(item for item, _ in upcoming_events))[:n_targets]
            next_items[user] = following
            repeat_targets[user] = [item for item in following if item in seen]
    return TemporalSplit(
        cutoff=cutoff,
        train=train,
        histories=histories,
        targets=targets,
        history_events=history_events,
        next_items=next_items,
        repeat_targets=repeat_targets,
    )


def sample_shoppers(split: TemporalSplit, n: int, seed: int = 0) -> TemporalSplit:
    """``split`` judged on ``n`` of its shoppers drawn at random (all of them when it has ≤ ``n``).

    For choices made by ranking the catalog once per shopper and setting (the knob search): that
    cost grows with shoppers × catalog, so a log ten times longer would make it ten times slower
    for an interval that a thousand shoppers already make narrow. The training rows stay whole.
    """
    if len(split.users) <= n:
        return split
    keep = set(np.random.default_rng(seed).choice(len(split.users), n, replace=False).tolist())
    chosen = [user for i, user in enumerate(split.users) if i in keep]

    def only(values: dict) -> dict:
        return {user: values[user] for user in chosen if user in values}

    return TemporalSplit(
        cutoff=split.cutoff,
        train=split.train,
        histories=only(split.histories),
        targets=only(split.targets),
        history_events=only(split.history_events),
        next_items=only(split.next_items),
        repeat_targets=only(split.repeat_targets),
    )


def validation_split(split: TemporalSplit, quantile: float = 0.8, **kwargs) -> TemporalSplit:
    """A temporal split of the training period only: for tuning knobs without touching the test."""
    return temporal_split(split.train, quantile=quantile, **kwargs)


N_TARGETS, MAX_HISTORY = 10, 50


@dataclass
class LogData:
    """A catalog, its log and the test and validation cuts, read once."""

    catalog: Catalog
    interactions: Interactions
    report: LogReport
    split: TemporalSplit
    valid: TemporalSplit

    def summary(self) -> dict:
        return {
            "log": self.report.to_dict(),
            "catalog_items": len(self.catalog),
            "test": self.split.summary(),
            "validation": self.valid.summary(),
        }


def load_log(
    interactions: Path,
    catalog: Path,
    cutoff: float | None = None,
    cutoff_quantile: float = 0.8,
    skip_bad_rows: bool = False,
    event_weights: Mapping[str, float] | None = None,
) -> LogData:
    """Read both files (ids missing from the catalog are counted, not fatal) and cut them in time."""
    items = read_catalog(catalog, skip_bad_rows=skip_bad_rows)
    log, report = read_interactions(
        interactions, skip_bad_rows=skip_bad_rows, event_weights=event_weights, catalog_ids=set(items.item_ids.tolist())
    )
    split = temporal_split(log, quantile=cutoff_quantile, cutoff=cutoff, max_history=MAX_HISTORY, n_targets=N_TARGETS)
    valid = validation_split(split, max_history=MAX_HISTORY, n_targets=N_TARGETS)
    if not split.users or not valid.users:
        raise ValueError(
            f"the cut leaves no shopper active on both sides (test {len(split.users)}, "
            f"validation {len(valid.users)}): choose another --cutoff"
        )
    return LogData(items, log, report, split, valid)
