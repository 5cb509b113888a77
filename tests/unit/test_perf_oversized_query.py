"""``perf.bench_oversized_query``'s pure parts on small fake numbers: the queries it builds, the
interleaving, the statistics arithmetic, the in-round ratios, the repository check and the report.
No server: the benchmark itself is run by hand."""

from __future__ import annotations

import math
import shutil

import pytest

from perf.bench_oversized_query import report as rendering
from perf.bench_oversized_query import scenario
from perf.lib import procstats, repository, triton_stats

MB = procstats.MB


# --------------------------------------------------------------------------- queries and schedule


def test_search_text_drops_the_year_and_lowers_the_case():
    assert scenario.search_text("Usual Suspects, The (1995)") == "usual suspects, the"
    assert scenario.search_text("Heat") == "heat"
    assert scenario.search_text("Brazil (the film)") == "brazil (the film)"  # not a year: kept


def test_oversized_text_is_real_words_of_the_requested_size_and_seeded():
    titles = ["Toy Story (1995)", "Amélie (2001)", "Heat (1995)"]
    text = scenario.oversized_text(titles, 10_000, seed=3)
    assert len(text.encode()) <= 10_000 and len(text.encode()) >= 10_000 - 3  # never cut inside "é"
    assert set(text.split()[:-1]) <= {w for t in titles for w in t.split()}  # the last word may be cut
    assert text == scenario.oversized_text(titles, 10_000, seed=3)
    assert text != scenario.oversized_text(titles, 10_000, seed=4)
    # The smaller text of a seed is the start of the larger one: prefix, 1 MB and 5 MB share their first characters.
    assert scenario.oversized_text(titles, 50_000, seed=3).startswith(text[:9_000])
    with pytest.raises(ValueError):
        scenario.oversized_text([], 10, seed=0)


def test_schedule_alternates_the_order_of_sizes_every_other_round():
    slots = scenario.schedule(2, concurrencies=(1, 16))
    assert len(slots) == 2 * 2 * len(scenario.SIZES)
    first = [s.size for s in slots if s.round == 0 and s.concurrency == 1]
    second = [s.size for s in slots if s.round == 1 and s.concurrency == 1]
    assert first == list(scenario.SIZES) and second == list(reversed(scenario.SIZES))
    with pytest.raises(ValueError):
        scenario.schedule(0)


# --------------------------------------------------------------------------- statistics


def test_stats_delta_and_per_request_figures():
    before = {
        "tokenizer": {
            "requests": 10,
            "inferences": 10,
            "executions": 10,
            "compute_infer_ns": 1_000_000,
            "compute_input_ns": 0,
        }
    }
    after = {
        "tokenizer": {
            "requests": 26,
            "inferences": 26,
            "executions": 14,
            "compute_infer_ns": 33_000_000,
            "compute_input_ns": 16_000_000,
        }
    }
    delta = triton_stats.diff(after, before)["tokenizer"]
    assert delta == {
        "requests": 16,
        "inferences": 16,
        "executions": 4,
        "compute_infer_ns": 32_000_000,
        "compute_input_ns": 16_000_000,
    }
    figures = triton_stats.per_request_ms(delta)
    assert figures["compute_infer_ms"] == pytest.approx(2.0)  # Triton charges each batched request its execution
    assert figures["compute_input_ms"] == pytest.approx(1.0)
    assert figures["busy_ms"] == pytest.approx(0.5)  # 4 executions of 2 ms over 16 rows
    assert figures["rows_per_execution"] == pytest.approx(4.0)
    empty = triton_stats.per_request_ms({"requests": 0, "inferences": 0, "executions": 0, "compute_infer_ns": 0})
    assert all(math.isnan(v) for v in empty.values())


def _run(round_: int, concurrency: int, size: str, p50: float, tok: float, rerank: float, rss=(1000.0, 1010.0)) -> dict:
    server = {
        model: {"compute_infer_ms": ms, "compute_input_ms": 0.1, "busy_ms": ms, "rows_per_execution": 1.0}
        for model, ms in (("tokenizer", tok), ("rerank", rerank), ("query_encoder", 5.0), ("recommend", 9.0))
    }
    return {
        "round": round_,
        "concurrency": concurrency,
        "size": size,
        "calls": 10,
        "errors": 0,
        "p50_ms": p50,
        "p95_ms": p50 * 2,
        "server": server,
        "stats": {},
        "rss_before_mb": rss[0],
        "rss_peak_mb": rss[1],
        "t_start": 0.0,
        "t_end": 1.0,
    }


