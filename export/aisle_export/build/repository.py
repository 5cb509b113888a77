"""Write the Triton model repository: configs from typed protobuf objects, plus the model.py adapters.

Every ``config.pbtxt`` is built from tritonclient's ``model_config_pb2`` and printed with protobuf's
``text_format`` — never by string concatenation — so a typo is a Python error, not a server that
refuses to start. The checked-in ``model_repository/`` holds the same files generated for the
default tower (384-dim); ``python -m aisle_export.build.repository model_repository`` regenerates them and a
unit test keeps the two in step.

Config variants (``--model-config-name`` picks ``<model>/configs/<name>.pbtxt`` where present):

- default ``config.pbtxt``: encoders run ONNX Runtime inside the Python backend (any tritonserver,
  including the one in nvidia-pytriton, which has no ONNX Runtime backend);
- ``onnxruntime``: the Triton container's native ONNX Runtime backend on the same ``model.onnx``;
- ``tensorrt``: a TensorRT engine ``model.plan`` on the GPU.
- ``int8``: the default Python-backend encoder on ``model.int8.onnx`` (CPU INT8, written by
  ``aisle export --precision int8``).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterable
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisle_contract import (
    CATALOG_MODEL,
    CHANGE_ID,
    DEFAULT_EVENT_TYPES,
    EVENT_ID,
    EVENT_TYPE,
    EXPLAIN,
    EXPLAIN_OUTPUTS,
    EXPLORED,
    FEATURE_CONTRIBUTIONS,
    FIELDS,
    FILTER_NAMES,
    INTEREST_OUTPUT,
    ITEM_ID,
    MAX_BATCH,
    MAX_CATALOG_BATCH,
    MAX_TRACK_BATCH,
    OP,
    OUTPUT_NAMES,
    OVERRIDABLE,
    PRE_DIVERSITY_RANK,
    PROPERTIES,
    RANKER_FEATURE_NAMES,
    RESULT,
    RULE_EFFECTS,
    RULE_SET,
    RULES,
    RULES_MODEL,
    SCORE_COMPONENT_NAMES,
    SCORE_COMPONENTS,
    STORED,
    TRACK_MODEL,
    TS,
    USER_ID,
    RankingConfig,
)

#: The checked-in repository: model.py adapters, generated configs, no artifacts.
#: The checked-in repository (package data; ``model_repository/`` at the top of the source tree links
#: here), so that ``aisle export`` works from an installed wheel in any directory.
TEMPLATE_DIR = Path(str(resources.files("aisle_export.model_repository"))).resolve()
DEFAULT_DIM = 384
MAX_BATCH_SIZE = MAX_BATCH
CONFIG_VARIANTS = ("onnxruntime", "tensorrt", "int8")
#: ``aisle export --precision int8`` writes this beside model.onnx (see aisle_export.build.quantize)
INT8_ONNX_FILE = "model.int8.onnx"
# How much the Python-backend encoder instances lower their CPU priority
# (aisle_server.processes.lower_priority): 19, the most, measured against 0 and 10 at concurrency 16
# (docs/results.md, "rerank within 2 ms served").
ENCODER_NICE = 19

STRING, INT32, INT64, FP32, FP64 = mc.TYPE_STRING, mc.TYPE_INT32, mc.TYPE_INT64, mc.TYPE_FP32, mc.TYPE_FP64
_KNOB_TYPES = {"FP32": FP32, "FP64": FP64, "INT32": INT32, "BOOL": mc.TYPE_BOOL, "BYTES": STRING}


def _input(name: str, dtype: int, dims: Iterable[int], optional: bool = False, ragged: bool = False) -> mc.ModelInput:
    return mc.ModelInput(name=name, data_type=dtype, dims=list(dims), optional=optional, allow_ragged_batch=ragged)


def _output(name: str, dtype: int, dims: Iterable[int]) -> mc.ModelOutput:
    return mc.ModelOutput(name=name, data_type=dtype, dims=list(dims))


#: A queued batch of one of these sizes runs at once instead of waiting out the queue delay: a
#: client micro-batch of 16 rows gains nothing by waiting for more, and without them every 16-row
#: request paid the encoder's full 1 ms queue delay; single calls still gather for the delay.
#: What this did to micro-batched feed throughput: docs/results.md ("Design measurements behind
#: code decisions"; the current SDK figures under "SDK: micro-batching and caches").
PREFERRED_BATCH_SIZES = (16, 32, 64)


def _batching(delay_us: int, max_batch_size: int = MAX_BATCH_SIZE) -> mc.ModelDynamicBatching:
    preferred = [size for size in PREFERRED_BATCH_SIZES if size <= max_batch_size]
    return mc.ModelDynamicBatching(max_queue_delay_microseconds=delay_us, preferred_batch_size=preferred)


def _parameters(config: mc.ModelConfig, values: dict[str, object]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)


def tokenizer_config() -> mc.ModelConfig:
    return mc.ModelConfig(
        name="tokenizer",
        backend="python",
        max_batch_size=MAX_BATCH_SIZE,
        input=[_input("TEXT", STRING, [1])],
        output=[_output("INPUT_IDS", INT64, [-1]), _output("ATTENTION_MASK", INT64, [-1])],
        dynamic_batching=_batching(200),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )


def encoder_config(
    name: str, dim: int, variant: str | None = None, max_batch_size: int = MAX_BATCH_SIZE
) -> mc.ModelConfig:
    """One encoder config; ``max_batch_size`` is lowered by the TensorRT builder to its profile's max batch."""
    config = mc.ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        input=[_input("input_ids", INT64, [-1]), _input("attention_mask", INT64, [-1])],
        output=[_output("embedding", FP32, [dim])],
        dynamic_batching=_batching(1000, max_batch_size),
    )
    if variant in (None, "int8"):
        # ONNX Runtime inside the Python backend (int8: pointed at the quantized graph). Two
        # single-threaded instances rather than one instance with a thread pool over all cores:
        # the pool's threads contend with the tokenizer and rerank for the same cores, and the two
        # instances won on throughput for FP32 and INT8 alike (figures: docs/results.md,
        # "Benchmarks"; perf/results/bench_report.md). Scale `count` with the cores.
        # `nice`: the instances run at the lowest CPU priority, so that the short stages sharing
        # their cores (tokenizer, rerank) run first instead of queueing behind a long encoder batch
        # (docs/model-configuration.md).
        config.backend = "python"
        config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=2))
        onnx_file = INT8_ONNX_FILE if variant else "model.onnx"
        _parameters(config, {"onnx_file": onnx_file, "intra_op_threads": 1, "nice": ENCODER_NICE})
    elif variant == "onnxruntime":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
    elif variant == "tensorrt":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=1))
    else:
        raise ValueError(f"unknown encoder variant {variant!r}; expected one of {CONFIG_VARIANTS}")
    return config


