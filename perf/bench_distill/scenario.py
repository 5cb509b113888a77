"""What ``python -m perf.bench_distill`` runs (see :mod:`perf.bench_distill`): encoder speed, indexing
speed, served quality and served search throughput of each tower; returns the result dict that
:mod:`perf.bench_distill.report` renders."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from aisle_export.build.precision_texts import RETRIEVAL_QUERIES
from aisle_export.build.repository import serve_onnx_file
from aisle_export.core.encoding import encode_texts
from aisle_export.core.spaces import read_record, teacher_fingerprint
from aisle_export.core.towers import LARGE_TEACHER, resolve_tower
from aisle_export.data.catalog import read_catalog
from aisle_export.distill.gate import SYSTEMS, onnx_vectors, search_benchmarks, search_ndcg
from aisle_export.distill.pipeline import resolve_teacher
from aisle_export.judge.search import DEFAULT_CSV
from aisle_server.encoder import OnnxEncoder
from aisle_server.ranking import RankingConfig
from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer
from perf.lib import loadgen, repository, triton_stats
from perf.lib.run_info import machine
from perf.lib.timing import call_times

PRODUCTS = DEFAULT_CSV  # the BigBasket products (``--products``)
TEACHER = "teacher FP32"
TARGETS = {"layers student": 2.5, "static student": 20.0}  # query-encoder throughput × teacher FP32 (the issue)
QUALITY_TARGETS = {"layers student": 0.97, "static student": 0.90}  # hybrid nDCG@10 retention (the issue)
INDEX_TARGET, TITLES = 5.0, 54_667  # a 54,667-title catalog indexed ≥ 5× faster than by the teacher FP32
BATCHES = (1, 32)
CONCURRENCY = 16
#: Models whose busy time per served request is reported, in this order.
STAT_MODELS = ("tokenizer", "rerank", "query_encoder", "recommend")
DENSE, HYBRID = list(SYSTEMS)
BM25 = {"BM25 alone": RankingConfig(search_mode="lexical")}


def int8_of(source: Path, directory: Path) -> Path:
    """``source``'s CPU INT8 graph (the ``--precision int8`` quantizer) as ``directory/model.onnx``."""
    from aisle_export.build.quantize import quantize_int8_dynamic

    if not (directory / "model.onnx").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        for name in (TOKENIZER_FILE, SETTINGS_FILE):
            shutil.copyfile(source / name, directory / name)
        quantize_int8_dynamic(source / "model.onnx", directory / "model.onnx")
    return directory


def throughput(encoder: OnnxEncoder, tokens: tuple[np.ndarray, np.ndarray], seconds: float) -> float:
    """Texts per second of ``encoder`` on pre-tokenized ``tokens`` (median of timed calls)."""
    ids, mask = tokens
    return len(ids) / statistics.median(call_times(lambda: encoder(ids, mask), seconds))


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


def served(repos: dict[str, tuple[Path, Path]], queries: list[str], rounds: int, seconds: float, logs: Path) -> dict:
    """``recommend`` search at concurrency 16 per tower: (repository, query graph swapped in), alternating
    rounds; with Triton's busy time per request of each stage (where the time goes)."""
    import tritonclient.grpc as grpcclient

    from aisle_server.tritonserver import TritonServer

    requests = [{"query": q, "k": 10} for q in queries]
    samples: dict[str, list[loadgen.LoadResult]] = {name: [] for name in repos}
    busy: dict[str, list[dict[str, float]]] = {name: [] for name in repos}
    for _ in range(rounds):
        for name, (repo, graph) in repos.items():
            target = repo / "query_encoder" / "1" / "model.onnx"
            if not target.samefile(graph):
                shutil.copyfile(graph, target)
            serve_onnx_file(repo, "query_encoder", "model.onnx")  # the graph copied in, not the export's choice
            log = logs / f"tritonserver-{name.replace(' ', '_')}.log"
            with TritonServer(repo, log_file=log) as server, grpcclient.InferenceServerClient(server.grpc_url) as stats:
                before = triton_stats.snapshot(stats, STAT_MODELS)
                result = loadgen.run(loadgen.make_triton(server.grpc_url), requests, CONCURRENCY, seconds, 3.0)
                delta = triton_stats.diff(triton_stats.snapshot(stats, STAT_MODELS), before)
            samples[name].append(result)
            busy[name].append({model: triton_stats.per_request_ms(delta[model])["busy_ms"] for model in STAT_MODELS})
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


def run(args: argparse.Namespace, command: str) -> dict:
    """Every measurement of the module docstring, in one run; the result dict (``command``: as typed)."""
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
    result: dict = {"command": command}
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

    # one repository per item tower over the BigBasket catalog, its index written from that tower's vectors
    repo = repository.ensure(
        workdir / "bench_repository",
        catalog_csv,
        embeddings=onnx_vectors(teacher, texts, cache_dir=teacher),
        allow_below_gate=True,  # measured here whatever its gate said
    )
    repos = {
        name: (repo, dirs[name] / "model.onnx")
        for name in (TEACHER, "teacher INT8", "layers student", "layers student INT8", "static student")
    }
    if large is not None:
        large_repo = repository.ensure(
            workdir / "bench_repository_static_mpnet",
            catalog_csv,
            query_tower=large,
            item_tower=large,
            embeddings=onnx_vectors(large, texts, cache_dir=large),
            allow_below_gate=True,
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
    return result
