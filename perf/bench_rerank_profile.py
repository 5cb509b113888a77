"""Where a ``rerank`` execution's milliseconds go: the ranking stage profiled per request.

``rerank`` runs ``aisle_server.ranking.rank_many`` on each dynamic batch; everything else in the
model (tensor parsing, the state store) is small beside it. This times ``rank_many`` exactly as the
model calls it — search (a query embedding and its text), feed (20 history items), search with
a history and cold (neither: the popularity-and-freshness fallback); a batch of 1 and a dynamic batch of 16 — and then runs the same batches under
``cProfile`` and lists the functions that own the time (self time, per request), so every later
change to the stage is read against this profile.

Catalogs: the BigBasket catalog (27,554 products, ``../shared/data``; its item embeddings from the
search proxy's cache, ``python -m aisle_export.judge.search`` writes it, else the item tower embeds
them) with the proxy's query texts, and a synthetic catalog (``--items``, default 1,000,000; faiss
IVF as ``aisle index`` builds above ``EXACT_MAX_ITEMS``) with ``perf.lib.synthetic_catalog``'s
titles. Query vectors mix three catalog items (``queries_for``): the profile does not need a tower.

    .venv/bin/python -m perf.bench_rerank_profile [--items 1000000] [--catalogs bigbasket synthetic]

Writes ``perf/results/bench_rerank_profile.{md,json,png}``. cProfile slows Python-level calls, so
read the profile's shares, and the untraced timing for milliseconds. OpenBLAS runs one thread, as
``aisle serve`` starts Triton (set ``OPENBLAS_NUM_THREADS`` to override).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `aisle serve` runs Triton; before numpy loads OpenBLAS

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aisle_contract import RankingConfig
from aisle_server.ann import EXACT_MAX_ITEMS, AnnIndex
from aisle_server.index import CatalogIndex
from aisle_server.ranking import RankRequest, rank_many
from perf.lib.run_info import RESULTS, ROOT, command_line, machine, save_figure, write_report
from perf.lib.synthetic_catalog import catalog_index, item_fields, queries_for, synthetic, title_queries
from perf.lib.timing import percentile

SCENARIOS = ("search", "feed", "search + history", "cold")
BATCHES = (1, 16)
HISTORY = 20
TOP_FUNCTIONS = 10


def bigbasket_index(embeddings: Path) -> tuple[CatalogIndex, list[str]]:
    """The BigBasket catalog as ``aisle index`` serves it, and the search proxy's query texts."""
    from aisle_export.data.catalog import read_catalog
    from aisle_export.judge.search import DEFAULT_CSV, build_index, write_proxy_catalog

    catalog_csv, queries = write_proxy_catalog(DEFAULT_CSV, embeddings.parent / "catalog.csv")
    index = build_index(
        read_catalog(catalog_csv), ROOT / "build" / "model_repository" / "item_encoder" / "1", embeddings
    )
    return index, list(queries)


def synthetic_index(items: int, dim: int = 384) -> tuple[CatalogIndex, list[str]]:
    """``items`` synthetic items with BM25 over their titles and, above ``EXACT_MAX_ITEMS``, faiss IVF."""
    vectors = synthetic(items, dim, clusters=max(16, items // 1000))
    fields = item_fields(items)
    print(f"synthetic catalog: BM25 over {items:,} titles …", flush=True)
    ann = None
    if items > EXACT_MAX_ITEMS:
        print("synthetic catalog: faiss IVF …", flush=True)
        ann = AnnIndex.build(vectors)
    index = catalog_index(vectors, fields, ann=ann)
    words = title_queries(fields["titles"])
    return index, words


def requests_for(
    index: CatalogIndex, texts: Sequence[str], scenario: str, count: int, seed: int = 0
) -> list[RankRequest]:
    """``count`` requests of one scenario over ``index`` (vectors mix catalog items; texts cycle)."""
    rng = np.random.default_rng(seed)
    vectors = queries_for(index.embeddings, count, seed=seed + 1)
    known = index.created_at[np.isfinite(index.created_at)]
    now = float(known.max()) + 86_400.0 if len(known) else time.time()
    out = []
    for i in range(count):
        history: list[tuple[str, float]] = []
        if scenario in ("feed", "search + history"):
            rows = rng.integers(0, len(index.item_ids), HISTORY)
            history = [(str(index.item_ids[r]), now - 3600.0 * (HISTORY - j)) for j, r in enumerate(rows)]
        searches = scenario in ("search", "search + history")  # "cold": no query, no history (the fallback)
        query = vectors[i] if searches else None
        text = texts[i % len(texts)] if searches else ""
        ids = [item for item, _ in history]
        times = np.array([t for _, t in history], dtype=np.float64)
        out.append(RankRequest(query, ids, times, 10, now, RankingConfig(), text))
    return out


def time_batches(index: CatalogIndex, batches: list[list[RankRequest]]) -> list[float]:
    """Milliseconds per request of each batch, untraced (one warm-up batch first)."""
    rank_many(index, batches[0])
    out = []
    for batch in batches:
        started = time.perf_counter()
        rank_many(index, batch)
        out.append((time.perf_counter() - started) * 1000 / len(batch))
    return out


def profile_batches(index: CatalogIndex, batches: list[list[RankRequest]]) -> list[dict]:
    """The functions owning the time under cProfile: self ms per request, grouped by function."""
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches:
        rank_many(index, batch)
    profiler.disable()
    requests = sum(len(batch) for batch in batches)
    stats = pstats.Stats(profiler)
    own: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, function), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]  # pstats' raw table
        total += tottime
        own[_name(filename, function)] += tottime
    rows = sorted(own.items(), key=lambda item: -item[1])[:TOP_FUNCTIONS]
    return [
        {"function": name, "ms_per_request": 1000 * seconds / requests, "share": seconds / total if total else 0.0}
        for name, seconds in rows
    ]