def rerank_config(dim: int, ranking: RankingConfig) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name="rerank",
        backend="python",
        max_batch_size=MAX_BATCH_SIZE,
        input=[
            _input("QUERY", STRING, [1]),
            _input("QUERY_EMBEDDING", FP32, [dim]),
            _input("HISTORY_IDS", STRING, [-1], optional=True, ragged=True),
            _input("HISTORY_TS", FP64, [-1], optional=True, ragged=True),
            _input("HISTORY_EVENTS", STRING, [-1], optional=True, ragged=True),
            _input("K", INT32, [1], optional=True),
            _input("NOW", FP64, [1], optional=True),
            _input(USER_ID, STRING, [1], optional=True),
            *(_input(name, STRING, [-1], optional=True, ragged=True) for name in FILTER_NAMES),
            *(_input(name.upper(), _KNOB_TYPES[dtype], [1], optional=True) for name, dtype in OVERRIDABLE.items()),
            _input(EXPLAIN, mc.TYPE_BOOL, [1], optional=True),
        ],
        output=[
            _output("ITEM_IDS", STRING, [-1]),
            _output("SCORES", FP32, [-1]),
            _output("UNKNOWN_HISTORY", INT32, [1]),
            _output(EXPLORED, STRING, [-1]),
            _output(INTEREST_OUTPUT, FP32, [dim]),  # rerank only: the ensemble leaves it out
            _output(SCORE_COMPONENTS, FP32, [-1, len(SCORE_COMPONENT_NAMES)]),
            _output(PRE_DIVERSITY_RANK, INT32, [-1]),
            _output(FEATURE_CONTRIBUTIONS, FP32, [-1, len(RANKER_FEATURE_NAMES) + 1]),
            _output(RULE_EFFECTS, STRING, [-1]),
        ],
        dynamic_batching=_batching(200),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    _parameters(config, asdict(ranking))
    return config


