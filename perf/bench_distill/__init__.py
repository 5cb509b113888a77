"""Distilled towers (not a test): speed and served quality of each student next to its teacher.

    .venv/bin/python -m perf.bench_distill

after ``aisle distill --student layers --out build/students/layers``, ``--student static --out
build/students/static`` and, for the larger teacher, ``--student static --teacher all-mpnet-base-v2
--out build/students/static-mpnet`` (their ``--workdir``, default ``build/distill``, holds the
teachers' ONNX and vector caches). In one run, under ONNX Runtime on CPU:

- query-encoder throughput at batch 1 and batch 32 (tokenized beforehand, one intra-op thread, as
  in ``perf.bench_encoders``) for the teacher FP32 (all-MiniLM-L6-v2), the teacher CPU INT8 (``aisle
  export --precision int8``'s quantizer), the layers student FP32 and INT8, the static student and
  the static student of all-mpnet-base-v2 (and that teacher itself), in alternating rounds so load
  from other processes hits all alike; medians of rounds and ratios to the teacher FP32;
- ``recommend`` search throughput at concurrency 16 through a real tritonserver over the 27.5k
  BigBasket catalog, one repository whose query encoder is swapped per tower (the index stays the
  teacher's: the point of a distilled query tower), alternating rounds;
- indexing throughput of each item-tower option (tokenize + encode, batch 64, as ``aisle index``)
  over BigBasket item texts, and what that makes of a 54,667-title catalog;
- served search nDCG@10 (the served ``rank`` code, dense alone and hybrid) on the BigBasket proxy
  and on MovieLens title search: each query tower over the teacher's index, each student on both
  sides over its own index, BM25 alone as the baseline, and the all-mpnet-base-v2 student beside
  pretrained all-MiniLM-L6-v2.

Writes ``<out>/bench_distill.{json,md,png}``.

Modules: ``scenario`` (runs it, returns the result dict), ``report`` (Markdown and the PNG from it),
``__main__`` (the command).
"""
