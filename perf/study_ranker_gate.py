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
``small`` (15 leaves, ≥ 100 rows per leaf instead of 31 and 50: smaller trees against drift);
``pooled`` (the gate judged at five cuts of the period, 0.60 … 0.80, each with a ranker trained only
on the windows before it, the shopper-cut pairs pooled and bootstrapped over shoppers: one cut of
≈ 100 MovieLens shoppers is too few to gate), and on top of it ``pooled_decay`` (window *i* of *n*
weighted 0.7^(n−1−i): recent windows count more), ``pooled_graded`` (a relevant candidate labelled
by how often the shopper has it after the cut, 1 … 3) and ``pooled_small`` (``small``'s trees);
``wide_small``: ``small``'s trees gated at ten cuts, 0.35 … 0.80 (more distinct shoppers);
``base1``/``base3``: the boosting starts from the hand-weighted score (``base_strength`` 1 or 3:
one typical within-feed spread of it is 1 or 3 units of LambdaMART's score) instead of from nothing;
``stationary``: the trees may not split on the features that grow with the log's length
(:data:`GROWING`), and ``stationary_base1`` both; ``pooled_base1`` and ``pooled_stationary``: the
pooled gate over ``base1``'s and ``stationary``'s training. ``current`` is monotone in the stack's
own score and place (``RankerConfig.monotone``); ``unconstrained`` is the training before it, and
``monotone_sources`` constrains every source's score and rank too (:data:`SOURCE_SIGNS`);
``depth100`` scores (and trains on) the hand-weighted top 100 and the buy-again candidates instead
of the top 150 (``RankerConfig.depth``): a third fewer rows for the served trees to walk;
``large``: 63 leaves instead of 31, bigger trees the cheaper compiled form (lleaves) could afford;
``plain``: the training before the seventeenth session: split thresholds searched, not drawn at
random (``extra_trees=False``), and no ``history_repeat_share`` (reports written before that
session ran so under every variant's name);
``xendcg``: LightGBM's ``rank_xendcg`` objective instead of ``lambdarank``; ``no_repeat_share``:
the trees may not split on ``history_repeat_share`` (the feature the seventeenth session added).
``--finetuned DIR`` gates over the user-encoder stack of an ``aisle finetune`` output instead (its
item tower's embeddings, its validation user encoder and the knobs validation chose for that stack),
as ``aisle finetune`` does before it picks stack and ranker together.
``--seed`` sets LightGBM's (bagging and feature sampling) to see how much of a gate's verdict is luck.
``--test`` adds the test cut: the ranker rows, the stack the gate serves, the hand-weighted stack
and popularity, co-occurrence, GP-TopFreq and TIFU-KNN, on all next items and on new items.
Writes ``<out>/study_ranker_gate_<log>[_user_encoder]_<variant>[_seed<N>].json``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `aisle serve` runs Triton; before numpy loads OpenBLAS
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from perf.lib.run_info import RESULTS, command_line, machine

WINDOWS = tuple(round(q, 2) for q in np.arange(0.30, 0.801, 0.05))


GATE_CUTS = (0.6, 0.65, 0.7, 0.75, 0.8)
WIDE_GATE_CUTS = tuple(round(q, 2) for q in np.arange(0.35, 0.801, 0.05))
VARIANTS = (
    "current",
    "hidden",
    "windows",
    "fast",
    "small",
    "pooled",
    "pooled_decay",
    "pooled_graded",
    "pooled_small",
    "wide_small",
    "base1",
    "base3",
    "stationary",
    "stationary_base1",
    "pooled_base1",
    "pooled_stationary",
    "unconstrained",
    "monotone_sources",
    "depth100",
    "large",
    "plain",
    "xendcg",
    "no_repeat_share",
)
#: ``monotone_sources``: besides the stack's score and place, every source's score rises and rank falls
SOURCE_SIGNS = (
    ("cosine", 1),
    ("cosine_rank", -1),
    ("cooccurrence", 1),
    ("cooccurrence_raw", 1),
    ("cooccurrence_rank", -1),
    ("popularity_prior", 1),
    ("popularity_rank", -1),
)
#: the features that grow with the log's length (``stationary``: the trees may not split on them)
GROWING = ("events_all", "buyers", "first_seen_days", "item_age_days", "cooccurrence_raw")


def variants():
    from aisle_export.learn.ranker import RankerConfig

    pooled = RankerConfig(gate_cuts=GATE_CUTS)
    return {
        "current": RankerConfig(),
        "hidden": RankerConfig(hidden_model=True),
        "windows": RankerConfig(train_cuts=WINDOWS),
        "fast": RankerConfig(learning_rate=0.1),
        "small": RankerConfig(num_leaves=15, min_data_in_leaf=100),
        "pooled": pooled,
        "pooled_decay": replace(pooled, window_decay=0.7),
        "pooled_graded": replace(pooled, graded=True),
        "pooled_small": replace(pooled, num_leaves=15, min_data_in_leaf=100),
        "wide_small": RankerConfig(gate_cuts=WIDE_GATE_CUTS, num_leaves=15, min_data_in_leaf=100),
        "base1": RankerConfig(base_strength=1.0),
        "base3": RankerConfig(base_strength=3.0),
        "stationary": RankerConfig(ignored_features=GROWING),
        "stationary_base1": RankerConfig(ignored_features=GROWING, base_strength=1.0),
        "pooled_base1": replace(pooled, base_strength=1.0),
        "pooled_stationary": replace(pooled, ignored_features=GROWING),
        "unconstrained": RankerConfig(monotone=()),
        "monotone_sources": RankerConfig(monotone=RankerConfig().monotone + SOURCE_SIGNS),
        "depth100": RankerConfig(depth=100),
        "large": RankerConfig(num_leaves=63),
        "plain": RankerConfig(extra_trees=False, ignored_features=("history_repeat_share",)),
        "xendcg": RankerConfig(objective="rank_xendcg"),
        "no_repeat_share": RankerConfig(ignored_features=("history_repeat_share",)),
    }


def test_cut(data, vectors: np.ndarray, base, config, gate: dict) -> dict:
    """``aisle evaluate --ranker``'s rows (``gate``: measured on validation; the served model trained
    on the training period) on the test cut, paired against the hand-weighted stack of the same
    knobs (the stack served today), beside the baselines ``aisle evaluate`` shows."""
    from aisle_export.index.log_signals import split_signals
    from aisle_export.index.writing import served_index
    from aisle_export.judge.feed import Reference, score
    from aisle_export.judge.rankers import (
        aisle_ranker,
        cooccurrence_ranker,
        gp_topfreq_ranker,
        popularity_ranker,
        tifu_knn_ranker,
    )
    from aisle_export.judge.statistics import bootstrap_delta
    from aisle_export.learn.ranker import evaluation_rows

    rows, extra = evaluation_rows(data, vectors, base, config, progress=True, gate=gate)
    split = data.split
    index = served_index(data.catalog, vectors, split_signals(split, source="training period"))
    rows = [
        ("hand-weighted (Aisle default knobs, log signals)", aisle_ranker(index, split, base)),
        ("popularity (training period)", popularity_ranker(index, split)),
        ("co-occurrence (item-item cosine, then popularity)", cooccurrence_ranker(index, split)),
        ("GP-TopFreq (own most frequent items, then popularity)", gp_topfreq_ranker(index, split)),
        ("TIFU-KNN (decayed own frequency + neighbours)", tifu_knn_ranker(index, split)),
        *rows,
    ]
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
    served = values[rows[-1][0]]
    return {
        "served_row": rows[-1][0],
        "serving_fit": extra["serving_fit"],
        "rows": {
            name: {
                view: {
                    "ndcg@10": float(np.mean(v)),
                    "vs_hand_weighted": bootstrap_delta(values[rows[0][0]][view], v),
                    "served_vs_this": bootstrap_delta(v, served[view]),
                }
                for view, v in by_view.items()
            }
            for name, by_view in values.items()
        },
    }


def item_embeddings(data, tower: Path | None, cache: Path | None, name: str, label: str) -> np.ndarray:
    """The catalog embedded by ``tower`` (None: the pretrained one), read from ``cache``/``name``
    when an earlier run wrote it there (``cache`` None: not kept)."""
    from aisle_export.core.encoding import embed_catalog

    cached = None if cache is None else cache / name
    if cached is not None and cached.exists():
        return np.load(cached)
    vectors = embed_catalog(data.catalog.texts(), tower, True, label)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors)
    return vectors


def user_encoder_stack(finetuned: Path, data, cache: Path | None, log: str):
    """The item embeddings of ``finetuned``'s trained towers (cached under ``cache``), the knobs
    validation chose for its user-encoder stack and its validation user encoder: what
    ``aisle finetune`` gates the ranker over for that stack."""
    from aisle_contract import RankingConfig
    from aisle_export.core.handoff import ITEM_TOWER, RANKING_FILE
    from aisle_export.learn.finetune import VALIDATION_ENCODER
    from aisle_server.user_encoder import UserEncoder

    name = f"{log}_{len(data.catalog)}_{finetuned.name}.npy"
    vectors = item_embeddings(data, finetuned / ITEM_TOWER, cache, name, "embedding items (trained)")
    knobs = json.loads((finetuned / RANKING_FILE).read_text())["user_encoder"]
    return vectors, replace(RankingConfig(), **knobs), UserEncoder.load(finetuned / VALIDATION_ENCODER)


def plot(results: Path) -> Path:
    """``study_ranker_gate.png`` from every ``study_ranker_gate_*.json`` under ``results``: per log
    and variant, the gate's validation interval (the ranker as the gate would serve it vs the
    hand-weighted stack) and, where measured, the same ranker's interval on the test cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [json.loads(p.read_text()) for p in sorted(results.glob("study_ranker_gate_*.json"))]
    reports = [r for r in reports if "variant" in r and "gate" in r]
    logs = sorted({r["log"] for r in reports})
    rows = max(sum(r["log"] == log for r in reports) for log in logs)
    fig, axes = plt.subplots(1, len(logs), figsize=(6.5 * len(logs), max(4.5, 1.5 + 0.24 * rows)), squeeze=False)
    for ax, log in zip(axes[0], logs):
        mine = [r for r in reports if r["log"] == log]
        tested = False
        for i, r in enumerate(mine):
            gain = r["gate"]["vs_hand_weighted"]["all"]
            ax.errorbar(
                gain["delta"],
                i + 0.1,
                xerr=[[gain["delta"] - gain["ci95"][0]], [gain["ci95"][1] - gain["delta"]]],
                fmt="o",
                color="tab:blue",
                label="validation gate" if i == 0 else None,
            )
            if "test" in r:
                shown = "shown" if not r["gate"]["exclude_history"] else "hidden"
                row = next(v for k, v in r["test"]["rows"].items() if k.startswith("learned ranker") and shown in k)
                t = row["all"]["vs_hand_weighted"]
                ax.errorbar(
                    t["delta"],
                    i - 0.1,
                    xerr=[[t["delta"] - t["ci95"][0]], [t["ci95"][1] - t["delta"]]],
                    fmt="s",
                    color="tab:orange",
                    label="test cut (the same ranker)" if not tested else None,
                )
                tested = True
        ax.axvline(0, color="grey", lw=0.8)
        labels = [
            ("user encoder: " if r.get("stack", "").startswith("user encoder") else "")
            + r["variant"]
            + (f" (seed {r['ranker_config']['seed']})" if r.get("ranker_config", {}).get("seed") else "")
            for r in mine
        ]
        ax.set_yticks(range(len(mine)), labels)
        ax.set_ylim(-0.6, len(mine) - 0.4)
        ax.set_xlabel("ΔnDCG@10, ranker − hand-weighted, all next items (95% CI)")
        ax.set_title(log, pad=24)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)  # off the rows
    fig.tight_layout()
    path = results / "study_ranker_gate.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.study_ranker_gate", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="current")
    parser.add_argument("--workdir", type=Path, default=Path("build"), help="where MovieLens-100K is fetched")
    parser.add_argument("--retail", type=Path, help="the converted Online Retail log instead of MovieLens-100K")
    parser.add_argument("--cache", type=Path, help="keep the pretrained embeddings here between runs")
    parser.add_argument(
        "--finetuned", type=Path, help="an `aisle finetune` output: gate over its user-encoder stack instead"
    )
    parser.add_argument("--seed", type=int, default=0, help="LightGBM's seed (bagging, feature sampling)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--test", action="store_true", help="also train as `aisle evaluate --ranker` does and score the test cut"
    )
    parser.add_argument(
        "--plot", action="store_true", help="only draw study_ranker_gate.png from the reports already in --out"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.finetuned and args.test:
        parser.error("--test judges the untrained stack's ranker: leave out --finetuned")
    if args.plot:
        print(f"wrote {plot(args.out)}")
        return {}

    from aisle_contract import RankingConfig
    from aisle_export.data.movielens import movielens_files
    from aisle_export.data.splits import load_log
    from aisle_export.learn.ranker import validate

    started, load_before = time.perf_counter(), os.getloadavg()
    log = "online_retail" if args.retail else "movielens"
    files = (args.retail / "interactions.csv", args.retail / "catalog.csv") if args.retail else None
    data = load_log(*(files or movielens_files(args.workdir)))
    config = replace(variants()[args.variant], seed=args.seed)
    if args.finetuned:
        vectors, base, encoder = user_encoder_stack(args.finetuned, data, args.cache, log)
    else:  # the untrained stack: the pretrained towers' embeddings
        name = f"{log}_{len(data.catalog)}.npy"
        vectors = item_embeddings(data, None, args.cache, name, "embedding items (pretrained)")
        base, encoder = RankingConfig(user_encoder=False), None
    gate = validate(data, vectors, base, config, encoder, progress=True)
    report = {
        "command": command_line("perf.study_ranker_gate", argv),
        "machine": machine(load_before),
        "log": log,
        "variant": args.variant,
        "stack": f"user encoder of {args.finetuned}" if args.finetuned else "pretrained towers + mean (untrained)",
        "ranker_config": {
            "train_cuts": list(config.train_cuts),
            "hidden_model": config.hidden_model,
            "learning_rate": config.learning_rate,
            "num_leaves": config.num_leaves,
            "min_data_in_leaf": config.min_data_in_leaf,
            "gate_cuts": list(config.gate_cuts),
            "window_decay": config.window_decay,
            "graded": config.graded,
            "base_strength": config.base_strength,
            "ignored_features": list(config.ignored_features),
            "monotone": [list(pair) for pair in config.monotone],
            "objective": config.objective,
            "extra_trees": config.extra_trees,
            "seed": config.seed,
        },
        "gate": gate,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.test:
        report["test"] = test_cut(data, vectors, RankingConfig(user_encoder=False), config, gate)
        report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    seeded = f"_seed{args.seed}" if args.seed else ""
    stack = "_user_encoder" if args.finetuned else ""
    path = args.out / f"study_ranker_gate_{log}{stack}_{args.variant}{seeded}.json"
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
