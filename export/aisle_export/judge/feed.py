"""``aisle evaluate --interactions FILE --catalog FILE``: judge the feed on a store's own log.

Honest by construction:

- **One global temporal cut** (``--cutoff`` or ``--cutoff-quantile``, :mod:`aisle_export.data.splits`):
  popularity, co-occurrence, training data and knob choices see nothing at or after it. Each test
  shopper active on both sides is scored on the next ≤ 10 *new* items it interacted with after the
  cut (items it already had are not predictions), given its last ≤ 50 before it, ``now`` = the cut.
- **Knobs are picked on a validation cut** inside the training period (the same construction on
  the training rows alone); the test period picks nothing.
- **The whole catalog is ranked** (no sampled negatives), and every Aisle row is
  ``aisle_server.ranking.rank`` itself over a ``CatalogIndex``, as served.
- **Baselines always in the table**: popularity of the training period, item-to-item
  co-occurrence (padded with popularity when a shopper has fewer neighbours than ``k``), the
  pretrained towers with the recency-weighted mean (content similarity only, the feed before
  multi-source candidates), and the baselines of the next-basket literature a data scientist would
  bring: GP-TopFreq (the shopper's own most frequent items), item-kNN on raw co-occurrence counts,
  and TIFU-KNN (Hu et al. 2020). GP-TopFreq and TIFU-KNN recommend repeats by design.
- **Three views of the same rankings**: every metric against the next ≤ 10 items *with* repeats
  (``all``), against only those the shopper had before the cut (``repeat``), and against the new
  items (``new``: the main table, as above). A shopper with no target in a view is left out of that
  view's mean; each view reports its shopper count.

Metrics per shopper, averaged: Recall@k, nDCG@k, HitRate@k, MRR (within the top ``max(k)``),
novelty (−log2 of the share of training shoppers who had the item), ILD@10 (in the pretrained item
space for every row), and catalog coverage (share of the catalog in anyone's top ``max(k)``).
Paired bootstrap intervals (shoppers resampled) compare rows. Output: ``<out>/<name>.md``,
``<name>.json`` and ``<name>.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from aisle_export.core.encoding import embed_catalog
from aisle_export.core.handoff import knobs_of, load_choice, stack_of
from aisle_export.data.splits import LogData, TemporalSplit
from aisle_export.index.log_signals import split_signals
from aisle_export.index.writing import served_index
from aisle_export.judge import metrics
from aisle_export.judge.rankers import (
    Ranker,
    aisle_ranker,
    batched_aisle_ranker,
    cooccurrence_ranker,
    gp_topfreq_ranker,
    item_knn_ranker,
    popularity_ranker,
    tifu_knn_ranker,
)
from aisle_export.judge.statistics import bootstrap_delta, mean_interval
from aisle_server.index import CatalogIndex
from aisle_server.learned import RANKER_DIRNAME, USER_ENCODER_DIRNAME, LogSignals
from aisle_server.ranker import LearnedRanker
from aisle_server.ranking import RankingConfig
from aisle_server.user_encoder import UserEncoder

DEFAULT_KS = (10, 20)


#: The content-based feed this study measures (and the feed before multi-source candidates): no
#: popularity or co-occurrence candidates or scores, no user encoder.
CONTENT_ONLY = RankingConfig(
    feed_popularity_weight=0.0,
    cooccurrence_weight=0.0,
    popular_candidates=0,
    cooccurrence_candidates=0,
    user_encoder=False,
)


@dataclass(frozen=True)
class KnobGrid:
    """The (feed popularity weight, co-occurrence weight) pairs :func:`tune_feed` tries.

    The full grid is what ``aisle finetune`` and ``aisle evaluate`` search; a smaller one buys a
    quicker run (``aisle demo``, tests) at the price of coarser knobs.
    """

    popularity: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    cooccurrence: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)


# --------------------------------------------------------------------------- rankers


# --------------------------------------------------------------------------- scoring


@dataclass
class Reference:
    """What the beyond-accuracy metrics measure against, the same for every row."""

    index: CatalogIndex  # pretrained item space (ILD)
    users_per_item: dict[str, int]
    n_users: int

    @classmethod
    def of(cls, index: CatalogIndex, split: TemporalSplit) -> Reference:
        pairs = set(zip(split.train.user_id.tolist(), split.train.item_id.tolist()))
        users_per_item: dict[str, int] = {}
        for _, item in pairs:
            users_per_item[item] = users_per_item.get(item, 0) + 1
        return cls(index, users_per_item, len({user for user, _ in pairs}))


ListMetric = Callable[[list[str]], float]  # one shopper's top 10 → a beyond-accuracy figure


def score(
    ranker: Ranker,
    split: TemporalSplit,
    reference: Reference,
    ks: Sequence[int] = DEFAULT_KS,
    beyond: bool = True,
    coverage_at: int | None = None,
    extra: Mapping[str, ListMetric] | None = None,
    targets: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Per-shopper metrics of one ranker (``per_user``), their means, and catalog coverage.

    The one scoring loop of every offline feed evaluation (this module's rows and the MovieLens
    content study alike): Recall, nDCG and HitRate at each of ``ks`` and MRR within the deepest;
    with ``beyond``, novelty and ILD of the top 10, ``extra`` figures of the top 10, and the share
    of the catalog in anyone's top ``coverage_at`` (default: the deepest ``k``). ``targets``: what
    each shopper is scored against (default the split's new items); a shopper without any is left
    out.
    """
    depth = max(ks)
    wanted = split.targets if targets is None else targets
    per_user: dict[str, list[float]] = {}
    shown: set[str] = set()
    for user in split.users:
        truth = list(wanted.get(user, ()))
        if not truth:
            continue
        ranked = ranker(user, depth)
        values = {"mrr": metrics.reciprocal_rank(ranked, truth, depth)}
        for k in ks:
            values |= {
                f"recall@{k}": metrics.recall_at_k(ranked, truth, k),
                f"ndcg@{k}": metrics.ndcg_at_k(ranked, truth, k),
                f"hit_rate@{k}": metrics.hit_rate_at_k(ranked, truth, k),
            }
        if beyond:
            top = ranked[:10]
            values["novelty@10"] = metrics.novelty(top, reference.users_per_item, reference.n_users)
            values["ild@10"] = metrics.intra_list_diversity(reference.index.embeddings[reference.index.rows_of(top)])
            values |= {name: metric(top) for name, metric in (extra or {}).items()}
            shown.update(ranked[: coverage_at or depth])
        for name, value in values.items():
            per_user.setdefault(name, []).append(value)
    result: dict = {name: float(np.mean(values)) for name, values in per_user.items()}
    if beyond:
        result["coverage"] = len(shown) / len(reference.index)
    result["per_user"] = per_user
    return result


