"""Experiment arms: deterministic assignment, shares, validation, and what recommend does with an arm."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aisle import Arm, Experiment, ExperimentError, InvalidRequest, Recommendations
from aisle._core import ClientCore
from aisle.batching import ThreadBatcher
from aisle.plans import Call
from aisle_contract.experiments import HOLDOUT, unit_hash

SHARES = {"control": 0.45, "ranker_b": 0.30, "ranker_c": 0.15}
EXPERIMENT = Experiment(
    "feed-ranker",
    "2024-06-salt",
    [
        Arm("control", 0.45),
        Arm("ranker_b", 0.30, {"diversity": 0.3, "diversity_method": "mmr"}),
        Arm("ranker_c", 0.15, {"feed_popularity_weight": 2.0}, model="recommend_c"),
    ],
    holdout=0.10,
)
IDS = [f"shopper-{i}" for i in range(100_000)]


def test_shares_on_100k_shoppers_match_the_configuration_within_one_point():
    arms = [EXPERIMENT.arm_of(shopper) for shopper in IDS]
    expected = {HOLDOUT: 0.10, **SHARES}
    deviations = {arm: arms.count(arm) / len(IDS) - share for arm, share in expected.items()}
    print("\nshare deviation (percentage points):", {a: round(100 * d, 3) for a, d in deviations.items()})
    assert set(arms) == set(expected)
    assert max(abs(d) for d in deviations.values()) < 0.01


def test_the_hash_is_uniform():
    values = np.array([unit_hash("salt", shopper) for shopper in IDS[:20_000]])
    counts, _ = np.histogram(values, bins=20, range=(0.0, 1.0))
    assert values.min() >= 0.0 and values.max() < 1.0
    chi2 = float((((counts - 1000) ** 2) / 1000).sum())
    assert chi2 < 43.8  # chi-square, 19 degrees of freedom, p = 0.001


def test_the_same_shopper_gets_the_same_arm_in_another_process():
    ids = IDS[:2000]
    code = (
        "import json, sys\n"
        "from aisle_contract.experiments import Experiment\n"
        "exp = Experiment.from_mapping(json.loads(sys.argv[1]))\n"
        "print(json.dumps([exp.arm_of(i) for i in json.loads(sys.argv[2])]))\n"
    )
    config = {
        "name": EXPERIMENT.name,
        "salt": EXPERIMENT.salt,
        "holdout": EXPERIMENT.holdout,
        "arms": [{"name": a.name, "share": a.share, "knobs": dict(a.knobs), "model": a.model} for a in EXPERIMENT.arms],
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONHASHSEED": "12345"}  # another str hash
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config), json.dumps(ids)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == [EXPERIMENT.arm_of(i) for i in ids]


def test_a_new_salt_reshuffles_and_a_share_change_moves_only_the_shoppers_between_boundaries():
    ids = IDS[:10_000]
    half = Experiment("e", "s1", [Arm("a", 0.5), Arm("b", 0.5)])
    resalted = Experiment("e", "s2", [Arm("a", 0.5), Arm("b", 0.5)])
    moved = sum(half.arm_of(i) != resalted.arm_of(i) for i in ids) / len(ids)
    assert 0.45 < moved < 0.55
    grown = Experiment("e", "s1", [Arm("a", 0.4), Arm("b", 0.6)])
    changes = {(half.arm_of(i), grown.arm_of(i)) for i in ids if half.arm_of(i) != grown.arm_of(i)}
    assert changes == {("a", "b")}  # nobody left b


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: Experiment("e", "s", [Arm("a", 0.5), Arm("b", 0.4)]), "arms"),
        (lambda: Experiment("e", "s", [Arm("a", 0.5), Arm("a", 0.5)]), "arms[1].name"),
        (lambda: Experiment("e", "s", [Arm("a", 1.5)]), "arms[0].share"),
        (lambda: Experiment("e", "s", [Arm("a", 1.0, {"diversty": 0.2})]), "arms[0].knobs"),
        (lambda: Experiment("e", "s", [Arm("a", 1.0, {"diversity": 2.0})]), "arms[0].knobs"),
        (lambda: Experiment("e", "s", [Arm("a", 1.0, {"diversity": "high"})]), "arms[0].knobs.diversity"),
        (lambda: Experiment("e", "", [Arm("a", 1.0)]), "salt"),
        (lambda: Experiment("e", "s", []), "arms"),
        (lambda: Experiment("e", "s", [Arm("a", 0.9)], holdout=0.1, control="b"), "control"),
        (lambda: Experiment("e", "s", [Arm(HOLDOUT, 1.0)]), "arms[0].name"),
        (lambda: Experiment.from_mapping({"name": "e", "salt": "s", "arms": [{"name": "a", "shares": 1}]}), "arms[0]"),
    ],
)
def test_a_bad_configuration_names_its_field(build, field):
    with pytest.raises(ExperimentError) as caught:
        build()
    assert caught.value.field == field and str(caught.value).startswith(f"{field}:")


def test_a_configuration_loads_from_json(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(
        json.dumps({"name": "e", "salt": "s", "holdout": 0.2, "arms": [{"name": "a", "share": 0.8}], "control": "a"})
    )
    loaded = Experiment.load(path)
    assert loaded.shares == {HOLDOUT: 0.2, "a": 0.8} and loaded.control == "a"


# -- what recommend does with an experiment -----------------------------------------------------------


@pytest.fixture(autouse=True)
def keep_numpy(monkeypatch):
    """Let a test read the numpy array back from tritonclient's InferInput."""
    import tritonclient.grpc as grpcclient

    original = grpcclient.InferInput.set_data_from_numpy

    def set_data(self, array):
        self._np = array
        return original(self, array)

    monkeypatch.setattr(grpcclient.InferInput, "set_data_from_numpy", set_data)


