"""``make bench``: every system answers the same MovieLens search requests; one report.

    .venv/bin/python -m perf.bench [--repo build/model_repository] [--out perf/results]

Systems, each over the same tower and catalog:

1. **in-process**: sentence-transformers (PyTorch CPU) + numpy top-k, no server (``perf/baselines``);
2. **FastAPI**: the same code behind FastAPI/uvicorn on 127.0.0.1;
3. **Aisle**: the ``recommend`` ensemble on tritonserver, ORT FP32 and ORT INT8 (when the INT8
   config variant exists), with and without dynamic batching, 1 and 2 instances per model, plus
   2 instances with one ORT thread each (no oversubscription of 2 cores).

Phases: (a) concurrency sweeps — perf_analyzer for Aisle, ``perf/lib/loadgen.py`` for the baselines;
(b) on the default configuration, the component models' sweeps, a feed (history) mix and a
Poisson request-rate sweep; (c) *paired rounds* at concurrency 16: FastAPI, Aisle's best
configuration (perf_analyzer and the same Python load generator as FastAPI) and FP32 with/without
dynamic batching, interleaved round by round so a shared machine's noise hits all alike — the
headline ratios come from these. Triton's statistics give the component breakdown.

Outputs in ``--out``: ``bench_results.json`` (everything), ``bench_summary.csv``,
``bench_csv/*.csv`` (perf_analyzer's own CSVs), ``bench_report.md``, ``bench_throughput_p99.png``,
``bench_components.png``.

External server (the GPU suite, ``perf/perf_analyzer/gpu_suite.sh``): ``--url HOST:8001`` runs the
Aisle scenarios against a server started elsewhere (e.g. the Triton container with
``--model-config-name tensorrt``), labelled ``--label``.

Modules: ``scenario`` (runs it all, returns the results dict), ``report`` (Markdown, CSV and plots
from it; ``python -m perf.bench.report`` redraws them), ``__main__`` (the command).
"""
