"""Turn ``bench_results.json`` into the Markdown report, the summary CSV and the plots.

    .venv/bin/python -m perf.bench.report [perf/results/bench_results.json]

Pure functions of the results dict (:mod:`perf.bench.scenario` makes it, ``python -m perf.bench``
writes it), so the report can be redrawn without re-running anything and the arithmetic is
unit-tested (``tests/unit/test_perf_report.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from perf.bench.scenario import HEADLINE_CONCURRENCY as HEADLINE
from perf.bench.scenario import TARGET_ITEMS
from perf.lib.run_info import RESULTS
from perf.lib.triton_stats import STAGES

THROUGHPUT_TARGET = 3.0
#: issue #26: Aisle's default (configs as exported) at this many times FastAPI's throughput, p99 no worse
DEFAULT_TARGET = 5.0
DEFAULT = "aisle-default"
TOKENIZER_TARGET = 0.15


def median(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def point_at(system: dict, concurrency: int) -> dict | None:
    for point in system.get("points", []):
        if point.get("concurrency") == concurrency:
            return point
    return None


def paired_summary(results: dict) -> dict:
    """Medians over the paired rounds, and per-round ratios (their median) against FastAPI."""
    paired = results.get("paired", {})
    rounds = paired.get("rounds", [])
    if not rounds:
        return {}
    names = [k for k in rounds[0] if k != "round"]
    out: dict = {"rounds": len(rounds), "systems": {}}
    for name in names:
        rows = [r[name] for r in rounds if name in r]
        out["systems"][name] = {
            "throughput": median(r["throughput"] for r in rows),
            "p50_ms": median(r["p50_ms"] for r in rows),
            "p99_ms": median(r["p99_ms"] for r in rows),
            "load1": median(r.get("load1") for r in rows),
        }
    aisle = [n for n in names if n.startswith("aisle-")]
    best = max(aisle, key=lambda n: out["systems"][n]["throughput"], default=None)
    out["best"] = best
    out["best_label"] = paired.get("labels", {}).get(best, best)
    out["python_loadgen_label"] = paired.get("python_loadgen_label")
    driven = "python_loadgen" if "python_loadgen" in names else "best_python_loadgen"  # (older results: the best)
    if best and "fastapi" in names:
        speedups = [ratio(r[best]["throughput"], r["fastapi"]["throughput"]) for r in rounds]
        out["speedup"] = median(speedups)
        out["speedup_range"] = (min(speedups), max(speedups))
        out["speedup_python_loadgen"] = median(
            ratio(r[driven]["throughput"], r["fastapi"]["throughput"]) for r in rounds if driven in r
        )
        out["p99_ratio"] = median(ratio(r[best]["p99_ms"], r["fastapi"]["p99_ms"]) for r in rounds)
    if DEFAULT in names and "fastapi" in names:
        speedups = [ratio(r[DEFAULT]["throughput"], r["fastapi"]["throughput"]) for r in rounds]
        out["default"] = {
            "speedup": median(speedups),
            "speedup_range": (min(speedups), max(speedups)),
            "p99_ratio": median(ratio(r[DEFAULT]["p99_ms"], r["fastapi"]["p99_ms"]) for r in rounds),
        }
        if paired.get("python_loadgen_target") == DEFAULT:
            out["default"]["speedup_python_loadgen"] = out["speedup_python_loadgen"]
            out["default"]["p99_ratio_python_loadgen"] = median(
                ratio(r[driven]["p99_ms"], r["fastapi"]["p99_ms"]) for r in rounds if driven in r
            )
    if "aisle-fp32-db-1i" in names and "aisle-fp32-nodb-1i" in names:
        gains = [ratio(r["aisle-fp32-db-1i"]["throughput"], r["aisle-fp32-nodb-1i"]["throughput"]) for r in rounds]
        out["batching_gain"] = median(gains)
        out["batching_gain_range"] = (min(gains), max(gains))
        out["batching_p99_ratio"] = median(
            ratio(r["aisle-fp32-db-1i"]["p99_ms"], r["aisle-fp32-nodb-1i"]["p99_ms"]) for r in rounds
        )
    if best and best in names:
        out["breakdown"] = merge_breakdowns(
            [r[best].get("breakdown") for r in rounds if r.get(best, {}).get("breakdown")]
        )
    return out


def merge_breakdowns(breakdowns: list[dict]) -> dict:
    """Median, figure by figure, of several :func:`perf.lib.triton_stats.breakdown` results."""
    if not breakdowns:
        return {}
    stages = {}
    for stage in STAGES:
        keys = breakdowns[0]["stages"][stage].keys()
        stages[stage] = {k: median(b["stages"][stage][k] for b in breakdowns) for k in keys}
    return {
        "requests": sum(b["requests"] for b in breakdowns),
        "ensemble_latency_ms": median(b["ensemble_latency_ms"] for b in breakdowns),
        "overhead_ms": median(b["overhead_ms"] for b in breakdowns),
        "stages": stages,
    }


def sweep_ratio(results: dict, a: str, b: str, concurrency: int = HEADLINE) -> float:
    systems = results.get("systems", {})
    pa, pb = point_at(systems.get(a, {}), concurrency), point_at(systems.get(b, {}), concurrency)
    return ratio(pa["throughput"], pb["throughput"]) if pa and pb else math.nan


def summary_rows(results: dict) -> list[dict]:
    rows = []
    for name, system in results.get("systems", {}).items():
        for p in system.get("points", []):
            rows.append(
                {
                    "system": name,
                    "label": system["label"],
                    "driver": "perf_analyzer" if system["kind"] == "triton" else "loadgen",
                    "concurrency": p["concurrency"],
                    "throughput_per_s": round(p["throughput"], 2),
                    "p50_ms": round(p["p50_ms"], 2),
                    "p95_ms": round(p["p95_ms"], 2),
                    "p99_ms": round(p["p99_ms"], 2),
                    "load1": round(p.get("load1", math.nan), 2),
                }
            )
    return rows


def _f(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def breakdown_table(b: dict) -> list[str]:
    lines = [
        "| stage | compute ms / request | share of compute | time in stage ms / request (queue) | busy (cores) | avg batch |",
        "|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        s = b["stages"][stage]
        lines.append(
            f"| {stage} | {_f(s['compute_ms'], 2)} | {_pct(s['share'])} | {_f(s['latency_ms'], 1)} ({_f(s['queue_ms'], 1)}) "
            f"| {_f(s['busy'], 2)} | {_f(s['avg_batch'], 1)} |"
        )
    lines.append(f"| ensemble overhead | – | – | {_f(b['overhead_ms'], 1)} | – | – |")
    lines.append(f"| **recommend (end to end, server side)** | | | **{_f(b['ensemble_latency_ms'], 1)}** | | |")
    return lines


def default_target(results: dict, headline: dict) -> str:
    """Issue #26's line: Aisle's default against FastAPI, judged only over a catalog of ≥ TARGET_ITEMS items."""
    catalog = results.get("catalog") or {}
    items = catalog.get("items")
    where = f"{items:,} items ({catalog.get('name', '?')})" if items else "catalog size not recorded"
    d = headline.get("default")
    if not d:
        return (
            f"- **Issue #26, Aisle's default ≥ {DEFAULT_TARGET:g}× FastAPI at a p99 no worse: not measured** ({where})."
        )
    fast, own = headline["systems"]["fastapi"], headline["systems"][DEFAULT]
    met = d["speedup"] >= DEFAULT_TARGET and d["p99_ratio"] <= 1.0
    verdict = (
        ("met" if met else "missed")
        if items and items >= TARGET_ITEMS
        else f"not judged (the target asks for ≥ {TARGET_ITEMS:,} items)"
    )
    python = (
        f"; with FastAPI's own Python load generator on both: {_f(d['speedup_python_loadgen'], 2)}×, "
        f"p99 {_f(d['p99_ratio_python_loadgen'], 2)}× FastAPI's"
        if "speedup_python_loadgen" in d
        else ""
    )
    return (
        f"- **Issue #26, Aisle's default ≥ {DEFAULT_TARGET:g}× FastAPI's throughput at a p99 no worse, catalog "
        f"≥ {TARGET_ITEMS:,} items: {verdict}** — catalog {where}. {_f(own['throughput'])}/s against "
        f"{_f(fast['throughput'])}/s: **{_f(d['speedup'], 2)}×** (median of the per-round ratios of "
        f"{headline.get('rounds', 0)} paired rounds, range {_f(d['speedup_range'][0], 2)}–{_f(d['speedup_range'][1], 2)}×), "
        f"p99 {_f(own['p99_ms'])} ms against {_f(fast['p99_ms'])} ms ({_f(d['p99_ratio'], 2)}×){python}."
    )


