"""``python -m perf.bench`` (``make bench``): parse the options, run :class:`~perf.bench.scenario.Bench`,
write ``<stem>_results.json`` and the report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perf.bench import report
from perf.bench.scenario import Bench, say
from perf.lib.proxy_catalog import EMBEDDINGS, PROXY_ITEMS
from perf.lib.repository import DATA, DEMO, ROOT
from perf.lib.run_info import RESULTS, command_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perf.bench", description="Aisle side-by-side benchmarks (make bench)")
    p.add_argument("--repo", type=Path, default=DEMO)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--work", type=Path, default=ROOT / "build" / "bench")
    p.add_argument(
        "--items", type=int, default=2 * PROXY_ITEMS, help="grow the BigBasket catalog to this many items (≥ 50,000)"
    )
    p.add_argument(
        "--embeddings",
        type=Path,
        default=EMBEDDINGS,
        help="the item tower's vectors of the BigBasket proxy rows (`aisle evaluate`'s; embedded when absent)",
    )
    p.add_argument("--movielens", action="store_true", help="serve MovieLens (1,682 items) even when BigBasket is here")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32])
    p.add_argument("--measurement-ms", type=int, default=1500, help="perf_analyzer window (3 windows a point)")
    p.add_argument("--duration", type=float, default=4.0, help="load generator seconds a point")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3, help="paired rounds at concurrency 16 (0: none)")
    p.add_argument("--requests", type=int, default=512, help="distinct requests in the mix")
    p.add_argument(
        "--variants",
        nargs="*",
        help="only these Aisle variants (names as in the report, or perf.perf_analyzer.variants.STUDIES'), "
        "all of them in the paired rounds",
    )
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--no-extras", action="store_true", help="skip the default's component, feed and rate scenarios")
    p.add_argument("--budget-s", type=float, default=17 * 60, help="skip what is left past this")
    p.add_argument("--url", help="run the Aisle scenarios against this already running server (GPU suite)")
    p.add_argument("--label", default="aisle-external", help="system name for --url")
    p.add_argument("--no-report", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = Bench(args).run()
    results["command"] = command_line("perf.bench", sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench" if not args.url else f"bench_{args.label}"
    (args.out / f"{stem}_results.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_report:
        for path in report.write(results, args.out, stem):
            say(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
