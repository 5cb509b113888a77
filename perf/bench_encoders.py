"""CPU INT8 vs FP32 encoders: encoder throughput at batch 32, and the effect on ``recommend`` end to end.

Why both: the encoder ratio is what INT8 buys in isolation; ``recommend`` also pays for
tokenization, gRPC, the ensemble and ranking, so its gain is smaller and is the one users see.

    .venv/bin/python -m perf.bench_encoders --repo build/model_repository [--calls 200]

Needs an exported, indexed repository with ``model.int8.onnx`` (``aisle export --precision int8``,
then ``aisle index``). Writes ``perf/results/encoders.json``. Both servers use the same index, so
only the query encoder differs between the two ``recommend`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from aisle import RecClient
from aisle_export.build.precision_texts import HELD_OUT_TEXTS, RETRIEVAL_QUERIES
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TextTokenizer
from aisle_server.tritonserver import TritonServer
from perf.lib.run_info import RESULTS as RESULTS_DIR
from perf.lib.timing import call_times

BATCH = 32
RESULTS = RESULTS_DIR / "encoders.json"


def encoder_throughput(directory: Path, filename: str, seconds: float) -> dict:
    """Texts per second of one encoder graph at batch 32 (tokenization excluded), interleaving-free."""
    texts = (list(HELD_OUT_TEXTS) * 2)[:BATCH]
    ids, mask = TextTokenizer.from_directory(directory)(texts)
    encoder = OnnxEncoder(directory / filename)
    timings = call_times(lambda: encoder(ids, mask), seconds)
    median = statistics.median(timings)
    return {
        "batch": BATCH,
        "seq_len": int(ids.shape[1]),
        "runs": len(timings),
        "median_batch_ms": round(median * 1e3, 2),
        "texts_per_s": round(BATCH / median, 1),
    }


def recommend_latency(repo: Path, config_name: str | None, calls: int) -> dict:
    """Sequential single ``recommend`` calls (k=10) over the SDK: p50/p90 ms and calls per second."""
    with (
        TritonServer(repo, model_config_name=config_name) as server,
        RecClient(server.grpc_url, timeout_s=10) as client,
    ):
        for query in RETRIEVAL_QUERIES[:10]:
            client.recommend(query=query, k=10)
        latencies = []
        started = time.perf_counter()
        for i in range(calls):
            t = time.perf_counter()
            client.recommend(query=RETRIEVAL_QUERIES[i % len(RETRIEVAL_QUERIES)], k=10)
            latencies.append((time.perf_counter() - t) * 1e3)
        elapsed = time.perf_counter() - started
    return {
        "calls": calls,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p90_ms": round(float(np.percentile(latencies, 90)), 2),
        "calls_per_s": round(calls / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_encoders", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per encoder graph")
    parser.add_argument("--calls", type=int, default=200, help="recommend calls per server")
    args = parser.parse_args()
    directory = args.repo / "query_encoder" / "1"
    if not (directory / "model.int8.onnx").is_file():
        raise SystemExit(f"{directory / 'model.int8.onnx'} missing: run `aisle export --precision int8` first")

    result: dict = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}}
    # alternate FP32/INT8 windows so load from other processes hits both alike
    rounds = {"fp32": [], "int8": []}
    for _ in range(2):
        for name, filename in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            rounds[name].append(encoder_throughput(directory, filename, args.seconds / 2))
            print(name, rounds[name][-1], flush=True)
    for name, runs in rounds.items():
        result[f"encoder_{name}"] = max(runs, key=lambda r: r["texts_per_s"])
    result["encoder_int8_to_fp32_throughput"] = round(
        result["encoder_int8"]["texts_per_s"] / result["encoder_fp32"]["texts_per_s"], 2
    )

    result["recommend_fp32"] = recommend_latency(args.repo, None, args.calls)
    print("recommend fp32", result["recommend_fp32"], flush=True)
    result["recommend_int8"] = recommend_latency(args.repo, "int8", args.calls)
    print("recommend int8", result["recommend_int8"], flush=True)
    result["recommend_p50_int8_to_fp32"] = round(
        result["recommend_int8"]["p50_ms"] / result["recommend_fp32"]["p50_ms"], 2
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
