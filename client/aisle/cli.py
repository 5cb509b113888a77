"""The ``aisle`` command: export, index, serve, catalog, finetune, evaluate, demo.

Subcommands import their toolchain lazily, so the SDK install (no torch) still has a working
``aisle --help``; a subcommand whose extra is missing says which extra to install.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_REPO = Path("build/model_repository")


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not ≥ 1")
    return value


def _export(args: argparse.Namespace) -> int:
    from aisle_export.pipeline import export_repository

    precisions = list(dict.fromkeys(args.precision or []))
    if args.engine == "tensorrt":
        # with an engine, --precision names the engine's precision: int8 → the Q/DQ ONNX, fp16 → the FP16 ONNX
        engine_precisions = [p for p in precisions if p in ("fp16", "int8")]
        if len(engine_precisions) != 1 or len(precisions) != 1:
            raise ValueError("--engine tensorrt needs exactly one --precision: fp16 or int8")
        precisions = ["int8-qdq" if engine_precisions[0] == "int8" else "fp16"]
    report = export_repository(args.repo, args.query_tower, args.item_tower, precisions=precisions,
                               gate_catalog=args.gate_catalog)
    if args.engine == "tensorrt":
        from aisle_export.tensorrt_engine import build_repository_engines

        dim = report["query_encoder"]["dim"]
        build_repository_engines(args.repo, engine_precisions[0], dim)
    return 0


def _index(args: argparse.Namespace) -> int:
    from aisle_export.catalog import read_catalog
    from aisle_export.indexing import write_index

    catalog = read_catalog(args.catalog, skip_bad_rows=args.skip_bad_rows)
    if catalog.skipped:
        print(f"skipped {catalog.skipped} bad rows, e.g.: {catalog.skip_reasons[:3]}", file=sys.stderr)
    write_index(catalog, args.repo, version=args.version, batch_size=args.batch_size, source=args.catalog, ann=args.ann,
                server=args.server, checkpoint=args.checkpoint, concurrency=args.concurrency,
                chunk_size=args.chunk_size, ann_kind=args.ann_kind, ann_nprobe=args.ann_nprobe,
                ann_refine=args.ann_refine)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from aisle_server.tritonserver import TritonServer, serve_forever

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
    )
    print(f"serving {args.repo} on grpc {server.grpc_url}, http {server.http_url}", flush=True)
    return serve_forever(server)


def _headers(pairs: list[str] | None) -> dict[str, str]:
    headers = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--header wants KEY=VALUE, got {pair!r}")
        headers[key] = value
    return headers


def _catalog(args: argparse.Namespace) -> int:
    import json

    from tritonclient.utils import InferenceServerException

    from aisle import swap

    headers = _headers(args.header)
    try:
        out = _catalog_action(args, headers, swap)
    except InferenceServerException as exc:
        print(f"aisle catalog {args.action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def _catalog_action(args: argparse.Namespace, headers: dict[str, str], swap) -> dict:
    if args.action == "status":
        out = {"on_disk": swap.version_dirs(args.repo) if args.repo else None,
               "served": swap.served_versions(args.url, headers)}
    elif args.action == "load":
        out = {"ready": swap.load(args.url, headers, args.timeout_s)}
    else:
        if args.repo is None:
            raise ValueError("rollback needs --repo (the served repository's path)")
        retired, ready = swap.rollback(args.repo, args.url, headers, args.to, args.timeout_s)
        out = {"retired": retired, "ready": ready}
    return out


def _demo(args: argparse.Namespace) -> int:
    from aisle_export.demo import run_demo

    run_demo(args.workdir)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from aisle_export.finetune import FinetuneConfig, finetune_movielens

    given = {name: getattr(args, name) for name in ("steps", "batch_size", "freeze_layers", "lr", "seed")}
    config = FinetuneConfig(**{name: value for name, value in given.items() if value is not None})
    report = finetune_movielens(args.workdir, args.out, config, base=args.base)
    print(f"saved {args.out}/query_tower and {args.out}/item_tower; loss {report['loss_first_20']:.3f} → "
          f"{report['loss_last_20']:.3f} in {report['total_seconds']:.0f}s")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from aisle_export.evaluate import run_movielens_eval

    run_movielens_eval(args.workdir, args.out, towers=args.towers)
    print(f"wrote {args.out}/eval_movielens.md, eval_movielens.json, diversity_tradeoff.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export the query and item towers to ONNX and assemble the model repository")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--query-tower", help="sentence-transformers/HF directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--item-tower", help="sentence-transformers/HF directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--precision", action="append", choices=("int8", "fp16", "int8-qdq"),
                   help="also write and gate a reduced-precision ONNX (repeatable): int8 = CPU dynamic INT8 "
                        "(serve with --model-config-name int8), fp16 / int8-qdq = inputs for TensorRT; "
                        "with --engine tensorrt: the engine precision, fp16 or int8")
    p.add_argument("--gate-catalog", type=Path,
                   help="catalog for the top-10 retrieval gate (default: MovieLens-100K, cached beside --repo)")
    p.add_argument("--engine", choices=("tensorrt",),
                   help="build model.plan engines from the --precision ONNX (needs the tensorrt package)")
    p.set_defaults(func=_export)

    p = sub.add_parser("index", help="embed a catalog (CSV, JSONL, Parquet) into the repository's index")
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows instead of failing")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--version", default="1",
                   help="rerank model version directory to write; next = a new one above the newest (hot swap)")
    p.add_argument("--ann", choices=("auto", "on", "off"), default="auto",
                   help="faiss IVF retrieval: auto = only above 100,000 items (exact search below)")
    p.add_argument("--ann-kind", choices=("ivf_flat", "ivf_pq"), default="ivf_flat",
                   help="ivf_pq: product-quantized lists for 10M+ items (about 56 bytes per item in RAM)")
    p.add_argument("--ann-nprobe", type=_positive_int, metavar="N",
                   help="IVF lists scanned per query (default: lists / 32); more = higher recall, slower")
    p.add_argument("--ann-refine", type=_positive_int, metavar="R",
                   help="ivf_pq: re-score R x candidates exactly (default 16; see docs/deploy.md)")
    p.add_argument("--server", metavar="URL",
                   help="embed through a running deployment's embed_item (gRPC host:port), resumably")
    p.add_argument("--concurrency", type=int, default=8, help="with --server: requests in flight")
    p.add_argument("--chunk-size", type=int, default=4096, help="with --server: items per checkpointed chunk")
    p.add_argument("--checkpoint", type=Path,
                   help="with --server: checkpoint directory (default rerank/<version>/.index.embed-checkpoint)")
    p.set_defaults(func=_index)

    p = sub.add_parser("serve", help="run tritonserver over the repository until interrupted")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-config-name", help="use <model>/configs/NAME.pbtxt where present (onnxruntime, tensorrt)")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--model-control", choices=("none", "explicit"), default="none",
                   help="explicit: load everything at start and allow `aisle catalog load/rollback` (hot swap)")
    p.add_argument("--triton-arg", action="append", metavar="ARG",
                   help="extra tritonserver flag, repeatable (TLS, --grpc-restricted-protocol=...)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("catalog", help="hot swap or roll back the served catalog (server in explicit model control)")
    p.add_argument("action", choices=("status", "load", "rollback"),
                   help="status: versions on disk and served; load: serve the newest rerank/<v>/; "
                        "rollback: retire the newest version directory and reload")
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port")
    p.add_argument("--repo", type=Path, help="the served repository (rollback renames its newest rerank/<v>/)")
    p.add_argument("--to", type=int, help="rollback: the version to serve (retires every version above it)")
    p.add_argument("--header", action="append", metavar="KEY=VALUE", help="gRPC header (restricted model control)")
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.set_defaults(func=_catalog)

    p = sub.add_parser("demo", help="export, index MovieLens-100K, serve, print recommendations, stop")
    p.add_argument("--workdir", type=Path, default=Path("build"))
    p.set_defaults(func=_demo)

    p = sub.add_parser("finetune", help="fine-tune the towers on MovieLens-100K's training period (history → next item)")
    p.add_argument("--out", type=Path, default=Path("build/finetuned"), help="writes <out>/query_tower, <out>/item_tower")
    p.add_argument("--workdir", type=Path, default=Path("build"), help="MovieLens cache under <workdir>/data")
    p.add_argument("--base", help="starting tower directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 60)")
    p.add_argument("--batch-size", type=int, help="examples per step, each scored against the whole catalog (default 1024)")
    p.add_argument("--freeze-layers", type=int, help="lower transformer layers kept fixed, of 6 (default 5)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 5e-4)")
    p.add_argument("--seed", type=int, help="shuffling and sampling seed (default 0)")
    p.set_defaults(func=_finetune)

    p = sub.add_parser("evaluate", help="offline evaluation on a temporal split of MovieLens-100K: table + trade-off plot")
    p.add_argument("--towers", type=Path, help="fine-tuned towers directory (from `aisle finetune`); pretrained always")
    p.add_argument("--out", type=Path, default=Path("perf/results"))
    p.add_argument("--workdir", type=Path, default=Path("build"))
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ImportError as exc:
        print(f"aisle {args.command}: missing dependency ({exc}); install with pip install 'aisle[export,server]'",
              file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ != "TensorRTUnavailable":
            raise
        print(f"aisle {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"aisle {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
