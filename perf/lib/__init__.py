"""What the benchmarks share, one job per module (imports nothing itself: ``from perf.lib import loadgen``).

- ``repository``: a model repository for a benchmark — exported and indexed once, cached under ``build/``;
- ``triton_stats``: Triton's per-model statistics — counters, their change over a run, per request;
- ``procstats``: memory of a tritonserver and its stubs, its shared-memory regions (Linux /proc);
- ``run_info``: the command and the machine a report records, and how a report is written;
- ``loadgen``: the closed-loop load generator (in-process, HTTP, Triton gRPC targets);
- ``timing``: percentiles and timing loops.
"""
