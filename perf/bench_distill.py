"""Distilled towers (not a test): speed and served quality of each student next to its teacher.

    .venv/bin/python perf/bench_distill.py

after ``aisle distill --student layers --out build/students/layers``, ``--student static --out
build/students/static`` and, for the larger teacher, ``--student static --teacher all-mpnet-base-v2
--out build/students/static-mpnet`` (their ``--workdir``, default ``build/distill``, holds the
teachers' ONNX and vector caches). In one run, under ONNX Runtime on CPU:

- query-encoder throughput at batch 1 and batch 32 (tokenized beforehand, one intra-op thread, as
  in ``bench_encoders.py``) for the teacher FP32 (all-MiniLM-L6-v2), the teacher CPU INT8 (``aisle
  export --precision int8``'s quantizer), the layers student FP32 and INT8, the static student and
  the static student of all-mpnet-base-v2 (and that teacher itself), in alternating rounds so load
  from other processes hits all alike; medians of rounds and ratios to the teacher FP32;
- ``recommend`` search throughput at concurrency 16 through a real tritonserver over the 27.5k
  BigBasket catalog, one repository whose query encoder is swapped per tower (the index stays the
  teacher's: the point of a distilled query tower), alternating rounds;
- indexing throughput of each item-tower option (tokenize + encode, batch 64, as ``aisle index``)
  over BigBasket item texts, and what that makes of a 54,667-title catalog;
- served search nDCG@10 (the served ``rank`` code, dense alone and hybrid) on the BigBasket proxy
  and on MovieLens title search: each query tower over the teacher's index, each student on both
  sides over its own index, BM25 alone as the baseline, and the all-mpnet-base-v2 student beside
  pretrained all-MiniLM-L6-v2.

Writes ``<out>/bench_distill.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

import loadgen
from aisle_export.catalog import read_catalog
from aisle_export.distill import read_record, resolve_teacher, teacher_fingerprint
from aisle_export.distill_gate import SYSTEMS, onnx_vectors, search_benchmarks, search_ndcg
from aisle_export.indexing import encode_texts, write_index
from aisle_export.precision_texts import RETRIEVAL_QUERIES
from aisle_export.search_eval import DEFAULT_CSV
from aisle_export.towers import LARGE_TEACHER, resolve_tower
from aisle_server.encoder import OnnxEncoder
from aisle_server.ranking import RankingConfig
from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer
from run_info import command_line, machine

TEACHER = "teacher FP32"
TARGETS = {"layers student": 2.5, "static student": 20.0}  # query-encoder throughput × teacher FP32 (the issue)
QUALITY_TARGETS = {"layers student": 0.97, "static student": 0.90}  # hybrid nDCG@10 retention (the issue)
INDEX_TARGET, TITLES = 5.0, 54_667  # a 54,667-title catalog indexed ≥ 5× faster than by the teacher FP32
BATCHES = (1, 32)
CONCURRENCY = 16
DENSE, HYBRID = list(SYSTEMS)
BM25 = {"BM25 alone": RankingConfig(search_mode="lexical")}


def int8_of(source: Path, directory: Path) -> Path:
    """``source``'s CPU INT8 graph (the ``--precision int8`` quantizer) as ``directory/model.onnx``."""
    from aisle_export.quantize import quantize_int8_dynamic

    if not (directory / "model.onnx").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        for name in (TOKENIZER_FILE, SETTINGS_FILE):
            shutil.copyfile(source / name, directory / name)
        quantize_int8_dynamic(source / "model.onnx", directory / "model.onnx")
    return directory


def throughput(encoder: OnnxEncoder, tokens: tuple[np.ndarray, np.ndarray], seconds: float) -> float:
    """Texts per second of ``encoder`` on pre-tokenized ``tokens`` (median of timed calls)."""
    ids, mask = tokens
    for _ in range(3):
        encoder(ids, mask)
    timings, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < 10:
        started = time.perf_counter()
        encoder(ids, mask)
        timings.append(time.perf_counter() - started)
    return len(ids) / statistics.median(timings)


