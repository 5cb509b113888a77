"""``aisle index``: a catalog embedded into the repository's index (and the log's signals beside it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aisle_export.cli.common import DEFAULT_REPO, Subparsers, event_weights, positive_int

# The toolchain is imported inside run(): numpy, faiss and onnxruntime must not load for `aisle --help`.
#: aisle_server.ann's KINDS and DEFAULT_KIND, spelled out so that --help imports no numpy (a test keeps them in step)
ANN_KINDS, DEFAULT_ANN_KIND = ("ivf_fp16", "ivf_flat", "ivf_pq"), "ivf_fp16"


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("index", help="embed a catalog (CSV, JSONL, Parquet) into the repository's index")
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows instead of failing")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--version",
        default="1",
        help="rerank model version directory to write; next = a new one above the newest (hot swap)",
    )
    p.add_argument(
        "--ann",
        choices=("auto", "on", "off"),
        default="auto",
        help="faiss IVF retrieval: auto = only above 100,000 items (exact search below)",
    )
    p.add_argument(
        "--ann-kind",
        choices=ANN_KINDS,
        default=DEFAULT_ANN_KIND,
        help="ivf_fp16 (default): float16 lists, half ivf_flat's RAM and reads at the same recall; ivf_flat: "
        "float32 lists; ivf_pq: product-quantized lists for 10M+ items (about 56 bytes per item in RAM)",
    )
    p.add_argument(
        "--ann-nprobe",
        type=positive_int,
        metavar="N",
        help="IVF lists scanned per query; more = higher recall, slower (default: ivf_fp16/ivf_flat measure the fewest "
        "reaching recall@200 0.99 on sample queries of the catalog; ivf_pq: lists / 32)",
    )
    p.add_argument(
        "--ann-refine",
        type=positive_int,
        metavar="R",
        help="ivf_pq: re-score R x candidates exactly (default 16; see docs/deploy.md)",
    )
    p.add_argument(
        "--dense-engine",
        choices=("auto", "hnsw", "exact"),
        default="auto",
        help="dense candidates: hnsw = an HNSW graph (top-k without scanning every item), exact = scan "
        "every item (faiss IVF with --ann); auto = hnsw from 5,000 to 100,000 items",
    )
    p.add_argument(
        "--hnsw-ef-search",
        type=positive_int,
        metavar="N",
        help="the HNSW graph's search breadth, saved with the index; more = higher recall, slower (default 300: "
        "the smallest keeping candidate recall@200 >= 0.98 on the BigBasket catalog; docs/results.md)",
    )
    p.add_argument(
        "--server", metavar="URL", help="embed through a running deployment's embed_item (gRPC host:port), resumably"
    )
    p.add_argument("--concurrency", type=int, default=8, help="with --server: requests in flight")
    p.add_argument("--chunk-size", type=int, default=4096, help="with --server: items per checkpointed chunk")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="with --server: checkpoint directory (default rerank/<version>/.index.embed-checkpoint)",
    )
    p.add_argument(
        "--interactions",
        type=Path,
        help="the store's interaction log: popularity and co-occurrence for feeds (rerank/learned/log_signals)",
    )
    p.add_argument("--event-weights", metavar="TYPE=W,...", help="weights of event types in --interactions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aisle_export.data.catalog import read_catalog
    from aisle_export.index.writing import write_index

    catalog = read_catalog(args.catalog, skip_bad_rows=args.skip_bad_rows)
    if catalog.skipped:
        print(f"skipped {catalog.skipped} bad rows, e.g.: {catalog.skip_reasons[:3]}", file=sys.stderr)
    write_index(
        catalog,
        args.repo,
        version=args.version,
        batch_size=args.batch_size,
        source=args.catalog,
        ann=args.ann,
        server=args.server,
        checkpoint=args.checkpoint,
        concurrency=args.concurrency,
        chunk_size=args.chunk_size,
        ann_kind=args.ann_kind,
        ann_nprobe=args.ann_nprobe,
        ann_refine=args.ann_refine,
        dense_engine=args.dense_engine,
        hnsw_ef_search=args.hnsw_ef_search,
    )
    if args.interactions is not None:
        from aisle_export.index.log_signals import write_log_signals

        write_log_signals(
            args.interactions,
            catalog,
            args.repo,
            skip_bad_rows=args.skip_bad_rows,
            event_weights=event_weights(args.event_weights),
        )
    return 0
