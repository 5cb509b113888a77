"""Merchandising rules and item attributes on a real tritonserver (``rerank`` × 2) and a real redis-server.

The session repository is copied with ``rerank``'s instance count set to 2 and item attributes
(``price``, ``brand``, ``tags``) written beside its index, as ``aisle index`` writes a catalog's
declared attributes. Each test names a rule set of its own (``rule_set=``), so the tests do not see
each other's rules. Reads go out in bursts of concurrent calls so both instances answer; the delay
from ``rules set`` to every answer showing the rules is printed (bounded here only by a liveness
limit: the delay itself is measured by ``python -m perf.bench_rules``).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aisle_cli
import pytest

from aisle import InvalidRequest, RecClient, exposure_event
from aisle_server.attributes import Attributes
from aisle_server.index import INDEX_DIRNAME, ITEMS_DIRNAME, CatalogIndex, rerank_versions
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

LIVENESS_S = 15.0
#: how long a change must show on every burst before it counts as on every instance (polls are 0.2 s apart)
STABLE_S = 0.6
BURST = 8
SCHEMA = {"price": "number", "brand": "string", "tags": "string_list"}


def price_of(item_id: str) -> float:
    return float(int(item_id) % 40) + 0.5


def attributes_of(item_id: str) -> dict[str, object]:
    number = int(item_id)
    return {
        "price": price_of(item_id),
        "brand": "acme" if number % 3 == 0 else "other",
        "tags": ["promo"] if number % 10 == 0 else ["regular"],
    }


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory) -> Path:
    served = tmp_path_factory.mktemp("rules") / "model_repository"
    shutil.copytree(repo, served, ignore=shutil.ignore_patterns("__pycache__"))
    config = served / "rerank" / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1\n", "count: 2\n", 1))
    directory = served / "rerank" / str(rerank_versions(served)[-1]) / INDEX_DIRNAME
    index = CatalogIndex.load(directory, searchable=False)
    Attributes.of(SCHEMA, [attributes_of(i) for i in index.item_ids.tolist()]).save(directory / ITEMS_DIRNAME)
    return served


@pytest.fixture(scope="module")
def rules_server(served, redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-rules.log"
    with TritonServer(served, log_file=log, state_url=redis_server.url) as running:
        yield running


@pytest.fixture
def client(rules_server):
    with RecClient(rules_server.grpc_url, timeout_s=30, retry=None, embed_cache_size=0) as sdk:
        yield sdk


def _burst(client: RecClient, **kwargs) -> list[list]:
    """``BURST`` identical recommend calls at once (both instances answer some)."""
    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(lambda _: client.recommend(cache=False, **kwargs), range(BURST)))


def _ids(answers: list[list]) -> list[list[str]]:
    return [[r.item_id for r in recs] for recs in answers]


def _wait_until(check, what: str) -> float:
    """Seconds until ``check`` first held, once it has held on every burst for ``STABLE_S``: one burst
    may be batched onto one ``rerank`` instance, so a single pass does not show that both have polled."""
    start = time.monotonic()
    first = None
    while time.monotonic() - start < LIVENESS_S:
        if not check():
            first = None
        elif first is None:
            first = time.monotonic()
        elif time.monotonic() - first >= STABLE_S:
            return first - start
        time.sleep(0.02)
    raise AssertionError(f"{what}: not on every answer for {STABLE_S} s within {LIVENESS_S} s")


QUERY = "star wars space adventure"


def test_a_boost_changes_the_order_as_the_explanation_says(client):
    before = client.recommend(QUERY, k=10, explain=True, cache=False)
    last = before[-1]
    lift = round(before[0].score - last.score + 0.25, 4)
    client.set_rules(
        [{"id": "lift-last", "effect": "boost", "match": f"item_id == '{last.item_id}'", "add": lift}], "t-boost"
    )
    delay = _wait_until(
        lambda: all(ids[0] == last.item_id for ids in _ids(_burst(client, query=QUERY, k=10, rule_set="t-boost"))),
        "boost",
    )
    print(f"boost on every instance {delay:.2f} s after rules set")
    after = client.recommend(QUERY, k=10, explain=True, cache=False, rule_set="t-boost")
    top = after[0]
    assert top.item_id == last.item_id
    assert top.explanation.rules == pytest.approx(lift, abs=1e-4)
    assert top.explanation.total == pytest.approx(top.score, abs=1e-4)
    assert top.score == pytest.approx(last.score + lift, abs=1e-4)
    assert [dict(e) for e in top.explanation.rule_effects] == [
        {"rule": "lift-last", "effect": "boost", "delta": pytest.approx(lift)}
    ]
    # everything else keeps its order and its score, and says no rule touched it
    assert [r.item_id for r in after[1:]] == [r.item_id for r in before[:-1]]
    assert all(r.explanation.rules == 0 and r.explanation.rule_effects == () for r in after[1:])
    # the request can switch rules off
    assert [r.item_id for r in client.recommend(QUERY, k=10, cache=False, rule_set="t-boost", rules=False)] == [
        r.item_id for r in before
    ]


def test_a_pin_holds_its_position_on_both_replicas_within_a_second(client, rules_server):
    feed = client.recommend(k=10, cache=False, surface="home")
    outside = next(str(i) for i in range(1, 1683) if str(i) not in {r.item_id for r in feed})
    client.set_rules(
        [{"id": "hero", "when": "surface == 'home'", "effect": "pin", "item": outside, "position": 3}], "t-pin"
    )
    delay = _wait_until(
        lambda: all(
            ids[2] == outside for ids in _ids(_burst(client, k=10, surface="home", rule_set="t-pin", explain=True))
        ),
        "pin",
    )
    print(f"pin on every instance {delay:.2f} s after rules set")
    for _ in range(3):  # it holds, on both instances
        answers = _burst(client, k=10, surface="home", rule_set="t-pin", explain=True)
        assert all(recs[2].item_id == outside for recs in answers)
        assert all(
            {"rule": "hero", "effect": "pin", "position": 3} in [dict(e) for e in recs[2].explanation.rule_effects]
            for recs in answers
        )
    other_surface = client.recommend(k=10, cache=False, surface="pdp", rule_set="t-pin")
    assert outside not in [r.item_id for r in other_surface]  # its `when` does not hold there
    assert _instances(rules_server) == 2  # the bursts above were answered by both


def _instances(server) -> int:
    """How many ``rerank`` instances serve (each reports its own live-catalog gauge, labelled by instance)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{server.host}:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(1 for line in text.splitlines() if line.startswith("aisle_catalog_overlay_items{"))


