"""``aisle catalog``: change the served catalog live, compact the changes, hot swap or roll back versions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aisle_export.cli.common import Subparsers, headers

# The operations are imported inside run(): numpy and tritonclient must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "catalog",
        help="change the served catalog live, compact the changes, hot swap or roll back versions",
    )
    p.add_argument(
        "action",
        choices=("update", "compact", "status", "load", "rollback"),
        help="update: apply the changes in --file live (no re-index); compact: fold the live changes into "
        "a new rerank/<v>/ (--load: and serve it); status: versions on disk and served; load: serve the "
        "newest rerank/<v>/ (server in explicit model control); rollback: retire the newest version and reload",
    )
    p.add_argument("--file", type=Path, help="update: JSON Lines, one change per line (item_id, op, fields)")
    p.add_argument(
        "--state", metavar="redis[-cluster]://HOST:PORT", help="compact: the state store holding the change log"
    )
    p.add_argument("--load", action="store_true", help="compact: load the new version on --url once written")
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port")
    p.add_argument("--repo", type=Path, help="the served repository (rollback renames its newest rerank/<v>/)")
    p.add_argument("--to", type=int, help="rollback: the version to serve (retires every version above it)")
    p.add_argument("--header", action="append", metavar="KEY=VALUE", help="gRPC header (restricted model control)")
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the action's outcome as one JSON object; a server, SDK, input or file error: its message, exit 1."""
    from tritonclient.utils import InferenceServerException

    from aisle import AisleError

    grpc_headers = headers(args.header)
    try:
        out = _action(args, grpc_headers)
    except (InferenceServerException, AisleError, ValueError, OSError) as exc:
        print(f"aisle catalog {args.action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def _action(args: argparse.Namespace, grpc_headers: dict[str, str]) -> dict[str, Any]:
    from aisle_export.ops import swap

    if args.action == "update":
        from aisle_export.ops.catalog_update import update_catalog

        if args.file is None:
            raise ValueError("update needs --file (JSON Lines: item_id, optional op, the fields to set)")
        return update_catalog(args.file, args.url, grpc_headers, args.timeout_s)
    if args.action == "compact":
        from aisle_export.ops.compaction import compact

        if args.repo is None or args.state is None:
            raise ValueError("compact needs --repo (the served repository) and --state (its state store)")
        out = compact(args.repo, args.state)
        if args.load and out["compacted"]:
            out["ready"] = swap.load(args.url, grpc_headers, args.timeout_s)
        return out
    if args.action == "status":
        return {
            "on_disk": swap.version_dirs(args.repo) if args.repo else None,
            "served": swap.served_versions(args.url, grpc_headers),
        }
    if args.action == "load":
        return {"ready": swap.load(args.url, grpc_headers, args.timeout_s)}
    if args.repo is None:
        raise ValueError("rollback needs --repo (the served repository's path)")
    retired, ready = swap.rollback(args.repo, args.url, grpc_headers, args.to, args.timeout_s)
    return {"retired": retired, "ready": ready}
