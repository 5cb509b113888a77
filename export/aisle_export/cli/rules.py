"""``aisle rules``: set, check, list and roll back the merchandising rule sets a server applies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aisle_export.cli.common import Subparsers, headers

# The SDK is imported inside run(): tritonclient must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "rules",
        help="set, check, list or roll back merchandising rules (filters, boosts, pins, slots; docs/merchandising.md)",
    )
    p.add_argument(
        "action",
        choices=("set", "check", "list", "rollback"),
        help="set: store --file as the set's next version (every rerank instance applies it within a second); "
        "check: only check it; list: the newest version and the history; rollback: put back the version before "
        "the newest (or --to)",
    )
    p.add_argument("--file", type=Path, help="set/check: the rule set, JSON ({\"rules\": [...]}); '-': stdin")
    p.add_argument("--rule-set", default="default", help="the set's name (requests name it with rule_set=)")
    p.add_argument("--to", type=int, help="rollback: the version to put back (0: no rules)")
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port")
    p.add_argument("--header", action="append", metavar="KEY=VALUE", help="gRPC header")
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the server's answer as one JSON object; a refused rule (with its place) or any error: exit 1."""
    from aisle import AisleError, RecClient

    try:
        with RecClient(args.url, headers=headers(args.header), timeout_s=args.timeout_s, retry=None) as client:
            if args.action in ("set", "check"):
                if args.file is None:
                    raise ValueError(f"{args.action} needs --file (the rule set as JSON)")
                text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
                info = client.set_rules(text, args.rule_set, check_only=args.action == "check")
            elif args.action == "list":
                info = client.list_rules(args.rule_set)
            else:
                info = client.rollback_rules(args.rule_set, args.to)
    except (AisleError, ValueError, OSError) as exc:
        print(f"aisle rules {args.action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dict(info.raw), ensure_ascii=False))
    return 0
