"""Real request data for every scenario — no random bytes — over the catalog the benchmark serves.

- **search** requests, ``K`` = 10: this is the mix every system answers (the baselines implement
  search only). Over the BigBasket catalog (:func:`bigbasket_requests`), the search proxy's queries
  (``"nivea bathing bars & soaps"``: a brand and a kind of product, or a kind alone,
  ``aisle_export.judge.search``); over MovieLens (:func:`movielens_requests`), a title as a shopper
  would type it (year dropped, e.g. ``"Usual Suspects, The"`` → ``"usual suspects, the"``).
- **feed** requests (Aisle only): a shopper's 5–20 most recent items as ``HISTORY_IDS`` /
  ``HISTORY_TS``, ``NOW`` one minute after the last, and every other one with a query too. MovieLens
  users' real ratings; BigBasket has no interaction log, so there :func:`category_histories` makes
  shoppers who each browse one category of the catalog.
- component inputs: ``tokenizer`` ← the same texts; ``query_encoder`` ← their token ids from the
  server's own tokenizer (padded to 16); ``rerank`` ← the query plus its embedding from the
  exported query tower.

``write_all`` writes perf_analyzer ``--input-data`` JSON files (``{"data": [{name: {"content":
[...], "shape": [...]}}]}``, batch size 1, shapes without the batch axis) and ``requests.json``
(the search mix as ``{"query", "k"}`` for the load generator), all in the same order.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np

K = 10
RERANK_ROWS = 128  # each row carries a 384-float embedding; 128 distinct ones keep the file small
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def query_from_title(title: str) -> str:
    """``"Toy Story (1995)"`` → ``"toy story"``: what a person types into a search box."""
    return _YEAR.sub("", title).strip().lower()


def search_queries(titles: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` distinct-as-possible title queries in a seeded random order."""
    unique = sorted({q for q in (query_from_title(t) for t in titles) if q})
    rng = random.Random(seed)
    rng.shuffle(unique)
    return [unique[i % len(unique)] for i in range(count)]


def feed_requests(
    histories: dict[str, list[tuple[str, float]]], queries: list[str], count: int, seed: int = 0
) -> list[dict]:
    """Real users' recent histories (5–20 items), every other one with a search query too."""
    rng = random.Random(seed)
    users = sorted(u for u, h in histories.items() if len(h) >= 5)
    rng.shuffle(users)
    out = []
    for i in range(count):
        history = histories[users[i % len(users)]]
        recent = history[-rng.randint(5, min(20, len(history))) :]
        out.append(
            {
                "query": queries[i % len(queries)] if i % 2 else "",
                "history_ids": [item for item, _ in recent],
                "history_ts": [float(ts) for _, ts in recent],
                "now": float(recent[-1][1]) + 60.0,
                "k": K,
            }
        )
    return out


def category_histories(
    item_ids: list[str], categories: list[str], shoppers: int = 256, seed: int = 0, start: float = 1.7e9
) -> dict[str, list[tuple[str, float]]]:
    """Shoppers for a catalog without an interaction log: each views 20 items of one category (a
    category drawn at random, weighted by its size), a minute apart — what a feed request carries."""
    by_category: dict[str, list[str]] = {}
    for item, category in zip(item_ids, categories):
        by_category.setdefault(category, []).append(item)
    if not by_category:
        raise ValueError("category_histories: the catalog holds no items")
    names = sorted(by_category)
    rng = random.Random(seed)
    out = {}
    for s in range(shoppers):
        pool = by_category[rng.choices(names, weights=[len(by_category[n]) for n in names])[0]]
        seen = rng.sample(pool, min(20, len(pool)))
        out[f"shopper-{s}"] = [(item, start + 60.0 * (s * 20 + i)) for i, item in enumerate(seen)]
    return out


def _tensor(content: list, shape: list[int]) -> dict:
    return {"content": content, "shape": shape}


def pa_search(queries: list[str]) -> dict:
    return {"data": [{"QUERY": _tensor([q], [1]), "K": _tensor([K], [1])} for q in queries]}


def pa_feed(requests: list[dict]) -> dict:
    rows = []
    for r in requests:
        h = len(r["history_ids"])
        rows.append(
            {
                "QUERY": _tensor([r["query"]], [1]),
                "HISTORY_IDS": _tensor(r["history_ids"], [h]),
                "HISTORY_TS": _tensor(r["history_ts"], [h]),
                "NOW": _tensor([r["now"]], [1]),
                "K": _tensor([r["k"]], [1]),
            }
        )
    return {"data": rows}


