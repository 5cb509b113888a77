"""``aisle export``: the towers to ONNX (gated reduced precisions, TensorRT engines) and the model repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from aisle_export.cli.common import DEFAULT_REPO, Subparsers

# The toolchain is imported inside run(): torch and onnx must not load for `aisle --help`.


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export the query and item towers to ONNX and assemble the model repository"
    )
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--query-tower", help="sentence-transformers/HF directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--item-tower", help="sentence-transformers/HF directory (default: all-MiniLM-L6-v2)")
    p.add_argument(
        "--precision",
        action="append",
        choices=("int8", "fp16", "int8-qdq"),
        help="also write and gate a reduced-precision ONNX (repeatable): int8 = CPU dynamic INT8 "
        "(serve with --model-config-name int8), fp16 / int8-qdq = inputs for TensorRT; "
        "with --engine tensorrt: the engine precision, fp16 or int8",
    )
    p.add_argument(
        "--query-precision",
        choices=("fp32", "auto", "int8"),
        default="fp32",
        help="the graph query_encoder serves: fp32 (default; batch-invariant); int8 = the query tower's CPU "
        "INT8 graph, gated as served (INT8 queries against the FP32 index), a failed gate stops the export; "
        "auto = INT8 where it passes, else FP32. Dynamic INT8 makes a query's results depend on the queries "
        "batched with it (docs/model-configuration.md)",
    )
    p.add_argument(
        "--gate-catalog",
        type=Path,
        help="catalog for the top-10 retrieval gate (default: MovieLens-100K, cached beside --repo)",
    )
    p.add_argument(
        "--engine",
        choices=("tensorrt",),
        help="build model.plan engines from the --precision ONNX (needs the tensorrt package)",
    )
    p.add_argument(
        "--finetuned",
        type=Path,
        metavar="DIR",
        help="serve what `aisle finetune --out DIR` trained: the stack it chose on validation, "
        "with its towers, user encoder, log signals and knobs",
    )
    p.add_argument(
        "--stack",
        choices=("pretrained", "mean", "user_encoder"),
        help="with --finetuned: serve this stack instead of the one chosen on validation",
    )
    p.add_argument(
        "--allow-below-gate",
        action="store_true",
        help="serve a distilled --query-tower whose gate failed (its teacher must still be the item tower)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.build.pipeline import export_repository

    precisions = list(dict.fromkeys(args.precision or []))
    if args.engine == "tensorrt":
        # with an engine, --precision names the engine's precision: int8 → the Q/DQ ONNX, fp16 → the FP16 ONNX
        engine_precisions = [p for p in precisions if p in ("fp16", "int8")]
        if len(engine_precisions) != 1 or len(precisions) != 1:
            raise ValueError("--engine tensorrt needs exactly one --precision: fp16 or int8")
        precisions = ["int8-qdq" if engine_precisions[0] == "int8" else "fp16"]
    if args.finetuned is not None and (args.query_tower or args.item_tower):
        raise ValueError("--finetuned brings its own towers: leave out --query-tower and --item-tower")
    if args.stack is not None and args.finetuned is None:
        raise ValueError("--stack picks from what --finetuned DIR trained: give --finetuned")
    report = export_repository(
        args.repo,
        args.query_tower,
        args.item_tower,
        precisions=precisions,
        gate_catalog=args.gate_catalog,
        finetuned=args.finetuned,
        stack=args.stack,
        allow_below_gate=args.allow_below_gate,
        query_precision=args.query_precision,
    )
    if args.engine == "tensorrt":
        from aisle_export.build.tensorrt import build_repository_engines

        build_repository_engines(args.repo, engine_precisions[0], report["query_encoder"]["dim"])
    return 0
