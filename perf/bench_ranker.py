"""Learned-ranker benchmark (not a test): what the ranker adds to a feed with ~500 candidates.

    .venv/bin/python -m perf.bench_ranker [--items 20000] [--rounds 3] [--seconds 3] [--trees 100] [--unconstrained]

In process, no server: ``aisle_server.ranking.rank`` (what ``rerank`` runs per row) on a synthetic
store — a catalog of ``--items`` random unit vectors, a log of shoppers who buy popular items and
their own staples again, its log signals as of a cut — for shoppers' feeds whose candidate union
(dense 380 + popular 100 + co-occurring 100 + the buy-again history) is about 500 items. The same
feeds are ranked without the learned ranker (the hand-weighted sum) and with it
(``learned_ranker=True``: features + predict), once with the trees compiled as ``LearnedRanker.load``
compiles them (lleaves, what ``rerank`` serves) and once with LightGBM's native predict; sides alternate
within each round, at concurrency 1 and 16 (threads over one index, as rerank's instance serves
them). ``OPENBLAS_NUM_THREADS=1`` as ``aisle serve`` runs Triton (OpenBLAS's own threads spinning
beside 16 request threads on 2 cores inflated every side here). The ranker is trained on the
synthetic log with ``--trees`` boosting rounds (default: the most ``aisle finetune`` keeps,
``RankerConfig.rounds``), no early stopping, and leaves of ≥ 20 rows (finetune: 50): the largest
model finetune installs, so the figure is an upper bound. Writes
``<out>/bench_ranker.{md,json,png}``; the target is an added p50 ≤ 1 ms at concurrency 16.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `aisle serve` runs Triton; before numpy loads OpenBLAS
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from perf.lib import loadgen
from perf.lib.run_info import RESULTS, command_line, machine, save_figure, write_report

TARGET_MS = 1.0
SIDES = ("without", "with", "with_native")
LABELS = {"without": "without", "with": "with (compiled)", "with_native": "with (LightGBM native)"}
CONCURRENCY = (1, 16)
DAY = 86400.0


def synthetic_store(items: int, shoppers: int, seed: int = 0):
    """A catalog, its log and a cut: popular items by a Zipf law, each shopper's staples bought again."""
    from aisle_export.data.catalog import Catalog
    from aisle_export.data.interactions import Interactions

    rng = np.random.default_rng(seed)
    ids = np.array([f"p{j}" for j in range(items)])
    catalog = Catalog(
        item_ids=ids,
        titles=ids,
        descriptions=np.array([""] * items),
        categories=np.array([f"c{j % 50}" for j in range(items)]),
        created_at=rng.uniform(0, 300 * DAY, items),
        popularity=np.zeros(items, dtype=np.float32),
        in_stock=np.ones(items, dtype=bool),
    )
    users, bought, times = [], [], []
    for u in range(shoppers):
        staples = rng.integers(0, items, 5)
        for visit in np.sort(rng.uniform(0, 120 * DAY, rng.integers(4, 12))):
            basket = np.concatenate([staples[rng.random(5) < 0.5], np.minimum(rng.zipf(1.3, 4) - 1, items - 1)])
            users += [f"u{u}"] * len(basket)
            bought += ids[basket].tolist()
            times += [visit] * len(basket)
    log = Interactions(np.array(users), np.array(bought), np.ones(len(users), np.float32), np.array(times))
    vectors = rng.standard_normal((items, 64)).astype(np.float32)
    return catalog, log, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def train(args: argparse.Namespace):
    """The synthetic store, its split at 0.8, the feeds' knobs, and a ranker fitted on it (with its
    fit record): what the in-process and the served benchmark (``perf.bench_ranker_served``) rank with."""
    from aisle_contract import RankingConfig
    from aisle_export.data.splits import temporal_split
    from aisle_export.learn.ranker import RankerConfig, feature_index, fit, split_groups

    catalog, log, vectors = synthetic_store(args.items, args.shoppers)
    split = temporal_split(log, quantile=0.8)
    index = feature_index(catalog, vectors, split)
    knobs = RankingConfig(
        candidates=380, popular_candidates=100, cooccurrence_candidates=100, exclude_history=False, user_encoder=False
    )
    settings = RankerConfig(rounds=args.trees, early_stopping=args.trees + 1, min_data_in_leaf=20, threads=1)
    if args.unconstrained:
        settings = replace(settings, monotone=())  # trees free of RankerConfig.monotone's constraints
    if args.searched_splits:
        settings = replace(settings, extra_trees=False)  # the trees before RankerConfig.extra_trees
    groups = split_groups(index, split, knobs, settings)
    ranker, fitted = fit(groups, groups, settings)
    return catalog, vectors, split, index, knobs, ranker, fitted


