"""MMR and DPP picking 10 of 1,000 candidates (384-d), in-process: p50/p95 per call.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m perf.bench_diversity [--repeats 500]

Writes perf/results/bench_diversity.json. A benchmark, not a test: the machine is shared. Run it
with one BLAS thread as well as without: on a busy 2-core machine multithreaded BLAS makes DPP's
per-pick float64 matrix-vector products wait for a second core (figures: docs/results.md, "MMR /
DPP cost" under "Content ranking study").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aisle_export.judge.content_study import diversity_latency


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_diversity", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("perf/results/bench_diversity.json"))
    args = parser.parse_args()
    results = [diversity_latency(n=1000, k=10, diversity=d, repeats=args.repeats) for d in (0.3, 0.5, 0.9)]
    import os

    for r in results:
        r["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS", "(default)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        print(
            f"diversity {r['diversity']}: MMR p50 {r['mmr']['p50_ms']:.3f} ms (p95 {r['mmr']['p95_ms']:.3f}), "
            f"DPP p50 {r['dpp']['p50_ms']:.3f} ms (p95 {r['dpp']['p95_ms']:.3f})"
        )


if __name__ == "__main__":
    main()