VIEWS = ("all", "repeat", "new")


def view_targets(split: TemporalSplit) -> dict[str, Mapping[str, Sequence[str]]]:
    """Each shopper's targets in the three views: the next ≤ 10 items with repeats (``all``), those
    of them the shopper had before the cut (``repeat``), and the new items (``new``, the split's
    ``targets``)."""
    return {"all": split.next_items, "repeat": split.repeat_targets, "new": split.targets}


def score_views(
    ranker: Ranker, split: TemporalSplit, reference: Reference, ks: Sequence[int] = DEFAULT_KS, **kwargs
) -> dict:
    """:func:`score` on the new items (the row's own keys, unchanged) plus ``views``: the accuracy
    means and the shopper count of each view, the same rankings scored against each target set."""
    depth = max(ks)
    lists = {user: ranker(user, depth) for user in split.users}

    def cached(user: str, k: int) -> list[str]:
        return lists[user][:k]

    result = score(cached, split, reference, ks, **kwargs)
    result["views"] = {}
    for view, targets in view_targets(split).items():
        scored = score(cached, split, reference, ks, beyond=False, targets=targets)
        result["views"][view] = {"users": len(scored["per_user"].get("mrr", [])), **scored}
    return result


# --------------------------------------------------------------------------- tuning


class Tuning(NamedTuple):
    """What :func:`tune_feed` chose: the knobs, a JSON log of the grid, and the chosen knobs'
    per-shopper values on the cut (for comparing whole stacks on the same shoppers)."""

    config: RankingConfig
    log: dict
    per_user: list[float]


