"""Served ``recommend`` search over the BigBasket catalog: the top-k engines against today's exact path.

One repository — the exported towers of ``--towers`` (a repository ``aisle export`` wrote; its
query and item towers must be the ones that embedded ``--embeddings``), this checkout's model
code and configs, the BigBasket search proxy's catalog indexed with ``--dense-engine hnsw`` — served
twice per round: as configured (candidates from the engines) and with the ``rerank`` config's
``exact_retrieval`` set (every item scanned, as before). ``recommend`` searches (the proxy's query
texts, k 10) at concurrency 16 for ``--seconds`` per window, rounds alternating; throughput, p50,
p99 and Triton's busy time per request of each stage.

    .venv/bin/python -m perf.bench_rerank_served --towers build/model_repository [--rounds 2] [--seconds 15]

Writes ``perf/results/bench_rerank_served.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

from perf.lib import loadgen, triton_stats
from perf.lib.run_info import RESULTS, ROOT, command_line, machine, write_report

CONCURRENCY = 16
STAT_MODELS = ("tokenizer", "query_encoder", "rerank", "recommend")
MODES = {"top-k engines": "False", "today (exact_retrieval)": "True"}
FLAG = 'key: "exact_retrieval"\n  value {\n    string_value: "%s"'


def build_repository(towers: Path, embeddings: Path, repo: Path) -> tuple[Path, list[str]]:
    """``towers``' exported models with this checkout's template, the proxy catalog indexed with the graph."""
    import numpy as np

    from aisle_export.build.repository import copy_template
    from aisle_export.data.catalog import read_catalog
    from aisle_export.index.writing import write_index
    from aisle_export.judge.search import DEFAULT_CSV, write_proxy_catalog

    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(towers, repo, ignore=shutil.ignore_patterns("__pycache__", "index", ".*"))
    copy_template(repo)
    catalog_csv, queries = write_proxy_catalog(DEFAULT_CSV, repo.parent / "bigbasket_catalog.csv")
    write_index(
        read_catalog(catalog_csv),
        repo,
        source=catalog_csv,
        progress=False,
        embeddings=np.load(embeddings),
        dense_engine="hnsw",
    )
    return repo, list(queries)


def set_mode(repo: Path, exact: str) -> None:
    config = repo / "rerank" / "config.pbtxt"
    text = config.read_text()
    for value in MODES.values():
        text = text.replace(FLAG % value, FLAG % exact)
    config.write_text(text)


def served(repo: Path, queries: list[str], rounds: int, seconds: float, logs: Path) -> dict:
    import tritonclient.grpc as grpcclient

    from aisle_server.tritonserver import TritonServer

    requests = [{"query": q, "k": 10} for q in queries]
    runs: dict[str, list[dict]] = {name: [] for name in MODES}
    for _ in range(rounds):
        for name, exact in MODES.items():
            set_mode(repo, exact)
            load = [os.getloadavg()[0]]
            log = logs / f"tritonserver-{exact}.log"
            with TritonServer(repo, log_file=log) as server, grpcclient.InferenceServerClient(server.grpc_url) as stats:
                before = triton_stats.snapshot(stats, STAT_MODELS)
                result = loadgen.run(loadgen.make_triton(server.grpc_url), requests, CONCURRENCY, seconds, 3.0)
                delta = triton_stats.diff(triton_stats.snapshot(stats, STAT_MODELS), before)
            load.append(os.getloadavg()[0])
            busy = {model: triton_stats.per_request_ms(delta[model])["busy_ms"] for model in STAT_MODELS}
            runs[name].append({**result.to_dict(), "busy_ms": busy, "load": load})
            print(
                f"{name}: {result.throughput:.1f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"rerank busy {busy['rerank']:.2f} ms, {result.errors} errors; load {load[0]:.1f}-{load[1]:.1f}",
                flush=True,
            )
    return {
        name: {
            "requests_per_s": round(statistics.median(r["throughput"] for r in rs), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 1),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 1),
            "errors": sum(r["errors"] for r in rs),
            "busy_ms_per_request": {m: round(statistics.median(r["busy_ms"][m] for r in rs), 2) for m in STAT_MODELS},
            "runs": rs,
        }
        for name, rs in runs.items()
    }


def to_markdown(results: dict) -> str:
    lines = [
        "# Served `recommend` search over BigBasket: top-k engines against today's exact path",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}. Concurrency {CONCURRENCY}, "
        f"{results['seconds']} s windows, {results['rounds']} alternating rounds (medians).",
        "",
        "| rerank path | req/s | p50 ms | p99 ms | errors | busy ms / request: "
        + " / ".join(STAT_MODELS)
        + " | load per window |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["served"].items():
        busy = " / ".join(f"{row['busy_ms_per_request'][m]:.2f}" for m in STAT_MODELS)
        loads = ", ".join(f"{r['load'][0]:.1f}–{r['load'][1]:.1f}" for r in row["runs"])
        lines.append(
            f"| {name} | {row['requests_per_s']} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} | {busy} | {loads} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["served"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, [results["served"][n]["requests_per_s"] for n in names])
    ax.set_ylabel("recommend searches / s (concurrency 16)")
    ax.set_title("BigBasket, teacher towers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--towers", type=Path, default=ROOT / "build" / "model_repository")
    parser.add_argument("--embeddings", type=Path, default=ROOT / "build" / "search_eval" / "embeddings.npy")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench_rerank_served")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    repo, queries = build_repository(args.towers, args.embeddings, args.workdir / "model_repository")
    results = {
        "command": command_line("perf.bench_rerank_served", sys.argv[1:] if argv is None else argv),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "served": served(repo, queries, args.rounds, args.seconds, args.workdir),
    }
    results["machine"] = machine(load_before)
    write_report(args.out, "bench_rerank_served", results, to_markdown, plot)
    return results


if __name__ == "__main__":
    main()
