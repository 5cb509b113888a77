"""``aisle console``: a small web page over a served Aisle (previews and their explanations, rules and
dry runs, a shopper's events, live catalog changes, experiment reports; docs/console.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aisle_export.cli.common import Subparsers, headers

# FastAPI, uvicorn and the SDK are imported inside run(): none of them loads for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "console",
        help="web page over a served Aisle: previews with explanations, rules and dry runs, events, reports",
    )
    p.add_argument("--url", default="127.0.0.1:8001", help="the served Aisle's gRPC host:port")
    p.add_argument(
        "--state",
        metavar="redis[-cluster]://HOST:PORT",
        help="the server's state store (`aisle serve` prints it): a shopper's events and live catalog changes",
    )
    p.add_argument("--catalog", type=Path, help="the catalog file the served index was built from: titles beside ids")
    p.add_argument("--reports", type=Path, help="a directory of experiment reports (`aisle experiment report --out`)")
    p.add_argument("--host", default="127.0.0.1", help="address the page is served on (default loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--allow-rule-changes",
        action="store_true",
        help="let the page set and roll back rules, with the token in $AISLE_CONSOLE_TOKEN "
        "(sent by the page as a header); without it the console is read-only",
    )
    p.add_argument("--header", action="append", metavar="KEY=VALUE", help="gRPC header for every call to --url")
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from aisle_export.ops.console.app import create_app
    from aisle_export.ops.console.guard import TOKEN_ENV, ConsoleSettings

    if args.reports is not None and not args.reports.is_dir():
        raise ValueError(f"--reports {args.reports}: not a directory")
    if args.state:
        from aisle_server.state_url import parse_state_url

        parse_state_url(args.state)  # a bad URL: refused here, naming what is wrong
    settings = ConsoleSettings(
        url=args.url,
        state=args.state,
        reports=args.reports,
        catalog=args.catalog,
        allow_rule_changes=args.allow_rule_changes,
        token=os.environ.get(TOKEN_ENV, "") if args.allow_rule_changes else "",
        headers=headers(args.header),
        timeout_s=args.timeout_s,
    )
    mode = "rule changes allowed with the token" if settings.allow_rule_changes else "read-only"
    print(f"aisle console for {args.url} on http://{args.host}:{args.port} ({mode})", file=sys.stderr, flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0
