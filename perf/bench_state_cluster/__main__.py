"""``python -m perf.bench_state_cluster``: parse the options, run the scenario, write md/json/png."""

from __future__ import annotations

from pathlib import Path

from perf.bench_state_cluster import __doc__ as DOC
from perf.bench_state_cluster import report, scenario
from perf.lib.run_info import ROOT, benchmark_parser, run_benchmark


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("bench_state_cluster", DOC)
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="a repository with the track model (default: the benchmarks' own, build/perf/model_repository)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / "build" / "bench_state_cluster", help="the Redis data directories"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="(a) measured seconds per round and store")
    parser.add_argument("--calls", type=int, default=200, help="(b), (d) calls per round and store")
    parser.add_argument("--pairs", type=int, default=150, help="(c) user_id/history pairs per round and store")
    parser.add_argument("--shoppers", type=int, default=100, help="(c) shoppers with stored events")
    parser.add_argument("--users", type=int, default=10_000, help="(a) synthetic shoppers")
    result = run_benchmark("bench_state_cluster", parser, argv, scenario.run, report.render_markdown, report.plot)
    return result


if __name__ == "__main__":
    main()
