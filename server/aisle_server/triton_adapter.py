"""The little glue every Python-backend ``model.py`` shares: tensors in, tensors out, errors mapped.

``pb_utils`` (``triton_python_backend_utils``) exists only inside the Triton stub, so it is passed in
rather than imported; everything else here is plain Python. Errors stay with their own request:
``InvalidInput`` → INVALID_ARGUMENT naming the field, ``StateUnavailable`` → UNAVAILABLE (the state
store is down: retry later), any other exception → INTERNAL for that request only (logged with its traceback), and the model keeps serving everyone else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .errors import InvalidInput, StateUnavailable

LOG = logging.getLogger("aisle.triton")

Arrays = Mapping[str, np.ndarray | None]
Handler = Callable[[Arrays], Mapping[str, np.ndarray]]
Parsed = TypeVar("Parsed")
Result = TypeVar("Result")


def model_parameters(args: Mapping[str, str]) -> dict[str, str]:
    """The ``parameters { key: … value { string_value: … } }`` of the model config, as a dict."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def read_inputs(request: Any, names: Sequence[str]) -> dict[str, np.ndarray | None]:
    """``names``' arrays (None where the request lacks one), from one pass over the request's tensors:
    ``pb_utils.get_input_tensor_by_name`` lists and scans every input tensor again per name it is
    asked (Python, in the stub), and ``rerank`` asks for each of its optional inputs by name."""
    given = {tensor.name(): tensor for tensor in request.inputs()}
    return {name: given[name].as_numpy() if name in given else None for name in names}


def error_response(pb_utils: Any, exc: BaseException) -> Any:
    """The response of a request that failed with ``exc`` (see the module docstring for the codes)."""
    if isinstance(exc, InvalidInput):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
    if isinstance(exc, StateUnavailable):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.UNAVAILABLE))
    LOG.exception("request failed")
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(f"internal error: {type(exc).__name__}: {exc}", pb_utils.TritonError.INTERNAL)
    )


def response(pb_utils: Any, outputs: Mapping[str, np.ndarray]) -> Any:
    return pb_utils.InferenceResponse([pb_utils.Tensor(name, array) for name, array in outputs.items()])


def handle_each(pb_utils: Any, requests: Sequence[Any], names: Sequence[str], handler: Handler) -> list[Any]:
    """Run ``handler`` on each request's inputs separately."""
    responses = []
    for request in requests:
        try:
            responses.append(response(pb_utils, handler(read_inputs(request, names))))
        except Exception as exc:  # noqa: BLE001 - any handler failure fails this batch's requests, not the model - one request's failure must not fail the batch
            responses.append(error_response(pb_utils, exc))
    return responses


def handle_batched(
    pb_utils: Any,
    requests: Sequence[Any],
    names: Sequence[str],
    handler: Handler,
    validate: Callable[[Arrays], None] | None = None,
) -> list[Any]:
    """Concatenate requests whose inputs share trailing shapes, run ``handler`` once per group.

    This is what makes dynamic batching pay off for the encoders: one ONNX Runtime call for
    every request the batcher gathered, split back into one response per request. ``validate``
    checks each request alone before it joins a group (raising ``InvalidInput``), so that one
    malformed request is refused by itself instead of failing the whole merged call.
    """
    responses: list[Any] = [None] * len(requests)
    groups: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
    for i, request in enumerate(requests):
        inputs = read_inputs(request, names)
        missing = [name for name, array in inputs.items() if array is None]
        if missing:
            responses[i] = error_response(pb_utils, InvalidInput(missing[0], "required input is missing"))
            continue
        if validate is not None:
            try:
                validate(inputs)
            except Exception as exc:  # noqa: BLE001 - any handler failure fails this batch's requests, not the model - this request only
                responses[i] = error_response(pb_utils, exc)
                continue
        key = tuple(inputs[name].shape[1:] for name in names)
        groups.setdefault(key, []).append((i, inputs))
    for members in groups.values():
        sizes = [inputs[names[0]].shape[0] for _, inputs in members]
        merged = {name: np.concatenate([inputs[name] for _, inputs in members]) for name in names}
        try:
            outputs = handler(merged)
        except Exception as exc:  # noqa: BLE001 - any handler failure fails this batch's requests, not the model
            for i, _ in members:
                responses[i] = error_response(pb_utils, exc)
            continue
        offsets = np.cumsum([0, *sizes])
        for (i, _), start, stop in zip(members, offsets[:-1], offsets[1:]):
            responses[i] = response(pb_utils, {name: array[start:stop] for name, array in outputs.items()})
    return responses


def handle_together(
    pb_utils: Any,
    requests: Sequence[Any],
    names: Sequence[str],
    parse: Callable[[Arrays], Parsed],
    answer: Callable[[Sequence[Parsed]], Sequence[Result]],
    pack: Callable[[Any, Result], Mapping[str, np.ndarray]],
) -> list[Any]:
    """Parse each request alone (``parse(inputs)``), ``answer`` every parsed request in one call (a
    result per request, in order), and ``pack`` each request's result (``pack(request, result)``).

    For the work that gains from seeing a whole dynamic batch at once but whose inputs do not
    concatenate (``rerank``: optional inputs per request, rows of different widths): one bad
    request is refused by itself at ``parse``, and if the joint ``answer`` fails, each request is answered
    alone, so a failure stays with the request that caused it.
    """
    responses: list[Any] = [None] * len(requests)
    parsed: list[tuple[int, Parsed]] = []
    for i, request in enumerate(requests):
        try:
            parsed.append((i, parse(read_inputs(request, names))))
        except Exception as exc:  # noqa: BLE001 - this request only
            responses[i] = error_response(pb_utils, exc)
    results: list[Result | Exception]
    try:
        results = list(answer([item for _, item in parsed]))
    except Exception:  # noqa: BLE001 - find the request that failed: each alone
        results = []
        for _, item in parsed:
            try:
                results.append(answer([item])[0])
            except Exception as exc:  # noqa: BLE001 - this request only
                results.append(exc)
    for (i, _), result in zip(parsed, results):
        try:
            if isinstance(result, Exception):
                raise result
            responses[i] = response(pb_utils, pack(requests[i], result))
        except Exception as exc:  # noqa: BLE001 - this request only
            responses[i] = error_response(pb_utils, exc)
    return responses
