"""Real-time benchmark (not a test): event ingest through ``track_many`` and what reading a shopper's
stored events adds to ``recommend``, against a real tritonserver and a real redis-server.

    .venv/bin/python perf/bench_realtime.py [--repo DIR] [--rounds 2] [--seconds 8] [--pairs 300]

Starts its own redis-server (AOF, ``appendfsync always``: every acknowledged event is fsynced, as
``aisle serve`` runs it) and a tritonserver that uses it (``AISLE_STATE_URL``). ``--repo`` must be
a repository with the ``track`` model; without it one is exported and indexed on MovieLens-100K
under ``build/bench_realtime/`` (reused by later runs).

(a) **Ingest**: closed-loop threads call ``client.track_many`` with batches of new events (fresh
    event ids, synthetic shoppers, catalog items); events/s = acknowledged events per second,
    checked against ``aisle_events_accepted_total`` on the metrics endpoint. Target ≥ 5,000/s.
(b) **State read cost**: for shoppers whose events are stored, ``recommend(user_id=u)`` and
    ``recommend(history=h)`` with the same events ``h`` in the call, one after the other (order
    alternating A-B, B-A), one caller, caches off. The added p50 is p50(user_id) − p50(history),
    per round; the paired per-call differences are reported too. Target ≤ 1 ms.
(c) **Catalog update visibility**: ``update_items`` inserts an item, then takes it out of stock or
    hides it; the delay from the call returning to the first ``recommend`` that shows the change
    (``rerank`` polls the change log every ``catalog_poll_s``, 0.2 s). Target p99 ≤ 1 s.

Writes ``<out>/bench_realtime.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from run_info import command_line, machine, write_report

ROOT = Path(__file__).resolve().parents[1]
EVENTS_PER_S_TARGET = 5000.0
ADDED_P50_TARGET_MS = 1.0
VISIBILITY_P99_TARGET_MS = 1000.0
EVENT_TYPES = ("view", "view", "view", "click", "click", "add_to_cart", "purchase")
HISTORY_LEN = 20
K = 10


@dataclass(frozen=True)
class IngestPhase:
    """``threads`` closed-loop callers, each ``track_many`` call ``batch`` new events."""

    batch: int
    threads: int

    @property
    def name(self) -> str:
        return f"b{self.batch}_t{self.threads}"

    @property
    def label(self) -> str:
        return f"{self.batch} events per call, {self.threads} threads"


INGEST_PHASES = (IngestPhase(64, 4), IngestPhase(64, 8), IngestPhase(256, 4))


# --------------------------------------------------------------------------- events


def event_batch(
    rng: random.Random,
    users: Sequence[str],
    items: Sequence[str],
    size: int,
    now: float,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[dict]:
    """``size`` new events as ``track_many`` takes them: random shoppers and items, a mix of event
    types weighted like a shop's (mostly views), timestamps in the minute before ``now``, fresh ids."""
    if size < 1 or not users or not items:
        raise ValueError("need size >= 1, users and items")
    return [
        {
            "user_id": rng.choice(users),
            "item_id": rng.choice(items),
            "event_type": rng.choice(EVENT_TYPES),
            "ts": now - rng.uniform(0.0, 60.0),
            "event_id": new_id(),
        }
        for _ in range(size)
    ]


#: (b)'s event type: weight 1 (``DEFAULT_EVENT_WEIGHTS``), as a request's own history items weigh, so
#: ``user_id=`` and ``history=`` must rank alike (checked); other types would cost the same.
READ_EVENT_TYPE = "purchase"


def shopper_histories(
    rng: random.Random, items: Sequence[str], shoppers: int, length: int, now: float
) -> dict[str, list[tuple[str, float, str]]]:
    """``shoppers`` histories of ``length`` distinct items, oldest first, the newest a minute before
    ``now``: what (b) stores for ``user_id`` and passes as ``history``."""
    if length > len(items):
        raise ValueError(f"history of {length} items from a catalog of {len(items)}")
    out = {}
    for s in range(shoppers):
        picked = rng.sample(list(items), length)
        out[f"bench-shopper-{s:05d}"] = [
            (item, now - 60.0 - 30.0 * (length - 1 - i), READ_EVENT_TYPE) for i, item in enumerate(picked)
        ]
    return out


