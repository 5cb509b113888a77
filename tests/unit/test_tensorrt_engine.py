"""The TensorRT builder: everything before the build runs here; the build itself needs ``tensorrt``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisle_export.build.tensorrt import (
    META_FILE,
    PLAN_FILE,
    EngineVersionMismatch,
    Profile,
    TensorRTUnavailable,
    build_repository_engines,
    check_version,
    plan_jobs,
    trtexec_command,
    write_tensorrt_configs,
)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_TENSORRT = "tensorrt is not installed here: engines are built inside nvcr.io/nvidia/tritonserver:<version>-py3"


def fake_repo(tmp: Path, source: str = "model.fp16.onnx", max_length: int = 256) -> Path:
    for encoder in ("query_encoder", "item_encoder"):
        directory = tmp / encoder / "1"
        directory.mkdir(parents=True)
        (directory / source).write_bytes(b"onnx")
        (directory / "tokenizer_settings.json").write_text(json.dumps({"max_length": max_length}))
    return tmp


def test_profile_from_tower_config(tmp_path):
    repo = fake_repo(tmp_path, max_length=250)
    query = Profile.for_encoder(repo / "query_encoder" / "1", "query_encoder")
    item = Profile.for_encoder(repo / "item_encoder" / "1", "item_encoder", max_batch=32)
    assert query.shapes() == ((1, 16), (16, 32), (64, 256))  # 250 rounds up to the padding multiple
    assert item.shapes() == ((1, 16), (16, 64), (32, 256))


@pytest.mark.parametrize("bad", [{"min_batch": 0}, {"opt_batch": 128}, {"min_seq": 64, "opt_seq": 32}])
def test_profile_rejects_unordered_shapes(bad):
    with pytest.raises(ValueError, match="profile"):
        Profile(**bad)


def test_trtexec_command_is_strongly_typed_with_the_profile():
    command = trtexec_command(Path("m.fp16.onnx"), Path("model.plan"), Profile(max_batch=32, max_seq=128))
    assert command.startswith("trtexec --onnx=m.fp16.onnx --saveEngine=model.plan --stronglyTyped ")
    assert "--minShapes=input_ids:1x16,attention_mask:1x16" in command
    assert "--optShapes=input_ids:16x32,attention_mask:16x32" in command
    assert "--maxShapes=input_ids:32x128,attention_mask:32x128" in command
    assert "--fp16" not in command and "--int8" not in command  # precision comes from the ONNX


def test_plan_jobs_pick_the_precision_source(tmp_path):
    repo = fake_repo(tmp_path, source="model.int8.qdq.onnx")
    jobs = plan_jobs(repo, "int8")
    assert [(e, s.name, p.name) for e, s, p, _ in jobs] == [
        ("query_encoder", "model.int8.qdq.onnx", PLAN_FILE),
        ("item_encoder", "model.int8.qdq.onnx", PLAN_FILE),
    ]
    with pytest.raises(FileNotFoundError, match="aisle export --precision fp16"):
        plan_jobs(repo, "fp16")
    with pytest.raises(ValueError, match="unknown engine precision"):
        plan_jobs(repo, "int4")


def test_tensorrt_configs_follow_the_profile(tmp_path):
    [path, _] = write_tensorrt_configs(
        tmp_path, 384, {"query_encoder": Profile(max_batch=32), "item_encoder": Profile()}
    )
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.default_model_filename == PLAN_FILE
    assert config.max_batch_size == 32 and list(config.output[0].dims) == [384]
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]


def test_version_recorded_beside_the_plan_is_enforced(tmp_path):
    plan = tmp_path / PLAN_FILE
    with pytest.raises(EngineVersionMismatch, match=r"no model.plan.json"):
        check_version(plan, "10.13.0")
    (tmp_path / META_FILE).write_text(json.dumps({"tensorrt_version": "10.13.0"}))
    assert check_version(plan, "10.13.0")["tensorrt_version"] == "10.13.0"
    with pytest.raises(EngineVersionMismatch, match=r"built by TensorRT 10.13.0 but this is TensorRT 10.14.1"):
        check_version(plan, "10.14.1")


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed")
def test_without_tensorrt_the_build_says_where_to_run(tmp_path, capsys):
    repo = fake_repo(tmp_path)
    with pytest.raises(TensorRTUnavailable, match=r"nvcr.io/nvidia/tritonserver"):
        build_repository_engines(repo, "fp16")
    assert "trtexec --onnx=" in capsys.readouterr().out  # the pre-build steps ran


@pytest.mark.skipif(not HAS_TENSORRT, reason=NO_TENSORRT)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_and_load_engines(tmp_path_factory, precision):  # pragma: no cover - needs a GPU + TensorRT
    from aisle_export.build.onnx_export import export_tower
    from aisle_export.build.precision_texts import CALIBRATION_PRODUCTS
    from aisle_export.build.quantize import write_variant
    from aisle_export.build.tensorrt import load_engine

    repo = tmp_path_factory.mktemp("trt")
    for encoder in ("query_encoder", "item_encoder"):
        export_tower(None, repo / encoder / "1")
        write_variant("fp16" if precision == "fp16" else "int8-qdq", repo / encoder / "1", CALIBRATION_PRODUCTS)
    results = build_repository_engines(repo, precision, max_batch=8, max_seq=64)
    for encoder in results:
        assert load_engine(repo / encoder / "1" / PLAN_FILE) is not None
