"""perf/lib's shared pieces on fakes: one Triton-statistics reader for every client, busy time, the
timing loops, /proc status and the repository checks. No server."""

from __future__ import annotations

import math
import os
import time

import pytest

from perf.lib import procstats, repository, run_info, timing, triton_stats


def _entry(requests: int, infer_ns: int, inferences: int, executions: int) -> dict:
    return {
        "inference_count": str(inferences),
        "execution_count": str(executions),
        "inference_stats": {
            "success": {"count": str(requests), "ns": "0"},
            "compute_input": {"count": str(requests), "ns": "10"},
            "compute_infer": {"count": str(requests), "ns": str(infer_ns)},
        },
    }


class TritonClient:
    """tritonclient's gRPC client: ``get_inference_statistics(model, as_json=True)``, two versions."""

    def get_inference_statistics(self, model: str, as_json: bool = False) -> dict:
        assert as_json
        return {"model_stats": [_entry(4, 400, 4, 2), _entry(1, 100, 1, 1)]}


class SdkClient:
    """aisle.RecClient: ``inference_statistics(model)``."""

    def inference_statistics(self, model: str) -> dict:
        return {"model_stats": [_entry(5, 500, 5, 3)]}


def test_snapshot_reads_either_client_sums_versions_and_keeps_the_keys_asked_in_order():
    keys = ("inferences", "executions", "requests", "compute_infer_ns")
    for client in (TritonClient(), SdkClient()):
        snap = triton_stats.snapshot(client, ["rerank", "recommend"], keys)
        assert list(snap) == ["rerank", "recommend"]
        assert snap["rerank"] == {"inferences": 5, "executions": 3, "requests": 5, "compute_infer_ns": 500}
        assert list(snap["rerank"]) == list(keys)
    full = triton_stats.snapshot(SdkClient(), ["rerank"])["rerank"]
    assert full["compute_input_ns"] == 10 and full["batch_compute_ns"] == 0


def test_busy_time_is_compute_per_request_times_executions():
    assert triton_stats.busy_ns({"requests": 16, "compute_infer_ns": 32, "executions": 4}) == pytest.approx(8.0)
    assert triton_stats.busy_ns({"requests": 0, "compute_infer_ns": 0, "executions": 0}) == 0.0
    figures = triton_stats.per_request_ms({"requests": 16, "inferences": 16, "executions": 4, "compute_infer_ns": 32e6})
    assert figures["busy_ms"] == pytest.approx(
        triton_stats.busy_ns({"requests": 16, "compute_infer_ns": 32e6, "executions": 4}) / 16 / 1e6
    )


def test_diff_tolerates_a_model_missing_before():
    assert triton_stats.diff({"m": {"a": 3}}, {}) == {"m": {"a": 3}}


def test_timing_loops():
    calls = []
    times = timing.call_times(lambda: calls.append(1), seconds=0.0, warmup=2, min_calls=5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)
    out, ms = timing.timed(lambda x: x * 2, [1, 2, 3])
    assert out == [2, 4, 6] and ms.shape == (3,)
    assert math.isnan(timing.percentile([], 50))


def test_status_of_this_process_in_mib():
    status = procstats.status_mib()
    assert list(status) == ["VmHWM", "VmRSS", "RssAnon", "RssFile"] and status["VmRSS"] > 0
    assert procstats.rss_bytes(os.getpid()) > 0 and procstats.group_rss_mb(os.getpgid(0)) > 0


def test_cpu_seconds_grow_with_work_and_are_read_per_process_name_of_the_group():
    before = procstats.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert procstats.cpu_seconds(os.getpid()) > before
    assert procstats.cpu_seconds(-1) == 0.0  # gone: nothing to read
    group = procstats.group_cpu_seconds(os.getpgid(0))
    assert group and all(seconds >= 0 for seconds in group.values())


def _stage(requests: int, request_ns: int, queue_ns: int, batch_ns: int, inferences: int, executions: int) -> dict:
    return {
        "requests": requests,
        "request_ns": request_ns,
        "queue_ns": queue_ns,
        "batch_compute_ns": batch_ns,
        "inferences": inferences,
        "executions": executions,
    }


def test_hop_costs_are_per_ensemble_request_with_the_overhead_and_each_process_cpu():
    delta = {
        "tokenizer": _stage(10, 10_000_000, 2_000_000, 4_000_000, 10, 5),
        "query_encoder": _stage(10, 30_000_000, 10_000_000, 20_000_000, 10, 2),
        "rerank": _stage(10, 40_000_000, 5_000_000, 30_000_000, 10, 10),
        "recommend": _stage(10, 100_000_000, 0, 0, 10, 10),
    }
    cpu = {"tokenizer": 0.002, "query_encoder": 0.01, "rerank": 0.02, "tritonserver": 0.005}
    hops = triton_stats.hop_costs(delta, 1.0, cpu)
    assert hops["requests"] == 10 and hops["ensemble_latency_ms"] == 10.0
    assert hops["ensemble_overhead_ms"] == 10.0 - (1.0 + 3.0 + 4.0)  # ensemble − Σ stage request times
    assert hops["stages"]["tokenizer"] == {
        "compute_ms": 0.4,
        "queue_ms": 0.2,
        "latency_ms": 1.0,
        "cpu_ms": 0.2,
        "avg_batch": 2.0,
    }
    assert hops["stages"]["rerank"]["cpu_ms"] == 2.0 and hops["tritonserver_cpu_ms"] == 0.5
    assert triton_stats.hop_costs(delta, 1.0, {})["stages"]["rerank"]["cpu_ms"] == 0.0  # no reading: none


def test_command_line_is_the_module_form():
    assert run_info.command_line("perf.bench_sdk", ["--rounds", "3"]).endswith("-m perf.bench_sdk --rounds 3")
    assert run_info.stamp().count(":") == 2 and " load " in run_info.stamp()


def test_repository_checks_name_what_is_missing(tmp_path):
    assert not repository.indexed(tmp_path)
    assert repository.missing(tmp_path, ["a/b.txt"]) == ["missing a/b.txt"]
    (tmp_path / "rerank" / "1" / "index").mkdir(parents=True)
    (tmp_path / "rerank" / "1" / "index" / "manifest.json").write_text("{}")
    assert repository.indexed(tmp_path) and repository.ensure(tmp_path) == tmp_path  # indexed: left as it is
