"""The steps a client plan yields, and ``Run``, which drives a plan step by step.

A *plan* (``_core``) is a generator that yields a ``Step`` — a tritonclient ``Call``, a ``Sleep``
before a retry, a ``Wait`` on another caller's future, a ``Gather`` of sub-plans — and receives
the reply, or has the error thrown in. The sync and asyncio clients differ only in how they
perform a step; everything here is shared by both and does no I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from .policy import Deadline

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``method`` of the tritonclient with these arguments; the reply is what it returns."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` (a retry's backoff, a readiness poll); the reply is ``None``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait for a future another caller resolves, at most until ``deadline``.

    The reply is its result; its exception is thrown into the plan, and running out of time
    throws ``deadline.exceeded(what)``. The future is never cancelled: others may wait on it too.
    """

    future: Any
    deadline: Deadline
    what: str


@dataclass(frozen=True, slots=True)
class Gather:
    """Run independent sub-plans (one after another, or concurrently on a loop); the reply is their results."""

    plans: list[Generator[Any, Any, Any]]


Step: TypeAlias = Call | Sleep | Wait | Gather
Plan: TypeAlias = Generator[Step, Any, T]


class Run(Generic[T]):
    """A plan being driven: the step it waits on, then its result once it has returned."""

    __slots__ = ("_plan", "_result", "done", "step")

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self.step: Step | None = None
        self.done = False
        self._result: T | None = None
        self._resume(plan.send, None)

    @property
    def result(self) -> T:
        assert self.done, "the plan has not finished"
        return self._result  # type: ignore[return-value]  # done: the plan returned a T

    def reply(self, value: object) -> None:
        """Hand the step's reply to the plan, which runs on to its next step or its end."""
        self._resume(self._plan.send, value)

    def fail(self, error: BaseException) -> None:
        """Raise ``error`` where the plan waits; it handles it, or it propagates from here."""
        self._resume(self._plan.throw, error)

    def perform_with(self, perform: Callable[[Step], object]) -> None:
        """Perform the step now (a blocking driver) and resume the plan with what came of it."""
        try:
            value = perform(self.step)  # type: ignore[arg-type]  # called only while a step is pending
        except BaseException as error:  # noqa: BLE001 - the plan decides: retry, fall back, or raise it
            self.fail(error)
        else:
            self.reply(value)

    def _resume(self, resume: Callable[[Any], Step], value: Any) -> None:
        try:
            self.step = resume(value)
        except StopIteration as stop:
            self.done, self._result, self.step = True, stop.value, None


def public(plan: Callable[..., Plan[Any]], method: F) -> F:
    """Dress a driver's ``method`` as the public face of ``plan``: name, docstring and signature.

    The signature (arguments, defaults, annotations) is written once, on the plan; the result
    annotation is the plan's result (an ``async def`` method awaits to it).
    """
    name = plan.__name__.removeprefix("_plan_")
    signature = inspect.signature(plan)
    result = signature.return_annotation
    if isinstance(result, str) and result.startswith("Plan[") and result.endswith("]"):
        result = result[len("Plan[") : -1]
    method.__name__ = method.__qualname__ = name
    method.__doc__ = plan.__doc__
    method.__signature__ = signature.replace(return_annotation=result)  # type: ignore[attr-defined]  # inspect reads it
    method.__annotations__ = {**plan.__annotations__, "return": result}
    method.__wrapped__ = plan  # type: ignore[attr-defined]  # typing.get_type_hints reads the plan's module
    return method
