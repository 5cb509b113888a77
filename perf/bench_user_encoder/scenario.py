"""What ``python -m perf.bench_user_encoder`` runs (see :mod:`perf.bench_user_encoder`): feeds with
and without the user encoder, slot by slot on one server; returns the report dict that
:mod:`perf.bench_user_encoder.report` renders."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from perf.lib import loadgen, triton_stats
from perf.lib.run_info import machine, stamp

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
    from aisle_export.data.movielens import movielens_files
    from aisle_export.data.splits import load_log

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

    Busy time is :func:`perf.lib.triton_stats.busy_ns` (compute per request × executions), divided by
    the rows it served: the server-side cost of one feed, batched or not.
    """
    from aisle import RecClient

    phase = slot.phase
    batching = {"max_delay_ms": phase.max_delay_ms, "max_batch": phase.max_batch} if phase.max_delay_ms else {}
    with RecClient(url, timeout_s=30, embed_cache_size=0, recommend_cache_size=0, **batching) as client:
        before = triton_stats.snapshot(client, ["rerank"])
        result = loadgen.run(lambda: feed_call(client, slot.side), requests, phase.concurrency, duration_s=seconds)
        rerank = triton_stats.diff(triton_stats.snapshot(client, ["rerank"]), before)["rerank"]
    busy_ns = triton_stats.busy_ns(rerank)
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
            f"[{stamp()}] round {slot.round} {slot.phase.name} "
            f"{slot.side:7s} {r['throughput']:7.1f} calls/s p50 {r['p50_ms']:.2f} ms p95 {r['p95_ms']:.2f} ms "
            f"errors {r['errors']}",
            flush=True,
        )
        runs.append(run)
    return runs


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, command: str) -> dict:
    """Check the repository, load the feeds, time the schedule on one server; the report dict.

    The server is a context manager so it stops on any error too.
    """
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
    return {
        "command": command,
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
