"""The SDK's exception hierarchy, mapped from gRPC status codes.

Callers catch ``AisleError`` (or one of its kinds); a raw tritonclient or grpc exception never
reaches them. ``retryable`` says whether trying again later can help.
"""

from __future__ import annotations

import grpc


class AisleError(Exception):
    """Base class of every error the SDK raises."""

    retryable = False

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidRequest(AisleError, ValueError):
    """The request is malformed (checked locally before any network call, or by the server)."""


class ModelNotReady(AisleError):
    """The server is up but the model is not loaded (yet)."""

    retryable = True


class ServerUnavailable(AisleError):
    """The server cannot be reached (down, restarting, network)."""

    retryable = True


class StateUnavailable(ServerUnavailable):
    """The server is up but its state store (Redis) is not: ``track`` stored nothing. Retryable:
    an event keeps its ``event_id`` across retries, so a retry never stores it twice."""


class DeadlineExceeded(AisleError):
    """The call's deadline passed before the answer came."""


class Overloaded(AisleError):
    """The server shed the request (queue full or queue timeout)."""

    retryable = True


class PermissionDenied(AisleError):
    """The server refused the call: a restricted protocol's header is missing or wrong, or TLS auth failed."""


class ServerError(AisleError):
    """The server failed while handling the request (a bug or a broken model)."""


class ClientClosed(AisleError, RuntimeError):
    """The client was closed (``close()``, or the end of its ``with``/``async with`` block).

    Calling a closed client is a programming error, not a server state, so it is never retryable;
    like httpx's and aiohttp's closed clients it is also a ``RuntimeError``. ``RecClient`` and
    ``AsyncRecClient`` raise it with the same message.
    """


_BY_CODE: dict[grpc.StatusCode, type[AisleError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: ModelNotReady,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    # The SDK never cancels a call it still waits for: CANCELLED comes from the server's side (a
    # tritonserver draining on SIGTERM drops calls it has not started), so another try may succeed.
    grpc.StatusCode.CANCELLED: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
}


#: How Triton 2.51 words load shedding by a model's queue policy (both with status UNAVAILABLE):
#: ``max_queue_size`` reached, and ``default_timeout_microseconds`` spent waiting (timeout_action REJECT).
_SHED = ("exceeds maximum queue size", "request timeout expired")
#: How ``track`` words a state store it cannot reach (``aisle_server.state``), with status UNAVAILABLE.
_STATE_DOWN = "state store"


def _status_code(status: object) -> grpc.StatusCode | None:
    """tritonclient reports the status as a ``grpc.StatusCode`` or as its string form."""
    if isinstance(status, grpc.StatusCode):
        return status
    for code in grpc.StatusCode:
        if status == str(code) or status == code.name:
            return code
    return None


def from_triton(exc: Exception) -> AisleError:
    """Translate a tritonclient ``InferenceServerException`` into the SDK's hierarchy."""
    status = exc.status() if hasattr(exc, "status") else None
    message = exc.message() if hasattr(exc, "message") else str(exc)
    code = _status_code(status)
    if code is None and "Deadline Exceeded" in str(message):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    if code == grpc.StatusCode.UNAVAILABLE and any(shed in str(message).lower() for shed in _SHED):
        return Overloaded(str(message), code)
    if code == grpc.StatusCode.UNAVAILABLE and _STATE_DOWN in str(message):
        return StateUnavailable(str(message), code)
    if "protocol is restricted" in str(message):  # Triton's --grpc-restricted-protocol: a missing/wrong header
        return PermissionDenied(str(message), code)
    return _BY_CODE.get(code, ServerError)(str(message), code) if code else ServerError(str(message))
