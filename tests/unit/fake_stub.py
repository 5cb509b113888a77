"""A stand-in for what the Triton Python-backend stub hands a ``model.py`` (``pb_utils``, requests,
tensors), for unit tests of ``execute`` and of ``aisle_server.triton_adapter`` without a server."""

from __future__ import annotations


class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class Error:
    INVALID_ARG, UNAVAILABLE, INTERNAL = "INVALID_ARG", "UNAVAILABLE", "INTERNAL"

    def __init__(self, message, code):
        self.message, self.code = message, code


class Response:
    def __init__(self, output_tensors=None, error=None):
        self.outputs, self.error = output_tensors, error


class BackendUtils:
    Tensor, TritonError, InferenceResponse = Tensor, Error, Response


class InputTensor:
    def __init__(self, name, array):
        self._name, self.array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self.array


class Request(dict):
    """An inference request as the stub hands it over: its input tensors, by name."""

    def inputs(self):
        return [InputTensor(name, array) for name, array in self.items()]
