"""Per-model time from Triton's statistics extension, to break the ensemble down by component.

Triton credits every request of a batch with the whole batch's compute time in ``inference_stats``,
so those figures are the *latency* a request saw in each stage. The machine time a stage really
used is in ``batch_stats`` (one entry per executed batch size, counted per execution); the
compute shares below use that. A snapshot is taken before and after a scenario and subtracted.

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

from collections.abc import Iterable

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
        "compute_ns": _ns(infer.get("compute_input"))
        + _ns(infer.get("compute_infer"))
        + _ns(infer.get("compute_output")),
        "batch_compute_ns": batch_compute,
        "batch_executions": batch_executions,
        "inferences": int(model_stats.get("inference_count", 0) or 0),
        "executions": int(model_stats.get("execution_count", 0) or 0),
    }


def snapshot(url: str, models: Iterable[str] = (*STAGES, ENSEMBLE)) -> dict[str, dict[str, int]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        out = {}
        for model in models:
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
            totals: dict[str, int] = {}
            for version in stats:
                for key, value in model_figures(version).items():
                    totals[key] = totals.get(key, 0) + value
            out[model] = totals
        return out
    finally:
        client.close()


def diff(after: dict, before: dict) -> dict:
    return {m: {k: after[m][k] - before.get(m, {}).get(k, 0) for k in after[m]} for m in after}


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