def targets(results: dict, headline: dict) -> list[str]:
    lines = [default_target(results, headline)]
    speedup, p99r = headline.get("speedup", math.nan), headline.get("p99_ratio", math.nan)
    b = headline.get("breakdown") or {}
    enc = (b.get("stages") or {}).get("query_encoder", {})
    tok = (b.get("stages") or {}).get("tokenizer", {})
    fast = headline.get("systems", {}).get("fastapi", {})
    inproc = point_at(results.get("systems", {}).get("inprocess", {}), HEADLINE)
    met = speedup >= THROUGHPUT_TARGET and p99r <= 1.0
    lines.append(
        f"- **Throughput ≥ {THROUGHPUT_TARGET:g}× FastAPI with equal or lower p99 at concurrency {HEADLINE}: "
        f"{'met' if met else 'missed'}** — {_f(speedup, 2)}× (median of {headline.get('rounds', 0)} paired rounds, range "
        f"{_f(headline.get('speedup_range', (math.nan,))[0], 2)}–{_f(headline.get('speedup_range', (0, math.nan))[1], 2)}×; "
        f"{_f(headline.get('speedup_python_loadgen', math.nan), 2)}× with the same Python load generator on both), "
        f"p99 {_f(p99r, 2)}× FastAPI's."
    )
    if not met and enc:
        lines.append(
            f"  - *What limits it:* the query encoder. It takes {_pct(enc.get('share', math.nan))} of the ensemble's compute "
            f"({_f(enc.get('compute_ms', math.nan), 2)} ms per request, batches of {_f(enc.get('avg_batch', math.nan), 1)}) "
            f"and was busy {_f(enc.get('busy', math.nan), 2)} s per second of the run; FastAPI spends its time in the same "
            f"transformer forward pass (PyTorch), with in-process sentence-transformers at "
            f"{_f(inproc['throughput'] if inproc else math.nan)}/s vs FastAPI's {_f(fast.get('throughput', math.nan))}/s, so HTTP "
            "is not its bottleneck either. On 2 shared cores both systems are bound by the same matrix multiplies: "
            "Aisle's edge is ONNX Runtime's faster kernels, INT8, and batching (which amortizes per-call overhead but "
            "not FLOPs), not a different amount of work."
        )
        lines.append(
            "  - *What would remove it:* more encoder FLOP/s — the GPU suite (TensorRT, `perf/perf_analyzer/gpu_suite.sh`), "
            "or more CPU cores with one encoder instance per core; on this box, the quieter machine (load average "
            f"{_f(fast.get('load1', math.nan))} during the paired rounds on 2 cores: Aisle's 4+ processes and ORT's "
            "spinning thread pool lose more to oversubscription than one PyTorch process)."
        )
    share = tok.get("share", math.nan)
    lines.append(
        f"- **Tokenizer ≤ {_pct(TOKENIZER_TARGET)} of ensemble compute: {'met' if share <= TOKENIZER_TARGET else 'missed'}** — "
        f"{_pct(share)} ({_f(tok.get('compute_ms', math.nan), 2)} ms per request, best configuration, paired rounds)."
    )
    gain = headline.get("batching_gain", math.nan)
    int8_gain = sweep_ratio(results, "aisle-int8-db-1i", "aisle-int8-nodb-1i")
    lines.append(
        f"- **Gain from dynamic batching** (FP32, 1 instance, concurrency {HEADLINE}): **{_f(gain, 2)}×** throughput "
        f"(median of paired rounds, range {_f(headline.get('batching_gain_range', (math.nan,))[0], 2)}–"
        f"{_f(headline.get('batching_gain_range', (0, math.nan))[1], 2)}×), p99 {_f(headline.get('batching_p99_ratio', math.nan), 2)}×; "
        f"INT8, 1 instance: {_f(int8_gain, 2)}×; INT8, 2 instances × 1 ORT thread: "
        f"{_f(sweep_ratio(results, 'aisle-int8-db-2i-t1', 'aisle-int8-nodb-2i'), 2)}× over no batching with 2 default-thread instances "
        "(sweep, not paired). With one ORT instance using every core, batching changes little on 2 loaded cores: "
        "the encoder's time is matrix multiplies that grow with the batch, and the per-call overhead it "
        "amortizes is small next to them."
    )
    return lines


