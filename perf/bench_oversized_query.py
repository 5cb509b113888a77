"""Oversized-query benchmark (not a test): what a multi-megabyte QUERY costs the server, as ratios to a normal one.

    .venv/bin/python perf/bench_oversized_query.py [--repo build/model_repository] [--rounds 3]
        [--requests 12] [--per-caller 2]

Issue #15, item 7: a 5 MB query used to be tokenized whole before being truncated to 256 tokens
(~6 s of tokenizer time for one request; 16 callers sending 1 MB got 0.5 s each, and the server
grew from 1.0 to 2.4 GB). Now the tokenizer cuts each text to ``max_length * CHARS_PER_TOKEN``
characters and ``rerank`` cuts the QUERY to ``MAX_QUERY_CHARS`` before BM25. This starts its own
tritonserver over ``--repo`` and, on that one server in one run, sends through raw
``tritonclient.grpc`` to ``recommend`` (the SDK cuts queries client-side; a foreign client need not):
normal queries (MovieLens titles typed as searches, each call a different one); 1 MB and 5 MB
queries (the catalog's titles repeated: real words); and ``prefix``, those texts cut to
``MAX_QUERY_CHARS`` (the bounded work any long query costs). Per size and load shape (1 caller;
16 closed-loop callers) it measures client p50 and Triton's server-side compute (``compute_infer``
of ``tokenizer`` and ``rerank`` from the inference statistics, per request), and samples the RSS of
tritonserver + its Python-backend stubs throughout. Ratios: oversized ÷ normal and oversized ÷
prefix, each taken inside one round (sizes back to back, order reversed every other round);
figures are medians of rounds.

``--repo`` defaults to ``build/model_repository`` (``make demo``); when that is missing or older than
the checked-in template (model.py adapters, tokenizer config) a fresh one — pretrained towers, the
MovieLens-100K catalog — is exported into a temporary directory first (~2 minutes here).
Writes ``<out>/bench_oversized_query.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import percentile
from run_info import command_line, machine, write_report

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
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
CONCURRENCIES = (1, 16)
#: Distinct oversized texts per size, built once (5 MB each); calls cycle through them.
POOL = 4
TIMES = "\u00d7"  # the multiplication sign of a ratio in the report ("3.00x")
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


def stats_delta(
    after: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Counter differences per model (Triton's statistics are cumulative since the server started)."""
    return {model: {key: after[model][key] - before[model].get(key, 0) for key in after[model]} for model in after}


def per_request_ms(stats: Mapping[str, int]) -> dict[str, float]:
    """One model's statistics over a slot as milliseconds per request.

    ``compute_infer_ms``: Triton's ``compute_infer`` per request (a batched request is charged its
    whole execution). ``busy_ms``: that * executions / rows — the model's busy time per row served,
    which is what a dynamic batch saves. Equal when nothing was batched.
    """
    requests, rows, executions = stats.get("requests", 0), stats.get("inferences", 0), stats.get("executions", 0)
    compute = stats.get("compute_infer_ns", 0) / requests if requests else float("nan")
    return {
        "compute_infer_ms": compute / 1e6,
        "compute_input_ms": (stats.get("compute_input_ns", 0) / requests / 1e6) if requests else float("nan"),
        "busy_ms": compute * executions / rows / 1e6 if rows else float("nan"),
        "rows_per_execution": rows / executions if executions else float("nan"),
    }


