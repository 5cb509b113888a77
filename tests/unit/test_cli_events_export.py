"""aisle_export.ops.events_export and `aisle events export`, against an in-memory Redis Stream."""

from __future__ import annotations

import json

import pytest
import redis

from aisle_export.cli import main
from aisle_export.data.interactions import DEFAULT_EVENT_WEIGHTS, read_interactions
from aisle_export.ops import events_export
from aisle_export.ops.events_export import EventLogUnreadable, export_events, interactions_of
from aisle_server.state import STREAM_KEY

URL = "redis://state:6379"


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


class FakeStream:
    """The two stream commands the export uses (XRANGE, XTRIM MINID), on one in-memory stream."""

    def __init__(self, events=(), during_read=()):
        self.entries: list[tuple[str, dict[str, str]]] = []
        self.during_read = list(during_read)  # tracked while the export reads: after the first XRANGE
        for event in events:
            self.add(event)

    def add(self, fields: dict[str, str]) -> None:
        self.entries.append((f"{1000 + len(self.entries)}-0", fields))

    def xrange(self, key, min="-", max="+", count=None):
        assert key == STREAM_KEY and max == "+"
        after = None if min == "-" else stream_id(min.removeprefix("("))
        batch = [(i, f) for i, f in self.entries if after is None or stream_id(i) > after][:count]
        while self.during_read:
            self.add(self.during_read.pop(0))
        return batch

    def xtrim(self, key, minid, approximate=True):
        assert key == STREAM_KEY and approximate is False  # exact: nothing after the mark may go
        kept = [(i, f) for i, f in self.entries if stream_id(i) >= stream_id(minid)]
        removed, self.entries = len(self.entries) - len(kept), kept
        return removed


class DownStore:
    def xrange(self, *args, **kwargs):
        raise redis.ConnectionError("Connection refused")


class Untouched:
    def __getattr__(self, name):
        raise AssertionError(f"the store was used ({name}) though the export was refused")


def event(i, event_type="click", properties=None):
    return {
        "event_id": f"e{i}",
        "user_id": f"u{i % 2}",
        "item_id": f"i{i}",
        "event_type": event_type,
        "ts": str(1_700_000_000 + i),
        "properties": json.dumps(properties) if properties is not None else "",
    }


LOG = [
    event(0, "click"),
    event(1, "exposure", {"experiment": "exp", "arm": "a", "items": ["i1", "i2"]}),
    event(2, "purchase", {"price": 12.5}),
    event(3, "view"),
]


def test_interactions_leave_out_exposures_and_weigh_by_event_type():
    interactions = interactions_of(LOG)
    assert interactions is not None
    assert interactions.item_id.tolist() == ["i0", "i2", "i3"]
    assert interactions.event_type.tolist() == ["click", "purchase", "view"]
    expected = [DEFAULT_EVENT_WEIGHTS[t] for t in ("click", "purchase", "view")]
    assert interactions.weight.tolist() == pytest.approx(expected)
    assert interactions.timestamp.tolist() == [1_700_000_000.0, 1_700_000_002.0, 1_700_000_003.0]
    assert interactions_of([event(0, "exposure")]) is None


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_export_writes_an_interaction_log_the_reader_reads_back_and_trims_the_log(tmp_path, suffix):
    store = FakeStream(LOG)
    out = tmp_path / f"events{suffix}"
    done = export_events(URL, out, client=store)
    assert (done.read, done.written, done.removed, done.raw) == (4, 3, 4, False)
    log, report = read_interactions(out)
    assert log.item_id.tolist() == ["i0", "i2", "i3"] and report.kept == 3
    assert log.weight.tolist() == pytest.approx(interactions_of(LOG).weight.tolist())
    assert store.entries == []
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no partial file left behind


def test_events_tracked_while_exporting_stay_in_the_log(tmp_path):
    store = FakeStream(LOG, during_read=[event(9, "purchase")])
    done = export_events(URL, tmp_path / "events.parquet", client=store)
    assert done.removed == 4
    assert [fields["event_id"] for _, fields in store.entries] == ["e9"]


def test_keep_copies_without_removing(tmp_path):
    store = FakeStream(LOG)
    done = export_events(URL, tmp_path / "events.csv", keep=True, client=store)
    assert (done.written, done.removed) == (3, 0)
    assert len(store.entries) == 4


