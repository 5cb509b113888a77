"""Merchandising rules and item attributes: parsing with places, evaluation, the ranking hook."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tiny_catalog import tiny_index, unit

from aisle_contract import SCORE_COMPONENT_NAMES, ItemChangeError, check_item_change
from aisle_server.attributes import Attributes
from aisle_server.errors import InvalidInput
from aisle_server.live_catalog import Change, Overlay, live_index
from aisle_server.ranking import RankingConfig, RankRequest, RankResult, rank
from aisle_server.rule_store import EMPTY, LiveRules, RuleAdmin
from aisle_server.rules import RuleError, parse

N = 40
SCHEMA = {"price": "number", "brand": "string", "tags": "string_list", "featured": "bool"}
RULES_COLUMN = SCORE_COMPONENT_NAMES.index("rules")


def attributes() -> Attributes:
    values = []
    for r in range(N):
        item: dict[str, object] = {"price": float(r), "brand": "acme" if r % 4 == 0 else "other"}
        if r % 5 == 0:
            item["tags"] = ["promo", "new"]
        if r % 7 == 0:
            item["featured"] = True
        if r == 3:
            del item["price"]  # missing
        values.append(item)
    return Attributes.of(SCHEMA, values)


INDEX = replace(tiny_index(N, 8, 3, np.full(N, 900.0), 100, 4, {1: ([5], [1.0])}), attributes=attributes())


def request(rules_json=None, query=True, k=10, surface="", explain=True, **knobs):
    config = RankingConfig(surface=surface, **knobs)
    rule_set = parse(rules_json, SCHEMA, "default", 1) if rules_json is not None else None
    embedding = unit(np.arange(8.0)) if query else None
    return RankRequest(
        embedding, [], np.zeros(0), k, 1000.0, config, "red shoe" if query else "", explain=explain, rules=rule_set
    )


def ids(result) -> list[str]:
    return result.item_ids


# -- parsing: every mistake is refused with its place --------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"rules": [{"id": "a", "effect": "boost", "match": "prise < 3", "add": 1}]}', "rules[0].match, column 1"),
        ('{"rules": [{"id": "a", "effect": "filter", "match": "price < \'x\'"}]}', "rules[0].match, column 1"),
        ('{"rules": [{"id": "a", "effect": "filter", "match": "brand < \'x\'"}]}', "rules[0].match"),
        ('{"rules": [{"id": "a", "effect": "filter", "match": "price <"}]}', "rules[0].match, column"),
        ('{"rules": [{"id": "a", "effect": "filter", "match": "__import__(\'os\')"}]}', "rules[0].match"),
        ('{"rules": [{"id": "a", "effect": "filter", "match": "price.real > 1"}]}', "rules[0].match"),
        ('{"rules": [{"id": "a", "effect": "pin", "item": "i1", "position": 0}]}', "rules[0].position"),
        ('{"rules": [{"id": "a", "effect": "slot", "match": "featured", "share": 1.5}]}', "rules[0].share"),
        ('{"rules": [{"id": "a", "effect": "boost", "match": "featured", "add": -1}]}', "rules[0].add"),
        ('{"rules": [{"id": "a", "effect": "bury", "match": "featured", "multiply": 2}]}', "rules[0].multiply"),
        ('{"rules": [{"id": "a", "effect": "filter", "when": "price > 1", "match": "featured"}]}', "rules[0].when"),
        ('{"rules": [{"id": "a", "effect": "shuffle"}]}', "rules[0].effect"),
        (
            '{"rules": [{"id": "a", "effect": "filter", "match": "featured"}, {"id": "a", "effect": "filter", '
            '"match": "featured"}]}',
            "rules[1].id",
        ),
        ('{"rules": [{"id": "a", "effect": "filter", "match": "featured", "colour": 1}]}', "rules[0]"),
        ('{"rules": [', "line 1, column"),
    ],
)
def test_a_malformed_rule_is_refused_with_its_place(text, where):
    with pytest.raises(RuleError) as caught:
        parse(text, SCHEMA)
    assert str(caught.value).startswith(where), str(caught.value)


def test_a_missing_attribute_is_named_with_the_known_ones():
    with pytest.raises(RuleError, match=r"rules\[0\]\.match, column 15: unknown name 'margin' \(known: .*price"):
        parse('[{"id": "m", "effect": "boost", "match": "price > 1 and margin > 0.2", "add": 0.1}]', SCHEMA)


# -- effects ---------------------------------------------------------------------------------------


def test_no_rules_and_an_empty_rule_set_rank_alike():
    plain = rank(INDEX, request())
    empty = rank(INDEX, request('{"rules": []}'))
    assert ids(plain) == ids(empty)
    np.testing.assert_array_equal(plain.scores, empty.scores)


def test_a_boost_moves_matching_items_up_and_the_explanation_says_by_how_much():
    plain = rank(INDEX, request(k=N))
    target = ids(plain)[-1]
    boosted = rank(
        INDEX, request(f'[{{"id": "lift", "effect": "boost", "match": "item_id == \'{target}\'", "add": 5}}]', k=N)
    )
    assert ids(boosted)[0] == target
    assert boosted.components[0, RULES_COLUMN] == pytest.approx(5.0)
    np.testing.assert_allclose(boosted.components.sum(axis=1), boosted.scores, atol=1e-5)
    assert boosted.rule_effects[0] == [{"rule": "lift", "effect": "boost", "delta": 5.0}]
    assert all(effects == [] for effects in boosted.rule_effects[1:])


def test_multiply_and_bury_scale_by_the_score_magnitude():
    rule = '[{"id": "half", "effect": "bury", "match": "brand == \'acme\'", "multiply": 0.5}]'
    result = rank(INDEX, request(rule, k=N))
    plain = dict(zip(ids(rank(INDEX, request(k=N))), rank(INDEX, request(k=N)).scores))
    for item, score, parts in zip(ids(result), result.scores, result.components):
        if int(item[1:]) % 4 == 0:
            assert score == pytest.approx(plain[item] - 0.5 * abs(plain[item]), abs=1e-5)
            assert parts[RULES_COLUMN] < 0 or plain[item] == 0
        else:
            assert score == pytest.approx(plain[item], abs=1e-6)


def test_filters_keep_or_drop_and_missing_numbers_never_match():
    cheap = rank(INDEX, request('[{"id": "cheap", "effect": "filter", "match": "price < 10"}]', k=N))
    assert ids(cheap) and all(int(i[1:]) < 10 and i != "i3" for i in ids(cheap))
    no_promo = rank(
        INDEX, request('[{"id": "np", "effect": "filter", "match": "\'promo\' in tags", "action": "drop"}]')
    )
    assert all(int(i[1:]) % 5 for i in ids(no_promo))


def test_when_limits_a_rule_to_its_surface():
    rule = '[{"id": "home-only", "when": "surface == \'home\'", "effect": "filter", "match": "featured"}]'
    assert all(int(i[1:]) % 7 == 0 for i in ids(rank(INDEX, request(rule, surface="home"))))
    assert ids(rank(INDEX, request(rule, surface="pdp"))) == ids(rank(INDEX, request()))


def test_a_pin_puts_its_item_at_its_position_even_from_outside_the_candidates():
    plain = ids(rank(INDEX, request(k=5, candidates=5)))
    outside = next(f"i{r}" for r in range(N) if f"i{r}" not in plain)
    rule = f'[{{"id": "hero", "effect": "pin", "item": "{outside}", "position": 2}}]'
    result = rank(INDEX, request(rule, k=5, candidates=5))
    assert ids(result)[1] == outside and len(ids(result)) == 5
    assert result.rule_effects[1] == [{"rule": "hero", "effect": "pin", "position": 2}]
    np.testing.assert_allclose(result.components.sum(axis=1), result.scores, atol=1e-5)


def test_a_pin_obeys_filters_and_the_request():
    rule = '[{"id": "hero", "effect": "pin", "item": "i9", "position": 1}, {"id": "f", "effect": "filter", "match": "price < 5"}]'
    assert "i9" not in ids(rank(INDEX, request(rule, k=5)))
    pin = '[{"id": "hero", "effect": "pin", "item": "i9", "position": 1}]'
    excluded = replace(request(pin, k=5), exclude_ids=["i9"])
    assert "i9" not in ids(rank(INDEX, excluded))


def test_a_slot_fills_its_share_with_the_best_matching_items():
    rule = '[{"id": "promo", "effect": "slot", "match": "\'promo\' in tags", "share": 0.3}]'
    result = rank(INDEX, request(rule, k=10, candidates=N))
    slotted = [
        i for i, effects in zip(ids(result), result.rule_effects) if {"rule": "promo", "effect": "slot"} in effects
    ]
    assert len(slotted) == 3 and all(int(i[1:]) % 5 == 0 for i in slotted)
    assert len(ids(result)) == 10


def test_a_slot_nothing_qualifies_for_stays_empty_and_filtered_items_never_fill_it():
    rule = (
        '[{"id": "drop-promo", "effect": "filter", "match": "\'promo\' in tags", "action": "drop"},'
        ' {"id": "promo", "effect": "slot", "match": "\'promo\' in tags", "share": 0.5}]'
    )
    result = rank(INDEX, request(rule, k=10, candidates=N))
    assert len(ids(result)) == 10 and all(int(i[1:]) % 5 for i in ids(result))
    assert all(effects == [] for effects in result.rule_effects)


def test_the_cold_fallback_applies_rules_too():
    rule = '[{"id": "cheap", "effect": "filter", "match": "price < 8"}]'
    result = rank(INDEX, request(rule, query=False, k=5))
    assert ids(result) and all(int(i[1:]) < 8 for i in ids(result))


# -- attributes through live changes ------------------------------------------------------------


def test_live_changes_set_attributes_and_rules_read_them():
    overlay = Overlay()
    overlay.apply([Change("i30", "upsert", {"price": 1.0}), Change("new", "upsert", {"title": "t", "price": 2.0})])
    live = live_index(INDEX, overlay)
    assert live.attributes.values(int(live.rows_of(["i30"])[0]))["price"] == 1.0
    assert live.attributes.values(int(live.rows_of(["new"])[0])) == {"price": 2.0}
    result = rank(live, request('[{"id": "cheap", "effect": "filter", "match": "price < 3"}]', k=N))
    assert "i30" in ids(result) and "new" in ids(result)


def test_attribute_changes_are_checked_against_the_declaration_naming_item_and_field():
    assert check_item_change("a", "upsert", {"price": 3, "tags": ["x"]}, SCHEMA) == {"price": 3.0, "tags": ["x"]}
    with pytest.raises(ItemChangeError, match="item 'a': attribute 'price' is declared number") as caught:
        check_item_change("a", "upsert", {"price": "cheap"}, SCHEMA)
    assert caught.value.field == "price"
    with pytest.raises(ItemChangeError, match="unknown field 'margin'"):
        check_item_change("a", "upsert", {"margin": 0.3}, SCHEMA)
    with pytest.raises(ItemChangeError, match="tags"):
        check_item_change("a", "upsert", {"tags": "x"}, SCHEMA)
    assert check_item_change("a", "upsert", {"margin": 0.3}, None) == {"margin": 0.3}  # the SDK: the server decides


def test_attributes_round_trip_through_the_index_files(tmp_path):
    INDEX.attributes.save(tmp_path)
    back = Attributes.load(tmp_path)
    assert back.schema == SCHEMA
    assert [back.values(r) for r in range(N)] == [INDEX.attributes.values(r) for r in range(N)]


# -- storage -----------------------------------------------------------------------------------------


class MemoryStore:
    """``RuleStore``'s interface over a list (the Redis one is exercised by the integration tests)."""

    def __init__(self):
        self.entries = []

    def append(self, name, source, op="set", of=0):
        version = 1 + sum(1 for _, e in self.entries if e["set"] == name)
        entry_id = f"{len(self.entries) + 1}-0"
        self.entries.append(
            (entry_id, {"set": name, "version": str(version), "op": op, "rules": source, "of": str(of)})
        )
        return version, entry_id

    def read_after(self, last_id):
        start = 0 if last_id is None else int(last_id.split("-")[0])
        return self.entries[start:]

    def history(self, name):
        import json

        return [
            {"version": int(e["version"]), "op": e["op"], "of": int(e["of"]), "rules": json.loads(e["rules"])["rules"]}
            for _, e in self.entries
            if e["set"] == name
        ]