def test_a_slot_fills_its_share_and_stays_empty_when_nothing_qualifies(client):
    # four candidates from below the page get a tag live (a string_list attribute set by update_items)
    deeper = [r.item_id for r in client.recommend(QUERY, k=40, cache=False, rules=False)][15:40:6]
    client.update_items([{"item_id": item, "tags": ["clearance"]} for item in deeper])
    client.set_rules([{"id": "promo", "effect": "slot", "match": "'clearance' in tags", "share": 0.3}], "t-slot")

    def slotted(recs) -> list:
        return [r for r in recs if {"rule": "promo", "effect": "slot"} in [dict(e) for e in r.explanation.rule_effects]]

    _wait_until(
        lambda: all(
            len(slotted(recs)) == 3 for recs in _burst(client, query=QUERY, k=10, rule_set="t-slot", explain=True)
        ),
        "slot",
    )
    page = client.recommend(QUERY, k=10, cache=False, explain=True, rule_set="t-slot")
    assert len(page) == 10 and [r.item_id for r in slotted(page)] == deeper[:3]  # the best three of the four
    # nothing qualifies: the page is full of ordinary items, never a filtered-out one
    client.set_rules(
        [
            {"id": "no-promo", "effect": "filter", "match": "'promo' in tags", "action": "drop"},
            {"id": "promo", "effect": "slot", "match": "'promo' in tags", "share": 0.5},
        ],
        "t-slot",
    )
    _wait_until(
        lambda: all(
            all(int(r.item_id) % 10 for r in recs) for recs in _burst(client, query=QUERY, k=10, rule_set="t-slot")
        ),
        "empty slot",
    )
    page = client.recommend(QUERY, k=10, cache=False, explain=True, rule_set="t-slot")
    assert len(page) == 10 and all(r.explanation.rule_effects == () for r in page)


def test_rollback_restores_the_previous_page(client):
    client.set_rules([{"id": "acme", "effect": "filter", "match": "brand == 'acme'"}], "t-roll")
    _wait_until(
        lambda: all(all(int(i) % 3 == 0 for i in ids) for ids in _ids(_burst(client, query=QUERY, rule_set="t-roll"))),
        "v1",
    )
    first = [r.item_id for r in client.recommend(QUERY, cache=False, rule_set="t-roll")]
    info = client.set_rules([{"id": "other", "effect": "filter", "match": "brand == 'other'"}], "t-roll")
    assert info.version == 2
    _wait_until(
        lambda: all(all(int(i) % 3 for i in ids) for ids in _ids(_burst(client, query=QUERY, rule_set="t-roll"))),
        "v2",
    )
    back = client.rollback_rules("t-roll")
    assert (back.version, back.restored) == (3, 1)
    seen: list = []

    def restored() -> bool:
        seen[:] = _ids(_burst(client, query=QUERY, rule_set="t-roll"))
        return all(ids == first for ids in seen)

    try:
        _wait_until(restored, "rollback")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; before {first}, now {seen}") from None
    listed = client.list_rules("t-roll")
    assert listed.version == 3 and [dict(r)["id"] for r in listed.rules] == ["acme"]
    assert [h["op"] for h in listed.history] == ["set", "set", "rollback"]


