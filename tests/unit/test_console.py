"""``aisle console`` without a server: what the page shows (bars, dry-run moves), who may change rules,
reports on disk, and the routes over a stand-in SDK client (a real uvicorn on a free port)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aisle import InvalidRequest, Recommendation, Recommendations, RuleSetInfo, ScoreComponents
from aisle_export.ops.console import reports
from aisle_export.ops.console.app import running
from aisle_export.ops.console.guard import TOKEN_HEADER, ConsoleSettings, Refused, check_rule_change
from aisle_export.ops.console.views import bars, compare, error_field, result_rows

TOKEN = "s3cret-token-of-some-length"


def explained(item: str, dense: float, lexical: float, rules: float = 0.0, effects=()) -> Recommendation:
    parts = ScoreComponents(dense, lexical, 0.0, 0.0, 0.0, float("nan"), 0.0, 3, rules=rules, rule_effects=effects)
    return Recommendation(item, dense + lexical + rules, parts)


def test_bars_are_the_nonzero_parts_and_sum_to_the_score():
    rec = explained("7", 0.4, -0.1, rules=0.25, effects=({"rule": "b", "effect": "boost", "delta": 0.25},))
    drawn = bars(rec)
    assert [(b["name"], b["kind"]) for b in drawn] == [
        ("dense", "component"),
        ("lexical", "component"),
        ("rules", "rules"),
    ]
    assert math.isclose(sum(b["value"] for b in drawn), rec.score)
    row = result_rows([rec])[0]
    assert row["rank"] == 1 and row["pre_diversity_rank"] == 3
    assert row["rule_effects"] == [{"rule": "b", "effect": "boost", "delta": 0.25}]


def test_a_ranker_ordered_result_shows_its_feature_contributions():
    parts = ScoreComponents(*[float("nan")] * 7, 0, features={"popularity": 0.3, "bias": -0.1, "age": 0.0})
    assert [(b["name"], b["kind"]) for b in bars(Recommendation("1", 0.2, parts))] == [
        ("popularity", "feature"),
        ("bias", "feature"),
    ]
    assert bars(Recommendation("1", 0.2)) == []  # not explained: nothing to draw


def test_compare_says_where_each_item_went():
    diff = compare(["a", "b", "c"], ["c", "a", "d"])
    assert diff["moves"] == [
        {"item_id": "c", "rank": 1, "was": 3, "moved": 2},
        {"item_id": "a", "rank": 2, "was": 1, "moved": -1},
        {"item_id": "d", "rank": 3, "was": None, "moved": None},
    ]
    assert diff["left"] == ["b"] and diff["changed"]
    assert not compare(["a"], ["a"])["changed"]


def test_a_server_error_names_the_console_field():
    assert error_field("in ensemble 'recommend', DRAFT_RULES: rules[0].match, column 1: unknown name", "x") == "draft"
    assert error_field("K: 0 is not >= 1", "x") == "k"
    assert error_field("something else", "query") == "query"


def test_rule_changes_need_the_flag_and_the_token():
    with pytest.raises(Refused, match="read-only") as refused:
        check_rule_change(ConsoleSettings("h:1"), TOKEN)
    assert refused.value.status == 403
    allowed = ConsoleSettings("h:1", allow_rule_changes=True, token=TOKEN)
    for presented in (None, "", TOKEN[:-1], TOKEN + "x"):
        with pytest.raises(Refused) as refused:
            check_rule_change(allowed, presented)
        assert refused.value.status == 401
    check_rule_change(allowed, TOKEN)
    with pytest.raises(ValueError, match="token of at least 16"):
        ConsoleSettings("h:1", allow_rule_changes=True, token="short")
    assert TOKEN not in repr(allowed)


def test_reports_are_listed_rendered_safely_and_never_served_from_outside(tmp_path):
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "report.md").write_text(
        "# Arms A/B\n\n| arm | ctr |\n|---|---|\n| a | 0.1 |\n\n<script>x()</script>\n"
    )
    (tmp_path / "ab" / "report.png").write_bytes(b"\x89PNG")
    (tmp_path / "secret.txt").write_text("no")
    assert reports.list_reports(tmp_path) == [
        {"path": "ab/report.md", "title": "Arms A/B", "images": ["ab/report.png"]}
    ]
    html = reports.render(reports.resolve(tmp_path, "ab/report.md"))
    assert "<table>" in html and "<script>" not in html and "&lt;script&gt;" in html
    for bad in ("../etc/passwd", "secret.txt", "ab/../../x.md", "/etc/hostname", "ab/missing.md"):
        with pytest.raises(reports.NotAReport):
            reports.resolve(tmp_path / "ab", bad)


class StandIn:
    """What the routes call of ``RecClient``, answering from memory and remembering the calls."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def recommend(self, query, k=10, **kwargs):
        self.calls.append(("recommend", {"query": query, "k": k, **kwargs}))
        draft = kwargs.get("draft_rules")
        if draft and "margin" in draft:
            raise InvalidRequest(
                "in ensemble 'recommend', DRAFT_RULES: rules[0].match, column 1: unknown name 'margin'"
            )
        ids = ["3", "1", "2"] if draft else ["1", "2", "3"]
        return Recommendations([explained(i, 0.5 - 0.1 * n, 0.1) for n, i in enumerate(ids[:k])])

    def list_rules(self, rule_set):
        return RuleSetInfo(rule_set, 2, raw={"rule_set": rule_set, "version": 2, "rules": [], "history": []})

    def set_rules(self, rules, rule_set):
        self.calls.append(("set_rules", {"rules": rules, "rule_set": rule_set}))
        return RuleSetInfo(rule_set, 3, raw={"rule_set": rule_set, "version": 3, "rules": 1})

    def rollback_rules(self, rule_set, to):
        self.calls.append(("rollback_rules", {"rule_set": rule_set, "to": to}))
        return RuleSetInfo(rule_set, 4, raw={"rule_set": rule_set, "version": 4, "restored": 2})

    def close(self):
        pass