def test_versions_rollback_and_what_each_instance_serves():
    store = MemoryStore()
    admin = RuleAdmin(store, SCHEMA)
    live = LiveRules(store)  # type: ignore[arg-type]
    first = '[{"id": "a", "effect": "filter", "match": "featured"}]'
    assert admin.set("default", first)["version"] == 1
    assert admin.set("default", '[{"id": "b", "effect": "filter", "match": "price < 3"}]')["version"] == 2
    live.refresh()
    assert live.resolve(RankingConfig(), SCHEMA).rules[0].id == "b"
    assert admin.rollback("default") == {"rule_set": "default", "version": 3, "restored": 1}
    live.refresh()
    assert live.resolve(RankingConfig(), SCHEMA).rules[0].id == "a"
    assert admin.rollback("default", 0)["version"] == 4
    live.refresh()
    assert live.resolve(RankingConfig(), SCHEMA) is None  # version 0: no rules
    assert store.entries[-1][1]["rules"] == EMPTY
    assert live.resolve(RankingConfig(rules=False), SCHEMA) is None
    assert live.resolve(RankingConfig(rule_set="nope"), SCHEMA) is None  # not read yet (or a typo): no rules
    with pytest.raises(InvalidInput, match=r"RULES.*rules\[0\]\.match"):
        admin.set("default", '[{"id": "a", "effect": "filter", "match": "margin > 1"}]')
    assert admin.list("default")["version"] == 4