def build(args: argparse.Namespace):
    """The index with a trained ranker, the feeds to rank, and the ranking knobs."""
    from aisle_export.judge.rankers import feed_request
    from aisle_server.ranker import LearnedRanker

    _, _, split, index, knobs, ranker, fitted = train(args)
    with tempfile.TemporaryDirectory() as directory:  # as `aisle finetune` writes it and rerank loads it
        ranker = LearnedRanker.load(ranker.save(Path(directory) / "ranker"))
    assert ranker.compiled is not None, "the ranker did not compile (lleaves needed)"
    index = replace(index, ranker=ranker)
    requests = [feed_request(split, user, knobs, 10) for user in split.users[: args.feeds]]
    return index, requests, fitted


def run(args: argparse.Namespace, command: str) -> dict:
    from aisle_server.ranking import candidate_features, rank

    load_before = os.getloadavg()
    index, requests, fitted = build(args)
    candidates = [len(candidate_features(index, request)[0]) for request in requests]  # type: ignore[index]
    sides = {
        "with": [replace(r, config=replace(r.config, learned_ranker=True)) for r in requests],
        "without": [replace(r, config=replace(r.config, learned_ranker=False)) for r in requests],
    }
    sides["with_native"] = sides["with"]
    indexes = {
        "with": index,
        "without": index,
        "with_native": replace(index, ranker=replace(index.ranker, compiled=None)),
    }
    runs = []
    for round_ in range(args.rounds):
        for concurrency in CONCURRENCY:
            for side in SIDES:
                mix = [{"i": i} for i in range(len(requests))]
                feeds, served = sides[side], indexes[side]
                cpu: list[float] = []  # each request's CPU time on its own thread (warm-up included)

                def timed(request, feeds=feeds, served=served, cpu=cpu):
                    started = time.thread_time()
                    rank(served, feeds[request["i"]])
                    cpu.append(time.thread_time() - started)

                result = loadgen.run(lambda timed=timed: timed, mix, concurrency, duration_s=args.seconds, warmup_s=0.5)
                runs.append(
                    {
                        "round": round_,
                        "concurrency": concurrency,
                        "side": side,
                        "result": result.__dict__,
                        "cpu_p50_ms": 1e3 * statistics.median(cpu),
                    }
                )
                print(
                    f"round {round_} c={concurrency} {side}: p50 {result.p50_ms:.3f} ms, "
                    f"CPU p50 {1e3 * statistics.median(cpu):.3f} ms",
                    file=sys.stderr,
                )
    phases = {}
    for concurrency in CONCURRENCY:
        mine = [r for r in runs if r["concurrency"] == concurrency]
        p50 = {side: [r["result"]["p50_ms"] for r in mine if r["side"] == side] for side in SIDES}
        added = [w - wo for w, wo in zip(p50["with"], p50["without"])]
        native = [w - wo for w, wo in zip(p50["with_native"], p50["without"])]
        cpu = {side: [r["cpu_p50_ms"] for r in mine if r["side"] == side] for side in SIDES}
        phases[str(concurrency)] = {
            "cpu_p50_ms": {side: statistics.median(values) for side, values in cpu.items()},
            "added_cpu_p50_ms": statistics.median([w - wo for w, wo in zip(cpu["with"], cpu["without"])]),
            "p50_ms": {side: statistics.median(values) for side, values in p50.items()},
            "added_p50_ms": statistics.median(added),
            "added_p50_ms_range": [min(added), max(added)],
            "added_p50_ms_native": statistics.median(native),
            "met": statistics.median(added) <= TARGET_MS,
        }
    return {
        "command": command,
        "machine": machine(load_before),
        "items": args.items,
        "feeds": len(requests),
        "candidates_mean": float(np.mean(candidates)),
        "candidates_range": [int(min(candidates)), int(max(candidates))],
        **ranker_summary(index.ranker),
        "fit": fitted,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "phases": phases,
        "runs": runs,
    }


