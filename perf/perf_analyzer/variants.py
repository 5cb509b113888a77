"""Config variants of an exported repository for the benchmark sweep, under ``build/bench/``.

Each variant is a copy of ``build/model_repository`` (files hard-linked, so a copy costs no disk)
whose ``config.pbtxt`` files are regenerated from the typed configs of
:func:`aisle_export.build.repository.all_configs` — copies of the ``model_config_pb2`` objects, modified
field by field (no dynamic batching: ``ClearField("dynamic_batching")``; N instances:
``instance_group[0].count = N``), then printed with :func:`aisle_export.build.repository.render`.

INT8 variants select ``<encoder>/configs/int8.pbtxt`` at start (``TritonServer(model_config_name=
"int8")``); the INT8 graph ``model.int8.onnx`` is taken from the source repository when
``aisle export --precision int8`` wrote it there, and otherwise quantized once (ONNX Runtime dynamic
INT8, :func:`aisle_export.build.quantize.quantize_int8_dynamic`) into ``build/bench/int8-cache/``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

ENCODERS = ("query_encoder", "item_encoder")
#: models whose scheduling the sweep changes (the ensembles have no scheduler of their own)
SCHEDULED = ("tokenizer", "query_encoder", "item_encoder", "rerank")
INT8_FILE = "model.int8.onnx"


@dataclass(frozen=True)
class Variant:
    """One Aisle configuration of the sweep."""

    precision: str  # "fp32" | "int8"
    dynamic_batching: bool
    #: instances of every scheduled model; 0 = each model's count as exported
    instances: int
    #: ONNX Runtime intra-op threads per encoder instance; 0 = the config's own
    threads: int = 0
    #: per-model changes on top of the rest, ``(model, knob, value)``, a knob of :data:`KNOBS`: one
    #: at a time for the studies of ``python -m perf.bench --variants`` (:data:`STUDIES`)
    tweaks: tuple[tuple[str, str, int], ...] = ()

    @property
    def exported(self) -> bool:
        """Whether this is Aisle's default: the configs exactly as ``aisle export`` writes them."""
        return self == DEFAULT

    @property
    def default_scheduling(self) -> bool:
        """The default as exported, or it with one of :data:`STUDIES`' tweaks."""
        return self.exported or bool(self.tweaks and replace(self, tweaks=()).exported)

    @property
    def name(self) -> str:
        tweaks = "".join(f"+{model}-{knob}{value}" for model, knob, value in self.tweaks)
        if self.default_scheduling:
            return "aisle-default" + tweaks
        threads = f"-t{self.threads}" if self.threads else ""
        instances = f"{self.instances}i" if self.instances else "exported-i"
        return f"aisle-{self.precision}-{'db' if self.dynamic_batching else 'nodb'}-{instances}{threads}{tweaks}"

    @property
    def label(self) -> str:
        tweaks = "".join(f", {model} {knob} {value}" for model, knob, value in self.tweaks)
        if self.default_scheduling:
            return "Aisle default (configs as exported)" + tweaks
        batching = "dyn. batching" if self.dynamic_batching else "no batching"
        threads = f", {self.threads} ORT thread" if self.threads else ""
        instances = f"{self.instances} inst." if self.instances else "exported inst."
        return f"Aisle ORT {self.precision.upper()}, {batching}, {instances}{threads}{tweaks}"

    @property
    def model_config_name(self) -> str | None:
        return "int8" if self.precision == "int8" else None


#: Aisle's default: every model's scheduling (instances, dynamic batching, ORT threads) as exported, and
#: the query graph the export chose (its INT8 graph where that passed its gate); the item tower FP32
DEFAULT = Variant("fp32", True, 0)


#: a model's instances, its dynamic batcher's delay, and (the tokenizer's ``tokenizer_settings.json``,
#: not a config) the multiple its sequences are padded to
KNOBS = ("count", "delay_us", "pad_to")

#: what the default's scheduling could be instead, one knob each (not in ``make bench``'s sweep; name
#: them with ``--variants``): the rerank model's instances, the encoder's batching delay, its instances
STUDIES = (
    Variant("fp32", True, 0, tweaks=(("rerank", "count", 2),)),
    Variant("fp32", True, 0, tweaks=(("tokenizer", "count", 2),)),
    Variant("fp32", True, 0, tweaks=(("query_encoder", "delay_us", 0),)),
    Variant("fp32", True, 0, tweaks=(("query_encoder", "delay_us", 5000),)),
    Variant("fp32", True, 0, tweaks=(("query_encoder", "count", 1),)),
    Variant("fp32", True, 0, tweaks=(("query_encoder", "count", 3),)),
    Variant("fp32", True, 0, tweaks=(("tokenizer", "pad_to", 8),)),
)


def sweep(int8: bool = True) -> list[Variant]:
    """FP32 (and INT8) × with/without dynamic batching × 1/2 instances per model."""
    precisions = ("fp32", "int8") if int8 else ("fp32",)
    return [Variant(p, db, n) for p in precisions for db in (True, False) for n in (1, 2)]


