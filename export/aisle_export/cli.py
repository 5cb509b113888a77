"""The ``aisle`` command: export, index, serve, catalog, events, experiment, finetune, evaluate, demo.

Subcommands import their toolchain lazily, so the SDK install (no torch) still has a working
``aisle --help``; a subcommand whose extra is missing says which extra to install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_REPO = Path("build/model_repository")


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not ≥ 1")
    return value


def _export(args: argparse.Namespace) -> int:
    from aisle_export.pipeline import export_repository

    precisions = list(dict.fromkeys(args.precision or []))
    if args.engine == "tensorrt":
        # with an engine, --precision names the engine's precision: int8 → the Q/DQ ONNX, fp16 → the FP16 ONNX
        engine_precisions = [p for p in precisions if p in ("fp16", "int8")]
        if len(engine_precisions) != 1 or len(precisions) != 1:
            raise ValueError("--engine tensorrt needs exactly one --precision: fp16 or int8")
        precisions = ["int8-qdq" if engine_precisions[0] == "int8" else "fp16"]
    if args.finetuned is not None and (args.query_tower or args.item_tower):
        raise ValueError("--finetuned brings its own towers: leave out --query-tower and --item-tower")
    if args.stack is not None and args.finetuned is None:
        raise ValueError("--stack picks from what --finetuned DIR trained: give --finetuned")
    report = export_repository(
        args.repo,
        args.query_tower,
        args.item_tower,
        precisions=precisions,
        gate_catalog=args.gate_catalog,
        finetuned=args.finetuned,
        stack=args.stack,
        allow_below_gate=args.allow_below_gate,
    )
    if args.engine == "tensorrt":
        from aisle_export.tensorrt_engine import build_repository_engines

        dim = report["query_encoder"]["dim"]
        build_repository_engines(args.repo, engine_precisions[0], dim)
    return 0


def _distill(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from aisle_export.distill import distill
    from aisle_export.distill_train import DEFAULTS

    given = {name: getattr(args, name) for name in ("steps", "batch_size", "lr", "kl_weight", "seed", "layers")}
    config = replace(DEFAULTS[args.student], **{k: v for k, v in given.items() if v is not None})
    record = distill(
        args.student,
        args.out,
        teacher=args.teacher,
        corpus=args.corpus or (),
        workdir=args.workdir,
        products=args.products,
        config=config,
        queries=args.queries,
        judge_only=args.judge,
    )
    gate = record["gate"]
    summary = {
        "student": str(args.out),
        "held_out_mean_cosine": gate["held_out"]["mean_cosine"],
        "top10_agreement": gate["top10_agreement"]["agreement"],
    }
    for name in ("search_bigbasket", "search_movielens"):
        if name in gate:
            summary[f"{name} nDCG@10"] = {k: gate[name][k] for k in ("teacher", "student", "student_both_towers")}
    summary |= {"gate (query tower)": gate["verdict"], "gate (item tower)": gate["item_verdict"]}
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _index(args: argparse.Namespace) -> int:
    from aisle_export.catalog import read_catalog
    from aisle_export.indexing import write_index

    catalog = read_catalog(args.catalog, skip_bad_rows=args.skip_bad_rows)
    if catalog.skipped:
        print(f"skipped {catalog.skipped} bad rows, e.g.: {catalog.skip_reasons[:3]}", file=sys.stderr)
    write_index(
        catalog,
        args.repo,
        version=args.version,
        batch_size=args.batch_size,
        source=args.catalog,
        ann=args.ann,
        server=args.server,
        checkpoint=args.checkpoint,
        concurrency=args.concurrency,
        chunk_size=args.chunk_size,
        ann_kind=args.ann_kind,
        ann_nprobe=args.ann_nprobe,
        ann_refine=args.ann_refine,
    )
    if args.interactions is not None:
        from aisle_export.log_signals import write_log_signals

        write_log_signals(
            args.interactions, catalog, args.repo, skip_bad_rows=args.skip_bad_rows, event_weights=_event_weights(args)
        )
    return 0


def _event_weights(args: argparse.Namespace) -> dict[str, float]:
    from aisle_export.interactions import parse_event_weights

    return parse_event_weights(args.event_weights)


def _cutoff(text: str | None) -> float | None:
    """``--cutoff``: unix seconds or ISO-8601 (naive = UTC), read as the catalog reads times."""
    if text is None:
        return None
    from aisle_export.catalog import _parse_created_at, _RowError

    try:
        return _parse_created_at(text, "--cutoff")
    except _RowError as exc:
        raise ValueError(str(exc)) from None


def _log_data(args: argparse.Namespace):
    """The interaction log and catalog of ``--interactions/--catalog`` (or MovieLens-100K), cut in time."""
    from aisle_export.log_eval import load_log, movielens_files

    if (args.interactions is None) != (args.catalog is None):
        raise ValueError("--interactions and --catalog go together")
    interactions, catalog = (args.interactions, args.catalog) if args.interactions else movielens_files(args.workdir)
    data = load_log(
        interactions,
        catalog,
        cutoff=_cutoff(args.cutoff),
        cutoff_quantile=args.cutoff_quantile,
        skip_bad_rows=args.skip_bad_rows,
        event_weights=_event_weights(args),
    )
    report = data.report
    print(
        f"log {report.path}: {report.kept} interactions kept of {report.rows} rows; skipped {report.skipped}, "
        f"items not in the catalog {report.unknown_items}; test shoppers {len(data.split.users)}, "
        f"validation shoppers {len(data.valid.users)}",
        file=sys.stderr,
    )
    return data


def _serve(args: argparse.Namespace) -> int:
    from aisle_export.distill import check_served_spaces
    from aisle_server.redis_server import RedisServer

    check_served_spaces(args.repo)  # a student beside another space's tower or index: refused before starting

    with contextlib.ExitStack() as stack:
        state_url = args.state
        if state_url == "local":
            data_dir = args.state_dir or args.repo.resolve().parent / "aisle-state"
            redis = stack.enter_context(RedisServer(data_dir, port=args.state_port))
            state_url = redis.url
            print(f"shopper state: {redis.url}, data in {redis.data_dir} (AOF, appendfsync always)", flush=True)
        elif state_url == "off":
            state_url = ""  # track answers UNAVAILABLE, USER_ID reads nothing
        else:
            print(f"shopper state: {state_url}", flush=True)
        return _serve_triton(args, state_url)


def _serve_triton(args: argparse.Namespace, state_url: str) -> int:
    from aisle_server.tritonserver import TritonServer, serve_forever

    server = TritonServer(
        args.repo,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        model_config_name=args.model_config_name,
        log_verbose=args.log_verbose,
        model_control_mode=args.model_control,
        extra_args=(["--load-model=*"] if args.model_control == "explicit" else []) + list(args.triton_arg or []),
        state_url=state_url,
    )
    print(f"serving {args.repo} on grpc {server.grpc_url}, http {server.http_url}", flush=True)
    return serve_forever(server)


def _events(args: argparse.Namespace) -> int:
    """``aisle events export``: drain the state store's event log into an interaction log file."""
    import numpy as np

    from aisle_server.state import connect, drain_stream, trim_through

    from .interactions import DEFAULT_EVENT_WEIGHTS, Interactions, write_interactions

    out: Path = args.out
    if out.exists():
        raise ValueError(f"{out} exists: export writes a new file (the exported events leave the log)")
    import redis

    client = connect(args.state, timeout_s=30.0)
    try:
        entries, last = drain_stream(client)
    except redis.RedisError as exc:
        print(f"aisle events: error: state store {args.state}: {exc}", file=sys.stderr)
        return 1
    if last is None:
        print("no events in the log; nothing written", flush=True)
        return 0
    if args.raw:
        _write_raw_events(entries, out)
        removed = 0 if args.keep else trim_through(client, last)
        print(f"{len(entries)} events → {out} (raw; {removed} removed from the log)", flush=True)
        return 0
    from aisle_contract import LOG_ONLY_EVENT_TYPES

    entries = [entry for entry in entries if entry["event_type"] not in LOG_ONLY_EVENT_TYPES]  # not interactions
    if not entries:
        print("only exposures in the log; no interaction log written (export them with --raw)", flush=True)
        return 0
    types = [entry["event_type"] for entry in entries]
    interactions = Interactions(
        user_id=np.array([entry["user_id"] for entry in entries]),
        item_id=np.array([entry["item_id"] for entry in entries]),
        weight=np.array([DEFAULT_EVENT_WEIGHTS.get(t, 1.0) for t in types]),  # row weight 1 × the type's weight
        timestamp=np.array([float(entry["ts"]) for entry in entries]),
        event_type=np.array(types),
    )
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")  # same suffix: it picks the format
    write_interactions(interactions, partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    partial.replace(out)
    removed = 0 if args.keep else trim_through(client, last)
    kept = "kept in the log" if args.keep else f"{removed} removed from the log"
    print(f"{len(entries)} events → {out} ({kept}; events tracked meanwhile stay)", flush=True)
    return 0


def _write_raw_events(entries: list[dict[str, str]], out: Path) -> None:
    """The event log as it is, one JSON object a line: properties (exposures, prices) included."""
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ValueError(f"{out}: --raw writes JSON lines (.jsonl)")
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    with open(partial, "w", encoding="utf-8") as f:
        for entry in entries:
            row = {key: entry.get(key, "") for key in ("event_id", "user_id", "item_id", "event_type")}
            row["ts"] = float(entry["ts"])
            row["properties"] = json.loads(entry["properties"]) if entry.get("properties") else {}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    partial.replace(out)


def _experiment(args: argparse.Namespace) -> int:
    """``aisle experiment report``: per-arm metrics, intervals, SRM and MDE from the event log."""
    from .experiment_report import run

    paths = run(args.events, args.experiment, args.out, args.config, args.window_s, args.alpha, args.power, args.lift)
    for path in paths:
        print(path, flush=True)
    return 0


def _headers(pairs: list[str] | None) -> dict[str, str]:
    headers = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--header wants KEY=VALUE, got {pair!r}")
        headers[key] = value
    return headers


def _catalog(args: argparse.Namespace) -> int:
    import json

    from tritonclient.utils import InferenceServerException

    from aisle import AisleError

    from . import swap

    headers = _headers(args.header)
    try:
        out = _catalog_action(args, headers, swap)
    except (InferenceServerException, AisleError, ValueError, OSError) as exc:
        print(f"aisle catalog {args.action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def _catalog_update(args: argparse.Namespace, headers: dict[str, str]) -> dict:
    """``aisle catalog update --file F``: each JSON line one change (``item_id``, optional ``op``, fields)."""
    import json

    from aisle import InvalidRequest, RecClient

    if args.file is None:
        raise ValueError("update needs --file (JSON Lines: item_id, optional op, the fields to set)")
    items = []
    with open(args.file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{args.file} line {number}: not JSON: {exc}") from None
    if not items:
        raise ValueError(f"{args.file} holds no change")
    with RecClient(args.url, timeout_s=args.timeout_s, headers=headers or None) as client:
        try:
            changed = client.update_items(items)
        except InvalidRequest as exc:
            raise ValueError(f"{args.file}: {exc}") from None
    return {"changed": len(changed), "last_change_id": changed[-1].change_id}


def _catalog_action(args: argparse.Namespace, headers: dict[str, str], swap) -> dict:
    if args.action == "update":
        return _catalog_update(args, headers)
    if args.action == "compact":
        from .compaction import compact

        if args.repo is None or args.state is None:
            raise ValueError("compact needs --repo (the served repository) and --state (its state store)")
        out = compact(args.repo, args.state)
        if args.load and out["compacted"]:
            out["ready"] = swap.load(args.url, headers, args.timeout_s)
        return out
    if args.action == "status":
        out = {
            "on_disk": swap.version_dirs(args.repo) if args.repo else None,
            "served": swap.served_versions(args.url, headers),
        }
    elif args.action == "load":
        out = {"ready": swap.load(args.url, headers, args.timeout_s)}
    else:
        if args.repo is None:
            raise ValueError("rollback needs --repo (the served repository's path)")
        retired, ready = swap.rollback(args.repo, args.url, headers, args.to, args.timeout_s)
        out = {"retired": retired, "ready": ready}
    return out


def _demo(args: argparse.Namespace) -> int:
    from aisle_export.demo import run_demo

    run_demo(args.workdir)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from aisle_export.finetune import FinetuneConfig
    from aisle_export.log_training import finetune_log
    from aisle_export.user_encoder import UserEncoderConfig

    given = {name: getattr(args, name) for name in ("steps", "batch_size", "freeze_layers", "lr", "seed")}
    config = FinetuneConfig(**{name: value for name, value in given.items() if value is not None})
    encoder = UserEncoderConfig(
        **({"epochs": args.encoder_epochs} if args.encoder_epochs else {}),
        **({"seed": args.seed} if args.seed is not None else {}),
    )
    report = finetune_log(
        _log_data(args),
        args.out,
        config,
        encoder,
        base=args.base,
        keep_towers=args.keep_towers,
        tune_towers=not args.pretrained_towers,
    )
    towers, users = report["towers"], report["user_encoder"]
    tower_note = (
        f"loss {towers['loss_first_20']:.3f} → {towers['loss_last_20']:.3f}"
        if "loss_first_20" in towers
        else "pretrained, as they were"
    )
    choice = report["choice"]
    means = ", ".join(f"{name} {value:.4f}" for name, value in choice["means"].items())
    print(
        f"saved {args.out}: towers ({tower_note}), "
        f"user encoder (loss {users['loss_first_epoch']:.3f} → {users['loss_last_epoch']:.3f}, parity "
        f"{users['parity']['min_cosine']:.6f}), log signals, ranking.json; {report['total_seconds']:.0f}s\n"
        f"validation {choice['metric']}: {means}; `aisle export --finetuned` serves: {report['served']}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.legacy:
        from aisle_export.evaluate import run_movielens_eval

        run_movielens_eval(args.workdir, args.out, towers=args.towers)
        print(f"wrote {args.out}/eval_movielens.md, eval_movielens.json, diversity_tradeoff.png")
        return 0
    from aisle_export.log_eval import evaluate_log

    name = args.name or ("eval_log" if args.interactions else "eval_movielens_log")
    title = f"Feed on {args.interactions.name if args.interactions else 'MovieLens-100K'}"
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    if not ks or min(ks) < 1:
        raise ValueError(f"--k {args.k!r}: comma-separated cut-offs ≥ 1, e.g. 10,20")
    evaluate_log(_log_data(args), args.out, finetuned=args.finetuned, ks=ks, name=name, title=title)
    print(f"wrote {args.out}/{name}.md, {name}.json, {name}.png")
    return 0


def _log_arguments(p: argparse.ArgumentParser) -> None:
    """The interaction-log options ``finetune`` and ``evaluate`` share."""
    p.add_argument(
        "--interactions",
        type=Path,
        help="the store's log: CSV, JSONL or Parquet with user_id, item_id, timestamp "
        "[, event_type, weight] (default: MovieLens-100K's ratings)",
    )
    p.add_argument("--catalog", type=Path, help="the catalog the log's item ids refer to (with --interactions)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--cutoff", help="temporal cut, unix seconds or ISO-8601: nothing at or after it is trained on")
    cut.add_argument(
        "--cutoff-quantile",
        type=float,
        default=0.8,
        help="temporal cut at this quantile of the log's timestamps (default 0.8)",
    )
    p.add_argument(
        "--event-weights",
        metavar="TYPE=W,...",
        help="weights of event types (default purchase=1,add_to_cart=0.5,click=0.25,view=0.1; others 1)",
    )
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count unreadable rows instead of failing")
    p.add_argument("--workdir", type=Path, default=Path("build"), help="MovieLens cache under <workdir>/data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisle", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export the query and item towers to ONNX and assemble the model repository")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--query-tower", help="sentence-transformers/HF directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--item-tower", help="sentence-transformers/HF directory (default: all-MiniLM-L6-v2)")
    p.add_argument(
        "--precision",
        action="append",
        choices=("int8", "fp16", "int8-qdq"),
        help="also write and gate a reduced-precision ONNX (repeatable): int8 = CPU dynamic INT8 "
        "(serve with --model-config-name int8), fp16 / int8-qdq = inputs for TensorRT; "
        "with --engine tensorrt: the engine precision, fp16 or int8",
    )
    p.add_argument(
        "--gate-catalog",
        type=Path,
        help="catalog for the top-10 retrieval gate (default: MovieLens-100K, cached beside --repo)",
    )
    p.add_argument(
        "--engine",
        choices=("tensorrt",),
        help="build model.plan engines from the --precision ONNX (needs the tensorrt package)",
    )
    p.add_argument(
        "--finetuned",
        type=Path,
        metavar="DIR",
        help="serve what `aisle finetune --out DIR` trained: the stack it chose on validation, "
        "with its towers, user encoder, log signals and knobs",
    )
    p.add_argument(
        "--stack",
        choices=("pretrained", "mean", "user_encoder"),
        help="with --finetuned: serve this stack instead of the one chosen on validation",
    )
    p.add_argument(
        "--allow-below-gate",
        action="store_true",
        help="serve a distilled --query-tower whose gate failed (its teacher must still be the item tower)",
    )
    p.set_defaults(func=_export)

    p = sub.add_parser("distill", help="distill a smaller, faster query tower into the item tower's space")
    p.add_argument("--student", choices=("layers", "static"), required=True)
    p.add_argument(
        "--teacher",
        help="the served tower, or an `aisle finetune --out` dir (its query tower taught, its item tower paired; "
        "default: all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        help="training text: catalogs (.csv/.jsonl/.parquet) or plain text, one a line (default: the BigBasket proxy)",
    )
    p.add_argument("--out", type=Path, required=True, help="the student directory (`aisle export --query-tower` it)")
    p.add_argument("--workdir", type=Path, default=Path("build/distill"), help="teacher ONNX and vector caches")
    p.add_argument("--products", type=Path, help="BigBasket products.csv for the search gate (default ../shared/data)")
    p.add_argument("--queries", type=int, default=20000, help="query-like texts derived from the corpus")
    p.add_argument("--steps", type=_positive_int, help="optimizer steps (default: layers 300, static 2000)")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--kl-weight", type=float, help="weight of the listwise KL term (default 1; 0 = cosine alone)")
    p.add_argument("--seed", type=int)
    p.add_argument("--layers", type=_positive_int, help="layers student: the teacher's layers kept (default 2)")
    p.add_argument("--judge", action="store_true", help="no training: judge the student already in --out again")
    p.set_defaults(func=_distill)

    p = sub.add_parser("index", help="embed a catalog (CSV, JSONL, Parquet) into the repository's index")
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows instead of failing")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--version",
        default="1",
        help="rerank model version directory to write; next = a new one above the newest (hot swap)",
    )
    p.add_argument(
        "--ann",
        choices=("auto", "on", "off"),
        default="auto",
        help="faiss IVF retrieval: auto = only above 100,000 items (exact search below)",
    )
    p.add_argument(
        "--ann-kind",
        choices=("ivf_flat", "ivf_pq"),
        default="ivf_flat",
        help="ivf_pq: product-quantized lists for 10M+ items (about 56 bytes per item in RAM)",
    )
    p.add_argument(
        "--ann-nprobe",
        type=_positive_int,
        metavar="N",
        help="IVF lists scanned per query (default: lists / 32); more = higher recall, slower",
    )
    p.add_argument(
        "--ann-refine",
        type=_positive_int,
        metavar="R",
        help="ivf_pq: re-score R x candidates exactly (default 16; see docs/deploy.md)",
    )
    p.add_argument(
        "--server", metavar="URL", help="embed through a running deployment's embed_item (gRPC host:port), resumably"
    )
    p.add_argument("--concurrency", type=int, default=8, help="with --server: requests in flight")
    p.add_argument("--chunk-size", type=int, default=4096, help="with --server: items per checkpointed chunk")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="with --server: checkpoint directory (default rerank/<version>/.index.embed-checkpoint)",
    )
    p.add_argument(
        "--interactions",
        type=Path,
        help="the store's interaction log: popularity and co-occurrence for feeds (rerank/learned/log_signals)",
    )
    p.add_argument("--event-weights", metavar="TYPE=W,...", help="weights of event types in --interactions")
    p.set_defaults(func=_index)

    p = sub.add_parser("serve", help="run tritonserver over the repository until interrupted")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPO)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-config-name", help="use <model>/configs/NAME.pbtxt where present (onnxruntime, tensorrt)")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument(
        "--model-control",
        choices=("none", "explicit"),
        default="none",
        help="explicit: load everything at start and allow `aisle catalog load/rollback` (hot swap)",
    )
    p.add_argument(
        "--triton-arg",
        action="append",
        metavar="ARG",
        help="extra tritonserver flag, repeatable (TLS, --grpc-restricted-protocol=...)",
    )

    p.add_argument(
        "--state",
        default="local",
        metavar="local|off|redis://HOST:PORT",
        help="shopper state (track, recommend(user_id=...)): local (default) starts a redis-server of its own, "
        "stopped with the server; or a running Redis; off: none",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="with --state local: Redis's data directory (default: aisle-state/ beside --repo)",
    )
    p.add_argument("--state-port", type=int, default=0, help="with --state local: its port (default: a free one)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("events", help="the shopper event log: export (drain) it into an interaction log file")
    p.add_argument("action", choices=("export",))
    p.add_argument(
        "--state", required=True, metavar="redis://HOST:PORT", help="the state store (`aisle serve` prints it)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="new .parquet, .csv or .jsonl file (`aisle finetune --interactions` reads it)",
    )
    p.add_argument("--keep", action="store_true", help="leave the exported events in the log (default: remove them)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="write every event as it is, properties included, as JSON lines (`aisle experiment report` reads it)",
    )
    p.set_defaults(func=_events)

    p = sub.add_parser("experiment", help="A/B experiments: per-arm report from the event log")
    p.add_argument("action", choices=("report",))
    p.add_argument("--events", type=Path, nargs="+", required=True, help="event files (.jsonl, .csv, .parquet)")
    p.add_argument("--experiment", required=True, help="the experiment's name (exposures' properties.experiment)")
    p.add_argument("--config", type=Path, help="the experiment's JSON (arms, shares, control): SRM against its shares")
    p.add_argument("--out", type=Path, required=True, help="directory for report.md, report.json, report.png")
    p.add_argument("--window-s", type=float, default=86400.0, help="outcome-to-exposure join window without request_id")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--lift", type=float, default=0.05, help="relative lift whose needed sample size is reported")
    p.set_defaults(func=_experiment)

    p = sub.add_parser(
        "catalog",
        help="change the served catalog live, compact the changes, hot swap or roll back versions",
    )
    p.add_argument(
        "action",
        choices=("update", "compact", "status", "load", "rollback"),
        help="update: apply the changes in --file live (no re-index); compact: fold the live changes into "
        "a new rerank/<v>/ (--load: and serve it); status: versions on disk and served; load: serve the "
        "newest rerank/<v>/ (server in explicit model control); rollback: retire the newest version and reload",
    )
    p.add_argument("--file", type=Path, help="update: JSON Lines, one change per line (item_id, op, fields)")
    p.add_argument("--state", metavar="redis://HOST:PORT", help="compact: the state store holding the change log")
    p.add_argument("--load", action="store_true", help="compact: load the new version on --url once written")
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port")
    p.add_argument("--repo", type=Path, help="the served repository (rollback renames its newest rerank/<v>/)")
    p.add_argument("--to", type=int, help="rollback: the version to serve (retires every version above it)")
    p.add_argument("--header", action="append", metavar="KEY=VALUE", help="gRPC header (restricted model control)")
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.set_defaults(func=_catalog)

    p = sub.add_parser("demo", help="export, index MovieLens-100K, serve, print recommendations, stop")
    p.add_argument("--workdir", type=Path, default=Path("build"))
    p.set_defaults(func=_demo)

    p = sub.add_parser("finetune", help="learn from an interaction log: towers, user encoder, log signals, knobs")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("build/finetuned"),
        help="writes <out>/query_tower, item_tower, user_encoder, log_signals, ranking.json",
    )
    _log_arguments(p)
    p.add_argument("--base", help="starting tower directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--steps", type=int, help="tower optimizer steps (default 60)")
    p.add_argument(
        "--batch-size", type=int, help="examples per step, each scored against the whole catalog (default 1024)"
    )
    p.add_argument("--freeze-layers", type=int, help="lower transformer layers kept fixed, of 6 (default 5)")
    p.add_argument("--lr", type=float, help="tower AdamW learning rate (default 5e-4)")
    p.add_argument("--encoder-epochs", type=_positive_int, help="user encoder epochs")
    p.add_argument(
        "--pretrained-towers",
        action="store_true",
        help="keep the towers as they are (pretrained, or --base); learn the user encoder, signals and knobs",
    )
    p.add_argument(
        "--keep-towers",
        action="store_true",
        help="reuse the towers an earlier run left in --out; learn the user encoder, signals and knobs again",
    )
    p.add_argument("--seed", type=int, help="shuffling and sampling seed (default 0)")
    p.set_defaults(func=_finetune)

    p = sub.add_parser("evaluate", help="offline evaluation on a temporal cut of an interaction log: table, JSON, PNG")
    _log_arguments(p)
    p.add_argument("--finetuned", type=Path, metavar="DIR", help="also judge what `aisle finetune --out DIR` trained")
    p.add_argument("--k", default="10,20", help="cut-offs, comma-separated (default 10,20)")
    p.add_argument("--out", type=Path, default=Path("perf/results"))
    p.add_argument("--name", help="report file name (default eval_log, or eval_movielens_log)")
    p.add_argument(
        "--legacy",
        action="store_true",
        help="the MovieLens content-ranking study instead (recency, freshness, MMR/DPP; --towers)",
    )
    p.add_argument("--towers", type=Path, help="--legacy: fine-tuned towers directory")
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except ImportError as exc:
        print(
            f"aisle {args.command}: missing dependency ({exc}); install with pip install 'aisle[export,server]'",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ not in ("TensorRTUnavailable", "RedisServerError"):  # said plainly, not as a traceback
            raise
        print(f"aisle {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"aisle {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