def render_markdown(report: dict) -> str:
    lines = [
        "# Learned ranker cost on a feed (in process, `aisle_server.ranking.rank`)",
        "",
        f"{report['feeds']} feeds over a synthetic catalog of {report['items']} items; candidate union "
        f"{report['candidates_mean']:.0f} on average ({report['candidates_range'][0]}–{report['candidates_range'][1]}); "
        f"ranker: LightGBM LambdaMART, {report['trees']} trees (split thresholds {report.get('splits', 'searched')}), compiled by lleaves (served) or LightGBM's native "
        f"predict, one thread. Medians of {report['rounds']} rounds × {report['seconds']:g} s per side; sides alternate "
        "inside each round.",
        "",
        "| concurrency | p50 without | p50 with (compiled) | added p50 (range over rounds) | target ≤ 1 ms "
        "| p50 with (LightGBM native) | added p50, native | CPU p50 without / with | added CPU p50 |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for concurrency, phase in report["phases"].items():
        low, high = phase["added_p50_ms_range"]
        lines.append(
            f"| {concurrency} | {phase['p50_ms']['without']:.3f} ms | {phase['p50_ms']['with']:.3f} ms | "
            f"{phase['added_p50_ms']:+.3f} ms ({low:+.3f} … {high:+.3f}) | {'met' if phase['met'] else '**not met**'} | "
            f"{phase['p50_ms']['with_native']:.3f} ms | {phase['added_p50_ms_native']:+.3f} ms | "
            f"{phase['cpu_p50_ms']['without']:.3f} / {phase['cpu_p50_ms']['with']:.3f} ms | "
            f"{phase['added_cpu_p50_ms']:+.3f} ms |"
        )
    m = report["machine"]
    lines += [
        "",
        "Latency at concurrency 16 is 16 Python threads sharing one GIL on 2 cores: how long a request waits for "
        "the GIL swings between runs (the hand-weighted side alone moved from 0.8 to 25 ms here), so the CPU time "
        "each request spent on its own thread (`time.thread_time`) is shown beside it: what the ranker costs.",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m}",
        "",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.27
    for i, side in enumerate(SIDES):
        values = [phase["p50_ms"][side] for phase in report["phases"].values()]
        ax.bar(np.arange(len(values)) + (i - 1) * width, values, width, label=f"{LABELS[side]} ranker")
    ax.set_xticks(range(len(report["phases"])), [f"concurrency {c}" for c in report["phases"]])
    ax.set_ylabel("p50 latency of rank() (ms)")
    ax.set_title(
        f"feed with ~{report['candidates_mean']:.0f} candidates: with vs without the learned ranker", fontsize=9
    )
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


def ranker_summary(ranker) -> dict:
    """What a report says of the timed ranker: its trees, whether ``RankerConfig.monotone``'s
    constraints shaped them, and how their split thresholds were picked."""
    params = ranker.manifest["params"]
    return {
        "trees": int(ranker.booster.num_trees()),
        "monotone": "monotone_constraints" in params,
        "splits": "random" if params.get("extra_trees") else "searched",
    }


def store_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The synthetic store's and the ranker's options (shared with ``perf.bench_ranker_served``)."""
    from aisle_export.learn.ranker import RankerConfig

    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--shoppers", type=int, default=2_000)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--trees", type=int, default=RankerConfig.rounds)  # the most `aisle finetune` keeps
    parser.add_argument(
        "--unconstrained", action="store_true", help="train without RankerConfig.monotone's constraints"
    )
    parser.add_argument(
        "--searched-splits", action="store_true", help="trees whose thresholds are searched (extra_trees off)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_ranker", description=__doc__.splitlines()[0])
    argv = sys.argv[1:] if argv is None else list(argv)
    args = store_arguments(parser).parse_args(argv)
    report = run(args, command_line("perf.bench_ranker", argv))
    write_report(args.out, "bench_ranker", report, render_markdown, plot)
    return report


if __name__ == "__main__":
    main()
