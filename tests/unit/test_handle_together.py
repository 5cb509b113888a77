"""``triton_adapter.handle_together``: a dynamic batch parsed per request, run in one call, packed
per request — and one bad request, at parsing or at running, fails by itself."""

import numpy as np
from tests.unit.fake_stub import BackendUtils, Request

from aisle_server.errors import InvalidInput
from aisle_server.triton_adapter import handle_together


def parse(inputs):
    values = inputs["X"]
    if values is None:
        raise InvalidInput("X", "required")
    return [float(v) for v in values.ravel()]


def pack(request, result):
    return {"Y": np.asarray(result)}


def outputs(response):
    return {tensor.name: tensor.array.tolist() for tensor in response.outputs}


def test_one_run_for_the_batch_and_a_bad_request_refused_alone():
    calls = []

    def answer(groups):
        calls.append(len(groups))
        return [[2 * v for v in group] for group in groups]

    requests = [Request(X=np.array([1.0, 2.0])), Request(), Request(X=np.array([5.0]))]
    responses = handle_together(BackendUtils, requests, ["X"], parse, answer, pack)
    assert calls == [2]  # the two valid requests, together
    assert outputs(responses[0]) == {"Y": [2.0, 4.0]} and outputs(responses[2]) == {"Y": [10.0]}
    assert responses[1].error.code == "INVALID_ARG" and "X" in responses[1].error.message


def test_a_failing_run_is_retried_per_request_so_the_failure_stays_with_its_request():
    calls = []

    def answer(groups):
        calls.append(len(groups))
        if any(v < 0 for group in groups for v in group):
            raise ValueError("negative")
        return [[v + 1 for v in group] for group in groups]

    requests = [Request(X=np.array([1.0])), Request(X=np.array([-1.0])), Request(X=np.array([3.0]))]
    responses = handle_together(BackendUtils, requests, ["X"], parse, answer, pack)
    assert calls == [3, 1, 1, 1]
    assert outputs(responses[0]) == {"Y": [2.0]} and outputs(responses[2]) == {"Y": [4.0]}
    assert responses[1].error.code == "INTERNAL" and "negative" in responses[1].error.message
