"""``aisle distill``: a smaller, faster tower trained into the item tower's space, judged by its gate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aisle_export.cli.common import Subparsers, positive_int

# The toolchain is imported inside run(): torch must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("distill", help="distill a smaller, faster query tower into the item tower's space")
    p.add_argument("--student", choices=("layers", "static"), required=True)
    p.add_argument(
        "--teacher",
        help="the served tower, or an `aisle finetune --out` dir (its query tower taught, its item tower paired; "
        "default: all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        help="training text: catalogs (.csv/.jsonl/.parquet) or plain text, one a line (default: the BigBasket proxy)",
    )
    p.add_argument("--out", type=Path, required=True, help="the student directory (`aisle export --query-tower` it)")
    p.add_argument("--workdir", type=Path, default=Path("build/distill"), help="teacher ONNX and vector caches")
    p.add_argument("--products", type=Path, help="BigBasket products.csv for the search gate (default ../shared/data)")
    p.add_argument("--queries", type=int, default=20000, help="query-like texts derived from the corpus")
    p.add_argument("--steps", type=positive_int, help="optimizer steps (default: layers 300, static 2000)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--kl-weight", type=float, help="weight of the listwise KL term (default 1; 0 = cosine alone)")
    p.add_argument("--seed", type=int)
    p.add_argument("--layers", type=positive_int, help="layers student: the teacher's layers kept (default 2)")
    p.add_argument("--judge", action="store_true", help="no training: judge the student already in --out again")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from aisle_export.distill.pipeline import distill
    from aisle_export.distill.train import DEFAULTS

    given = {name: getattr(args, name) for name in ("steps", "batch_size", "lr", "kl_weight", "seed", "layers")}
    config = replace(DEFAULTS[args.student], **{k: v for k, v in given.items() if v is not None})
    record = distill(
        args.student,
        args.out,
        teacher=args.teacher,
        corpus=args.corpus or (),
        workdir=args.workdir,
        products=args.products,
        config=config,
        queries=args.queries,
        judge_only=args.judge,
    )
    gate = record["gate"]
    summary = {
        "student": str(args.out),
        "held_out_mean_cosine": gate["held_out"]["mean_cosine"],
        "top10_agreement": gate["top10_agreement"]["agreement"],
    }
    for name in ("search_bigbasket", "search_movielens"):
        if name in gate:
            summary[f"{name} nDCG@10"] = {k: gate[name][k] for k in ("teacher", "student", "student_both_towers")}
    summary |= {"gate (query tower)": gate["verdict"], "gate (item tower)": gate["item_verdict"]}
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0
