"""The ``aisle`` command: export, index, serve, catalog, rules, console, events, experiment, finetune, evaluate, demo.

One module per command: its ``add_parser(subparsers)`` defines the command's arguments and sets
``func``, a handler that only interprets them and calls the toolchain. The toolchain is imported
inside the handlers, so the SDK install (no torch) still has a working ``aisle --help``; a
subcommand whose extra is missing says which extra to install. Shared argument helpers:
:mod:`aisle_export.cli.common`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from aisle_export.cli import (
    catalog,
    console,
    demo,
    distill,
    evaluate,
    events,
    experiment,
    export,
    finetune,
    index,
    rules,
    serve,
)

#: The commands, in the order ``aisle --help`` lists them.
COMMANDS = (export, distill, index, serve, events, experiment, catalog, rules, console, demo, finetune, evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except ImportError as exc:
        print(
            f"aisle {args.command}: missing dependency ({exc}); install with pip install 'aisle[export,server]'",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ not in ("TensorRTUnavailable", "RedisServerError", "TritonServerError"):  # said plainly
            raise
        print(f"aisle {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"aisle {args.command}: error: {exc}", file=sys.stderr)
        return 1
