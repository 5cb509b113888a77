"""A model repository for a benchmark to serve: the towers exported and a catalog indexed, once.

Every benchmark that starts a tritonserver gets its repository here:

- :func:`ensure`: ``repo`` as it is when indexed; otherwise the towers are exported into it and a
  catalog indexed — MovieLens-100K (fetched into ``build/data``, as ``make demo`` does) unless the
  benchmark brings its own catalog, towers or item vectors (``perf.bench_distill``). ``make demo``
  also fine-tunes: far too long for a benchmark. ``perf.bench`` and ``perf.bench_sdk`` use it on
  ``build/model_repository`` (``make demo``'s);
- :func:`cached`: the benchmarks' own repository, ``build/perf/model_repository`` — pretrained
  towers, MovieLens-100K — exported and indexed the first time, then brought up to this checkout's
  template (model.py adapters, configs) over the kept artifacts on every call; what
  ``perf.bench_realtime``, ``perf.soak``, ``perf.fuzz`` and ``perf.bench_oversized_query`` (when
  ``make demo``'s is missing or stale) serve;
- :func:`problems`: why a repository cannot be trusted to serve what this checkout's server code
  expects (missing artifacts, adapters or tokenizer config that differ from the template).
"""

from __future__ import annotations

import filecmp
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "build" / "model_repository"
CACHE = ROOT / "build" / "perf" / "model_repository"
DATA = ROOT / "build" / "data"
#: What a repository must hold to answer ``recommend`` searches.
REQUIRED = (
    "tokenizer/1/tokenizer.json",
    "tokenizer/1/tokenizer_settings.json",
    "query_encoder/1/model.onnx",
    "rerank/1/index/manifest.json",
    "recommend/config.pbtxt",
)


def indexed(repo: Path) -> bool:
    """Whether ``repo`` holds a written catalog index (the last thing :func:`build` writes)."""
    return (Path(repo) / "rerank" / "1" / "index" / "manifest.json").is_file()


def missing(repo: Path, required: Sequence[str] = REQUIRED) -> list[str]:
    """``missing <path>`` for each of ``required`` that ``repo`` lacks."""
    return [f"missing {name}" for name in required if not (Path(repo) / name).is_file()]


def stale(repo: Path) -> list[str]:
    """The model.py adapters and tokenizer config of ``repo`` that differ from the checked-in template."""
    from aisle_export.build.repository import TEMPLATE_DIR

    repo, found = Path(repo), []
    for adapter in sorted(TEMPLATE_DIR.glob("*/1/model.py")):
        relative = adapter.relative_to(TEMPLATE_DIR)
        if (repo / relative).is_file() and not filecmp.cmp(adapter, repo / relative, shallow=False):
            found.append(f"{relative} differs from the template's")
    config = Path("tokenizer/config.pbtxt")
    if (repo / config).is_file() and not filecmp.cmp(TEMPLATE_DIR / config, repo / config, shallow=False):
        found.append(f"{config} differs from the template's")
    return found


def problems(repo: Path, required: Sequence[str] = REQUIRED) -> list[str]:
    """Why ``repo`` cannot be trusted to serve what this checkout's server code expects: missing
    artifacts, or model.py adapters / tokenizer config that differ from the checked-in template."""
    return missing(repo, required) + stale(repo)


def movielens_catalog(data_dir: Path = DATA) -> Path:
    """MovieLens-100K fetched into ``data_dir`` (once) and written there as an Aisle catalog CSV."""
    from aisle_export.data.movielens import fetch_movielens, write_catalog_csv

    data_dir = Path(data_dir)
    return write_catalog_csv(fetch_movielens(data_dir), data_dir / "movielens_catalog.csv")


def build(
    repo: Path,
    catalog_csv: Path,
    *,
    query_tower: Path | None = None,
    item_tower: Path | None = None,
    embeddings: np.ndarray | None = None,
    allow_below_gate: bool = False,
    progress: bool = False,
) -> Path:
    """Export the towers (pretrained all-MiniLM-L6-v2 unless given) into ``repo`` and index
    ``catalog_csv`` there (from ``embeddings``, the item tower's vectors, when given)."""
    from aisle_export.build.pipeline import export_repository
    from aisle_export.data.catalog import read_catalog
    from aisle_export.index.writing import write_index

    repo = Path(repo)
    export_repository(
        repo,
        None if query_tower is None else str(query_tower),
        None if item_tower is None else str(item_tower),
        allow_below_gate=allow_below_gate,
    )
    write_index(read_catalog(catalog_csv), repo, source=catalog_csv, progress=progress, embeddings=embeddings)
    return repo


def ensure(repo: Path = DEMO, catalog_csv: Path | None = None, *, data_dir: Path = DATA, **options: Any) -> Path:
    """``repo``, exported and indexed first when it has no index yet: :func:`build` with ``options``
    (towers, item vectors, ...) over ``catalog_csv``, by default MovieLens-100K under ``data_dir``."""
    repo = Path(repo)
    if indexed(repo):
        return repo
    print(f"[perf] {repo} has no index: exporting the towers and indexing a catalog (once)", flush=True)
    return build(repo, catalog_csv or movielens_catalog(data_dir), **options)


def cached(data_dir: Path = DATA, repo: Path = CACHE) -> Path:
    """The benchmarks' own repository: pretrained towers and MovieLens-100K, exported and indexed
    the first time; this checkout's template (configs, adapters) copied over the kept artifacts on
    every call; exported afresh when anything is still missing or stale after that."""
    from aisle_export.build.repository import copy_template

    repo = ensure(repo, data_dir=data_dir)
    copy_template(repo)
    if problems(repo):
        shutil.rmtree(repo)
        ensure(repo, data_dir=data_dir)
    return repo