def speed(dirs: dict[str, Path], rounds: int, seconds: float) -> dict:
    """Median texts/s per encoder and batch size over alternating rounds (each with its own tokenizer)."""
    queries = list(RETRIEVAL_QUERIES)
    encoders = {name: OnnxEncoder(d / "model.onnx", intra_op_threads=1) for name, d in dirs.items()}
    tokens = {
        name: {b: TextTokenizer.from_directory(d)((queries * 2)[:b]) for b in BATCHES} for name, d in dirs.items()
    }
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in BATCHES} for name in dirs}
    for _ in range(rounds):
        for batch in BATCHES:
            for name, encoder in encoders.items():
                samples[name][batch].append(throughput(encoder, tokens[name][batch], seconds))
        print({n: {b: round(v[-1], 1) for b, v in s.items()} for n, s in samples.items()}, flush=True)
    return {name: {f"batch_{b}": round(statistics.median(v), 1) for b, v in s.items()} for name, s in samples.items()}


def indexing(dirs: dict[str, Path], texts: list[str]) -> dict:
    """Items per second of each graph embedding ``texts`` as ``aisle index`` does (tokenizer included)."""
    out = {}
    for name, directory in dirs.items():
        encoder = OnnxEncoder(directory / "model.onnx", intra_op_threads=1)
        tokenizer = TextTokenizer.from_directory(directory)
        started = time.perf_counter()
        encode_texts(encoder, tokenizer, texts, 64)
        out[name] = round(len(texts) / (time.perf_counter() - started), 1)
        print(f"indexing {name}: {out[name]} items/s", flush=True)
    return out


def quality(teacher: Path, queries: dict[str, Path], both: dict[str, Path], benchmarks: dict) -> dict:
    """Per benchmark: nDCG@10 of BM25, of each query tower over the teacher's index, of each ``both`` tower
    on both sides over its own index; dense alone and hybrid (the served default)."""
    out: dict = {}
    for bench, (catalog_csv, relevant) in benchmarks.items():
        print(f"quality: {bench} ({len(relevant)} queries)", flush=True)
        rows = search_ndcg(teacher, {"BM25 alone": teacher}, catalog_csv, relevant, systems=BM25)
        rows = {"BM25 alone": {DENSE: None, HYBRID: rows["BM25 alone"]["BM25 alone"]}}
        rows |= search_ndcg(teacher, queries, catalog_csv, relevant)
        for name, directory in both.items():
            rows |= search_ndcg(directory, {name: directory}, catalog_csv, relevant)
        base = rows[TEACHER]
        out[bench] = {
            name: {
                "dense_ndcg@10": r[DENSE],
                "hybrid_ndcg@10": r[HYBRID],
                "hybrid_retention": round(r[HYBRID] / base[HYBRID], 4),
            }
            for name, r in rows.items()
        }
    return out


def bench_repository(
    repo: Path, query_tower: Path | None, item_tower: Path | None, catalog_csv: Path, vectors: np.ndarray
) -> Path:
    """A repository of these towers over the BigBasket catalog, its index written from ``vectors``
    (the item tower's, already computed): exported and indexed once, reused by later runs."""
    from aisle_export.pipeline import export_repository

    if not (repo / "rerank" / "1" / "index" / "manifest.json").is_file():
        shutil.rmtree(repo, ignore_errors=True)
        export_repository(
            repo,
            None if query_tower is None else str(query_tower),
            None if item_tower is None else str(item_tower),
            allow_below_gate=True,  # measured here whatever its gate said
        )
        write_index(read_catalog(catalog_csv), repo, source=catalog_csv, progress=False, embeddings=vectors)
    return repo


