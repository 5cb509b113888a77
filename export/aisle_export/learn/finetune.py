"""``aisle finetune --interactions FILE --catalog FILE --out DIR``: learn everything from a store's log.

One run writes one hand-off directory that ``aisle export --finetuned DIR`` serves:

- ``query_tower/``, ``item_tower/`` — the towers fine-tuned on "recent items → next item"
  (:mod:`aisle_export.learn.tower_training`) on the *validation cut's* training rows (see below);
- ``user_encoder/`` — the transformer user encoder (:mod:`aisle_export.learn.user_encoder`) over the
  fine-tuned item embeddings, on the whole training period;
- ``log_signals/`` — popularity and co-occurrence of the training period (``aisle index
  --interactions`` rebuilds them from the whole log for serving);
- ``ranker/`` — the learned second stage (:mod:`aisle_export.learn.ranker`), only when it beat the
  hand-weighted stack it was trained over on validation: over the stack chosen below, or over the
  pretrained one when that stack with its ranker led on validation (``served`` then says so);
- ``ranking.json`` — which stack to serve (``served``) and each stack's feed knobs (popularity and
  co-occurrence weights), all chosen on a validation cut inside the training period;
- ``validation_user_encoder/`` — the encoder the choice was made with (see below);
- ``finetune_report.json`` — what was trained on, for how long, with which figures.

**Training must earn its place.** Three stacks are judged on the validation cut, each with its own
knobs: the pretrained towers with the recency mean (what ``aisle index --interactions`` serves
with no training), the trained towers with the recency mean, and the trained towers with the user
encoder. A trained stack is served only when its gain over the untrained one has a paired bootstrap
95% interval above zero; otherwise export serves the untrained stack with its knobs. On a small or
unusual log the transformer models may not beat what the log's counts already give, and a store
should not get a worse feed for having run ``aisle finetune``.

Why nothing judged on validation has seen the validation period: a model trained on the period's
next items would be flattered on it — towers fine-tuned on the whole training period led on the
validation cut and lost on the test cut (how the cuts are built: docs/learning.md, "How it is
judged"; the observation: docs/results.md, "Design measurements behind code decisions"). So the
towers are trained once, on the validation cut's training rows, and served as they are (the content
towers gain little from the last few weeks; the log signals and the user encoder carry the recent
period); the user encoder is trained twice: on the validation cut's training rows for the choice,
then on the whole training period for serving.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from aisle_contract import RankingConfig
from aisle_export.core.encoding import embed_catalog
from aisle_export.core.handoff import ITEM_TOWER, QUERY_TOWER, RANKING_FILE, REPORT_FILE, STACKS
from aisle_export.core.memory import release_memory
from aisle_export.core.towers import default_tower_path, load_tower
from aisle_export.data.splits import LogData, TemporalSplit, sample_shoppers
from aisle_export.index.log_signals import split_signals
from aisle_export.index.writing import served_index
from aisle_export.judge.feed import KnobGrid, tune_feed
from aisle_export.judge.statistics import bootstrap_delta
from aisle_export.learn.ranker import RankerConfig, finetune_step
from aisle_export.learn.tower_training import FinetuneConfig, finetune
from aisle_export.learn.user_encoder import UserEncoderConfig, train_user_encoder
from aisle_server.index import CatalogIndex
from aisle_server.learned import LOG_SIGNALS_DIRNAME, USER_ENCODER_DIRNAME
from aisle_server.user_encoder import UserEncoder

VALIDATION_ENCODER = "validation_user_encoder"
METRIC = "ndcg@10"
#: Knob search and stack choice judge at most this many validation shoppers (ML-100K has 102,
#: Online Retail 834): its cost is shoppers × settings × catalog, not a function of the log.
MAX_VALIDATION_SHOPPERS = 1000


def train_encoder(
    data: LogData,
    split: TemporalSplit,
    index: CatalogIndex,
    out_dir: Path,
    config: UserEncoderConfig,
    progress: bool = True,
) -> dict:
    """A user encoder on ``split``'s training rows over ``index`` (that period's popularity is its prior)."""
    return train_user_encoder(
        data.catalog.item_ids.tolist(),
        np.asarray(index.embeddings),
        split.train_sequences(),
        out_dir,
        config,
        popularity_prior=index.popularity_prior,
        progress=progress,
    )


def choose_stack(per_user: Mapping[str, Sequence[float]], default: str = STACKS[0]) -> tuple[str, dict]:
    """The stack to serve: the best-scoring one whose gain over ``default`` (paired over the same
    shoppers) has a 95% interval above zero, else ``default``; and each stack's gain."""
    gains = {name: bootstrap_delta(per_user[default], values) for name, values in per_user.items() if name != default}
    winners = [name for name, gain in gains.items() if gain["ci95"][0] > 0]
    served = max(winners, key=lambda name: float(np.mean(per_user[name]))) if winners else default
    return served, {
        "metric": METRIC,
        "default": default,
        "served": served,
        "means": {name: float(np.mean(values)) for name, values in per_user.items()},
        "vs_default": gains,
    }


