"""``python -m perf.bench_user_encoder``: parse the options, run the scenario, write md/json/png."""

from __future__ import annotations

from pathlib import Path

from perf.bench_user_encoder import __doc__ as DOC
from perf.bench_user_encoder import report, scenario
from perf.lib.repository import DEMO
from perf.lib.run_info import benchmark_parser, run_benchmark


def main(argv: list[str] | None = None) -> dict:
    """Parse, run, write; returns the report (for tests)."""
    parser = benchmark_parser("bench_user_encoder", DOC)
    parser.add_argument(
        "--repo",
        type=Path,
        default=DEMO,
        help="a model repository with rerank/learned/user_encoder/ (`make demo` builds one)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per round, phase and side")
    parser.add_argument("--no-batched", action="store_true", help="skip the micro-batched phase")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where MovieLens-100K's files are (<workdir>/data; fetched if missing); "
        "default: the repository's parent, where `make demo` put them",
    )
    result = run_benchmark("bench_user_encoder", parser, argv, scenario.run, report.render_markdown, report.plot)
    return result


if __name__ == "__main__":
    main()