def _runs() -> list[dict]:
    runs = []
    for r, scale in enumerate((1.0, 2.0, 1.5)):  # a machine that got 2x slower in round 1: ratios stay
        for c in (1, 16):
            runs += [
                _run(r, c, "normal", 10 * scale, 0.5 * scale, 1.5 * scale),
                _run(r, c, "prefix", 20 * scale, 1.0 * scale, 3.0 * scale),
                _run(r, c, "1MB", 30 * scale, 2.0 * scale, 4.0 * scale, rss=(1000.0, 1040.0)),
                _run(r, c, "5MB", 60 * scale, 4.0 * scale, 4.0 * scale),
            ]
    return runs


def test_summarize_takes_ratios_inside_each_round_against_both_references():
    phases = scenario.summarize(_runs())
    assert set(phases) == {"c1", "c16"}
    c16 = phases["c16"]
    assert c16["rounds"] == 3 and list(c16["sizes"]) == list(scenario.SIZES)
    assert c16["sizes"]["normal"]["p50_ms"] == pytest.approx(15.0)  # median of 10, 20, 15
    assert c16["sizes"]["1MB"]["rss_peak_growth_mb"] == pytest.approx(40.0)
    assert c16["sizes"]["5MB"]["text_compute_ms"] == pytest.approx(12.0)
    one = c16["ratio"]["1MB"]
    assert one["vs_normal"]["p50"] == pytest.approx(3.0) and one["vs_prefix"]["p50"] == pytest.approx(1.5)
    assert one["vs_normal"]["text_compute"] == pytest.approx(3.0)  # (2 + 4) / (0.5 + 1.5)
    assert one["vs_prefix"]["text_compute"] == pytest.approx(1.5)  # (2 + 4) / (1 + 3)
    assert one["vs_prefix"]["tokenizer"] == pytest.approx(2.0) and one["vs_prefix"]["rerank"] == pytest.approx(4 / 3)
    assert c16["ratio_range"]["5MB"]["vs_normal"]["p50"] == pytest.approx([6.0, 6.0])
    assert "normal" not in c16["ratio"] and "prefix" not in c16["ratio"]


def test_summarize_skips_a_reference_missing_from_every_round():
    runs = [r for r in _runs() if r["size"] != "prefix"]
    c1 = scenario.summarize(runs)["c1"]
    assert set(c1["ratio"]["5MB"]) == {"vs_normal"} and "prefix" not in c1["sizes"]


def test_ratio_of_a_zero_reference_is_nan_not_a_crash():
    runs = [_run(0, 1, "normal", 0.0, 0.0, 0.0), _run(0, 1, "1MB", 5.0, 1.0, 1.0)]
    ratio = scenario.summarize(runs)["c1"]["ratio"]["1MB"]["vs_normal"]
    assert math.isnan(ratio["p50"]) and math.isnan(ratio["text_compute"])


def test_rss_summary_measures_growth_against_both_warm_ups():
    rss = scenario.rss_summary([(0.0, 1100.0), (1.0, 1250.0), (2.0, 1180.0)], baseline_mb=1000.0, bounded_mb=1150.0)
    assert rss["end_growth_mb"] == pytest.approx(180.0) and rss["peak_growth_mb"] == pytest.approx(250.0)
    assert rss["end_growth_over_bounded_mb"] == pytest.approx(30.0)
    assert rss["peak_growth_over_bounded_mb"] == pytest.approx(100.0)
    assert scenario.rss_summary([], 1000.0, 1150.0)["end_growth_over_bounded_mb"] == 0.0


