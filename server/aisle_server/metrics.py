"""Aisle's own Prometheus metrics, served on Triton's metrics endpoint (``:8002/metrics``).

The counting is plain Python (``EventCounts`` for ``track``, ``StateLookups`` for ``rerank``'s
reads of the state store) over an injected ``MetricSink``: ``TritonMetrics`` inside Triton
(custom metrics of the Python backend, ``pb_utils.MetricFamily``), ``NullSink`` where there is no
endpoint, or a recording fake in the unit tests.

=====================================  =========  ==========================================================
``aisle_events_accepted_total``        counter    events ``track`` stored (new event ids)
``aisle_events_duplicate_total``       counter    events acknowledged whose id was already stored (retries)
``aisle_events_rejected_total``        counter    events refused, label ``reason``: ``invalid`` (INVALID_ARGUMENT),
                                                  ``unavailable`` (no store / store down: UNAVAILABLE),
                                                  ``internal`` (any other failure)
``aisle_state_lookups_total``          counter    ``rerank``'s reads of shoppers' stored events (one per request
                                                  with ``USER_ID``; a read covers the request's rows)
``aisle_state_lookup_seconds``         histogram  how long each read took, failed ones included
``aisle_state_read_failures_total``    counter    reads that failed (the request fell back to its own history)
``aisle_catalog_changes_applied_total`` counter   live catalog changes a ``rerank`` instance applied
``aisle_catalog_overlay_items``        gauge      items the live changes touch, not yet compacted into the base
``aisle_catalog_overlay_age_seconds``  gauge      age of the oldest change not yet compacted (0: none);
                                                  alert when compaction stopped running
``aisle_catalog_change_lag_seconds``   gauge      since the instance last read the change log (a read that
                                                  found nothing counts): grows while the store is down
=====================================  =========  ==========================================================

Every metric has the label ``model`` (``track``, ``rerank``); the catalog ones also ``instance``
(Triton's model instance name: each instance applies the log itself). Where the server has no histogram
metrics, ``aisle_state_lookup_seconds_total`` (a counter of seconds) stands in for the histogram;
divided by ``aisle_state_lookups_total`` it is the mean. A server without custom metrics at all
still serves: the sink then hands out no-ops and logs that once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .errors import InvalidInput, StateUnavailable

LOG = logging.getLogger("aisle.metrics")

#: Adds its argument to a counter, or observes it on a histogram.
Record = Callable[[float], None]

#: ``aisle_state_lookup_seconds`` buckets: a Redis round trip on the same network is ~0.1-1 ms;
#: ``state_timeout_s`` (0.5 s) bounds a failing one.
LOOKUP_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

REJECT_REASONS = ("invalid", "unavailable", "internal")


def _nothing(_value: float) -> None:
    return None


def reject_reason(exc: BaseException) -> str:
    """The ``reason`` label of a refused ``track`` request: what its error status will be."""
    if isinstance(exc, InvalidInput):
        return "invalid"
    if isinstance(exc, StateUnavailable):
        return "unavailable"
    return "internal"


def request_rows(inputs: Mapping[str, Any]) -> int:
    """How many events a refused request carried: its tensors' rows (1 when none could be read)."""
    return max((len(array) for array in inputs.values() if getattr(array, "ndim", 0) >= 1), default=1)


class MetricSink(Protocol):
    def counter(self, name: str, description: str, labels: Mapping[str, str]) -> Record: ...

    def gauge(self, name: str, description: str, labels: Mapping[str, str]) -> Record: ...

    def histogram(
        self, name: str, description: str, labels: Mapping[str, str], buckets: Sequence[float]
    ) -> Record | None: ...


class NullSink:
    """No endpoint: every metric is a no-op; no histograms."""

    def counter(self, name: str, description: str, labels: Mapping[str, str]) -> Record:
        return _nothing

    def gauge(self, name: str, description: str, labels: Mapping[str, str]) -> Record:
        return _nothing

    def histogram(
        self, name: str, description: str, labels: Mapping[str, str], buckets: Sequence[float]
    ) -> Record | None:
        return None


