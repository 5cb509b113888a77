"""The learned ranker's cost through a real tritonserver: feeds of ~500 candidates, with and without it.

    .venv/bin/python -m perf.bench_ranker_served [--items 20000] [--rounds 3] [--seconds 10] [--trees 100] [--unconstrained]

``perf.bench_ranker`` times ``rank`` in process, where 16 Python threads share one GIL and its
concurrency-16 figure is mostly that queue. Served, ``rerank`` runs one dynamic batch at a time per
instance, in its own process; this benchmark measures there. The same synthetic store and ranker as
``perf.bench_ranker`` (:func:`perf.bench_ranker.train`) are written as a repository of ``rerank``
alone — the catalog's index, the log's signals as of the cut, the ranker as ``aisle finetune``
installs it (compiled by lleaves as ``rerank`` loads it) and the feeds' knobs in its config — and served by
``TritonServer``. Shoppers' feeds go straight to ``rerank`` over gRPC (``QUERY`` empty, the
history, ``NOW`` the cut, ``K`` 10), with ``LEARNED_RANKER`` true on one side and false on the
other, the sides alternating window by window at concurrency 1 and 16 on the one server. Per
window: throughput, p50/p99 latency, Triton's busy time of ``rerank`` per request (wall time of
its batches ÷ requests) and the ``rerank`` process's CPU time per request (``/proc``: the work,
without the waiting for a core that the wall time includes on this loaded 2-core machine). Then
an open loop at concurrency 16 (``--open-share``): both sides at one fixed rate, half what the
ranker side served closed-loop, so neither saturates (``perf.lib.loadgen``'s ``rate_per_s``); last,
at that rate, windows whose feeds alternate with and without the ranker request by request
(``loadgen.run``'s ``side_of``), where both sides meet the same moments of the shared machine.

Before timing, a few feeds are checked against the offline ranker (``rank`` on the same index):
the same ids and scores within 1e-5, or the benchmark stops. Issue #25's target: the ranker adds
≤ 1 ms p50 to a feed at concurrency 16. Writes ``<out>/bench_ranker_served.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from perf.bench_ranker import CONCURRENCY, TARGET_MS, ranker_summary, store_arguments, train
from perf.lib import loadgen, triton_stats
from perf.lib.procstats import group_cpu_seconds
from perf.lib.run_info import ROOT, command_line, machine, save_figure, write_report

SIDES = ("without", "with")
CHECKED_FEEDS = 5


def write_repository(repo: Path, catalog, vectors: np.ndarray, split, knobs, ranker) -> Path:
    """``rerank`` alone, as ``aisle index`` + ``aisle finetune`` would leave it for this store."""
    import shutil

    from aisle_export.build.repository import render, rerank_config
    from aisle_export.index.log_signals import split_signals
    from aisle_export.index.writing import catalog_index, save_version
    from aisle_server.learned import LEARNED_DIRNAME, LOG_SIGNALS_DIRNAME, RANKER_DIRNAME

    shutil.rmtree(repo, ignore_errors=True)
    (repo / "rerank").mkdir(parents=True)
    (repo / "rerank" / "config.pbtxt").write_text(render(rerank_config(vectors.shape[1], knobs)))
    save_version(catalog_index(catalog, vectors), repo, "1")
    learned = repo / "rerank" / LEARNED_DIRNAME
    learned.mkdir()
    split_signals(split).save(learned / LOG_SIGNALS_DIRNAME)
    ranker.save(learned / RANKER_DIRNAME)
    return repo


class RerankFeed:
    """One worker's gRPC client sending a feed straight to ``rerank``; its inputs built once per feed."""

    def __init__(self, url: str, dim: int):
        import tritonclient.grpc as grpcclient

        self.grpc, self.dim = grpcclient, dim
        self.client = grpcclient.InferenceServerClient(url)
        self.outputs = [grpcclient.InferRequestedOutput("ITEM_IDS"), grpcclient.InferRequestedOutput("SCORES")]
        self.built: dict[tuple[int, bool], list] = {}

    def inputs(self, request) -> list:
        key = (id(request["feed"]), request["learned"])
        if key not in self.built:
            self.built[key] = feed_inputs(self.grpc, request["feed"], self.dim, request["learned"])
        return self.built[key]

    def __call__(self, request: dict):
        return self.client.infer("rerank", self.inputs(request), outputs=self.outputs, client_timeout=60)

    def close(self) -> None:
        self.client.close()