def summarize(runs: Sequence[dict]) -> dict[str, dict]:
    """Per load shape: medians over rounds of each size's figures, and each oversized size's ratios
    to each reference (``normal``, ``prefix``) taken inside each round (median and range over rounds).

    ``runs``: ``{"round", "concurrency", "size", "p50_ms", "server": {model: per_request_ms}, ...}``.
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


# --------------------------------------------------------------------------- report


def _range(values: Sequence[float]) -> str:
    return f"{values[0]:.2f} … {values[1]:.2f}"


def _ratio_cell(phase: dict, size: str, reference: str, key: str) -> str:
    if size in REFERENCES:
        return "1 (reference)" if size == reference else "-"
    ratio = phase["ratio"].get(size, {}).get(f"vs_{reference}")
    if ratio is None:
        return "-"
    return f"{ratio[key]:.2f}{TIMES} ({_range(phase['ratio_range'][size][f'vs_{reference}'][key])})"


def _memory_rows(report: dict) -> list[str]:
    """One row per process of the group (PSS at the three checkpoints), then the text path and the total."""
    memory = report.get("memory")
    if not memory:
        return []
    points = ("normal_warm_up", "bounded_warm_up", "end")
    rows = []

    def pss(point: str, names: Sequence[str], key: str = "pss") -> float:
        return sum(memory[point].get(name, {}).get(key, 0.0) for name in names)

    names = sorted(memory["end"], key=lambda n: (n != "tritonserver", n))
    groups = [(name, [name]) for name in names]
    groups += [
        ("**text path** (tritonserver + tokenizer + rerank)", ["tritonserver", *TEXT_MODELS]),
        ("**total**", names),
    ]
    for label, members in groups:
        shm = pss("end", members, "shmem") - pss("bounded_warm_up", members, "shmem")
        rows.append(
            f"| {label} | "
            + " | ".join(f"{pss(p, members):,.0f}" for p in points)
            + f" | {pss('end', members) - pss('bounded_warm_up', members):+,.0f} | {shm:+,.0f} |"
        )
    return rows


def render_markdown(report: dict) -> str:
    """Headline ratios, the figures behind them, how and where they were measured, every run."""
    machine, rss = report["machine"], report["rss"]
    chars = report["max_query_chars"]
    lines = [
        f"# Oversized queries: bounded work per request ({machine['cpus']} cores, {machine['platform']})",
        "",
        (
            "Ratios are taken inside each round (sizes back to back on one server), then the median over rounds; "
            "the range in brackets is over rounds. **Server compute** is Triton's `compute_infer` per request of the "
            "two models that read the text, `tokenizer` + `rerank`. *normal*: a title typed as a search; *prefix*: "
            f"the oversized texts cut to `MAX_QUERY_CHARS` ({chars:,} characters) — the work the server does for "
            "any long query, so oversized ÷ prefix is what the bytes past the cut still cost."
        ),
        "",
        (
            "| load | query | p50 ms | tokenizer ms | rerank ms | p50 ÷ normal | compute ÷ normal | p50 ÷ prefix "
            "| compute ÷ prefix |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase in report["phases"].values():
        load = "1 caller" if phase["concurrency"] == 1 else f"{phase['concurrency']} callers"
        for size, f in phase["sizes"].items():
            cells = [_ratio_cell(phase, size, ref, key) for ref in REFERENCES for key in ("p50", "text_compute")]
            lines.append(
                f"| {load} | {size} | {f['p50_ms']:.1f} | {f['tokenizer_compute_ms']:.2f} | "
                f"{f['rerank_compute_ms']:.2f} | " + " | ".join(cells[i] for i in (0, 1, 2, 3)) + " |"
            )
    c16 = report["phases"].get("c16", {}).get("sizes", {})
    lines += [
        "",
        (
            f"**Server RSS** (tritonserver + its Python-backend stubs: VmRSS summed over its process group, sampled "
            f"every {report['rss_interval_s']:g} s): {rss['baseline_mb']:,.0f} MB after warm-up with normal queries, "
            f"{rss['bounded_mb']:,.0f} MB after warm-up with the bounded prefixes (ONNX Runtime's arenas grown to "
            f"batches of 256-token sequences: any long queries do that), {rss['end_mb']:,.0f} MB at the end of the "
            "run: "
            f"**{rss['end_growth_over_bounded_mb']:+,.0f} MB** over the bounded warm-up "
            f"({rss['end_growth_mb']:+,.0f} MB over the normal one); peak {rss['peak_mb']:,.0f} MB "
            f"({rss['peak_growth_over_bounded_mb']:+,.0f} MB). Largest rise within a 16-caller slot: "
            + ", ".join(f"{size} {c16[size]['rss_peak_growth_mb']:+,.0f} MB" for size in c16)
            + "."
        ),
        "",
        (
            "**Where the memory is** (PSS: shared memory counted once; MB; the bytes of a query reach "
            "tritonserver, `tokenizer` and `rerank`, the encoders only bounded token ids):"
        ),
        "",
        (
            "| process | after normal warm-up | after bounded warm-up | end | growth over bounded warm-up "
            "| of it shared memory |"
        ),
        "| --- | --- | --- | --- | --- | --- |",
        *_memory_rows(report),
        "",
        (
            f"Before the fix (issue #15, not measured here): {BEFORE_FIX['5MB_tokenizer_s']:g} s of tokenizer time "
            "for "
            f"one 5 MB query; {BEFORE_FIX['16x1MB_latency_s']:g} s per call for 16 callers sending 1 MB; RSS "
            f"{BEFORE_FIX['rss_gb'][0]:g} → {BEFORE_FIX['rss_gb'][1]:g} GB."
        ),
        "",
        f"- command: `{report['command']}`",
        (
            f"- machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']}; load average "
            f"(1/5/15 min) before {' / '.join(f'{x:.2f}' for x in machine['load_before'])}, after "
            f"{' / '.join(f'{x:.2f}' for x in machine['load_after'])} (a shared machine: read the ratios)"
        ),
        f"- repository: `{report['repo']}` ({report['repo_origin']}); {report['catalog_items']:,} catalog items",
        (
            f"- queries: normal = a MovieLens title typed as a search (each call another one); 1 MB / 5 MB = the "
            f"catalog's titles in a seeded order, repeated ({POOL} distinct texts per size, cycled; each 1 MB text is "
            f"the start of a 5 MB one, so prefix, 1 MB and 5 MB share their first {chars:,} characters); raw "
            f"`tritonclient.grpc` to `recommend`, k={K}; the server reads the first {chars:,} characters "
            f"(`MAX_QUERY_CHARS`; the tokenizer {report['tokenizer_chars']:,})"
        ),
        (
            f"- {report['rounds']} round(s); per slot {report['requests']} calls at 1 caller, "
            f"{report['per_caller']} per caller at 16 callers; client p50 includes building and sending the request "
            "(serialization + loopback)"
        ),
        (
            f"- check: each oversized query's answer equals its {chars:,}-character prefix's: "
            f"{report['check']['equal']} of {report['check']['checked']}"
        ),
        (
            "- per request, `compute_input` of tokenizer + rerank (copying the request into the Python backend) at 16 "
            "callers: " + ", ".join(f"{size} {c16[size]['text_compute_input_ms']:.2f} ms" for size in c16)
        ),
        "",
        (
            "| round | callers | query | calls | errors | p50 ms | p95 ms | tokenizer ms/req | rerank ms/req | "
            "tokenizer rows/exec | RSS before → peak MB |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in report["runs"]:
        srv = run["server"]
        lines.append(
            f"| {run['round']} | {run['concurrency']} | {run['size']} | {run['calls']} | {run['errors']} | "
            f"{run['p50_ms']:.1f} | {run['p95_ms']:.1f} | {srv['tokenizer']['compute_infer_ms']:.2f} | "
            f"{srv['rerank']['compute_infer_ms']:.2f} | {srv['tokenizer']['rows_per_execution']:.1f} | "
            f"{run['rss_before_mb']:,.0f} → {run['rss_peak_mb']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Three panels: p50 ratio and server-compute ratio (oversized/normal, whiskers: range over
    rounds) per load shape, and the server's RSS over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    phases = list(report["phases"].values())
    bars = [(size, ref) for ref in REFERENCES for size in OVERSIZED]
    width = 0.8 / len(bars)
    colors = {
        ("1MB", "normal"): "tab:orange",
        ("5MB", "normal"): "tab:red",
        ("1MB", "prefix"): "tab:cyan",
        ("5MB", "prefix"): "tab:blue",
    }
    for ax, key, title in (
        (axes[0], "p50", "client p50, ratio"),
        (axes[1], "text_compute", "server compute (tokenizer + rerank), ratio"),
    ):
        for j, (size, ref) in enumerate(bars):
            xs, mids, lows, highs = [], [], [], []
            for i, phase in enumerate(phases):
                ratio = phase["ratio"].get(size, {}).get(f"vs_{ref}")
                if ratio is None:
                    continue
                mid = ratio[key]
                low, high = phase["ratio_range"][size][f"vs_{ref}"][key]
                xs.append(i + (j - (len(bars) - 1) / 2) * width)
                mids.append(mid)
                lows.append(mid - low)
                highs.append(high - mid)
            ax.bar(
                xs, mids, width, yerr=[lows, highs], capsize=3, label=f"{size} ÷ {ref}", color=colors.get((size, ref))
            )
            for x, mid in zip(xs, mids, strict=True):
                ax.annotate(
                    f"{mid:.2f}",
                    (x, mid),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.axhline(1.0, color="grey", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(phases)), [f"{p['concurrency']} caller(s)" for p in phases])
        ax.set_ylabel("ratio (log scale)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    samples = report["rss_samples"]
    if samples:
        axes[2].plot([t for t, _ in samples], [mb for _, mb in samples], lw=1)
        for run in report["runs"]:
            if run["size"] != "normal":
                axes[2].axvspan(
                    run["t_start"],
                    run["t_end"],
                    color="tab:orange" if run["size"] == "1MB" else "tab:red",
                    alpha=0.12 if run["concurrency"] == 1 else 0.3,
                    lw=0,
                )
    axes[2].axhline(report["rss"]["bounded_mb"], color="grey", lw=1, ls="--")
    axes[2].set_xlabel("seconds (shaded: 1 MB / 5 MB slots, darker at 16 callers)")
    axes[2].set_ylabel("MB")
    axes[2].set_title(
        f"RSS, summed: {report['rss']['end_growth_over_bounded_mb']:+.0f} MB over the bounded warm-up (dashed)",
        fontsize=9,
    )
    axes[2].grid(True, alpha=0.3)
    fig.suptitle(
        "1 MB / 5 MB queries vs a normal query and vs their own bounded prefix, one server "
        "(medians of rounds, whiskers: range)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- repository


def repo_problems(repo: Path) -> list[str]:
    """Why ``repo`` cannot be trusted to serve what this checkout's server code expects: missing
    artifacts, or model.py adapters / tokenizer config that differ from the checked-in template."""
    from aisle_export.repository import TEMPLATE_DIR

    repo = Path(repo)
    problems = [
        f"missing {name}"
        for name in (
            "tokenizer/1/tokenizer.json",
            "tokenizer/1/tokenizer_settings.json",
            "query_encoder/1/model.onnx",
            "rerank/1/index/manifest.json",
            "recommend/config.pbtxt",
        )
        if not (repo / name).is_file()
    ]
    for adapter in sorted(TEMPLATE_DIR.glob("*/1/model.py")):
        relative = adapter.relative_to(TEMPLATE_DIR)
        if (repo / relative).is_file() and not filecmp.cmp(adapter, repo / relative, shallow=False):
            problems.append(f"{relative} differs from the template's")
    config = Path("tokenizer/config.pbtxt")
    if (repo / config).is_file() and not filecmp.cmp(TEMPLATE_DIR / config, repo / config, shallow=False):
        problems.append(f"{config} differs from the template's")
    return problems


def build_repo(target: Path, data_dir: Path) -> Path:
    """Export the pretrained towers into ``target`` and index MovieLens-100K there, as the
    integration tests' fixtures do (``make demo`` also fine-tunes: far too long for a benchmark)."""
    from aisle_export.catalog import read_catalog
    from aisle_export.indexing import write_index
    from aisle_export.movielens import fetch_movielens, write_catalog_csv
    from aisle_export.pipeline import export_repository

    export_repository(target)
    data = fetch_movielens(data_dir)
    catalog_csv = write_catalog_csv(data, target.parent / "movielens_catalog.csv")
    write_index(read_catalog(catalog_csv), target, source=catalog_csv, progress=True)
    return target


