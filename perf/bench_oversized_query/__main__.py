"""``python -m perf.bench_oversized_query``: parse the options, run the scenario, write md/json/png."""

from __future__ import annotations

from pathlib import Path

from perf.bench_oversized_query import __doc__ as DOC
from perf.bench_oversized_query import report, scenario
from perf.lib.run_info import benchmark_parser, run_benchmark


def main(argv: list[str] | None = None) -> dict:
    """Resolve the repository, start a server, time the schedule, write md/json/png."""
    parser = benchmark_parser("bench_oversized_query", DOC)
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="a model repository with a catalog index (default: build/model_repository from "
        "`make demo`, or the benchmarks' own build/perf/model_repository if that is missing or stale)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=12, help="calls per slot at 1 caller")
    parser.add_argument("--per-caller", type=int, default=2, help="calls per caller per slot at 16 callers")
    parser.add_argument("--rss-interval", type=float, default=0.1, help="seconds between RSS samples")
    result = run_benchmark("bench_oversized_query", parser, argv, scenario.run, report.render_markdown, report.plot)
    check = result["check"]
    if check["equal"] != check["checked"]:
        raise SystemExit("error: an oversized query's answer differs from its bounded prefix's (see the report)")
    return result


if __name__ == "__main__":
    main()
