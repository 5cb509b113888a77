"""``aisle distill``: a smaller, faster *query* tower that lands in the teacher's embedding space.

The student learns the teacher's L2-normalized sentence vectors (1 − cosine, plus a listwise KL
term on query→catalog score distributions), so it runs against the index the teacher's item tower
built — no re-index. Hence the pairing rule: a student is valid only with the item tower it was
distilled for. ``distill.json`` in the student directory records that teacher's checksum
(:func:`teacher_fingerprint`) and the student's gate figures; ``aisle export --query-tower STUDENT``
refuses a student whose teacher is not the item tower being exported, or one below its gate
(:func:`check_pairing`).

Students (:data:`STUDENTS`): ``layers`` (every other transformer layer of the teacher, fine-tuned)
and ``static`` (a token table, mean pooled: :mod:`.static_student`). Training lives in
:mod:`.distill_train` (torch); everything here but :func:`distill` is plain Python and numpy.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISTILL_FILE = "distill.json"
#: weight files whose bytes identify a tower (the first present ones, sorted by name, are hashed)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HELD_OUT_EVERY = 20  # one text in 20 (by checksum) never trained on: the gate's held-out text
GATE_SYSTEM = "dense alone"  # the encoder alone decides the ranking: the strictest retention figure
SERVED_SYSTEM = "hybrid (lexical_weight=0.5)"  # the served default (search_mode=hybrid)
_WORD = re.compile(r"[^\W_][\w'&-]*", re.UNICODE)


class DistillError(ValueError):
    """A student that must not be served: wrong teacher, below its gate, or not a student at all."""


@dataclass(frozen=True)
class Student:
    """One kind of student: its name on the command line, what it is for, and its quality gate."""

    name: str
    purpose: str
    min_retention: float  # student nDCG@10 / teacher nDCG@10 on the search proxy, at least


STUDENTS: dict[str, Student] = {
    "layers": Student(
        "layers",
        "every other layer of the teacher (6 → 3), fine-tuned: about half the query-tower cost, nearly its quality",
        0.97,
    ),
    "static": Student(
        "static",
        "a token-embedding table, mean pooled: a lookup instead of a transformer, for CPU-bound query traffic",
        0.90,
    ),
}


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
            from .catalog import read_catalog

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


def teacher_fingerprint(tower_dir: Path) -> str:
    """sha256 over a tower's weight files (name and bytes): equal weights, equal fingerprint."""
    tower_dir = Path(tower_dir)
    files = sorted(p for p in tower_dir.iterdir() if p.name in WEIGHT_FILES)
    if not files:
        raise DistillError(f"{tower_dir}: no weight file ({', '.join(WEIGHT_FILES)}) to identify the tower by")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def judge(kind: str, teacher_ndcg: float | None, student_ndcg: float | None) -> dict:
    """The gate of student ``kind``: nDCG@10 retention against the teacher, and whether it passes.

    Unmeasured figures (no search proxy) fail: a student nobody judged is not served by default.
    """
    required = STUDENTS[kind].min_retention
    if teacher_ndcg is None or student_ndcg is None or teacher_ndcg <= 0:
        return {"metric": f"{GATE_SYSTEM} nDCG@10", "retention": None, "required": required, "passed": False}
    retention = student_ndcg / teacher_ndcg
    return {
        "metric": f"{GATE_SYSTEM} nDCG@10",
        "retention": round(retention, 4),
        "required": required,
        "passed": retention >= required,
    }


def read_record(directory: Path) -> dict | None:
    """The ``distill.json`` of a student directory, or ``None`` for any other directory."""
    path = Path(directory) / DISTILL_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_pairing(record: dict, item_tower: Path, allow_below_gate: bool = False) -> None:
    """Refuse (:class:`DistillError`) a student not distilled for ``item_tower``, or one below its gate."""
    kind = record.get("student")
    if kind not in STUDENTS:
        raise DistillError(f"{DISTILL_FILE}: unknown student {kind!r}; expected one of {sorted(STUDENTS)}")
    served = teacher_fingerprint(item_tower)
    if record.get("item_tower_sha256") != served:
        raise DistillError(
            f"the {kind} student was distilled for the item tower {record.get('item_tower')!r} "
            f"(sha256 {str(record.get('item_tower_sha256'))[:12]}…), but the item tower here is {str(item_tower)!r} "
            f"(sha256 {served[:12]}…): a distilled query tower only matches the index of its own teacher; "
            f"export with --item-tower {record.get('item_tower')} or distill again from this item tower"
        )
    gate = record.get("gate", {}).get("verdict", {})
    if not gate.get("passed") and not allow_below_gate:
        raise DistillError(
            f"the {kind} student is below its gate: {gate.get('metric')} retention {gate.get('retention')} "
            f"(need ≥ {gate.get('required')}); pass --allow-below-gate to serve it anyway"
        )


@dataclass(frozen=True)
class Teacher:
    """What a student learns from (``query``: the served query tower) and pairs with (``item``: the item tower)."""

    query: Path
    item: Path


def resolve_teacher(teacher: str | Path | None) -> Teacher:
    """``None`` → the default tower on both sides; an ``aisle finetune --out`` dir → its two towers; a tower → itself."""
    from .finetune import ITEM_TOWER, QUERY_TOWER
    from .towers import resolve_tower

    if teacher is not None and (Path(teacher) / QUERY_TOWER).is_dir() and (Path(teacher) / ITEM_TOWER).is_dir():
        return Teacher(resolve_tower(Path(teacher) / QUERY_TOWER), resolve_tower(Path(teacher) / ITEM_TOWER))
    tower = resolve_tower(teacher)
    return Teacher(tower, tower)


def _onnx_of(tower: Path, workdir: Path) -> Path:
    """The tower exported to ONNX once per weights, under ``workdir`` (parity-checked by ``export_tower``)."""
    from .onnx_export import export_tower

    directory = Path(workdir) / f"tower-{teacher_fingerprint(tower)[:12]}"
    if not (directory / "model.onnx").is_file():
        export_tower(tower, directory)
    return directory


def _cached(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()`` saved to ``path`` (``.npy``) the first time, loaded from it afterwards."""
    import numpy as np

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
    import numpy as np

    from .distill_gate import onnx_vectors

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
) -> dict:
    """Train student ``kind`` into ``out``, judge it against the teacher, write ``out/distill.json``; the record.

    Without ``corpus`` the BigBasket proxy catalog (``products``, default ``../shared/data``) is the
    training text. ``config``: a :class:`aisle_export.distill_train.TrainConfig` (default: per kind).
    """
    from aisle_server.encoder import token_limits
    from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer

    from .distill_gate import gate
    from .distill_train import DEFAULTS, token_table, train_layers, train_static
    from .indexing import sha256_file
    from .onnx_export import export_tower
    from .precision_texts import HELD_OUT_TEXTS
    from .search_eval import DEFAULT_CSV, write_proxy_catalog
    from .static_student import write_static_onnx

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
    if kind == "layers":
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
