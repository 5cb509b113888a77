"""``aisle finetune``'s ``--ranker-*`` flags → the learned ranker's training (``RankerConfig``); a bad value names its flag."""

from __future__ import annotations

import pytest

from aisle_export.cli import build_parser
from aisle_export.cli.finetune import ranker_config
from aisle_export.learn.ranker import RankerConfig


def parsed(*flags: str):
    return build_parser().parse_args(["finetune", *flags])


def test_no_flags_train_the_default_ranker():
    assert ranker_config(parsed()) == RankerConfig()


def test_the_flags_set_the_windows_the_start_from_the_stack_and_the_ignored_features():
    config = ranker_config(
        parsed("--ranker-cuts", "0.5,0.7", "--ranker-base-strength", "1", "--ranker-ignore", "events_all, buyers")
    )
    assert config.train_cuts == (0.5, 0.7) and config.base_strength == 1.0
    assert config.ignored_features == ("events_all", "buyers")
    assert ranker_config(parsed("--ranker-shoppers", "500")).max_shoppers == 500
    assert ranker_config(parsed("--ranker-shoppers", "0")).max_shoppers is None  # every shopper
    assert ranker_config(parsed("--ranker-trees", "60")).rounds == 60
    assert ranker_config(parsed("--ranker-monotone", "none")).monotone == ()
    assert ranker_config(parsed("--ranker-splits", "searched")).extra_trees is False
    assert ranker_config(parsed("--ranker-splits", "random")).extra_trees is True
    assert ranker_config(parsed("--ranker-objective", "rank_xendcg")).objective == "rank_xendcg"
    assert ranker_config(parsed("--seed", "7")).seed == 7
    assert ranker_config(parsed("--ranker-monotone", "hand_score:+1, cosine:1,popularity_rank:-1")).monotone == (
        ("hand_score", 1),
        ("cosine", 1),
        ("popularity_rank", -1),
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--ranker-cuts", "0.5,x"), "--ranker-cuts"),
        (("--ranker-cuts", "0.5,1.5"), "--ranker-cuts"),
        (("--ranker-cuts", "nan"), "--ranker-cuts"),
        (("--ranker-base-strength", "-1"), "--ranker-base-strength"),
        (("--ranker-base-strength", "nan"), "--ranker-base-strength"),
        (("--ranker-ignore", "events_all,colour"), "--ranker-ignore"),
        (("--ranker-shoppers", "-5"), "--ranker-shoppers"),
        (("--ranker-trees", "0"), "--ranker-trees"),
        (("--ranker-monotone", "hand_score"), "--ranker-monotone"),
        (("--ranker-monotone", "hand_score:2"), "--ranker-monotone"),
        (("--ranker-monotone", "colour:+1"), "--ranker-monotone"),
    ],
)
def test_a_bad_value_is_refused_naming_its_flag(flags, named):
    with pytest.raises(ValueError, match=named):
        ranker_config(parsed(*flags))