def pair_order(i: int) -> tuple[str, str]:
    """Which side goes first in pair ``i``: A-B, then B-A, so neither always follows the other."""
    return ("user_id", "history") if i % 2 == 0 else ("history", "user_id")


# --------------------------------------------------------------------------- summary


def summarize_ingest(runs: Sequence[dict]) -> dict[str, dict]:
    """Per phase: medians over rounds of events/s (acknowledged, and accepted by the server's counter)."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["phase"] for r in runs):
        mine = [r for r in runs if r["phase"] == name]
        events = [r["events_per_s"] for r in mine]
        out[name] = {
            "rounds": len(mine),
            "events_per_s": statistics.median(events),
            "events_per_s_range": [min(events), max(events)],
            "accepted_per_s": statistics.median(r["accepted_per_s"] for r in mine),
            "calls_per_s": statistics.median(r["result"]["throughput"] for r in mine),
            "call_p50_ms": statistics.median(r["result"]["p50_ms"] for r in mine),
            "call_p95_ms": statistics.median(r["result"]["p95_ms"] for r in mine),
            "errors": sum(r["result"]["errors"] for r in mine),
        }
    return out


def summarize_pairs(rounds: Sequence[Mapping[str, Sequence[float]]]) -> dict:
    """(b): per round, p50 of each side (ms) and their difference; the median of paired differences.

    ``rounds[r] = {"user_id": [ms, ...], "history": [ms, ...]}``, the i-th of each side one pair.
    """
    if not rounds:
        raise ValueError("no rounds")
    per_round = []
    for r in rounds:
        a, b = list(r["user_id"]), list(r["history"])
        if not a or len(a) != len(b):
            raise ValueError("each round needs the same number (> 0) of calls per side")
        p50_a, p50_b = loadgen.percentile(a, 50), loadgen.percentile(b, 50)
        per_round.append(
            {
                "pairs": len(a),
                "user_id_p50_ms": p50_a,
                "history_p50_ms": p50_b,
                "user_id_p95_ms": loadgen.percentile(a, 95),
                "history_p95_ms": loadgen.percentile(b, 95),
                "added_p50_ms": p50_a - p50_b,
                "paired_median_ms": statistics.median(x - y for x, y in zip(a, b)),
                "ratio_p50": p50_a / p50_b if p50_b else float("nan"),
            }
        )
    added = [r["added_p50_ms"] for r in per_round]
    med = lambda key: statistics.median(r[key] for r in per_round)
    return {
        "rounds": per_round,
        "user_id_p50_ms": med("user_id_p50_ms"),
        "history_p50_ms": med("history_p50_ms"),
        "added_p50_ms": statistics.median(added),
        "added_p50_ms_range": [min(added), max(added)],
        "paired_median_ms": med("paired_median_ms"),
        "ratio_p50": med("ratio_p50"),
    }


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


# --------------------------------------------------------------------------- report


def render_markdown(report: dict) -> str:
    """Headline figures against their targets, then how they were measured and every run."""
    m, reads = report["machine"], report["reads"]
    best = max(report["ingest"].values(), key=lambda s: s["events_per_s"])
    lines = [
        f"# Real time: event ingest and state reads ({m['cpus']} cores, {m['platform']})",
        "",
        "Medians over rounds; the range in brackets is over rounds.",
        "",
        "| what | figure |",
        "| --- | --- |",
    ]
    phases = {p.name: p for p in INGEST_PHASES}
    for name, s in report["ingest"].items():
        label = phases[name].label if name in phases else name
        lines.append(
            f"| (a) ingest, {label}: events/s | {s['events_per_s']:,.0f} "
            f"({s['events_per_s_range'][0]:,.0f} … {s['events_per_s_range'][1]:,.0f}); "
            f"server's accepted counter {s['accepted_per_s']:,.0f}/s; call p50 / p95 "
            f"{s['call_p50_ms']:.1f} / {s['call_p95_ms']:.1f} ms; errors {s['errors']} |"
        )
    lines += [
        f"| (a) best ingest vs target ≥ {EVENTS_PER_S_TARGET:,.0f} events/s | {best['events_per_s']:,.0f}/s: "
        f"{verdict(best['events_per_s'] >= EVENTS_PER_S_TARGET)} |",
        f"| (b) `recommend` p50, `user_id=` / `history=` | {reads['user_id_p50_ms']:.2f} / "
        f"{reads['history_p50_ms']:.2f} ms ({reads['ratio_p50']:.3f}×) |",
        f"| (b) added p50 of `user_id=` (target ≤ {ADDED_P50_TARGET_MS:g} ms) | {reads['added_p50_ms']:+.3f} ms "
        f"({reads['added_p50_ms_range'][0]:+.3f} … {reads['added_p50_ms_range'][1]:+.3f}): "
        f"{verdict(reads['added_p50_ms'] <= ADDED_P50_TARGET_MS)} |",
        f"| (b) median of paired differences | {reads['paired_median_ms']:+.3f} ms |",
        f"| (b) server-side state lookup (`aisle_state_lookup_seconds`), mean | "
        f"{report['lookup']['mean_ms']:.3f} ms over {report['lookup']['count']:,.0f} lookups |",
    ]
    visibility = report.get("catalog_visibility")
    lines.append(
        "| (c) catalog update visibility delay | "
        + (f"{visibility['summary']} |" if visibility else "not measured yet (`measure_catalog_visibility`) |")
    )
    load = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
    setup = report["setup"]
    lines += [
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpus']} cores, {m['platform']}, Python {m['python']}; load average (1/5/15 min) "
        f"before {load(m['load_before'])}, after {load(m['load_after'])}; client, tritonserver and "
        "redis-server share these cores",
        f"- repository: `{report['repo']}`; redis-server {setup['redis_version']} with appendonly "
        f"{setup['appendonly']}, appendfsync {setup['appendfsync']} (every acknowledged event fsynced)",
        f"- (a) {setup['users']:,} synthetic shoppers × {setup['items']:,} catalog items, event types mixed "
        f"{'/'.join(sorted(set(EVENT_TYPES)))}, a fresh event id each (nothing deduplicated); "
        f"{report['rounds']} round(s) × {report['seconds']:g} s per phase after 1 s warm-up; the SDK splits a call "
        "into Triton requests of ≤ 64 events sent together; events in Redis after the run: "
        f"{setup['stream_len']:,} in the log",
        f"- (b) {setup['shoppers']} shoppers with {HISTORY_LEN} stored `{READ_EVENT_TYPE}` events each (tracked "
        "before timing; the type weighing 1, as a request's own history items do, so both ways rank alike), "
        f"k={K}, `now` fixed, SDK cache off, one caller; {reads['rounds'][0]['pairs']} pairs per round; "
        f"check: {report['check']['same']} of {report['check']['sampled']} sampled shoppers got the same "
        "top k both ways",
        "",
        "| round | (a) phase | events/s | accepted/s | calls/s | call p50 ms | call p95 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in report["ingest_runs"]:
        r = run["result"]
        lines.append(
            f"| {run['round']} | {run['phase']} | {run['events_per_s']:,.0f} | {run['accepted_per_s']:,.0f} | "
            f"{r['throughput']:.1f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['errors']} |"
        )
    lines += [
        "",
        "| round | (b) pairs | user_id p50 / p95 ms | history p50 / p95 ms | added p50 ms | paired median ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(reads["rounds"]):
        lines.append(
            f"| {i} | {r['pairs']} | {r['user_id_p50_ms']:.2f} / {r['user_id_p95_ms']:.2f} | "
            f"{r['history_p50_ms']:.2f} / {r['history_p95_ms']:.2f} | {r['added_p50_ms']:+.3f} | "
            f"{r['paired_median_ms']:+.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Events/s per ingest phase against the target; p50 of both sides per round; with (c), the
    visibility delays of catalog changes against the p99 target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    visibility = report.get("catalog_visibility")
    panels = 3 if visibility else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.75 * panels, 4.2))
    left, right = axes[0], axes[1]
    names = list(report["ingest"])
    values = [report["ingest"][n]["events_per_s"] for n in names]
    low = [v - report["ingest"][n]["events_per_s_range"][0] for n, v in zip(names, values)]
    high = [report["ingest"][n]["events_per_s_range"][1] - v for n, v in zip(names, values)]
    left.bar(range(len(names)), values, yerr=[low, high], capsize=6, color="tab:blue")
    left.axhline(EVENTS_PER_S_TARGET, color="tab:red", linestyle="--", label=f"target {EVENTS_PER_S_TARGET:,.0f}/s")
    left.set_xticks(range(len(names)), names)
    left.set_ylabel("events acknowledged per second")
    left.set_title("(a) ingest through track_many", fontsize=9)
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    rounds = report["reads"]["rounds"]
    x = range(len(rounds))
    right.plot(x, [r["user_id_p50_ms"] for r in rounds], "o-", color="tab:orange", label="recommend(user_id=)")
    right.plot(x, [r["history_p50_ms"] for r in rounds], "s-", color="tab:blue", label="recommend(history=)")
    right.set_xticks(list(x), [str(i) for i in x])
    right.set_xlabel("round")
    right.set_ylabel("p50 latency (ms)")
    right.set_title(f"(b) added p50 {report['reads']['added_p50_ms']:+.3f} ms", fontsize=9)
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3)
    if visibility:
        third = axes[2]
        for kind, delays in visibility["delays_ms"].items():
            if delays:
                third.hist(delays, bins=20, alpha=0.6, label=f"{kind} ({len(delays)})")
        third.axvline(VISIBILITY_P99_TARGET_MS, color="tab:red", linestyle="--", label="p99 target")
        third.axvline(visibility["all"]["p99_ms"], color="black", linestyle=":", label="p99 measured")
        third.set_xlabel("ms from update_items returning to the first answer showing it")
        third.set_ylabel("changes")
        third.set_title("(c) catalog change visibility", fontsize=9)
        third.legend(fontsize=8)
        third.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- servers and repository


def ensure_repo(repo: Path | None, workdir: Path) -> tuple[Path, list[str]]:
    """A repository with ``track`` (exported and indexed on MovieLens-100K under ``workdir`` when
    ``repo`` is None and none is there yet) and its catalog's item ids."""
    from aisle_export.catalog import read_catalog
    from aisle_export.movielens import fetch_movielens, write_catalog_csv

    data = fetch_movielens(workdir / "data")
    catalog_csv = write_catalog_csv(data, workdir / "movielens_catalog.csv")
    catalog = read_catalog(catalog_csv)
    items = [str(i) for i in catalog.item_ids]
    target = repo or workdir / "model_repository"
    ready = all((target / m / "config.pbtxt").is_file() for m in ("track", "catalog"))
    ready = ready and (target / "rerank" / "1" / "index").is_dir()
    if repo is not None and not ready:
        raise SystemExit(f"error: {repo} has no track or catalog model or no index: `aisle export` + `aisle index` it")
    if not ready:
        from aisle_export.indexing import write_index
        from aisle_export.pipeline import export_repository

        print(f"[bench] exporting and indexing a repository in {target} (once)", flush=True)
        export_repository(target)
        write_index(catalog, target, source=catalog_csv, progress=False)
    elif repo is None:
        from aisle_export.repository import copy_template

        copy_template(target)  # this version's configs and adapters over the kept artifacts
    return target, items


