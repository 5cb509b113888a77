"""``aisle evaluate``: offline evaluation of the feed on a temporal split of MovieLens-100K.

Faithful to serving: every row of the table is ``aisle_server.ranking.rank`` itself, called
in-process per test user with the user's history before the cutoff (ids and times), ``now`` = the
cutoff, over a ``CatalogIndex`` of the whole catalog (1,682 items: no sampled negatives), the
served candidate count and ``exclude_history=True``. Knobs are ``RankingConfig`` fields. Item
embeddings come from sentence-transformers on the same weights ``aisle export`` puts in ONNX
(parity ≥ 0.9999 cosine), on the same texts ``aisle index`` embeds (``Catalog.texts()``); the
catalog's ``popularity`` is the number of *training-period* ratings (no leakage).

Metrics (``aisle_export.judge.metrics``), averaged over test users, on the top 10 unless named:
Recall@10, Recall@50, nDCG@10 (binary relevance: the user's next ≤ 10 items after the cutoff);
intra-list diversity (1 − mean pairwise cosine, measured in the *pretrained* item space for every
row, so rows with different towers are compared with one ruler); genre coverage (share of the 18
MovieLens genres the list covers); novelty (mean −log2 of the share of training users who rated
the item); and the time of one ``rank()`` call at k=10 (the ranking stage, in-process).

Knob values are chosen on a *validation* split cut out of the training period (same construction,
:func:`aisle_export.data.splits.validation_split`) with the pretrained towers, then applied once to the
test split: the test period is never used to pick a value. The MMR/DPP strength for the table is
the largest ``diversity`` that keeps ≥ 95% of the validation nDCG@10 of pure relevance.

Outputs: ``<out>/eval_movielens.md`` (the table and notes), ``eval_movielens.json`` (everything,
including per-setting sweeps and bootstrap intervals) and ``diversity_tradeoff.png``. The report
is a list of :class:`Table` objects, so other evaluations (e.g. search) can add theirs beside.
"""

from __future__ import annotations

import itertools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aisle_export.core.encoding import embed_catalog
from aisle_export.data.catalog import Catalog, read_catalog
from aisle_export.data.movielens import fetch_movielens, load_interactions, write_catalog_csv
from aisle_export.data.splits import TemporalSplit, temporal_split, validation_split
from aisle_export.index.writing import catalog_index
from aisle_export.judge import metrics
from aisle_export.judge.feed import CONTENT_ONLY, score
from aisle_export.judge.feed import Reference as FeedReference
from aisle_export.judge.statistics import bootstrap_delta
from aisle_server.diversity import diversify
from aisle_server.index import CatalogIndex
from aisle_server.ranking import RankingConfig, RankRequest, rank

DAY = 24 * 3600.0
NO_RECENCY = 1e12  # half-life of ~31,700 years: every history item weighs the same
RECENCY_GRID = (3600.0, DAY, 7 * DAY, 30 * DAY, 365 * DAY, NO_RECENCY)
FRESHNESS_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
FRESHNESS_HALF_LIFE_S = 365 * DAY
DIVERSITY_GRID = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 11))
KEEP_NDCG = 0.95
K_EVAL, K_SERVE = 50, 10


# --------------------------------------------------------------------------- data


def movielens_catalog(data_dir: Path, split: TemporalSplit, workdir: Path) -> Path:
    """The MovieLens catalog CSV with popularity counted on the split's training period only."""
    return write_catalog_csv(data_dir, Path(workdir) / "movielens_catalog_train.csv", interactions=split.train)


def build_index(catalog: Catalog, embeddings: np.ndarray) -> CatalogIndex:
    return catalog_index(catalog, embeddings)


@dataclass
class Reference:
    """What the beyond-accuracy metrics measure against, fixed for every row: the feed harness's
    (the pretrained item space for ILD, training counts for novelty) plus the catalog's genres."""

    feed: FeedReference
    genres: dict[str, tuple[str, ...]]
    n_genres: int

    @classmethod
    def build(cls, catalog: Catalog, embeddings: np.ndarray, split: TemporalSplit) -> Reference:
        genres = {
            item: tuple(g.strip() for g in description.split(",") if g.strip())
            for item, description in zip(catalog.item_ids.tolist(), catalog.descriptions.tolist())
        }
        return cls(
            FeedReference.of(build_index(catalog, embeddings), split),
            genres,
            n_genres=len({g for gs in genres.values() for g in gs}),
        )

    def genre_coverage(self, top: list[str]) -> float:
        return metrics.category_coverage([self.genres[i] for i in top], self.n_genres)