def modified(config: mc.ModelConfig, variant: Variant) -> mc.ModelConfig:
    """A copy of ``config`` with ``variant``'s scheduling; ensembles come back unchanged."""
    out = mc.ModelConfig()
    out.CopyFrom(config)
    if out.platform == "ensemble":
        return out
    if not variant.dynamic_batching:
        out.ClearField("dynamic_batching")
    for group in out.instance_group:
        group.count = variant.instances or group.count
    if variant.threads and "intra_op_threads" in out.parameters:
        out.parameters["intra_op_threads"].string_value = str(variant.threads)
    if variant.instances and not out.instance_group and out.platform != "ensemble":
        # native backends (onnxruntime/tensorrt variants) without a group get Triton's default;
        # give them an explicit one so the count applies
        out.instance_group.append(mc.ModelInstanceGroup(count=variant.instances))
    for model, knob, value in variant.tweaks:
        if knob not in KNOBS:
            raise ValueError(f"tweak {knob!r}: only {', '.join(KNOBS)}")
        if out.name != model:
            continue
        if knob == "count" and out.instance_group:
            out.instance_group[0].count = value
        elif knob == "count":
            out.instance_group.append(mc.ModelInstanceGroup(count=value))
        elif knob == "delay_us" and out.HasField("dynamic_batching"):
            out.dynamic_batching.max_queue_delay_microseconds = value
    return out


def variant_configs(variant: Variant, dim: int) -> dict[str, mc.ModelConfig]:
    from aisle_export.build.repository import all_configs  # heavy import chain

    return {path: modified(config, variant) for path, config in all_configs(dim).items()}


def _link_tree(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with hard links (falls back to copies across filesystems)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns("__pycache__"))


def _write_fresh(path: Path, text: str) -> None:
    """Replace ``path`` without writing through a hard link into the source repository."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_text(text)


def int8_graph(source_repo: Path, encoder: str, cache_dir: Path) -> Path:
    """``model.int8.onnx`` for ``encoder``: the exported one if present, else a cached quantization."""
    exported = source_repo / encoder / "1" / INT8_FILE
    if exported.is_file():
        return exported
    cached = cache_dir / encoder / INT8_FILE
    fp32 = source_repo / encoder / "1" / "model.onnx"
    stamp = cached.with_suffix(".source")
    key = f"{fp32.stat().st_size}:{fp32.stat().st_mtime_ns}"
    if cached.is_file() and stamp.is_file() and stamp.read_text() == key:
        return cached
    from aisle_export.build.quantize import quantize_int8_dynamic

    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial")
    quantize_int8_dynamic(fp32, partial)
    os.replace(partial, cached)
    stamp.write_text(key)
    return cached


def build_variant(source_repo: Path, variant: Variant, root: Path, dim: int = 384) -> Path:
    """Write ``root/<variant.name>/`` — a hard-linked copy of ``source_repo`` with the variant's configs."""
    from aisle_export.build.repository import render, serve_onnx_file, served_onnx_file

    source_repo, target = Path(source_repo), Path(root) / variant.name
    if target.exists():
        shutil.rmtree(target)
    _link_tree(source_repo, target)
    for relative, config in variant_configs(variant, dim).items():
        _write_fresh(target / relative, render(config))
    if variant.default_scheduling and (source_repo / "query_encoder" / "config.pbtxt").is_file():
        # the query graph `aisle export` chose (aisle_export.build.pipeline.choose_query_graph); the
        # other rows name their precision and serve it on both encoders
        serve_onnx_file(target, "query_encoder", served_onnx_file(source_repo, "query_encoder").name)
    for model, knob, value in variant.tweaks:
        if knob == "pad_to":
            settings = target / model / "1" / "tokenizer_settings.json"
            text = json.loads(settings.read_text(encoding="utf-8"))
            _write_fresh(settings, json.dumps({**text, "pad_to_multiple_of": value}, indent=2) + "\n")
    if variant.precision == "int8":
        for encoder in ENCODERS:
            graph = int8_graph(source_repo, encoder, Path(root) / "int8-cache")
            destination = target / encoder / "1" / INT8_FILE
            if not destination.exists():
                os.link(graph, destination)
    return target


def main(argv: list[str] | None = None) -> None:
    """Write variant repositories (used by ``gpu_suite.sh``; ``perf.bench`` calls build_variant itself)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m perf.perf_analyzer.variants",
        description="Write benchmark config variants of a model repository.",
    )
    parser.add_argument("--repo", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--out", type=Path, default=Path("build/bench/repos"))
    parser.add_argument("--only", nargs="*", help="variant names, e.g. aisle-default aisle-fp32-nodb-1i")
    parser.add_argument("--no-int8", action="store_true")
    args = parser.parse_args(argv)
    chosen = [DEFAULT, *sweep(int8=not args.no_int8), Variant("fp32", True, 2, threads=1)]
    chosen += list(STUDIES) if args.only else []  # the studies only when named
    for variant in chosen:
        if not args.only or variant.name in args.only:
            print(build_variant(args.repo, variant, args.out))


if __name__ == "__main__":
    main()
