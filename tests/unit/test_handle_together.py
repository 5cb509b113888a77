"""``triton_adapter.handle_together``: a dynamic batch parsed per request, run in one call, packed
per request — and one bad request, at parsing or at running, fails by itself."""

import numpy as np

from aisle_server.errors import InvalidInput
from aisle_server.triton_adapter import handle_together


class FakeTensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class FakeRequest:
    def __init__(self, **arrays):
        self._inputs = [FakeTensor(name, np.asarray(array)) for name, array in arrays.items()]

    def inputs(self):
        return self._inputs


class FakeError:
    INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

    def __init__(self, message, code):
        self.message, self.code = message, code


class FakePbUtils:
    TritonError = FakeError

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.outputs = {t.name: t.array for t in output_tensors or []}
            self.error = error


def parse(inputs):
    values = inputs["X"]
    if values is None:
        raise InvalidInput("X", "required")
    return [float(v) for v in values.ravel()]


def pack(request, result):
    return {"Y": np.asarray(result)}


def test_one_run_for_the_batch_and_a_bad_request_refused_alone():
    calls = []

    def run(groups):
        calls.append(len(groups))
        return [[2 * v for v in group] for group in groups]

    requests = [FakeRequest(X=[1.0, 2.0]), FakeRequest(), FakeRequest(X=[5.0])]
    responses = handle_together(FakePbUtils, requests, ["X"], parse, run, pack)
    assert calls == [2]  # the two valid requests, together
    assert responses[0].outputs["Y"].tolist() == [2.0, 4.0] and responses[2].outputs["Y"].tolist() == [10.0]
    assert responses[1].error.code == "INVALID_ARG" and "X" in responses[1].error.message


def test_a_failing_run_is_retried_per_request_so_the_failure_stays_with_its_request():
    calls = []

    def run(groups):
        calls.append(len(groups))
        if any(v < 0 for group in groups for v in group):
            raise ValueError("negative")
        return [[v + 1 for v in group] for group in groups]

    requests = [FakeRequest(X=[1.0]), FakeRequest(X=[-1.0]), FakeRequest(X=[3.0])]
    responses = handle_together(FakePbUtils, requests, ["X"], parse, run, pack)
    assert calls == [3, 1, 1, 1]
    assert responses[0].outputs["Y"].tolist() == [2.0] and responses[2].outputs["Y"].tolist() == [4.0]
    assert responses[1].error.code == "INTERNAL" and "negative" in responses[1].error.message