def markdown(results: dict) -> str:
    m = results.get("machine", {})
    loads = [x["load1"] for x in results.get("load", [])]
    headline = paired_summary(results)
    out = [
        "# Aisle benchmarks",
        "",
        f"Generated by `{results.get('command', 'make bench (python -m perf.bench)')}` on {results.get('started', '?')} "
        f"in {_f(results.get('duration_s', math.nan), 0)} s.",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, no GPU, {m.get('system', '')}, Python {m.get('python', '')}; "
        f"shared with other jobs — 1-minute load average during the run: min {_f(min(loads) if loads else math.nan)}, "
        f"median {_f(median(loads))}, max {_f(max(loads) if loads else math.nan)} (per point in the tables).",
        f"Requests: {results.get('settings', {}).get('requests', '')}, batch size 1, closed loop; "
        "Aisle driven by perf_analyzer (gRPC), the baselines by `perf/lib/loadgen.py`. Absolute figures move with the "
        "machine's load; compare systems through the paired-round ratios.",
        f"Catalog: {_f((results.get('catalog') or {}).get('items', math.nan), 0)} items — "
        f"{(results.get('catalog') or {}).get('note', 'MovieLens-100K')}.",
        "",
        "## Targets",
        "",
        *targets(results, headline),
        "",
    ]
    if headline:
        out += [
            f"## Paired rounds at concurrency {HEADLINE} (interleaved, medians of {headline['rounds']} rounds)",
            "",
            "| system | throughput /s | p50 ms | p99 ms | load1 |",
            "|---|---|---|---|---|",
        ]
        labels = {n: s["label"] for n, s in results.get("systems", {}).items()}
        labels.update(
            fastapi="FastAPI + sentence-transformers",
            best_python_loadgen=f"{headline.get('python_loadgen_label')} — via the Python load generator",
            python_loadgen=f"{headline.get('python_loadgen_label')} — via the Python load generator",
        )
        for name, s in headline["systems"].items():
            star = " (best)" if name == headline.get("best") else ""
            out.append(
                f"| {labels.get(name, name)}{star} | {_f(s['throughput'])} | {_f(s['p50_ms'])} | {_f(s['p99_ms'])} | {_f(s['load1'])} |"
            )
        out.append("")
        if headline.get("breakdown"):
            out += [
                f"## Where the time goes: {headline.get('best_label')}, concurrency {HEADLINE} (Triton statistics)",
                "",
                *breakdown_table(headline["breakdown"]),
                "",
                "compute = batch compute time (input + infer + output) per ensemble request; busy = compute seconds per "
                "wall second; time in stage = queue + compute as a request saw it; ensemble overhead = ensemble "
                "request time minus the stages' request times.",
                "",
            ]
    out += [
        "## Concurrency sweeps",
        "",
        "| system | concurrency | throughput /s | p50 ms | p95 ms | p99 ms | load1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary_rows(results):
        out.append(
            f"| {row['label']} | {row['concurrency']} | {_f(row['throughput_per_s'])} | {_f(row['p50_ms'])} "
            f"| {_f(row['p95_ms'])} | {_f(row['p99_ms'])} | {_f(row['load1'])} |"
        )
    out.append("")
    breakdowns = [
        (s["label"], p["breakdown"])
        for s in results.get("systems", {}).values()
        for p in s.get("points", [])
        if p.get("concurrency") == HEADLINE and p.get("breakdown")
    ]
    if breakdowns:
        out += [
            f"## Component compute per configuration, concurrency {HEADLINE} (sweep)",
            "",
            "| configuration | tokenizer ms (share) | query_encoder ms (share, avg batch) | rerank ms (share) | overhead ms | recommend ms |",
            "|---|---|---|---|---|---|",
        ]
        for label, b in breakdowns:
            st = b["stages"]
            out.append(
                f"| {label} | {_f(st['tokenizer']['compute_ms'], 2)} ({_pct(st['tokenizer']['share'])}) "
                f"| {_f(st['query_encoder']['compute_ms'], 2)} ({_pct(st['query_encoder']['share'])}, {_f(st['query_encoder']['avg_batch'], 1)}) "
                f"| {_f(st['rerank']['compute_ms'], 2)} ({_pct(st['rerank']['share'])}) | {_f(b['overhead_ms'])} | {_f(b['ensemble_latency_ms'])} |"
            )
        out.append("")
    if results.get("components"):
        out += [
            "## Component models alone (default configuration)",
            "",
            "| model | concurrency | throughput /s | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        for model, points in results["components"].items():
            for p in points:
                out.append(
                    f"| {model} | {p['concurrency']} | {_f(p['throughput'])} | {_f(p['p50_ms'], 2)} | {_f(p['p99_ms'], 2)} |"
                )
        out.append("")
    if results.get("feed"):
        out += [
            "## Feed mix (a shopper's 5–20 latest items, half with a query), default configuration",
            "",
            "| concurrency | throughput /s | p50 ms | p99 ms |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {p['concurrency']} | {_f(p['throughput'])} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} |"
            for p in results["feed"]
        ]
        out.append("")
    if results.get("request_rate"):
        out += [
            "## Latency under offered load (Poisson arrivals, default configuration)",
            "",
            "| offered /s (of peak) | achieved /s | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {p['offered_rate']:g} ({p['fraction_of_peak']:.0%}) | {_f(p['throughput'])} | {_f(p['p50_ms'])} "
            f"| {_f(p['p95_ms'])} | {_f(p['p99_ms'])} |"
            for p in results["request_rate"]
        ]
        out.append("")
    if results.get("notes"):
        out += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    out += [
        "Plots: `bench_throughput_p99.png` (throughput against p99, one line per system), "
        "`bench_components.png` (component compute per configuration). Raw: `bench_results.json`, "
        "`bench_summary.csv`, perf_analyzer CSVs in `bench_csv/`.",
        "",
    ]
    return "\n".join(out)


def plot(results: dict, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for system in results.get("systems", {}).values():
        points = sorted(system.get("points", []), key=lambda p: p["concurrency"])
        if not points:
            continue
        style = "--" if system["kind"] == "loadgen" else "-"
        ax.plot(
            [p["throughput"] for p in points], [p["p99_ms"] for p in points], style, marker="o", label=system["label"]
        )
        for p in points:
            ax.annotate(
                str(p["concurrency"]),
                (p["throughput"], p["p99_ms"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms, log)")
    ax.set_yscale("log")
    items = (results.get("catalog") or {}).get("items")
    catalog = f"{(results.get('catalog') or {}).get('name', 'MovieLens')}, {items:,} items" if items else "MovieLens"
    ax.set_title(f"recommend search ({catalog}, K=10): throughput vs p99, labels = concurrency", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"{stem}_throughput_p99.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    bars = [
        (s["label"], p["breakdown"])
        for s in results.get("systems", {}).values()
        for p in s.get("points", [])
        if p.get("concurrency") == HEADLINE and p.get("breakdown")
    ]
    if bars:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.8))
        left = [0.0] * len(bars)
        for stage in STAGES:
            widths = [b["stages"][stage]["compute_ms"] for _, b in bars]
            ax.barh([label for label, _ in bars], widths, left=left, label=stage)
            left = [a + w for a, w in zip(left, widths)]
        ax.set_xlabel(f"compute ms per recommend request at concurrency {HEADLINE} (Triton batch statistics)")
        ax.legend(fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        path = out_dir / f"{stem}_components.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(results: dict, out_dir: Path, stem: str = "bench") -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stem}_report.md"
    md.write_text(markdown(results))
    rows = summary_rows(results)
    summary = out_dir / f"{stem}_summary.csv"
    with open(summary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["system"])
        writer.writeheader()
        writer.writerows(rows)
    return [md, summary, *plot(results, out_dir, stem)]


def main(argv: list[str] | None = None) -> None:
    """Redraw the report, the summary CSV and the plots beside a ``<stem>_results.json``."""
    parser = argparse.ArgumentParser(prog="python -m perf.bench.report", description=main.__doc__)
    parser.add_argument("results", type=Path, nargs="?", default=RESULTS / "bench_results.json")
    path = parser.parse_args(argv).results
    stem = path.name.removesuffix("_results.json")
    for written in write(json.loads(path.read_text()), path.parent, stem):
        print(written)


if __name__ == "__main__":
    main()
