"""The fine-tune hand-off: what ``aisle finetune`` writes and ``aisle export --finetuned`` serves.

One directory: ``query_tower/`` and ``item_tower/`` (sentence-transformers towers), ``user_encoder/``,
``log_signals/``, ``ranking.json`` (which stack to serve and each stack's feed knobs) and
``finetune_report.json``. The learning stage writes it; export, evaluation and the demo read it
through the names and readers here, so none of them imports the (torch) training code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from aisle_contract import RankingConfig

QUERY_TOWER, ITEM_TOWER = "query_tower", "item_tower"
REPORT_FILE = "finetune_report.json"

RANKING_FILE = "ranking.json"
# What `aisle export --finetuned` can serve; the first is what serving is without any training.
STACKS = ("pretrained", "mean", "user_encoder")


def load_choice(finetuned: Path) -> dict:
    """``ranking.json`` of an ``aisle finetune --interactions`` directory."""
    path = Path(finetuned) / RANKING_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: not a directory written by `aisle finetune --interactions`")
    return json.loads(path.read_text())


def stack_of(choice: Mapping[str, Any], stack: str | None = None) -> str:
    """``stack``, checked, or the one ``finetune_log`` chose on validation (``choice``: ``ranking.json``)."""
    stack = stack or str(choice.get("served", "user_encoder"))  # before the choice, the encoder was served
    if stack not in STACKS:
        raise ValueError(f"stack {stack!r}: choose one of {', '.join(STACKS)}")
    return stack


def knobs_of(choice: Mapping[str, Any], stack: str | None = None) -> RankingConfig:
    """The feed knobs ``choice`` (``ranking.json``) holds for ``stack`` (default: the served one)."""
    return replace(RankingConfig(), **choice[stack_of(choice, stack)])


def served_stack(finetuned: Path, stack: str | None = None) -> str:
    """``stack``, checked, or the one ``finetune_log`` chose on validation."""
    return stack_of(load_choice(finetuned), stack)


def load_knobs(finetuned: Path, stack: str | None = None) -> RankingConfig:
    """The feed knobs ``finetune_log`` chose on validation for ``stack`` (default: the served one)."""
    return knobs_of(load_choice(finetuned), stack)
