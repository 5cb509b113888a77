"""``aisle finetune``: learn from an interaction log — towers, user encoder, log signals, ranking knobs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from aisle_export.cli.common import Subparsers, add_log_arguments, knob_grid, log_data, number_list, positive_int

if TYPE_CHECKING:
    from aisle_export.learn.ranker import RankerConfig

# The learning code is imported inside run(): torch must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="learn from an interaction log: towers, user encoder, log signals, knobs"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("build/finetuned"),
        help="writes <out>/query_tower, item_tower, user_encoder, log_signals, ranking.json",
    )
    add_log_arguments(p)
    p.add_argument("--base", help="starting tower directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--steps", type=int, help="tower optimizer steps (default 60)")
    p.add_argument(
        "--batch-size", type=int, help="examples per step, each scored against the whole catalog (default 1024)"
    )
    p.add_argument("--freeze-layers", type=int, help="lower transformer layers kept fixed, of 6 (default 5)")
    p.add_argument("--lr", type=float, help="tower AdamW learning rate (default 5e-4)")
    p.add_argument("--encoder-epochs", type=positive_int, help="user encoder epochs")
    p.add_argument(
        "--pretrained-towers",
        action="store_true",
        help="keep the towers as they are (pretrained, or --base); learn the user encoder, signals and knobs",
    )
    p.add_argument(
        "--keep-towers",
        action="store_true",
        help="reuse the towers an earlier run left in --out; learn the user encoder, signals and knobs again",
    )
    p.add_argument("--seed", type=int, help="shuffling and sampling seed, the learned ranker's too (default 0)")
    p.add_argument(
        "--ranker-cuts",
        metavar="Q,...",
        help="quantiles of the period's timestamps the learned ranker's training windows are cut at "
        "(default 0.4,0.5,0.6,0.7,0.8; fewer train faster)",
    )
    p.add_argument(
        "--ranker-base-strength",
        type=float,
        metavar="S",
        help="boost the learned ranker from the hand-weighted score, S typical within-feed spreads of it "
        "(default 0: from nothing; docs/learning.md)",
    )
    p.add_argument(
        "--ranker-ignore",
        metavar="FEATURE,...",
        help="ranker features its trees may not split on (e.g. events_all,buyers,first_seen_days: the ones "
        "that grow with the log's length)",
    )
    p.add_argument(
        "--ranker-shoppers",
        type=int,
        metavar="N",
        help="at most N shoppers per ranker training window, drawn at random (default 10000; 0: all): "
        "bounds the ranker's memory and time on a long log",
    )
    p.add_argument(
        "--ranker-trees",
        type=int,
        metavar="N",
        help="at most N boosting rounds in the learned ranker (default 100): each tree costs serving time "
        "on every feed (docs/results.md)",
    )
    p.add_argument(
        "--ranker-monotone",
        metavar="FEATURE:±1,...",
        help="ranker features its score may only rise (+1) or fall (-1) with, all else equal (default "
        "hand_score:+1,hand_rank:-1: the hand-weighted stack's own order never counts against a "
        "candidate; 'none': unconstrained)",
    )
    p.add_argument(
        "--ranker-splits",
        choices=("random", "searched"),
        help="how the ranker's trees pick a split's threshold: drawn at random among the feature's bins "
        "(default; LightGBM's extra_trees: steadier on both logs here) or searched",
    )
    p.add_argument("--ranker-objective", choices=("lambdarank", "rank_xendcg"), help="the ranker's LightGBM objective")
    p.set_defaults(func=run)


def ranker_config(args: argparse.Namespace) -> RankerConfig:
    """The learned ranker's training from the ``--ranker-*`` flags; a bad value names its flag."""
    from aisle_export.learn.ranker import RankerConfig
    from aisle_server.features import FEATURE_NAMES

    given: dict = {}
    if args.ranker_cuts:
        cuts = number_list(args.ranker_cuts)
        if not cuts or not all(0 < q < 1 for q in cuts):
            raise ValueError(f"--ranker-cuts {args.ranker_cuts!r}: comma-separated quantiles between 0 and 1")
        given["train_cuts"] = cuts
    if args.ranker_base_strength is not None:
        if not args.ranker_base_strength >= 0:
            raise ValueError(f"--ranker-base-strength {args.ranker_base_strength}: a number ≥ 0")
        given["base_strength"] = args.ranker_base_strength
    if args.ranker_ignore:
        names = tuple(name.strip() for name in args.ranker_ignore.split(",") if name.strip())
        unknown = [name for name in names if name not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"--ranker-ignore: unknown features {unknown}; the features: {', '.join(FEATURE_NAMES)}")
        given["ignored_features"] = names
    if args.ranker_shoppers is not None:
        if args.ranker_shoppers < 0:
            raise ValueError(f"--ranker-shoppers {args.ranker_shoppers}: a count ≥ 0 (0: every shopper)")
        given["max_shoppers"] = args.ranker_shoppers or None
    if args.ranker_trees is not None:
        if args.ranker_trees < 1:
            raise ValueError(f"--ranker-trees {args.ranker_trees}: a count ≥ 1")
        given["rounds"] = args.ranker_trees
    if args.ranker_monotone is not None:
        try:
            given["monotone"] = monotone_pairs(args.ranker_monotone)
            RankerConfig(monotone=given["monotone"])
        except ValueError as error:
            raise ValueError(f"--ranker-monotone {args.ranker_monotone!r}: {error}") from None
    if args.ranker_splits is not None:
        given["extra_trees"] = args.ranker_splits == "random"
    if args.ranker_objective is not None:
        given["objective"] = args.ranker_objective
    if args.seed is not None:
        given["seed"] = args.seed
    return RankerConfig(**given)