def feed_inputs(grpc, feed, dim: int, learned: bool) -> list:
    """``rerank``'s input tensors for one feed request (a ``RankRequest`` without a query)."""
    arrays = [
        ("QUERY", np.array([[b""]], dtype=object), "BYTES"),
        ("QUERY_EMBEDDING", np.zeros((1, dim), dtype=np.float32), "FP32"),
        ("HISTORY_IDS", np.array([[i.encode() for i in feed.history_ids]], dtype=object), "BYTES"),
        ("HISTORY_TS", np.asarray(feed.history_ts, dtype=np.float64).reshape(1, -1), "FP64"),
        ("K", np.array([[feed.k]], dtype=np.int32), "INT32"),
        ("NOW", np.array([[feed.now]], dtype=np.float64), "FP64"),
        ("LEARNED_RANKER", np.array([[learned]], dtype=bool), "BOOL"),
    ]
    if len(feed.history_events):
        arrays.append(("HISTORY_EVENTS", np.array([[e.encode() for e in feed.history_events]], dtype=object), "BYTES"))
    tensors = []
    for name, array, datatype in arrays:
        tensor = grpc.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def check_against_offline(url: str, index, feeds, dim: int) -> int:
    """The served feeds are the offline ranker's: same ids, scores within 1e-5 (else SystemExit)."""
    from aisle_server.ranking import rank

    call = RerankFeed(url, dim)
    try:
        for feed in feeds[:CHECKED_FEEDS]:
            result = call({"feed": feed, "learned": True})
            ids = [i.decode() for i in result.as_numpy("ITEM_IDS")[0]]
            scores = result.as_numpy("SCORES")[0]
            want = rank(index, replace(feed, config=replace(feed.config, learned_ranker=True)))
            if ids != want.item_ids or not np.allclose(scores, want.scores, rtol=0, atol=1e-5):
                raise SystemExit(f"served feed differs from the offline ranker's: {ids} vs {want.item_ids}")
    finally:
        call.close()
    return min(CHECKED_FEEDS, len(feeds))


