"""``aisle finetune``: learn from an interaction log — towers, user encoder, log signals, ranking knobs."""

from __future__ import annotations

import argparse
from pathlib import Path

from aisle_export.cli.common import Subparsers, add_log_arguments, knob_grid, log_data, positive_int

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
    p.add_argument("--seed", type=int, help="shuffling and sampling seed (default 0)")
    p.add_argument(
        "--ranker-cuts",
        metavar="Q,...",
        help="quantiles of the period's timestamps the learned ranker's training windows are cut at "
        "(default 0.5,0.6,0.7,0.8; fewer train faster)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.learn.finetune import finetune_log
    from aisle_export.learn.ranker import RankerConfig
    from aisle_export.learn.tower_training import FinetuneConfig
    from aisle_export.learn.user_encoder import UserEncoderConfig

    given = {name: getattr(args, name) for name in ("steps", "batch_size", "freeze_layers", "lr", "seed")}
    config = FinetuneConfig(**{name: value for name, value in given.items() if value is not None})
    encoder = UserEncoderConfig(
        **({"epochs": args.encoder_epochs} if args.encoder_epochs else {}),
        **({"seed": args.seed} if args.seed is not None else {}),
    )
    ranker = RankerConfig()
    if args.ranker_cuts:
        ranker = RankerConfig(train_cuts=tuple(float(q) for q in args.ranker_cuts.split(",") if q.strip()))
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