@contextmanager
def resolve_repo(repo: Path | None, default: Path) -> Iterator[tuple[Path, str]]:
    """(repository, where it came from). An explicit ``--repo`` must be sound; the default one is
    rebuilt in a temporary directory (removed afterwards) when missing or stale."""
    if repo is not None:
        problems = repo_problems(repo)
        if problems:
            raise SystemExit(f"error: {repo}: " + "; ".join(problems))
        yield repo, "--repo"
        return
    problems = repo_problems(default)
    if not problems:
        yield default, "`make demo`'s"
        return
    tmp = Path(tempfile.mkdtemp(prefix="aisle-bench-oversized-"))
    print(f"[bench] {default} unusable ({'; '.join(problems)}): exporting a fresh repository into {tmp}", flush=True)
    try:
        data = default.parent / "data" if (default.parent / "data").is_dir() else tmp / "data"
        yield build_repo(tmp / "model_repository", data), "exported for this run: pretrained towers, MovieLens-100K"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- measuring


def group_rss_mb(pid: int) -> float:
    """VmRSS of tritonserver's process group (the server and its Python-backend stubs), in MB."""
    from aisle_server.processes import process_group_members

    total = 0
    for member in process_group_members(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue  # exited while we read
    return total / MB


def _process_name(pid: int, leader: int) -> str:
    """``tritonserver``, or the model a Python-backend stub serves (its ``<repo>/<model>/<v>/model.py``)."""
    if pid == leader:
        return "tritonserver"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    script = next((a.decode(errors="replace") for a in args if a.endswith(b"model.py")), "")
    return Path(script).parent.parent.name if script else "?"


def group_memory(pid: int) -> dict[str, dict[str, float]]:
    """Memory of tritonserver's process group per process name (a model's instances summed), MB:
    ``rss`` (VmRSS), ``pss`` (shared pages split between the processes mapping them, so the sum over
    the group counts the Python backend's shared memory once, where summed RSS counts it in
    tritonserver *and* the stub), ``anon`` and ``shmem`` (the PSS parts)."""
    from aisle_server.processes import process_group_members

    fields = {"Rss:": "rss", "Pss:": "pss", "Pss_Anon:": "anon", "Pss_Shmem:": "shmem"}
    out: dict[str, dict[str, float]] = {}
    for member in process_group_members(pid):
        try:
            lines = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue  # exited while we read
        entry = out.setdefault(_process_name(member, pid), dict.fromkeys(fields.values(), 0.0))
        for line in lines:
            parts = line.split()
            if parts and parts[0] in fields:
                entry[fields[parts[0]]] += int(parts[1]) / 1024
    return out


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


class RssSampler:
    """Samples ``group_rss_mb(pid)`` every ``interval_s`` in a background thread."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        self.pid, self.interval_s, self.t0 = pid, interval_s, time.perf_counter()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, group_rss_mb(self.pid)))
            self._stop.wait(self.interval_s)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def peak_since(self, t: float) -> float:
        return max((mb for s, mb in self.samples if s >= t), default=float("nan"))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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


def server_stats(client: object) -> dict[str, dict[str, int]]:
    """Cumulative counters of ``STAT_MODELS`` from Triton's inference statistics."""
    out = {}
    for model in STAT_MODELS:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        infer = stats["inference_stats"]
        out[model] = {
            "inferences": int(stats.get("inference_count", 0)),
            "executions": int(stats.get("execution_count", 0)),
            "requests": int(infer["success"].get("count", 0)),
            "compute_input_ns": int(infer["compute_input"].get("ns", 0)),
            "compute_infer_ns": int(infer["compute_infer"].get("ns", 0)),
        }
    return out


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
    before = server_stats(stats_client)
    latencies, errors = drive(url, pool, slot.concurrency, calls_per_caller, on_call)
    delta = stats_delta(server_stats(stats_client), before)
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
        "server": {model: per_request_ms(delta[model]) for model in STAT_MODELS},
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


def main(argv: list[str] | None = None) -> dict:
    """Resolve the repository, start a server, time the schedule, write md/json/png."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="a model repository with a catalog index (default: build/model_repository from "
        "`make demo`, or a fresh export into a temporary directory if that is missing or stale)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=12, help="calls per slot at 1 caller")
    parser.add_argument("--per-caller", type=int, default=2, help="calls per caller per slot at 16 callers")
    parser.add_argument("--rss-interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)

    import tritonclient.grpc as grpcclient
    from tqdm import tqdm

    from aisle_contract import CHARS_PER_TOKEN, MAX_QUERY_CHARS
    from aisle_server.index import CatalogIndex
    from aisle_server.tokenization import TokenizerSettings
    from aisle_server.tritonserver import TritonServer

    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with resolve_repo(args.repo, ROOT / "build" / "model_repository") as (repo, origin):
        titles = [str(t) for t in CatalogIndex.load(repo / "rerank" / "1" / "index").titles]
        tokenizer_chars = TokenizerSettings.load(repo / "tokenizer" / "1").max_length * CHARS_PER_TOKEN
        normal = [search_text(t) for t in titles]
        random.Random(0).shuffle(normal)
        print(f"[bench] building {POOL} texts each of {', '.join(OVERSIZED)} from {len(titles):,} titles", flush=True)
        texts = {
            size: [oversized_text(titles, OVERSIZED_BYTES[size], seed=i) for i in range(POOL)] for size in OVERSIZED
        }
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
                        run = measure(
                            server.grpc_url,
                            stats_client,
                            slot,
                            pools[slot.size],
                            per_caller[slot.concurrency],
                            sampler,
                            lambda: bar.update(1),
                        )
                        runs.append(run)
                        bar.write(
                            f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] round {slot.round} "
                            f"c={slot.concurrency:<2d} {slot.size:6s} p50 {run['p50_ms']:8.1f} ms  tokenizer "
                            f"{run['server']['tokenizer']['compute_infer_ms']:6.2f} ms  rerank "
                            f"{run['server']['rerank']['compute_infer_ms']:6.2f} ms  errors {run['errors']}  "
                            f"RSS {run['rss_before_mb']:,.0f} -> peak {run['rss_peak_mb']:,.0f} MB"
                        )
                    samples = list(sampler.samples)
                memory["end"] = group_memory(server.pid)
            finally:
                stats_client.close()
        report = {
            "command": command_line("perf/bench_oversized_query.py", argv),
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
    write_report(args.out, "bench_oversized_query", report, render_markdown, plot)
    if check["equal"] != check["checked"]:
        raise SystemExit("error: an oversized query's answer differs from its bounded prefix's (see the report)")
    return report


if __name__ == "__main__":
    main()