def _name(filename: str, function: str) -> str:
    """``aisle_server.ranking._top``, ``numpy …argpartition``, ``bm25s …get_scores``: where the time is."""
    if filename == "~":  # a C function: "<method 'argpartition' of 'numpy.ndarray' objects>", "<built-in …>"
        return function
    path = Path(filename)
    for package in ("aisle_server", "bm25s", "numpy", "faiss", "scipy", "symspellpy"):
        if package in path.parts:
            inside = path.parts[path.parts.index(package) :]
            return (
                ".".join((*inside[:-1], path.stem)).replace(f".{path.stem}.{path.stem}", f".{path.stem}")
                + f".{function}"
            )
    return f"{path.stem}.{function}"


def run(index: CatalogIndex, texts: Sequence[str], label: str, rounds: int) -> list[dict]:
    out = []
    for scenario in SCENARIOS:
        for size in BATCHES:
            requests = requests_for(index, texts, scenario, rounds * size)
            batches = [requests[i : i + size] for i in range(0, len(requests), size)]
            ms = time_batches(index, batches)
            top = profile_batches(index, batches)
            row = {
                "catalog": label,
                "items": len(index.item_ids),
                "scenario": scenario,
                "batch": size,
                "p50_ms_per_request": percentile(ms, 50),
                "p95_ms_per_request": percentile(ms, 95),
                "top": top,
            }
            print(
                f"{label:10s} {scenario:17s} batch {size:2d}: p50 {row['p50_ms_per_request']:.2f} ms/request; "
                f"top: {top[0]['function']} {top[0]['share']:.0%}",
                flush=True,
            )
            out.append(row)
    return out


def to_markdown(results: dict) -> str:
    lines = [
        "# Where `rerank`'s time goes (`ranking.rank_many`, in process)",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}.",
        "",
        "| catalog | items | scenario | batch | p50 ms / request | p95 ms / request | the three functions owning the most time (share of self time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        top = "; ".join(f"`{t['function']}` {t['share']:.0%}" for t in row["top"][:3])
        lines.append(
            f"| {row['catalog']} | {row['items']:,} | {row['scenario']} | {row['batch']} | "
            f"{row['p50_ms_per_request']:.2f} | {row['p95_ms_per_request']:.2f} | {top} |"
        )
    lines += ["", "Top functions per row (self time under cProfile, ms per request):", ""]
    for row in results["rows"]:
        lines.append(
            f"- **{row['catalog']}, {row['scenario']}, batch {row['batch']}**: "
            + ", ".join(f"`{t['function']}` {t['ms_per_request']:.2f}" for t in row["top"])
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    labels = [f"{r['catalog']}\n{r['scenario']}, b{r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.9), 4))
    ax.bar(range(len(rows)), [r["p50_ms_per_request"] for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("ms per request (p50, untraced)")
    ax.set_title("rerank's ranking stage per request, by catalog, scenario and batch")
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", nargs="+", default=["bigbasket", "synthetic"], choices=["bigbasket", "synthetic"])
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic catalog size")
    parser.add_argument("--rounds", type=int, default=30, help="batches timed and profiled per row")
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=ROOT / "build" / "search_eval" / "embeddings.npy",
        help="BigBasket item embeddings (the search proxy's cache; embedded with the item tower if missing)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load = list(os.getloadavg())
    rows: list[dict] = []
    for name in args.catalogs:
        index, texts = bigbasket_index(args.embeddings) if name == "bigbasket" else synthetic_index(args.items)
        rows += run(index, texts, name, args.rounds)
        del index
    results = {"command": command_line("perf.bench_rerank_profile", argv or []), "machine": machine(load), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "bench_rerank_profile", results, to_markdown, plot)
    return results


if __name__ == "__main__":
    main()
