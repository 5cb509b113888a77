"""Exploration on simulated traffic: how soon new items get their first 100 exposures, and what it costs in CTR.

    .venv/bin/python -m perf.sim_exploration [--items 5000 --new 50 --requests 20000 --seeds 3]

A synthetic catalog (clustered vectors, a heavy-tailed popularity) with ``--new`` items added today
with no popularity; every item has a hidden click rate (drawn alike for old and new items). Each
simulated request is a search-like interest vector ranked by the real ranking stage
(``ranking.rank``, ``popularity_weight`` 0.3, k = 10); the page is shown, each item is clicked with
its hidden rate × 1/log2(position + 2), and the counts are fed back as the event log would
(``exploration.ItemCounts``). Conditions, on the same requests and clicks' random streams: no rule,
and ``{"effect": "explore", "match": "age_days < 30", "share": 0.1, "max_exposures": 100}``.
Reported: the share of new items that reached 100 exposures, their median number of requests to get
there (items that never did count as the run's length: a lower bound), and the simulated CTR
(clicks per request). Writes ``perf/results/sim_exploration.{json,md,png}``. A simulation, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from aisle_server.exploration import ItemCounts
from aisle_server.index import CatalogIndex
from aisle_server.ranking import RankingConfig, RankRequest, rank
from aisle_server.rules import parse
from perf.lib.run_info import RESULTS, command_line, machine, stamp, write_report
from perf.lib.synthetic_catalog import synthetic

NOW = 1.7e9
RULE = '[{"id": "new", "effect": "explore", "match": "age_days < 30", "share": 0.1, "max_exposures": 100}]'
TARGET = 100


def catalog(items: int, new: int, dim: int, seed: int) -> tuple[CatalogIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = items + new
    vectors = synthetic(n, dim, clusters=max(10, n // 100), seed=seed)
    created = np.concatenate([rng.uniform(NOW - 5 * 365 * 86400, NOW - 60 * 86400, items), np.full(new, NOW - 3600)])
    popularity = np.concatenate([rng.pareto(1.2, items) * 10, np.zeros(new)])
    index = CatalogIndex(
        item_ids=np.array([f"sku-{i}" for i in range(n)]),
        embeddings=vectors,
        titles=np.array([f"item {i}" for i in range(n)]),
        categories=np.array([f"c{i % 50}" for i in range(n)]),
        created_at=created,
        popularity=popularity,
        in_stock=np.ones(n, dtype=bool),
    )
    ctr = np.clip(rng.beta(2.0, 30.0, n), 0.0, 1.0)  # hidden click rates, old and new alike (mean ≈ 6%)
    return index, ctr


def simulate(
    index: CatalogIndex, ctr: np.ndarray, new_rows: np.ndarray, requests: int, explore: bool, seed: int
) -> dict:
    rng = np.random.default_rng(seed)  # the same interests and click draws for both conditions
    counts = ItemCounts()
    # a fixed stream of Thompson draws per run, for reproducible results
    rule_set = replace(parse(RULE, {}), counts=counts, rng=np.random.default_rng(seed + 1)) if explore else None
    config = RankingConfig(popularity_weight=0.3, freshness_weight=0.0)
    reached = np.full(len(new_rows), -1)
    new_position = {int(r): j for j, r in enumerate(new_rows)}
    clicks_total = 0
    dim = index.dim
    for t in range(requests):
        anchor = index.embeddings[int(rng.integers(0, len(index)))]
        interest = anchor + 0.6 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        request = RankRequest(interest / np.linalg.norm(interest), [], np.zeros(0), 10, NOW, config, rules=rule_set)
        result = rank(index, request)
        rows = index.rows_of(result.item_ids)
        draws = rng.random(len(rows))
        for position, (row, draw) in enumerate(zip(rows.tolist(), draws.tolist())):
            item = str(index.item_ids[row])
            counts.exposures[item] = counts.exposures.get(item, 0) + 1
            if draw < ctr[row] / np.log2(position + 2):
                counts.clicks[item] = counts.clicks.get(item, 0) + 1
                clicks_total += 1
            j = new_position.get(row)
            if j is not None and reached[j] < 0 and counts.exposures[item] >= TARGET:
                reached[j] = t + 1
    censored = np.where(reached < 0, requests, reached)
    return {
        "explore": explore,
        "share_reached": float((reached >= 0).mean()),
        "median_requests_to_100": float(np.median(censored)),
        "ctr": clicks_total / requests,
        "reached_at": sorted(censored.tolist()),
        "new_exposures": int(sum(counts.exposures.get(str(index.item_ids[r]), 0) for r in new_rows)),
    }


def run(items: int, new: int, requests: int, seeds: int, dim: int) -> dict:
    load_before = os.getloadavg()
    runs = []
    for seed in range(seeds):
        index, ctr = catalog(items, new, dim, seed)
        new_rows = np.arange(items, items + new)
        for explore in (False, True):
            out = simulate(index, ctr, new_rows, requests, explore, seed)
            out["seed"] = seed
            runs.append(out)
            print(
                f"{stamp()} seed {seed} explore={explore}: {out['share_reached']:.0%} of new items reached "
                f"{TARGET} exposures, median {out['median_requests_to_100']:.0f} requests; CTR {out['ctr']:.4f}"
            )
    summary = {}
    for explore in (False, True):
        mine = [r for r in runs if r["explore"] == explore]
        summary["explore" if explore else "none"] = {
            "share_reached": float(np.mean([r["share_reached"] for r in mine])),
            "median_requests_to_100": float(np.median([r["median_requests_to_100"] for r in mine])),
            "ctr": float(np.mean([r["ctr"] for r in mine])),
            "new_exposures": float(np.mean([r["new_exposures"] for r in mine])),
        }
    cost = 1.0 - summary["explore"]["ctr"] / summary["none"]["ctr"] if summary["none"]["ctr"] else 0.0
    return {
        "command": command_line("perf.sim_exploration", sys.argv[1:]),
        "machine": machine(load_before),
        "items": items,
        "new": new,
        "requests": requests,
        "seeds": seeds,
        "rule": RULE,
        "runs": runs,
        "summary": summary,
        "ctr_cost": cost,
    }


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [
        "# Exploration on simulated traffic",
        "",
        f"`{report['command']}` — {report['items']:,} items + {report['new']} new ones (no popularity), "
        f"{report['requests']:,} search-like requests (k = 10, `popularity_weight` 0.3) per run, "
        f"{report['seeds']} seeds; rule `{report['rule']}`.",
        "",
        "| | new items reaching 100 exposures | median requests to 100 (censored at the run's length) "
        "| exposures of new items | simulated CTR (clicks / request) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("none", "no exploration"), ("explore", "explore, share 0.1")):
        row = s[name]
        lines.append(
            f"| {label} | {row['share_reached']:.0%} | {row['median_requests_to_100']:,.0f} | "
            f"{row['new_exposures']:,.0f} | {row['ctr']:.4f} |"
        )
    lines += [
        "",
        f"CTR cost of exploring: {report['ctr_cost']:+.1%} (relative; negative: exploring found better items).",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for explore, label in ((False, "no exploration"), (True, "explore, share 0.1")):
        reached = np.concatenate([r["reached_at"] for r in report["runs"] if r["explore"] == explore])
        reached = np.sort(reached)
        ax.step(reached, np.arange(1, len(reached) + 1) / len(reached), where="post", label=label)
    ax.set_xlabel("requests")
    ax.set_ylabel(f"share of new items with {TARGET} exposures")
    ax.set_title("Time to first 100 exposures of new items (simulated)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.sim_exploration", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--new", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = run(args.items, args.new, args.requests, args.seeds, args.dim)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "sim_exploration", report, markdown, plot)


if __name__ == "__main__":
    main()
