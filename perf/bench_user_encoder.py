"""User-encoder benchmark (not a test): what the learned user encoder adds to a feed call, as ratios.

    .venv/bin/python perf/bench_user_encoder.py [--repo build/model_repository] [--rounds 3] [--seconds 8]

Starts its own tritonserver over ``--repo`` (which must hold ``rerank/learned/user_encoder/``:
``make demo`` builds one), then times MovieLens shoppers' home feeds (history, no query; each call
a different shopper) with the encoder (``user_encoder=True``) and without it (``user_encoder=False``:
the recency-weighted mean of the history's embeddings) on the same server in the same run. Sides
alternate A/B/A/B within each round, so a shared machine's noise hits both alike; figures are
medians of rounds and every with/without ratio is taken inside one round. Phases: single calls at
concurrency 1, 16 threads unbatched, 16 threads micro-batched (``max_delay_ms=2, max_batch=16``);
caches off throughout. Writes ``<out>/bench_user_encoder.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from run_info import command_line, machine, write_report

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("with", "without")  # with the user encoder / without it (recency-weighted mean)
MIN_HISTORY, MAX_HISTORY = 5, 50
ADDED_P50_TARGET_MS = 2.0
K = 10


@dataclass(frozen=True)
class Phase:
    """One load shape: ``concurrency`` closed-loop callers, micro-batched or not."""

    name: str
    concurrency: int
    max_delay_ms: float | None = None
    max_batch: int = 16

    @property
    def label(self) -> str:
        batching = (
            f"micro-batched (max_delay_ms={self.max_delay_ms:g}, max_batch={self.max_batch})"
            if self.max_delay_ms is not None
            else "unbatched"
        )
        return f"c={self.concurrency}, {batching}"


PHASES = (Phase("c1", 1), Phase("c16", 16), Phase("c16_batched", 16, max_delay_ms=2.0, max_batch=16))


@dataclass(frozen=True)
class Slot:
    """One timed run of the schedule: round ``round``, load shape ``phase``, side ``side``."""

    round: int
    phase: Phase
    side: str


# --------------------------------------------------------------------------- requests


def feed_requests(
    histories: Mapping[str, Sequence[tuple[str, float]]],
    events: Mapping[str, Sequence[str]],
    now: float,
    min_len: int = MIN_HISTORY,
    max_len: int = MAX_HISTORY,
) -> list[dict]:
    """One feed request per shopper with ≥ ``min_len`` history items: its ``max_len`` most recent.

    Real histories rather than synthetic ones, because the encoder's cost grows with the history's
    length and its event types are what the encoder reads. Items are ``(item_id, ts, event_type)``
    when the log has an event for every item, else ``(item_id, ts)``. Shoppers are sorted so runs
    cycle through them in the same order.
    """
    requests = []
    for user in sorted(histories):
        history = list(histories[user])
        if len(history) < min_len:
            continue
        kinds = list(events.get(user, ()))
        recent = history[-max_len:]
        if len(kinds) == len(history):
            items = [(str(item), float(ts), str(kind)) for (item, ts), kind in zip(recent, kinds[-max_len:])]
        else:
            items = [(str(item), float(ts)) for item, ts in recent]
        requests.append({"user": user, "history": items, "now": float(now)})
    if not requests:
        raise ValueError(f"no shopper has at least {min_len} history items")
    return requests


def knobs(side: str) -> dict[str, bool]:
    """The ranking knob of a side, sent explicitly on both so both send the same tensors."""
    if side not in SIDES:
        raise ValueError(f"side {side!r} not in {SIDES}")
    return {"user_encoder": side == "with"}


def feed_call(client: object, side: str) -> Callable[[dict], None]:
    """``loadgen`` call: one uncached feed ``recommend`` of ``side`` on a client shared by all workers.

    Shared, so the micro-batcher sees every worker's calls; a plain function (no ``close``), so
    ``loadgen`` leaves the client open for the caller to close.
    """
    ranking = knobs(side)

    def call(request: dict) -> None:
        client.recommend(None, request["history"], k=K, now=request["now"], cache=False, **ranking)

    return call


def schedule(rounds: int, phases: Sequence[Phase] = PHASES, sides: Sequence[str] = SIDES) -> list[Slot]:
    """Round by round, phase by phase, the sides back to back (A/B/A/B…).

    Each with/without pair runs seconds apart, so drift in the machine's load lands on both; the
    phases are spread over the whole run rather than one after another.
    """
    if rounds < 1:
        raise ValueError("need at least one round")
    return [Slot(r, phase, side) for r in range(rounds) for phase in phases for side in sides]


# --------------------------------------------------------------------------- summary


def _ratio(a: float, b: float) -> float:
    """``a / b``, nan for ``b == 0`` (a side that completed nothing): shown, not a crash at the end of a run."""
    return a / b if b else float("nan")


def summarize_phase(runs: Sequence[dict]) -> dict:
    """Medians of rounds per side, and with/without ratios taken inside each round.

    ``runs``: ``{"round", "side", "result": LoadResult.to_dict()}`` of one phase. Paired per round
    because two runs minutes apart on a noisy machine differ more than the sides do.
    """
    by_round: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["side"]] = run
    paired = [by_round[r] for r in sorted(by_round) if set(SIDES) <= set(by_round[r])]
    if not paired:
        raise ValueError("no round has both sides")
    pairs = [{side: pair[side]["result"] for side in SIDES} for pair in paired]
    busy = {
        side: statistics.median(pair[side].get("rerank_busy_ms_per_feed", math.nan) for pair in paired)
        for side in SIDES
    }
    sides = {
        side: {key: statistics.median(p[side][key] for p in pairs) for key in ("p50_ms", "p95_ms", "throughput")}
        for side in SIDES
    }
    ratios = {
        "p50": [_ratio(p["with"]["p50_ms"], p["without"]["p50_ms"]) for p in pairs],
        "p95": [_ratio(p["with"]["p95_ms"], p["without"]["p95_ms"]) for p in pairs],
        "throughput": [_ratio(p["with"]["throughput"], p["without"]["throughput"]) for p in pairs],
    }
    added = [p["with"]["p50_ms"] - p["without"]["p50_ms"] for p in pairs]
    return {
        "rounds": len(pairs),
        "sides": sides,
        "added_p50_ms": statistics.median(added),
        "added_p50_ms_range": [min(added), max(added)],
        "ratio": {name: statistics.median(values) for name, values in ratios.items()},
        "ratio_range": {name: [min(values), max(values)] for name, values in ratios.items()},
        "errors": {side: sum(p[side]["errors"] for p in pairs) for side in SIDES},
        "rerank_busy_ms_per_feed": busy,
    }


def summarize(runs: Sequence[dict], phases: Sequence[Phase] = PHASES) -> dict[str, dict]:
    """``summarize_phase`` for each phase that has runs, keyed by phase name."""
    return {
        phase.name: summarize_phase([r for r in runs if r["phase"] == phase.name])
        for phase in phases
        if any(r["phase"] == phase.name for r in runs)
    }


# --------------------------------------------------------------------------- report


def _range(values: Sequence[float], fmt: str) -> str:
    """``[low, high]`` as ``low … high``: the spread over rounds, shown next to every median."""
    return f"{format(values[0], fmt)} … {format(values[1], fmt)}"


def _phase_rows(phase: Phase, s: dict) -> list[str]:
    """The figures of one phase: both sides' medians, then the in-round ratios and their range."""
    w, wo, ratio, spread = s["sides"]["with"], s["sides"]["without"], s["ratio"], s["ratio_range"]
    rows = [
        f"| {phase.label}: p50 with / without | {w['p50_ms']:.2f} / {wo['p50_ms']:.2f} ms |",
        f"| {phase.label}: p50 ratio with/without (rounds) | {ratio['p50']:.2f}× ({_range(spread['p50'], '.2f')}) |",
        f"| {phase.label}: p95 with / without, ratio | {w['p95_ms']:.2f} / {wo['p95_ms']:.2f} ms, "
        f"{ratio['p95']:.2f}× ({_range(spread['p95'], '.2f')}) |",
    ]
    busy = s["rerank_busy_ms_per_feed"]
    rows.append(
        f"| {phase.label}: `rerank` busy per feed with / without (Triton statistics) | "
        f"{busy['with']:.2f} / {busy['without']:.2f} ms |"
    )
    if phase.concurrency == 1:
        verdict = "met" if s["added_p50_ms"] <= ADDED_P50_TARGET_MS else "**not met**"
        rows.insert(
            1,
            f"| {phase.label}: added p50 (target ≤ {ADDED_P50_TARGET_MS:g} ms) | "
            f"{s['added_p50_ms']:+.2f} ms ({_range(s['added_p50_ms_range'], '+.2f')}): {verdict} |",
        )
    else:
        rows.insert(
            0, f"| {phase.label}: throughput with / without | {w['throughput']:.1f} / {wo['throughput']:.1f} calls/s |"
        )
        rows.insert(
            1,
            f"| {phase.label}: throughput ratio with/without (rounds) | "
            f"{ratio['throughput']:.2f}× ({_range(spread['throughput'], '.2f')}) |",
        )
    return rows


