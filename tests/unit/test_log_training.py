"""The served stack is chosen on validation and handed to export as chosen (pure logic and files)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from aisle_contract import RankingConfig
from aisle_export.build.pipeline import install_learned
from aisle_export.core.handoff import RANKING_FILE, STACKS, load_knobs, served_stack
from aisle_export.learn.finetune import choose_stack
from aisle_server.learned import LEARNED_DIRNAME, LOG_SIGNALS_DIRNAME, USER_ENCODER_DIRNAME


def _per_user(rng: np.random.Generator, mean: float, n: int = 400) -> np.ndarray:
    return np.clip(rng.normal(mean, 0.05, n), 0.0, 1.0)


def test_a_trained_stack_is_served_only_for_a_gain_above_noise() -> None:
    rng = np.random.default_rng(0)
    base = _per_user(rng, 0.20)
    clear = base + 0.05  # every shopper better: the interval is above zero
    noisy = base + rng.normal(0.0, 0.05, base.size)  # same on average: the interval straddles zero
    served, log = choose_stack({"pretrained": base, "mean": noisy, "user_encoder": clear})
    assert served == "user_encoder" and log["served"] == "user_encoder"
    assert log["vs_default"]["user_encoder"]["ci95"][0] > 0 and log["vs_default"]["mean"]["ci95"][0] <= 0
    assert log["means"]["user_encoder"] == pytest.approx(float(np.mean(clear)))

    served, log = choose_stack({"pretrained": base, "mean": noisy, "user_encoder": base - 0.01})
    assert served == "pretrained"  # nothing earned its place: the untrained stack stays


def test_among_winners_the_best_mean_is_served() -> None:
    base = np.full(300, 0.1)
    served, _ = choose_stack({"pretrained": base, "mean": base + 0.08, "user_encoder": base + 0.03})
    assert served == "mean"


def _finetuned(tmp_path: Path, served: str | None) -> Path:
    knobs = {
        name: asdict(RankingConfig(feed_popularity_weight=float(i), user_encoder=name == "user_encoder"))
        for i, name in enumerate(STACKS)
    }
    (tmp_path / RANKING_FILE).write_text(json.dumps({**({"served": served} if served else {}), **knobs}))
    return tmp_path


def test_knobs_of_the_served_stack_unless_another_is_named(tmp_path: Path) -> None:
    finetuned = _finetuned(tmp_path, "mean")
    assert served_stack(finetuned) == "mean" and load_knobs(finetuned).feed_popularity_weight == 1.0
    assert load_knobs(finetuned, "user_encoder").user_encoder
    with pytest.raises(ValueError, match="stack 'best'"):
        served_stack(finetuned, "best")


def test_a_directory_from_before_the_choice_serves_its_encoder(tmp_path: Path) -> None:
    assert served_stack(_finetuned(tmp_path, None)) == "user_encoder"


def test_missing_ranking_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=RANKING_FILE):
        load_knobs(tmp_path)


def test_a_stack_without_the_encoder_removes_an_old_one_and_keeps_the_signals(tmp_path: Path) -> None:
    repo, finetuned = tmp_path / "repo", tmp_path / "finetuned"
    old = repo / "rerank" / LEARNED_DIRNAME / USER_ENCODER_DIRNAME
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    (finetuned / LOG_SIGNALS_DIRNAME).mkdir(parents=True)
    (finetuned / LOG_SIGNALS_DIRNAME / "manifest.json").write_text('{"interactions": 3}')
    report = install_learned(repo, finetuned, user_encoder=False)
    assert not old.exists() and report == {"log_signals": True}
    copied = repo / "rerank" / LEARNED_DIRNAME / LOG_SIGNALS_DIRNAME / "manifest.json"
    assert json.loads(copied.read_text()) == {"interactions": 3}