def served(repos: dict[str, tuple[Path, Path]], queries: list[str], rounds: int, seconds: float, logs: Path) -> dict:
    """``recommend`` search at concurrency 16 per tower: (repository, query graph swapped in), alternating
    rounds; with Triton's busy time per request of each stage (where the time goes)."""
    import tritonclient.grpc as grpcclient

    from aisle_server.tritonserver import TritonServer
    from bench_oversized_query import STAT_MODELS, per_request_ms, server_stats, stats_delta

    requests = [{"query": q, "k": 10} for q in queries]
    samples: dict[str, list[loadgen.LoadResult]] = {name: [] for name in repos}
    busy: dict[str, list[dict[str, float]]] = {name: [] for name in repos}
    for _ in range(rounds):
        for name, (repo, graph) in repos.items():
            target = repo / "query_encoder" / "1" / "model.onnx"
            if not target.samefile(graph):
                shutil.copyfile(graph, target)
            log = logs / f"tritonserver-{name.replace(' ', '_')}.log"
            with TritonServer(repo, log_file=log) as server, grpcclient.InferenceServerClient(server.grpc_url) as stats:
                before = server_stats(stats)
                result = loadgen.run(loadgen.make_triton(server.grpc_url), requests, CONCURRENCY, seconds, 3.0)
                delta = stats_delta(server_stats(stats), before)
            samples[name].append(result)
            busy[name].append({model: per_request_ms(delta[model])["busy_ms"] for model in STAT_MODELS})
            print(f"served {name}: {result.throughput:.1f} req/s, p50 {result.p50_ms:.1f} ms, {result.errors} errors")
    return {
        name: {
            "requests_per_s": round(statistics.median(r.throughput for r in runs), 1),
            "p50_ms": round(statistics.median(r.p50_ms for r in runs), 1),
            "p99_ms": round(statistics.median(r.p99_ms for r in runs), 1),
            "errors": sum(r.errors for r in runs),
            "rounds": [round(r.throughput, 1) for r in runs],
            "busy_ms_per_request": {
                model: round(statistics.median(b[model] for b in busy[name]), 2) for model in busy[name][0]
            },
        }
        for name, runs in samples.items()
    }


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=Path, default=Path("build/students/layers"))
    parser.add_argument("--static", type=Path, default=Path("build/students/static"))
    parser.add_argument("--large-static", type=Path, default=Path("build/students/static-mpnet"))
    parser.add_argument("--workdir", type=Path, default=Path("build/distill"), help="`aisle distill --workdir`")
    parser.add_argument("--products", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per encoder, batch and round")
    parser.add_argument("--served-rounds", type=int, default=2)
    parser.add_argument("--served-seconds", type=float, default=15.0, help="load window per tower and round")
    parser.add_argument("--items", type=int, default=2000, help="BigBasket item texts embedded per encoder")
    parser.add_argument("--out", type=Path, default=Path("perf/results"))
    args = parser.parse_args(argv)
    load_before = list(os.getloadavg())
    workdir = args.workdir
    teacher = workdir / f"tower-{teacher_fingerprint(resolve_tower(None))[:12]}"
    students = {"layers student": args.layers, "static student": args.static}
    large = args.large_static if (args.large_static / "model.onnx").is_file() else None
    graphs = {name: d / (read_record(d) or {}).get("onnx", ".") for name, d in students.items()}
    missing = [str(d / "model.onnx") for d in (teacher, *graphs.values()) if not (d / "model.onnx").is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: run `aisle distill` for both students first (see the docstring)")
    dirs = {
        TEACHER: teacher,
        "teacher INT8": int8_of(teacher, workdir / f"{teacher.name}-int8"),
        "layers student": graphs["layers student"],
        "layers student INT8": int8_of(graphs["layers student"], args.layers / "onnx-int8"),
        "static student": graphs["static student"],
    }
    both = {"layers student, both towers": graphs["layers student"], "static student, both towers": args.static}
    if large is not None:
        large_teacher = workdir / f"tower-{teacher_fingerprint(resolve_teacher(LARGE_TEACHER).query)[:12]}"
        dirs[f"{LARGE_TEACHER} FP32"] = large_teacher
        dirs[f"static student of {LARGE_TEACHER}"] = large
        both[f"{LARGE_TEACHER} (its own index)"] = large_teacher
        both[f"static student of {LARGE_TEACHER}, both towers"] = large
    result: dict = {"command": command_line("perf/bench_distill.py", sys.argv[1:] if argv is None else argv)}
    result["speed"] = speed(dirs, args.rounds, args.seconds)
    base = result["speed"][TEACHER]
    result["ratios"] = {name: {b: round(s[b] / base[b], 2) for b in base} for name, s in result["speed"].items()}

    benchmarks = search_benchmarks(args.products, workdir)
    catalog_csv, proxy_queries = benchmarks["search_bigbasket"]
    texts = read_catalog(catalog_csv).texts()
    result["catalog_items"], result["queries"] = len(texts), {b: len(q) for b, (_, q) in benchmarks.items()}
    sample = [texts[i] for i in np.random.default_rng(0).choice(len(texts), args.items, replace=False)]
    options = (TEACHER, "teacher INT8", "layers student", "static student", f"static student of {LARGE_TEACHER}")
    item_towers = {n: dirs[n] for n in options if n in dirs}  # the INT8 layers student is a query-side option
    result["indexing_items_per_s"] = indexing(item_towers, sample)
    result["index_ratios"] = {
        n: round(v / result["indexing_items_per_s"][TEACHER], 2) for n, v in result["indexing_items_per_s"].items()
    }
    result["quality"] = quality(teacher, {n: d for n, d in dirs.items() if LARGE_TEACHER not in n}, both, benchmarks)

    repo = bench_repository(
        workdir / "bench_repository", None, None, catalog_csv, onnx_vectors(teacher, texts, cache_dir=teacher)
    )
    repos = {
        name: (repo, dirs[name] / "model.onnx")
        for name in (TEACHER, "teacher INT8", "layers student", "layers student INT8", "static student")
    }
    if large is not None:
        large_repo = bench_repository(
            workdir / "bench_repository_static_mpnet",
            large,
            large,
            catalog_csv,
            onnx_vectors(large, texts, cache_dir=large),
        )
        repos[f"static student of {LARGE_TEACHER}"] = (large_repo, large_repo / "query_encoder" / "1" / "model.onnx")
    result["served_seconds"], result["rounds"] = args.served_seconds, args.served_rounds
    try:
        result["served"] = served(repos, list(proxy_queries), args.served_rounds, args.served_seconds, workdir)
    finally:
        shutil.copyfile(teacher / "model.onnx", repo / "query_encoder" / "1" / "model.onnx")
    for v in result["served"].values():
        v["served_ratio"] = round(v["requests_per_s"] / result["served"][TEACHER]["requests_per_s"], 2)

    bigbasket = result["quality"]["search_bigbasket"]
    result["targets"] = [
        *(
            {
                "what": f"{n} query-encoder throughput × teacher FP32, batch {b}",
                "value": result["ratios"][n][f"batch_{b}"],
                "target": f"≥ {v}×",
                "met": result["ratios"][n][f"batch_{b}"] >= v,
            }
            for n, v in TARGETS.items()
            for b in BATCHES
        ),
        *(
            {
                "what": f"{n} hybrid nDCG@10 retention, {bench}",
                "value": result["quality"][bench][n]["hybrid_retention"],
                "target": f"≥ {v}",
                "met": result["quality"][bench][n]["hybrid_retention"] >= v,
            }
            for n, v in QUALITY_TARGETS.items()
            for bench in result["quality"]
        ),
        {
            "what": "fastest item tower (static student) index speed × teacher FP32",
            "value": result["index_ratios"]["static student"],
            "target": f"≥ {INDEX_TARGET}×",
            "met": result["index_ratios"]["static student"] >= INDEX_TARGET,
        },
        {
            "what": "static student as item tower too, hybrid retention, BigBasket",
            "value": bigbasket["static student, both towers"]["hybrid_retention"],
            "target": "≥ 0.9",
            "met": bigbasket["static student, both towers"]["hybrid_retention"] >= 0.9,
        },
    ]
    result["machine"] = machine(load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distill.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_distill.md").write_text(to_markdown(result))
    plot(result, args.out / "bench_distill.png")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
