"""``aisle distill``'s pure parts: derived queries, the held-out split, the static graph against numpy,
the gate's verdict, and the pairing rule that keeps a student with the item tower it was distilled for."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aisle_export.build.static_student import (
    install_static,
    static_graph,
    static_reference,
    table_of,
    write_static_onnx,
)
from aisle_export.cli import main
from aisle_export.core.spaces import (
    DISTILL_FILE,
    STUDENTS,
    DistillError,
    check_pairing,
    check_served_spaces,
    judge,
    teacher_fingerprint,
    write_space,
)
from aisle_export.core.towers import default_tower_path
from aisle_export.distill.pipeline import derive_queries, is_held_out, read_corpus, split_held_out
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TOKENIZER_FILE, TokenizerSettings

TITLES = [
    "Fortune Sunlite Refined Sunflower Oil 1 L Pouch",
    "Aashirvaad Shudh Chakki Atta 5 kg",
    "Amul Pure Ghee 1 L Tin",
    "Dove Cream Beauty Bathing Bar 125 g",
]
CATEGORIES = ["Foodgrains, Oil & Masala", "Foodgrains, Oil & Masala", "Foodgrains, Oil & Masala", "Beauty & Hygiene"]


def test_derived_queries_are_made_of_title_words_or_a_category_and_a_title_word():
    queries = derive_queries(TITLES, CATEGORIES, 40, seed=3)
    assert 10 <= len(queries) <= 40 and len(set(queries)) == len(queries)
    words = {w.lower() for t in TITLES for w in re.findall(r"[\w'&-]+", t)}
    for query in queries:
        rest = query
        for category in CATEGORIES:
            if query.lower().startswith(category.lower() + " "):
                rest = query[len(category) + 1 :]
        assert all(w.lower() in words for w in rest.split()), query
    assert any(t.lower().startswith(q.lower()) for q in queries for t in TITLES)  # a title prefix
    assert any(q.lower().startswith(c.lower()) for q in queries for c in CATEGORIES)


def test_derived_queries_are_deterministic_per_seed_and_empty_without_titles():
    assert derive_queries(TITLES, CATEGORIES, 20, seed=1) == derive_queries(TITLES, CATEGORIES, 20, seed=1)
    assert derive_queries(TITLES, CATEGORIES, 20, seed=1) != derive_queries(TITLES, CATEGORIES, 20, seed=2)
    assert derive_queries([], [], 20) == [] and derive_queries(["!!"], [""], 5) == []


def test_held_out_split_is_disjoint_stable_and_about_one_in_twenty():
    texts = [f"product number {i}" for i in range(4000)]
    train, held = split_held_out(texts)
    assert not set(train) & set(held) and len(train) + len(held) == len(texts)
    assert 0.03 < len(held) / len(texts) < 0.07
    assert all(is_held_out(t) for t in held) and split_held_out(texts) == (train, held)


def test_a_corpus_reads_catalogs_and_plain_text_lines(tmp_path):
    (tmp_path / "lines.txt").write_text("red running shoes\n\n  usb-c charger \n")
    (tmp_path / "catalog.csv").write_text("item_id,title,category\n1,Amul Pure Ghee,Dairy\n")
    corpus = read_corpus([tmp_path / "lines.txt", tmp_path / "catalog.csv"])
    assert corpus.texts == ["red running shoes", "usb-c charger", "Amul Pure Ghee. Dairy"]
    assert corpus.titles[-1] == "Amul Pure Ghee" and corpus.categories == ["", "", "Dairy"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DistillError, match="no text"):
        read_corpus([tmp_path / "empty.txt"])


def _tokens(rng: np.random.Generator, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(0, vocab, size=(5, 16), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate((1, 3, 16, 7, 2)):
        mask[row, :length] = 1
    return ids, mask


def test_the_static_onnx_graph_equals_the_numpy_reference_and_ignores_padding():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32)
    ids, mask = _tokens(rng, 50)
    session = ort.InferenceSession(static_graph(table).SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    expected = static_reference(table, ids, mask)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got[0], table[ids[0, 0]] / np.linalg.norm(table[ids[0, 0]]), atol=1e-6)
    padded = ids.copy()
    padded[mask == 0] = 0  # what sits in the padding must not matter
    np.testing.assert_allclose(session.run(["embedding"], {"input_ids": padded, "attention_mask": mask})[0], got)


def test_the_static_graph_serves_through_the_encoder_the_query_tower_runs(tmp_path):
    table = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    path = write_static_onnx(table, tmp_path / "model.onnx")
    encoder = OnnxEncoder(path, intra_op_threads=1)
    ids, mask = _tokens(np.random.default_rng(2), 40)
    assert encoder.dim == 6
    np.testing.assert_allclose(encoder(ids, mask), static_reference(table, ids, mask), atol=1e-6)
    np.testing.assert_array_equal(table_of(path), table)


@pytest.mark.parametrize("count, kept", [(1, [0]), (2, [0, 5]), (3, [0, 2, 5]), (6, [0, 1, 2, 3, 4, 5])])
def test_the_layers_student_keeps_evenly_spread_layers_with_the_first_and_the_last(count, kept):
    from transformers import BertConfig, BertModel

    from aisle_export.distill.train import keep_layers

    def config():
        return BertConfig(
            vocab_size=30, hidden_size=8, num_hidden_layers=6, num_attention_heads=2, intermediate_size=16
        )

    model = BertModel(config())
    originals = list(model.encoder.layer)
    assert keep_layers(model, count) == kept
    assert list(model.encoder.layer) == [originals[i] for i in kept] and model.config.num_hidden_layers == count
    with pytest.raises(ValueError, match="keep 1 … 6"):
        keep_layers(BertModel(config()), 7)


def test_the_torch_static_student_computes_the_served_function():
    import torch

    from aisle_export.distill.train import StaticEncoder, listwise_kl

    table = np.random.default_rng(3).normal(size=(30, 4)).astype(np.float32)
    ids, mask = _tokens(np.random.default_rng(4), 30)
    with torch.no_grad():
        got = StaticEncoder(table)(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, static_reference(table, ids, mask), atol=1e-6)
    q, items = torch.from_numpy(got), torch.from_numpy(table)
    assert float(listwise_kl(q, q, items, 0.05)) == pytest.approx(0.0, abs=1e-6)
    assert float(listwise_kl(q.flip(0), q, items, 0.05)) > 0.01


def test_install_static_copies_the_graph_and_checks_it_against_its_table(tmp_path):
    student = tmp_path / "student"
    student.mkdir()
    (student / TOKENIZER_FILE).write_bytes((default_tower_path() / TOKENIZER_FILE).read_bytes())
    TokenizerSettings(max_length=64).save(student)
    write_static_onnx(np.random.default_rng(5).normal(size=(30522, 8)).astype(np.float32), student / "model.onnx")
    report = install_static(student, tmp_path / "served", ["red running shoes", "a"])
    assert report["dim"] == 8 and report["parity"]["min_cosine"] > 0.9999
    assert (tmp_path / "served" / "model.onnx").read_bytes() == (student / "model.onnx").read_bytes()


@pytest.mark.parametrize(
    ("kind", "teacher", "student", "passed"),
    [
        ("layers", 0.5, 0.49, True),
        ("layers", 0.5, 0.48, False),
        ("static", 0.5, 0.45, True),
        ("static", 0.5, 0.44, False),
    ],
)
def test_the_gate_needs_the_students_share_of_the_teachers_ndcg(kind, teacher, student, passed):
    verdict = judge(kind, teacher, student)
    assert verdict["passed"] is passed and verdict["required"] == STUDENTS[kind].min_retention
    assert verdict["retention"] == pytest.approx(student / teacher, abs=1e-4)


def test_an_unmeasured_student_fails_its_gate():
    assert judge("static", None, 0.4)["passed"] is False and judge("layers", 0.0, 0.0)["passed"] is False


def _tower(directory: Path, weights: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(weights)
    (directory / "config.json").write_text(json.dumps({"hidden_size": 8}))
    return directory


def _student(directory: Path, item_tower: Path, passed: bool) -> Path:
    directory.mkdir(parents=True)
    record = {
        "student": "static",
        "item_tower": str(item_tower),
        "item_tower_sha256": teacher_fingerprint(item_tower),
        "gate": {
            side: {"metric": "hybrid nDCG@10", "retention": 0.8, "required": 0.9, "passed": passed}
            for side in ("verdict", "item_verdict")
        },
    }
    (directory / DISTILL_FILE).write_text(json.dumps(record))
    return directory


def test_a_student_is_refused_with_an_item_tower_other_than_its_teacher(tmp_path):
    teacher, other = _tower(tmp_path / "teacher", b"weights A"), _tower(tmp_path / "other", b"weights B")
    student = _student(tmp_path / "s", teacher, passed=True)
    assert check_pairing(student, teacher) == teacher_fingerprint(teacher)
    with pytest.raises(DistillError, match="distilled for the item tower"):
        check_pairing(student, other, allow_below_gate=True)
    assert teacher_fingerprint(teacher) != teacher_fingerprint(other)


def test_an_item_student_pairs_with_its_teachers_query_tower_or_a_sibling_student_only(tmp_path):
    teacher, other = _tower(tmp_path / "teacher", b"weights A"), _tower(tmp_path / "other", b"weights B")
    student, sibling = _student(tmp_path / "s", teacher, passed=True), _student(tmp_path / "s2", teacher, passed=True)
    stranger = _student(tmp_path / "s3", other, passed=True)
    assert check_pairing(teacher, student) == check_pairing(student, sibling) == teacher_fingerprint(teacher)
    with pytest.raises(DistillError, match=r"item tower .* was distilled for the item tower"):
        check_pairing(other, student)
    with pytest.raises(DistillError, match="distilled for the item tower"):
        check_pairing(stranger, student)


def test_a_student_below_its_gate_is_refused_unless_allowed(tmp_path):
    teacher = _tower(tmp_path / "teacher", b"weights A")
    student = _student(tmp_path / "s", teacher, passed=False)
    for query, item, role in ((student, teacher, "query"), (teacher, student, "item")):
        with pytest.raises(DistillError, match=f"as the {role} tower\\) is below its gate"):
            check_pairing(query, item)
        check_pairing(query, item, allow_below_gate=True)


def test_serve_refuses_a_repository_whose_towers_or_index_live_in_different_spaces(tmp_path, capsys):
    repo = tmp_path / "repo"
    for part in ("query_encoder/1", "item_encoder/1", "rerank/1/index", "rerank/2/index"):
        (repo / part).mkdir(parents=True)
    write_space(repo / "query_encoder" / "1", "a" * 64, "q", None)
    write_space(repo / "item_encoder" / "1", "a" * 64, "i", None)
    (repo / "rerank" / "1" / "index" / "manifest.json").write_text(json.dumps({"space": "b" * 64}))
    (repo / "rerank" / "2" / "index" / "manifest.json").write_text(json.dumps({"space": None}))
    check_served_spaces(repo)  # the newest index predates spaces: not judged; the towers agree
    (repo / "rerank" / "2" / "index" / "manifest.json").write_text(json.dumps({"space": "b" * 64}))
    with pytest.raises(DistillError, match="rerank/2 \\(the index\\): bbbbbbbbbbbb"):
        check_served_spaces(repo)
    write_space(repo / "item_encoder" / "1", "b" * 64, "i", None)
    (repo / "rerank" / "2" / "index" / "manifest.json").write_text(json.dumps({"space": "b" * 64}))
    assert main(["serve", "--repo", str(repo), "--state", "off"]) == 1
    assert "query_encoder/1: aaaaaaaaaaaa" in capsys.readouterr().err


def test_aisle_export_refuses_a_student_of_another_item_tower_before_exporting(tmp_path, capsys):
    teacher, other = _tower(tmp_path / "teacher", b"weights A"), _tower(tmp_path / "other", b"weights B")
    student = _student(tmp_path / "s", teacher, passed=True)
    repo = tmp_path / "repo"
    code = main(["export", "--repo", str(repo), "--query-tower", str(student), "--item-tower", str(other)])
    assert code == 1
    assert "distilled for the item tower" in capsys.readouterr().err
    assert not (repo / "item_encoder" / "1" / "model.onnx").exists()


def test_a_finetune_dir_teaches_with_its_query_tower_and_pairs_with_its_item_tower(tmp_path):
    from aisle_export.distill.pipeline import resolve_teacher

    query = _tower(tmp_path / "finetuned" / "query_tower", b"query weights")
    item = _tower(tmp_path / "finetuned" / "item_tower", b"item weights")
    pair = resolve_teacher(tmp_path / "finetuned")
    assert (pair.query, pair.item) == (query, item)
    assert resolve_teacher(query) == resolve_teacher(str(query)) and resolve_teacher(query).item == query
    assert resolve_teacher(None).query == default_tower_path()


def _static_student(directory: Path) -> Path:
    """The untrained static student of the default tower (its input token table), recorded as passing."""
    from safetensors.numpy import load_file

    tower = default_tower_path()
    table = next(
        v for k, v in load_file(str(tower / "model.safetensors")).items() if k.endswith("word_embeddings.weight")
    )
    directory.mkdir(parents=True)
    write_static_onnx(table, directory / "model.onnx")
    (directory / TOKENIZER_FILE).write_bytes((tower / TOKENIZER_FILE).read_bytes())
    TokenizerSettings(max_length=128).save(directory)
    passed = {"passed": True, "metric": "hybrid nDCG@10", "retention": 0.95, "required": 0.9}
    record = {
        "student": "static",
        "onnx": ".",
        "item_tower": str(tower),
        "item_tower_sha256": teacher_fingerprint(tower),
        "gate": {"verdict": passed, "item_verdict": passed},
    }
    (directory / DISTILL_FILE).write_text(json.dumps(record))
    return directory


def test_a_static_student_exports_as_both_towers_indexes_and_records_one_space(tmp_path):
    from aisle_export.build.pipeline import export_repository
    from aisle_export.data.catalog import read_catalog
    from aisle_export.index.writing import write_index
    from aisle_server.index import CatalogIndex
    from aisle_server.tokenization import TextTokenizer

    student = _static_student(tmp_path / "static")
    repo = tmp_path / "repo"
    export_repository(repo, str(student), str(student))
    item_graph = repo / "item_encoder" / "1" / "model.onnx"
    assert item_graph.read_bytes() == (student / "model.onnx").read_bytes()  # no transformer on the item side
    spaces = {
        json.loads((repo / m / "1" / "space.json").read_text())["space"] for m in ("query_encoder", "item_encoder")
    }
    assert spaces == {teacher_fingerprint(default_tower_path())}
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps({"item_id": str(i), "title": t}) + "\n" for i, t in enumerate(TITLES)))
    catalog = read_catalog(path)
    write_index(catalog, repo, progress=False)
    index = CatalogIndex.load(repo / "rerank" / "1" / "index")
    assert index.manifest["space"] in spaces
    expected = OnnxEncoder(student / "model.onnx")(*TextTokenizer.from_directory(student)(catalog.texts()))
    np.testing.assert_allclose(index.embeddings, expected, atol=1e-5)  # the static graph embedded the catalog
    check_served_spaces(repo)
    given = write_index(catalog, repo, version="2", progress=False, embeddings=expected)  # vectors computed before
    assert given.manifest["embedded_by"] == "given embeddings" and index.manifest["embedded_by"] == "local item_encoder"
    with pytest.raises(ValueError, match="embeddings: 3 rows for 4 catalog items"):
        write_index(catalog, repo, version="3", progress=False, embeddings=expected[:3])
