"""``make bench``: every system answers the same search requests over one catalog; one report.

    .venv/bin/python -m perf.bench [--repo build/model_repository] [--items 55108] [--out perf/results]

The catalog: the BigBasket search proxy's 27,554 products grown with pack variants to ``--items``
(default 55,108; issue #26 judges the FastAPI side by side on ≥ 50,000 items), indexed beside
``--repo``'s exported towers (:mod:`perf.lib.proxy_catalog`; the added rows' vectors cached under
``build/bench_catalog`` so a second run embeds nothing), and searched with the proxy's queries. Where
``../shared/data/bigbasket`` is absent (or with ``--movielens``), ``--repo``'s own MovieLens catalog
(1,682 items) and title searches, and the report says so and does not judge the #26 target.

Systems, each over the same tower and catalog:

1. **in-process**: sentence-transformers (PyTorch CPU) + numpy top-k, no server (``perf/baselines``);
2. **FastAPI**: the same code behind FastAPI/uvicorn on 127.0.0.1;
3. **Aisle**: the ``recommend`` ensemble on tritonserver — its default (the configs exactly as
   ``aisle export`` writes them), then ORT FP32 and ORT INT8 (when the INT8 config variant exists),
   with and without dynamic batching, 1 and 2 instances per model, plus 2 instances with one ORT
   thread each (no oversubscription of 2 cores). ``--variants`` picks some, including the one-knob
   studies of the default's scheduling (``perf.perf_analyzer.variants.STUDIES``).

Phases: (a) concurrency sweeps — perf_analyzer for Aisle, ``perf/lib/loadgen.py`` for the baselines;
(b) on the default configuration, the component models' sweeps, a feed (history) mix and a
Poisson request-rate sweep; (c) *paired rounds* at concurrency 16: FastAPI, Aisle's default
(perf_analyzer and the same Python load generator as FastAPI), the sweep's two best configurations
and FP32 with/without dynamic batching, interleaved round by round so a shared machine's noise hits
all alike — the headline ratios come from these (issue #26: the default ≥ 5× FastAPI's throughput at
a p99 no worse). Triton's statistics give the component breakdown.

Outputs in ``--out``: ``bench_results.json`` (everything), ``bench_summary.csv``,
``bench_csv/*.csv`` (perf_analyzer's own CSVs), ``bench_report.md``, ``bench_throughput_p99.png``,
``bench_components.png``.

External server (the GPU suite, ``perf/perf_analyzer/gpu_suite.sh``): ``--url HOST:8001`` runs the
Aisle scenarios against a server started elsewhere (e.g. the Triton container with
``--model-config-name tensorrt``), labelled ``--label``.

Modules: ``scenario`` (runs it all, returns the results dict), ``report`` (Markdown, CSV and plots
from it; ``python -m perf.bench.report`` redraws them), ``__main__`` (the command).
"""
