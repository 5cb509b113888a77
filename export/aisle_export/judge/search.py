"""Search quality on a labelled product-search proxy: BM25 alone vs dense alone vs hybrid.

The proxy is built from a real e-commerce catalog (BigBasket, in ``../shared/data``; never copied
into the project). Items are indexed as Aisle would index them — ``title. brand. category`` — and
two kinds of query are generated with their relevant sets:

- ``brand + type`` ("Nivea Bathing Bars & Soaps"): the products of that brand in that leaf type.
  The brand is a literal token (lexical wins) and the type is rarely in the title (dense wins):
  what shoppers do when they type a brand and a kind of product.
- ``type`` alone ("Hair Oil & Serum"): the products of that leaf type; mostly semantic.

Ranking runs through ``aisle_server.ranking.rank`` itself — the same code as the served ``rerank``
model — with ``search_mode`` dense, lexical or hybrid (and a sweep of ``lexical_weight``).

Typos: every query again with one edit (a letter dropped, added, replaced, or two swapped) in one
of its words of four letters or more (:func:`misspell`, seeded), judged against the same relevant
items with ``typo_tolerance`` off and on, beside the clean queries (:func:`evaluate_typos`). The
speller's rules were chosen on the even-numbered queries; the report is on the odd-numbered ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aisle_export.core.encoding import embed_texts, encode_texts
from aisle_export.data.catalog import Catalog, read_catalog
from aisle_export.index.writing import catalog_index
from aisle_export.judge.metrics import ndcg_at_k, recall_at_k
from aisle_server.encoder import OnnxEncoder
from aisle_server.index import CatalogIndex
from aisle_server.lexical import LexicalIndex
from aisle_server.ranking import RankingConfig, RankRequest, rank
from aisle_server.tokenization import TextTokenizer

DEFAULT_CSV = Path(__file__).resolve().parents[4] / "shared" / "data" / "bigbasket" / "products.csv"
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.8)
#: The systems the typo study compares (the default hybrid, and BM25 alone where typos hurt most).
TYPO_SYSTEMS = {
    "hybrid (default)": RankingConfig(),
    "BM25 alone": RankingConfig(search_mode="lexical"),
    "dense alone": RankingConfig(search_mode="dense"),
}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def write_proxy_catalog(products_csv: Path, out_csv: Path) -> tuple[Path, dict[str, list[str]]]:
    """Aisle catalog CSV (title, description=brand, category) and queries → relevant item ids."""
    by_brand_type: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_type: dict[str, list[str]] = defaultdict(list)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(products_csv, newline="", encoding="utf-8") as src,
        open(out_csv, "w", newline="", encoding="utf-8") as dst,
    ):
        writer = csv.writer(dst)
        writer.writerow(["item_id", "title", "description", "category", "popularity"])
        for row in csv.DictReader(src):
            title, brand, kind = row["product"].strip(), row["brand"].strip(), row["type"].strip()
            if not title:
                continue
            writer.writerow([row["index"], title, brand, row["category"].strip(), row["rating"] or 0])
            if brand:
                by_brand_type[(brand, kind)].append(row["index"])
            by_type[kind].append(row["index"])
    rng = random.Random(0)
    pairs = sorted(k for k, v in by_brand_type.items() if len(v) >= 3)
    types = sorted(k for k, v in by_type.items() if len(v) >= 5)
    queries = {f"{brand} {kind}": by_brand_type[(brand, kind)] for brand, kind in rng.sample(pairs, 300)}
    queries.update({kind: by_type[kind] for kind in rng.sample(types, 100)})
    return out_csv, queries


def build_index(catalog: Catalog, encoder_dir: Path, cache: Path) -> CatalogIndex:
    texts = catalog.texts()
    if cache.exists():
        embeddings = np.load(cache)
    else:
        embeddings = embed_texts(texts, encoder_dir)
        np.save(cache, embeddings)
    return catalog_index(catalog, embeddings, lexical=LexicalIndex.build(texts))


def all_systems() -> dict[str, RankingConfig]:
    """BM25 alone, dense alone and hybrid at each of :data:`WEIGHTS`, by name."""
    systems = {"BM25 alone": RankingConfig(search_mode="lexical"), "dense alone": RankingConfig(search_mode="dense")}
    systems.update(
        {f"hybrid (lexical_weight={w})": RankingConfig(search_mode="hybrid", lexical_weight=w) for w in WEIGHTS}
    )
    return systems


def evaluate(
    index: CatalogIndex,
    queries: dict[str, list[str]],
    query_dir: Path,
    k: int = 10,
    systems: dict[str, RankingConfig] | None = None,
) -> dict:
    """nDCG@k and Recall@k of each system (default :func:`all_systems`) with ``query_dir``'s query tower."""
    tokenizer, encoder = TextTokenizer.from_directory(query_dir), OnnxEncoder(query_dir / "model.onnx")
    texts = list(queries)
    vectors = encode_texts(encoder, tokenizer, texts)
    systems = systems if systems is not None else all_systems()
    kinds = {"brand + type": [q for q in texts if q not in _types(queries)], "type": _types(queries)}
    results: dict = {}
    for name, config in tqdm(systems.items(), desc="search systems"):
        per_query = {}
        for text, vector in zip(texts, vectors):
            ranked = rank(index, RankRequest(vector, [], np.zeros(0), k, 0.0, config, text)).item_ids
            per_query[text] = (ndcg_at_k(ranked, queries[text], k), recall_at_k(ranked, queries[text], k))
        results[name] = {
            kind: {
                "ndcg@10": float(np.mean([per_query[q][0] for q in qs])),
                "recall@10": float(np.mean([per_query[q][1] for q in qs])),
                "queries": len(qs),
            }
            for kind, qs in {**kinds, "all": texts}.items()
        }
    return results


