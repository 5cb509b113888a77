"""Errors the Python-backend models turn into gRPC status codes (see ``triton_adapter``)."""

from __future__ import annotations


class InvalidInput(ValueError):
    """A request field is malformed; becomes INVALID_ARGUMENT naming ``field``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class StateUnavailable(RuntimeError):
    """The state store (Redis) cannot be reached or failed; becomes UNAVAILABLE (retrying can help)."""
