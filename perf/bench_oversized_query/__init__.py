"""Oversized-query benchmark (not a test): what a multi-megabyte QUERY costs the server, as ratios to a normal one.

    .venv/bin/python -m perf.bench_oversized_query [--repo build/model_repository] [--rounds 3]
        [--requests 12] [--per-caller 2]

Issue #15, item 7: a 5 MB query used to be tokenized whole before being truncated to 256 tokens
(~6 s of tokenizer time for one request; 16 callers sending 1 MB got 0.5 s each, and the server
grew from 1.0 to 2.4 GB). Now the tokenizer cuts each text to ``max_length * CHARS_PER_TOKEN``
characters and ``rerank`` cuts the QUERY to ``MAX_QUERY_CHARS`` before BM25. This starts its own
tritonserver over ``--repo`` and, on that one server in one run, sends through raw
``tritonclient.grpc`` to ``recommend`` (the SDK cuts queries client-side; a foreign client need not):
normal queries (MovieLens titles typed as searches, each call a different one); 1 MB and 5 MB
queries (the catalog's titles repeated: real words); and ``prefix``, those texts cut to
``MAX_QUERY_CHARS`` (the bounded work any long query costs). Per size and load shape (1 caller;
16 closed-loop callers) it measures client p50 and Triton's server-side compute (``compute_infer``
of ``tokenizer`` and ``rerank`` from the inference statistics, per request), and samples the RSS of
tritonserver + its Python-backend stubs throughout. Ratios: oversized ÷ normal and oversized ÷
prefix, each taken inside one round (sizes back to back, order reversed every other round);
figures are medians of rounds.

``--repo`` defaults to ``build/model_repository`` (``make demo``); when that is missing or older than
the checked-in template (model.py adapters, tokenizer config) the benchmarks' own repository —
pretrained towers, the MovieLens-100K catalog, ``build/perf/model_repository`` — is served instead
(exported the first time, ~2 minutes here: :func:`perf.lib.repository.cached`).
Writes ``<out>/bench_oversized_query.{json,md,png}``.

Modules: ``scenario`` (runs it, returns the report dict), ``report`` (Markdown and the PNG from it),
``__main__`` (the command).
"""
