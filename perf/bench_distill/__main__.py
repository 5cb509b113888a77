"""``python -m perf.bench_distill``: parse the options, run the scenario, write md/json/png."""

from __future__ import annotations

from pathlib import Path

from perf.bench_distill import __doc__ as DOC
from perf.bench_distill import report, scenario
from perf.lib.run_info import benchmark_parser, run_benchmark


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("bench_distill", DOC)
    parser.add_argument("--layers", type=Path, default=Path("build/students/layers"))
    parser.add_argument("--static", type=Path, default=Path("build/students/static"))
    parser.add_argument("--large-static", type=Path, default=Path("build/students/static-mpnet"))
    parser.add_argument("--workdir", type=Path, default=Path("build/distill"), help="`aisle distill --workdir`")
    parser.add_argument("--products", type=Path, default=scenario.PRODUCTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per encoder, batch and round")
    parser.add_argument("--served-rounds", type=int, default=2)
    parser.add_argument("--served-seconds", type=float, default=15.0, help="load window per tower and round")
    parser.add_argument("--items", type=int, default=2000, help="BigBasket item texts embedded per encoder")
    result = run_benchmark("bench_distill", parser, argv, scenario.run, report.to_markdown, report.plot)
    return result


if __name__ == "__main__":
    main()