class TritonMetrics:
    """Custom metrics of the Python backend: one ``MetricFamily`` per name, a ``Metric`` per label set.

    Families and metrics are kept here: a metric lives only as long as its family. A server that
    cannot create them (no custom metrics) gets no-ops, and one warning.
    """

    def __init__(self, pb_utils: Any):
        self.pb_utils = pb_utils
        self._families: dict[str, Any] = {}
        self._metrics: list[Any] = []
        self._warned = False

    def _family(self, name: str, description: str, kind_name: str) -> Any:
        if name not in self._families:
            kind = getattr(self.pb_utils.MetricFamily, kind_name)  # AttributeError: this kind is unsupported
            self._families[name] = self.pb_utils.MetricFamily(name=name, description=description, kind=kind)
        return self._families[name]

    def _unavailable(self, name: str, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            LOG.warning("custom metric %s unavailable (%s: %s); it is not exported", name, type(exc).__name__, exc)

    def _metric(self, name: str, description: str, kind_name: str, labels: Mapping[str, str]) -> Any:
        """The ``Metric`` of ``labels`` in family ``name`` (kept alive here); None where unsupported."""
        try:
            metric = self._family(name, description, kind_name).Metric(labels=dict(labels))
        except Exception as exc:  # noqa: BLE001 - a server without custom metrics still serves
            self._unavailable(name, exc)
            return None
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, description: str, labels: Mapping[str, str]) -> Record:
        metric = self._metric(name, description, "COUNTER", labels)
        return _nothing if metric is None else metric.increment

    def gauge(self, name: str, description: str, labels: Mapping[str, str]) -> Record:
        metric = self._metric(name, description, "GAUGE", labels)
        return _nothing if metric is None else metric.set

    def histogram(
        self, name: str, description: str, labels: Mapping[str, str], buckets: Sequence[float]
    ) -> Record | None:
        try:
            family = self._family(name, description, "HISTOGRAM")
            metric = family.Metric(labels=dict(labels), buckets=[float(b) for b in buckets])
        except Exception as exc:  # noqa: BLE001 - no histograms here: the caller falls back to a counter
            LOG.info("histogram %s unavailable (%s: %s)", name, type(exc).__name__, exc)
            self._families.pop(name, None)
            return None
        self._metrics.append(metric)
        return metric.observe  # type: ignore[no-any-return]  # pb_utils is untyped


class EventCounts:
    """``track``'s counters; the totals are kept here too (``accepted``, ``duplicate``, ``rejected``)."""

    def __init__(self, sink: MetricSink, model: str = "track"):
        labels = {"model": model}
        self._accepted = sink.counter("aisle_events_accepted_total", "events stored by track", labels)
        self._duplicate = sink.counter(
            "aisle_events_duplicate_total", "events acknowledged whose event id was already stored", labels
        )
        self._rejected = {
            reason: sink.counter(
                "aisle_events_rejected_total",
                "events track refused: invalid, state store unavailable, or internal error",
                {**labels, "reason": reason},
            )
            for reason in REJECT_REASONS
        }
        self.accepted = 0
        self.duplicate = 0
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)

    def stored(self, flags: Sequence[bool]) -> None:
        """One acknowledged batch: per event, True if stored now, False if its id was stored before."""
        new = sum(1 for flag in flags if flag)
        old = len(flags) - new
        if new:
            self.accepted += new
            self._accepted(new)
        if old:
            self.duplicate += old
            self._duplicate(old)

    def refused(self, reason: str, events: int) -> None:
        if reason not in self._rejected:
            raise ValueError(f"reason {reason!r} not in {REJECT_REASONS}")
        if events > 0:
            self.rejected[reason] += events
            self._rejected[reason](events)


class StateLookups:
    """``rerank``'s reads of the state store: how many, how long, how many failed.

    ``observe`` and ``failed`` are what ``state.StateReads`` calls (``on_lookup``, ``on_failure``).
    """

    def __init__(self, sink: MetricSink, model: str = "rerank", buckets: Sequence[float] = LOOKUP_BUCKETS) -> None:
        labels = {"model": model}
        self._count = sink.counter("aisle_state_lookups_total", "reads of shoppers' stored events", labels)
        histogram = sink.histogram(
            "aisle_state_lookup_seconds", "seconds per read of shoppers' stored events", labels, buckets
        )
        self.histogram = histogram is not None
        self._seconds = histogram or sink.counter(
            "aisle_state_lookup_seconds_total", "seconds spent reading shoppers' stored events", labels
        )
        self._failures = sink.counter(
            "aisle_state_read_failures_total",
            "recommend calls whose USER_ID events could not be read from the state store",
            labels,
        )
        self.lookups = 0
        self.seconds = 0.0
        self.failures = 0

    def observe(self, seconds: float) -> None:
        self.lookups += 1
        self.seconds += seconds
        self._count(1)
        self._seconds(seconds)

    def failed(self) -> None:
        self.failures += 1
        self._failures(1)


class CatalogOverlay:
    """A ``rerank`` instance's live catalog: changes applied, overlay size and age, log read lag.

    ``refreshed`` is what ``live_catalog.LiveCatalog`` calls after each read of the change log.
    """

    def __init__(self, sink: MetricSink, instance: str, model: str = "rerank") -> None:
        labels = {"model": model, "instance": instance}
        self._applied = sink.counter(
            "aisle_catalog_changes_applied_total", "live catalog changes this instance applied", labels
        )
        self._items = sink.gauge("aisle_catalog_overlay_items", "items changed live, not yet compacted", labels)
        self._age = sink.gauge(
            "aisle_catalog_overlay_age_seconds", "age of the oldest live change not yet compacted", labels
        )
        self._lag = sink.gauge("aisle_catalog_change_lag_seconds", "seconds since the change log was last read", labels)
        self.applied = 0

    def refreshed(self, applied: int, items: int, age_s: float, lag_s: float) -> None:
        if applied:
            self.applied += applied
            self._applied(applied)
        self._items(float(items))
        self._age(age_s)
        self._lag(lag_s)
