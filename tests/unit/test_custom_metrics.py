"""``aisle_server.metrics`` without Triton: what ``track`` and ``rerank`` count, through a recording
sink, a fake ``pb_utils`` (the Python backend's custom-metrics API) and ``TrackModel.execute``."""

from __future__ import annotations

import numpy as np
import pytest
from tests.unit.fake_stub import BackendUtils, Request

from aisle_server.errors import InvalidInput, StateUnavailable
from aisle_server.metrics import (
    LOOKUP_BUCKETS,
    CatalogOverlay,
    EventCounts,
    NullSink,
    StateLookups,
    TritonMetrics,
    reject_reason,
    request_rows,
)
from aisle_server.state import StateReads
from aisle_server.track_io import parse_event_types
from aisle_server.triton_models import TrackModel

NOW = 1_700_000_000.0


class Recording:
    """A ``MetricSink`` that sums what each (name, labels) got; ``histograms=False``: a server without them."""

    def __init__(self, histograms: bool = True):
        self.histograms = histograms
        self.values: dict[tuple[str, tuple], list[float]] = {}

    def _record(self, name: str, labels: dict) -> object:
        key = (name, tuple(sorted(labels.items())))
        self.values.setdefault(key, [])
        return self.values[key].append

    def counter(self, name, description, labels):
        assert description
        return self._record(name, labels)

    def histogram(self, name, description, labels, buckets):
        assert list(buckets) == sorted(buckets)
        return self._record(name, labels) if self.histograms else None

    def gauge(self, name, description, labels):
        assert description
        return self._record(name, labels)

    def last(self, name: str, **labels: str) -> float:
        return self.values[(name, tuple(sorted(labels.items())))][-1]

    def total(self, name: str, **labels: str) -> float:
        return sum(self.values[(name, tuple(sorted(labels.items())))])


# --------------------------------------------------------------------------- counting


def test_event_counts_split_stored_from_duplicate_and_rejected_by_reason():
    sink = Recording()
    counts = EventCounts(sink)
    counts.stored([True, False, True])
    counts.stored([])
    counts.refused("invalid", 4)
    counts.refused("unavailable", 2)
    counts.refused("unavailable", 0)
    assert (counts.accepted, counts.duplicate) == (2, 1)
    assert counts.rejected == {"invalid": 4, "unavailable": 2, "internal": 0}
    assert sink.total("aisle_events_accepted_total", model="track") == 2
    assert sink.total("aisle_events_duplicate_total", model="track") == 1
    assert sink.total("aisle_events_rejected_total", model="track", reason="invalid") == 4
    assert sink.total("aisle_events_rejected_total", model="track", reason="unavailable") == 2
    assert sink.total("aisle_events_rejected_total", model="track", reason="internal") == 0
    with pytest.raises(ValueError, match="reason"):
        counts.refused("slow", 1)


def test_reject_reason_follows_the_status_the_request_gets_and_rows_count_its_events():
    assert reject_reason(InvalidInput("TS", "row 0: nan")) == "invalid"
    assert reject_reason(StateUnavailable("down")) == "unavailable"
    assert reject_reason(RuntimeError("bug")) == "internal"
    column = np.array([[b"a"], [b"b"], [b"c"]], dtype=object)
    assert request_rows({"USER_ID": column, "TS": None, "ITEM_ID": column[:2]}) == 3
    assert request_rows({}) == 1 and request_rows({"USER_ID": None}) == 1


def test_state_lookups_count_time_and_failures_into_a_histogram():
    sink = Recording()
    lookups = StateLookups(sink)
    lookups.observe(0.002)
    lookups.observe(0.004)
    lookups.failed()
    assert lookups.histogram and (lookups.lookups, lookups.failures) == (2, 1)
    assert lookups.seconds == pytest.approx(0.006)
    assert sink.total("aisle_state_lookups_total", model="rerank") == 2
    assert sink.values[("aisle_state_lookup_seconds", (("model", "rerank"),))] == [0.002, 0.004]
    assert sink.total("aisle_state_read_failures_total", model="rerank") == 1


