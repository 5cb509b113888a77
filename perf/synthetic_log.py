"""A synthetic store: a catalog of short product texts and a shopping log with Zipf popularity and
repeat shoppers, written as the files ``aisle finetune --interactions --catalog`` reads.

For ``perf.bench_finetune_scale``: the point is the *shape* of a grocery log at any size (a few
items are bought by everyone, most rarely; each shopper has a small repertoire bought again and
again and otherwise picks new items, mostly from its favourite aisles), not realism of the texts.
The log is written in chunks of events, never the whole of it in memory.

    python -m perf.synthetic_log --items 100000 --events 1000000 --out /tmp/aisle-synth
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

WORDS = [
    "organic",
    "fresh",
    "whole",
    "skimmed",
    "sliced",
    "smoked",
    "salted",
    "sweet",
    "spicy",
    "frozen",
    "crunchy",
    "creamy",
    "dark",
    "light",
    "classic",
    "family",
    "mini",
    "large",
    "extra",
    "wild",
    "free-range",
    "roasted",
    "plain",
    "vanilla",
    "lemon",
    "garlic",
    "honey",
    "chilli",
    "tomato",
    "cheddar",
    "basmati",
    "wholemeal",
    "sourdough",
    "greek",
    "italian",
    "mexican",
    "thai",
    "coconut",
    "almond",
    "oat",
    "rice",
    "chicken",
    "beef",
    "salmon",
    "tuna",
    "prawn",
    "tofu",
    "bean",
    "lentil",
    "pasta",
    "noodle",
    "bread",
    "milk",
    "yoghurt",
    "butter",
    "cheese",
    "egg",
    "apple",
    "banana",
    "berry",
    "grape",
    "mango",
    "orange",
    "potato",
    "onion",
    "carrot",
    "pepper",
    "spinach",
    "lettuce",
    "mushroom",
    "coffee",
    "tea",
    "juice",
    "water",
    "soda",
    "crisps",
    "biscuit",
    "chocolate",
    "cereal",
    "granola",
    "soup",
    "sauce",
    "oil",
    "vinegar",
]
CATEGORIES = tuple(f"aisle {i:02d}" for i in range(60))
START = 1_700_000_000.0  # 2023-11-14, well in the past: the reader rejects future times
DAYS = 180
CHUNK = 200_000  # events per written block


def write_catalog(path: Path, items: int, seed: int = 0) -> np.ndarray:
    """``items`` products (3–6 word titles, a category, a short description); returns each item's category."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, len(CATEGORIES), items)
    words = np.array(WORDS)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "description", "category", "created_at"])
        lengths = rng.integers(3, 7, items)
        picks = rng.integers(0, len(words), (items, 8))
        for i in range(items):
            title = " ".join(words[picks[i, : lengths[i]]])
            description = f"{words[picks[i, 6]]} {words[picks[i, 7]]}, {int(picks[i, 0]) * 25 + 100} g"
            writer.writerow([f"p{i}", title, description, CATEGORIES[category[i]], int(START - 86_400 * (i % 900))])
    return category


def write_log(path: Path, items: int, events: int, category: np.ndarray, seed: int = 0) -> dict:
    """``events`` purchases by ``events // 50`` shoppers: 60% from the shopper's repertoire of
    4–20 items (repeats), the rest new picks, Zipf(1.1)-popular, 70% of them in the shopper's two
    favourite aisles. Times spread over 180 days, in no particular order in the file."""
    rng = np.random.default_rng(seed + 1)
    users = max(10, events // 50)
    ranks = np.arange(1, items + 1, dtype=np.float64)
    popularity = ranks**-1.1
    popularity /= popularity.sum()
    popular_order = rng.permutation(items)  # which item has which popularity rank
    by_category = [popular_order[np.isin(category[popular_order], [c])] for c in range(len(CATEGORIES))]
    category_p = [popularity[: len(rows)] / popularity[: len(rows)].sum() for rows in by_category]
    favourite = rng.integers(0, len(CATEGORIES), (users, 2))
    repertoire_size = rng.integers(4, 21, users)
    repertoire = popular_order[rng.choice(items, (users, 20), p=popularity)]
    activity = rng.pareto(1.5, users) + 1.0  # some shoppers shop far more often
    activity /= activity.sum()
    written = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "timestamp", "event_type"])
        while written < events:
            n = min(CHUNK, events - written)
            user = rng.choice(users, n, p=activity)
            item = np.empty(n, dtype=np.int64)
            repeat = rng.random(n) < 0.6
            item[repeat] = repertoire[
                user[repeat], (rng.random(repeat.sum()) * repertoire_size[user[repeat]]).astype(int)
            ]
            new = np.flatnonzero(~repeat)
            in_favourite = rng.random(len(new)) < 0.7
            aisle = favourite[user[new], rng.integers(0, 2, len(new))]
            for c in range(len(CATEGORIES)):
                chosen = new[in_favourite & (aisle == c)]
                if len(chosen):
                    item[chosen] = by_category[c][rng.choice(len(by_category[c]), len(chosen), p=category_p[c])]
            anywhere = new[~in_favourite]
            item[anywhere] = popular_order[rng.choice(items, len(anywhere), p=popularity)]
            ts = START + rng.random(n) * DAYS * 86_400
            writer.writerows(
                zip((f"u{u}" for u in user), (f"p{i}" for i in item), np.round(ts).astype(np.int64), ["purchase"] * n)
            )
            written += n
    return {"items": items, "events": events, "users": users}


def write_store(out: Path, items: int, events: int, seed: int = 0) -> tuple[Path, Path, dict]:
    """``out/catalog.csv`` and ``out/interactions.csv`` (reused when already written with these sizes)."""
    out.mkdir(parents=True, exist_ok=True)
    catalog, log, stamp = out / "catalog.csv", out / "interactions.csv", out / "sizes.txt"
    wanted = f"{items} {events} {seed}"
    if stamp.exists() and stamp.read_text() == wanted and catalog.exists() and log.exists():
        return log, catalog, {"items": items, "events": events, "users": max(10, events // 50), "reused": True}
    category = write_catalog(catalog, items, seed)
    info = write_log(log, items, events, category, seed)
    stamp.write_text(wanted)
    return log, catalog, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    log, catalog, info = write_store(args.out, args.items, args.events, args.seed)
    print(f"{log} and {catalog}: {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
