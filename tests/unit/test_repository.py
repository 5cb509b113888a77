"""The generated Triton model repository: checked-in files in step, configs valid and consistent."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisle_contract import FILTER_NAMES, OVERRIDABLE
from aisle_export.build.repository import (
    CONFIG_VARIANTS,
    DEFAULT_DIM,
    TEMPLATE_DIR,
    all_configs,
    encoder_config,
    render,
    write_configs,
)
from aisle_server.ranking import RankingConfig

REPO = Path(__file__).resolve().parents[2] / "model_repository"
REGENERATE = "run `python -m aisle_export.build.repository` to regenerate the checked-in configs"
CONFIGS = all_configs()


def models() -> dict[str, mc.ModelConfig]:
    """The ``config.pbtxt`` of each model, by model name."""
    found = {}
    for relative, config in CONFIGS.items():
        if relative.endswith("/config.pbtxt"):
            assert relative == f"{config.name}/config.pbtxt", "a model's directory must be its name"
            found[config.name] = config
    return found


MODELS = models()
ENSEMBLES = {name: c for name, c in MODELS.items() if c.platform == "ensemble"}


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_template_dir_is_the_checked_in_repository():
    assert REPO.resolve() == TEMPLATE_DIR  # model_repository/ links to the package data


def test_the_template_ships_every_checked_in_file_as_package_data():
    """pyproject's package-data patterns cover every file of the template (a wheel carries them all)."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((REPO.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "aisle_export.model_repository"
    ]
    files = [
        p.relative_to(TEMPLATE_DIR).as_posix()
        for p in TEMPLATE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    uncovered = [
        f
        for f in files
        if f != "__init__.py"
        and not any(
            fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(f, pattern.removeprefix("**/")) for pattern in patterns
        )
    ]
    assert files and not uncovered


# -- checked-in files ------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", sorted(CONFIGS))
def test_checked_in_config_equals_generated(relative):
    path = REPO / relative
    assert path.is_file(), f"{path} is missing; {REGENERATE}"
    assert path.read_text() == render(CONFIGS[relative]), f"{path} differs from render(all_configs()); {REGENERATE}"


def test_no_stale_checked_in_configs():
    on_disk = {p.relative_to(REPO).as_posix() for p in REPO.rglob("*.pbtxt")}
    stale = on_disk - set(CONFIGS)
    assert not stale, (
        f"config files that all_configs() no longer generates: {sorted(stale)}; delete them or {REGENERATE}"
    )
    assert on_disk >= {"query_encoder/configs/onnxruntime.pbtxt", "item_encoder/configs/tensorrt.pbtxt"}


@pytest.mark.parametrize("relative", sorted(CONFIGS))
def test_every_config_parses_back(relative):
    config = CONFIGS[relative]
    text = render(config)
    assert parse(text) == config
    assert parse((REPO / relative).read_text()).name == config.name


def test_expected_models_and_variants():
    assert set(MODELS) == {
        "tokenizer",
        "query_encoder",
        "item_encoder",
        "rerank",
        "recommend",
        "embed_query",
        "embed_item",
        "track",
        "catalog",
        "rules",
    }
    assert set(ENSEMBLES) == {"recommend", "embed_query", "embed_item"}
    for encoder in ("query_encoder", "item_encoder"):
        for variant in CONFIG_VARIANTS:
            assert f"{encoder}/configs/{variant}.pbtxt" in CONFIGS


# -- consistency of the model graph ----------------------------------------------------------------


def tensors(config: mc.ModelConfig, kind: str) -> dict[str, object]:
    return {t.name: t for t in getattr(config, kind)}


@pytest.mark.parametrize("name", sorted(ENSEMBLES))
def test_ensemble_steps_wire_real_models_and_tensors(name):
    ensemble = ENSEMBLES[name]
    steps = ensemble.ensemble_scheduling.step
    assert steps, f"{name} has no steps"
    available = dict(tensors(ensemble, "input"))  # tensor name -> (data_type, dims) source
    consumed, produced = set(), set()
    for step in steps:
        assert step.model_name in MODELS, f"{name}: step model {step.model_name!r} is not in all_configs()"
        model = MODELS[step.model_name]
        assert model.max_batch_size >= ensemble.max_batch_size
        model_inputs, model_outputs = tensors(model, "input"), tensors(model, "output")
        for key, tensor in step.input_map.items():
            assert key in model_inputs, f"{name}: {key!r} is not an input of {model.name}"
            assert tensor in available, f"{name}: {tensor!r} is consumed by {model.name} before it is produced"
            source = available[tensor]
            assert source.data_type == model_inputs[key].data_type, f"{name}: {tensor!r} dtype mismatch"
            assert list(source.dims) == list(model_inputs[key].dims), f"{name}: {tensor!r} dims mismatch"
            consumed.add(tensor)
        for key, tensor in step.output_map.items():
            assert key in model_outputs, f"{name}: {key!r} is not an output of {model.name}"
            assert tensor not in available, f"{name}: {tensor!r} produced twice"
            available[tensor] = model_outputs[key]
            produced.add(tensor)
        missing_required = {i.name for i in model.input if not i.optional and i.name not in step.input_map}
        assert not missing_required, f"{name}: {model.name} step lacks required inputs {missing_required}"

    for tensor in ensemble.input:
        assert tensor.name in consumed, f"{name}: input {tensor.name} is never consumed"
    for tensor in ensemble.output:
        assert tensor.name in produced, f"{name}: output {tensor.name} is never produced"
        assert available[tensor.name].data_type == tensor.data_type
        assert list(available[tensor.name].dims) == list(tensor.dims)


def test_recommend_exposes_rerank_contract_without_query_embedding():
    recommend, rerank = MODELS["recommend"], MODELS["rerank"]
    knobs = [name.upper() for name in OVERRIDABLE]
    assert [i.name for i in recommend.input] == [
        "QUERY",
        "HISTORY_IDS",
        "HISTORY_TS",
        "HISTORY_EVENTS",
        "K",
        "NOW",
        "USER_ID",
        *FILTER_NAMES,
        *knobs,
        "EXPLAIN",
    ]
    outputs = [
        "ITEM_IDS",
        "SCORES",
        "UNKNOWN_HISTORY",
        "EXPLORED",
        "SCORE_COMPONENTS",
        "PRE_DIVERSITY_RANK",
        "FEATURE_CONTRIBUTIONS",
        "RULE_EFFECTS",
    ]
    assert [o.name for o in recommend.output] == outputs
    assert list(recommend.output) == [o for o in rerank.output if o.name != "INTEREST"]
    assert [o.name for o in rerank.output][4] == "INTEREST"  # rerank only: the served user vector
    for i in recommend.input:
        assert i.optional == (i.name != "QUERY")


@pytest.mark.parametrize("relative", sorted(CONFIGS))
def test_every_non_ensemble_model_has_dynamic_batching(relative):
    config = CONFIGS[relative]
    if config.platform == "ensemble":
        assert not config.HasField("dynamic_batching")
        return
    assert config.HasField("dynamic_batching"), f"{relative} has no dynamic_batching"
    assert config.max_batch_size > 0


def test_rerank_parameters_load_back_as_the_default_ranking_config():
    rerank = MODELS["rerank"]
    parameters = {k: v.string_value for k, v in rerank.parameters.items()}
    assert RankingConfig.from_parameters(parameters) == RankingConfig()


# -- model directories -----------------------------------------------------------------------------

EXPECTED_ADAPTER = {
    "tokenizer": "TokenizerModel",
    "query_encoder": "EncoderModel",
    "item_encoder": "EncoderModel",
    "rerank": "RerankModel",
    "track": "TrackModel",
    "catalog": "CatalogModel",
    "rules": "RulesModel",
}


def model_dirs() -> list[Path]:
    return sorted(p for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def test_model_directories_match_all_configs():
    assert {p.name for p in model_dirs()} == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_directory_has_version_1_and_python_adapter(name):
    directory = REPO / name
    assert (directory / "1").is_dir(), f"{directory} has no version directory 1/"
    config = MODELS[name]
    if config.backend == "python":
        model_py = directory / "1" / "model.py"
        assert model_py.is_file(), f"{name} uses the Python backend but has no 1/model.py"
        tree = ast.parse(model_py.read_text())
        imported = {
            alias.asname: alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "aisle_server.triton_models"
            for alias in node.names
        }
        assert imported.get("TritonPythonModel") == EXPECTED_ADAPTER[name]
    else:
        assert not (directory / "1" / "model.py").exists(), f"{name} is not a Python-backend model"


def test_adapter_classes_exist():
    from aisle_server import triton_models

    for cls in set(EXPECTED_ADAPTER.values()):
        assert callable(getattr(triton_models, cls, None)), cls


# -- generation ------------------------------------------------------------------------------------


def test_write_configs_with_another_dim(tmp_path):
    written = write_configs(tmp_path, dim=768)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(CONFIGS)
    configs = {p.relative_to(tmp_path).as_posix(): parse(p.read_text()) for p in written}

    for encoder in ("query_encoder", "item_encoder"):
        for relative in [f"{encoder}/config.pbtxt"] + [f"{encoder}/configs/{v}.pbtxt" for v in CONFIG_VARIANTS]:
            (output,) = configs[relative].output
            assert output.name == "embedding" and list(output.dims) == [768], relative
    query_embedding = tensors(configs["rerank/config.pbtxt"], "input")["QUERY_EMBEDDING"]
    assert list(query_embedding.dims) == [768]
    for embed in ("embed_query", "embed_item"):
        assert list(configs[f"{embed}/config.pbtxt"].output[0].dims) == [768]
    assert all(str(DEFAULT_DIM) not in p.read_text() for p in written)


def test_write_configs_carries_ranking_parameters(tmp_path):
    write_configs(tmp_path, ranking=RankingConfig(default_k=5, candidates=50))
    rerank = parse((tmp_path / "rerank/config.pbtxt").read_text())
    parameters = {k: v.string_value for k, v in rerank.parameters.items()}
    assert RankingConfig.from_parameters(parameters) == RankingConfig(default_k=5, candidates=50)


def test_encoder_variants():
    default = encoder_config("query_encoder", 384)
    assert default.backend == "python" and default.parameters["onnx_file"].string_value == "model.onnx"
    ort = encoder_config("query_encoder", 384, "onnxruntime")
    assert ort.platform == "onnxruntime_onnx" and ort.default_model_filename == "model.onnx"
    trt = encoder_config("query_encoder", 384, "tensorrt")
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    assert [g.kind for g in trt.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]


def test_serve_onnx_file_repoints_one_encoder_and_keeps_the_rest_of_its_config(tmp_path):
    from aisle_export.build.repository import serve_onnx_file, served_onnx_file

    write_configs(tmp_path)
    before = parse((tmp_path / "query_encoder/config.pbtxt").read_text())
    assert served_onnx_file(tmp_path, "query_encoder") == tmp_path / "query_encoder" / "1" / "model.onnx"
    serve_onnx_file(tmp_path, "query_encoder", "model.int8.onnx")
    after = parse((tmp_path / "query_encoder/config.pbtxt").read_text())
    assert served_onnx_file(tmp_path, "query_encoder") == tmp_path / "query_encoder" / "1" / "model.int8.onnx"
    after.parameters["onnx_file"].string_value = "model.onnx"
    assert after == before  # only the file changed
    assert served_onnx_file(tmp_path, "item_encoder").name == "model.onnx"
    with pytest.raises(ValueError, match="names no onnx_file"):
        serve_onnx_file(tmp_path, "rerank", "model.int8.onnx")


def test_unknown_encoder_variant_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        encoder_config("query_encoder", 384, "bogus")
