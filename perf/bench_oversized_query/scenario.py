"""What ``python -m perf.bench_oversized_query`` runs (see :mod:`perf.bench_oversized_query`): the
queries, the schedule, one server timed slot by slot; returns the report dict that
:mod:`perf.bench_oversized_query.report` renders."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from perf.lib import repository, triton_stats
from perf.lib.procstats import MB, RssSampler, group_memory, group_rss_mb
from perf.lib.run_info import machine, stamp
from perf.lib.timing import percentile

K = 10
#: Oversized queries: name → bytes of text.
OVERSIZED_BYTES = {"1MB": 1 * MB, "5MB": 5 * MB}
OVERSIZED = tuple(OVERSIZED_BYTES)
#: The references every oversized size is divided by: a normal query (a title typed as a search),
#: and ``prefix``, the same oversized texts cut to ``MAX_QUERY_CHARS`` — the bounded work the
#: server does anyway, so oversized/prefix is what the megabytes past the cut still cost.
REFERENCES = ("normal", "prefix")
SIZES = (*REFERENCES, *OVERSIZED)
#: Models whose server-side compute is reported: the two stages that read the query text.
TEXT_MODELS = ("tokenizer", "rerank")
STAT_MODELS = (*TEXT_MODELS, "query_encoder", "recommend")
#: The counters of each model kept with every run (``runs[i]["stats"]``).
COUNTERS = ("inferences", "executions", "requests", "compute_input_ns", "compute_infer_ns")
CONCURRENCIES = (1, 16)
#: Distinct oversized texts per size, built once (5 MB each); calls cycle through them.
POOL = 4
#: The figures issue #15 reported before the fix (not measured here): for the report's context.
BEFORE_FIX = {"5MB_tokenizer_s": 6.0, "16x1MB_latency_s": 0.5, "rss_gb": [1.0, 2.4]}


@dataclass(frozen=True)
class Slot:
    """One timed run: round ``round``, ``concurrency`` closed-loop callers, queries of size ``size``."""

    round: int
    concurrency: int
    size: str


def schedule(rounds: int, concurrencies: Sequence[int] = CONCURRENCIES, sizes: Sequence[str] = SIZES) -> list[Slot]:
    """Round by round, load shape by load shape, the sizes back to back — reversed every other
    round, so a drift in the shared machine's load does not always land on the same size."""
    if rounds < 1:
        raise ValueError("need at least one round")
    return [
        Slot(r, c, size)
        for r in range(rounds)
        for c in concurrencies
        for size in (sizes if r % 2 == 0 else tuple(reversed(sizes)))
    ]


# --------------------------------------------------------------------------- queries


def search_text(title: str) -> str:
    """A catalog title as a shopper types it: lower case, no ``(1995)`` year."""
    text = title.strip()
    if text.endswith(")") and "(" in text:
        head, _, year = text.rpartition("(")
        if year[:-1].strip().isdigit():
            text = head
    return text.strip().lower()


def oversized_text(titles: Sequence[str], nbytes: int, seed: int) -> str:
    """Real words: ``titles`` in a seeded order, repeated and joined by spaces, cut to ``nbytes``
    bytes of UTF-8 (never inside a character)."""
    if not titles:
        raise ValueError("no titles to build a query from")
    order = list(titles)
    random.Random(seed).shuffle(order)
    pieces, size, i = [], 0, 0
    while size < nbytes:
        pieces.append(order[i % len(order)])
        size += len(pieces[-1].encode()) + 1
        i += 1
    return " ".join(pieces).encode()[:nbytes].decode(errors="ignore")


# --------------------------------------------------------------------------- summary


def _ratio(a: float, b: float) -> float:
    """``a / b``, nan for ``b == 0``: shown in the report rather than a crash at the end of a run."""
    return a / b if b else float("nan")


