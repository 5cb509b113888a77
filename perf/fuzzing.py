"""Hostile-input fuzzing shared by ``tests/integration/test_fuzz.py`` (a few hundred cases) and
``perf.fuzz`` (10,000+): hypothesis strategies and the check of each outcome.

Two targets:

- ``sdk``: ``RecClient.recommend`` / ``embed`` with random text (huge, control characters, lone
  surrogates), histories of up to thousands of items with NaN/inf timestamps, any ``k``, random
  ranking knobs and filters. A case passes with a valid result or ``InvalidRequest``.
- ``raw``: gRPC requests straight to every model (the ensembles and each composing model), built
  from the server's own metadata: declared or random dtypes, random ranks and shapes (including
  batch 0 and beyond ``max_batch_size``), missing and unknown inputs, binary garbage, huge strings,
  path-like strings, NaN/inf. A case passes with a result or ``INVALID_ARGUMENT``.

Anything else — ``ServerError`` (INTERNAL), an unavailable or dead server, a leaked non-SDK
exception — is a failure. Sizes are capped (≤ ~2 MB per request) so a run stays bounded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

PATHS = [
    "../../../../etc/passwd",
    "/etc/shadow",
    "/dev/zero",
    "file:///etc/hosts",
    "..\\..\\windows\\win.ini",
    "/tmp/aisle-fuzz-pwned",
    "model.py",
    "../rerank/1/model.py",
    "\x00/etc/passwd",
    "~/.ssh/id_rsa",
]
DTYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
MAX_ELEMENTS = 20_000
MAX_BYTES = 2_000_000
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 1e9, 1.7e9, -1.0]

# --- shared building blocks -------------------------------------------------------------------------

huge_text = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "é", "🙂", " ", "\x00", "word "]), st.integers(10_000, 50_000)
)
texts = st.one_of(
    st.text(max_size=64),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["", " ", "\t\n", "star wars", "toy story", *PATHS]),
    huge_text,
)
any_text = st.one_of(texts, st.text(max_size=20))  # st.text may draw lone surrogates: not encodable as UTF-8
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
garbage_bytes = st.one_of(
    st.binary(max_size=256),
    st.sampled_from([b"\xff\xfe", b"\xc3", b"\x00" * 64]),
    st.builds(lambda n: b"\xff" * n, st.integers(10_000, 100_000)),
    texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
)


# --- the SDK target ------------------------------------------------------------------------------------

item_ids = st.one_of(st.integers(1, 1700).map(str), any_text, st.sampled_from(PATHS))
history_items = st.tuples(item_ids, floats)
histories = st.one_of(
    st.lists(history_items, max_size=20),
    st.builds(
        lambda n, ts: [(str(1 + i % 1682), ts) for i in range(n)],
        st.integers(500, 3000),
        st.sampled_from([1.7e9, math.nan, 0.0]),
    ),
)
knobs = st.fixed_dictionaries(
    {},
    optional={
        "diversity": floats,
        "diversity_method": st.one_of(st.sampled_from(["mmr", "dpp"]), any_text),
        "category_cap": st.integers(-5, 2**31),
        "query_weight": floats,
        "recency_half_life_s": floats,
        "exclude_history": st.booleans(),
        "freshness_weight": floats,
        "freshness_half_life_s": floats,
        "popularity_weight": floats,
        "search_mode": st.one_of(st.sampled_from(["hybrid", "dense", "lexical"]), any_text),
        "lexical_weight": floats,
    },
)
recommend_calls = st.fixed_dictionaries(
    {
        "query": st.one_of(st.none(), any_text),
        "history": histories,
        "k": st.one_of(st.integers(1, 50), st.integers(-10, 5000), st.sampled_from([0, 2**31, -(2**31)])),
    },
    optional={
        "now": floats,
        "exclude_ids": st.lists(item_ids, max_size=50),
        "allow_categories": st.lists(any_text, max_size=5),
        "deny_categories": st.lists(any_text, max_size=5),
        "ranking": knobs,
    },
)
embed_calls = st.fixed_dictionaries(
    {"texts": st.lists(any_text, min_size=0, max_size=8), "tower": st.sampled_from(["query", "item"])}
)
sdk_cases = st.one_of(recommend_calls.map(lambda c: ("recommend", c)), embed_calls.map(lambda c: ("embed", c)))


def run_sdk_case(client: Any, case: tuple[str, dict]) -> str:
    """Run one SDK case; returns the outcome kind ("ok", "InvalidRequest") or raises AssertionError."""
    from aisle import AisleError, InvalidRequest

    method, call = case
    try:
        if method == "recommend":
            call = dict(call)
            ranking = call.pop("ranking", {})
            recs = client.recommend(**call, **ranking, cache=False)
            assert len(recs) <= max(call["k"], 0), (len(recs), call["k"])
            for rec in recs:
                assert isinstance(rec.item_id, str) and rec.item_id and math.isfinite(rec.score), rec
            return "ok"
        vectors = client.embed(call["texts"], tower=call["tower"])
        assert vectors.shape[0] == len(call["texts"]) and np.isfinite(vectors).all()
        return "ok"
    except InvalidRequest:
        return "InvalidRequest"
    except AisleError as exc:
        raise AssertionError(f"{method}: unexpected {type(exc).__name__}: {str(exc)[:300]}") from exc


# --- the raw gRPC target -------------------------------------------------------------------------------


def _array(draw: Any, dtype: str, shape: list[int]) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    if dtype == "BYTES":
        values = draw(
            st.lists(
                st.one_of(garbage_bytes, texts.map(lambda t: t.encode("utf-8", "surrogatepass"))),
                min_size=1,
                max_size=4,
            )
        )
        budget = MAX_BYTES // max(n, 1)
        flat = [values[i % len(values)][:budget] for i in range(n)]
        return np.array(flat + [b""] * 0, dtype=np.object_).reshape(shape)
    if dtype == "BOOL":
        return np.array(draw(st.lists(st.booleans(), min_size=1, max_size=4)) * n, dtype=np.bool_)[:n].reshape(shape)
    if dtype.startswith("FP"):
        values = draw(st.lists(floats, min_size=1, max_size=4))
        with np.errstate(over="ignore", invalid="ignore"):
            return np.resize(np.array(values, dtype=np.float64).astype(NUMPY[dtype]), n).reshape(shape)
    info = np.iinfo(NUMPY[dtype])
    values = draw(
        st.lists(
            st.one_of(
                st.integers(int(info.min), int(info.max)),
                st.integers(-3, 40_000).filter(lambda v: info.min <= v <= info.max),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return np.resize(np.array(values, dtype=NUMPY[dtype]), n).reshape(shape)


@st.composite
def raw_requests(draw: Any, models: dict[str, dict]) -> tuple[str, list[tuple[str, str, np.ndarray]]]:
    """(model, [(input name, datatype, array)]) for one of ``models`` (name → model metadata + max_batch)."""
    name = draw(st.sampled_from(sorted(models)))
    meta = models[name]
    batch = draw(st.one_of(st.integers(1, 4), st.sampled_from([0, 1, 1, 2, meta["max_batch_size"] + 1])))
    tensors = []
    for spec in meta["inputs"]:
        if not draw(st.booleans()) and draw(st.booleans()):  # leave it out a quarter of the time
            continue
        dtype = spec["datatype"] if draw(st.integers(0, 9)) < 7 else draw(st.sampled_from(DTYPES))
        dims = [int(d) for d in spec["shape"]][1:]  # without the batch dimension
        if draw(st.integers(0, 9)) < 8:
            shape = [batch] + [draw(st.one_of(st.integers(0, 8), st.integers(0, 3000))) if d == -1 else d for d in dims]
        else:
            shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
        if int(np.prod(shape)) > MAX_ELEMENTS:
            shape = [batch] + [1] * max(len(shape) - 1, 0)
        tensors.append((spec["name"], dtype, _array(draw, dtype, shape)))
    if draw(st.integers(0, 9)) == 0:
        tensors.append(
            (draw(st.sampled_from(["BOGUS", "QUERY ", "../K", "K"])), "FP32", np.zeros([batch, 1], dtype=np.float32))
        )
    return name, tensors


def model_metadata(triton: Any, names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        meta = triton.get_model_metadata(name, as_json=True)
        config = triton.get_model_config(name, as_json=True)["config"]
        out[name] = {"inputs": meta["inputs"], "max_batch_size": int(config.get("max_batch_size", 0))}
    return out


def run_raw_case(triton: Any, case: tuple[str, list], timeout_s: float = 60.0) -> str:
    """Send one raw request; returns "ok" / "INVALID_ARGUMENT" or raises AssertionError."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    model, tensors = case
    inputs = []
    for name, dtype, array in tensors:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        try:
            tensor.set_data_from_numpy(array)
        except InferenceServerException:
            return "client-refused"  # tritonclient's own check (e.g. a value its dtype cannot hold)
        inputs.append(tensor)
    try:
        triton.infer(model, inputs, client_timeout=timeout_s)
        return "ok"
    except InferenceServerException as exc:
        status = str(exc.status() or "")
        if status.endswith("INVALID_ARGUMENT"):
            return "INVALID_ARGUMENT"
        raise AssertionError(
            f"{model}: {status}: {str(exc.message())[:300]} inputs={[(n, d, a.shape) for n, d, a in tensors]}"
        ) from exc


RAW_MODELS = ["recommend", "embed_query", "embed_item", "tokenizer", "query_encoder", "item_encoder", "rerank"]
