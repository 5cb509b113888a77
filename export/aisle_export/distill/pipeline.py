"""``aisle distill``: a smaller, faster *query* tower that lands in the teacher's embedding space.

The student learns the teacher's L2-normalized sentence vectors (1 − cosine, plus a listwise KL
term on query→catalog score distributions), so it runs against the index the teacher's item tower
built — no re-index. The pairing rule that keeps it so (a student serves only beside towers of its
teacher's space), the students' registry and their gates live on the ground floor
(:mod:`aisle_export.core.spaces`): export, indexing and serving read them without this stage.

Here: the training corpus and derived queries, the teacher's vectors, and the run that trains
(:mod:`aisle_export.distill.train`, torch), judges (:mod:`aisle_export.distill.gate`) and records
a student (``distill.json``). A ``static`` student's graph is :mod:`aisle_export.build.static_student`.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aisle_export.build.onnx_export import export_tower
from aisle_export.build.precision_texts import HELD_OUT_TEXTS
from aisle_export.build.static_student import write_static_onnx
from aisle_export.core.files import sha256_file
from aisle_export.core.handoff import ITEM_TOWER, QUERY_TOWER
from aisle_export.core.spaces import DISTILL_FILE, STUDENTS, DistillError, read_record, teacher_fingerprint
from aisle_export.core.towers import LARGE_TEACHER, fetch_large_teacher, resolve_tower
from aisle_export.data.catalog import read_catalog
from aisle_export.distill.gate import gate, onnx_vectors
from aisle_export.distill.train import DEFAULTS, token_table, train_layers, train_static
from aisle_export.judge.search import DEFAULT_CSV, write_proxy_catalog
from aisle_server.encoder import token_limits
from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer

HELD_OUT_EVERY = 20  # one text in 20 (by checksum) never trained on: the gate's held-out text
_WORD = re.compile(r"[^\W_][\w'&-]*", re.UNICODE)


@dataclass
class Corpus:
    """Training text: item texts (what the item tower embeds) and the titles/categories queries come from."""

    texts: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)


def read_corpus(paths: Sequence[Path]) -> Corpus:
    """Catalog files (``.csv``/``.jsonl``/``.parquet``, via ``read_catalog``) or plain text, one text a line."""
    corpus = Corpus()
    for path in paths:
        path = Path(path)
        if path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".parquet"):
            catalog = read_catalog(path, skip_bad_rows=True)
            corpus.texts += catalog.texts()
            corpus.titles += [str(t) for t in catalog.titles.tolist()]
            corpus.categories += [str(c) for c in catalog.categories.tolist()]
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            corpus.texts += lines
            corpus.titles += lines
            corpus.categories += [""] * len(lines)
    if not corpus.texts:
        raise DistillError(f"the corpus {[str(p) for p in paths]} holds no text")
    return corpus


def derive_queries(titles: Sequence[str], categories: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` query-like texts made from the catalog, for when there is no search log.

    Three shapes, in turn: a title prefix (1–3 words: "Fortune Sunlite"), 2–3 of a title's words in
    order ("Sunlite Oil 1"), and a category with one title word ("Foodgrains, Oil & Masala oil").
    Lower-cased half the time, as people type. Deterministic for a given ``seed``; duplicates removed.
    """
    rng = random.Random(seed)
    usable = [(t, c) for t, c in zip(titles, categories) if _WORD.search(t)]
    if not usable or n < 1:
        return []
    out: dict[str, None] = {}
    for attempt in range(n * 4):
        if len(out) >= n:
            break
        title, category = usable[rng.randrange(len(usable))]
        words = _WORD.findall(title)
        shape = attempt % 3
        if shape == 0:
            query = " ".join(words[: rng.randint(1, min(3, len(words)))])
        elif shape == 1 and len(words) >= 2:
            picks = sorted(rng.sample(range(len(words)), rng.randint(2, min(3, len(words)))))
            query = " ".join(words[i] for i in picks)
        elif category:
            query = f"{category} {rng.choice(words)}"
        else:
            query = rng.choice(words)
        out[query.lower() if rng.random() < 0.5 else query] = None
    return list(out)


def is_held_out(text: str) -> bool:
    """Whether ``text`` belongs to the gate's held-out set (stable across runs and machines)."""
    return zlib.crc32(text.encode("utf-8")) % HELD_OUT_EVERY == 0


def split_held_out(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train, held out) by :func:`is_held_out`, order kept."""
    train, held = [], []
    for text in texts:
        (held if is_held_out(text) else train).append(text)
    return train, held


@dataclass(frozen=True)
class Teacher:
    """What a student learns from (``query``: the served query tower) and pairs with (``item``: the item tower)."""

    query: Path
    item: Path


def resolve_teacher(teacher: str | Path | None, cache_dir: Path = Path("build/towers")) -> Teacher:
    """``None`` → the default tower on both sides; ``all-mpnet-base-v2`` → the larger teacher (fetched
    into ``cache_dir``); an ``aisle finetune --out`` dir → its two towers; a tower → itself."""

    if str(teacher) == LARGE_TEACHER and not Path(LARGE_TEACHER).is_dir():
        tower = fetch_large_teacher(cache_dir)
        return Teacher(tower, tower)

    if teacher is not None and (Path(teacher) / QUERY_TOWER).is_dir() and (Path(teacher) / ITEM_TOWER).is_dir():
        return Teacher(resolve_tower(Path(teacher) / QUERY_TOWER), resolve_tower(Path(teacher) / ITEM_TOWER))
    tower = resolve_tower(teacher)
    return Teacher(tower, tower)


def _onnx_of(tower: Path, workdir: Path) -> Path:
    """The tower exported to ONNX once per weights, under ``workdir`` (parity-checked by ``export_tower``)."""

    directory = Path(workdir) / f"tower-{teacher_fingerprint(tower)[:12]}"
    if not (directory / "model.onnx").is_file():
        export_tower(tower, directory)
    return directory


def _cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()`` saved to ``path`` (``.npy``) the first time, loaded from it afterwards."""

    if path.is_file():
        return np.load(path)
    value = compute()
    np.save(path, value)
    return value


