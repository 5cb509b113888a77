"""Real-time benchmark (not a test): event ingest through ``track_many`` and what reading a shopper's
stored events adds to ``recommend``, against a real tritonserver and a real redis-server.

    .venv/bin/python -m perf.bench_realtime [--repo DIR] [--rounds 2] [--seconds 8] [--pairs 300]

Starts its own redis-server (AOF, ``appendfsync always``: every acknowledged event is fsynced, as
``aisle serve`` runs it) and a tritonserver that uses it (``AISLE_STATE_URL``). ``--repo`` must be
a repository with the ``track`` model; without it the benchmarks' own is served (pretrained towers,
MovieLens-100K, ``build/perf/model_repository``: exported and indexed once, reused by later runs).

(a) **Ingest**: closed-loop threads call ``client.track_many`` with batches of new events (fresh
    event ids, synthetic shoppers, catalog items); events/s = acknowledged events per second,
    checked against ``aisle_events_accepted_total`` on the metrics endpoint. Target ≥ 5,000/s.
(b) **State read cost**: for shoppers whose events are stored, ``recommend(user_id=u)`` and
    ``recommend(history=h)`` with the same events ``h`` in the call, one after the other (order
    alternating A-B, B-A), one caller, caches off. The added p50 is p50(user_id) − p50(history),
    per round; the paired per-call differences are reported too. Target ≤ 1 ms.
(c) **Catalog update visibility**: ``update_items`` inserts an item, then takes it out of stock or
    hides it; the delay from the call returning to the first ``recommend`` that shows the change
    (``rerank`` polls the change log every ``catalog_poll_s``, 0.2 s). Target p99 ≤ 1 s.

Writes ``<out>/bench_realtime.{md,json,png}``.

Modules: ``scenario`` (runs it, returns the report dict), ``report`` (Markdown and the PNG from it),
``__main__`` (the command).
"""