def summarize(runs: Sequence[dict]) -> dict[str, dict]:
    """Per load shape: medians over rounds of each size's figures, and each oversized size's ratios
    to each reference (``normal``, ``prefix``) taken inside each round (median and range over rounds).

    ``runs``: ``{"round", "concurrency", "size", "p50_ms", "server": {model: triton_stats.per_request_ms}, ...}``.
    """
    out: dict[str, dict] = {}
    for concurrency in sorted({run["concurrency"] for run in runs}):
        by_round: dict[int, dict[str, dict]] = {}
        for run in runs:
            if run["concurrency"] == concurrency:
                by_round.setdefault(run["round"], {})[run["size"]] = run
        sizes = [s for s in SIZES if any(s in r for r in by_round.values())]
        figures = {}
        for size in sizes:
            rs = [r[size] for r in by_round.values() if size in r]
            figures[size] = {
                "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                "p95_ms": statistics.median(r["p95_ms"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "calls": sum(r["calls"] for r in rs),
                "text_compute_ms": statistics.median(text_compute_ms(r) for r in rs),
                **{
                    f"{model}_compute_ms": statistics.median(r["server"][model]["compute_infer_ms"] for r in rs)
                    for model in TEXT_MODELS
                },
                "text_compute_input_ms": statistics.median(
                    sum(r["server"][model]["compute_input_ms"] for model in TEXT_MODELS) for r in rs
                ),
                "rss_peak_growth_mb": max(r["rss_peak_mb"] - r["rss_before_mb"] for r in rs),
            }
        ratios: dict[str, dict] = {}
        spread: dict[str, dict] = {}
        for size in sizes:
            if size in REFERENCES:
                continue
            for reference in REFERENCES:
                pairs = [(r[size], r[reference]) for r in by_round.values() if size in r and reference in r]
                if not pairs:
                    continue
                values = {
                    "p50": [_ratio(a["p50_ms"], b["p50_ms"]) for a, b in pairs],
                    "text_compute": [_ratio(text_compute_ms(a), text_compute_ms(b)) for a, b in pairs],
                    **{
                        model: [
                            _ratio(a["server"][model]["compute_infer_ms"], b["server"][model]["compute_infer_ms"])
                            for a, b in pairs
                        ]
                        for model in TEXT_MODELS
                    },
                }
                ratios.setdefault(size, {})[f"vs_{reference}"] = {n: statistics.median(v) for n, v in values.items()}
                spread.setdefault(size, {})[f"vs_{reference}"] = {n: [min(v), max(v)] for n, v in values.items()}
        out[f"c{concurrency}"] = {
            "concurrency": concurrency,
            "rounds": len(by_round),
            "sizes": figures,
            "ratio": ratios,
            "ratio_range": spread,
        }
    return out


def text_compute_ms(run: Mapping) -> float:
    """Server compute per request of the stages that read the text: tokenizer + rerank."""
    return sum(run["server"][model]["compute_infer_ms"] for model in TEXT_MODELS)


def rss_summary(samples: Sequence[tuple[float, float]], baseline_mb: float, bounded_mb: float) -> dict[str, float]:
    """``samples``: (seconds, MB) of tritonserver + stubs over the timed run. Growth at the end and
    at the peak against ``baseline_mb`` (after warm-up with normal queries) and against
    ``bounded_mb`` (after warm-up with the bounded prefixes too: ONNX Runtime's arenas already grown
    to batches of 256-token sequences, which any long queries cause)."""
    end = samples[-1][1] if samples else bounded_mb
    peak = max((mb for _, mb in samples), default=bounded_mb)
    return {
        "baseline_mb": baseline_mb,
        "bounded_mb": bounded_mb,
        "end_mb": end,
        "peak_mb": peak,
        "end_growth_mb": end - baseline_mb,
        "peak_growth_mb": peak - baseline_mb,
        "end_growth_over_bounded_mb": end - bounded_mb,
        "peak_growth_over_bounded_mb": peak - bounded_mb,
    }


# --------------------------------------------------------------------------- repository


def resolve_repo(repo: Path | None) -> tuple[Path, str]:
    """(repository, where it came from). An explicit ``--repo`` must be sound (:func:`perf.lib.repository.problems`);
    without one, ``make demo``'s when it is, else the benchmarks' own (:func:`perf.lib.repository.cached`)."""
    if repo is not None:
        problems = repository.problems(repo)
        if problems:
            raise SystemExit(f"error: {repo}: " + "; ".join(problems))
        return repo, "--repo"
    problems = repository.problems(repository.DEMO)
    if not problems:
        return repository.DEMO, "`make demo`'s"
    print(f"[bench] {repository.DEMO} unusable ({'; '.join(problems)}): using {repository.CACHE}", flush=True)
    return repository.cached(), "the benchmarks' own (build/perf): pretrained towers, MovieLens-100K"


# --------------------------------------------------------------------------- measuring


def memory_growth(
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
    text_path: Sequence[str] = ("tritonserver", *TEXT_MODELS),
) -> dict[str, float]:
    """PSS growth (MB) per process name, plus ``text_path`` (the processes a query's bytes reach:
    tritonserver, the tokenizer and rerank stubs; the encoders only ever get bounded token ids) and
    ``total``."""
    growth = {name: after[name]["pss"] - before.get(name, {}).get("pss", 0.0) for name in after}
    growth["text_path"] = sum(growth.get(name, 0.0) for name in text_path)
    growth["total"] = sum(v for name, v in growth.items() if name != "text_path")
    return growth