def monotone_pairs(text: str) -> tuple[tuple[str, int], ...]:
    """``"hand_score:+1,hand_rank:-1"`` → ``(("hand_score", 1), ("hand_rank", -1))``; ``"none"`` → ()."""
    if text.strip().lower() == "none":
        return ()
    pairs = []
    for part in (part.strip() for part in text.split(",")):
        name, colon, sign = part.partition(":")
        if not colon or sign.strip() not in ("+1", "1", "-1"):
            raise ValueError(f"{part!r}: expected FEATURE:+1 or FEATURE:-1")
        pairs.append((name.strip(), int(sign)))
    return tuple(pairs)


def run(args: argparse.Namespace) -> int:
    from aisle_export.learn.finetune import finetune_log
    from aisle_export.learn.tower_training import FinetuneConfig
    from aisle_export.learn.user_encoder import UserEncoderConfig

    given = {name: getattr(args, name) for name in ("steps", "batch_size", "freeze_layers", "lr", "seed")}
    config = FinetuneConfig(**{name: value for name, value in given.items() if value is not None})
    encoder = UserEncoderConfig(
        **({"epochs": args.encoder_epochs} if args.encoder_epochs else {}),
        **({"seed": args.seed} if args.seed is not None else {}),
    )
    ranker = ranker_config(args)
    report = finetune_log(
        log_data(args),
        args.out,
        config,
        encoder,
        base=args.base,
        keep_towers=args.keep_towers,
        tune_towers=not args.pretrained_towers,
        grid=knob_grid(args),
        ranker=ranker,
    )
    towers, users = report["towers"], report["user_encoder"]
    tower_note = (
        f"loss {towers['loss_first_20']:.3f} → {towers['loss_last_20']:.3f}"
        if "loss_first_20" in towers
        else "pretrained, as they were"
    )
    from aisle_export.learn.ranker import describe

    choice = report["choice"]
    means = ", ".join(f"{name} {value:.4f}" for name, value in choice["means"].items())
    print(
        f"saved {args.out}: towers ({tower_note}), "
        f"user encoder (loss {users['loss_first_epoch']:.3f} → {users['loss_last_epoch']:.3f}, parity "
        f"{users['parity']['min_cosine']:.6f}), log signals, ranking.json; {report['total_seconds']:.0f}s\n"
        f"validation {choice['metric']}: {means}; `aisle export --finetuned` serves: {report['served']}\n"
        f"{describe(report['ranker'])}"
    )
    return 0