# --------------------------------------------------------------------------- one setting


@dataclass(frozen=True)
class Setting:
    name: str
    towers: str  # key into the indexes dict: "pretrained" | "fine-tuned"
    config: RankingConfig
    popularity_only: bool = False  # rank by the training popularity prior alone (history excluded)


def _requests(split: TemporalSplit, setting: Setting) -> Callable[[str, int], RankRequest]:
    """The study's feed request for (user, k): the user's history before the cut, ``now`` = the cut;
    the popularity row asks the cold fallback with the history excluded instead."""
    if setting.popularity_only:
        config = replace(setting.config, fallback_freshness_weight=0.0)

        def cold(user: str, k: int) -> RankRequest:
            ids = [item for item, _ in split.histories[user]]
            return RankRequest(None, (), np.zeros(0), k, split.cutoff, config, exclude_ids=ids)

        return cold

    def feed(user: str, k: int) -> RankRequest:
        history = split.histories[user]
        ts = np.array([t for _, t in history], dtype=np.float64)
        return RankRequest(None, [item for item, _ in history], ts, k, split.cutoff, setting.config)

    return feed


def evaluate_setting(
    index: CatalogIndex, split: TemporalSplit, setting: Setting, reference: Reference, timing: bool = True
) -> dict:
    """Per-user metrics of one setting (``per_user``, scored by the feed harness's ``score``) and their
    means, genre and catalog coverage of the top 10, plus rank() latency at k=10."""
    request = _requests(split, setting)
    result = score(
        lambda user, k: rank(index, request(user, k)).item_ids,
        split,
        reference.feed,
        ks=(K_SERVE, K_EVAL),
        coverage_at=K_SERVE,
        extra={"genre_coverage@10": reference.genre_coverage},
    )
    result["item_coverage@10"] = result.pop("coverage")
    if timing:
        latencies = []
        for user in split.users:
            one = request(user, K_SERVE)
            started = time.perf_counter()
            rank(index, one)
            latencies.append(time.perf_counter() - started)
        result["rank_p50_ms"] = metrics.percentile_ms(latencies, 50)
        result["rank_p95_ms"] = metrics.percentile_ms(latencies, 95)
    result["per_user"] = result.pop("per_user")  # last, as before
    return result


# --------------------------------------------------------------------------- tuning


def _best(candidates: list[tuple[float, float]]) -> float:
    """The value with the highest score; ties go to the earlier (simpler) value."""
    return max(candidates, key=lambda vs: (round(vs[1], 12), -candidates.index(vs)))[0]


def tune(
    index: CatalogIndex, split: TemporalSplit, reference: Reference, base: RankingConfig, progress: bool = True
) -> dict:
    """Pick recency, freshness and the MMR/DPP strengths on a (validation) split, by nDCG@10."""
    score = lambda config: evaluate_setting(index, split, Setting("tune", "", config), reference, timing=False)
    log: dict = {"recency_half_life_s": {}, "freshness_weight": {}, "mmr": {}, "dpp": {}}
    total = len(RECENCY_GRID) + len(FRESHNESS_GRID) + 2 * len(DIVERSITY_GRID)
    with tqdm(total=total, desc="tuning knobs on validation", unit="setting", disable=not progress) as bar:
        for half_life in RECENCY_GRID:
            log["recency_half_life_s"][half_life] = score(replace(base, recency_half_life_s=half_life))["ndcg@10"]
            bar.update()
        half_life = _best(list(log["recency_half_life_s"].items()))
        config = replace(base, recency_half_life_s=half_life)
        for weight in FRESHNESS_GRID:
            log["freshness_weight"][weight] = score(
                replace(config, freshness_weight=weight, freshness_half_life_s=FRESHNESS_HALF_LIFE_S)
            )["ndcg@10"]
            bar.update()
        weight = _best(list(log["freshness_weight"].items()))
        config = replace(config, freshness_weight=weight, freshness_half_life_s=FRESHNESS_HALF_LIFE_S)
        strengths = {}
        for method in ("mmr", "dpp"):
            for d in DIVERSITY_GRID:
                result = score(replace(config, diversity=d, diversity_method=method))
                log[method][d] = {"ndcg@10": result["ndcg@10"], "ild@10": result["ild@10"]}
                bar.update()
            floor = KEEP_NDCG * log[method][0.0]["ndcg@10"]
            strengths[method] = max(d for d, r in log[method].items() if r["ndcg@10"] >= floor)
    return {
        "recency_half_life_s": half_life,
        "freshness_weight": weight,
        "freshness_half_life_s": FRESHNESS_HALF_LIFE_S,
        "diversity": strengths,
        "log": log,
    }


