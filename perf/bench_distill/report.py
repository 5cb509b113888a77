"""The distillation report: Markdown and a PNG from the dict :mod:`perf.bench_distill.scenario` returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perf.bench_distill.scenario import CONCURRENCY, TITLES


def to_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Distilled towers vs the teacher (all-MiniLM-L6-v2)",
        "",
        f"`{result['command']}` — {m['cpus']} CPUs, load {m['load_before']} → {m['load_after']}; ONNX Runtime CPU "
        f"(1 intra-op thread per encoder offline); `recommend` through a real tritonserver over the "
        f"{result['catalog_items']:,}-item BigBasket catalog at concurrency {CONCURRENCY}, {result['served_seconds']} s "
        f"× {result['rounds']} alternating rounds (median).",
        "",
        "## Speed",
        "",
        "| tower | texts/s batch 1 | × | texts/s batch 32 | × | `recommend` req/s | × | p50 ms | index items/s | × "
        f"| {TITLES:,} titles |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["speed"].items():
        r, v = result["ratios"][name], result["served"].get(name)
        items = result["indexing_items_per_s"].get(name)
        lines.append(
            f"| {name} | {s['batch_1']} | {r['batch_1']}× | {s['batch_32']} | {r['batch_32']}× | "
            + (f"{v['requests_per_s']} | {v['served_ratio']}× | {v['p50_ms']} | " if v else "– | – | – | ")
            + (
                f"{items} | {result['index_ratios'][name]}× | {TITLES / items / 60:.1f} min |"
                if items
                else "– | – | – |"
            )
        )
    lines += [
        "",
        "Where a served search's time goes: Triton's busy time per request of each stage (ms, median of rounds; "
        "`recommend` is the whole ensemble, queueing included).",
        "",
        "| tower | " + " | ".join(next(iter(result["served"].values()))["busy_ms_per_request"]) + " |",
        "|---|" + "---|" * len(next(iter(result["served"].values()))["busy_ms_per_request"]),
    ]
    for name, v in result["served"].items():
        lines.append(f"| {name} | " + " | ".join(str(x) for x in v["busy_ms_per_request"].values()) + " |")
    for bench, rows in result["quality"].items():
        lines += [
            "",
            f"## {bench.replace('search_', '').replace('bigbasket', 'BigBasket proxy').replace('movielens', 'MovieLens title search')}"
            f" nDCG@10 ({result['queries'][bench]} queries)",
            "",
            "| system | dense alone | hybrid (served) | retention (hybrid) |",
            "|---|---|---|---|",
        ]
        for name, q in rows.items():
            dense = "–" if q["dense_ndcg@10"] is None else q["dense_ndcg@10"]
            lines.append(f"| {name} | {dense} | {q['hybrid_ndcg@10']} | {q['hybrid_retention']} |")
    lines += ["", "## Targets", ""]
    lines += [
        f"- {t['what']}: {t['value']} (target {t['target']}) — {'met' if t['met'] else 'NOT met'}"
        for t in result["targets"]
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["speed"])
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    x = np.arange(len(names))
    for offset, batch in ((-0.2, "batch_1"), (0.2, "batch_32")):
        left.bar(x + offset, [result["ratios"][n][batch] for n in names], 0.4, label=batch.replace("_", " "))
    left.set_yscale("log")
    left.set_xticks(x, names, rotation=25, ha="right")
    left.set_ylabel("query-encoder throughput × teacher FP32")
    left.legend()
    served_names = list(result["served"])
    middle.bar(served_names, [result["served"][n]["requests_per_s"] for n in served_names], color="tab:green")
    middle.set_xticks(range(len(served_names)), served_names, rotation=25, ha="right")
    middle.set_ylabel(f"recommend search req/s, concurrency {CONCURRENCY}")
    rows = list(next(iter(result["quality"].values())))
    y = np.arange(len(rows))
    for offset, (bench, table) in zip((-0.2, 0.2), result["quality"].items()):
        right.barh(y + offset, [table[r]["hybrid_retention"] for r in rows], 0.4, label=bench.replace("search_", ""))
    right.axvline(0.97, color="grey", linestyle="--", linewidth=1)
    right.axvline(0.90, color="grey", linestyle=":", linewidth=1)
    right.set_xlim(0.85, 1.01)
    right.set_yticks(y, rows, fontsize=7)
    right.set_xlabel("hybrid nDCG@10 ÷ teacher FP32 (lines: gates)")
    right.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
