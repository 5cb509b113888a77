"""Per-model time from Triton's statistics extension: one reader for every benchmark.

A snapshot (:func:`snapshot`) holds each model's cumulative counters (:func:`model_figures`); one
is taken before and after a scenario and subtracted (:func:`diff`). What the change makes:

- per request of one model (:func:`per_request_ms`, :func:`busy_ns`): Triton charges every
  request of a batch the whole batch's ``compute_infer``, so that per request is the time a
  request waited on its execution; × executions it is the model's busy time, which a dynamic
  batch saves;
- per ``recommend`` request, stage by stage (:func:`breakdown`): the machine time a stage really
  used is in ``batch_stats`` (one entry per executed batch size, counted per execution), and the
  compute shares use that.

Breakdown of one ``recommend`` request (``N`` = ensemble requests in the window):

- ``compute_ms`` per stage: Σ batch compute (input + infer + output) / N — CPU-side cost per request;
- ``share``: a stage's compute over the three stages' total (the "tokenizer ≤ 15 %" figure);
- ``latency_ms`` per stage: Σ request time (queue + compute) / N, what a request waits there;
- ``ensemble overhead``: ensemble request time − Σ stage request times (scheduling and copying
  tensors between steps);
- ``busy``: a stage's batch compute time / wall time of the window (≈ 1 per instance = saturated);
- ``avg_batch``: inferences / executions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STAGES = ("tokenizer", "query_encoder", "rerank")
ENSEMBLE = "recommend"


def _ns(entry: dict | None) -> int:
    return int((entry or {}).get("ns", 0) or 0)


def _count(entry: dict | None) -> int:
    return int((entry or {}).get("count", 0) or 0)


def model_figures(model_stats: dict) -> dict[str, int]:
    """Cumulative counters of one ``model_stats`` entry (tritonclient ``as_json=True`` form)."""
    infer = model_stats.get("inference_stats", {})
    batch_compute = 0
    batch_executions = 0
    for batch in model_stats.get("batch_stats", []) or []:
        batch_compute += (
            _ns(batch.get("compute_input")) + _ns(batch.get("compute_infer")) + _ns(batch.get("compute_output"))
        )
        batch_executions += _count(batch.get("compute_infer"))
    return {
        "requests": _count(infer.get("success")),
        "request_ns": _ns(infer.get("success")),
        "queue_ns": _ns(infer.get("queue")),
        "compute_input_ns": _ns(infer.get("compute_input")),
        "compute_infer_ns": _ns(infer.get("compute_infer")),
        "compute_ns": _ns(infer.get("compute_input"))
        + _ns(infer.get("compute_infer"))
        + _ns(infer.get("compute_output")),
        "batch_compute_ns": batch_compute,
        "batch_executions": batch_executions,
        "inferences": int(model_stats.get("inference_count", 0) or 0),
        "executions": int(model_stats.get("execution_count", 0) or 0),
    }


def _statistics(client: Any, model: str) -> dict:
    """``model``'s statistics as JSON from a tritonclient gRPC client or an ``aisle.RecClient``."""
    if hasattr(client, "get_inference_statistics"):
        return client.get_inference_statistics(model, as_json=True)
    return client.inference_statistics(model)


def snapshot(
    source: Any, models: Iterable[str] = (*STAGES, ENSEMBLE), keys: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """Each model's counters (summed over its versions), ``keys`` of them only if given, in that order.

    ``source``: a server's gRPC URL (a client is opened for the call), a tritonclient gRPC client
    or an ``aisle.RecClient``.
    """
    if isinstance(source, str):
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(source)
        try:
            return snapshot(client, models, keys)
        finally:
            client.close()
    out = {}
    for model in models:
        totals: dict[str, int] = {}
        for version in _statistics(source, model)["model_stats"]:
            for key, value in model_figures(version).items():
                totals[key] = totals.get(key, 0) + value
        out[model] = totals if keys is None else {key: totals.get(key, 0) for key in keys}
    return out


def diff(after: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Counter differences per model (Triton's statistics are cumulative since the server started)."""
    return {m: {k: after[m][k] - before.get(m, {}).get(k, 0) for k in after[m]} for m in after}


def busy_ns(stats: Mapping[str, int]) -> float:
    """A model's busy time over a window: ``compute_infer`` per request × executions (0 without requests)."""
    if not stats.get("requests"):
        return 0.0
    return stats.get("compute_infer_ns", 0) / stats["requests"] * stats.get("executions", 0)


def per_request_ms(stats: Mapping[str, int]) -> dict[str, float]:
    """One model's statistics over a window as milliseconds per request.

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


def breakdown(delta: dict[str, dict[str, int]], wall_s: float) -> dict:
    """The per-request breakdown of ``recommend`` (see the module docstring); ms per ensemble request."""
    n = max(delta[ENSEMBLE]["requests"], 1)
    stages = {}
    total_compute = sum(delta[s]["batch_compute_ns"] for s in STAGES) or 1
    for stage in STAGES:
        d = delta[stage]
        stages[stage] = {
            "compute_ms": d["batch_compute_ns"] / n / 1e6,
            "share": d["batch_compute_ns"] / total_compute,
            "latency_ms": d["request_ns"] / n / 1e6,
            "queue_ms": d["queue_ns"] / n / 1e6,
            "busy": d["batch_compute_ns"] / 1e9 / wall_s if wall_s > 0 else 0.0,
            "avg_batch": d["inferences"] / d["executions"] if d["executions"] else 0.0,
        }
    ensemble_ms = delta[ENSEMBLE]["request_ns"] / n / 1e6
    overhead = ensemble_ms - sum(s["latency_ms"] for s in stages.values())
    return {
        "requests": delta[ENSEMBLE]["requests"],
        "ensemble_latency_ms": ensemble_ms,
        "overhead_ms": overhead,
        "stages": stages,
    }


def hop_costs(delta: dict[str, dict[str, int]], wall_s: float, cpu_s: Mapping[str, float]) -> dict:
    """What each Python-backend hop of ``recommend`` costs per ensemble request, queueing apart.

    ``delta``: :func:`diff` of two snapshots around a window of ``wall_s`` seconds; ``cpu_s``: CPU
    seconds each process used in that window (``perf.lib.procstats.group_cpu_seconds``, by model
    name, ``tritonserver`` for the server itself). Per stage, ms per ``recommend`` request:
    ``compute`` (Triton's batch compute: wall time, a wait for a core included), ``queue``
    (Triton's queue), ``cpu`` (the stage's stub process: what the stage really spent on a core);
    ``ensemble_overhead_ms`` and ``tritonserver_cpu_ms`` (gRPC, the ensemble, the backend's side of
    every hop) beside them.
    """
    figures = breakdown(delta, wall_s)
    n = max(figures["requests"], 1)
    stages = {
        stage: {
            "compute_ms": round(s["compute_ms"], 3),
            "queue_ms": round(s["queue_ms"], 3),
            "latency_ms": round(s["latency_ms"], 3),
            "cpu_ms": round(cpu_s.get(stage, 0.0) * 1e3 / n, 3),
            "avg_batch": round(s["avg_batch"], 2),
        }
        for stage, s in figures["stages"].items()
    }
    return {
        "requests": figures["requests"],
        "stages": stages,
        "ensemble_latency_ms": round(figures["ensemble_latency_ms"], 3),
        "ensemble_overhead_ms": round(figures["overhead_ms"], 3),
        "tritonserver_cpu_ms": round(cpu_s.get("tritonserver", 0.0) * 1e3 / n, 3),
    }
