"""``aisle export``: both towers → ONNX (with parity) → precision variants (gated) → a model repository.

The query tower feeds ``query_encoder`` and the served ``tokenizer``; the item tower feeds
``item_encoder`` (used by ``aisle index``). Both towers must share one tokenizer, because the served
``tokenizer`` model sits in front of both encoders; a mismatch is an error, not a silent drift.

Precision variants (``precisions``: ``int8``, ``fp16``, ``int8-qdq``; see :mod:`.quantize`) are
opt-in because each costs export time (embedding the gate catalog once more). Each is written for
both towers and then judged against FP32 on held-out text and on top-10 retrieval over the gate
catalog (:mod:`.precision_gate`); a failing variant stops the export with its figures.

The served query tower (``query_precision``) runs on every request, while the item tower runs once
per catalog item and its FP32 vectors are the index. ``int8`` and ``auto`` write the query tower's
CPU INT8 graph and judge it as it is served (INT8 queries against the FP32 index): ``int8`` serves
it or stops the export, ``auto`` serves it where it passes and FP32 where not. FP32 stays the
default although INT8 passes that gate and costs less: dynamic INT8 quantizes each batch's
activations with one scale, so under dynamic batching a query's results depend on the queries
batched with it (the gate reports how often: ``batch_top10_identical``); FP32's do not. A static
student (a lookup table) has nothing to quantize and is served as it is. Figures:
docs/results.md, "The ensemble's hops and the default query tower".
"""

from __future__ import annotations

import filecmp
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from aisle_export.build.onnx_export import DEFAULT_PARITY_SENTENCES, export_tower
from aisle_export.build.precision_gate import Fp32Cache, PrecisionGateError, TowerPair, check, evaluate
from aisle_export.build.precision_texts import GateTexts, gate_texts
from aisle_export.build.quantize import MODEL_FILE, VARIANTS, write_variant
from aisle_export.build.repository import copy_template, serve_onnx_file, write_configs
from aisle_export.build.static_student import install_static
from aisle_export.core.files import sha256_file
from aisle_export.core.handoff import ITEM_TOWER, QUERY_TOWER, knobs_of, load_choice, stack_of
from aisle_export.core.spaces import check_pairing, read_record, write_space
from aisle_export.data.catalog import read_catalog
from aisle_export.data.movielens import fetch_movielens, write_catalog_csv
from aisle_server.learned import LEARNED_DIRNAME, LOG_SIGNALS_DIRNAME, RANKER_DIRNAME, USER_ENCODER_DIRNAME
from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE

TOWERS = {"query_encoder": "query", "item_encoder": "item"}
REPORT_FILE = "export_report.json"
#: ``query_precision``: ``fp32`` (the default) serves ``model.onnx`` without writing or judging INT8,
#: ``auto`` the INT8 query graph where its gate passes, ``int8`` that graph or a failed export.
QUERY_PRECISIONS = ("auto", "int8", "fp32")
QUERY_GATE_FILE = "precision_query_int8.json"


def gate_catalog_texts(repo: Path, gate_catalog: Path | None) -> list[str]:
    """Item texts of ``gate_catalog``, or of the MovieLens-100K demo catalog cached beside ``repo``."""

    if gate_catalog is None:
        data = Path(repo).resolve().parent / "data"
        print(f"[export] gate catalog: MovieLens-100K (cached under {data})", flush=True)
        gate_catalog = write_catalog_csv(fetch_movielens(data), data / "movielens_catalog.csv")
    return read_catalog(gate_catalog).texts()


class GateInputs:
    """The gate's texts and FP32 embeddings, made on first use and shared by every gate of one export."""

    def __init__(self, repo: Path, gate_catalog: Path | None) -> None:
        self.repo, self.gate_catalog = repo, gate_catalog
        self.cache = Fp32Cache()
        self._texts: GateTexts | None = None

    @property
    def texts(self) -> GateTexts:
        if self._texts is None:
            self._texts = texts = gate_texts(gate_catalog_texts(self.repo, self.gate_catalog))
            print(
                f"[export] gate texts: {len(texts.calibration)} calibration, {len(texts.evaluation)} held-out, "
                f"{len(texts.queries)} queries over {len(texts.catalog)} catalog items",
                flush=True,
            )
        return self._texts


