"""User-encoder benchmark (not a test): what the learned user encoder adds to a feed call, as ratios.

    .venv/bin/python -m perf.bench_user_encoder [--repo build/model_repository] [--rounds 3] [--seconds 8]

Starts its own tritonserver over ``--repo`` (which must hold ``rerank/learned/user_encoder/``:
``make demo`` builds one), then times MovieLens shoppers' home feeds (history, no query; each call
a different shopper) with the encoder (``user_encoder=True``) and without it (``user_encoder=False``:
the recency-weighted mean of the history's embeddings) on the same server in the same run. Sides
alternate A/B/A/B within each round, so a shared machine's noise hits both alike; figures are
medians of rounds and every with/without ratio is taken inside one round. Phases: single calls at
concurrency 1, 16 threads unbatched, 16 threads micro-batched (``max_delay_ms=2, max_batch=16``);
caches off throughout. Writes ``<out>/bench_user_encoder.{md,json,png}``.

Modules: ``scenario`` (runs it, returns the report dict), ``report`` (Markdown and the PNG from it),
``__main__`` (the command).
"""
