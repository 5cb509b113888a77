"""Embedding spaces and the pairing rules every stage obeys: which towers may serve together.

A tower's *space* is the set of vectors its outputs can be compared with. A plain tower's space is
its own (the sha256 of its weights, :func:`teacher_fingerprint`); a distilled student's space is the
item tower it was distilled for, recorded in its ``distill.json``. ``aisle export`` refuses a student
beside a tower of another space, or one below its gate (:func:`check_pairing`), and records the space
beside each exported encoder (``space.json``) so ``aisle serve`` refuses a repository assembled by
hand from mismatched parts (:func:`check_served_spaces`).

Why here, on the ground floor: export (``build``), indexing (``index``), serving (``cli``) and
distillation all read these rules; kept inside the distillation stage they pulled it (and its
torch training code) into every other stage's imports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from aisle_export.core.towers import resolve_tower
from aisle_server.index import INDEX_DIRNAME, rerank_versions

DISTILL_FILE = "distill.json"
SPACE_FILE = "space.json"  # beside each exported encoder and in each index manifest: the space its vectors live in
#: weight files whose bytes identify a tower (the first present ones, sorted by name, are hashed)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DENSE_SYSTEM = "dense alone"  # the encoder alone decides the ranking: reported beside the gate, the strictest figure
SERVED_SYSTEM = "hybrid (lexical_weight=0.5)"  # the served default (search_mode=hybrid): what the gate judges


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