def choose_query_graph(repo: Path, mode: str, gate: GateInputs, static: bool = False) -> dict:
    """Which graph ``query_encoder`` serves (see the module docstring); points its config at it and
    returns what was chosen and why, with the gate's figures when one ran."""
    if mode not in QUERY_PRECISIONS:
        raise ValueError(f"query_precision must be one of {QUERY_PRECISIONS}, got {mode!r}")
    if static and mode == "int8":
        raise ValueError("--query-precision int8: the query tower is a static student, which has no INT8 graph")
    directory = Path(repo) / "query_encoder" / "1"
    if mode == "fp32" or static:
        why = (
            "the default, batch-invariant"
            if mode == "fp32"
            else "a static student: a lookup table, nothing to quantize"
        )
        serve_onnx_file(repo, "query_encoder", MODEL_FILE)
        print(f"[export] query tower served in FP32 ({why})", flush=True)
        return {"served": MODEL_FILE, "why": why}
    variant = write_variant("int8", directory)
    item_dir = Path(repo) / "item_encoder" / "1"
    report = evaluate(
        "int8 query tower",
        TowerPair(fp32=directory / MODEL_FILE, variant=variant, tokenizer_dir=directory),
        TowerPair(fp32=item_dir / MODEL_FILE, variant=item_dir / MODEL_FILE, tokenizer_dir=item_dir),
        gate.texts,
        gate.cache,
    )
    try:
        check(report, save_to=Path(repo) / QUERY_GATE_FILE)  # the figures are written either way
    except PrecisionGateError:
        if mode == "int8":
            raise
    served = variant.name if report.passed else MODEL_FILE
    serve_onnx_file(repo, "query_encoder", served)
    why = "its INT8 graph passed the precision gate" if report.passed else "its INT8 graph failed the precision gate"
    print(f"[export] query tower served from {served} ({why}; figures: {Path(repo) / QUERY_GATE_FILE})", flush=True)
    return {"served": served, "why": why, "gate": report.to_dict()}