def test_raw_writes_every_event_with_its_properties(tmp_path):
    store = FakeStream(LOG)
    out = tmp_path / "events.jsonl"
    done = export_events(URL, out, raw=True, client=store)
    assert (done.read, done.written, done.removed, done.raw) == (4, 4, 4, True)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["event_type"] for row in rows] == ["click", "exposure", "purchase", "view"]
    assert rows[1]["properties"] == {"experiment": "exp", "arm": "a", "items": ["i1", "i2"]}
    assert rows[0]["properties"] == {} and rows[2]["ts"] == 1_700_000_002.0
    assert set(rows[0]) == {"event_id", "user_id", "item_id", "event_type", "ts", "properties"}


def test_raw_wants_json_lines_and_removes_nothing_otherwise(tmp_path):
    store = FakeStream(LOG)
    with pytest.raises(ValueError, match="--raw writes JSON lines"):
        export_events(URL, tmp_path / "events.csv", raw=True, client=store)
    assert len(store.entries) == 4 and list(tmp_path.iterdir()) == []


def test_an_existing_file_is_refused_before_the_store_is_read(tmp_path):
    out = tmp_path / "events.parquet"
    out.write_bytes(b"earlier export")
    with pytest.raises(ValueError, match="exists: export writes a new file"):
        export_events(URL, out, client=Untouched())
    assert out.read_bytes() == b"earlier export"


def test_an_empty_log_writes_nothing(tmp_path):
    done = export_events(URL, tmp_path / "events.parquet", client=FakeStream())
    assert (done.read, done.written, done.removed) == (0, 0, 0)
    assert list(tmp_path.iterdir()) == []


def test_only_exposures_write_no_interaction_log_and_stay_in_the_log(tmp_path):
    store = FakeStream([event(0, "exposure"), event(1, "exposure")])
    done = export_events(URL, tmp_path / "events.parquet", client=store)
    assert (done.read, done.written, done.removed) == (2, 0, 0)
    assert len(store.entries) == 2 and list(tmp_path.iterdir()) == []


def test_a_store_that_is_down_is_named(tmp_path):
    with pytest.raises(EventLogUnreadable, match=f"state store {URL}: Connection refused"):
        export_events(URL, tmp_path / "events.parquet", client=DownStore())
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def store(monkeypatch):
    """The store `aisle events export --state URL` connects to."""
    fake = FakeStream()
    monkeypatch.setattr(events_export, "connect", lambda url, timeout_s: fake)
    return fake


def test_cli_reports_what_it_exported(tmp_path, store, capsys):
    for e in LOG:
        store.add(e)
    out = tmp_path / "events.parquet"
    assert main(["events", "export", "--state", URL, "--out", str(out), "--keep"]) == 0
    assert capsys.readouterr().out == f"3 events → {out} (kept in the log; events tracked meanwhile stay)\n"
    out = tmp_path / "events.jsonl"
    assert main(["events", "export", "--state", URL, "--out", str(out), "--raw"]) == 0
    assert capsys.readouterr().out == f"4 events → {out} (raw; 4 removed from the log)\n"
    assert main(["events", "export", "--state", URL, "--out", str(tmp_path / "again.csv")]) == 0
    assert capsys.readouterr().out == "no events in the log; nothing written\n"


def test_cli_export_of_only_exposures_says_so(tmp_path, store, capsys):
    store.add(event(0, "exposure"))
    assert main(["events", "export", "--state", URL, "--out", str(tmp_path / "events.csv")]) == 0
    assert "only exposures in the log; no interaction log written (export them with --raw)" in capsys.readouterr().out


def test_cli_errors_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(events_export, "connect", lambda url, timeout_s: DownStore())
    assert main(["events", "export", "--state", URL, "--out", str(tmp_path / "events.csv")]) == 1
    assert capsys.readouterr().err == f"aisle events: error: state store {URL}: Connection refused\n"
    (tmp_path / "old.csv").write_text("")
    assert main(["events", "export", "--state", URL, "--out", str(tmp_path / "old.csv")]) == 1
    assert "aisle events: error: " in capsys.readouterr().err