def test_without_histograms_a_seconds_counter_stands_in():
    sink = Recording(histograms=False)
    lookups = StateLookups(sink)
    lookups.observe(0.25)
    lookups.observe(0.5)
    assert not lookups.histogram
    assert sink.total("aisle_state_lookup_seconds_total", model="rerank") == pytest.approx(0.75)
    assert ("aisle_state_lookup_seconds", (("model", "rerank"),)) not in sink.values
    StateLookups(NullSink()).observe(1.0)  # no endpoint: nothing to do, nothing fails


class FakeStore:
    def __init__(self, clock: list[float], fail: bool = False):
        self.clock, self.fail, self.url = clock, fail, "redis://fake"

    def recent(self, user_ids, n):
        self.clock[0] += 0.003  # the read takes 3 ms
        if self.fail:
            raise StateUnavailable("down")
        return {u: [("i", NOW, "view")] for u in user_ids}


def test_state_reads_time_every_lookup_failed_or_not():
    sink, now = Recording(), [100.0]
    lookups = StateLookups(sink)
    store = FakeStore(now)
    reads = StateReads(store, on_failure=lookups.failed, on_lookup=lookups.observe, clock=lambda: now[0])
    assert reads(["u"], 5) == {"u": [("i", NOW, "view")]}
    store.fail = True
    assert reads(["u"], 5) == {}
    assert (lookups.lookups, lookups.failures) == (2, 1) and reads.failures == 1
    assert sink.values[("aisle_state_lookup_seconds", (("model", "rerank"),))] == pytest.approx([0.003, 0.003])


# --------------------------------------------------------------------------- the Triton sink


class FakeMetric:
    def __init__(self, labels, buckets):
        self.labels, self.buckets, self.values = labels, buckets, []

    def increment(self, value):
        self.values.append(("increment", value))

    def observe(self, value):
        self.values.append(("observe", value))


def fake_pb_utils(histogram: bool = True, broken: bool = False):
    created = []

    class MetricFamily:
        COUNTER, GAUGE = "counter", "gauge"
        if histogram:
            HISTOGRAM = "histogram"

        def __init__(self, name, description, kind):
            if broken:
                raise RuntimeError("metrics disabled")
            self.name, self.kind, self.metrics = name, kind, []
            created.append(self)

        def Metric(self, labels, buckets=None):  # pb_utils spells it so
            if (self.kind == "histogram") != (buckets is not None):
                raise ValueError("buckets go with histograms only")
            metric = FakeMetric(labels, buckets)
            self.metrics.append(metric)
            return metric

    class PbUtils:
        pass

    PbUtils.MetricFamily = MetricFamily
    return PbUtils, created


def test_triton_metrics_make_one_family_per_name_and_a_metric_per_label_set():
    pb_utils, families = fake_pb_utils()
    counts = EventCounts(TritonMetrics(pb_utils))
    counts.refused("invalid", 2)
    counts.stored([True, True, False])
    by_name = {f.name: f for f in families}
    assert sorted(by_name) == [
        "aisle_events_accepted_total",
        "aisle_events_duplicate_total",
        "aisle_events_rejected_total",
    ]
    assert len(families) == 3 and all(f.kind == "counter" for f in families)
    rejected = {m.labels["reason"]: m.values for m in by_name["aisle_events_rejected_total"].metrics}
    assert rejected == {"invalid": [("increment", 2)], "unavailable": [], "internal": []}
    assert by_name["aisle_events_accepted_total"].metrics[0].values == [("increment", 2)]
    assert by_name["aisle_events_accepted_total"].metrics[0].labels == {"model": "track"}