# --------------------------------------------------------------------------- report


@dataclass
class Table:
    """One markdown table of a report: a title, column names, rows of (label, values)."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(["setting", *self.columns]) + " |",
            "| " + " | ".join(["---"] + ["---:"] * len(self.columns)) + " |",
        ]
        lines += ["| " + " | ".join([label, *values]) + " |" for label, values in self.rows]
        return "\n".join(lines) + "\n"


FEED_COLUMNS = [
    ("recall@10", "Recall@10", 4),
    ("recall@50", "Recall@50", 4),
    ("ndcg@10", "nDCG@10", 4),
    ("ild@10", "ILD@10", 3),
    ("genre_coverage@10", "genre cov.@10", 3),
    ("novelty@10", "novelty@10", 2),
    ("rank_p50_ms", "rank() p50 ms", 2),
]


def feed_table(title: str, rows: list[dict]) -> Table:
    table = Table(title, [label for _, label, _ in FEED_COLUMNS])
    for row in rows:
        table.rows.append((row["name"], [f"{row[key]:.{digits}f}" for key, _, digits in FEED_COLUMNS]))
    return table


def diversity_latency(
    n: int = 1000, k: int = 10, dim: int = 384, diversity: float = 0.5, repeats: int = 300, seed: int = 0
) -> dict:
    """p50/p95 ms of picking ``k`` of ``n`` candidates with MMR and DPP (in-process, one thread's work)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = rng.random(n)
    out = {}
    for method in ("mmr", "dpp"):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            diversify(method, relevance, vectors, k, diversity)
            times.append(time.perf_counter() - started)
        out[method] = {"p50_ms": metrics.percentile_ms(times, 50), "p95_ms": metrics.percentile_ms(times, 95)}
    return {"n": n, "k": k, "dim": dim, "diversity": diversity, "repeats": repeats, **out}


def _plot(sweeps: dict, base_ndcg: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for method, marker in (("mmr", "o"), ("dpp", "s")):
        points = sweeps[method]
        xs = [points[d]["ild@10"] for d in DIVERSITY_GRID]
        ys = [points[d]["ndcg@10"] for d in DIVERSITY_GRID]
        ax.plot(xs, ys, marker=marker, label=method.upper())
        for d, x, y in zip(DIVERSITY_GRID, xs, ys):
            if d in (0.0, 0.3, 0.5, 0.7, 0.9, 1.0):
                ax.annotate(f"{d:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(KEEP_NDCG * base_ndcg, color="grey", linestyle="--", linewidth=1, label="95% of nDCG@10 at diversity 0")
    ax.set_xlabel("intra-list diversity @10 (1 − mean pairwise cosine, pretrained space)")
    ax.set_ylabel("nDCG@10 (held-out next items)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _tradeoff_finding(sweeps: dict, base: dict) -> dict:
    """Per method: the setting with the most ILD among those keeping ≥ 95% of nDCG@10."""
    finding = {}
    for method, points in sweeps.items():
        keep = [(d, r) for d, r in points.items() if r["ndcg@10"] >= KEEP_NDCG * base["ndcg@10"]]
        d, r = max(keep, key=lambda dr: (dr[1]["ild@10"], -dr[0]))
        finding[method] = {
            "diversity": d,
            "ndcg@10": r["ndcg@10"],
            "ndcg_kept": r["ndcg@10"] / base["ndcg@10"],
            "ild@10": r["ild@10"],
            "ild_gain": r["ild@10"] / base["ild@10"] - 1.0,
            "meets_target": r["ild@10"] / base["ild@10"] - 1.0 >= 0.20,
        }
    return finding


def search_sanity(catalog: Catalog, item_embeddings: np.ndarray, title_embeddings: np.ndarray) -> dict:
    """Exact-title search through rank(): is an item with the searched title at rank 1 / in the top 10?"""
    index = build_index(catalog, item_embeddings)
    titles = catalog.titles.tolist()
    hits1 = hits10 = 0
    for query, title in zip(title_embeddings, titles):
        result = rank(index, RankRequest(query, (), np.zeros(0), 10, 0.0))
        found = [titles[row] == title for row in index.rows_of(result.item_ids)]
        hits1 += found[0]
        hits10 += any(found)
    return {"title_recall@1": hits1 / len(titles), "title_recall@10": hits10 / len(titles), "queries": len(titles)}


def run_movielens_eval(
    workdir: Path = Path("build"),
    out_dir: Path = Path("perf/results"),
    towers: Path | None = None,
    quantile: float = 0.8,
    progress: bool = True,
) -> dict:
    started = time.perf_counter()
    data_dir = fetch_movielens(Path(workdir) / "data")
    interactions = load_interactions(data_dir)
    split = temporal_split(interactions, quantile=quantile)
    valid = validation_split(split, quantile=quantile)
    catalog = read_catalog(movielens_catalog(data_dir, split, Path(workdir) / "eval"))
    valid_catalog = read_catalog(
        write_catalog_csv(data_dir, Path(workdir) / "eval" / "movielens_catalog_valid.csv", interactions=valid.train)
    )
    texts = catalog.texts()

    embeddings = {"pretrained": embed_catalog(texts, None, progress, "embedding items (pretrained)")}
    title_embeddings = {
        "pretrained": embed_catalog(catalog.titles.tolist(), None, progress, "embedding titles (pretrained)")
    }
    if towers is not None:
        embeddings["fine-tuned"] = embed_catalog(
            texts, Path(towers) / "item_tower", progress, "embedding items (fine-tuned)"
        )
        title_embeddings["fine-tuned"] = embed_catalog(
            catalog.titles.tolist(), Path(towers) / "query_tower", progress, "embedding titles (fine-tuned)"
        )
    indexes = {name: build_index(catalog, e) for name, e in embeddings.items()}
    reference = Reference.build(catalog, embeddings["pretrained"], split)

    # Knobs: chosen on validation with the pretrained towers (no test data, no fine-tuning leakage).
    no_recency = replace(CONTENT_ONLY, recency_half_life_s=NO_RECENCY)
    chosen = tune(
        build_index(valid_catalog, embeddings["pretrained"]),
        valid,
        Reference.build(valid_catalog, embeddings["pretrained"], valid),
        no_recency,
        progress,
    )

    best = "fine-tuned" if towers is not None else "pretrained"
    recency = replace(no_recency, recency_half_life_s=chosen["recency_half_life_s"])
    fresh = replace(
        recency, freshness_weight=chosen["freshness_weight"], freshness_half_life_s=chosen["freshness_half_life_s"]
    )
    settings = [
        Setting("popularity (training counts)", "pretrained", RankingConfig(), popularity_only=True),
        Setting("pretrained towers", "pretrained", no_recency),
    ]
    if towers is not None:
        settings.append(Setting("fine-tuned towers", "fine-tuned", no_recency))
    half_life_days = chosen["recency_half_life_s"] / DAY
    settings += [
        Setting(f"+ recency weighting (half-life {half_life_days:g} d)", best, recency),
        Setting(f"+ freshness (weight {chosen['freshness_weight']:g}, half-life 365 d)", best, fresh),
        Setting(
            f"+ MMR (diversity {chosen['diversity']['mmr']:g})",
            best,
            replace(fresh, diversity=chosen["diversity"]["mmr"], diversity_method="mmr"),
        ),
        Setting(
            f"+ DPP (diversity {chosen['diversity']['dpp']:g})",
            best,
            replace(fresh, diversity=chosen["diversity"]["dpp"], diversity_method="dpp"),
        ),
    ]
    rows = []
    for setting in tqdm(settings, desc="evaluating rows on test", unit="row", disable=not progress):
        result = evaluate_setting(indexes[setting.towers], split, setting, reference)
        rows.append(
            {
                "name": setting.name,
                "towers": setting.towers,
                "config": asdict(setting.config),
                "popularity_only": setting.popularity_only,
                **result,
            }
        )
    for previous, row in itertools.pairwise(rows):
        before = previous  # each row adds one ingredient to the row above; DPP replaces MMR
        if row["name"].startswith("+ DPP"):
            before = next(r for r in rows if r["name"].startswith("+ freshness"))
        row["vs"] = before["name"]
        row["delta"] = {
            m: bootstrap_delta(before["per_user"][m], row["per_user"][m]) for m in ("ndcg@10", "recall@10", "ild@10")
        }

    sweeps: dict = {"mmr": {}, "dpp": {}}
    with tqdm(
        total=2 * len(DIVERSITY_GRID), desc="diversity sweep on test", unit="setting", disable=not progress
    ) as bar:
        for method in sweeps:
            for d in DIVERSITY_GRID:
                result = evaluate_setting(
                    indexes[best],
                    split,
                    Setting("sweep", best, replace(fresh, diversity=d, diversity_method=method)),
                    reference,
                    timing=False,
                )
                sweeps[method][d] = {k: v for k, v in result.items() if k != "per_user"}
                bar.update()
    finding = _tradeoff_finding(sweeps, sweeps["mmr"][0.0])
    search = {name: search_sanity(catalog, embeddings[name], title_embeddings[name]) for name in embeddings}
    latency = diversity_latency()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(
        sweeps,
        sweeps["mmr"][0.0]["ndcg@10"],
        out_dir / "diversity_tradeoff.png",
        f"MovieLens-100K held out, {best} towers + recency + freshness: diversity 0 → 1",
    )
    report = {
        "dataset": "MovieLens-100K (recbole 1.2.1 atomic files)",
        "split": {"quantile": quantile, **split.summary()},
        "validation_split": {"quantile": quantile, **valid.summary()},
        "catalog_items": len(catalog),
        "chosen_on_validation": chosen,
        "rows": rows,
        "diversity_sweep_test": sweeps,
        "tradeoff_finding": finding,
        "title_search": search,
        "diversity_latency_1000_to_10": latency,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "eval_movielens.json").write_text(json.dumps(_strip_per_user(report), indent=2) + "\n")
    (out_dir / "eval_movielens.md").write_text(render_markdown(report))
    return report


def _strip_per_user(report: dict) -> dict:
    out = dict(report)
    out["rows"] = [{k: v for k, v in row.items() if k != "per_user"} for row in report["rows"]]
    return out


def render_markdown(report: dict) -> str:
    split = report["split"]
    cutoff = time.strftime("%Y-%m-%d", time.gmtime(split["cutoff"]))
    table = feed_table(
        f"Feed, MovieLens-100K, temporal split at {cutoff} ({split['test_users']} test users, "
        f"{split['test_targets']} held-out next items, {report['catalog_items']} items ranked)",
        report["rows"],
    )
    lines = [
        table.markdown(),
        "Paired bootstrap (users, 2000 resamples) of each row against the row above "
        "(DPP: against the freshness row), 95% interval:",
        "",
        "| row | vs | ΔnDCG@10 [95% CI] | ΔRecall@10 [95% CI] | ΔILD@10 [95% CI] |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    fmt = lambda d: f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
    for row in report["rows"][1:]:
        lines.append(
            f"| {row['name']} | {row['vs']} | {fmt(row['delta']['ndcg@10'])} | "
            f"{fmt(row['delta']['recall@10'])} | {fmt(row['delta']['ild@10'])} |"
        )
    lines += [
        "",
        "Relevance–diversity trade-off on test (best setting keeping ≥ 95% of nDCG@10):",
        "",
        "| method | diversity | nDCG@10 kept | ILD@10 | ILD gain | ≥ +20% ILD? |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for method, f in report["tradeoff_finding"].items():
        lines.append(
            f"| {method.upper()} | {f['diversity']:g} | {100 * f['ndcg_kept']:.1f}% | {f['ild@10']:.3f} | "
            f"{100 * f['ild_gain']:+.1f}% | {'yes' if f['meets_target'] else 'no'} |"
        )
    chosen = report["chosen_on_validation"]
    lat = report["diversity_latency_1000_to_10"]
    lines += [
        "",
        f"Knobs chosen on the validation split (cutoff "
        f"{time.strftime('%Y-%m-%d', time.gmtime(report['validation_split']['cutoff']))}, "
        f"{report['validation_split']['test_users']} users, pretrained towers): recency half-life "
        f"{chosen['recency_half_life_s'] / DAY:g} d, freshness weight {chosen['freshness_weight']:g}, "
        f"MMR diversity {chosen['diversity']['mmr']:g}, DPP diversity {chosen['diversity']['dpp']:g}.",
        "",
        f"MMR / DPP picking {lat['k']} of {lat['n']} candidates ({lat['dim']}-d, diversity {lat['diversity']}): "
        f"p50 {lat['mmr']['p50_ms']:.3f} / {lat['dpp']['p50_ms']:.3f} ms, "
        f"p95 {lat['mmr']['p95_ms']:.3f} / {lat['dpp']['p95_ms']:.3f} ms.",
        "",
        "Exact-title search (query tower on the display title, rank() over the item index):",
        "",
        "| towers | title recall@1 | title recall@10 |",
        "| --- | ---: | ---: |",
    ]
    for name, s in report["title_search"].items():
        lines.append(f"| {name} | {s['title_recall@1']:.4f} | {s['title_recall@10']:.4f} |")
    return "\n".join(lines) + "\n"
