"""``python -m perf.bench_realtime``: parse the options, run the scenario, write md/json/png."""

from __future__ import annotations

from pathlib import Path

from perf.bench_realtime import __doc__ as DOC
from perf.bench_realtime import report, scenario
from perf.lib.run_info import ROOT, benchmark_parser, run_benchmark


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("bench_realtime", DOC)
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="a repository with the track model (default: the benchmarks' own, build/perf/model_repository)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / "build" / "bench_realtime", help="the redis-server's state"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per ingest phase and round")
    parser.add_argument("--pairs", type=int, default=300, help="(b) user_id/history pairs per round")
    parser.add_argument("--users", type=int, default=10_000, help="(a) synthetic shoppers")
    parser.add_argument("--shoppers", type=int, default=200, help="(b) shoppers with stored events")
    parser.add_argument("--changes", type=int, default=60, help="(c) insert + stock/hide cycles")
    result = run_benchmark("bench_realtime", parser, argv, scenario.run, report.render_markdown, report.plot)
    return result


if __name__ == "__main__":
    main()