def fetch(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def console(monkeypatch):
    from aisle_export.ops.console import app

    sdk = StandIn()
    monkeypatch.setattr(app, "RecClient", lambda *args, **kwargs: sdk)
    with running(ConsoleSettings("127.0.0.1:1")) as server:
        yield server.url, sdk


def test_routes_answer_previews_and_dry_runs_and_bad_input_names_the_field(console):
    url, sdk = console
    status, page = fetch(f"{url}/api/preview", {"query": "kettle", "k": 2, "surface": "home"})
    assert status == 200 and [r["item_id"] for r in page["results"]] == ["1", "2"]
    assert sdk.calls[-1][1] | {"explain": True, "surface": "home", "cache": False} == sdk.calls[-1][1]
    status, run = fetch(f"{url}/api/rules/dry-run", {"query": "kettle", "k": 3, "draft": '{"rules": []}'})
    assert status == 200 and [r["item_id"] for r in run["after"]] == ["3", "1", "2"] and run["moves"][0]["moved"] == 2
    assert "draft_rules" not in sdk.calls[-2][1] and sdk.calls[-1][1]["draft_rules"] == '{"rules": []}'
    for body, field in (
        ({"k": 0}, "k"),
        ({"k": "ten"}, "k"),
        ({"colour": "red"}, "colour"),
        ({"query": "x", "draft": "[" + '{"match": "margin > 1"}' + "]"}, "draft"),
        ({"query": "x"}, "draft"),  # no draft at all
    ):
        path = "/api/rules/dry-run" if field == "draft" else "/api/preview"
        status, error = fetch(f"{url}{path}", body)
        assert (status, error["field"]) == (400, field), error
        assert error["error"]
    assert fetch(f"{url}/api/info")[0] == 200, "the console is still up"


def test_a_read_only_console_refuses_rule_changes_and_stores_nothing(console):
    url, sdk = console
    status, error = fetch(f"{url}/api/rules/set", {"rules": '{"rules": []}'}, {TOKEN_HEADER: TOKEN})
    assert status == 403 and "read-only" in error["error"]
    assert fetch(f"{url}/api/rules/rollback", {"rule_set": "default"})[0] == 403
    assert not [c for c in sdk.calls if c[0] != "recommend"]
    assert fetch(f"{url}/api/shoppers/u1/events")[0] == 409  # no --state
    assert fetch(f"{url}/api/reports")[0] == 409  # no --reports


def test_with_the_flag_rule_changes_need_the_token_header(monkeypatch, tmp_path: Path):
    from aisle_export.ops.console import app

    sdk = StandIn()
    monkeypatch.setattr(app, "RecClient", lambda *args, **kwargs: sdk)
    settings = ConsoleSettings("127.0.0.1:1", allow_rule_changes=True, token=TOKEN, reports=tmp_path)
    with running(settings) as server:
        body = {"rule_set": "home", "rules": '{"rules": []}'}
        assert fetch(f"{server.url}/api/rules/set", body)[0] == 401
        assert fetch(f"{server.url}/api/rules/set", body, {TOKEN_HEADER: "wrong-token-of-some-length"})[0] == 401
        assert not sdk.calls
        status, answer = fetch(f"{server.url}/api/rules/set", body, {TOKEN_HEADER: TOKEN})
        assert status == 200 and answer["version"] == 3
        status, answer = fetch(f"{server.url}/api/rules/rollback", {"rule_set": "home", "to": 2}, {TOKEN_HEADER: TOKEN})
        assert status == 200 and sdk.calls[-1] == ("rollback_rules", {"rule_set": "home", "to": 2})
        assert fetch(f"{server.url}/reports/..%2F..%2Fetc%2Fpasswd")[0] == 404
        assert fetch(f"{server.url}/api/reports")[1] == {"reports": []}