def test_triton_metrics_histogram_with_buckets_or_a_counter_where_there_is_none():
    pb_utils, families = fake_pb_utils()
    lookups = StateLookups(TritonMetrics(pb_utils))
    lookups.observe(0.001)
    [histogram] = [f for f in families if f.kind == "histogram"]
    assert histogram.name == "aisle_state_lookup_seconds"
    assert histogram.metrics[0].buckets == list(LOOKUP_BUCKETS) and histogram.metrics[0].values == [("observe", 0.001)]

    pb_utils, families = fake_pb_utils(histogram=False)
    lookups = StateLookups(TritonMetrics(pb_utils))
    lookups.observe(0.001)
    assert not lookups.histogram
    assert {f.name for f in families} == {
        "aisle_state_lookups_total",
        "aisle_state_lookup_seconds_total",
        "aisle_state_read_failures_total",
    }


def test_a_server_without_custom_metrics_still_counts_and_warns_once(caplog):
    pb_utils, _ = fake_pb_utils(broken=True)
    with caplog.at_level("WARNING", logger="aisle.metrics"):
        counts = EventCounts(TritonMetrics(pb_utils))
        counts.stored([True])
    assert counts.accepted == 1
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- TrackModel.execute


def _request(*events: tuple[str, str, str, str]) -> Request:
    """``(user, item, event_type, event_id)`` rows as track's input tensors."""
    columns = {"USER_ID": 0, "ITEM_ID": 1, "EVENT_TYPE": 2, "EVENT_ID": 3}
    request = Request({name: np.array([[e[i].encode()] for e in events], dtype=object) for name, i in columns.items()})
    request["TS"] = np.full((len(events), 1), NOW, dtype=np.float64)
    return request


class MemoryStore:
    def __init__(self):
        self.ids: set[str] = set()
        self.down = False

    def store(self, events):
        if self.down:
            raise StateUnavailable("state store down")
        flags = []
        for event in events:
            flags.append(event.event_id not in self.ids)
            self.ids.add(event.event_id)
        return flags


def _track_model(sink: Recording, store: MemoryStore | None) -> TrackModel:
    model = TrackModel()
    model.pb_utils = BackendUtils
    model.event_types = parse_event_types(None)
    model.counts = EventCounts(sink)
    model.state = store
    return model


def test_track_model_counts_what_each_request_of_a_batch_came_to():
    sink, store = Recording(), MemoryStore()
    model = _track_model(sink, store)
    valid = _request(("u", "1", "view", "a"), ("u", "2", "click", "b"))
    repeat = _request(("u", "1", "view", "a"))  # a retry of event "a"
    invalid = _request(("u", "1", "purchse", "c"), ("u", "2", "view", "d"), ("u", "3", "view", "e"))
    responses = model.execute([valid, invalid, repeat])
    assert [r.error.code if r.error else None for r in responses] == [None, "INVALID_ARG", None]
    assert (model.counts.accepted, model.counts.duplicate) == (2, 1)
    assert model.counts.rejected == {"invalid": 3, "unavailable": 0, "internal": 0}

    store.down = True
    responses = model.execute([_request(("u", "9", "view", "f")), _request(("v", "9", "view", "g"))])
    assert [r.error.code for r in responses] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert model.counts.rejected["unavailable"] == 2
    assert sink.total("aisle_events_rejected_total", model="track", reason="unavailable") == 2

    unconfigured = _track_model(Recording(), None)
    unconfigured.execute([_request(("u", "9", "view", "h"))])
    assert unconfigured.counts.rejected["unavailable"] == 1


def test_catalog_overlay_reports_what_each_read_of_the_change_log_found():
    sink = Recording()
    overlay = CatalogOverlay(sink, "rerank_0_1")
    overlay.refreshed(applied=3, items=2, age_s=12.5, lag_s=0.1)
    overlay.refreshed(applied=0, items=2, age_s=13.0, lag_s=4.0)
    labels = {"model": "rerank", "instance": "rerank_0_1"}
    assert overlay.applied == 3 and sink.total("aisle_catalog_changes_applied_total", **labels) == 3
    assert sink.last("aisle_catalog_overlay_items", **labels) == 2
    assert sink.last("aisle_catalog_overlay_age_seconds", **labels) == 13.0
    assert sink.last("aisle_catalog_change_lag_seconds", **labels) == 4.0
