"""Fine-tuning: the cached partial forward is exact, the loss goes down, the towers save and reload."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aisle_export import finetune
from aisle_export.finetune import CachedTower, Example, FinetuneConfig, batch_loss, make_examples
from aisle_export.towers import default_tower_path, load_tower

TEXTS = ["Toy Story (1995). Animation, Children's, Comedy", "GoldenEye (1995). Action, Adventure, Thriller",
         "Heat (1995). Action, Crime, Thriller", "Sabrina (1954). Comedy, Romance", "Alien (1979). Horror, Sci-Fi",
         "Aliens (1986). Action, Sci-Fi, Thriller", "Babe (1995). Children's, Comedy, Drama",
         "Casablanca (1942). Drama, Romance, War"]
IDS = [str(i) for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_tower_path()), device="cpu")


def test_make_examples_uses_only_the_past() -> None:
    histories = {"u": [("0", 10.0), ("1", 20.0), ("9999", 25.0), ("2", 30.0)]}
    examples = make_examples(histories, {i: int(i) for i in IDS}, window=1)
    assert examples == [Example((0,), (10.0,), 1), Example((1,), (10.0,), 2)]  # unknown ids are skipped


@pytest.mark.parametrize("freeze", [0, 5])
def test_cached_tower_matches_sentence_transformers(st_model, freeze: int) -> None:
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, freeze, max_length=64).eval()
    with torch.no_grad():
        ours = tower(torch.tensor([3, 0, 7, 1])).numpy()
    reference = st_model.encode([TEXTS[i] for i in (3, 0, 7, 1)], normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    trainable = {n for n, p in st_model[0].auto_model.named_parameters() if p.requires_grad}
    assert all(n.startswith(f"encoder.layer.{freeze}") or n.startswith("encoder.layer.") and
               int(n.split(".")[2]) >= freeze for n in trainable)
    assert not any(n.startswith("embeddings.") for n in trainable)


def test_in_batch_loss_masks_duplicate_positives(st_model) -> None:
    tower = CachedTower(st_model[0].auto_model, st_model[0].tokenizer, TEXTS, 5, max_length=64).eval()
    duplicate = [Example((0,), (0.0,), 1), Example((2,), (0.0,), 1)]  # same positive: no negative at all
    with torch.no_grad():
        assert float(batch_loss(tower, duplicate, 0.05, 3600.0)) == pytest.approx(0.0, abs=1e-6)
        distinct = [Example((0,), (0.0,), 1), Example((2,), (0.0,), 3)]
        assert float(batch_loss(tower, distinct, 0.05, 3600.0)) > 0.0


def test_finetune_smoke_loss_decreases_and_towers_reload(tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    # Two "tastes": animated/family films and sci-fi/action films; each user sticks to one.
    histories = {f"fam{u}": [(i, float(t)) for t, i in enumerate(["0", "6", "3", "0"][u % 2:] + ["6"])]
                 for u in range(4)}
    histories.update({f"sf{u}": [(i, float(t)) for t, i in enumerate(["4", "5", "1", "2"][u % 2:] + ["5"])]
                      for u in range(4)})
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
    np.testing.assert_allclose(query, item, atol=1e-6)   # one shared encoder: same embedding space
    assert np.abs(item - base).max() > 1e-4              # and it did change
