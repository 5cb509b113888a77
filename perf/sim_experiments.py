"""Simulated A/A and A/B experiments through `aisle experiment report`'s statistics, in one run.

Shoppers with a hidden click model (aisle_export.experiments.simulation), assigned to arms by the SDK's
hashing. Figures: the A/A false-positive rate (how often the report calls a difference where there
is none; nominal 5%), the shoppers per arm the report says a known lift needs, the share of A/B
experiments at that size that detect it (power asked: 80%), and the same at a quarter of that size;
plus the arm shares on 100,000 shopper ids. Writes perf/results/sim_experiments.{json,md,png}.

    .venv/bin/python -m perf.sim_experiments            # ~2 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from aisle_contract.experiments import HOLDOUT, Arm, Experiment
from aisle_export.experiments.simulation import PRIMARY, aa_false_positive_rate, ab_detection_rate, needed_shoppers
from perf.lib.run_info import RESULTS, command_line, machine


def share_deviation(ids: int) -> dict[str, float]:
    experiment = Experiment("shares", "perf-salt", [Arm("control", 0.45), Arm("b", 0.30), Arm("c", 0.15)], holdout=0.10)
    arms = [experiment.arm_of(f"shopper-{i}") for i in range(ids)]
    return {arm: 100 * (arms.count(arm) / ids - share) for arm, share in experiment.shares.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.sim_experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shoppers", type=int, default=2000, help="shoppers per A/A experiment (both arms)")
    parser.add_argument("--lift", type=float, default=0.10, help="the A/B's true relative lift of the click rate")
    parser.add_argument("--pilot", type=int, default=4000, help="shoppers of the pilot the needed size is read off")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    started = time.perf_counter()
    aa_rate, p_values = aa_false_positive_rate(args.runs, args.shoppers, seed=0)
    needed = needed_shoppers(args.lift, args.pilot, seed=0)
    detected = ab_detection_rate(args.runs, needed, args.lift, seed=1)
    quarter = ab_detection_rate(args.runs, needed // 4, args.lift, seed=2)
    shares = share_deviation(100_000)
    result = {
        "command": command_line("perf.sim_experiments", argv if argv is not None else sys.argv[1:]),
        "metric": PRIMARY,
        "runs": args.runs,
        "aa_shoppers": args.shoppers,
        "aa_false_positive_rate": aa_rate,
        "lift": args.lift,
        "shoppers_per_arm_needed": needed,
        "ab_detection_rate": detected,
        "ab_detection_rate_at_quarter_size": quarter,
        "share_deviation_pp_on_100k_ids": shares,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(load),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sim_experiments.json").write_text(json.dumps(result, indent=2) + "\n")
    worst = max(abs(v) for v in shares.values())
    (args.out / "sim_experiments.md").write_text(
        "# Simulated experiments (`aisle experiment report` statistics)\n\n"
        f"`{result['command']}` — metric `{PRIMARY}` (delta method over shoppers), alpha 0.05, power 0.8.\n\n"
        "| figure | value |\n| --- | ---: |\n"
        f"| A/A false-positive rate ({args.runs} experiments × {args.shoppers} shoppers) | {aa_rate:.3f} |\n"
        f"| shoppers per arm the report says +{args.lift:.0%} needs | {needed:,} |\n"
        f"| A/B detection rate at that size ({args.runs} experiments) | {detected:.3f} |\n"
        f"| A/B detection rate at a quarter of it | {quarter:.3f} |\n"
        f"| largest arm-share deviation on 100,000 ids (holdout {shares.get(HOLDOUT, 0):+.3f}) | {worst:.3f} pp |\n"
    )
    _plot(p_values, result, args.out / "sim_experiments.png")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


def _plot(p_values: list[float], result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.hist(p_values, bins=20, range=(0, 1), color="#888")
    left.axhline(len(p_values) / 20, color="k", lw=1, ls="--")
    left.set_title(f"A/A p-values (false positives {result['aa_false_positive_rate']:.1%})")
    sizes = ["n/4", "n (report)"]
    rates = [result["ab_detection_rate_at_quarter_size"], result["ab_detection_rate"]]
    right.bar(sizes, rates, color=["#bbb", "#3a7"])
    right.axhline(0.8, color="k", lw=1, ls="--")
    right.set_ylim(0, 1)
    right.set_title(f"A/B +{result['lift']:.0%}: detection, n = {result['shoppers_per_arm_needed']:,}/arm")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
