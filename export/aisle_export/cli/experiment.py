"""``aisle experiment report``: per-arm metrics, intervals, SRM and MDE of an A/B experiment from the event log."""

from __future__ import annotations

import argparse
from pathlib import Path

from aisle_export.cli.common import Subparsers

# The report is imported inside run(): numpy and scipy must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("experiment", help="A/B experiments: per-arm report from the event log")
    p.add_argument("action", choices=("report",))
    p.add_argument("--events", type=Path, nargs="+", required=True, help="event files (.jsonl, .csv, .parquet)")
    p.add_argument("--experiment", required=True, help="the experiment's name (exposures' properties.experiment)")
    p.add_argument("--config", type=Path, help="the experiment's JSON (arms, shares, control): SRM against its shares")
    p.add_argument("--out", type=Path, required=True, help="directory for report.md, report.json, report.png")
    p.add_argument("--window-s", type=float, default=86400.0, help="outcome-to-exposure join window without request_id")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--lift", type=float, default=0.05, help="relative lift whose needed sample size is reported")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.experiments.report import run as report

    paths = report(
        args.events, args.experiment, args.out, args.config, args.window_s, args.alpha, args.power, args.lift
    )
    for path in paths:
        print(path, flush=True)
    return 0
