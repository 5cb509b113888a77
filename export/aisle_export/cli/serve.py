"""``aisle serve``: tritonserver over the repository, with its shopper state store, until interrupted."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from aisle_export.cli.common import DEFAULT_REPO, Subparsers

# The server side is imported inside run(): numpy and tritonserver's Python must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("serve", help="run tritonserver over the repository until interrupted")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-config-name", help="use <model>/configs/NAME.pbtxt where present (onnxruntime, tensorrt)")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument(
        "--log-file",
        metavar="FILE|-",
        help="tritonserver's log (default: tritonserver.log beside --repo; '-': this terminal). From a file, "
        "a start that fails says in one line which model could not load and why",
    )
    p.add_argument(
        "--model-control",
        choices=("none", "explicit"),
        default="none",
        help="explicit: load everything at start and allow `aisle catalog load/rollback` (hot swap)",
    )
    p.add_argument(
        "--triton-arg",
        action="append",
        metavar="ARG",
        help="extra tritonserver flag, repeatable (TLS, --grpc-restricted-protocol=...)",
    )

    p.add_argument(
        "--state",
        default="local",
        metavar="local|off|redis://HOST:PORT|redis-cluster://HOST:PORT,...",
        help="shopper state (track, recommend(user_id=...)): local (default) starts a redis-server of its own, "
        "stopped with the server; or a running Redis or Redis Cluster (docs/deploy.md: shards=, replicas=); "
        "off: none",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="with --state local: Redis's data directory (default: aisle-state/ beside --repo)",
    )
    p.add_argument("--state-port", type=int, default=0, help="with --state local: its port (default: a free one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.core.spaces import check_served_spaces
    from aisle_server.redis_server import RedisServer

    check_served_spaces(args.repo)  # a student beside another space's tower or index: refused before starting

    with contextlib.ExitStack() as stack:
        state_url = args.state
        if state_url == "local":
            data_dir = args.state_dir or args.repo.resolve().parent / "aisle-state"
            redis = stack.enter_context(RedisServer(data_dir, port=args.state_port))
            state_url = redis.url
            print(f"shopper state: {redis.url}, data in {redis.data_dir} (AOF, appendfsync always)", flush=True)
        elif state_url == "off":
            state_url = ""  # track answers UNAVAILABLE, USER_ID reads nothing
        else:
            from aisle_server.state_url import parse_state_url

            print(f"shopper state: {parse_state_url(state_url).shown}", flush=True)  # a bad URL: refused here
        return _serve_triton(args, state_url)


def _serve_triton(args: argparse.Namespace, state_url: str) -> int:
    from aisle_server.tritonserver import TritonServer, serve_forever

    log_file = None if args.log_file == "-" else Path(args.log_file or args.repo.resolve().parent / "tritonserver.log")
    if log_file is not None:
        print(f"tritonserver log: {log_file}", flush=True)
    server = TritonServer(
        args.repo,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        model_config_name=args.model_config_name,
        log_verbose=args.log_verbose,
        model_control_mode=args.model_control,
        extra_args=(["--load-model=*"] if args.model_control == "explicit" else []) + list(args.triton_arg or []),
        state_url=state_url,
        log_file=log_file,
    )
    print(f"serving {args.repo} on grpc {server.grpc_url}, http {server.http_url}", flush=True)
    return serve_forever(server)