class BareCore(ClientCore):
    _new_future = __import__("concurrent.futures").futures.Future
    _new_batcher = ThreadBatcher

    def _open_channel(self):
        return None


class Answer:
    def as_numpy(self, name):
        return {
            "ITEM_IDS": np.array([[b"x", b"y"]], dtype=object),
            "SCORES": np.array([[2.0, 1.0]], dtype=np.float32),
            "UNKNOWN_HISTORY": np.zeros((1, 1), dtype=np.int32),
        }.get(name)


def sent(core, **kwargs):
    """The Call a recommend plan makes, and the answer it returns to that call's reply."""
    plan = core._plan_recommend(**kwargs)
    call = next(plan)
    assert isinstance(call, Call)
    try:
        plan.send(Answer())
    except StopIteration as stop:
        return call, stop.value
    raise AssertionError("the plan did not finish")


def shopper_in(arm):
    return next(i for i in IDS if EXPERIMENT.arm_of(i) == arm)


def test_recommend_applies_the_arm_and_records_it():
    core = BareCore("127.0.0.1:1")
    call, recs = sent(core, history=[("1", 1.0)], user_id=shopper_in("ranker_b"), experiment=EXPERIMENT, diversity=0.9)
    names = {i.name(): i for i in call.args[1]}
    assert call.args[0] == "recommend" and "DIVERSITY" in names and "DIVERSITY_METHOD" in names
    assert names["DIVERSITY"]._np[0][0] == pytest.approx(0.3)  # the arm's knob wins over the caller's
    assert (recs.experiment, recs.arm) == ("feed-ranker", "ranker_b")
    call, recs = sent(core, query="q", user_id=shopper_in("ranker_c"), experiment=EXPERIMENT)
    assert call.args[0] == "recommend_c" and recs.arm == "ranker_c"  # the arm's model variant answers
    call, recs = sent(core, query="q", user_id=shopper_in(HOLDOUT), experiment=EXPERIMENT)
    assert call.args[0] == "recommend" and recs.arm == HOLDOUT
    assert {i.name() for i in call.args[1]} == {"QUERY", "K", "USER_ID"}  # the holdout gets the defaults


def test_a_client_level_experiment_covers_calls_with_a_shopper_only():
    core = BareCore("127.0.0.1:1", experiment=EXPERIMENT)
    _, recs = sent(core, query="q", user_id=shopper_in("control"))
    assert recs.arm == "control"
    _, anonymous = sent(core, query="q")
    assert anonymous.arm is None and anonymous.experiment is None
    with pytest.raises(InvalidRequest, match="user_id"):
        next(BareCore("127.0.0.1:1")._plan_recommend(query="q", experiment=EXPERIMENT))