def render_markdown(report: dict) -> str:
    """The report: headline figures per phase, how and where they were measured, every run."""
    machine, feeds, phases = report["machine"], report["feeds"], {p.name: p for p in PHASES}
    lines = [
        f"# User encoder cost on the feed ({machine['cpus']} cores, {machine['platform']})",
        "",
        "Ratios are with/without the learned user encoder, taken inside each round (sides run back to back); "
        "figures are medians of rounds, the range in brackets is over rounds.",
        "",
        "| what | figure |",
        "| --- | --- |",
    ]
    for name, s in report["phases"].items():
        lines += _phase_rows(phases[name], s)
    load = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
    lines += [
        "",
        f"- command: `{report['command']}`",
        f"- machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']}; load average "
        f"(1/5/15 min) before {load(machine['load_before'])}, after {load(machine['load_after'])}",
        f"- repository: `{report['repo']}`; user encoder max_len {report['encoder'].get('max_len')}, "
        f"dim {report['encoder'].get('dim')}",
        f"- feeds: {feeds['shoppers']} MovieLens test shoppers' {MIN_HISTORY}–{MAX_HISTORY} most recent ratings "
        f"(mean {feeds['mean_history']:.1f} items, event types `rated_<n>`: {feeds['events']}), now = the cut; "
        "each call a different shopper, cycled; k=10; SDK caches off, Triton response cache off",
        f"- {report['rounds']} round(s) × {report['seconds']:g} s per phase and side (after 1 s warm-up); errors "
        f"with/without: {sum(s['errors']['with'] for s in report['phases'].values())}/"
        f"{sum(s['errors']['without'] for s in report['phases'].values())}",
        f"- check: the encoder changed the top {K} of {report['check']['differ']} of {report['check']['sampled']} "
        "sampled feeds (it is loaded and used)",
        "",
        "| round | load | side | calls/s | p50 ms | p95 ms | errors | rerank busy ms per feed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in report["runs"]:
        r = run["result"]
        lines.append(
            f"| {run['round']} | {phases[run['phase']].label} | {run['side']} | {r['throughput']:.1f} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['errors']} | {run['rerank_busy_ms_per_feed']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Bars with vs without: p50 at c=1 and throughput at c=16 (and micro-batched), round ranges as whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, "p50_ms", "p50 latency (ms)") for name in ("c1",) if name in report["phases"]]
    panels += [(name, "throughput", "calls/s") for name in ("c16", "c16_batched") if name in report["phases"]]
    labels = {p.name: p.label for p in PHASES}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (name, key, unit) in zip(axes[0], panels):
        runs = [r for r in report["runs"] if r["phase"] == name]
        for i, side in enumerate(SIDES):
            values = [r["result"][key] for r in runs if r["side"] == side]
            mid = report["phases"][name]["sides"][side][key]
            ax.bar(
                i, mid, color=("tab:orange", "tab:blue")[i], yerr=[[mid - min(values)], [max(values) - mid]], capsize=6
            )
            ax.annotate(
                f"{mid:.1f}", (i, mid), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points"
            )
        ax.set_xticks(range(len(SIDES)), ["with encoder", "without (mean)"])
        ax.set_ylabel(unit)
        ratio = report["phases"][name]["ratio"]["p50" if key == "p50_ms" else "throughput"]
        ax.set_title(f"{labels[name]}\nwith/without {ratio:.2f}×", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("feed call with vs without the learned user encoder (medians of rounds, whiskers: range)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- measuring


def check_repo(repo: Path) -> dict:
    """The repository's user-encoder config; exits with how to build one when it has none.

    Without an encoder both sides would run the mean and the ratios would say nothing.
    """
    from aisle_server.learned import LEARNED_DIRNAME, USER_ENCODER_DIRNAME
    from aisle_server.user_encoder import CONFIG_FILE, MODEL_FILE

    encoder = Path(repo) / "rerank" / LEARNED_DIRNAME / USER_ENCODER_DIRNAME
    missing = [name for name in (MODEL_FILE, CONFIG_FILE) if not (encoder / name).is_file()]
    if missing:
        raise SystemExit(
            f"error: {encoder}: no user encoder here (missing {', '.join(missing)}). Build a repository with one: "
            "`make demo` (writes build/model_repository), or `aisle finetune --interactions LOG --catalog CATALOG "
            "--out DIR`, then `aisle export --finetuned DIR --repo REPO` and `aisle index --catalog CATALOG --repo REPO`"
        )
    if not (Path(repo) / "rerank" / "1" / "index").exists():
        raise SystemExit(
            f"error: {Path(repo) / 'rerank' / '1' / 'index'}: no catalog index; "
            "run `aisle index --catalog CATALOG --repo REPO`"
        )
    config = json.loads((encoder / CONFIG_FILE).read_text())
    return {
        "path": str(encoder),
        "max_len": config.get("max_len"),
        "dim": config.get("dim"),
        "model_bytes": (encoder / MODEL_FILE).stat().st_size,
    }


def load_feeds(workdir: Path) -> list[dict]:
    """MovieLens-100K's test shoppers at the evaluation's temporal cut (``aisle evaluate``'s data)."""
    from aisle_export.log_eval import load_log, movielens_files

    split = load_log(*movielens_files(workdir)).split
    return feed_requests(split.histories, split.history_events, split.cutoff)


def encoder_used(client: object, requests: Sequence[dict], n: int = 20) -> dict:
    """How many of ``n`` feeds get a different top ``K`` with the encoder: 0 means it is not loaded."""
    differ = 0
    sample = list(requests[:n])
    for request in sample:
        tops = [
            [
                r.item_id
                for r in client.recommend(None, request["history"], k=K, now=request["now"], cache=False, **knobs(side))
            ]
            for side in SIDES
        ]
        differ += tops[0] != tops[1]
    return {"sampled": len(sample), "differ": differ}


def measure(url: str, slot: Slot, requests: Sequence[dict], seconds: float) -> dict:
    """One ``loadgen.run`` of ``slot`` on its own client, with the rerank model's busy time per feed.

    Busy time follows ``bench_sdk``'s rule (compute per request × executions = busy), divided by the
    rows it served: the server-side cost of one feed, batched or not.
    """
    from aisle import RecClient
    from bench_sdk import diff, model_stats

    phase = slot.phase
    batching = {"max_delay_ms": phase.max_delay_ms, "max_batch": phase.max_batch} if phase.max_delay_ms else {}
    with RecClient(url, timeout_s=30, embed_cache_size=0, recommend_cache_size=0, **batching) as client:
        before = model_stats(client)
        result = loadgen.run(lambda: feed_call(client, slot.side), requests, phase.concurrency, duration_s=seconds)
        rerank = diff(model_stats(client), before)["rerank"]
    busy_ns = rerank["compute_infer_ns"] / rerank["requests"] * rerank["executions"] if rerank["requests"] else 0.0
    return {
        "round": slot.round,
        "phase": phase.name,
        "side": slot.side,
        "result": result.to_dict(),
        "rerank_busy_ms_per_feed": busy_ns / rerank["inferences"] / 1e6 if rerank["inferences"] else 0.0,
    }


def run_schedule(url: str, slots: Iterable[Slot], requests: Sequence[dict], seconds: float) -> list[dict]:
    """``measure`` every slot in order, printing each run as it ends (a long run shows progress)."""
    runs = []
    for slot in slots:
        run = measure(url, slot, requests, seconds)
        r = run["result"]
        print(
            f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] round {slot.round} {slot.phase.name} "
            f"{slot.side:7s} {r['throughput']:7.1f} calls/s p50 {r['p50_ms']:.2f} ms p95 {r['p95_ms']:.2f} ms "
            f"errors {r['errors']}",
            flush=True,
        )
        runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> dict:
    """Check the repository, load the feeds, time the schedule on one server, write md/json/png.

    The server is a context manager so it stops on any error too; returns the report (for tests).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=ROOT / "build" / "model_repository",
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
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    encoder = check_repo(args.repo)
    from aisle import RecClient  # after the repo check, which should fail fast
    from aisle_server.tritonserver import TritonServer

    requests = load_feeds(args.workdir or args.repo.resolve().parent)
    phases = PHASES[:2] if args.no_batched else PHASES
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with TritonServer(args.repo, log_file=args.out / "bench_user_encoder_tritonserver.log") as server:
        with RecClient(server.grpc_url, timeout_s=30, embed_cache_size=0) as client:
            check = encoder_used(client, requests)
        if not check["differ"]:
            raise SystemExit(
                f"error: user_encoder=True and False gave the same top {K} for all {check['sampled']} "
                f"sampled feeds: is {encoder['path']} loaded? See {server.log_file}"
            )
        runs = run_schedule(server.grpc_url, schedule(args.rounds, phases), requests, args.seconds)
    report = {
        "command": command_line("perf/bench_user_encoder.py", argv),
        "machine": machine(load_before),
        "repo": str(args.repo),
        "encoder": encoder,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "feeds": {
            "shoppers": len(requests),
            "events": all(len(i) == 3 for r in requests for i in r["history"]),
            "mean_history": statistics.fmean(len(r["history"]) for r in requests),
            "now": requests[0]["now"],
        },
        "check": check,
        "phases": summarize(runs, phases),
        "runs": runs,
    }
    write_report(args.out, "bench_user_encoder", report, render_markdown, plot)
    return report


if __name__ == "__main__":
    main()