def _memory(server: float, tokenizer: float, encoder: float, shm: float = 0.0) -> dict:
    return {
        "tritonserver": {"rss": server + shm, "pss": server + shm / 2, "anon": server, "shmem": shm / 2},
        "tokenizer": {"rss": tokenizer + shm, "pss": tokenizer + shm / 2, "anon": tokenizer, "shmem": shm / 2},
        "query_encoder": {"rss": encoder, "pss": encoder, "anon": encoder, "shmem": 0.0},
    }


def test_memory_growth_counts_shared_memory_once_and_sums_the_text_path():
    growth = scenario.memory_growth(_memory(50, 30, 300), _memory(80, 30, 400, shm=100))
    assert growth["tritonserver"] == pytest.approx(80.0) and growth["tokenizer"] == pytest.approx(50.0)
    assert growth["query_encoder"] == pytest.approx(100.0)
    assert growth["text_path"] == pytest.approx(130.0)  # the 100 MB region once, not in both processes
    assert growth["total"] == pytest.approx(230.0)


# --------------------------------------------------------------------------- repository and report


def test_repo_problems_names_missing_artifacts_and_stale_adapters(tmp_path):
    from aisle_export.build.repository import TEMPLATE_DIR

    repo = tmp_path / "repo"
    shutil.copytree(TEMPLATE_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    problems = repository.problems(repo)
    assert "missing query_encoder/1/model.onnx" in problems and "missing rerank/1/index/manifest.json" in problems
    assert not any("differs" in p for p in problems)
    (repo / "tokenizer" / "1" / "model.py").write_text("# an older adapter\n")
    assert "tokenizer/1/model.py differs from the template's" in repository.problems(repo)


def _report() -> dict:
    runs = _runs()
    return {
        "command": ".venv/bin/python -m perf.bench_oversized_query --rounds 3",
        "machine": {
            "cpus": 2,
            "platform": "x86_64 Linux",
            "python": "3.11.7",
            "load_before": [1.0, 2.0, 3.0],
            "load_after": [2.0, 2.0, 3.0],
        },
        "repo": "build/model_repository",
        "repo_origin": "`make demo`'s",
        "catalog_items": 1682,
        "max_query_chars": 8192,
        "tokenizer_chars": 4096,
        "rounds": 3,
        "requests": 12,
        "per_caller": 2,
        "check": {"checked": 2, "equal": 2},
        "phases": scenario.summarize(runs),
        "rss": scenario.rss_summary([(0.0, 1100.0), (1.0, 1250.0), (2.0, 1180.0)], 1000.0, 1150.0),
        "rss_interval_s": 0.1,
        "memory": {
            "normal_warm_up": _memory(50, 30, 300),
            "bounded_warm_up": _memory(50, 30, 400),
            "end": _memory(80, 30, 400, shm=100),
        },
        "rss_samples": [[0.0, 1100.0], [1.0, 1250.0], [2.0, 1180.0]],
        "runs": runs,
    }


def test_markdown_shows_each_ratio_with_its_range_and_every_run():
    markdown = rendering.render_markdown(_report())
    x = rendering.TIMES
    assert (
        f"| 16 callers | 1MB | 45.0 | 3.00 | 6.00 | 3.00{x} (3.00 … 3.00) | 3.00{x} (3.00 … 3.00) | "
        f"1.50{x} (1.50 … 1.50) | 1.50{x} (1.50 … 1.50) |"
    ) in markdown
    assert "| 1 caller | normal | 15.0 | 0.75 | 2.25 | 1 (reference) | 1 (reference) | - | - |" in markdown
    assert "| 1 caller | prefix |" in markdown
    assert "**+30 MB** over the bounded warm-up (+180 MB over the normal one)" in markdown
    assert "equals its 8,192-character prefix's: 2 of 2" in markdown
    assert "| tritonserver | 50 | 50 | 130 | +80 | +50 |" in markdown
    assert "| **text path** (tritonserver + tokenizer + rerank) | 80 | 80 | 210 | +130 | +100 |" in markdown
    assert "| **total** | 380 | 480 | 610 | +130 | +100 |" in markdown
    assert markdown.count("\n| 2 | 16 | ") == len(scenario.SIZES)  # every run listed


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = rendering.plot(_report(), tmp_path / "oversized.png")
    assert path.stat().st_size > 0
