"""The oversized-query report: Markdown and a PNG from the dict :mod:`perf.bench_oversized_query.scenario` returns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from perf.bench_oversized_query.scenario import BEFORE_FIX, OVERSIZED, POOL, REFERENCES, TEXT_MODELS, K
from perf.lib.run_info import save_figure

TIMES = "\u00d7"  # the multiplication sign of a ratio in the report ("3.00x")


def _range(values: Sequence[float]) -> str:
    return f"{values[0]:.2f} … {values[1]:.2f}"


def _ratio_cell(phase: dict, size: str, reference: str, key: str) -> str:
    if size in REFERENCES:
        return "1 (reference)" if size == reference else "-"
    ratio = phase["ratio"].get(size, {}).get(f"vs_{reference}")
    if ratio is None:
        return "-"
    return f"{ratio[key]:.2f}{TIMES} ({_range(phase['ratio_range'][size][f'vs_{reference}'][key])})"


def _memory_rows(report: dict) -> list[str]:
    """One row per process of the group (PSS at the three checkpoints), then the text path and the total."""
    memory = report.get("memory")
    if not memory:
        return []
    points = ("normal_warm_up", "bounded_warm_up", "end")
    rows = []

    def pss(point: str, names: Sequence[str], key: str = "pss") -> float:
        return sum(memory[point].get(name, {}).get(key, 0.0) for name in names)

    names = sorted(memory["end"], key=lambda n: (n != "tritonserver", n))
    groups = [(name, [name]) for name in names]
    groups += [
        ("**text path** (tritonserver + tokenizer + rerank)", ["tritonserver", *TEXT_MODELS]),
        ("**total**", names),
    ]
    for label, members in groups:
        shm = pss("end", members, "shmem") - pss("bounded_warm_up", members, "shmem")
        rows.append(
            f"| {label} | "
            + " | ".join(f"{pss(p, members):,.0f}" for p in points)
            + f" | {pss('end', members) - pss('bounded_warm_up', members):+,.0f} | {shm:+,.0f} |"
        )
    return rows


def render_markdown(report: dict) -> str:
    """Headline ratios, the figures behind them, how and where they were measured, every run."""
    machine, rss = report["machine"], report["rss"]
    chars = report["max_query_chars"]
    lines = [
        f"# Oversized queries: bounded work per request ({machine['cpus']} cores, {machine['platform']})",
        "",
        (
            "Ratios are taken inside each round (sizes back to back on one server), then the median over rounds; "
            "the range in brackets is over rounds. **Server compute** is Triton's `compute_infer` per request of the "
            "two models that read the text, `tokenizer` + `rerank`. *normal*: a title typed as a search; *prefix*: "
            f"the oversized texts cut to `MAX_QUERY_CHARS` ({chars:,} characters) — the work the server does for "
            "any long query, so oversized ÷ prefix is what the bytes past the cut still cost."
        ),
        "",
        (
            "| load | query | p50 ms | tokenizer ms | rerank ms | p50 ÷ normal | compute ÷ normal | p50 ÷ prefix "
            "| compute ÷ prefix |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase in report["phases"].values():
        load = "1 caller" if phase["concurrency"] == 1 else f"{phase['concurrency']} callers"
        for size, f in phase["sizes"].items():
            cells = [_ratio_cell(phase, size, ref, key) for ref in REFERENCES for key in ("p50", "text_compute")]
            lines.append(
                f"| {load} | {size} | {f['p50_ms']:.1f} | {f['tokenizer_compute_ms']:.2f} | "
                f"{f['rerank_compute_ms']:.2f} | " + " | ".join(cells[i] for i in (0, 1, 2, 3)) + " |"
            )
    c16 = report["phases"].get("c16", {}).get("sizes", {})
    lines += [
        "",
        (
            f"**Server RSS** (tritonserver + its Python-backend stubs: VmRSS summed over its process group, sampled "
            f"every {report['rss_interval_s']:g} s): {rss['baseline_mb']:,.0f} MB after warm-up with normal queries, "
            f"{rss['bounded_mb']:,.0f} MB after warm-up with the bounded prefixes (ONNX Runtime's arenas grown to "
            f"batches of 256-token sequences: any long queries do that), {rss['end_mb']:,.0f} MB at the end of the "
            "run: "
            f"**{rss['end_growth_over_bounded_mb']:+,.0f} MB** over the bounded warm-up "
            f"({rss['end_growth_mb']:+,.0f} MB over the normal one); peak {rss['peak_mb']:,.0f} MB "
            f"({rss['peak_growth_over_bounded_mb']:+,.0f} MB). Largest rise within a 16-caller slot: "
            + ", ".join(f"{size} {c16[size]['rss_peak_growth_mb']:+,.0f} MB" for size in c16)
            + "."
        ),
        "",
        (
            "**Where the memory is** (PSS: shared memory counted once; MB; the bytes of a query reach "
            "tritonserver, `tokenizer` and `rerank`, the encoders only bounded token ids):"
        ),
        "",
        (
            "| process | after normal warm-up | after bounded warm-up | end | growth over bounded warm-up "
            "| of it shared memory |"
        ),
        "| --- | --- | --- | --- | --- | --- |",
        *_memory_rows(report),
        "",
        (
            f"Before the fix (issue #15, not measured here): {BEFORE_FIX['5MB_tokenizer_s']:g} s of tokenizer time "
            "for "
            f"one 5 MB query; {BEFORE_FIX['16x1MB_latency_s']:g} s per call for 16 callers sending 1 MB; RSS "
            f"{BEFORE_FIX['rss_gb'][0]:g} → {BEFORE_FIX['rss_gb'][1]:g} GB."
        ),
        "",
        f"- command: `{report['command']}`",
        (
            f"- machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']}; load average "
            f"(1/5/15 min) before {' / '.join(f'{x:.2f}' for x in machine['load_before'])}, after "
            f"{' / '.join(f'{x:.2f}' for x in machine['load_after'])} (a shared machine: read the ratios)"
        ),
        f"- repository: `{report['repo']}` ({report['repo_origin']}); {report['catalog_items']:,} catalog items",
        (
            f"- queries: normal = a MovieLens title typed as a search (each call another one); 1 MB / 5 MB = the "
            f"catalog's titles in a seeded order, repeated ({POOL} distinct texts per size, cycled; each 1 MB text is "
            f"the start of a 5 MB one, so prefix, 1 MB and 5 MB share their first {chars:,} characters); raw "
            f"`tritonclient.grpc` to `recommend`, k={K}; the server reads the first {chars:,} characters "
            f"(`MAX_QUERY_CHARS`; the tokenizer {report['tokenizer_chars']:,})"
        ),
        (
            f"- {report['rounds']} round(s); per slot {report['requests']} calls at 1 caller, "
            f"{report['per_caller']} per caller at 16 callers; client p50 includes building and sending the request "
            "(serialization + loopback)"
        ),
        (
            f"- check: each oversized query's answer equals its {chars:,}-character prefix's: "
            f"{report['check']['equal']} of {report['check']['checked']}"
        ),
        (
            "- per request, `compute_input` of tokenizer + rerank (copying the request into the Python backend) at 16 "
            "callers: " + ", ".join(f"{size} {c16[size]['text_compute_input_ms']:.2f} ms" for size in c16)
        ),
        "",
        (
            "| round | callers | query | calls | errors | p50 ms | p95 ms | tokenizer ms/req | rerank ms/req | "
            "tokenizer rows/exec | RSS before → peak MB |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in report["runs"]:
        srv = run["server"]
        lines.append(
            f"| {run['round']} | {run['concurrency']} | {run['size']} | {run['calls']} | {run['errors']} | "
            f"{run['p50_ms']:.1f} | {run['p95_ms']:.1f} | {srv['tokenizer']['compute_infer_ms']:.2f} | "
            f"{srv['rerank']['compute_infer_ms']:.2f} | {srv['tokenizer']['rows_per_execution']:.1f} | "
            f"{run['rss_before_mb']:,.0f} → {run['rss_peak_mb']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Three panels: p50 ratio and server-compute ratio (oversized/normal, whiskers: range over
    rounds) per load shape, and the server's RSS over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    phases = list(report["phases"].values())
    bars = [(size, ref) for ref in REFERENCES for size in OVERSIZED]
    width = 0.8 / len(bars)
    colors = {
        ("1MB", "normal"): "tab:orange",
        ("5MB", "normal"): "tab:red",
        ("1MB", "prefix"): "tab:cyan",
        ("5MB", "prefix"): "tab:blue",
    }
    for ax, key, title in (
        (axes[0], "p50", "client p50, ratio"),
        (axes[1], "text_compute", "server compute (tokenizer + rerank), ratio"),
    ):
        for j, (size, ref) in enumerate(bars):
            xs, mids, lows, highs = [], [], [], []
            for i, phase in enumerate(phases):
                ratio = phase["ratio"].get(size, {}).get(f"vs_{ref}")
                if ratio is None:
                    continue
                mid = ratio[key]
                low, high = phase["ratio_range"][size][f"vs_{ref}"][key]
                xs.append(i + (j - (len(bars) - 1) / 2) * width)
                mids.append(mid)
                lows.append(mid - low)
                highs.append(high - mid)
            ax.bar(
                xs, mids, width, yerr=[lows, highs], capsize=3, label=f"{size} ÷ {ref}", color=colors.get((size, ref))
            )
            for x, mid in zip(xs, mids, strict=True):
                ax.annotate(
                    f"{mid:.2f}",
                    (x, mid),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.axhline(1.0, color="grey", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(phases)), [f"{p['concurrency']} caller(s)" for p in phases])
        ax.set_ylabel("ratio (log scale)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    samples = report["rss_samples"]
    if samples:
        axes[2].plot([t for t, _ in samples], [mb for _, mb in samples], lw=1)
        for run in report["runs"]:
            if run["size"] != "normal":
                axes[2].axvspan(
                    run["t_start"],
                    run["t_end"],
                    color="tab:orange" if run["size"] == "1MB" else "tab:red",
                    alpha=0.12 if run["concurrency"] == 1 else 0.3,
                    lw=0,
                )
    axes[2].axhline(report["rss"]["bounded_mb"], color="grey", lw=1, ls="--")
    axes[2].set_xlabel("seconds (shaded: 1 MB / 5 MB slots, darker at 16 callers)")
    axes[2].set_ylabel("MB")
    axes[2].set_title(
        f"RSS, summed: {report['rss']['end_growth_over_bounded_mb']:+.0f} MB over the bounded warm-up (dashed)",
        fontsize=9,
    )
    axes[2].grid(True, alpha=0.3)
    fig.suptitle(
        "1 MB / 5 MB queries vs a normal query and vs their own bounded prefix, one server "
        "(medians of rounds, whiskers: range)",
        fontsize=10,
    )
    return save_figure(fig, path)