# -- the catalog's declaration ---------------------------------------------------------------------


def test_a_catalog_declares_its_attributes_in_a_side_file_and_the_index_keeps_them(tmp_path):
    import json

    from aisle_export.data.catalog import CatalogError, read_catalog
    from aisle_export.index.writing import catalog_index
    from aisle_server.index import CatalogIndex

    path = tmp_path / "shop.csv"
    path.write_text("item_id,title,price,brand,tags,on_sale\n1,Kettle,12.5,acme,kitchen|sale,yes\n2,Mug,,,,\n")
    (tmp_path / "shop.attributes.json").write_text(
        json.dumps({"price": "number", "brand": "string", "tags": "string_list", "on_sale": "bool"})
    )
    catalog = read_catalog(path)
    assert catalog.attribute_values == [
        {"price": 12.5, "brand": "acme", "tags": ["kitchen", "sale"], "on_sale": True},
        {},
    ]
    index = catalog_index(catalog, np.eye(2, 4, dtype=np.float32))
    index.save(tmp_path / "index")
    loaded = CatalogIndex.load(tmp_path / "index")
    assert loaded.attributes.values(0)["tags"] == ["kitchen", "sale"] and loaded.attributes.values(1) == {}
    path.write_text("item_id,title,price\n1,Kettle,cheap\n")
    with pytest.raises(CatalogError, match=r"line 2.*price.*declared number"):
        read_catalog(path)
    (tmp_path / "shop.attributes.json").write_text('{"score": "number"}')
    with pytest.raises(CatalogError, match="reserved"):
        read_catalog(path)


