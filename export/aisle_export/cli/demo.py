"""``aisle demo``: learn from MovieLens-100K, export, index, serve, print recommendations, stop."""

from __future__ import annotations

import argparse
from pathlib import Path

from aisle_export.cli.common import Subparsers

# The demo is imported inside run(): torch must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("demo", help="export, index MovieLens-100K, serve, print recommendations, stop")
    p.add_argument("--workdir", type=Path, default=Path("build"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.demo import run_demo

    run_demo(args.workdir)
    return 0
