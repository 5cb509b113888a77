"""``aisle events export``: the state store's event log drained into an interaction log (or raw events) file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aisle_export.cli.common import Subparsers

# The export is imported inside run(): numpy and redis must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("events", help="the shopper event log: export (drain) it into an interaction log file")
    p.add_argument("action", choices=("export",))
    p.add_argument(
        "--state",
        required=True,
        metavar="redis[-cluster]://HOST:PORT",
        help="the state store (`aisle serve` prints it)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="new .parquet, .csv or .jsonl file (`aisle finetune --interactions` reads it)",
    )
    p.add_argument("--keep", action="store_true", help="leave the exported events in the log (default: remove them)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write every event as it is, properties included, as JSON lines (`aisle experiment report` reads it)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.ops.events_export import EventLogUnreadable, export_events

    try:
        done = export_events(args.state, args.out, keep=args.keep, raw=args.raw)
    except EventLogUnreadable as exc:
        print(f"aisle events: error: {exc}", file=sys.stderr)
        return 1
    if done.read == 0:
        print("no events in the log; nothing written", flush=True)
    elif done.written == 0:
        print("only exposures in the log; no interaction log written (export them with --raw)", flush=True)
    elif done.raw:
        print(f"{done.written} events → {done.out} (raw; {done.removed} removed from the log)", flush=True)
    else:
        kept = "kept in the log" if args.keep else f"{done.removed} removed from the log"
        print(f"{done.written} events → {done.out} ({kept}; events tracked meanwhile stay)", flush=True)
    return 0