def test_a_rule_on_a_missing_attribute_is_refused_at_set_time(client, tmp_path):
    with pytest.raises(InvalidRequest, match=r"rules\[0\]\.match, column 1: unknown name 'margin'"):
        client.set_rules([{"id": "m", "effect": "boost", "match": "margin > 0.2", "add": 0.1}], "t-bad")
    assert client.list_rules("t-bad").version == 0  # nothing was stored
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"id": "p", "effect": "filter", "match": "price < \'cheap\'"}]}')
    done = aisle_cli.run("rules", "set", "--file", str(bad), "--rule-set", "t-bad", "--url", client.url)
    assert done.returncode == 1 and "rules[0].match, column 1: cannot compare a number with a string" in done.stderr
    good = tmp_path / "good.json"
    good.write_text('{"rules": [{"id": "p", "effect": "filter", "match": "price < 10"}]}')
    done = aisle_cli.run("rules", "set", "--file", str(good), "--rule-set", "t-bad", "--url", client.url)
    assert done.returncode == 0 and done.last_json()["version"] == 1
    listed = aisle_cli.run("rules", "list", "--rule-set", "t-bad", "--url", client.url).last_json()
    assert listed["rules"] == [{"id": "p", "effect": "filter", "match": "price < 10"}]
    with pytest.raises(InvalidRequest, match="rule_set='no such set'"):
        client.recommend(QUERY, cache=False, rule_set="no such set")  # not a name


def test_price_filters_work_on_live_changed_prices(client):
    client.set_rules([{"id": "cheap", "effect": "filter", "match": "price < 5"}], "t-price")
    unfiltered = [r.item_id for r in client.recommend(QUERY, k=20, cache=False, rules=False)]
    pricey = next(i for i in unfiltered if price_of(i) >= 5)
    _wait_until(
        lambda: all(all(price_of(i) < 5 for i in ids) for ids in _ids(_burst(client, query=QUERY, rule_set="t-price"))),
        "price filter",
    )
    client.update_items([{"item_id": pricey, "price": 1.0}])
    _wait_until(
        lambda: all(pricey in ids for ids in _ids(_burst(client, query=QUERY, k=20, rule_set="t-price"))),
        "live-changed price",
    )
    client.update_items([{"item_id": pricey, "price": 99.0}])
    _wait_until(
        lambda: all(pricey not in ids for ids in _ids(_burst(client, query=QUERY, k=20, rule_set="t-price"))),
        "price back up",
    )
    with pytest.raises(InvalidRequest, match=rf"item '{pricey}': attribute 'price' is declared number"):
        client.update_items([{"item_id": pricey, "price": "cheap"}])
    with pytest.raises(InvalidRequest, match="colour"):
        client.update_items([{"item_id": pricey, "colour": "red"}])
    assert json.loads(json.dumps([r.item_id for r in client.recommend(QUERY, k=3, cache=False)]))


def test_explore_shows_a_new_item_until_its_tracked_exposures_reach_the_cap(client):
    plain = [r.item_id for r in client.recommend(QUERY, k=40, cache=False, rules=False)]
    new = plain[31]  # a candidate far below the page
    client.set_rules(
        [{"id": "new", "effect": "explore", "match": f"item_id == '{new}'", "share": 0.1, "max_exposures": 2}],
        "t-explore",
    )

    def explored(recs) -> bool:
        return any(
            r.item_id == new and [dict(e)["effect"] for e in r.explanation.rule_effects] == ["explore"] for r in recs
        )

    _wait_until(
        lambda: all(explored(recs) for recs in _burst(client, query=QUERY, rule_set="t-explore", explain=True)),
        "explore",
    )
    page = client.recommend(QUERY, cache=False, rule_set="t-explore", explain=True)
    effect = next(dict(e) for r in page for e in r.explanation.rule_effects)
    assert (effect["arm"], effect["exposures"], effect["clicks"]) == ("thompson", 0, 0)
    unexplained = client.recommend(QUERY, cache=False, rule_set="t-explore")  # every answer says it
    position = next(j for j, r in enumerate(unexplained) if r.item_id == new)
    assert [r.explored_by for r in unexplained] == [("new" if j == position else None) for j in range(len(unexplained))]
    exposure = json.loads(exposure_event(unexplained, "explorer").properties)
    assert exposure["explored"] == [{"position": position, "rule": "new", "arm": "thompson"}]
    for n in range(2):  # two tracked exposures of it: shown enough, no longer explored
        client.track(f"explorer-{n}", new, "exposure", properties={"items": [new]})
    _wait_until(
        lambda: all(not explored(recs) for recs in _burst(client, query=QUERY, rule_set="t-explore", explain=True)),
        "exposure cap",
    )
