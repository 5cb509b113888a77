"""``aisle evaluate``: offline evaluation on a temporal cut of an interaction log (table, JSON, PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aisle_export.cli.common import Subparsers, add_log_arguments, knob_grid, log_data

# The judge is imported inside run(): numpy and torch must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="offline evaluation on a temporal cut of an interaction log: table, JSON, PNG"
    )
    add_log_arguments(p)
    p.add_argument("--finetuned", type=Path, metavar="DIR", help="also judge what `aisle finetune --out DIR` trained")
    p.add_argument("--k", default="10,20", help="cut-offs, comma-separated (default 10,20)")
    p.add_argument("--out", type=Path, default=Path("perf/results"))
    p.add_argument("--name", help="report file name (default eval_log, or eval_movielens_log)")
    p.add_argument(
        "--legacy",
        action="store_true",
        help="the MovieLens content-ranking study instead (recency, freshness, MMR/DPP; --towers)",
    )
    p.add_argument("--towers", type=Path, help="--legacy: fine-tuned towers directory")
    p.add_argument(
        "--ranker",
        action="store_true",
        help="also train the learned ranker as `aisle finetune` does (gate on validation) and judge it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.legacy:
        from aisle_export.judge.content_study import run_movielens_eval

        run_movielens_eval(args.workdir, args.out, towers=args.towers)
        print(f"wrote {args.out}/eval_movielens.md, eval_movielens.json, diversity_tradeoff.png")
        return 0
    from aisle_export.judge.feed import evaluate_log

    name = args.name or ("eval_log" if args.interactions else "eval_movielens_log")
    title = f"Feed on {args.interactions.name if args.interactions else 'MovieLens-100K'}"
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    if not ks or min(ks) < 1:
        raise ValueError(f"--k {args.k!r}: comma-separated cut-offs ≥ 1, e.g. 10,20")
    data = log_data(args)
    extra = None
    if args.ranker:
        from aisle_export.learn.ranker import evaluation_rows

        def extra(embeddings, knobs):  # type: ignore[no-untyped-def]  # evaluate_log's extra_rows hook
            return evaluation_rows(data, embeddings, knobs)

    evaluate_log(data, args.out, args.finetuned, ks, name, title, grid=knob_grid(args), extra_rows=extra)
    print(f"wrote {args.out}/{name}.md, {name}.json, {name}.png")
    return 0