def tune_feed(
    index: CatalogIndex,
    split: TemporalSplit,
    base: RankingConfig,
    metric: str = "ndcg@10",
    progress: bool = True,
    desc: str = "tuning on validation",
    grid: KnobGrid = KnobGrid(),
) -> Tuning:
    """The (feed popularity weight, co-occurrence weight) for ``base``, judged on ``split``.

    ``split`` is a validation cut: the caller never passes the test period. The best pair on
    ``metric`` replaces ``base``'s own pair only when the paired bootstrap over the cut's shoppers
    puts its gain above zero (95% interval): on a cut of a hundred shoppers the best of 36
    settings is mostly the luckiest, and a default that measured as well is kept rather than
    swapped for noise. Ties go to the earlier (smaller) weights.
    """
    reference = Reference.of(index, split)
    pairs = [(p, c) for p in grid.popularity for c in (grid.cooccurrence if index.cooccurrence is not None else (0.0,))]
    own = (base.feed_popularity_weight, base.cooccurrence_weight)
    if own not in pairs:
        pairs.insert(0, own)
    per_user: dict[tuple[float, float], list[float]] = {}
    for p, c in tqdm(pairs, desc=desc, unit="setting", disable=not progress):
        config = replace(base, feed_popularity_weight=p, cooccurrence_weight=c)
        ranker = batched_aisle_ranker(index, split, config)
        per_user[(p, c)] = score(ranker, split, reference, (10,), beyond=False)["per_user"][metric]
    means = {pair: float(np.mean(values)) for pair, values in per_user.items()}
    best = max(pairs, key=lambda pair: (round(means[pair], 12), -pairs.index(pair)))
    gain = bootstrap_delta(per_user[own], per_user[best])
    chosen = best if gain["ci95"][0] > 0 else own
    return Tuning(
        replace(base, feed_popularity_weight=chosen[0], cooccurrence_weight=chosen[1]),
        {
            "metric": metric,
            "grid": {f"{p:g},{c:g}": value for (p, c), value in means.items()},
            "default": list(own),
            "best": list(best),
            "best_vs_default": gain,
            "kept_default": chosen == own,
            "feed_popularity_weight": chosen[0],
            "cooccurrence_weight": chosen[1],
        },
        per_user[chosen],
    )


# --------------------------------------------------------------------------- report


def compare(rows: list[dict], baseline_names: Sequence[str], ks: Sequence[int], view: str | None = None) -> list[dict]:
    """Paired bootstrap of every row against each baseline row, on nDCG@min(k) and HitRate@max(k):
    on the new items (the rows' own per-shopper values), or on one of the rows' ``views``."""
    by_name = {row["name"]: row for row in rows}
    keys = (f"ndcg@{min(ks)}", f"hit_rate@{max(ks)}")

    def per_user(row: dict) -> dict:
        return row["views"][view]["per_user"] if view else row["per_user"]

    out = []
    for row in rows:
        for base in baseline_names:
            if base == row["name"] or base not in by_name:
                continue
            out.append(
                {
                    "row": row["name"],
                    "vs": base,
                    **{key: bootstrap_delta(per_user(by_name[base])[key], per_user(row)[key]) for key in keys},
                }
            )
    return out


COLUMNS = ("recall@{k}", "ndcg@{k}", "hit_rate@{k}")


def render_markdown(report: dict) -> str:
    ks = report["ks"]
    columns = [c.format(k=k) for k in ks for c in COLUMNS] + ["mrr", "coverage", "novelty@10", "ild@10"]
    test = report["data"]["test"]
    cut = time.strftime("%Y-%m-%d %H:%M", time.gmtime(test["cutoff"]))
    lines = [
        f"## {report['title']}",
        "",
        f"Temporal cut {cut} UTC: {test['train_interactions']} training interactions, {test['test_users']} test "
        f"shoppers, {test['test_targets']} held-out new items, {report['data']['catalog_items']} catalog items "
        "ranked (whole catalog). Knobs picked on the validation cut "
        f"({report['data']['validation']['test_users']} shoppers) only.",
        "",
        "| row | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | " + " | ".join(f"{row.get(c, float('nan')):.4f}" for c in columns) + " |")
    lines += _comparison_table(report["comparisons"])
    lines += _view_tables(report)
    lines += ["", "Chosen on validation: " + json.dumps(report["chosen"], sort_keys=True), ""]
    return "\n".join(lines) + "\n"


