"""aisle_export.ops.catalog_update and `aisle catalog update`, against a fake SDK client."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from aisle import InvalidRequest, ItemChanged
from aisle_export.cli import main
from aisle_export.ops import catalog_update
from aisle_export.ops.catalog_update import read_changes, update_catalog


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_changes_keeps_order_and_skips_blank_lines(tmp_path):
    changes = write(tmp_path / "c.jsonl", ['{"item_id": "a", "title": "A"}', "", '{"item_id": "b", "op": "delete"}'])
    assert read_changes(changes) == [{"item_id": "a", "title": "A"}, {"item_id": "b", "op": "delete"}]


def test_read_changes_names_the_line_that_is_not_json(tmp_path):
    changes = write(tmp_path / "c.jsonl", ['{"item_id": "a"}', "", "not json"])
    with pytest.raises(ValueError, match=r"c\.jsonl line 3: not JSON"):
        read_changes(changes)


def test_a_file_without_changes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no change"):
        read_changes(write(tmp_path / "c.jsonl", ["", "  "]))


class FakeClient:
    sent: ClassVar[list] = []
    refuse: ClassVar[bool] = False

    def __init__(self, url, timeout_s, headers):
        self.opened = (url, timeout_s, headers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update_items(self, items):
        if FakeClient.refuse:
            raise InvalidRequest("items[0]: op: 'explode' is not one of upsert, delete")
        FakeClient.sent.append((self.opened, items))
        return [ItemChanged(item["item_id"], f"{i + 1}-0") for i, item in enumerate(items)]


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setattr(catalog_update, "RecClient", FakeClient)
    monkeypatch.setattr(FakeClient, "sent", [])
    monkeypatch.setattr(FakeClient, "refuse", False)
    return FakeClient


def test_update_sends_every_change_and_reports_the_last_id(tmp_path, client):
    changes = write(tmp_path / "c.jsonl", ['{"item_id": "a", "title": "A"}', '{"item_id": "b", "op": "delete"}'])
    assert update_catalog(changes, "host:8001", {"k": "v"}, 5.0) == {"changed": 2, "last_change_id": "2-0"}
    assert client.sent == [(("host:8001", 5.0, {"k": "v"}), read_changes(changes))]


def test_a_change_the_sdk_refuses_names_the_file(tmp_path, client):
    client.refuse = True
    with pytest.raises(ValueError, match=r"c\.jsonl: items\[0\]: op"):
        update_catalog(write(tmp_path / "c.jsonl", ['{"item_id": "a", "op": "explode"}']), "host:8001")


def test_cli_prints_the_outcome_as_json(tmp_path, client, capsys):
    changes = write(tmp_path / "c.jsonl", ['{"item_id": "a", "title": "A"}'])
    assert main(["catalog", "update", "--file", str(changes), "--url", "h:1", "--header", "k=v=w"]) == 0
    assert json.loads(capsys.readouterr().out) == {"changed": 1, "last_change_id": "1-0"}
    assert client.sent[0][0] == ("h:1", 120.0, {"k": "v=w"})


def test_cli_update_errors_exit_1(tmp_path, client, capsys):
    assert main(["catalog", "update", "--file", str(tmp_path / "missing.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("aisle catalog update: [Errno 2]")
    assert main(["catalog", "update", "--file", str(write(tmp_path / "c.jsonl", ["{"]))]) == 1
    assert "c.jsonl line 1: not JSON" in capsys.readouterr().err
    assert client.sent == []
