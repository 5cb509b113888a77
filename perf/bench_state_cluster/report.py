"""The state-cluster report: Markdown and a PNG from the dict :mod:`perf.bench_state_cluster.scenario` returns."""

from __future__ import annotations

from pathlib import Path

from perf.bench_state_cluster.scenario import STORES
from perf.lib.run_info import save_figure


def _fig(spread: dict, unit: str = "", digits: int = 2) -> str:
    lo, hi = spread["range"]
    return f"{spread['median']:,.{digits}f}{unit} ({lo:,.{digits}f} … {hi:,.{digits}f})"


def render_markdown(report: dict) -> str:
    m, s, setup = report["machine"], report["stores"], report["setup"]
    lines = [
        f"# Shopper state: one Redis against a Redis Cluster ({m['cpus']} cores, {m['platform']})",
        "",
        f"Redis {setup['redis_version']}; cluster: {setup['cluster']}; {setup['shards']} shards; "
        f"WAIT timeout {setup['replica_timeout_ms']} ms. Every node AOF with `appendfsync always`. "
        f"{report['rounds']} rounds, the three stores interleaved in each; medians over rounds, the range over "
        "rounds in brackets. Client, three tritonservers and seven redis-servers share the machine: the "
        "figures are ratios measured side by side, not capacity.",
        "",
        "| store | (a) ingest events/s | (b) track p50 ms | (c) recommend(user_id=) added p50 ms "
        "| (d) store() p50 ms | (d) recent() p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in STORES:
        r = s[name]
        lines.append(
            f"| {r['label']} | {_fig(r['events_per_s'], digits=0)} | {_fig(r['track_p50_ms'])} | "
            f"{r['reads']['added_p50_ms']:+.3f} ({r['reads']['added_p50_ms_range'][0]:+.3f} … "
            f"{r['reads']['added_p50_ms_range'][1]:+.3f}) | {_fig(r['store_p50_ms'], digits=3)} | "
            f"{_fig(r['recent_p50_ms'], digits=3)} |"
        )
    w, c = s["wait_cost"], s["cluster_vs_single"]
    lines += [
        "",
        "**Replicated acknowledgement (WAIT 1)** against the same cluster without it: "
        f"+{w['track_p50_added_ms']:.2f} ms per `track` call at p50 through Triton, "
        f"+{w['store_p50_added_ms']:.3f} ms per store call in process; ingest "
        f"{w['events_per_s_ratio']:.2f}× the events/s.",
        "",
        f"**Cluster (with WAIT) against one Redis**: ingest {c['events_per_s_ratio']:.2f}× the events/s; "
        f"added p50 of `recommend(user_id=…)` {c['added_p50_delta_ms']:+.3f} ms apart.",
        "",
        "Ingest errors (calls refused, e.g. not replicated in time): "
        + ", ".join(f"{name} {s[name]['ingest_errors']}" for name in STORES)
        + ". Same top-10 for `user_id=` and `history=`: "
        + ", ".join(f"{n} {v['same']}/{v['sampled']}" for n, v in setup["same_answers"].items())
        + ".",
        "",
        "How: (a) "
        f"{setup['ingest_phase']} of `track_many` for {report['seconds']:.0f} s; (b) {setup['calls']} `track` "
        f"calls of one event, one caller; (c) {setup['pairs']} pairs of `recommend(user_id=u)` / "
        "`recommend(history=h)` with the same 20 events, order alternating, caches off; (d) "
        f"`ShopperState.store` of one event and `recent` of one shopper, {setup['calls']} each, in this "
        "process (no Triton).",
        "",
        f"Load average before {m['load_before'][0]:.1f}, after {m['load_after'][0]:.1f}.",
        "",
        "Reproduce:",
        "",
        "```bash",
        report["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """Per store: ingest events/s, track p50 and the added p50 of recommend(user_id=), with round ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["stores"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    x = range(len(STORES))
    names = ["single", "cluster\nreplicas=0", "cluster\nWAIT 1"]
    colors = ["tab:blue", "tab:orange", "tab:green"]
    panels = (
        ("events acknowledged per second", lambda r: r["events_per_s"], "(a) ingest, track_many 64 × 4 threads"),
        ("ms", lambda r: r["track_p50_ms"], "(b) track of one event: p50"),
    )
    for ax, (ylabel, get, title) in zip(axes, panels):
        values = [get(s[n])["median"] for n in STORES]
        low = [v - get(s[n])["range"][0] for n, v in zip(STORES, values)]
        high = [get(s[n])["range"][1] - v for n, v in zip(STORES, values)]
        ax.bar(x, values, yerr=[low, high], capsize=6, color=colors)
        ax.set_xticks(list(x), names)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    ax = axes[2]
    values = [s[n]["reads"]["added_p50_ms"] for n in STORES]
    low = [v - s[n]["reads"]["added_p50_ms_range"][0] for n, v in zip(STORES, values)]
    high = [s[n]["reads"]["added_p50_ms_range"][1] - v for n, v in zip(STORES, values)]
    ax.bar(x, values, yerr=[low, high], capsize=6, color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("ms")
    ax.set_title("(c) recommend(user_id=) added p50 vs history=", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Shopper state: one Redis vs Redis Cluster (one machine, interleaved rounds)", fontsize=10)
    return save_figure(fig, path)