def test_compaction_keeps_the_attributes_live_changes_set():
    from aisle_export.ops.compaction import compacted

    overlay = Overlay()
    overlay.apply([Change("i1", "delete"), Change("i2", "upsert", {"price": 99.0})])
    out = compacted(INDEX, overlay, "0-0", 1)
    assert len(out) == N - 1
    assert out.attributes.values(int(out.rows_of(["i2"])[0]))["price"] == 99.0


def test_tag_masks_follow_live_changes():
    overlay = Overlay()
    first = live_index(INDEX, overlay)
    assert first.attributes.contains("tags", "promo")[5]  # computed once, kept on the attributes
    overlay.apply(
        [Change("i5", "upsert", {"tags": ["plain"]}), Change("n1", "upsert", {"title": "t", "tags": ["promo"]})]
    )
    base = INDEX.attributes
    base.contains("tags", "promo")
    live = live_index(INDEX, overlay)
    mask = live.attributes.contains("tags", "promo")
    assert not mask[5] and mask[int(live.rows_of(["n1"])[0])] and mask[10]
    result = rank(live, request("""[{"id": "p", "effect": "filter", "match": "'promo' in tags"}]""", k=N))
    assert "i5" not in ids(result) and "n1" in ids(result)


def test_several_tag_tests_in_one_expression_each_test_their_own_tag():
    rule = """[{"id": "p", "effect": "filter", "match": "'promo' in tags and 'new' not in tags or 'x' in tags"}]"""
    assert ids(rank(INDEX, request(rule, k=N))) == []  # every promo item here is also new
    rule = """[{"id": "p", "effect": "filter", "match": "'new' in tags and 'promo' in tags"}]"""
    assert sorted(ids(rank(INDEX, request(rule, k=N)))) == sorted(f"i{r}" for r in range(0, N, 5))