def inputs_for(text: str | Sequence[str]) -> list:
    """Raw ``recommend`` inputs for ``text`` (one row), or one row per text of a list. Built once: a
    5 MB tensor is serialized into each request, not into a new InferInput per call."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    rows = [text] if isinstance(text, str) else list(text)
    tensors = []
    for name, array, datatype in (
        ("QUERY", np.array([[t.encode()] for t in rows], dtype=object), "BYTES"),
        ("K", np.full((len(rows), 1), K, dtype=np.int32), "INT32"),
    ):
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def bounded_warm_up(url: str, prefixes: Sequence[str], callers: int = 16, rounds: int = 3) -> None:
    """Run the bounded prefixes as the 16-caller slots will, before memory is read: ONNX Runtime's
    arenas grow to the largest batch of 256-token sequences each encoder instance has run, which
    any long queries cause; so that growth is not charged to the oversized ones."""
    pool = [inputs_for(p) for p in prefixes]
    for _ in range(rounds):
        drive(url, pool, callers, 1, lambda: None)


def drive(
    url: str, pool: Sequence[list], concurrency: int, calls_per_caller: int, on_call: Callable[[], None]
) -> tuple[list[float], int]:
    """``concurrency`` closed-loop callers, each with its own connection, ``calls_per_caller`` calls
    each, cycling through ``pool`` (prebuilt inputs); (latencies in s, errors)."""
    import tritonclient.grpc as grpcclient

    lock, latencies, errors = threading.Lock(), [], [0]
    clients = [grpcclient.InferenceServerClient(url) for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency)

    def caller(n: int) -> None:
        barrier.wait()
        for i in range(calls_per_caller):
            inputs = pool[(n * calls_per_caller + i) % len(pool)]
            t0 = time.perf_counter()
            try:
                clients[n].infer("recommend", inputs, client_timeout=600)
                ok = True
            except Exception:  # noqa: BLE001 - counted, the run goes on
                ok = False
            elapsed = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
            on_call()

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(concurrency)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in clients:
            client.close()
    return latencies, errors[0]


def measure(
    url: str,
    stats_client: object,
    slot: Slot,
    pool: Sequence[list],
    calls_per_caller: int,
    sampler: RssSampler,
    on_call: Callable[[], None],
) -> dict:
    """One slot: latencies, the text models' compute per request, RSS before and peak during."""
    rss_before, t_start = group_rss_mb(sampler.pid), sampler.now()
    before = triton_stats.snapshot(stats_client, STAT_MODELS, COUNTERS)
    latencies, errors = drive(url, pool, slot.concurrency, calls_per_caller, on_call)
    delta = triton_stats.diff(triton_stats.snapshot(stats_client, STAT_MODELS, COUNTERS), before)
    t_end = sampler.now()
    ms = [x * 1000 for x in latencies]
    return {
        "round": slot.round,
        "concurrency": slot.concurrency,
        "size": slot.size,
        "calls": len(ms) + errors,
        "errors": errors,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "server": {model: triton_stats.per_request_ms(delta[model]) for model in STAT_MODELS},
        "stats": delta,
        "rss_before_mb": rss_before,
        "rss_peak_mb": max(sampler.peak_since(t_start), group_rss_mb(sampler.pid)),
        "t_start": t_start,
        "t_end": t_end,
    }