VIEW_TITLES = {
    "all": "All next items (the next ≤ 10 after the cut, repeats count)",
    "repeat": "Repeat items only (those of the next items the shopper had before the cut)",
    "new": "New items only (the main table's targets)",
}


def _view_tables(report: dict) -> list[str]:
    """One table per view of the rows that carry ``views`` (accuracy only)."""
    rows = [row for row in report["rows"] if "views" in row]
    if not rows:
        return []
    ks = report["ks"]
    columns = [c.format(k=k) for k in ks for c in COLUMNS] + ["mrr"]
    lines: list[str] = []
    for view in VIEWS:
        users = rows[0]["views"][view]["users"]
        lines += [
            "",
            f"### {VIEW_TITLES[view]}: {users} shoppers",
            "",
            "| row | " + " | ".join(columns) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for row in rows:
            scored = row["views"][view]
            lines.append(
                f"| {row['name']} | " + " | ".join(f"{scored.get(c, float('nan')):.4f}" for c in columns) + " |"
            )
        lines += _comparison_table(report.get("view_comparisons", {}).get(view, []))
    return lines


def _comparison_table(comparisons: list[dict]) -> list[str]:
    """Paired bootstrap intervals of rows against baseline rows, as a markdown table."""
    if not comparisons:
        return []
    keys = [k for k in comparisons[0] if "@" in k]
    lines = [
        "",
        "Paired bootstrap (shoppers, 2000 resamples), 95% interval:",
        "",
        "| row | vs | Δ" + " | Δ".join(keys) + " |",
        "| --- | --- |" + " ---: |" * len(keys),
    ]
    for c in comparisons:
        cells = [f"{c[k]['delta']:+.4f} [{c[k]['ci95'][0]:+.4f}, {c[k]['ci95'][1]:+.4f}]" for k in keys]
        lines.append(f"| {c['row']} | {c['vs']} | " + " | ".join(cells) + " |")
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    keys = (f"ndcg@{min(ks)}", f"hit_rate@{max(ks)}")
    rows = report["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2), dpi=120)
    for ax, key in zip(axes, keys):
        means = [row[key] for row in rows]
        errors = np.array([row["ci95"][key] for row in rows]).T
        ax.barh(range(len(rows)), means, xerr=np.abs(errors - means), color="#4c72b0", capsize=3)
        ax.set_yticks(range(len(rows)), [row["name"] for row in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{key}, 95% interval")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    rows: list[dict],
    data: LogData,
    chosen: dict,
    ks: Sequence[int],
    title: str,
    out_dir: Path,
    name: str,
    baselines: Sequence[str],
    extra: dict | None = None,
    view_baselines: Sequence[str] = (),
) -> dict:
    """Markdown, JSON (without per-shopper values) and PNG of the rows; with ``view_baselines``, every
    row of the three views is also compared with those rows, paired, in each view with shoppers."""
    for row in rows:
        row["ci95"] = {key: mean_interval(row["per_user"][key]) for key in (f"ndcg@{min(ks)}", f"hit_rate@{max(ks)}")}
    viewed = [row for row in rows if "views" in row]
    report = {
        "title": title,
        "ks": list(ks),
        "data": data.summary(),
        "chosen": chosen,
        "rows": rows,
        "comparisons": compare(rows, baselines, ks),
        "view_comparisons": {
            view: compare(viewed, view_baselines, ks, view)
            for view in VIEWS
            if viewed and viewed[0]["views"][view]["users"] >= 2
        },
        **(extra or {}),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(report, out_dir / f"{name}.png")
    public = {**report, "rows": [_without_per_user(row) for row in rows]}
    (out_dir / f"{name}.json").write_text(json.dumps(public, indent=2, default=_json_default) + "\n")
    (out_dir / f"{name}.md").write_text(render_markdown(public))
    return public


def _without_per_user(row: dict) -> dict:
    """A row as the JSON report keeps it: means and intervals, not each shopper's values."""
    public = {k: v for k, v in row.items() if k != "per_user"}
    if "views" in row:
        public["views"] = {
            view: {k: v for k, v in scored.items() if k != "per_user"} for view, scored in row["views"].items()
        }
    return public


def _json_default(value: object) -> object:
    if isinstance(value, RankingConfig):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# --------------------------------------------------------------------------- the whole evaluation


def evaluate_log(
    data: LogData,
    out_dir: Path,
    finetuned: Path | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    name: str = "eval_log",
    title: str = "Feed on a store's log",
    progress: bool = True,
    grid: KnobGrid = KnobGrid(),
    extra_rows: Callable[[np.ndarray, RankingConfig], tuple[list[tuple[str, Ranker]], dict]] | None = None,
) -> dict:
    """Baselines, Aisle out of the box, and (with ``finetuned``) the trained models, on the test cut.

    ``extra_rows(pretrained embeddings, tuned knobs)``: more rows and what they chose (e.g. the
    learned ranker, trained by a stage above this one: ``aisle evaluate --ranker``)."""

    started = time.perf_counter()
    texts = data.catalog.texts()
    pretrained = embed_catalog(texts, None, progress, "embedding items (pretrained)")
    signals = split_signals(data.split, source="training period")
    index = served_index(data.catalog, pretrained, signals)
    reference = Reference.of(index, data.split)
    default_no_encoder = RankingConfig(user_encoder=False)
    tuned, tuning, _ = tune_feed(
        served_index(data.catalog, pretrained, split_signals(data.valid)),
        data.valid,
        default_no_encoder,
        progress=progress,
        desc="knobs, pretrained (validation)",
        grid=grid,
    )
    rows_spec: list[tuple[str, Ranker]] = [
        ("popularity (training period)", popularity_ranker(index, data.split)),
        ("co-occurrence (item-item cosine, then popularity)", cooccurrence_ranker(index, data.split)),
        ("GP-TopFreq (own most frequent items, then popularity)", gp_topfreq_ranker(index, data.split)),
        ("item-kNN (raw co-occurrence counts, then popularity)", item_knn_ranker(index, data.split)),
        ("TIFU-KNN (decayed own frequency + neighbours)", tifu_knn_ranker(index, data.split)),
        ("pretrained + mean, content only (the feed before)", aisle_ranker(index, data.split, CONTENT_ONLY)),
        (
            "Aisle default, no training (pretrained + mean + log signals)",
            aisle_ranker(index, data.split, RankingConfig()),
        ),
        (
            "Aisle default, repeats allowed (exclude_history=False)",
            aisle_ranker(index, data.split, RankingConfig(exclude_history=False)),
        ),
        ("pretrained + mean + log signals, knobs tuned", aisle_ranker(index, data.split, tuned)),
    ]
    chosen: dict = {
        "pretrained": {
            "feed_popularity_weight": tuned.feed_popularity_weight,
            "cooccurrence_weight": tuned.cooccurrence_weight,
            "validation": tuning,
        }
    }
    served = (index, RankingConfig(), "Aisle default")
    baselines = [rows_spec[0][0], rows_spec[1][0]]
    if finetuned is not None:
        trained, served, stack_labels = finetuned_rows(data, Path(finetuned), signals, index, progress)
        rows_spec += trained

        chosen["finetuned"] = load_choice(Path(finetuned))
        baselines.append(trained[0][0])  # the trained towers with the recency mean
        for stack_label in stack_labels:  # what the ranker adds; what choosing stack and ranker together changed
            if stack_label not in baselines and any(label == stack_label for label, _ in trained):
                baselines.append(stack_label)
    rows_spec += source_ablations(data.split, *served)
    if extra_rows is not None:
        more, chosen["extra"] = extra_rows(pretrained, tuned)
        rows_spec += more
    rows = []
    for label, ranker in tqdm(rows_spec, desc="scoring rows on test", unit="row", disable=not progress):
        rows.append({"name": label, **score_views(ranker, data.split, reference, ks)})
    return write_report(
        rows,
        data,
        chosen,
        ks,
        title,
        out_dir,
        name,
        baselines,
        {"seconds": round(time.perf_counter() - started, 1)},
        # popularity, co-occurrence, GP-TopFreq and TIFU-KNN (the repeat baselines), the served default
        view_baselines=[rows_spec[i][0] for i in (0, 1, 2, 4, 6)],
    )


def finetuned_rows(
    data: LogData, finetuned: Path, signals: LogSignals, pretrained: CatalogIndex, progress: bool
) -> tuple[list[tuple[str, Ranker]], tuple[CatalogIndex, RankingConfig, str], list[str]]:
    """The trained towers with the recency mean and with the user encoder, each with the knobs
    ``aisle finetune`` picked; the stack it chose to serve; that stack (index, knobs, label); and the
    labels of the served stack's row without the learned ranker and of the stack validation chose
    before the ranker's gate (they differ when the ranker won over another stack)."""

    report = json.loads((finetuned / "finetune_report.json").read_text())
    towers = "pretrained towers" if "pretrained" in report.get("towers", {}) else "fine-tuned"
    embeddings = embed_catalog(data.catalog.texts(), finetuned / "item_tower", progress, f"embedding items ({towers})")
    plain = served_index(data.catalog, embeddings, signals)
    stacks = {
        "pretrained": (pretrained, "pretrained + mean + log signals"),
        "mean": (plain, f"{towers} + mean + log signals"),
        "user_encoder": (
            replace(plain, user_encoder=UserEncoder.load(finetuned / USER_ENCODER_DIRNAME)),
            f"{towers} + user encoder + log signals",
        ),
    }
    choice = load_choice(finetuned)
    served = stack_of(choice)
    rows = [
        (label, aisle_ranker(index, data.split, knobs_of(choice, name)))
        for name, (index, label) in stacks.items()
        if name != "pretrained"
    ]
    index, label = stacks[served]
    before = stack_of(choice, choice.get("validation", {}).get("choice", {}).get("served", served))
    stack_labels = list(dict.fromkeys((label, stacks[before][1])))
    knobs = knobs_of(choice, served)
    if (finetuned / RANKER_DIRNAME).is_dir():  # the learned ranker aisle finetune gated in
        index = replace(index, ranker=LearnedRanker.load(finetuned / RANKER_DIRNAME))
        label += " + learned ranker"
    served_label = "served after aisle finetune"
    rows.append((f"{served_label} (validation chose {label})", aisle_ranker(index, data.split, knobs)))
    return rows, (index, knobs, served_label), stack_labels


def against_popularity(data: LogData, ranker: Ranker, k: int = 10) -> dict:
    """``ranker``'s nDCG@k on the test cut against the training period's popularity, paired over the
    same shoppers (e.g. the served feed through a running server: did learning earn its place?)."""
    split = data.split
    no_vectors = np.zeros((len(data.catalog), 1), dtype=np.float32)  # popularity reads no embedding
    index = served_index(data.catalog, no_vectors, split_signals(split, source="training period"))
    reference = Reference.of(index, split)
    per_user = {
        name: score(ranked, split, reference, (k,), beyond=False)["per_user"][f"ndcg@{k}"]
        for name, ranked in (("ranker", ranker), ("popularity", popularity_ranker(index, split)))
    }
    gain = bootstrap_delta(per_user["popularity"], per_user["ranker"])
    return {
        "metric": f"ndcg@{k} (test cut, {len(split.users)} shoppers)",
        **{name: float(np.mean(values)) for name, values in per_user.items()},
        "gain": gain,
        "beats_popularity": gain["ci95"][0] > 0,
    }


def source_ablations(
    split: TemporalSplit, index: CatalogIndex, config: RankingConfig, label: str
) -> list[tuple[str, Ranker]]:
    """The served feed with one candidate source off at a time: what each source adds."""
    return [
        (f"{label}, without popular candidates", aisle_ranker(index, split, replace(config, popular_candidates=0))),
        (
            f"{label}, without co-occurrence candidates",
            aisle_ranker(index, split, replace(config, cooccurrence_candidates=0)),
        ),
    ]
