"""``aisle distill``: a smaller, faster *query* tower that lands in the teacher's embedding space.

The student learns the teacher's L2-normalized sentence vectors (1 − cosine, plus a listwise KL
term on query→catalog score distributions), so it runs against the index the teacher's item tower
built — no re-index. Hence the pairing rule: a student is valid only with the item tower it was
distilled for. ``distill.json`` in the student directory records that teacher's checksum
(:func:`teacher_fingerprint`: the student's *space*) and the student's gate figures; ``aisle export``
refuses a student (as ``--query-tower`` or ``--item-tower``) beside a tower of another space, or one
below its gate (:func:`check_pairing`), and records the space beside each exported encoder
(``space.json``) so ``aisle serve`` refuses a repository assembled by hand from mismatched parts.

Students (:data:`STUDENTS`): ``layers`` (a few of the teacher's transformer layers, fine-tuned)
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
SPACE_FILE = "space.json"  # beside each exported encoder and in each index manifest: the space its vectors live in
#: weight files whose bytes identify a tower (the first present ones, sorted by name, are hashed)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HELD_OUT_EVERY = 20  # one text in 20 (by checksum) never trained on: the gate's held-out text
DENSE_SYSTEM = "dense alone"  # the encoder alone decides the ranking: reported beside the gate, the strictest figure
SERVED_SYSTEM = "hybrid (lexical_weight=0.5)"  # the served default (search_mode=hybrid): what the gate judges
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
        "a few of the teacher's layers (default 2 of 6: the first and the last), fine-tuned: a fraction of the "
        "query-tower cost at nearly its quality",
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
        return {"metric": f"{SERVED_SYSTEM} nDCG@10", "retention": None, "required": required, "passed": False}
    retention = student_ndcg / teacher_ndcg
    return {
        "metric": f"{SERVED_SYSTEM} nDCG@10",
        "retention": round(retention, 4),
        "required": required,
        "passed": retention >= required,
    }


def read_record(directory: Path) -> dict | None:
    """The ``distill.json`` of a student directory, or ``None`` for any other directory."""
    path = Path(directory) / DISTILL_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_gate(record: dict, role: str, allow_below_gate: bool = False) -> None:
    """Refuse (:class:`DistillError`) a record that is not a known student, or one below its gate."""
    kind = record.get("student")
    if kind not in STUDENTS:
        raise DistillError(f"{DISTILL_FILE}: unknown student {kind!r}; expected one of {sorted(STUDENTS)}")
    gate = record.get("gate", {}).get("item_verdict" if role == "item" else "verdict", {})
    if not gate.get("passed") and not allow_below_gate:
        raise DistillError(
            f"the {kind} student (as the {role} tower) is below its gate: {gate.get('metric')} retention "
            f"{gate.get('retention')} (need ≥ {gate.get('required')}); pass --allow-below-gate to serve it anyway"
        )


@dataclass(frozen=True)
class Side:
    """One tower of a pairing: where it came from, the space its vectors live in, its ``distill.json``."""

    tower: str
    space: str  # the fingerprint of the item tower whose index these vectors are compared with
    record: dict | None = None


def side_of(tower: str | Path | None) -> Side:
    """A student lives in the space of the item tower it was distilled for; any other tower in its own."""
    from .towers import resolve_tower

    record = read_record(Path(tower)) if tower is not None else None
    if record is not None:
        return Side(str(tower), str(record.get("item_tower_sha256")), record)
    path = resolve_tower(tower)
    return Side(str(path), teacher_fingerprint(path))


def check_pairing(query_tower: str | Path | None, item_tower: str | Path | None, allow_below_gate: bool = False) -> str:
    """The space a query tower and an item tower share; :class:`DistillError` for a pairing that must not serve.

    Valid: a student (on either side, or both) beside a tower of the space it was distilled for —
    a query student with its teacher's item tower (no re-index), an item student with its teacher's
    query tower (a fast re-index), two students of one teacher. Refused: a student beside any other
    tower, and a student below its gate unless ``allow_below_gate``. Two plain towers (pretrained,
    or an ``aisle finetune`` pair) are trusted as given; their space is the item tower's.
    """
    query, item = side_of(query_tower), side_of(item_tower)
    for side, role in ((query, "query"), (item, "item")):
        if side.record is not None:
            check_gate(side.record, role, allow_below_gate)
    if (query.record is not None or item.record is not None) and query.space != item.space:
        student, role, other, other_role = (
            (query, "query", item, "item") if query.record else (item, "item", query, "query")
        )
        assert student.record is not None
        raise DistillError(
            f"the {student.record['student']} {role} tower {student.tower!r} was distilled for the item tower "
            f"{student.record.get('item_tower')!r} (sha256 {student.space[:12]}…), but the {other_role} tower here "
            f"is {other.tower!r} (its space: sha256 {other.space[:12]}…): a distilled tower only works beside "
            f"the towers of its teacher's space; pair it with {student.record.get('item_tower')} or distill again"
        )
    return item.space


def write_space(encoder_dir: Path, space: str, tower: str, record: dict | None) -> None:
    """Record beside an exported encoder which space its vectors live in (and whether it is a student)."""
    doc = {"space": space, "tower": tower, "student": record.get("student") if record else None}
    (Path(encoder_dir) / SPACE_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def read_space(encoder_dir: Path) -> str | None:
    """The space recorded beside an exported encoder; ``None`` for one exported before spaces were recorded."""
    path = Path(encoder_dir) / SPACE_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("space") if path.is_file() else None


def check_served_spaces(repo: Path) -> None:
    """Refuse a repository whose query encoder, item encoder and newest index live in different spaces.

    ``aisle export`` never writes such a repository; this catches one put together by hand (a student
    copied over ``query_encoder/1``, an index built before the item tower was swapped). Parts written
    before spaces were recorded are not judged.
    """
    from aisle_server.index import INDEX_DIRNAME, rerank_versions

    repo = Path(repo)
    spaces = {
        "query_encoder/1": read_space(repo / "query_encoder" / "1"),
        "item_encoder/1": read_space(repo / "item_encoder" / "1"),
    }
    versions = rerank_versions(repo)
    manifest = repo / "rerank" / str(versions[-1]) / INDEX_DIRNAME / "manifest.json" if versions else None
    if manifest is not None and manifest.is_file():
        spaces[f"rerank/{versions[-1]} (the index)"] = json.loads(manifest.read_text(encoding="utf-8")).get("space")
    known = {part: space for part, space in spaces.items() if space}
    if len(set(known.values())) > 1:
        parts = ", ".join(f"{part}: {space[:12]}…" for part, space in known.items())
        raise DistillError(
            f"{repo}: the towers and the index live in different embedding spaces ({parts}); a query tower "
            "only matches an index built in its own space: re-export the towers together (`aisle export`) "
            "and re-index (`aisle index`)"
        )


@dataclass(frozen=True)
class Teacher:
    """What a student learns from (``query``: the served query tower) and pairs with (``item``: the item tower)."""

    query: Path
    item: Path


def resolve_teacher(teacher: str | Path | None, cache_dir: Path = Path("build/towers")) -> Teacher:
    """``None`` → the default tower on both sides; ``all-mpnet-base-v2`` → the larger teacher (fetched
    into ``cache_dir``); an ``aisle finetune --out`` dir → its two towers; a tower → itself."""
    from .finetune import ITEM_TOWER, QUERY_TOWER
    from .towers import LARGE_TEACHER, fetch_large_teacher, resolve_tower

    if str(teacher) == LARGE_TEACHER and not Path(LARGE_TEACHER).is_dir():
        tower = fetch_large_teacher(cache_dir)
        return Teacher(tower, tower)

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
    judge_only: bool = False,
) -> dict:
    """Train student ``kind`` into ``out``, judge it against the teacher, write ``out/distill.json``; the record.

    Without ``corpus`` the BigBasket proxy catalog (``products``, default ``../shared/data``) is the
    training text. ``config``: a :class:`aisle_export.distill_train.TrainConfig` (default: per kind).
    ``judge_only``: no training; judge the student already in ``out`` again (same teacher, corpus
    and held-out text), e.g. after the gate gained a benchmark.
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