def answers_match_prefix(client: object, texts: Sequence[str], max_chars: int) -> dict[str, int]:
    """How many oversized queries answer exactly like their first ``max_chars`` characters: the
    benchmark's check that the server it times really reads only the bounded prefix."""
    import numpy as np

    equal = 0
    for text in texts:
        full, cut = (client.infer("recommend", inputs_for(t), client_timeout=600) for t in (text, text[:max_chars]))
        equal += bool(
            list(full.as_numpy("ITEM_IDS")[0]) == list(cut.as_numpy("ITEM_IDS")[0])
            and np.allclose(full.as_numpy("SCORES"), cut.as_numpy("SCORES"), rtol=1e-5, atol=1e-6)
        )
    return {"checked": len(texts), "equal": equal}


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, command: str) -> dict:
    """Resolve the repository, start a server, time the schedule; the report dict (``command``: as typed)."""
    import tritonclient.grpc as grpcclient
    from tqdm import tqdm

    from aisle_contract import CHARS_PER_TOKEN, MAX_QUERY_CHARS
    from aisle_server.index import CatalogIndex
    from aisle_server.tokenization import TokenizerSettings
    from aisle_server.tritonserver import TritonServer

    load_before = os.getloadavg()
    repo, origin = resolve_repo(args.repo)
    titles = [str(t) for t in CatalogIndex.load(repo / "rerank" / "1" / "index").titles]
    tokenizer_chars = TokenizerSettings.load(repo / "tokenizer" / "1").max_length * CHARS_PER_TOKEN
    normal = [search_text(t) for t in titles]
    random.Random(0).shuffle(normal)
    print(f"[bench] building {POOL} texts each of {', '.join(OVERSIZED)} from {len(titles):,} titles", flush=True)
    texts = {size: [oversized_text(titles, OVERSIZED_BYTES[size], seed=i) for i in range(POOL)] for size in OVERSIZED}
    prefixes = [t[:MAX_QUERY_CHARS] for t in texts[OVERSIZED[-1]]]
    pools = {
        "normal": [inputs_for(t) for t in normal[:256]],
        "prefix": [inputs_for(t) for t in prefixes],
        **{size: [inputs_for(t) for t in texts[size]] for size in OVERSIZED},
    }
    slots = schedule(args.rounds)
    per_caller = {1: args.requests, 16: args.per_caller}
    total = sum(c * per_caller[c] for c in (s.concurrency for s in slots))
    with TritonServer(repo, log_file=args.out / "bench_oversized_query_tritonserver.log") as server:
        stats_client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for inputs in pools["normal"][:8]:  # warm-up: models, connections, the encoder's first batch
                stats_client.infer("recommend", inputs, client_timeout=600)
            check = answers_match_prefix(stats_client, [texts[s][0] for s in OVERSIZED], MAX_QUERY_CHARS)
            print(
                f"[bench] oversized answers equal their {MAX_QUERY_CHARS}-character prefix's: "
                f"{check['equal']}/{check['checked']}",
                flush=True,
            )
            baseline, memory = group_rss_mb(server.pid), {"normal_warm_up": group_memory(server.pid)}
            bounded_warm_up(server.grpc_url, prefixes)
            bounded, memory["bounded_warm_up"] = group_rss_mb(server.pid), group_memory(server.pid)
            print(
                f"[bench] RSS of tritonserver + stubs: {baseline:,.0f} MB after normal queries, "
                f"{bounded:,.0f} MB after the bounded warm-up",
                flush=True,
            )
            runs = []
            with (
                RssSampler(server.pid, args.rss_interval) as sampler,
                tqdm(total=total, unit="call", desc="oversized-query bench") as bar,
            ):
                for slot in slots:
                    bar.set_postfix_str(f"round {slot.round} c={slot.concurrency} {slot.size}")
                    one = measure(
                        server.grpc_url,
                        stats_client,
                        slot,
                        pools[slot.size],
                        per_caller[slot.concurrency],
                        sampler,
                        lambda: bar.update(1),
                    )
                    runs.append(one)
                    bar.write(
                        f"[{stamp()}] round {slot.round} "
                        f"c={slot.concurrency:<2d} {slot.size:6s} p50 {one['p50_ms']:8.1f} ms  tokenizer "
                        f"{one['server']['tokenizer']['compute_infer_ms']:6.2f} ms  rerank "
                        f"{one['server']['rerank']['compute_infer_ms']:6.2f} ms  errors {one['errors']}  "
                        f"RSS {one['rss_before_mb']:,.0f} -> peak {one['rss_peak_mb']:,.0f} MB"
                    )
                samples = list(sampler.samples)
            memory["end"] = group_memory(server.pid)
        finally:
            stats_client.close()
    return {
        "command": command,
        "machine": machine(load_before),
        "repo": str(repo),
        "repo_origin": origin,
        "catalog_items": len(titles),
        "max_query_chars": MAX_QUERY_CHARS,
        "tokenizer_chars": tokenizer_chars,
        "rounds": args.rounds,
        "requests": args.requests,
        "per_caller": args.per_caller,
        "sizes_bytes": {size: len(texts[size][0].encode()) for size in OVERSIZED},
        "check": check,
        "phases": summarize(runs),
        "rss": rss_summary(samples, baseline, bounded),
        "rss_interval_s": args.rss_interval,
        "memory": memory,
        "pss_growth": {
            "over_bounded": memory_growth(memory["bounded_warm_up"], memory["end"]),
            "over_normal": memory_growth(memory["normal_warm_up"], memory["end"]),
        },
        "rss_samples": [[round(t, 2), round(mb, 1)] for t, mb in samples],
        "before_fix": BEFORE_FIX,
        "runs": runs,
    }