def pa_text(queries: list[str]) -> dict:
    return {"data": [{"TEXT": _tensor([q], [1])} for q in queries]}


def pa_encoder(input_ids: np.ndarray, attention_mask: np.ndarray) -> dict:
    rows = []
    for ids, mask in zip(input_ids, attention_mask):
        length = int(np.ceil(max(int(mask.sum()), 1) / 16) * 16)  # the tokenizer model pads each request to 16s
        rows.append(
            {
                "input_ids": _tensor(ids[:length].tolist(), [length]),
                "attention_mask": _tensor(mask[:length].tolist(), [length]),
            }
        )
    return {"data": rows}


def pa_rerank(queries: list[str], embeddings: np.ndarray) -> dict:
    return {
        "data": [
            {
                "QUERY": _tensor([q], [1]),
                "QUERY_EMBEDDING": _tensor([round(float(x), 7) for x in e], [len(e)]),
                "K": _tensor([K], [1]),
            }
            for q, e in zip(queries, embeddings)
        ]
    }


def load_demo_data(repo: Path, data_dir: Path) -> tuple[list[str], dict]:
    """Catalog titles from the served index, user histories from the MovieLens ratings."""
    from aisle_export.data.interactions import user_histories
    from aisle_export.data.movielens import fetch_movielens, load_interactions
    from aisle_server.index import INDEX_DIRNAME, CatalogIndex

    index = CatalogIndex.load(Path(repo) / "rerank" / "1" / INDEX_DIRNAME)
    histories = user_histories(load_interactions(fetch_movielens(data_dir)))
    return [str(t) for t in index.titles.tolist()], histories


def movielens_requests(repo: Path, data_dir: Path, count: int = 512, seed: int = 0) -> tuple[list[str], dict]:
    """(``count`` title searches, the users' histories) over a repository serving MovieLens."""
    titles, histories = load_demo_data(repo, data_dir)
    return search_queries(titles, count, seed), histories


def bigbasket_requests(
    catalog_csv: Path, proxy_queries: list[str], count: int = 512, seed: int = 0
) -> tuple[list[str], dict]:
    """(``count`` of the search proxy's queries, :func:`category_histories` of ``catalog_csv``)."""
    from aisle_export.data.catalog import read_catalog

    catalog = read_catalog(catalog_csv)
    histories = category_histories(catalog.item_ids.tolist(), catalog.categories.tolist(), seed=seed)
    return search_queries(proxy_queries, count, seed), histories


def write_all(
    repo: Path, out_dir: Path, queries: list[str], histories: dict, count: int = 512, seed: int = 0
) -> dict[str, Path]:
    """Write every input file into ``out_dir`` (the searches ``queries``, feeds from ``histories``); returns
    scenario name → path."""
    from aisle_server.encoder import OnnxEncoder
    from aisle_server.tokenization import TextTokenizer

    repo, out_dir = Path(repo), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    feeds = feed_requests(histories, queries, count, seed)
    tokenizer = TextTokenizer.from_directory(repo / "tokenizer" / "1")
    ids, mask = tokenizer(queries)
    embeddings = OnnxEncoder(repo / "query_encoder" / "1" / "model.onnx")(ids, mask)
    files = {
        "recommend_search": pa_search(queries),
        "recommend_feed": pa_feed(feeds),
        "tokenizer": pa_text(queries),
        "query_encoder": pa_encoder(ids, mask),
        "rerank": pa_rerank(queries[:RERANK_ROWS], embeddings[:RERANK_ROWS]),
    }
    paths = {}
    for name, payload in files.items():
        paths[name] = out_dir / f"{name}.json"
        paths[name].write_text(json.dumps(payload))
    paths["requests"] = out_dir / "requests.json"
    paths["requests"].write_text(json.dumps([{"query": q, "k": K} for q in queries]))
    return paths


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m perf.perf_analyzer.inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--data-dir", type=Path, default=Path("build/data"))
    parser.add_argument("--out", type=Path, default=Path("build/bench/inputs"))
    parser.add_argument("--count", type=int, default=512)
    args = parser.parse_args(argv)
    queries, histories = movielens_requests(args.repo, args.data_dir, args.count)
    for name, path in write_all(args.repo, args.out, queries, histories, args.count).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