#: ``track``'s defaults (``aisle_server.state.StateSettings``): events kept per shopper, how long a
#: shopper's events and an event id's idempotency key live, the per-command Redis timeout.
TRACK_PARAMETERS = {
    "event_types": ",".join(DEFAULT_EVENT_TYPES),
    "max_user_events": 200,
    "user_ttl_s": 90 * 24 * 3600,
    "dedupe_ttl_s": 7 * 24 * 3600,
    "state_timeout_s": 0.5,
}


def track_config(event_types: Iterable[str] | None = None) -> mc.ModelConfig:
    """``track``: events in, written to the state store (Redis) by ``aisle_server.triton_models.TrackModel``.

    Dynamically batched: the events of every request in a batch go to Redis in one pipeline and
    share one AOF fsync.
    """
    config = mc.ModelConfig(
        name=TRACK_MODEL,
        backend="python",
        max_batch_size=MAX_TRACK_BATCH,
        input=[
            _input(USER_ID, STRING, [1]),
            _input(ITEM_ID, STRING, [1]),
            _input(EVENT_TYPE, STRING, [1]),
            _input(TS, FP64, [1], optional=True),
            _input(EVENT_ID, STRING, [1], optional=True),
            _input(PROPERTIES, STRING, [1], optional=True),
        ],
        output=[_output(EVENT_ID, STRING, [1]), _output(STORED, mc.TYPE_BOOL, [1])],
        dynamic_batching=_batching(200, MAX_TRACK_BATCH),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    parameters = dict(TRACK_PARAMETERS)
    if event_types is not None:
        parameters["event_types"] = ",".join(event_types)
    _parameters(config, parameters)
    return config


def catalog_config() -> mc.ModelConfig:
    """``catalog``: live item changes in, logged to the state store by ``aisle_server.triton_models.CatalogModel``.

    Each request of a dynamic batch is handled alone: one transaction in the store and, for new
    texts, one ``embed_item`` call.
    """
    config = mc.ModelConfig(
        name=CATALOG_MODEL,
        backend="python",
        max_batch_size=MAX_CATALOG_BATCH,
        input=[_input(ITEM_ID, STRING, [1]), _input(OP, STRING, [1]), _input(FIELDS, STRING, [1])],
        output=[_output(CHANGE_ID, STRING, [1])],
        dynamic_batching=_batching(200, MAX_CATALOG_BATCH),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    _parameters(config, {"state_timeout_s": 2.0})
    return config


def rules_config() -> mc.ModelConfig:
    """``rules``: merchandising rule sets checked and stored by ``aisle_server.triton_models.RulesModel``.

    One request is one operation on one set (rare, operator-driven calls): batches of 1, each handled alone.
    """
    config = mc.ModelConfig(
        name=RULES_MODEL,
        backend="python",
        max_batch_size=1,
        input=[_input(OP, STRING, [1]), _input(RULE_SET, STRING, [1]), _input(RULES, STRING, [1])],
        output=[_output(RESULT, STRING, [1])],
        dynamic_batching=_batching(0, 1),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    _parameters(config, {"state_timeout_s": 2.0})
    return config


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> mc.ModelEnsembling.Step:
    return mc.ModelEnsembling.Step(model_name=model, model_version=-1, input_map=inputs, output_map=outputs)


def _tokenize_and_encode(text: str, encoder: str, embedding: str) -> list[mc.ModelEnsembling.Step]:
    return [
        _step("tokenizer", {"TEXT": text}, {"INPUT_IDS": "_input_ids", "ATTENTION_MASK": "_attention_mask"}),
        _step(encoder, {"input_ids": "_input_ids", "attention_mask": "_attention_mask"}, {"embedding": embedding}),
    ]


def recommend_config(dim: int, response_cache: bool = False) -> mc.ModelConfig:
    rerank = rerank_config(dim, RankingConfig())
    passthrough = [i.name for i in rerank.input if i.name not in ("QUERY", "QUERY_EMBEDDING")]
    outputs = [o for o in rerank.output if o.name in (*OUTPUT_NAMES, *EXPLAIN_OUTPUTS)]
    steps = _tokenize_and_encode("QUERY", "query_encoder", "_query_embedding")
    steps.append(
        _step(
            "rerank",
            {"QUERY": "QUERY", "QUERY_EMBEDDING": "_query_embedding", **{n: n for n in passthrough}},
            {o.name: o.name for o in outputs},
        )
    )
    return mc.ModelConfig(
        name="recommend",
        platform="ensemble",
        max_batch_size=MAX_BATCH_SIZE,
        input=[i for i in rerank.input if i.name != "QUERY_EMBEDDING"],
        output=outputs,
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
        response_cache=mc.ModelResponseCache(enable=True) if response_cache else None,
    )


def embed_config(name: str, encoder: str, dim: int, response_cache: bool = False) -> mc.ModelConfig:
    return mc.ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=MAX_BATCH_SIZE,
        input=[_input("TEXT", STRING, [1])],
        output=[_output("EMBEDDING", FP32, [dim])],
        ensemble_scheduling=mc.ModelEnsembling(step=_tokenize_and_encode("TEXT", encoder, "EMBEDDING")),
        response_cache=mc.ModelResponseCache(enable=True) if response_cache else None,
    )


def all_configs(
    dim: int = DEFAULT_DIM, ranking: RankingConfig | None = None, response_cache: bool = False
) -> dict[str, mc.ModelConfig]:
    """Every config file of the repository, keyed by its path relative to the repository root.

    ``response_cache`` turns on Triton's response cache for the ensembles (``recommend``,
    ``embed_*``); it takes effect only on a server started with ``--cache-config local,size=N``
    (``TritonServer(response_cache_bytes=N)``). Off by default: without ``NOW`` a cached
    ``recommend`` answer keeps the recency/freshness of the moment it was computed.
    """
    configs = {
        "tokenizer/config.pbtxt": tokenizer_config(),
        "rerank/config.pbtxt": rerank_config(dim, ranking or RankingConfig()),
        "recommend/config.pbtxt": recommend_config(dim, response_cache),
        "embed_query/config.pbtxt": embed_config("embed_query", "query_encoder", dim, response_cache),
        "embed_item/config.pbtxt": embed_config("embed_item", "item_encoder", dim, response_cache),
        "track/config.pbtxt": track_config(),
        "catalog/config.pbtxt": catalog_config(),
        "rules/config.pbtxt": rules_config(),
    }
    for encoder in ("query_encoder", "item_encoder"):
        configs[f"{encoder}/config.pbtxt"] = encoder_config(encoder, dim)
        for variant in CONFIG_VARIANTS:
            configs[f"{encoder}/configs/{variant}.pbtxt"] = encoder_config(encoder, dim, variant)
    return configs


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def queue_policy(max_queue_size: int = 0, timeout_ms: float = 0) -> mc.ModelQueuePolicy:
    """Load shedding for a dynamically batched model: at most ``max_queue_size`` requests wait (0 =
    unbounded), and a request that waited ``timeout_ms`` is rejected (0 = no timeout). Both answer
    UNAVAILABLE, which the SDK raises as ``aisle.Overloaded``."""
    return mc.ModelQueuePolicy(
        max_queue_size=int(max_queue_size),
        default_timeout_microseconds=int(timeout_ms * 1000),
        timeout_action=mc.ModelQueuePolicy.REJECT,
    )


def with_queue_policy(configs: dict[str, mc.ModelConfig], policy: mc.ModelQueuePolicy) -> dict[str, mc.ModelConfig]:
    """``configs`` with ``policy`` as the default queue policy of every dynamically batched model."""
    for config in configs.values():
        if config.HasField("dynamic_batching"):
            config.dynamic_batching.default_queue_policy.CopyFrom(policy)
    return configs


def write_configs(
    repo: Path,
    dim: int = DEFAULT_DIM,
    ranking: RankingConfig | None = None,
    response_cache: bool = False,
    queue: mc.ModelQueuePolicy | None = None,
) -> list[Path]:
    """Write every config; ``queue`` (see ``queue_policy``) bounds the queues of the batched models."""
    written = []
    configs = all_configs(dim, ranking, response_cache)
    if queue is not None:
        with_queue_policy(configs, queue)
    for relative, config in configs.items():
        path = Path(repo) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(config))
        written.append(path)
    return written


def serve_onnx_file(repo: Path, model: str, filename: str) -> Path:
    """Point ``model``'s default config (an encoder on the Python backend) at ``filename`` in its
    version directory: ``aisle export`` serves the gated INT8 query graph this way, and a benchmark
    that swaps another graph in points the config back at it."""
    path = Path(repo) / model / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    if "onnx_file" not in config.parameters:
        raise ValueError(f"{path} names no onnx_file: not an encoder served by the Python backend")
    config.parameters["onnx_file"].string_value = filename
    path.write_text(render(config))
    return path


def served_onnx_file(repo: Path, model: str) -> Path:
    """The ONNX graph ``model``'s default config serves (``model.onnx`` unless the export chose another)."""
    config = text_format.Parse((Path(repo) / model / "config.pbtxt").read_text(), mc.ModelConfig())
    name = config.parameters["onnx_file"].string_value if "onnx_file" in config.parameters else "model.onnx"
    return Path(repo) / model / "1" / name


def copy_template(repo: Path) -> Path:
    """Copy the checked-in repository (model.py adapters, configs) into ``repo``, keeping artifacts."""
    repo = Path(repo)
    if repo.resolve() != TEMPLATE_DIR:
        shutil.copytree(
            TEMPLATE_DIR, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "__init__.py")
        )
    return repo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="(Re)generate the repository's config.pbtxt files.")
    parser.add_argument("repo", type=Path, nargs="?", default=TEMPLATE_DIR)
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM)
    parser.add_argument("--response-cache", action="store_true", help="enable Triton's response cache on the ensembles")
    parser.add_argument(
        "--max-queue-size",
        type=int,
        default=0,
        help="shed load: at most N requests wait per model, the rest get Overloaded (0 = unbounded)",
    )
    parser.add_argument(
        "--queue-timeout-ms",
        type=float,
        default=0,
        help="shed load: reject a request that waited this long in a model's queue (0 = never)",
    )
    args = parser.parse_args(argv)
    queue = (
        queue_policy(args.max_queue_size, args.queue_timeout_ms)
        if args.max_queue_size or args.queue_timeout_ms
        else None
    )
    for path in write_configs(args.repo, args.dim, response_cache=args.response_cache, queue=queue):
        print(path)


if __name__ == "__main__":
    main()