def pick_stack(
    data: LogData,
    index: CatalogIndex,
    pretrained: CatalogIndex | None,
    validation_encoder: Path,
    progress: bool = True,
    grid: KnobGrid = KnobGrid(),
    max_shoppers: int = MAX_VALIDATION_SHOPPERS,
) -> dict:
    """Every stack's knobs and the stack to serve, all judged on the validation cut.

    ``index`` holds the trained towers' embeddings and the validation cut's signals; ``pretrained``
    the pretrained towers' (``None`` when the towers were not trained: the mean stack is then the
    pretrained one); ``validation_encoder`` was trained on the validation cut's own training rows.
    The cut is judged on at most ``max_shoppers`` of its shoppers (``sample_shoppers``).
    """
    data = replace(data, valid=sample_shoppers(data.valid, max_shoppers))

    encoder = UserEncoder.load(validation_encoder)
    # The encoder's own default: the popularity weight its training learned (score = cos + w · prior).
    learned = RankingConfig(
        feed_popularity_weight=round(max(0.0, float(encoder.config["popularity_weight_equivalent"])), 4)
    )
    mean = RankingConfig(user_encoder=False)
    plans = {
        "pretrained": (pretrained if pretrained is not None else index, mean, "pretrained towers + mean"),
        "mean": (index, mean, "trained towers + mean") if pretrained is not None else None,
        "user_encoder": (replace(index, user_encoder=encoder), learned, "trained towers + user encoder"),
    }
    tuned = {
        name: tune_feed(stack, data.valid, base, METRIC, progress, f"knobs, {label} (validation)", grid)
        for name, (stack, base, label) in ((n, plan) for n, plan in plans.items() if plan is not None)
    }
    served, choice = choose_stack({name: t.per_user for name, t in tuned.items()})
    knobs = {name: asdict(t.config) for name, t in tuned.items()}
    knobs.setdefault("mean", knobs["pretrained"])  # towers not trained: the mean stack is the pretrained one
    return {"served": served, **knobs, "validation": {"choice": choice, **{name: t.log for name, t in tuned.items()}}}


def finetune_log(
    data: LogData,
    out_dir: Path,
    towers: FinetuneConfig = FinetuneConfig(),
    encoder: UserEncoderConfig = UserEncoderConfig(),
    base: str | Path | None = None,
    progress: bool = True,
    extra_report: Mapping[str, object] | None = None,
    keep_towers: bool = False,
    tune_towers: bool = True,
    grid: KnobGrid = KnobGrid(),
    ranker: RankerConfig = RankerConfig(),
) -> dict:
    """Towers, user encoder, log signals and knobs from ``data``'s training period, into ``out_dir``.

    ``keep_towers``: reuse the towers an earlier run left in ``out_dir`` (the slow part) and learn
    the rest again, e.g. a new user encoder on a longer log. ``tune_towers=False``: the towers stay
    the pretrained ones (``base``), copied as they are, and only the rest is learned — for a log too
    small to move a transformer without losing its sense of text.
    """

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts, ids = data.catalog.texts(), data.catalog.item_ids.tolist()
    cached: dict[str, np.ndarray] = {}  # the catalog's embeddings from the towers' training cache
    if keep_towers:
        if not (out_dir / ITEM_TOWER / "modules.json").exists():
            raise FileNotFoundError(f"{out_dir / ITEM_TOWER} is missing: nothing to keep, run without --keep-towers")
        tower_report = json.loads((out_dir / REPORT_FILE).read_text()).get("towers", {"kept": str(out_dir)})
    elif not tune_towers:
        source = load_tower(base).path if base is not None else default_tower_path()
        for name in (QUERY_TOWER, ITEM_TOWER):
            shutil.rmtree(out_dir / name, ignore_errors=True)
            shutil.copytree(source, out_dir / name)
        tower_report = {"pretrained": str(source)}
    else:  # on the validation cut's training rows: the validation cut can then judge them
        tower_report = finetune(
            texts,
            ids,
            data.valid.train_histories(),
            out_dir,
            towers,
            base,
            progress,
            extra_report={"trained_until": data.valid.cutoff},
            embeddings=cached,
        )
    embeddings = cached.get("trained")
    if embeddings is None:
        embeddings = embed_catalog(texts, out_dir / ITEM_TOWER, progress, "embedding items (trained towers)")
    for name in (VALIDATION_ENCODER, USER_ENCODER_DIRNAME):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    valid_signals = split_signals(data.valid)
    valid_index = served_index(data.catalog, embeddings, valid_signals)
    pretrained = None
    if tune_towers:
        before = cached.get("pretrained")
        if before is None:
            before = embed_catalog(texts, base, progress, "embedding items (pretrained)")
        pretrained = served_index(data.catalog, before, valid_signals)
    validation_report = train_encoder(data, data.valid, valid_index, out_dir / VALIDATION_ENCODER, encoder, progress)
    knobs = pick_stack(data, valid_index, pretrained, out_dir / VALIDATION_ENCODER, progress, grid)
    knobs["base"] = str(base) if base is not None else None
    signals = split_signals(data.split, source="training period")
    encoder_report = train_encoder(
        data,
        data.split,
        served_index(data.catalog, embeddings, signals),
        out_dir / USER_ENCODER_DIRNAME,
        encoder,
        progress,
    )
    signals.save(out_dir / LOG_SIGNALS_DIRNAME)
    vectors = {
        "trained": embeddings,
        "pretrained": np.asarray((valid_index if pretrained is None else pretrained).embeddings),
    }
    del valid_index, pretrained, signals, valid_signals  # the ranker builds an index of its own at each window
    release_memory()
    ranker_report = finetune_step(
        data,
        out_dir,
        knobs,
        vectors,
        (out_dir / VALIDATION_ENCODER, out_dir / USER_ENCODER_DIRNAME),
        ranker,
        progress,
    )
    (out_dir / RANKING_FILE).write_text(json.dumps(knobs, indent=2) + "\n")
    report = {
        "data": data.summary(),
        "towers": tower_report,
        "user_encoder": encoder_report,
        "validation_user_encoder": validation_report,
        "served": knobs["served"],
        "choice": knobs["validation"]["choice"],
        "knobs": {name: knobs[name] for name in STACKS},
        "ranker": ranker_report,
        "total_seconds": round(time.perf_counter() - started, 1),
        **(extra_report or {}),
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
