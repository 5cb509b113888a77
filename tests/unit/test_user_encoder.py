"""The time-aware user encoder: it learns a sequential rule, exports faithfully, and the runtime is safe.

One tiny model is trained once per module (40 items, 16-d random embeddings, "item i is followed by
item i + 1"): the rule cannot be read off the history's mean embedding, so ranking the true next
item high proves the sequence model learned. The rest checks the served graph through
``aisle_server.user_encoder.UserEncoder``: parity with torch, time and event features wired,
padding invariance, truncation to the newest ``max_len`` items and clear errors on bad input.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aisle_export.learn.user_encoder import (
    CONFIG_FILE,
    MODEL_FILE,
    Negatives,
    UserEncoderConfig,
    UserEncoderModel,
    Windows,
    _train,
    batch_loss,
    gap_buckets,
    load_torch_model,
    make_windows,
    proposal,
    train_user_encoder,
)
from aisle_server.user_encoder import UserEncoder

N_ITEMS, DIM, MAX_LEN = 40, 16, 10
EVENTS = ("view", "cart")
T0 = 1.7e9
CONFIG = UserEncoderConfig(
    max_len=MAX_LEN,
    hidden=32,
    heads=2,
    layers=2,
    dropout=0.1,
    epochs=20,
    batch_size=32,
    lr=5e-3,
    temperature=0.1,
    seed=0,
    threads=1,
)


def _catalog() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(123)
    embeddings = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    return [f"item{i}" for i in range(N_ITEMS)], embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def _sequence(rng: np.random.Generator, length: int) -> tuple[list[int], np.ndarray, list[str]]:
    """Rows start, start+1, ... (mod N), gaps of minutes to days, random event types."""
    start = int(rng.integers(N_ITEMS))
    ts = T0 + np.cumsum(rng.exponential(6 * 3600.0, length))
    return [(start + j) % N_ITEMS for j in range(length)], ts, [EVENTS[k] for k in rng.integers(0, 2, length)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    ids, embeddings = _catalog()
    rng = np.random.default_rng(0)
    sequences = {}
    for user in range(200):
        rows, ts, events = _sequence(rng, int(rng.integers(4, 25)))
        sequences[f"u{user}"] = (
            [ids[r] for r in rows] + ["not-in-catalog"],
            np.append(ts, ts[-1] + 60),
            [*events, "view"],
        )
    out = tmp_path_factory.mktemp("user_encoder")
    report = train_user_encoder(ids, embeddings, sequences, out, CONFIG, item_tower_sha256="ab" * 32, progress=False)
    return {
        "dir": out,
        "report": report,
        "ids": ids,
        "embeddings": embeddings,
        "encoder": UserEncoder.load(out),
        "torch": load_torch_model(out),
    }


def _torch_encode(model: UserEncoderModel, embeddings: np.ndarray, rows, ts, events, now: float) -> np.ndarray:
    """The torch model on one unpadded history (the reference the ONNX graph must match)."""
    with torch.no_grad():
        out = model(
            torch.from_numpy(embeddings[rows][None]),
            torch.from_numpy(np.asarray(ts, np.float64)[None]),
            torch.from_numpy(np.asarray(events, np.int64)[None]),
            torch.ones((1, len(rows)), dtype=torch.int64),
            torch.tensor([now], dtype=torch.float64),
        )
    return out[0].numpy()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- pieces


def test_gap_buckets_follow_the_log2_formula_exactly_at_boundaries() -> None:
    thresholds = 60.0 * (2.0 ** torch.arange(1, 32, dtype=torch.float64) - 1.0)
    gaps = [-5.0, 0.0, 59.999, 60.0, 179.9, 180.0, 3600.0, 86400.0, 60.0 * (2.0**31 - 1), 1e15, float("nan")]
    expected = [0, 0, 0, 1, 1, 2, math.floor(math.log2(61)), math.floor(math.log2(1441)), 31, 31, 0]
    assert gap_buckets(torch.tensor(gaps, dtype=torch.float64), thresholds).tolist() == expected


def test_windows_score_each_new_item_once_and_skip_repeats_and_unknown_items() -> None:
    row_of = {f"i{k}": k for k in range(30)}
    items = [f"i{k}" for k in range(25)] + ["i3", "ghost", "i26"]  # a repeat, an unknown item, a new one
    ts = T0 + np.arange(len(items), dtype=np.float64)
    windows, skipped = make_windows({"u": (items, ts, ["view"] * len(items))}, row_of, {"view": 1}, max_len=10)
    assert skipped == 1
    assert windows.rows.shape == (3, 11)  # 27 known items: windows end at 27, 17, 7
    scored = [int(r) for w in range(3) for r, s in zip(windows.rows[w, 1:], windows.weights[w, 1:]) if s > 0]
    assert sorted(scored) == sorted(set(range(1, 25)) | {26})  # every new item once; the repeat of 3 never
    assert windows.mask[2].sum() == 7 and not windows.mask[2, :4].any()  # the oldest window is left-padded
    assert (windows.events[windows.mask] == 1).all() and (windows.events[~windows.mask] == 0).all()


def test_loss_is_the_weighted_full_catalog_softmax_with_history_masked() -> None:
    torch.manual_seed(0)
    n, dim = 12, 8
    catalog = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    prior = torch.rand(n)
    model = UserEncoderModel(dim, 2, UserEncoderConfig(max_len=4, hidden=16, dropout=0.0)).eval()
    with torch.no_grad():
        model.beta.fill_(0.7)
    rows = np.array([[0, 5, 2, 5, 7], [0, 0, 3, 4, 3]])  # window 1 repeats 5, window 2 has padding
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], bool)
    weights = np.array([[1, 1, 2, 0, 1], [0, 0, 1, 0.5, 0]], np.float32)
    ts = T0 + np.cumsum(np.full((2, 5), 300.0), axis=1)
    windows = Windows(rows, ts, np.ones((2, 5), np.int64) * mask, weights, mask)
    loss = batch_loss(model, catalog, prior, windows, np.arange(2), temperature=0.1)

    expected, total = 0.0, 0.0
    with torch.no_grad():
        users = model.sequence(
            catalog[torch.from_numpy(rows[:, :-1])] * torch.from_numpy(mask[:, :-1, None]),
            torch.from_numpy(ts[:, :-1]),
            torch.from_numpy(windows.events[:, :-1]),
            torch.from_numpy(mask[:, :-1]),
            torch.from_numpy(ts[:, 1:]),
        )
        for b in range(2):
            for t in range(4):
                w = weights[b, t + 1]
                if not (mask[b, t] and mask[b, t + 1] and w > 0):
                    continue
                logits = users[b, t] @ catalog.T / 0.1 + 0.7 * prior
                history = {int(r) for r, m in zip(rows[b, : t + 1], mask[b, : t + 1]) if m} - {int(rows[b, t + 1])}
                logits[list(history)] = float("-inf")
                expected += w * float(-torch.log_softmax(logits, 0)[rows[b, t + 1]])
                total += w
    assert float(loss.detach()) == pytest.approx(expected / total, rel=1e-5)


@pytest.mark.parametrize("skew", [0.0, 3.0])
def test_sampled_loss_with_log_q_estimates_the_full_softmax_for_any_proposal(skew: float) -> None:
    """Many logQ-corrected draws give the full-catalog loss (history and accidental hits masked),
    from a uniform proposal or a popularity-skewed one (half uniform, as :func:`proposal` mixes
    it) alike: the correction, not the proposal, decides what the loss estimates."""
    torch.manual_seed(0)
    n, dim = 40, 8
    catalog = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    prior = torch.rand(n)
    model = UserEncoderModel(dim, 2, UserEncoderConfig(max_len=4, hidden=16, dropout=0.0)).eval()
    rows = np.array([[0, 5, 2, 5, 7], [0, 0, 3, 4, 3], [9, 1, 30, 2, 39]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    weights = np.array([[1, 1, 2, 0, 1], [0, 0, 1, 0.5, 0], [0, 1, 1, 1, 1]], np.float32)
    ts = T0 + np.cumsum(np.full((3, 5), 300.0), axis=1)
    windows = Windows(rows, ts, np.ones((3, 5), np.int64) * mask, weights, mask)
    skewed = torch.exp(-skew * torch.arange(n, dtype=torch.float64) / 4)
    q = 0.5 / n + 0.5 * skewed / skewed.sum()  # skew 3: item 0 drawn ~40× as often as item 39
    with torch.no_grad():
        full = float(batch_loss(model, catalog, prior, windows, np.arange(3), 0.1))
        draws = Negatives(q, 20_000, torch.Generator().manual_seed(0))
        sampled = float(batch_loss(model, catalog, prior, windows, np.arange(3), 0.1, draws))
    assert sampled == pytest.approx(full, rel=0.01)
    assert proposal(windows, n).sum() == pytest.approx(1.0) and (proposal(windows, n) > 0).all()


def test_sampled_loss_trains_the_encoder_like_the_full_softmax() -> None:
    """A catalog above ``full_softmax_max`` goes through the sampled loss, and it still learns."""
    ids, embeddings = _catalog()
    rng = np.random.default_rng(0)
    sequences = {}
    for user in range(100):
        rows, ts, events = _sequence(rng, int(rng.integers(4, 25)))
        sequences[f"u{user}"] = ([ids[r] for r in rows], ts, events)
    config = replace(CONFIG, epochs=8, full_softmax_max=N_ITEMS - 1, negatives=16)
    _, _, _, report = _train(ids, embeddings, np.zeros(N_ITEMS, np.float32), sequences, config, None, False)
    assert report["softmax"].startswith("sampled")
    assert report["loss_last_epoch"] < 0.7 * report["loss_first_epoch"]


# --------------------------------------------------------------------------- the trained model


def test_training_learns_the_next_item_rule(trained) -> None:
    report, encoder, embeddings = trained["report"], trained["encoder"], trained["embeddings"]
    assert report["loss_last_epoch"] < 0.5 * report["loss_first_epoch"]
    assert report["skipped_unknown_items"] == 200
    rng = np.random.default_rng(99)  # held-out users
    hits = []
    for _ in range(60):
        rows, ts, events = _sequence(rng, int(rng.integers(2, 15)))
        *history, target = rows
        u = encoder.encode([embeddings[history]], [ts[:-1]], [encoder.event_ids(events[:-1])], [ts[-1]])[0]
        scores = embeddings @ u
        scores[history] = -np.inf  # the feed excludes history
        hits.append(target in np.argsort(-scores)[:5])
    # chance is 5 / (40 − history) ≈ 0.15; the mean of the history's embeddings cannot express i → i + 1
    assert np.mean(hits) >= 0.7, np.mean(hits)


def test_config_records_what_the_server_needs(trained) -> None:
    config = json.loads((trained["dir"] / CONFIG_FILE).read_text())
    assert config["event_vocabulary"] == ["<unknown>", "cart", "view"]
    assert (config["dim"], config["max_len"], config["hidden"]) == (DIM, MAX_LEN, 32)
    assert config["item_tower_sha256"] == "ab" * 32
    assert config["parity"]["passed"] and config["parity"]["min_cosine"] >= 0.9999 and config["parity"]["n"] >= 64
    assert config["popularity_weight_equivalent"] == pytest.approx(config["beta"] * config["temperature"])
    encoder = trained["encoder"]
    assert (encoder.max_len, encoder.dim, encoder.item_tower_sha256) == (MAX_LEN, DIM, "ab" * 32)
    assert encoder.event_ids(["view", "cart", "wishlist"]).tolist() == [2, 1, 0]


def test_onnx_matches_torch_in_mixed_length_batches(trained) -> None:
    encoder, model, embeddings = trained["encoder"], trained["torch"], trained["embeddings"]
    rng = np.random.default_rng(5)
    batch = [_sequence(rng, length) for length in (1, MAX_LEN, 3, 7, 2, MAX_LEN - 1)]
    now = [float(ts[-1] + rng.uniform(0, 30 * 86400)) for _, ts, _ in batch]
    events = [encoder.event_ids(e) for _, _, e in batch]
    out = encoder.encode([embeddings[r] for r, _, _ in batch], [ts for _, ts, _ in batch], events, now)
    assert out.shape == (len(batch), DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for i, (rows, ts, _) in enumerate(batch):
        assert _cos(out[i], _torch_encode(model, embeddings, rows, ts, events[i], now[i])) >= 0.9999


def test_time_and_event_features_are_wired(trained) -> None:
    encoder, embeddings = trained["encoder"], trained["embeddings"]
    rows, ts, events = _sequence(np.random.default_rng(7), 6)
    ids = encoder.event_ids(events)
    history = embeddings[rows]

    def encode(ts_=ts, ids_=ids, now=ts[-1] + 60.0) -> np.ndarray:
        return encoder.encode([history], [ts_], [ids_], [now])[0]

    base = encode()
    assert np.abs(base - encode(now=ts[-1] + 30 * 86400.0)).max() > 1e-3  # now − last item
    assert np.abs(base - encode(now=ts[-1] + 170.0)).max() == 0.0  # same bucket (1): same vector
    spread = ts.copy()
    spread[:-1] -= 90 * 86400.0  # one gap made 90 days longer
    assert np.abs(base - encode(ts_=spread)).max() > 1e-3
    assert np.abs(base - encode(ts_=ts + 1e6, now=ts[-1] + 60.0 + 1e6)).max() < 1e-5  # only differences matter
    # seconds matter at unix-time magnitudes (float32 would round 1.7e9 to multiples of 128 s):
    pair = embeddings[rows[:2]]
    at = lambda gap: encoder.encode([pair], [np.array([T0, T0 + gap])], [ids[:2]], [T0 + 10_000.0])[0]
    assert np.abs(at(59.0) - at(61.0)).max() > 1e-3  # buckets 0 and 1
    assert np.abs(at(61.0) - at(170.0)).max() == 0.0  # both bucket 1
    flipped = np.where(ids == 1, 2, 1)
    assert np.abs(base - encode(ids_=flipped)).max() > 1e-3
    assert np.abs(base - encoder.encode([history], [ts], [None], [ts[-1] + 60.0])[0]).max() > 1e-3


def test_padding_does_not_change_a_users_vector(trained) -> None:
    encoder, embeddings = trained["encoder"], trained["embeddings"]
    rng = np.random.default_rng(11)
    short, long_a, long_b = _sequence(rng, 2), _sequence(rng, MAX_LEN), _sequence(rng, 6)
    now = short[1][-1] + 3600.0
    alone = encoder.encode([embeddings[short[0]]], [short[1]], [None], [now])[0]
    batched = encoder.encode(
        [embeddings[s[0]] for s in (long_a, short, long_b)],
        [s[1] for s in (long_a, short, long_b)],
        [None] * 3,
        [long_a[1][-1], now, long_b[1][-1]],
    )[1]
    assert _cos(alone, batched) >= 0.9999


def test_longer_histories_keep_the_most_recent_items(trained) -> None:
    encoder, embeddings = trained["encoder"], trained["embeddings"]
    rows, ts, events = _sequence(np.random.default_rng(3), 2 * MAX_LEN + 3)
    ids = encoder.event_ids(events)
    now = ts[-1] + 600.0
    full = encoder.encode([embeddings[rows]], [ts], [ids], [now])[0]
    recent = encoder.encode([embeddings[rows[-MAX_LEN:]]], [ts[-MAX_LEN:]], [ids[-MAX_LEN:]], [now])[0]
    oldest = encoder.encode([embeddings[rows[:MAX_LEN]]], [ts[:MAX_LEN]], [ids[:MAX_LEN]], [now])[0]
    assert _cos(full, recent) >= 0.99999
    assert _cos(full, oldest) < 0.999


def test_bad_inputs_raise_clear_errors(trained) -> None:
    encoder, embeddings = trained["encoder"], trained["embeddings"]
    ok = (embeddings[:3], T0 + np.arange(3.0), None, T0 + 10)

    def encode(history=ok[0], ts=ok[1], events=ok[2], now=ok[3]):
        return encoder.encode([embeddings[:2], history], [T0 + np.arange(2.0), ts], [None, events], [T0, now])

    assert encode().shape == (2, DIM)
    assert encoder.encode([], [], [], []).shape == (0, DIM)
    with pytest.raises(ValueError, match=r"histories\[1\] is empty"):
        encode(history=embeddings[:0], ts=np.zeros(0))
    with pytest.raises(ValueError, match=r"timestamps\[1\].*non-finite"):
        encode(ts=np.array([T0, np.nan, T0]))
    with pytest.raises(ValueError, match=r"now\[1\]"):
        encode(now=float("inf"))
    with pytest.raises(ValueError, match=r"histories\[1\]: expected shape \(h, 16\)"):
        encode(history=np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match=r"timestamps\[1\]: expected shape \(3,\)"):
        encode(ts=np.arange(2.0))
    with pytest.raises(ValueError, match=r"events\[1\]: ids must be in \[0, 3\)"):
        encode(events=np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"events\[1\]: expected 3 integer ids"):
        encode(events=np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="differ in length"):
        encoder.encode([embeddings[:2]], [T0 + np.arange(2.0)], [None], [T0, T0])


def test_load_refuses_missing_or_inconsistent_files(trained, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        UserEncoder.load(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(trained["dir"], copy)
    (copy / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=MODEL_FILE):
        UserEncoder.load(copy)
    shutil.copy(trained["dir"] / MODEL_FILE, copy / MODEL_FILE)
    config = json.loads((copy / CONFIG_FILE).read_text())
    (copy / CONFIG_FILE).write_text(json.dumps({**config, "dim": 384}))
    with pytest.raises(ValueError, match="dim=384"):
        UserEncoder.load(copy)
    (copy / CONFIG_FILE).write_text(json.dumps({k: v for k, v in config.items() if k != "max_len"}))
    with pytest.raises(ValueError, match="missing keys"):
        UserEncoder.load(copy)


def test_train_refuses_inconsistent_inputs(tmp_path: Path) -> None:
    ids, embeddings = _catalog()
    with pytest.raises(ValueError, match="item_embeddings"):
        train_user_encoder(ids[:-1], embeddings, {}, tmp_path, CONFIG, progress=False)
    with pytest.raises(ValueError, match="popularity_prior"):
        train_user_encoder(ids, embeddings, {}, tmp_path, CONFIG, popularity_prior=np.zeros(3), progress=False)
    with pytest.raises(ValueError, match="no training targets"):
        train_user_encoder(
            ids, embeddings, {"u": (["item1"], np.array([T0]), ["view"])}, tmp_path, CONFIG, progress=False
        )
