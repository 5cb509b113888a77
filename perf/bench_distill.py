"""Distilled query towers (not a test): speed and served quality of each student next to its teacher.

    .venv/bin/python perf/bench_distill.py [--layers build/students/layers] [--static build/students/static]

after ``aisle distill --student layers --out build/students/layers`` and ``--student static --out
build/students/static`` (their ``--workdir``, default ``build/distill``, holds the teacher's ONNX).
In one run, under ONNX Runtime on CPU with one intra-op thread each (as the served encoders run):

- query-encoder throughput at batch 1 and batch 32 (tokenized beforehand, as in
  ``bench_encoders.py``) for the teacher FP32, the teacher CPU INT8 (``aisle export --precision
  int8``'s quantizer), the layers student and the static student, in alternating rounds so load
  from other processes hits all alike; medians of rounds and ratios to the teacher FP32;
- indexing throughput (tokenize + encode, batch 64, as ``aisle index``) over BigBasket item texts;
- served quality from each student's gate (``distill.json``): BigBasket proxy nDCG@10 over the
  teacher's index, dense alone and hybrid, and retention vs the teacher; the INT8 teacher's query
  tower is scored the same way here.

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

from aisle_export.distill import GATE_SYSTEM, SERVED_SYSTEM, read_record, teacher_fingerprint
from aisle_export.distill_gate import search_figures
from aisle_export.indexing import encode_texts
from aisle_export.precision_texts import RETRIEVAL_QUERIES
from aisle_export.search_eval import DEFAULT_CSV, write_proxy_catalog
from aisle_export.towers import resolve_tower
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer
from run_info import command_line, machine

TARGETS = {
    "layers student": 2.5,
    "layers student INT8": 2.5,
    "static student": 20.0,
}  # throughput vs teacher FP32, from the issue
BATCHES = (1, 32)


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
    """Median texts/s per encoder and batch size over alternating rounds."""
    tokenizer = TextTokenizer.from_directory(dirs["teacher FP32"])
    queries = list(RETRIEVAL_QUERIES)
    encoders = {name: OnnxEncoder(d / "model.onnx", intra_op_threads=1) for name, d in dirs.items()}
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in BATCHES} for name in dirs}
    for _ in range(rounds):
        for batch in BATCHES:
            tokens = tokenizer((queries * 2)[:batch])
            for name, encoder in encoders.items():
                samples[name][batch].append(throughput(encoder, tokens, seconds))
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


def quality(teacher: Path, int8: dict[str, Path], students: dict[str, Path], workdir: Path, products: Path) -> dict:
    """BigBasket nDCG@10 over the teacher's index: the teacher, the INT8 query towers, each student's gate."""
    rows = {}
    for name, directory in int8.items():
        figures = search_figures(teacher, directory, products, workdir)
        rows["teacher FP32"], rows[name] = figures["teacher"], figures["student"]
    for name, directory in students.items():
        record = read_record(directory) or {}
        search = record.get("gate", {}).get("search_bigbasket")
        if search:
            rows[name] = search["student"]
    base = rows["teacher FP32"]
    return {
        name: {
            "dense_ndcg@10": r[GATE_SYSTEM],
            "hybrid_ndcg@10": r[SERVED_SYSTEM],
            "dense_retention": round(r[GATE_SYSTEM] / base[GATE_SYSTEM], 4),
            "hybrid_retention": round(r[SERVED_SYSTEM] / base[SERVED_SYSTEM], 4),
        }
        for name, r in rows.items()
    }


def to_markdown(result: dict) -> str:
    lines = [
        "# Distilled query towers vs the teacher (all-MiniLM-L6-v2)",
        "",
        f"`{result['command']}` — {result['machine']['cpus']} CPUs, load {result['machine']['load_before']} → "
        f"{result['machine']['load_after']}; ONNX Runtime CPU, 1 intra-op thread per encoder.",
        "",
        "| query tower | texts/s batch 1 | × teacher | texts/s batch 32 | × teacher | index items/s | "
        "dense nDCG@10 | retention | hybrid nDCG@10 | retention |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["speed"].items():
        q = result["quality"].get(name, {})
        r = result["ratios"][name]
        lines.append(
            f"| {name} | {s['batch_1']} | {r['batch_1']}× | {s['batch_32']} | {r['batch_32']}× | "
            f"{result['indexing_items_per_s'][name]} | {q.get('dense_ndcg@10', '–')} | {q.get('dense_retention', '–')} | "
            f"{q.get('hybrid_ndcg@10', '–')} | {q.get('hybrid_retention', '–')} |"
        )
    lines += [
        "",
        "Targets (batch-32 throughput vs teacher FP32): " + ", ".join(f"{k} ≥ {v}×" for k, v in TARGETS.items()),
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["speed"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(names))
    for offset, batch in ((-0.2, "batch_1"), (0.2, "batch_32")):
        left.bar(x + offset, [result["ratios"][n][batch] for n in names], 0.4, label=batch.replace("_", " "))
    left.set_yscale("log")
    left.set_xticks(x, names, rotation=15)
    left.set_ylabel("query-encoder throughput × teacher FP32")
    left.legend()
    quality = result["quality"]
    for offset, key in ((-0.2, "dense_ndcg@10"), (0.2, "hybrid_ndcg@10")):
        right.bar(x + offset, [quality.get(n, {}).get(key, 0) for n in names], 0.4, label=key)
    right.set_xticks(x, names, rotation=15)
    right.set_ylabel("BigBasket proxy nDCG@10 (teacher's index)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=Path, default=Path("build/students/layers"))
    parser.add_argument("--static", type=Path, default=Path("build/students/static"))
    parser.add_argument("--workdir", type=Path, default=Path("build/distill"), help="`aisle distill --workdir`")
    parser.add_argument("--products", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per encoder, batch and round")
    parser.add_argument("--items", type=int, default=2000, help="BigBasket item texts embedded per encoder")
    parser.add_argument("--out", type=Path, default=Path("perf/results"))
    args = parser.parse_args(argv)
    load_before = list(os.getloadavg())
    teacher = args.workdir / f"tower-{teacher_fingerprint(resolve_tower(None))[:12]}"
    students = {"layers student": args.layers, "static student": args.static}
    student_onnx = {name: d / (read_record(d) or {}).get("onnx", ".") for name, d in students.items()}
    missing = [str(d / "model.onnx") for d in (teacher, *student_onnx.values()) if not (d / "model.onnx").is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: run `aisle distill` for both students first (see the docstring)")
    int8 = {
        "teacher INT8": int8_of(teacher, args.workdir / f"{teacher.name}-int8"),
        "layers student INT8": int8_of(student_onnx["layers student"], args.layers / "onnx-int8"),
    }
    dirs = {"teacher FP32": teacher, "teacher INT8": int8["teacher INT8"], **student_onnx}
    dirs["layers student INT8"] = int8["layers student INT8"]
    result: dict = {"command": command_line("perf/bench_distill.py", sys.argv[1:] if argv is None else argv)}
    result["speed"] = speed(dirs, args.rounds, args.seconds)
    base = result["speed"]["teacher FP32"]
    result["ratios"] = {name: {b: round(s[b] / base[b], 2) for b in base} for name, s in result["speed"].items()}
    catalog_csv, _ = write_proxy_catalog(args.products, args.workdir / "bigbasket_catalog.csv")
    from aisle_export.catalog import read_catalog

    texts = read_catalog(catalog_csv).texts()
    texts = [texts[i] for i in np.random.default_rng(0).choice(len(texts), args.items, replace=False)]
    result["indexing_items_per_s"] = indexing(dirs, texts)
    result["quality"] = quality(teacher, int8, students, args.workdir, args.products)
    result["targets_batch_32"] = {
        k: {"target": v, "met": result["ratios"][k]["batch_32"] >= v} for k, v in TARGETS.items()
    }
    result["machine"] = machine(load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distill.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_distill.md").write_text(to_markdown(result))
    plot(result, args.out / "bench_distill.png")
    print(to_markdown(result))


if __name__ == "__main__":
    main()
