"""The real-time report: Markdown and a PNG from the dict :mod:`perf.bench_realtime.scenario` returns."""

from __future__ import annotations

from pathlib import Path

from perf.bench_realtime.scenario import (
    ADDED_P50_TARGET_MS,
    EVENT_TYPES,
    EVENTS_PER_S_TARGET,
    HISTORY_LEN,
    INGEST_PHASES,
    READ_EVENT_TYPE,
    VISIBILITY_P99_TARGET_MS,
    K,
    verdict,
)
from perf.lib.run_info import save_figure


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
    return save_figure(fig, path)
