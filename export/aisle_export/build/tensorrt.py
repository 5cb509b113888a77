"""Build strongly typed TensorRT engines (``model.plan``) from the FP16 / INT8 Q/DQ encoder graphs.

Why strongly typed: TensorRT 10.12+ deprecates (11 removes) the FP16/INT8 builder flags and
implicit INT8 calibration. Precision now lives in the ONNX itself — ``model.fp16.onnx`` and
``model.int8.qdq.onnx`` from :mod:`.quantize`, already gated against FP32 — and the network is
created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` so TensorRT runs exactly those types.

A plan only loads in the TensorRT that built it, so the version is recorded beside it
(``model.plan.json``) and :func:`load_engine` refuses a mismatch with a message naming both,
instead of TensorRT's deserialization error. The builder also writes the ``tensorrt`` config
variant with ``max_batch_size`` equal to the profile's max batch, and prints the equivalent
``trtexec`` command (for builds without Python bindings).

This module imports no torch: inside ``nvcr.io/nvidia/tritonserver:<version>-py3`` it runs as
``python -m aisle_export.build.tensorrt --repo /models --precision fp16`` on ONNX files exported
elsewhere. ``tensorrt`` is imported only when an engine is built or loaded.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aisle_export.build.repository import MAX_BATCH_SIZE, encoder_config, render

PLAN_FILE = "model.plan"
META_FILE = "model.plan.json"
ENCODERS = ("query_encoder", "item_encoder")
INPUT_NAMES = ("input_ids", "attention_mask")
#: engine precision → the ONNX variant it is built from (see aisle_export.build.quantize.VARIANTS)
SOURCES = {"fp16": "model.fp16.onnx", "int8": "model.int8.qdq.onnx"}
SEQUENCE_MULTIPLE = 16  # the server tokenizer pads to multiples of 16
WORKSPACE_BYTES = 2 << 30


class TensorRTUnavailable(RuntimeError):
    """The ``tensorrt`` Python package is not installed (it is not, outside the Triton/TensorRT containers)."""


class EngineVersionMismatch(RuntimeError):
    """A plan built by one TensorRT version was offered to another."""


@dataclass(frozen=True)
class Profile:
    """One optimization profile: min/opt/max batch and sequence length for both inputs."""

    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = MAX_BATCH_SIZE
    min_seq: int = SEQUENCE_MULTIPLE
    opt_seq: int = 32
    max_seq: int = 256

    def __post_init__(self) -> None:
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(
                f"profile batch needs 1 <= min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if not (1 <= self.min_seq <= self.opt_seq <= self.max_seq):
            raise ValueError(
                f"profile sequence needs 1 <= min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}"
            )

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)

    @classmethod
    def for_encoder(cls, encoder_dir: Path, encoder: str, **overrides: int) -> Profile:
        """Defaults from the exported tower's config: max sequence = the tokenizer's max_length
        rounded up to the padding multiple, opt sequence 32 for queries (short) and 64 for items."""
        settings = Path(encoder_dir) / "tokenizer_settings.json"
        max_length = json.loads(settings.read_text())["max_length"] if settings.is_file() else 256
        max_seq = -(-int(max_length) // SEQUENCE_MULTIPLE) * SEQUENCE_MULTIPLE
        values = {"max_seq": max_seq, "opt_seq": min(max_seq, 32 if encoder == "query_encoder" else 64)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def import_tensorrt() -> Any:
    try:
        import tensorrt  # only present in the Triton/TensorRT containers
    except ImportError as exc:
        raise TensorRTUnavailable(
            "tensorrt is not installed: build engines inside nvcr.io/nvidia/tritonserver:<version>-py3 "
            "with the tensorrt wheel matching that container (see README, 'Encoders: INT8, FP16 and TensorRT')"
        ) from exc
    return tensorrt


def trtexec_command(onnx_path: Path, plan_path: Path, profile: Profile) -> str:
    """The ``trtexec`` invocation that builds the same engine (strongly typed, same profile)."""
    (b0, s0), (b1, s1), (b2, s2) = profile.shapes()

    def shapes(b: int, s: int) -> str:
        return ",".join(f"{name}:{b}x{s}" for name in INPUT_NAMES)

    return (
        f"trtexec --onnx={onnx_path} --saveEngine={plan_path} --stronglyTyped "
        f"--minShapes={shapes(b0, s0)} --optShapes={shapes(b1, s1)} --maxShapes={shapes(b2, s2)} "
        f"--memPoolSize=workspace:{WORKSPACE_BYTES >> 20}M"
    )


def build_engine(onnx_path: Path, plan_path: Path, profile: Profile, trt: Any | None = None) -> dict:
    """Parse ``onnx_path`` into a strongly typed network, build it with ``profile`` and write plan + metadata."""
    trt = trt or import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    optimization = builder.create_optimization_profile()
    minimum, optimum, maximum = profile.shapes()
    for name in INPUT_NAMES:
        optimization.set_shape(name, minimum, optimum, maximum)
    config.add_optimization_profile(optimization)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    plan_path.write_bytes(bytes(plan))
    meta = {
        "tensorrt_version": trt.__version__,
        "source_onnx": onnx_path.name,
        "profile": asdict(profile),
        "strongly_typed": True,
        "built_at": time.time(),
    }
    (plan_path.parent / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def check_version(plan_path: Path, installed: str) -> dict:
    """The plan's metadata, or :class:`EngineVersionMismatch` if it was built by another TensorRT."""
    meta_path = Path(plan_path).parent / META_FILE
    if not meta_path.is_file():
        raise EngineVersionMismatch(
            f"{plan_path}: no {META_FILE} beside it; rebuild with `aisle export --engine tensorrt`"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("tensorrt_version") != installed:
        raise EngineVersionMismatch(
            f"{plan_path} was built by TensorRT {meta.get('tensorrt_version')} but this is TensorRT {installed}; "
            "plans are not portable across versions: rebuild it in this container"
        )
    return meta


def load_engine(plan_path: Path, trt: Any | None = None) -> Any:
    """Deserialize ``plan_path`` after checking it was built by the installed TensorRT."""
    trt = trt or import_tensorrt()
    check_version(plan_path, trt.__version__)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialize {plan_path}")
    return engine


def plan_jobs(repo: Path, precision: str, **overrides: int) -> list[tuple[str, Path, Path, Profile]]:
    """(encoder, source ONNX, plan path, profile) per encoder; checks the sources exist. No TensorRT needed."""
    if precision not in SOURCES:
        raise ValueError(f"unknown engine precision {precision!r}; expected one of {sorted(SOURCES)}")
    jobs = []
    for encoder in ENCODERS:
        directory = Path(repo) / encoder / "1"
        source = directory / SOURCES[precision]
        if not source.is_file():
            variant = "fp16" if precision == "fp16" else "int8-qdq"
            raise FileNotFoundError(f"{source} not found: run `aisle export --precision {variant}` first")
        jobs.append((encoder, source, directory / PLAN_FILE, Profile.for_encoder(directory, encoder, **overrides)))
    return jobs


def write_tensorrt_configs(repo: Path, dim: int, profiles: dict[str, Profile]) -> list[Path]:
    """``<encoder>/configs/tensorrt.pbtxt`` with max_batch_size = the engine profile's max batch."""

    written = []
    for encoder, profile in profiles.items():
        path = Path(repo) / encoder / "configs" / "tensorrt.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(encoder_config(encoder, dim, "tensorrt", max_batch_size=profile.max_batch)))
        written.append(path)
    return written


def build_repository_engines(repo: Path, precision: str, dim: int = 384, **overrides: int) -> dict:
    """Build both encoders' plans for ``precision``, print the trtexec equivalents, write the configs.

    Everything that needs no TensorRT (sources, profiles, commands) runs before the import, so a
    machine without TensorRT fails with :class:`TensorRTUnavailable` only after those checks pass.
    """
    jobs = plan_jobs(repo, precision, **overrides)
    for encoder, source, plan, profile in jobs:
        print(f"[aisle export] {encoder}: equivalent command:\n  {trtexec_command(source, plan, profile)}", flush=True)
    trt = import_tensorrt()
    results = {}
    for encoder, source, plan, profile in jobs:
        started = time.perf_counter()
        print(
            f"[aisle export] building {plan} from {source.name} (TensorRT {trt.__version__}, strongly typed)",
            flush=True,
        )
        results[encoder] = build_engine(source, plan, profile, trt)
        load_engine(plan, trt)  # proves the plan deserializes here and the metadata matches
        print(f"[aisle export] built {plan} in {time.perf_counter() - started:.0f}s", flush=True)
    write_tensorrt_configs(repo, dim, {encoder: profile for encoder, _, _, profile in jobs})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build TensorRT engines for the encoders of an exported repository.")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--precision", choices=sorted(SOURCES), required=True)
    parser.add_argument("--dim", type=int, default=384)
    for name in ("min_batch", "opt_batch", "max_batch", "min_seq", "opt_seq", "max_seq"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int)
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("min_batch", "opt_batch", "max_batch", "min_seq", "opt_seq", "max_seq")}
    build_repository_engines(args.repo, args.precision, args.dim, **overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
