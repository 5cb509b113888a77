"""The learned ranker's validation gate under training variants (not a benchmark: a quality study).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m perf.study_ranker_gate --variant current \\
        [--retail build/online_retail] [--workdir build] [--cache DIR] [--out perf/results]

Runs ``aisle_export.learn.ranker.validate`` — the gate ``aisle finetune`` applies: a ranker trained
on rolling windows before the validation cut, its history choice, and its paired gain over the
hand-weighted stack on the validation shoppers — on MovieLens-100K (default) or the converted
Online Retail log (``--retail``), over the untrained stack's knobs (pretrained towers, recency mean,
log signals; ``RankingConfig(user_encoder=False)``, what ``aisle evaluate`` tuned on both logs).
``--variant`` picks the training: ``current`` (``RankerConfig()``), ``hidden`` (a second model for
feeds served with history hidden, ``hidden_model=True``), ``windows`` (11 training windows at
quantiles 0.30 … 0.80 instead of 5), ``fast`` (learning rate 0.1 instead of 0.05: the current fits
stop at their 300-round cap, still improving on the stop windows, and more trees cost serving time),
``small`` (15 leaves, ≥ 100 rows per leaf instead of 31 and 50: smaller trees against drift). Writes ``<out>/study_ranker_gate_<log>_<variant>.json``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `aisle serve` runs Triton; before numpy loads OpenBLAS
import json
import sys
import time
from pathlib import Path

import numpy as np

from perf.lib.run_info import RESULTS, command_line, machine

WINDOWS = tuple(round(q, 2) for q in np.arange(0.30, 0.801, 0.05))


def variants():
    from aisle_export.learn.ranker import RankerConfig

    return {
        "current": RankerConfig(),
        "hidden": RankerConfig(hidden_model=True),
        "windows": RankerConfig(train_cuts=WINDOWS),
        "fast": RankerConfig(learning_rate=0.1),
        "small": RankerConfig(num_leaves=15, min_data_in_leaf=100),
    }


def test_cut(data, vectors: np.ndarray, base, config) -> dict:
    """``aisle evaluate --ranker``'s rows (gate on validation, served model trained on the training
    period) on the test cut, paired against the hand-weighted stack of the same knobs."""
    from aisle_export.judge.feed import Reference, score
    from aisle_export.judge.rankers import aisle_ranker
    from aisle_export.judge.statistics import bootstrap_delta
    from aisle_export.learn.ranker import evaluation_rows, feature_index

    rows, extra = evaluation_rows(data, vectors, base, config, progress=True)
    split = data.split
    index = feature_index(data.catalog, vectors, split)
    rows = [("hand-weighted (Aisle default knobs, log signals)", aisle_ranker(index, split, base)), *rows]
    reference = Reference.of(index, split)
    views = {"all": split.next_items, "new": split.targets}
    values = {}
    for name, ranker in rows:
        lists = {user: ranker(user, 10) for user in split.users}
        values[name] = {
            view: score(lambda u, k, lists=lists: lists[u][:k], split, reference, (10,), beyond=False, targets=t)[
                "per_user"
            ]["ndcg@10"]
            for view, t in views.items()
        }
    hand = values[rows[0][0]]
    return {
        "gate": {k: v for k, v in extra["gate"].items() if k != "fit"},
        "rows": {
            name: {
                view: {"ndcg@10": float(np.mean(v)), "vs_hand_weighted": bootstrap_delta(hand[view], v)}
                for view, v in by_view.items()
            }
            for name, by_view in values.items()
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.study_ranker_gate", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("current", "hidden", "windows", "fast", "small"), default="current")
    parser.add_argument("--workdir", type=Path, default=Path("build"), help="where MovieLens-100K is fetched")
    parser.add_argument("--retail", type=Path, help="the converted Online Retail log instead of MovieLens-100K")
    parser.add_argument("--cache", type=Path, help="keep the pretrained embeddings here between runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--test", action="store_true", help="also train as `aisle evaluate --ranker` does and score the test cut"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)

    from aisle_contract import RankingConfig
    from aisle_export.core.encoding import embed_catalog
    from aisle_export.data.movielens import movielens_files
    from aisle_export.data.splits import load_log
    from aisle_export.learn.ranker import validate

    started, load_before = time.perf_counter(), os.getloadavg()
    log = "online_retail" if args.retail else "movielens"
    files = (args.retail / "interactions.csv", args.retail / "catalog.csv") if args.retail else None
    data = load_log(*(files or movielens_files(args.workdir)))
    cached = None if args.cache is None else args.cache / f"{log}_{len(data.catalog)}.npy"
    if cached is not None and cached.exists():
        vectors = np.load(cached)
    else:
        vectors = embed_catalog(data.catalog.texts(), None, True, "embedding items (pretrained)")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, vectors)
    config = variants()[args.variant]
    gate = validate(data, vectors, RankingConfig(user_encoder=False), config, progress=True)
    report = {
        "command": command_line("perf.study_ranker_gate", argv),
        "machine": machine(load_before),
        "log": log,
        "variant": args.variant,
        "ranker_config": {
            "train_cuts": list(config.train_cuts),
            "hidden_model": config.hidden_model,
            "learning_rate": config.learning_rate,
            "num_leaves": config.num_leaves,
            "min_data_in_leaf": config.min_data_in_leaf,
        },
        "gate": gate,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.test:
        report["test"] = test_cut(data, vectors, RankingConfig(user_encoder=False), config)
        report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"study_ranker_gate_{log}_{args.variant}.json"
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    gain = gate["vs_hand_weighted"]["all"]
    print(
        f"{log} {args.variant}: ranker vs hand-weighted (all next items) {gain['delta']:+.4f} "
        f"[{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}], history "
        f"{'hidden' if gate['exclude_history'] else 'shown'}, served {gate['served']} → {path}"
    )
    return report


if __name__ == "__main__":
    main()
