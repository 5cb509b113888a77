"""The learned ranker's training against the log's length: wall time and peak memory of its stage alone.

``aisle finetune``'s ranker step (``aisle_export.learn.ranker``: the gate's windows, fit and
scoring — ``validate`` — then the serving model's windows and fit — ``train_ranker``) on a
synthetic store (:mod:`perf.synthetic_log`, the files ``perf.bench_finetune_scale`` writes), in a
fresh subprocess per run whose resident memory is sampled every half second
(``perf.bench_finetune_scale.TreeSampler``); the subprocess also records its own peak
(``ru_maxrss``) after loading the log and after each step. The whole ``aisle finetune`` at 1M
events takes hours here, most of it in the towers and user encoders, whose memory does not grow with
the log; this isolates the step whose memory does. Item vectors are random unit vectors (the
towers' output only changes the values of the content features, not their number); the stack is
the hand-weighted one without a user encoder. The serving model is always trained, as if the gate
had passed: the worst case.

``--before REF`` also runs a git ref's code on the same store, side by side in one run.

    python -m perf.bench_ranker_training --events 1000000 --before HEAD~1

Writes ``perf/results/bench_ranker_training.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from perf.bench_finetune_scale import PACKAGES, TreeSampler, source_tree
from perf.lib.procstats import MB
from perf.lib.run_info import RESULTS, ROOT, command_line, machine
from perf.synthetic_log import write_store


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def stage(store: Path, out: Path, dim: int = 384) -> None:
    """The ranker step on ``store`` with whichever ``aisle_export`` is importable; writes ``out``."""
    from dataclasses import replace

    import numpy as np

    from aisle_contract import RankingConfig
    from aisle_export.data.splits import load_log
    from aisle_export.learn.ranker import RankerConfig, serving_history, train_ranker, validate

    started = time.perf_counter()
    data = load_log(store / "interactions.csv", store / "catalog.csv")
    vectors = np.random.default_rng(0).standard_normal((len(data.catalog), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    base, config = RankingConfig(user_encoder=False), RankerConfig()
    result = {"shoppers": len(set(data.split.train.user_id.tolist()))}
    result |= {"load_s": round(time.perf_counter() - started, 1), "peak_after_load_mb": _peak_mb()}
    started = time.perf_counter()
    gate = validate(data, vectors, base, config, None, True)
    result |= {"validate_s": round(time.perf_counter() - started, 1), "peak_after_validate_mb": _peak_mb()}
    result |= {"gate_fit": gate["fit"], "served": gate["served"], "exclude_history": gate["exclude_history"]}
    started = time.perf_counter()
    knobs = replace(base, exclude_history=gate["exclude_history"])
    history = serving_history(config, gate["exclude_history"])
    _, fit_report = train_ranker(data.catalog, vectors, data.split.train, knobs, config, None, True, history)
    result |= {"train_s": round(time.perf_counter() - started, 1), "peak_after_train_mb": _peak_mb()}
    result["serving_fit"] = fit_report
    out.write_text(json.dumps(result, indent=1, default=str))


def run(code: Path | None, store: Path, out: Path, timeout: float) -> dict:
    """:func:`stage` in a subprocess over ``code``'s packages (None: this tree's), its tree's peak RSS sampled."""
    tree = code or ROOT
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*(str(tree / p) for p in PACKAGES), str(ROOT)]),
        "OPENBLAS_NUM_THREADS": "1",
    }
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "perf.bench_ranker_training", "--stage", str(store), str(out / "stage.json")]
    started = time.perf_counter()
    with (out / "stage.log").open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        with TreeSampler(process.pid) as sampler:
            try:
                code_ = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()  # one process, no children of its own
                code_ = process.wait()
    result = {"wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": round(sampler.peak / MB, 1)}
    result["finished"] = code_ == 0
    if code_ == 0:
        result |= json.loads((out / "stage.json").read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", nargs=2, type=Path, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--before", metavar="REF", help="also run this git ref's code on the same store")
    p.add_argument("--timeout", type=float, default=7200.0, help="stop a run after this many s")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/aisle-finetune-scale"))
    p.add_argument("--name", default="bench_ranker_training")
    args = p.parse_args(argv)
    if args.stage:
        stage(*args.stage)
        return 0
    load_before = os.getloadavg()
    store = args.workdir / f"store-{args.items}-{args.events}"
    _, _, info = write_store(store, args.items, args.events)
    codes: dict[str, Path | None] = {"this tree": None}
    if args.before:
        codes[args.before] = source_tree(args.before, args.workdir)
    runs = {}
    for label, code in codes.items():
        print(f"{label}: the ranker step on {args.events:,} events …", flush=True)
        out = args.workdir / f"ranker-{'new' if code is None else code.name}-{args.items}-{args.events}"
        runs[label] = run(code, store, out, args.timeout)
        print(json.dumps(runs[label], default=str)[:600], flush=True)
    rows = [
        "| code | events | shoppers | finished | wall s | peak RSS (sampled) | after load | after validate | after train |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in runs.items():
        rows.append(
            f"| {label} | {args.events:,} | {info['users']:,} | {'yes' if r['finished'] else 'no'} | {r['wall_s']} "
            f"| {r['peak_rss_mb']:.0f} MB | {r.get('peak_after_load_mb', '–')} | {r.get('peak_after_validate_mb', '–')} "
            f"| {r.get('peak_after_train_mb', '–')} |"
        )
    report = {"items": args.items, "events": args.events, "store": info, "runs": runs, "machine": machine(load_before)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1, default=str))
    text = [
        "## The learned ranker's training step against the log's length",
        "",
        f"Synthetic store: {args.items:,} items, {args.events:,} events. The ranker step of `aisle finetune` alone "
        "(gate: windows, fit, scoring; then the serving model), in a fresh process; peak RSS sampled every 0.5 s "
        "and the process's own peak (MB) after each step.",
        "",
        *rows,
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {json.dumps(report['machine'])}",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(text) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