# -- exploration -----------------------------------------------------------------------------------


def test_counts_come_from_exposure_and_click_events():
    import json

    from aisle_server.exploration import ItemCounts

    counts = ItemCounts()
    counts.add({"event_type": "exposure", "item_id": "i1", "properties": json.dumps({"items": ["i1", "i2"]})})
    counts.add({"event_type": "exposure", "item_id": "i1", "properties": json.dumps({"items": ["i1"]})})
    counts.add({"event_type": "click", "item_id": "i1"})
    counts.add({"event_type": "view", "item_id": "i3"})
    counts.add({"event_type": "exposure", "item_id": "x", "properties": "not json"})
    exposures, clicks = counts.of(["i1", "i2", "i3"])
    assert exposures.tolist() == [2, 1, 0] and clicks.tolist() == [1, 0, 0]


def test_explore_gives_little_shown_matching_items_their_share_spread_over_the_page():
    from aisle_server.exploration import ItemCounts
    from aisle_server.rule_store import uses_counts

    counts = ItemCounts()
    for r in range(N):
        counts.exposures[f"i{r}"] = 0 if r % 4 == 0 else 500  # only the acme items are new
    rule_set = replace(
        parse('[{"id": "new", "effect": "explore", "match": "brand == \'acme\'", "share": 0.2}]', SCHEMA),
        counts=counts,
    )
    assert uses_counts(rule_set)
    plain = ids(rank(INDEX, request(k=10, candidates=N)))
    result = rank(INDEX, replace(request(k=10, candidates=N), rules=rule_set))
    explored = [(j, item) for j, (item, effects) in enumerate(zip(ids(result), result.rule_effects)) if effects]
    assert len(explored) == 2 and all(int(item[1:]) % 4 == 0 for _, item in explored)
    assert [j for j, _ in explored] != [0, 1] and len(ids(result)) == 10
    effect = result.rule_effects[explored[0][0]][0]
    assert effect["effect"] == "explore" and effect["arm"] == "thompson" and effect["exposures"] == 0
    assert set(ids(result)) - {item for _, item in explored} <= set(plain)
    assert [j for j, rule in enumerate(result.explored) if rule] == [j for j, _ in explored]
    assert {rule for rule in result.explored if rule} == {"new"}
    unexplained = rank(INDEX, replace(request(k=10, candidates=N, explain=False), rules=rule_set))
    assert unexplained.rule_effects is None and sum(map(bool, unexplained.explored)) == 2  # said without explain
    for r in range(N):
        counts.exposures[f"i{r}"] = 500  # nothing is new any more: the page is the plain one
    assert ids(rank(INDEX, replace(request(k=10, candidates=N), rules=rule_set))) == plain


