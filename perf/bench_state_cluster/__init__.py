"""Shopper state on one Redis against a Redis Cluster (benchmark, not a test): ingest events/s and
what reading a shopper's stored events adds to ``recommend``, and the cost of acknowledging a write
only once a replica has it (``WAIT``).

    .venv/bin/python -m perf.bench_state_cluster [--repo DIR] [--rounds 3] [--seconds 6] [--pairs 150]

One run on one machine starts a single redis-server and a local Redis Cluster (3 masters with a
replica each; every node AOF with ``appendfsync always``), and three tritonservers over one
repository, each with its own state URL:

- ``single``: ``redis://…`` — the default (one shard, no replica to wait for);
- ``cluster``: ``redis-cluster://…?replicas=0`` — 16 shards over 3 masters, acknowledged by the master;
- ``cluster_wait``: ``redis-cluster://…`` — the cluster default, acknowledged once 1 replica has it.

The rounds interleave the three (round r runs single, cluster, cluster_wait, each phase back to
back), so a noisy neighbour on the shared machine hits all three alike. Per round and store:

(a) **Ingest**: 4 closed-loop threads on one SDK client call ``track_many`` with 64 new events each
    (``perf.bench_realtime``'s phase b64_t4); events/s acknowledged.
(b) **Acknowledgement latency**: one caller, ``track`` of one event, back to back; p50 per call.
(c) **State read cost**: ``recommend(user_id=u)`` against ``recommend(history=h)`` with the same 20
    events, alternating A-B / B-A, one caller, caches off; added p50 = p50(user_id) − p50(history).
(d) **Store calls alone** (in this process, no Triton): ``ShopperState.store`` of one event and
    ``ShopperState.recent`` of one shopper, p50 — what the store itself adds, without the server.

Writes ``<out>/bench_state_cluster.{md,json,png}``. Modules: ``scenario`` (runs it, returns the
report dict), ``report`` (Markdown and the PNG), ``__main__`` (the command).
"""
