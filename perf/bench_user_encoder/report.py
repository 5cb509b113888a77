"""The user-encoder report: Markdown and a PNG from the dict :mod:`perf.bench_user_encoder.scenario` returns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from perf.bench_user_encoder.scenario import ADDED_P50_TARGET_MS, MAX_HISTORY, MIN_HISTORY, PHASES, SIDES, K, Phase
from perf.lib.run_info import save_figure


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
    return save_figure(fig, path)
