"""Aisle's benchmarks (``make bench`` and the rest; docs/benchmarks.md). Not tests: each starts what
it needs, writes its results into ``perf/results/`` and prints a summary.

Run every one the same way, from the repository root, as a module::

    .venv/bin/python -m perf.<name> [--help]

- ``lib/``: what the benchmarks share, one job per module — ``repository`` (a model repository to
  serve, exported and indexed once under ``build/``), ``triton_stats`` (Triton's per-model
  statistics), ``procstats`` (memory and shared memory of a tritonserver, from /proc), ``run_info``
  (the command and machine a report records, and how it is written), ``loadgen`` (the closed-loop
  load generator), ``timing`` (percentiles and timing loops), ``synthetic_catalog`` (vectors, item
  fields and queries shaped like a store's);
- ``bench/``, ``bench_distill/``, ``bench_oversized_query/``, ``bench_realtime/``,
  ``bench_user_encoder/``: the longer benchmarks, each a ``scenario`` (runs things, returns the
  data), a ``report`` (Markdown and plots from that data) and ``__main__`` (the command);
- ``bench_*.py``, ``soak.py``, ``fuzz.py``, ``sim_experiments.py``: the shorter ones, one module each;
  ``module_walk.py`` follows an ``aisle`` command through the toolchain's modules (docs/toolchain.md);
- ``baselines/`` (the in-process and FastAPI systems ``perf.bench`` compares against),
  ``perf_analyzer/`` (Triton's C++ load generator: inputs, config variants, runner), ``fuzzing``
  (the strategies ``perf.fuzz`` and tests/integration/test_fuzz.py share).
"""
