"""Served ``recommend`` search over the BigBasket catalog: the top-k engines against today's exact path.

One repository — the exported towers of ``--towers`` (a repository ``aisle export`` wrote; its
query and item towers must be the ones that embedded ``--embeddings``), this checkout's model
code and configs, the BigBasket search proxy's catalog indexed with ``--dense-engine hnsw`` — served
twice per round and query tower: as configured (candidates from the engines) and with the
``rerank`` config's ``exact_retrieval`` set (every item scanned, as before). The query towers: the
teacher FP32 (``--towers``' own) and, with ``--static``, the static student of ``aisle distill
--student static --out DIR`` swapped into ``query_encoder/1`` (the index stays the teacher's, as in
``perf.bench_distill``). ``recommend`` searches (the proxy's query texts, k 10) at concurrency 16 for
``--seconds`` per window, every (tower, path) pair once per round, the order reversed every other
round; throughput, p50, p99, Triton's busy time per request of each stage, and the issue's targets
(#26: the static student ≥ 3×, the teacher ≥ 1.5× the served figures of ``perf.bench_distill``).

The FastAPI side by side at catalog scale (``make bench`` runs it too, ``perf.bench``): ``--items N``
grows the catalog to N items (:mod:`perf.lib.bigbasket`; the added rows embedded by the item tower,
cached under ``build/bench_catalog``; the proxy catalog as is, 27,554 items, is what the "before"
figures of TARGETS were served over) and
``--fastapi`` serves the FastAPI + sentence-transformers baseline (``perf.baselines``, the same
tower and index vectors) in the same rounds, driven by the same Python load generator over HTTP.

    .venv/bin/python -m perf.bench_rerank_served --towers build/model_repository \
        [--static build/students/static] [--items 55108 --fastapi --name NAME] [--rounds 2] [--seconds 15]

Writes ``perf/results/bench_rerank_served.{md,json,png}`` (``--name``: another file name).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

from perf.lib import loadgen, triton_stats
from perf.lib.bigbasket import NOTE as CATALOG_NOTE
from perf.lib.bigbasket import PROXY_ITEMS as CATALOG_ITEMS
from perf.lib.bigbasket import build_repository
from perf.lib.run_info import RESULTS, ROOT, command_line, machine, write_report

CONCURRENCY = 16
STAT_MODELS = ("tokenizer", "query_encoder", "rerank", "recommend")
MODES = {"top-k engines": "False", "today (exact_retrieval)": "True"}
FLAG = 'key: "exact_retrieval"\n  value {\n    string_value: "%s"'
TEACHER, STATIC = "teacher FP32", "static student"
FASTAPI = "FastAPI + sentence-transformers"
#: the FastAPI side by side (issue #26): Aisle's default (teacher FP32, top-k engines) at ≥ 5× its req/s, p99 no worse
FASTAPI_TARGET = 5.0
#: issue #26's targets for the engines: × the req/s each tower served before them (perf/results/bench_distill.md)
TARGETS = {STATIC: (3.0, 98.7), TEACHER: (1.5, 84.0)}


def set_mode(repo: Path, exact: str) -> None:
    config = repo / "rerank" / "config.pbtxt"
    text = config.read_text()
    for value in MODES.values():
        text = text.replace(FLAG % value, FLAG % exact)
    config.write_text(text)


def query_graphs(repo: Path, static: Path | None, keep: Path) -> dict[str, Path]:
    """The query graphs to serve in turn: the repository's own (the teacher's, copied to ``keep``) and,
    given ``static``, that static student's — refused unless it was distilled for this repository's space."""
    from aisle_export.core.spaces import read_record, read_space

    shutil.copyfile(repo / "query_encoder" / "1" / "model.onnx", keep)
    graphs = {TEACHER: keep}
    if static is not None:
        record = read_record(static)
        if record is None or record.get("student") != "static":
            raise SystemExit(f"{static} holds no static student: run `aisle distill --student static --out {static}`")
        space = read_space(repo / "query_encoder" / "1")
        if space is not None and record.get("item_tower_sha256") != space:
            raise SystemExit(f"{static} was distilled for the item tower {record.get('item_tower')}, not {repo}'s")
        graphs[STATIC] = static / record["onnx"] / "model.onnx"
    return graphs


def window_order(names: list[str], round_index: int, fastapi: bool = False) -> list[tuple[str, str]]:
    """Every (tower, rerank path) pair once — and the FastAPI baseline, given ``fastapi`` — reversed every
    other round so drift in the load hits all alike."""
    pairs = [(name, mode) for name in names for mode in MODES] + ([(FASTAPI, "")] if fastapi else [])
    return pairs if round_index % 2 == 0 else pairs[::-1]


def served(
    repo: Path,
    graphs: dict[str, Path],
    queries: list[str],
    rounds: int,
    seconds: float,
    logs: Path,
    fastapi: bool = False,
) -> tuple[dict, dict | None]:
    """(Aisle's rows: tower → rerank path → summary; the FastAPI baseline's summary, or ``None``)."""
    import tritonclient.grpc as grpcclient

    from aisle_server.tritonserver import TritonServer
    from perf.baselines.server import FastApiServer

    requests = [{"query": q, "k": 10} for q in queries]
    target = repo / "query_encoder" / "1" / "model.onnx"
    runs: dict[str, dict[str, list[dict]]] = {tower: {name: [] for name in MODES} for tower in graphs}
    baseline: list[dict] = []
    for round_index in range(rounds):
        for tower, name in window_order(list(graphs), round_index, fastapi):
            load = [os.getloadavg()[0]]
            if tower == FASTAPI:
                shutil.copyfile(graphs[TEACHER], target)  # the baseline reads the index, not this graph
                with FastApiServer(repo, log_file=logs / "fastapi.log") as api:
                    result = loadgen.run(loadgen.make_http(api.url + "/recommend"), requests, CONCURRENCY, seconds, 3.0)
                load.append(os.getloadavg()[0])
                baseline.append({**result.to_dict(), "load": load})
                busy_text = ""
            else:
                exact = MODES[name]
                shutil.copyfile(graphs[tower], target)
                set_mode(repo, exact)
                log = logs / f"tritonserver-{tower.replace(' ', '_')}-{exact}.log"
                with (
                    TritonServer(repo, log_file=log) as server,
                    grpcclient.InferenceServerClient(server.grpc_url) as stats,
                ):
                    before = triton_stats.snapshot(stats, STAT_MODELS)
                    result = loadgen.run(loadgen.make_triton(server.grpc_url), requests, CONCURRENCY, seconds, 3.0)
                    delta = triton_stats.diff(triton_stats.snapshot(stats, STAT_MODELS), before)
                load.append(os.getloadavg()[0])
                busy = {model: triton_stats.per_request_ms(delta[model])["busy_ms"] for model in STAT_MODELS}
                runs[tower][name].append({**result.to_dict(), "busy_ms": busy, "load": load})
                busy_text = f"rerank busy {busy['rerank']:.2f} ms, "
            print(
                f"{tower}, {name or '-'}: {result.throughput:.1f} req/s, p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms, {busy_text}{result.errors} errors; load {load[0]:.1f}-{load[1]:.1f}",
                flush=True,
            )
    rows = {tower: {name: summary(rs) for name, rs in by_mode.items()} for tower, by_mode in runs.items()}
    return rows, summary(baseline) if baseline else None


def summary(rs: list[dict]) -> dict:
    """Medians over the rounds of one (tower, rerank path), the rounds themselves kept."""
    return {
        "requests_per_s": round(statistics.median(r["throughput"] for r in rs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 1),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 1),
        "errors": sum(r["errors"] for r in rs),
        "busy_ms_per_request": {
            m: round(statistics.median(r["busy_ms"][m] for r in rs), 2) for m in STAT_MODELS if "busy_ms" in rs[0]
        },
        "runs": rs,
    }


def targets(served_rows: dict, baseline: dict | None, items: int) -> list[dict]:
    """Issue #26's served targets: each tower's against its figure before the engines (only over the
    BigBasket catalog as is, what that figure was served over), with the engines' ratio to the same
    run's exact path; Aisle's default against the FastAPI baseline, when it was served."""
    engines, exact = list(MODES)
    out = []
    for tower in served_rows if baseline is not None else ():
        row = served_rows[tower][engines]
        ratio = row["requests_per_s"] / baseline["requests_per_s"]
        who = "Aisle's default" if tower == TEACHER else "Aisle"
        out.append(
            {
                "what": f"{who} ({tower}, top-k engines) req/s × {FASTAPI}'s, p99 no worse",
                "value": round(ratio, 2),
                "target": f"≥ {FASTAPI_TARGET}×, p99 {row['p99_ms']} ≤ {baseline['p99_ms']} ms",
                "met": ratio >= FASTAPI_TARGET and row["p99_ms"] <= baseline["p99_ms"],
            }
        )
    for tower, (factor, before) in TARGETS.items():
        if tower in served_rows and items == CATALOG_ITEMS:
            value = served_rows[tower][engines]["requests_per_s"]
            out.append(
                {
                    "what": f"{tower}, req/s at concurrency {CONCURRENCY}, top-k engines",
                    "value": value,
                    "target": f"≥ {factor}× {before} = {factor * before:.1f}",
                    "ratio_to_before": round(value / before, 2),
                    "ratio_to_exact_same_run": round(value / served_rows[tower][exact]["requests_per_s"], 2),
                    "met": value >= factor * before,
                }
            )
    return out


def to_markdown(results: dict) -> str:
    lines = [
        "# Served `recommend` search over BigBasket: top-k engines against today's exact path",
        "",
        f"Catalog: {results['items']:,} items"
        + (" (the BigBasket proxy catalog)" if results["items"] == CATALOG_ITEMS else f" ({CATALOG_NOTE})")
        + f". Command: `{results['command']}`. Machine: {results['machine']}. Concurrency {CONCURRENCY}, "
        f"{results['seconds']} s windows, {results['rounds']} alternating rounds (medians; the 1-minute load "
        "average at the start and end of each window in the last column).",
        "",
        "| query tower | rerank path | req/s | × exact | p50 ms | p99 ms | errors | busy ms / request: "
        + " / ".join(STAT_MODELS)
        + " | load per window |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    exact = list(MODES)[1]
    for tower, by_mode in results["served"].items():
        for name, row in by_mode.items():
            busy = " / ".join(f"{row['busy_ms_per_request'][m]:.2f}" for m in STAT_MODELS)
            loads = ", ".join(f"{r['load'][0]:.1f}–{r['load'][1]:.1f}" for r in row["runs"])
            ratio = row["requests_per_s"] / by_mode[exact]["requests_per_s"]
            lines.append(
                f"| {tower} | {name} | {row['requests_per_s']} | {ratio:.2f} | {row['p50_ms']} | {row['p99_ms']} "
                f"| {row['errors']} | {busy} | {loads} |"
            )
    baseline = results.get("fastapi")
    if baseline:
        loads = ", ".join(f"{r['load'][0]:.1f}–{r['load'][1]:.1f}" for r in baseline["runs"])
        lines.append(
            f"| {FASTAPI} (dense only, one request per model call) | – | {baseline['requests_per_s']} | – "
            f"| {baseline['p50_ms']} | {baseline['p99_ms']} | {baseline['errors']} | – | {loads} |"
        )
    if results.get("targets"):
        lines += ["", 'Targets (issue #26; the "before" figures: perf/results/bench_distill.md):', ""]
        for t in results["targets"]:
            ratios = (
                f" ({t['ratio_to_before']}× before, {t['ratio_to_exact_same_run']}× this run's exact path)"
                if "ratio_to_before" in t
                else ""
            )
            lines.append(
                f"- {t['what']}: {t['value']}{ratios}; target {t['target']} — {'met' if t['met'] else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    towers = list(results["served"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(MODES)
    for j, name in enumerate(MODES):
        values = [results["served"][t][name]["requests_per_s"] for t in towers]
        ax.bar([i + j * width for i in range(len(towers))], values, width, label=name)
    for i, tower in enumerate(towers):
        if tower in TARGETS and results["items"] == CATALOG_ITEMS:
            factor, before = TARGETS[tower]
            ax.hlines(factor * before, i - width / 2, i + width * 1.5, colors="k", linestyles="dashed")
    ax.set_xticks([i + width / 2 for i in range(len(towers))], towers)
    ax.set_ylabel("recommend searches / s (concurrency 16)")
    if results.get("fastapi"):
        ax.axhline(results["fastapi"]["requests_per_s"], color="r", linestyle="dotted", label=FASTAPI)
    ax.set_title(f"BigBasket, {results['items']:,} items (dashed: issue #26 target)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--towers", type=Path, default=ROOT / "build" / "model_repository")
    parser.add_argument("--embeddings", type=Path, default=ROOT / "build" / "search_eval" / "embeddings.npy")
    parser.add_argument("--static", type=Path, help="a static student (`aisle distill --student static --out`)")
    parser.add_argument(
        "--items", type=int, default=0, help="grow the catalog to this many items (perf.lib.bigbasket.grow_catalog)"
    )
    parser.add_argument("--fastapi", action="store_true", help="serve the FastAPI baseline in the same rounds")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench_rerank_served")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="bench_rerank_served", help="the report's file name, without suffix")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    repo, proxy, items, _ = build_repository(
        args.towers, args.workdir / "model_repository", args.items, args.embeddings
    )
    queries = list(proxy)
    graphs = query_graphs(repo, args.static, args.workdir / "teacher_query_encoder.onnx")
    rows, baseline = served(repo, graphs, queries, args.rounds, args.seconds, args.workdir, args.fastapi)
    results = {
        "command": command_line("perf.bench_rerank_served", sys.argv[1:] if argv is None else argv),
        "items": items,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "served": rows,
        "fastapi": baseline,
        "targets": targets(rows, baseline, items),
    }
    results["machine"] = machine(load_before)
    write_report(args.out, args.name, results, to_markdown, plot)
    return results


if __name__ == "__main__":
    main()