def scrape(metrics_url: str) -> dict[str, float]:
    """Aisle's series on the metrics endpoint, keyed ``name{labels}`` as written there."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # loopback URL of the server we started
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("aisle_"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def series(values: Mapping[str, float], name: str) -> float:
    """The sum over label sets of ``name`` in a ``scrape``."""
    return sum(v for k, v in values.items() if k.split("{", 1)[0] == name)


# --------------------------------------------------------------------------- (a) ingest


def measure_ingest(
    url: str, metrics_url: str, phase: IngestPhase, users: Sequence[str], items: Sequence[str], seconds: float
) -> dict:
    """One ``loadgen.run`` of ``phase`` on one client shared by its threads (one channel, as a backend has)."""
    from aisle import RecClient

    now = time.time()
    local = threading.local()

    with RecClient(url, timeout_s=30, retry=None) as client:

        def make_call() -> Callable[[dict], None]:
            def call(_request: dict) -> None:
                rng = getattr(local, "rng", None) or random.Random(threading.get_ident())
                local.rng = rng
                tracked = client.track_many(event_batch(rng, users, items, phase.batch, now))
                if len(tracked) != phase.batch:
                    raise RuntimeError(f"{len(tracked)} results for {phase.batch} events")

            return call

        before = scrape(metrics_url)
        began = time.perf_counter()
        result = loadgen.run(make_call, [{}], phase.threads, duration_s=seconds)
        elapsed = time.perf_counter() - began
        after = scrape(metrics_url)
    accepted = series(after, "aisle_events_accepted_total") - series(before, "aisle_events_accepted_total")
    return {
        "phase": phase.name,
        "result": result.to_dict(),
        "events_per_s": result.throughput * phase.batch,
        # the server's counter covers the whole run (warm-up and the last calls too): over its whole time
        "accepted_per_s": accepted / elapsed,
    }


# --------------------------------------------------------------------------- (b) state reads


def measure_reads(client: object, histories: Mapping[str, Sequence[tuple]], pairs: int, now: float) -> dict:
    """``pairs`` interleaved pairs over the shoppers, cycled: per side, milliseconds per call."""
    users = sorted(histories)
    times: dict[str, list[float]] = {"user_id": [], "history": []}
    for i in range(pairs):
        user = users[i % len(users)]
        for side in pair_order(i):
            kwargs = {"user_id": user} if side == "user_id" else {"history": list(histories[user])}
            began = time.perf_counter()
            client.recommend(k=K, now=now, cache=False, **kwargs)  # type: ignore[attr-defined]
            times[side].append((time.perf_counter() - began) * 1000.0)
    return times


def same_answers(client: object, histories: Mapping[str, Sequence[tuple]], now: float, n: int = 20) -> dict:
    """Both ways give the same top ``K`` (the stored events are read, and are the same events)."""
    sample = sorted(histories)[:n]
    same = 0
    for user in sample:
        a = [r.item_id for r in client.recommend(user_id=user, k=K, now=now, cache=False)]  # type: ignore[attr-defined]
        b = [r.item_id for r in client.recommend(history=list(histories[user]), k=K, now=now, cache=False)]  # type: ignore[attr-defined]
        same += a == b
    return {"sampled": len(sample), "same": same}


# --------------------------------------------------------------------------- (c) catalog update visibility

#: Words for live items' titles: nonsense, so only the item itself matches its title query.
TITLE_WORDS = ("zorblax", "quibbit", "flangor", "mizzle", "trundok", "wobbin", "glaxo", "pernish", "snurf", "blivet")


def visibility_summary(delays: Mapping[str, Sequence[float]]) -> dict:
    """p50/p99/max (ms) per kind of change and over all, against the p99 ≤ 1 s target."""

    def stats(values: Sequence[float]) -> dict:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return {"n": len(ordered), "p50_ms": statistics.median(ordered), "p99_ms": p99, "max_ms": ordered[-1]}

    every = [d for values in delays.values() for d in values]
    counts = ", ".join(f"{kind} {len(values)}" for kind, values in delays.items() if values)
    kinds = {kind: stats(values) for kind, values in delays.items() if values}
    total = stats(every)
    return {
        "kinds": kinds,
        "all": total,
        "summary": f"p50 {total['p50_ms']:.0f} ms, p99 {total['p99_ms']:.0f} ms, max {total['max_ms']:.0f} ms over "
        f"{total['n']} changes ({counts}); target p99 ≤ "
        f"{VISIBILITY_P99_TARGET_MS:,.0f} ms: {verdict(total['p99_ms'] <= VISIBILITY_P99_TARGET_MS)}",
    }


def measure_catalog_visibility(url: str, metrics_url: str, repo: Path, args: argparse.Namespace) -> dict | None:
    """(c) From ``update_items`` returning to the first ``recommend`` that shows the change.

    Each cycle inserts an item with a unique nonsense title (visible: it is the top result for its
    title), then takes it out of stock or hides it, alternately (visible: it is no longer there).
    One caller polls ``recommend(title, k=1)`` back to back (no sleep: the resolution is one call).
    A random pause before each change keeps the changes out of step with ``rerank``'s poll (sent
    right after a poll found the last one, every change would wait almost a whole interval).
    """
    from aisle import RecClient

    rng = random.Random(11)
    delays: dict[str, list[float]] = {"insert": [], "out_of_stock": [], "hide": []}
    acks: list[float] = []

    def wait(title: str, shown: Callable[[str], bool], since: float) -> float:
        deadline = since + 30.0
        while time.perf_counter() < deadline:
            top = client.recommend(title, k=1, cache=False)[0].item_id
            if shown(top):
                return (time.perf_counter() - since) * 1000.0
        raise RuntimeError(f"change for {title!r} not visible after 30 s")

    with RecClient(url, timeout_s=30, retry=None, recommend_cache_size=0, embed_cache_size=0) as client:
        for i in range(args.changes):
            item = f"bench-live-{uuid.uuid4().hex[:10]}"
            title = " ".join(rng.sample(TITLE_WORDS, 4)) + f" {item}"
            time.sleep(rng.uniform(0.0, 0.25))
            sent = time.perf_counter()
            client.update_items([{"item_id": item, "title": title, "category": "bench"}])
            acked = time.perf_counter()
            acks.append((acked - sent) * 1000.0)
            delays["insert"].append(wait(title, lambda top: top == item, acked))  # noqa: B023 - called at once
            kind, fields = ("out_of_stock", {"in_stock": False}) if i % 2 == 0 else ("hide", {"hidden": True})
            time.sleep(rng.uniform(0.0, 0.25))
            client.update_items([{"item_id": item, **fields}])
            acked = time.perf_counter()
            delays[kind].append(wait(title, lambda top: top != item, acked))  # noqa: B023 - called at once
            if (i + 1) % 10 == 0:
                print(f"[{time.strftime('%H:%M:%S')}] (c) {i + 1}/{args.changes} cycles", flush=True)
    return {**visibility_summary(delays), "delays_ms": delays, "update_call_p50_ms": statistics.median(acks)}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", type=Path, default=None, help="a repository with the track model (default: build one)"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench_realtime")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per ingest phase and round")
    parser.add_argument("--pairs", type=int, default=300, help="(b) user_id/history pairs per round")
    parser.add_argument("--users", type=int, default=10_000, help="(a) synthetic shoppers")
    parser.add_argument("--shoppers", type=int, default=200, help="(b) shoppers with stored events")
    parser.add_argument("--changes", type=int, default=60, help="(c) insert + stock/hide cycles")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("error: --rounds must be >= 1")
    from aisle import RecClient
    from aisle_server.redis_server import RedisServer
    from aisle_server.state import connect
    from aisle_server.tritonserver import TritonServer

    args.workdir.mkdir(parents=True, exist_ok=True)
    repo, items = ensure_repo(args.repo, args.workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    users = [f"bench-user-{u:06d}" for u in range(args.users)]
    now = time.time()
    histories = shopper_histories(rng, items, args.shoppers, HISTORY_LEN, now)
    state_dir = args.workdir / "state"
    if state_dir.exists():
        import shutil

        shutil.rmtree(state_dir)  # a fresh store each run: the log's length is this run's
    load_before = os.getloadavg()
    log = args.out / "bench_realtime_tritonserver.log"
    with RedisServer(state_dir) as redis_server, TritonServer(repo, log_file=log, state_url=redis_server.url) as server:
        redis = connect(redis_server.url, timeout_s=10)
        config = redis.config_get("append*")
        metrics_url = f"http://{server.host}:{server.metrics_port}/metrics"
        ingest_runs = []
        read_rounds = []
        with RecClient(server.grpc_url, timeout_s=30, recommend_cache_size=0, embed_cache_size=0) as client:
            for user, history in histories.items():
                client.track_many([{"user_id": user, "item_id": i, "event_type": e, "ts": ts} for i, ts, e in history])
            check = same_answers(client, histories, now)
            before_lookups = scrape(metrics_url)
            measure_reads(client, histories, min(50, args.pairs), now)  # warm-up, not kept
            for r in range(args.rounds):
                for phase in INGEST_PHASES:
                    run = {
                        "round": r,
                        **measure_ingest(server.grpc_url, metrics_url, phase, users, items, args.seconds),
                    }
                    ingest_runs.append(run)
                    res = run["result"]
                    print(
                        f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] round {r} {phase.name}: "
                        f"{run['events_per_s']:,.0f} events/s (accepted {run['accepted_per_s']:,.0f}/s), "
                        f"call p50 {res['p50_ms']:.1f} ms, errors {res['errors']}",
                        flush=True,
                    )
                times = measure_reads(client, histories, args.pairs, now)
                read_rounds.append(times)
                one = summarize_pairs([times])
                print(
                    f"[{time.strftime('%H:%M:%S')}] round {r} reads: user_id p50 {one['user_id_p50_ms']:.2f} ms, "
                    f"history p50 {one['history_p50_ms']:.2f} ms, added {one['added_p50_ms']:+.3f} ms",
                    flush=True,
                )
            after_lookups = scrape(metrics_url)
            visibility = measure_catalog_visibility(server.grpc_url, metrics_url, repo, args)
        stream_len = int(redis.xlen("aisle:events"))
        redis_version = redis.info("server").get("redis_version", "?")
    count = series(after_lookups, "aisle_state_lookup_seconds_count") - series(
        before_lookups, "aisle_state_lookup_seconds_count"
    )
    seconds = series(after_lookups, "aisle_state_lookup_seconds_sum") - series(
        before_lookups, "aisle_state_lookup_seconds_sum"
    )
    report = {
        "command": command_line("perf/bench_realtime.py", argv),
        "machine": machine(load_before),
        "repo": str(repo),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "setup": {
            "users": len(users),
            "items": len(items),
            "shoppers": len(histories),
            "redis_version": redis_version,
            "appendonly": config.get("appendonly"),
            "appendfsync": config.get("appendfsync"),
            "stream_len": stream_len,
        },
        "check": check,
        "ingest": summarize_ingest(ingest_runs),
        "ingest_runs": ingest_runs,
        "reads": summarize_pairs(read_rounds),
        "lookup": {"count": count, "mean_ms": seconds / count * 1000.0 if count else float("nan")},
        "catalog_visibility": visibility,
    }
    write_report(args.out, "bench_realtime", report, render_markdown, plot)
    return report


if __name__ == "__main__":
    main()
