"""``aisle finetune --interactions FILE --catalog FILE --out DIR``: learn everything from a store's log.

One run writes one hand-off directory that ``aisle export --finetuned DIR`` serves:

- ``query_tower/``, ``item_tower/`` — the towers fine-tuned on "recent items → next item"
  (:mod:`aisle_export.finetune`), on the training period only;
- ``user_encoder/`` — the transformer user encoder (:mod:`aisle_export.user_encoder`) over the
  fine-tuned item embeddings, on the training period;
- ``log_signals/`` — popularity and co-occurrence of the training period (``aisle index
  --interactions`` rebuilds them from the whole log for serving);
- ``ranking.json`` — the feed's knobs (popularity and co-occurrence weights), picked on a
  validation cut inside the training period: with the user encoder (what export serves) and with
  the recency mean (what ``aisle evaluate`` compares against);
- ``validation_user_encoder/`` — the encoder the knobs were picked with (see below);
- ``finetune_report.json`` — what was trained on, for how long, with which figures.

Why the knobs need a second, smaller encoder: the final encoder has trained on the validation
period's next items, so judging knobs with it on that period would flatter the model. The knobs
are picked with an encoder trained on the validation cut's own training rows, then the final
encoder is trained on the whole training period.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Mapping

import numpy as np

from aisle_server.index import CatalogIndex
from aisle_server.learned import LOG_SIGNALS_DIRNAME, USER_ENCODER_DIRNAME
from aisle_server.ranking import RankingConfig

from .finetune import ITEM_TOWER, QUERY_TOWER, REPORT_FILE, FinetuneConfig, finetune
from .interactions import user_sequences
from .log_eval import LogData, served_index, split_signals, tune_feed
from .movielens import user_histories
from .splits import TemporalSplit
from .towers import default_tower_path, load_tower
from .user_encoder import UserEncoderConfig, train_user_encoder

RANKING_FILE = "ranking.json"
VALIDATION_ENCODER = "validation_user_encoder"


def train_encoder(data: LogData, split: TemporalSplit, index: CatalogIndex, out_dir: Path,
                  config: UserEncoderConfig, progress: bool = True) -> dict:
    """A user encoder on ``split``'s training rows over ``index`` (that period's popularity is its prior)."""
    return train_user_encoder(data.catalog.item_ids.tolist(), np.asarray(index.embeddings), user_sequences(split.train),
                              out_dir, config, popularity_prior=index.popularity_prior, progress=progress)


def pick_knobs(data: LogData, index: CatalogIndex, validation_encoder: Path, progress: bool = True) -> dict:
    """Feed knobs with and without the user encoder (trained on the validation cut's own training
    rows, in ``validation_encoder``), chosen on the validation cut; ``index`` holds its signals."""
    from aisle_server.user_encoder import UserEncoder

    encoder = UserEncoder.load(validation_encoder)
    # The encoder's own default: the popularity weight its training learned (score = cos + w · prior).
    learned = RankingConfig(feed_popularity_weight=round(max(0.0, float(encoder.config["popularity_weight_equivalent"])), 4))
    with_encoder, log_encoder = tune_feed(replace(index, user_encoder=encoder), data.valid, learned, progress=progress,
                                          desc="knobs with the user encoder (validation)")
    with_mean, log_mean = tune_feed(index, data.valid, RankingConfig(user_encoder=False), progress=progress,
                                    desc="knobs with the recency mean (validation)")
    return {"user_encoder": asdict(with_encoder), "mean": asdict(with_mean),
            "validation": {"user_encoder": log_encoder, "mean": log_mean}}


def finetune_log(data: LogData, out_dir: Path, towers: FinetuneConfig = FinetuneConfig(),
                 encoder: UserEncoderConfig = UserEncoderConfig(), base: str | Path | None = None,
                 progress: bool = True, extra_report: Mapping[str, object] | None = None,
                 keep_towers: bool = False, tune_towers: bool = True) -> dict:
    """Towers, user encoder, log signals and knobs from ``data``'s training period, into ``out_dir``.

    ``keep_towers``: reuse the towers an earlier run left in ``out_dir`` (the slow part) and learn
    the rest again, e.g. a new user encoder on a longer log. ``tune_towers=False``: the towers stay
    the pretrained ones (``base``), copied as they are, and only the rest is learned — for a log too
    small to move a transformer without losing its sense of text.
    """
    from .evaluate import embed_catalog

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts, ids = data.catalog.texts(), data.catalog.item_ids.tolist()
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
    else:
        tower_report = finetune(texts, ids, user_histories(data.split.train), out_dir, towers, base, progress)
    embeddings = embed_catalog(texts, out_dir / ITEM_TOWER, progress, "embedding items (fine-tuned)")
    for name in (VALIDATION_ENCODER, USER_ENCODER_DIRNAME):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    valid_index = served_index(data.catalog, embeddings, split_signals(data.valid))
    validation_report = train_encoder(data, data.valid, valid_index, out_dir / VALIDATION_ENCODER, encoder, progress)
    knobs = pick_knobs(data, valid_index, out_dir / VALIDATION_ENCODER, progress)
    signals = split_signals(data.split, source="training period")
    encoder_report = train_encoder(data, data.split, served_index(data.catalog, embeddings, signals),
                                   out_dir / USER_ENCODER_DIRNAME, encoder, progress)
    signals.save(out_dir / LOG_SIGNALS_DIRNAME)
    (out_dir / RANKING_FILE).write_text(json.dumps(knobs, indent=2) + "\n")
    report = {"data": data.summary(), "towers": tower_report, "user_encoder": encoder_report,
              "validation_user_encoder": validation_report,
              "knobs": {name: knobs[name] for name in ("user_encoder", "mean")},
              "total_seconds": round(time.perf_counter() - started, 1), **(extra_report or {})}
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def load_knobs(finetuned: Path, name: str = "user_encoder") -> RankingConfig:
    """The feed knobs ``finetune_log`` chose on validation (``name``: user_encoder or mean)."""
    path = Path(finetuned) / RANKING_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: not a directory written by `aisle finetune --interactions`")
    return replace(RankingConfig(), **json.loads(path.read_text())[name])