def misspell(query: str, rng: random.Random) -> str:
    """``query`` with one edit in one of its alphabetic words of four letters or more (unchanged if none)."""
    words = query.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not candidates:
        return query
    i = rng.choice(candidates)
    word = words[i]
    while True:
        at = rng.randrange(1, len(word))  # shoppers rarely get the first letter wrong
        edit = rng.choice(("delete", "insert", "replace", "swap"))
        if edit == "delete":
            typo = word[:at] + word[at + 1 :]
        elif edit == "insert":
            typo = word[:at] + rng.choice(_LETTERS) + word[at:]
        elif edit == "replace":
            typo = word[:at] + rng.choice(_LETTERS) + word[at + 1 :]
        else:
            at = min(at, len(word) - 2)
            typo = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        if typo.lower() != word.lower():
            break
    return " ".join([*words[:i], typo, *words[i + 1 :]])


def evaluate_typos(
    index: CatalogIndex, queries: dict[str, list[str]], query_dir: Path, k: int = 10, seed: int = 0
) -> dict:
    """nDCG@k of :data:`TYPO_SYSTEMS` on the clean queries and on their misspelled copies, with
    ``typo_tolerance`` off and on; the misspelled queries are listed in the result."""
    rng = random.Random(seed)
    typos = {query: misspell(query, rng) for query in queries}
    tokenizer, encoder = TextTokenizer.from_directory(query_dir), OnnxEncoder(query_dir / "model.onnx")
    texts = list(queries)
    vectors = {
        "clean": dict(zip(texts, encode_texts(encoder, tokenizer, texts))),
        "typos": dict(zip(texts, encode_texts(encoder, tokenizer, [typos[q] for q in texts]))),
    }
    results: dict = {"queries": len(texts), "changed": sum(typos[q] != q for q in texts), "systems": {}}
    for name, base in tqdm(TYPO_SYSTEMS.items(), desc="typo study"):
        results["systems"][name] = {}
        for tolerance in (False, True):
            config = replace(base, typo_tolerance=tolerance)
            for kind in ("clean", "typos"):
                ndcg = []
                for query in texts:
                    text = query if kind == "clean" else typos[query]
                    request = RankRequest(vectors[kind][query], [], np.zeros(0), k, 0.0, config, text)
                    ndcg.append(ndcg_at_k(rank(index, request).item_ids, queries[query], k))
                results["systems"][name][f"{kind}, tolerance {'on' if tolerance else 'off'}"] = float(np.mean(ndcg))
    results["examples"] = [[q, typos[q]] for q in texts[:: max(1, len(texts) // 20)]]
    return results


def typos_to_markdown(results: dict) -> str:
    columns = ["clean, tolerance off", "clean, tolerance on", "typos, tolerance off", "typos, tolerance on"]
    lines = [
        f"{results['queries']} BigBasket proxy queries (the odd-numbered half: the speller's rules were chosen on "
        f"the even-numbered half), {results['changed']} of them misspelled (one edit in one word); nDCG@10.",
        "",
        "| system | " + " | ".join(columns) + " | typos / clean, on |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name, row in results["systems"].items():
        kept = row["typos, tolerance on"] / row["clean, tolerance on"] if row["clean, tolerance on"] else float("nan")
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + f" | {kept:.1%} |")
    lines += ["", "| query | misspelled |", "|---|---|"]
    lines += [f"| {clean} | {typo} |" for clean, typo in results["examples"]]
    return "\n".join(lines) + "\n"


def plot_typos(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["clean, tolerance off", "typos, tolerance off", "typos, tolerance on"]
    names = list(results["systems"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(columns)
    for j, column in enumerate(columns):
        values = [results["systems"][name][column] for name in names]
        ax.bar(np.arange(len(names)) + j * width, values, width, label=column)
    ax.set_xticks(np.arange(len(names)) + width * (len(columns) - 1) / 2, names)
    ax.set_ylabel("nDCG@10")
    ax.set_title("BigBasket proxy: one typo per query, typo tolerance off and on")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _types(queries: dict[str, list[str]]) -> list[str]:
    return list(queries)[300:]


def to_markdown(results: dict) -> str:
    lines = ["| system | nDCG@10 all | nDCG@10 brand + type | nDCG@10 type | Recall@10 all |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['all']['ndcg@10']:.3f} | {r['brand + type']['ndcg@10']:.3f} | "
            f"{r['type']['ndcg@10']:.3f} | {r['all']['recall@10']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--products", type=Path, default=DEFAULT_CSV, help="BigBasket products.csv (kept outside the project)"
    )
    parser.add_argument(
        "--repo", type=Path, default=Path("build/model_repository"), help="exported repository (towers)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("build/search_eval"))
    parser.add_argument("--out", type=Path, default=Path("perf/results"))
    args = parser.parse_args(argv)
    if not args.products.exists():
        raise SystemExit(f"{args.products} not found: this evaluation needs the BigBasket catalog in ../shared/data")
    catalog_csv, queries = write_proxy_catalog(args.products, args.workdir / "catalog.csv")
    catalog = read_catalog(catalog_csv)
    index = build_index(catalog, args.repo / "item_encoder" / "1", args.workdir / "embeddings.npy")
    results = evaluate(index, queries, args.repo / "query_encoder" / "1")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_bigbasket.json").write_text(json.dumps(results, indent=2) + "\n")
    table = to_markdown(results)
    (args.out / "search_bigbasket.md").write_text(table)
    print(table)
    held_out = dict(list(queries.items())[1::2])
    typos = evaluate_typos(index, held_out, args.repo / "query_encoder" / "1")
    (args.out / "search_bigbasket_typos.json").write_text(json.dumps(typos, indent=2) + "\n")
    (args.out / "search_bigbasket_typos.md").write_text(typos_to_markdown(typos))
    plot_typos(typos, args.out / "search_bigbasket_typos.png")
    print(typos_to_markdown(typos))


if __name__ == "__main__":
    main()
