"""Fine-tuning: the cached partial forward is exact, the loss goes down, the towers save and reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aisle_export.core.towers import default_tower_path, load_tower
from aisle_export.learn import tower_training as finetune
from aisle_export.learn.tower_training import (
    Batch,
    CachedTower,
    Example,
    FinetuneConfig,
    StepRows,
    batch_loss,
    make_examples,
    step_rows,
    token_chunks,
)

TEXTS = [
    "Toy Story (1995). Animation, Children's, Comedy",
    "GoldenEye (1995). Action, Adventure, Thriller",
    "Heat (1995). Action, Crime, Thriller",
    "Sabrina (1954). Comedy, Romance",
    "Alien (1979). Horror, Sci-Fi",
    "Aliens (1986). Action, Sci-Fi, Thriller",
    "Babe (1995). Children's, Comedy, Drama",
    "Casablanca (1942). Drama, Romance, War",
]
IDS = [str(i) for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_tower_path()), device="cpu")


def test_make_examples_uses_only_the_past() -> None:
    histories = {"u": [("0", 10.0), ("1", 20.0), ("9999", 25.0), ("2", 30.0)]}
    examples = make_examples(histories, {i: int(i) for i in IDS}, window=1)
    assert [examples[i] for i in range(len(examples))] == [Example((0,), (10.0,), 1), Example((1,), (10.0,), 2)]
    # unknown ids are skipped


def test_examples_are_offsets_into_the_users_items_and_batch_as_the_plain_examples() -> None:
    histories = {
        "u": [("0", 10.0), ("1", 20.0), ("9999", 25.0), ("2", 30.0)],
        "v": [("3", 1.0)],  # one item: no example
        "w": [("4", 1.0), ("5", 2.0), ("6", 4.0), ("7", 9.0)],
    }
    examples = make_examples(histories, {i: int(i) for i in IDS}, window=2)
    plain = [examples[i] for i in range(len(examples))]
    assert plain == [
        Example((0,), (10.0,), 1),
        Example((0, 1), (20.0, 10.0), 2),
        Example((4,), (1.0,), 5),
        Example((4, 5), (3.0, 2.0), 6),
        Example((5, 6), (7.0, 5.0), 7),  # the window keeps the 2 most recent items
    ]
    assert examples.rows.nbytes + examples.target.nbytes + examples.start.nbytes < 200  # two ints per example
    batch, reference = examples.batch(np.array([4, 0, 2])), Batch.of([plain[4], plain[0], plain[2]])
    for name in ("window", "age_s", "real", "target"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(reference, name))
    assert batch.window.tolist() == [[5, 6], [0, -1], [4, -1]]


@pytest.mark.parametrize("freeze", [0, 5])
def test_cached_tower_matches_sentence_transformers(st_model, freeze: int) -> None:
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, freeze, max_length=64).eval()
    with torch.no_grad():
        ours = tower(torch.tensor([3, 0, 7, 1])).numpy()
    reference = st_model.encode([TEXTS[i] for i in (3, 0, 7, 1)], normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert tower.cache.shape[0] == int(tower.lengths.sum())  # packed: each text's own tokens, no padding
    trainable = {n for n, p in st_model[0].auto_model.named_parameters() if p.requires_grad}
    assert all(
        n.startswith(f"encoder.layer.{freeze}") or (n.startswith("encoder.layer.") and int(n.split(".")[2]) >= freeze)
        for n in trainable
    )
    assert not any(n.startswith("embeddings.") for n in trainable)


def test_embed_all_gives_forwards_embeddings(st_model) -> None:
    """``embed_all`` runs chunks bounded by padded tokens, not by rows: the same embeddings as ``forward``."""
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, max_length=64).eval()
    with torch.inference_mode():
        expected = tower(torch.arange(len(TEXTS))).numpy()
    for max_tokens in (1, 24, 10_000):
        np.testing.assert_allclose(tower.embed_all(max_tokens=max_tokens), expected, rtol=0, atol=1e-6)


def test_token_chunks_bound_each_chunks_padded_tokens() -> None:
    lengths = torch.tensor([5, 30, 2, 7, 7, 12, 64, 3, 9, 1])
    for budget in (1, 16, 40, 64, 1000):
        chunks = token_chunks(lengths, budget)
        joined = torch.cat(chunks)
        assert sorted(joined.tolist()) == list(range(len(lengths)))  # every text once
        assert torch.equal(lengths[joined], torch.sort(lengths).values)  # shortest first
        for chunk in chunks:
            assert len(chunk) == 1 or len(chunk) * int(lengths[chunk].max()) <= budget
    assert [len(c) for c in token_chunks(lengths, 1000)] == [10]
    assert [lengths[c].tolist() for c in token_chunks(lengths, 14)] == [[1, 2, 3], [5, 7], [7], [9], [12], [30], [64]]
    with pytest.raises(ValueError, match="max_tokens"):
        token_chunks(lengths, 0)


def test_cached_tower_over_its_budget_keeps_float16_close_to_float32(st_model) -> None:
    exact = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, max_length=64).eval()
    half = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, 64, budget_mb=0.01).eval()
    assert (exact.cache_dtype, half.cache_dtype) == (torch.float32, torch.float16)
    assert half.cache_mb == pytest.approx(exact.cache_mb / 2)
    rows = torch.arange(len(TEXTS))
    with torch.no_grad():
        np.testing.assert_allclose(half(rows).numpy(), exact(rows).numpy(), atol=5e-3)


def test_step_rows_whole_catalog_or_a_sample_joined_with_the_batch() -> None:
    batch = Batch.of([Example((6, 2), (5.0, 1.0), 7), Example((1,), (3.0,), 4)])
    whole = step_rows(batch, 8, max_candidates=8)
    assert whole.rows.tolist() == list(range(8)) and not whole.log_q.any()  # exact softmax: no correction
    generator = torch.Generator().manual_seed(0)
    rows, log_q = step_rows(batch, 1000, max_candidates=10, generator=generator)
    assert rows.tolist() == sorted(set(rows.tolist()))  # distinct and ordered
    assert {1, 2, 4, 6, 7} <= set(rows.tolist())  # every window and target item is encoded
    assert 10 <= len(rows) <= 15  # plus the uniform sample
    own = np.isin(rows.numpy(), [1, 2, 4, 6, 7])
    assert (log_q[own] == 0).all()  # always in the softmax
    np.testing.assert_allclose(log_q[~own], np.log(10 / 1000), rtol=1e-6)  # in it with probability m / N


def test_log_q_correction_makes_the_sampled_softmax_estimate_the_full_one(st_model) -> None:
    """Averaged over draws, the corrected sampled loss is the full-catalog loss; uncorrected it is not.

    The softmax's denominator over {own items} ∪ (a uniform sample of m) with the sampled logits
    raised by log(N/m) is an unbiased estimate of the whole catalog's; the loss is its log, so the
    mean over draws sits a little below (Jensen) but close, and far closer than with no correction.
    """
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, max_length=64).eval()
    examples = [Example((0,), (0.0,), 6)]
    batch = Batch.of(examples)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        full = float(batch_loss(tower, batch, torch.arange(len(TEXTS)), 1.0, 86400.0))
        draws = [step_rows(batch, len(TEXTS), 3, generator) for _ in range(400)]
        corrected = np.mean([float(batch_loss(tower, batch, d, 1.0, 86400.0)) for d in draws])
        plain = np.mean([float(batch_loss(tower, batch, d.rows, 1.0, 86400.0)) for d in draws])
    assert abs(corrected - full) < 0.1 < abs(plain - full), (full, corrected, plain)


def test_loss_is_the_softmax_over_rows_without_the_window(st_model) -> None:
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, max_length=64).eval()
    day = 86400.0
    batch = [Example((0, 6), (2 * day, 1 * day), 3), Example((4,), (0.0,), 5)]
    rows = torch.arange(len(TEXTS))
    with torch.no_grad():
        loss = float(batch_loss(tower, batch, rows, temperature=0.05, half_life_s=day))
        e = tower(rows).numpy().astype(np.float64)
    expected = []
    for ex in batch:
        w = np.exp(-np.log(2.0) * np.array(ex.window_age_s) / day)
        interest = (w[:, None] * e[list(ex.window)]).sum(0) / w.sum()
        logits = e @ (interest / np.linalg.norm(interest)) / 0.05
        logits[list(ex.window)] = -np.inf  # history is never recommended back
        expected.append(-(logits[ex.target] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
    assert loss == pytest.approx(float(np.mean(expected)), rel=1e-4)
    with torch.no_grad():  # a target inside its own window stays scorable
        assert np.isfinite(float(batch_loss(tower, [Example((2, 3), (1.0, 0.0), 3)], rows, 0.05, day)))


def test_finetune_smoke_loss_decreases_and_towers_reload(tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    # Two "tastes": animated/family films and sci-fi/action films; each user sticks to one.
    histories = {
        f"fam{u}": [(i, float(t)) for t, i in enumerate([*["0", "6", "3", "0"][u % 2 :], "6"])] for u in range(4)
    }
    histories.update(
        {f"sf{u}": [(i, float(t)) for t, i in enumerate([*["4", "5", "1", "2"][u % 2 :], "5"])] for u in range(4)}
    )
    config = FinetuneConfig(steps=8, batch_size=8, window=3, freeze_layers=5, lr=1e-3, warmup_fraction=0.1)
    report = finetune.finetune(TEXTS, IDS, histories, tmp_path, config, progress=False)
    assert np.mean(report["losses"][-3:]) < 0.8 * np.mean(report["losses"][:2])
    saved = json.loads((tmp_path / finetune.REPORT_FILE).read_text())
    assert saved["config"]["freeze_layers"] == 5
    for name in (finetune.QUERY_TOWER, finetune.ITEM_TOWER):
        tower = load_tower(tmp_path / name)  # what `aisle export` checks: mean pooling, no Dense, tokenizer.json
        assert (tower.path / "tokenizer.json").is_file() and tower.dim == 384
    query = SentenceTransformer(str(tmp_path / finetune.QUERY_TOWER), device="cpu").encode(TEXTS[:2])
    item = SentenceTransformer(str(tmp_path / finetune.ITEM_TOWER), device="cpu").encode(TEXTS[:2])
    base = SentenceTransformer(str(default_tower_path()), device="cpu").encode(TEXTS[:2])
    np.testing.assert_allclose(query, item, atol=1e-6)  # one shared encoder: same embedding space
    assert np.abs(item - base).max() > 1e-4  # and it did change


def test_finetune_hands_back_the_catalog_embeddings_of_both_towers(tmp_path) -> None:
    """From the cache, equal to encoding the texts with the saved tower and with the base tower."""
    from sentence_transformers import SentenceTransformer

    histories = {f"u{u}": [(str((u + t) % 8), float(t)) for t in range(5)] for u in range(8)}
    config = FinetuneConfig(steps=3, batch_size=8, window=3, lr=1e-3)
    embeddings: dict[str, np.ndarray] = {}
    finetune.finetune(TEXTS, IDS, histories, tmp_path, config, progress=False, embeddings=embeddings)
    trained = SentenceTransformer(str(tmp_path / finetune.ITEM_TOWER), device="cpu").encode(TEXTS)
    base = SentenceTransformer(str(default_tower_path()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(embeddings["trained"], trained, atol=1e-5)
    np.testing.assert_allclose(embeddings["pretrained"], base, atol=1e-5)
    assert np.abs(embeddings["trained"] - embeddings["pretrained"]).max() > 1e-4


@pytest.mark.parametrize(("training", "chunk"), [(False, 3), (True, 64)])
def test_backward_in_chunks_gives_the_gradients_of_the_whole_batch(st_model, training: bool, chunk: int) -> None:
    """Chunked re-encoding (activations of a few rows at a time) changes nothing: same loss, same
    gradients. Without dropout for any chunking; with dropout the re-encoding replays the first
    pass's draws, so one chunk gives exactly the plain backward of the same draws."""
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, max_length=64)
    tower.trainable.train(training)
    batch = Batch.of([Example((0, 6), (2 * 86400.0, 86400.0), 3), Example((4, 1), (0.0, 5.0), 5)])
    rows = StepRows(torch.arange(len(TEXTS)), torch.zeros(len(TEXTS)))
    parameters = [p for p in tower.trainable.parameters() if p.requires_grad]

    def gradients(run) -> tuple[float, list[torch.Tensor]]:
        for p in parameters:
            p.grad = None
        torch.manual_seed(7)
        loss = run()
        return float(loss.detach()), [p.grad.clone() for p in parameters]

    def whole() -> torch.Tensor:
        loss = batch_loss(tower, batch, rows, 0.05, 86400.0)
        loss.backward()
        return loss

    expected_loss, expected = gradients(whole)
    loss, chunked = gradients(lambda: finetune.backward_in_chunks(tower, batch, rows, 0.05, 86400.0, chunk))
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for got, want in zip(chunked, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