def test_an_explore_rule_is_checked_like_the_others():
    with pytest.raises(RuleError, match=r"rules\[0\]\.share"):
        parse('[{"id": "e", "effect": "explore", "match": "has(price)", "share": 0.9}]', SCHEMA)
    with pytest.raises(RuleError, match=r"rules\[0\]\.max_exposures"):
        parse('[{"id": "e", "effect": "explore", "match": "has(price)", "share": 0.1, "max_exposures": 0}]', SCHEMA)


def test_an_exposure_event_records_the_explored_positions_the_answer_carries_without_explain():
    import json

    from aisle import exposure_event
    from aisle.responses import split_recommendations
    from aisle_server.rerank_io import pack_results

    packed = pack_results(
        [
            RankResult(["a", "b", "c"], np.ones(3, np.float32), 0, explored=["", "new", ""]),
            RankResult(["d"], np.ones(1, np.float32), 0),  # no rule acted: nothing explored, padded
        ]
    )
    first, second = split_recommendations(
        packed["ITEM_IDS"], packed["SCORES"], packed["UNKNOWN_HISTORY"], explored=packed["EXPLORED"]
    )
    assert [r.explored_by for r in first] == [None, "new", None] and first[1].explanation is None
    assert json.loads(exposure_event(first, "u1").properties)["explored"] == [
        {"position": 1, "rule": "new", "arm": "thompson"}
    ]
    assert [r.explored_by for r in second] == [None]
    assert "explored" not in json.loads(exposure_event(second, "u1").properties)


def test_the_sdk_reads_a_ranker_ordered_row_without_rules_as_rules_zero():
    from aisle.responses import split_recommendations
    from aisle_contract import RANKER_FEATURE_NAMES

    ids = np.array([[b"a"]], dtype=object)
    scores = np.array([[0.5]], dtype=np.float32)
    components = np.full((1, 1, len(SCORE_COMPONENT_NAMES)), np.nan, dtype=np.float32)  # the ranker's row
    contributions = np.zeros((1, 1, len(RANKER_FEATURE_NAMES) + 1), dtype=np.float32)
    contributions[0, 0, -1] = 0.5
    (row,) = split_recommendations(ids, scores, None, components, np.zeros((1, 1), np.int32), contributions)
    assert row[0].explanation.rules == 0.0 and row[0].explanation.total == pytest.approx(0.5)


def test_a_draft_rule_set_applies_to_its_request_only_and_a_bad_one_names_draft_rules():
    store = MemoryStore()
    RuleAdmin(store, SCHEMA).set("default", '[{"id": "a", "effect": "filter", "match": "featured"}]')
    live = LiveRules(store)  # type: ignore[arg-type]
    live.refresh()
    draft = '[{"id": "cheap", "effect": "filter", "match": "price < 3"}]'
    assert live.resolve(RankingConfig(draft_rules=draft), SCHEMA).rules[0].id == "cheap"
    assert live.resolve(RankingConfig(), SCHEMA).rules[0].id == "a", "the stored set is untouched"
    assert len(store.entries) == 1, "a draft writes nothing"
    assert live.resolve(RankingConfig(draft_rules='{"rules": []}'), SCHEMA) is None  # an empty draft: no rules
    assert live.resolve(RankingConfig(draft_rules=draft, rules=False), SCHEMA) is None
    with pytest.raises(InvalidInput, match=r"DRAFT_RULES.*rules\[0\]\.match, column 1: unknown name 'margin'"):
        live.resolve(RankingConfig(draft_rules='[{"id": "m", "effect": "filter", "match": "margin > 1"}]'), SCHEMA)
    with pytest.raises(ValueError, match="draft_rules is 262145 bytes; at most 262144"):
        RankingConfig(draft_rules="x" * (256 * 1024 + 1)).validate()