@dataclass
class DistillData:
    """The texts of one run with the teacher's vectors: train split, held-out split, the catalog index."""

    train: list[str]
    targets: object  # np.ndarray [len(train), dim]: the teacher query tower's vectors
    held_out_items: list[str]
    held_out_queries: list[str]
    items: object  # np.ndarray [catalog, dim]: the teacher item tower's vectors (the index)


def prepare_data(corpus: Corpus, query_onnx: Path, item_onnx: Path, queries: int, seed: int) -> DistillData:
    """Derive queries, split off held-out text, and compute the teacher's vectors (cached per tower)."""

    catalog = corpus.texts  # one row per item: the index (the search gate's cache holds the same rows)
    row = {text: i for i, text in reversed(list(enumerate(catalog)))}  # a text's first row
    train_items, held_items = split_held_out(list(row))
    train_queries, held_queries = split_held_out(derive_queries(corpus.titles, corpus.categories, queries, seed))
    items = onnx_vectors(item_onnx, catalog, cache_dir=item_onnx)
    item_targets = items if query_onnx == item_onnx else onnx_vectors(query_onnx, catalog, cache_dir=query_onnx)
    targets = np.concatenate(
        [item_targets[[row[t] for t in train_items]], onnx_vectors(query_onnx, train_queries, cache_dir=query_onnx)]
    )
    return DistillData(train_items + train_queries, targets, held_items, held_queries, items)


def distill(
    kind: str,
    out: Path,
    teacher: str | Path | None = None,
    corpus: Sequence[Path] = (),
    workdir: Path = Path("build/distill"),
    products: Path | None = None,
    config: object | None = None,
    queries: int = 20000,
    held_out_cap: int = 500,
    judge_only: bool = False,
) -> dict:
    """Train student ``kind`` into ``out``, judge it against the teacher, write ``out/distill.json``; the record.

    Without ``corpus`` the BigBasket proxy catalog (``products``, default ``../shared/data``) is the
    training text. ``config``: a :class:`aisle_export.distill.train.TrainConfig` (default: per kind).
    ``judge_only``: no training; judge the student already in ``out`` again (same teacher, corpus
    and held-out text), e.g. after the gate gained a benchmark.
    """

    if kind not in STUDENTS:
        raise DistillError(f"unknown student {kind!r}; expected one of {sorted(STUDENTS)}")
    out, workdir, products = Path(out), Path(workdir), Path(products or DEFAULT_CSV)
    config = config or DEFAULTS[kind]
    pair = resolve_teacher(teacher)
    query_onnx, item_onnx = _onnx_of(pair.query, workdir), _onnx_of(pair.item, workdir)
    if not corpus:
        if not products.is_file():
            raise DistillError(f"no --corpus given and {products} (the BigBasket catalog) is not there")
        corpus = [write_proxy_catalog(products, workdir / "bigbasket_catalog.csv")[0]]
    data = prepare_data(read_corpus(corpus), query_onnx, item_onnx, queries, getattr(config, "seed", 0))
    tokenizer = TextTokenizer.from_directory(query_onnx)
    print(f"[aisle distill] {kind}: {len(data.train)} training texts, {len(data.items)} catalog items", flush=True)
    previous = read_record(out) if judge_only else None
    if judge_only:
        if previous is None or previous.get("student") != kind:
            raise DistillError(f"--judge: {out} holds no {kind} student (no {DISTILL_FILE} of one)")
        report, student_onnx = previous["train"], out / previous["onnx"]
    elif kind == "layers":
        report = train_layers(pair.query, out, tokenizer, data.train, data.targets, data.items, config)  # type: ignore[arg-type]
        student_onnx = out / "onnx"
        export_tower(out, student_onnx)
    else:
        table = _cached(
            query_onnx / "token_table.npy", lambda: token_table(query_onnx, tokenizer, token_limits(query_onnx)[1] or 0)
        )
        table, report = train_static(table, tokenizer, data.train, data.targets, data.items, config)  # type: ignore[arg-type]
        out.mkdir(parents=True, exist_ok=True)
        write_static_onnx(table, out / "model.onnx")
        for name in (TOKENIZER_FILE, SETTINGS_FILE):
            (out / name).write_bytes((query_onnx / name).read_bytes())
        student_onnx = out
    held_out = [*HELD_OUT_TEXTS, *data.held_out_items[:held_out_cap], *data.held_out_queries[:held_out_cap]]
    figures = gate(
        kind, query_onnx, student_onnx, held_out, data.held_out_queries[:held_out_cap], data.items, products, workdir
    )  # type: ignore[arg-type]
    record = {
        "student": kind,
        "purpose": STUDENTS[kind].purpose,
        "teacher": str(pair.query),
        "item_tower": str(pair.item),
        "item_tower_sha256": teacher_fingerprint(pair.item),
        "item_encoder_onnx_sha256": sha256_file(item_onnx / "model.onnx"),
        "onnx": str(student_onnx.relative_to(out)),
        "corpus": [str(p) for p in corpus],
        "train": report,
        "gate": figures,
    }
    (out / DISTILL_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record