def export_precisions(
    repo: Path, precisions: Sequence[str], gate_catalog: Path | None = None, gate: GateInputs | None = None
) -> dict:
    """Write and gate each precision variant of both encoders in ``repo``; returns the gate figures."""

    unknown = sorted(set(precisions) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown precision variant(s) {unknown}; expected some of {sorted(VARIANTS)}")
    gate = gate or GateInputs(repo, gate_catalog)
    texts, cache = gate.texts, gate.cache
    figures = {}
    for name in dict.fromkeys(precisions):
        pairs = {}
        for model in TOWERS:
            directory = repo / model / "1"
            variant = write_variant(name, directory, texts.calibration)
            pairs[model] = TowerPair(fp32=directory / MODEL_FILE, variant=variant, tokenizer_dir=directory)
        report = evaluate(name, pairs["query_encoder"], pairs["item_encoder"], texts, cache)
        figures[name] = report.to_dict()
        check(report, save_to=repo / f"precision_{name}.json")
    return figures


def install_learned(repo: Path, finetuned: Path | None, user_encoder: bool = True, stack: str | None = None) -> dict:
    """Put what ``aisle finetune --interactions`` learned (user encoder, log signals) under ``rerank/learned/``.

    The user encoder is stamped with the checksum of the item encoder just exported, which the
    ``rerank`` model compares with the index's at load. Without ``finetuned``, or when the served
    stack has no user encoder (``user_encoder=False``), a user encoder left from an earlier export
    would serve in place of the chosen recency mean and is removed; log signals do not depend on
    the towers and stay.
    """
    learned = Path(repo) / "rerank" / LEARNED_DIRNAME
    target = learned / USER_ENCODER_DIRNAME
    report: dict = {}
    if finetuned is None or not user_encoder:
        if target.exists():
            print(f"[export] removing {target}: the served stack has no user encoder", flush=True)
            shutil.rmtree(target)
    else:
        source = Path(finetuned) / USER_ENCODER_DIRNAME
        if not (source / "config.json").exists():
            raise FileNotFoundError(f"{source}/config.json is missing: not a directory written by `aisle finetune`")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        config = json.loads((target / "config.json").read_text())
        config["item_tower_sha256"] = sha256_file(Path(repo) / "item_encoder" / "1" / "model.onnx")
        (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        report |= {"user_encoder": str(target), "parity": config.get("parity")}
    if finetuned is None:
        return report
    if (Path(finetuned) / LOG_SIGNALS_DIRNAME).is_dir():
        shutil.rmtree(learned / LOG_SIGNALS_DIRNAME, ignore_errors=True)
        shutil.copytree(Path(finetuned) / LOG_SIGNALS_DIRNAME, learned / LOG_SIGNALS_DIRNAME)
    # the learned ranker: only what this hand-off gated in, for the stack served (its features read
    # that stack's cosine); a ranker of an earlier export must not stay
    shutil.rmtree(learned / RANKER_DIRNAME, ignore_errors=True)
    manifest = Path(finetuned) / RANKER_DIRNAME / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("stack") in (None, stack):
        shutil.copytree(Path(finetuned) / RANKER_DIRNAME, learned / RANKER_DIRNAME)
        report["ranker"] = str(learned / RANKER_DIRNAME)
    return report | {"log_signals": (learned / LOG_SIGNALS_DIRNAME).is_dir()}


def _install_tower(tower: str | None, record: dict | None, target: Path) -> dict:
    """Put a tower in ``target``: a static student's graph as it is (checked against its table), any
    transformer tower (a ``layers`` student too) exported to ONNX; what was installed, for the report."""

    if record is not None and record["student"] == "static":
        report = install_static(Path(str(tower)), target, list(DEFAULT_PARITY_SENTENCES))
    else:
        result = export_tower(tower, target)
        report = {
            "tower": str(result.tower.path),
            "dim": result.tower.dim,
            "max_length": result.tower.max_length,
            "parity": json.loads(result.parity.to_json()),
        }
    if record is not None:
        gate = record.get("gate", {})
        report |= {
            "student": record["student"],
            "gate": {"query": gate.get("verdict"), "item": gate.get("item_verdict")},
        }
    return report


def export_repository(
    repo: Path,
    query_tower: str | None = None,
    item_tower: str | None = None,
    precisions: Sequence[str] = (),
    gate_catalog: Path | None = None,
    finetuned: Path | None = None,
    stack: str | None = None,
    allow_below_gate: bool = False,
    query_precision: str = "fp32",
) -> dict:
    """Export both towers; with ``finetuned`` (``aisle finetune --out``), the stack it chose on
    validation (or ``stack``: pretrained, mean, user_encoder): its towers, learned models and knobs.
    ``query_precision``: which graph ``query_encoder`` serves (:func:`choose_query_graph`).

    A tower written by ``aisle distill`` (either side) is refused beside a tower of another space or
    below its gate unless ``allow_below_gate`` (:func:`aisle_export.core.spaces.check_pairing`); a static
    student's graph is copied as it is (:func:`aisle_export.build.static_student.install_static`)."""

    repo = copy_template(Path(repo))
    ranking = None
    if finetuned is not None:
        choice = load_choice(finetuned)
        stack = stack_of(choice, stack)
        ranking = knobs_of(choice, stack)
        if stack == "pretrained":  # training did not beat the pretrained towers on validation
            query_tower = item_tower = choice.get("base")
        else:
            query_tower, item_tower = str(Path(finetuned) / QUERY_TOWER), str(Path(finetuned) / ITEM_TOWER)
        print(f"[export] serving {finetuned}'s {stack} stack", flush=True)
    sources = {"query_encoder": query_tower, "item_encoder": item_tower}
    space = check_pairing(query_tower, item_tower, allow_below_gate)  # before anything is written
    report: dict = {}
    dims = set()
    for model, tower in sources.items():
        print(f"[export] {TOWERS[model]} tower → {repo / model / '1' / 'model.onnx'}", flush=True)
        record = read_record(Path(tower)) if tower is not None else None
        if record is not None:
            print(
                f"[export] {TOWERS[model]} tower: the {record['student']} student of {record['item_tower']}", flush=True
            )
        if model == "item_encoder" and tower == query_tower:
            # One tower on both sides (the default): exported and parity-checked once, then copied.
            shutil.copytree(
                repo / "query_encoder" / "1",
                repo / model / "1",
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("model.py"),
            )
            report[model] = dict(report["query_encoder"])
        else:
            report[model] = _install_tower(tower, record, repo / model / "1")
        dims.add(report[model]["dim"])
        write_space(repo / model / "1", space, report[model].get("tower", str(tower)), record)
    if len(dims) != 1:
        raise ValueError(f"the towers' embedding sizes differ ({sorted(dims)}); they must share one space")
    query_dir, item_dir = repo / "query_encoder" / "1", repo / "item_encoder" / "1"
    for name in (TOKENIZER_FILE, SETTINGS_FILE):
        if not filecmp.cmp(query_dir / name, item_dir / name, shallow=False):
            raise ValueError(f"the towers' {name} differ; the served tokenizer must fit both towers")
        (repo / "tokenizer" / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(query_dir / name, repo / "tokenizer" / "1" / name)
    write_configs(repo, dims.pop(), ranking)
    report["learned"] = install_learned(repo, finetuned, user_encoder=stack == "user_encoder", stack=stack)
    if stack is not None:
        report["stack"] = stack
    (repo / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    gate = GateInputs(repo, gate_catalog)
    static = report["query_encoder"].get("student") == "static"
    report["query_precision"] = choose_query_graph(repo, query_precision, gate, static)
    (repo / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if precisions:
        report["precision"] = export_precisions(repo, precisions, gate=gate)
        (repo / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