def test_every_answer_has_its_own_request_id():
    core = BareCore("127.0.0.1:1", recommend_cache_size=10)
    ids = {sent(core, query="q", cache=False)[1].request_id for _ in range(3)}
    ids.add(sent(core, query="q")[1].request_id)  # a miss: cached
    plan = core._plan_recommend(query="q")  # a cache hit: no call, still a new answer
    with pytest.raises(StopIteration) as hit:
        next(plan)
    ids.add(hit.value.value.request_id)
    assert len(ids) == 5 and all(len(i) == 32 for i in ids)
    assert isinstance(hit.value.value, Recommendations) and "request_id=" in repr(hit.value.value)


def test_an_exposure_event_carries_the_answer_and_fits_the_contract():
    from aisle import Recommendation, exposure_event
    from aisle_contract import EXPOSURE_EVENT, MAX_PROPERTIES_BYTES

    recs = Recommendations([Recommendation(f"item-{i}", 1.0) for i in range(3)], experiment="e", arm="b")
    event = exposure_event(recs, "u1")
    props = json.loads(event.properties)
    assert (event.event_type, event.item_id, event.event_id) == (EXPOSURE_EVENT, "item-0", recs.request_id)
    assert props == {
        "request_id": recs.request_id,
        "experiment": "e",
        "arm": "b",
        "k": 3,
        "items": ["item-0", "item-1", "item-2"],
    }
    long = Recommendations([Recommendation("x" * 200 + str(i), 1.0) for i in range(1000)])
    cut = json.loads(exposure_event(long, "u1").properties)
    assert cut["truncated"] is True and cut["k"] == 1000 and 0 < len(cut["items"]) < 1000
    assert len(exposure_event(long, "u1").properties.encode()) <= MAX_PROPERTIES_BYTES
    assert exposure_event(Recommendations([]), "u1").item_id == "-"


def many(core, requests, **kwargs):
    """The Calls a recommend_many plan makes (one per Triton request), and the answers it returns."""
    plan = core._plan_recommend_many(requests, **kwargs)
    gather = next(plan)
    calls, outcomes = [], []
    for sub in gather.plans:
        calls.append(next(sub))
        try:
            sub.send(Answer())
        except StopIteration as stop:
            outcomes.append(stop.value)
    with pytest.raises(StopIteration) as done:
        plan.send(outcomes)
    return calls, done.value.value


def test_recommend_many_applies_each_rows_arm():
    core = BareCore("127.0.0.1:1")
    rows = [
        {"query": "q", "user_id": shopper_in("ranker_b")},
        {"query": "q", "user_id": shopper_in("ranker_c")},
        {"query": "q"},  # anonymous: outside the experiment
    ]
    calls, answers = many(core, rows, experiment=EXPERIMENT)
    assert sorted(call.args[0] for call in calls) == ["recommend", "recommend", "recommend_c"]
    diversity = [c for c in calls if "DIVERSITY" in {i.name() for i in c.args[1]}]
    assert len(diversity) == 1  # only ranker_b's row carries its knobs
    assert [(a.experiment, a.arm) for a in answers] == [
        ("feed-ranker", "ranker_b"),
        ("feed-ranker", "ranker_c"),
        (None, None),
    ]
    _, answers = many(BareCore("127.0.0.1:1", experiment=EXPERIMENT), rows[:1])  # the client's experiment
    assert answers[0].arm == "ranker_b"


class ListLog:
    """An exposure log shell that keeps what the core hands it."""

    def __init__(self, send, buffer, flush_s):
        self.events = []

    def add(self, event):
        self.events.append(event)

    def stats(self):
        return None


class LoggingCore(BareCore):
    _new_exposure_log = ListLog


def test_log_exposures_logs_every_answer_to_a_shopper_and_no_other():
    core = LoggingCore("127.0.0.1:1", log_exposures=True, experiment=EXPERIMENT)
    shopper = shopper_in("ranker_b")
    _, recs = sent(core, query="q", user_id=shopper)
    sent(core, query="q")  # anonymous: nobody to attribute an exposure to
    _, answers = many(core, [{"query": "q", "user_id": shopper}, {"query": "q"}])
    events = core._exposures.events
    assert [e.event_id for e in events] == [recs.request_id, answers[0].request_id]
    assert all(e.event_type == "exposure" and e.user_id == shopper for e in events)
    properties = json.loads(events[0].properties)
    assert properties["arm"] == "ranker_b" and properties["items"] == ["x", "y"]
    assert BareCore("127.0.0.1:1")._exposures is None  # off by default