def run(args: argparse.Namespace, command: str) -> dict:
    from aisle_export.judge.rankers import feed_request
    from aisle_server.index import CatalogIndex
    from aisle_server.learned import LEARNED_DIRNAME, attach_learned
    from aisle_server.tritonserver import TritonServer

    load_before = os.getloadavg()
    catalog, vectors, split, _, knobs, ranker, fitted = train(args)
    repo = write_repository(args.workdir / "repository", catalog, vectors, split, knobs, ranker)
    served_index = attach_learned(CatalogIndex.load(repo / "rerank" / "1" / "index"), repo / "rerank" / LEARNED_DIRNAME)
    if served_index.ranker is None or served_index.ranker.compiled is None:
        raise SystemExit("the ranker did not load compiled (lleaves needed)")
    feeds = [feed_request(split, user, knobs, 10) for user in split.users[: args.feeds]]
    dim = int(vectors.shape[1])
    runs: list[dict] = []
    interleaved: list[dict] = []  # the open loop's rate with both sides in every window
    with TritonServer(repo, log_file=args.workdir / "tritonserver.log") as server:
        checked = check_against_offline(server.grpc_url, served_index, feeds, dim)

        def window(round_: int, load: str, concurrency: int, side: str, rate: float | None = None) -> None:
            mix = [{"feed": feed, "learned": side == "with"} for feed in feeds]
            before = triton_stats.snapshot(server.grpc_url, ["rerank"])
            cpu_before = group_cpu_seconds(server.pid)
            result = loadgen.run(
                lambda: RerankFeed(server.grpc_url, dim), mix, concurrency, args.seconds, 1.0, rate_per_s=rate
            )
            delta = triton_stats.diff(triton_stats.snapshot(server.grpc_url, ["rerank"]), before)["rerank"]
            used_s = group_cpu_seconds(server.pid).get("rerank", 0.0) - cpu_before.get("rerank", 0.0)
            row = {
                "round": round_,
                "load_label": load,
                "concurrency": concurrency,
                "rate_per_s": rate,
                "side": side,
                "result": result.to_dict(),
                "busy_ms": triton_stats.per_request_ms(delta)["busy_ms"],
                "rerank_cpu_ms": 1e3 * used_s / max(1, delta["requests"]),
                "avg_batch": delta["inferences"] / max(1, delta["executions"]),
                "load": os.getloadavg()[0],
            }
            runs.append(row)
            print(
                f"round {round_} {load} {side}: {result.throughput:.1f} req/s, p50 {result.p50_ms:.2f} "
                f"ms, busy {row['busy_ms']:.3f} ms, CPU {row['rerank_cpu_ms']:.3f} ms/request, "
                f"batch {row['avg_batch']:.1f}, load {row['load']:.1f}",
                file=sys.stderr,
                flush=True,
            )

        for round_ in range(args.rounds):
            for concurrency in CONCURRENCY:
                for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                    window(round_, str(concurrency), concurrency, side)
        if args.open_share > 0:  # a store's traffic at a rate both sides serve with room to spare
            top = max(CONCURRENCY)
            with_ranker = [r["result"]["throughput"] for r in runs if r["concurrency"] == top and r["side"] == "with"]
            rate = round(args.open_share * statistics.median(with_ranker), 1)
            for round_ in range(args.rounds):
                for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                    window(round_, f"{top}, open loop at {rate:g} req/s", top, side, rate)
            for round_ in range(args.rounds):  # then both sides inside each window, request by request
                order = (True, False) if round_ % 2 == 0 else (False, True)
                mix = [{"feed": feed, "learned": learned} for feed in feeds for learned in order]
                result = loadgen.run(
                    lambda: RerankFeed(server.grpc_url, dim),
                    mix,
                    top,
                    args.seconds,
                    1.0,
                    rate_per_s=rate,
                    side_of=lambda request: "with" if request["learned"] else "without",
                )
                interleaved.append({"round": round_, "rate_per_s": rate, "result": result.to_dict()})
                sides = result.sides or {}
                print(
                    f"round {round_} interleaved at {rate:g} req/s: p50 with "
                    f"{sides.get('with', {}).get('p50_ms', float('nan')):.2f} ms, without "
                    f"{sides.get('without', {}).get('p50_ms', float('nan')):.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    labels = list(dict.fromkeys(r["load_label"] for r in runs))
    return {
        "command": command,
        "machine": machine(load_before),
        "items": args.items,
        "feeds": len(feeds),
        "checked_feeds": checked,
        **ranker_summary(served_index.ranker),
        "fit": fitted,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "open_share": args.open_share,
        "phases": {label: phase([r for r in runs if r["load_label"] == label]) for label in labels},
        "interleaved": interleaved_phase(interleaved) if interleaved else None,
        "runs": runs,
        "interleaved_runs": interleaved,
    }


def phase(runs: list[dict]) -> dict:
    """Medians over the rounds of one concurrency, per side, and what the ranker added."""
    figures = {
        "p50_ms": lambda r: r["result"]["p50_ms"],
        "p99_ms": lambda r: r["result"]["p99_ms"],
        "throughput": lambda r: r["result"]["throughput"],
        "busy_ms": lambda r: r["busy_ms"],
        "rerank_cpu_ms": lambda r: r["rerank_cpu_ms"],
    }
    out: dict = {
        name: {side: statistics.median(get(r) for r in runs if r["side"] == side) for side in SIDES}
        for name, get in figures.items()
    }
    # each round's two windows ran back to back: their difference leaves out the machine's drift
    # from round to round (on this shared machine a side's CPU per request moved 1.6×)
    without = {r["round"]: r for r in runs if r["side"] == "without"}
    for name, get in figures.items():
        if name in ("p50_ms", "busy_ms", "rerank_cpu_ms"):
            out[f"added_{name}"] = out[name]["with"] - out[name]["without"]
            paired = [get(r) - get(without[r["round"]]) for r in runs if r["side"] == "with"]
            out[f"paired_{name}"] = _spread(paired)
    out["met"] = max(out["added_p50_ms"], out["paired_p50_ms"]["median"]) <= TARGET_MS
    return out


def interleaved_phase(rounds: list[dict]) -> dict:
    """Windows whose requests alternate with and without the ranker: each side's p50 (median over
    the rounds) and what the ranker added, per round inside one window, then its median and range."""
    added = _spread(
        [r["result"]["sides"]["with"]["p50_ms"] - r["result"]["sides"]["without"]["p50_ms"] for r in rounds]
    )
    return {
        "rate_per_s": rounds[0]["rate_per_s"],
        "p50_ms": {side: statistics.median(r["result"]["sides"][side]["p50_ms"] for r in rounds) for side in SIDES},
        "p99_ms": {side: statistics.median(r["result"]["sides"][side]["p99_ms"] for r in rounds) for side in SIDES},
        "errors": sum(r["result"]["errors"] for r in rounds),
        "added_p50_ms": added,
        "met": added["median"] <= TARGET_MS,
    }


def _spread(differences: list[float]) -> dict[str, float]:
    """The rounds' differences (with − without) as their median and range."""
    return {"median": statistics.median(differences), "min": min(differences), "max": max(differences)}


def _added(figures: dict, name: str, digits: int) -> str:
    """What the ranker added to ``name``: the medians' difference [the rounds' median, min … max]."""
    paired = figures[f"paired_{name}"]
    return (
        f"{figures[f'added_{name}']:+.{digits}f} ms [{paired['median']:+.{digits}f}, "
        f"{paired['min']:+.{digits}f} … {paired['max']:+.{digits}f}]"
    )


def render_markdown(report: dict) -> str:
    lines = [
        "# Learned ranker cost on a served feed (`rerank` through tritonserver)",
        "",
        f"{report['feeds']} feeds of a synthetic store of {report['items']:,} items (as `perf.bench_ranker`: "
        f"candidate union ≈ 500), sent straight to `rerank` with `LEARNED_RANKER` true / false; ranker "
        f"{report['trees']} trees ({'monotone in the stack score' if report.get('monotone') else 'unconstrained'}; "
        f"split thresholds {report.get('splits', 'searched')}), "
        f"compiled (lleaves). {report['checked_feeds']} served feeds checked first "
        f"against the offline ranker: same ids, scores within 1e-5. Medians of {report['rounds']} rounds × "
        f"{report['seconds']:g} s per side, sides alternating.",
        "",
        "| concurrency (load) | side | req/s | p50 ms | p99 ms | `rerank` busy ms / request | `rerank` CPU ms / request |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for concurrency, figures in report["phases"].items():
        for side in SIDES:
            lines.append(
                f"| {concurrency} | {side} | {figures['throughput'][side]:.1f} | {figures['p50_ms'][side]:.2f} | "
                f"{figures['p99_ms'][side]:.2f} | {figures['busy_ms'][side]:.3f} | {figures['rerank_cpu_ms'][side]:.3f} |"
            )
    lines += [
        "",
        "What the ranker adds (with − without): the medians' difference, then in brackets the median of "
        "the rounds' own differences (each round's two windows back to back) and their range. The target "
        "counts as met only where both are within it:",
        "",
    ]
    for concurrency, figures in report["phases"].items():
        lines.append(
            f"- concurrency {concurrency}: p50 {_added(figures, 'p50_ms', 2)} "
            f"(target ≤ {TARGET_MS:g} ms: {'met' if figures['met'] else '**not met**'}), `rerank` busy "
            f"{_added(figures, 'busy_ms', 3)} / request, `rerank` CPU {_added(figures, 'rerank_cpu_ms', 3)} / request"
        )
    mixed = report.get("interleaved")
    if mixed:
        added = mixed["added_p50_ms"]
        lines.append(
            f"- concurrency 16, open loop at {mixed['rate_per_s']:g} req/s, **the two sides request by request in "
            f"the same windows**: p50 with {mixed['p50_ms']['with']:.2f} ms, without "
            f"{mixed['p50_ms']['without']:.2f} ms (p99 {mixed['p99_ms']['with']:.2f} / "
            f"{mixed['p99_ms']['without']:.2f} ms); added p50, the rounds' median {added['median']:+.2f} ms "
            f"({added['min']:+.2f} … {added['max']:+.2f}; target ≤ {TARGET_MS:g} ms: "
            f"{'met' if mixed['met'] else '**not met**'}); {mixed['errors']} errors"
        )
    lines += [
        "",
        "At concurrency 16 in a closed loop the feeds queue for the one `rerank` instance: each millisecond a "
        "batch takes shows in every waiting request's latency, so the added p50 there is the added busy time "
        "times the queue, not the ranker's own cost (the busy and CPU columns). The open loop sends at a fixed "
        f"rate ({report.get('open_share', 0):g} × the ranker side's closed-loop throughput at concurrency 16, the "
        "same rate for both sides, at most 16 in flight; latency from when each request fell due): what a shopper "
        "sees when the server is not saturated. In the interleaved windows the feeds alternate with and "
        "without the ranker at the open loop's rate (each feed once each way), so both sides meet the same "
        "moments of the machine; `rerank`'s CPU cannot be split by side there.",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']}",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = dict(report["phases"])
    if report.get("interleaved"):  # latency only: the process's CPU is not split by side there
        phases["interleaved"] = {"p50_ms": report["interleaved"]["p50_ms"]}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (name, label) in zip(
        axes, (("p50_ms", "p50 latency (ms)"), ("rerank_cpu_ms", "rerank CPU per request (ms)")), strict=True
    ):
        shown = [c for c in phases if name in phases[c]]
        for i, side in enumerate(SIDES):
            values = [phases[c][name][side] for c in shown]
            ax.bar(np.arange(len(values)) + (i - 0.5) * 0.4, values, 0.4, label=f"{side} ranker")
        ax.set_xticks(
            range(len(shown)), [f"c {c}" if c.isdigit() else c.replace(", open loop at", "\nopen") for c in shown]
        )
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("served feed (~500 candidates): with vs without the learned ranker", fontsize=9)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_ranker_served", description=__doc__.splitlines()[0])
    store_arguments(parser)
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench_ranker_served")
    parser.add_argument(
        "--open-share",
        type=float,
        default=0.5,
        help="also an open loop at concurrency 16 whose rate is this share of the ranker side's closed-loop "
        "throughput there (0: none)",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be ≥ 1 and --seconds > 0")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args, command_line("perf.bench_ranker_served", argv))
    write_report(args.out, "bench_ranker_served", report, render_markdown, plot)
    return report


if __name__ == "__main__":
    main()
