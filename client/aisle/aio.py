"""``AsyncRecClient``: the asyncio Aisle SDK over ``tritonclient.grpc.aio`` — an awaiting driver of the core.

The same methods, arguments, caches, micro-batching, retries and errors as ``RecClient``, because
both run the same plans (``_core``); this module only performs their steps on the event loop and
runs the micro-batcher on a loop timer. One client belongs to one event loop; the gRPC channel is
opened on first use inside that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import tritonclient.grpc.aio as aioclient

from ._core import ClientCore
from .batching import AsyncBatcher
from .exposure_log import AsyncExposureLog
from .plans import Call, Gather, Plan, Run, Sleep, Step, Wait, public

P = ParamSpec("P")
T = TypeVar("T")


def _awaitable(
    plan: Callable[Concatenate[ClientCore, P], Plan[T]],
) -> Callable[Concatenate[AsyncRecClient, P], Coroutine[Any, Any, T]]:
    """A public coroutine method that runs ``plan`` on the running event loop."""

    async def method(self: AsyncRecClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._drive(plan(self, *args, **kwargs))

    return public(plan, method)


def _loop_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def _wait(future: asyncio.Future[Any], step: Wait) -> Any:
    """Await a shared future for at most the caller's remaining time (never cancelling it for others)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=max(step.deadline.remaining(), 0.0))
    except TimeoutError:
        raise step.deadline.exceeded(step.what) from None


class AsyncRecClient(ClientCore):
    """``RecClient``'s asyncio twin; use ``async with AsyncRecClient(url) as client: ...``.

    Takes the same keyword arguments as ``RecClient`` (``load_balancing`` included: one channel,
    balanced the same way); ``wait_ready_s`` is honoured by ``async with`` (or ``await
    client.connect()``). A closed client raises ``ClientClosed``.
    """

    _new_future = staticmethod(_loop_future)
    _new_batcher = AsyncBatcher
    _new_exposure_log = AsyncExposureLog

    # -- lifecycle -------------------------------------------------------------------------------
    def _open_channel(self) -> None:
        return None  # opened on first use, inside the loop that will run the calls

    def _client(self) -> aioclient.InferenceServerClient:
        if self._triton is None:
            self._check_open()
            self._triton = self._new_channel(aioclient.InferenceServerClient)
        return self._triton

    async def connect(self) -> Self:
        """Open the channel now and, with ``wait_ready_s``, wait until the server is ready."""
        self._check_open()
        self._client()
        if self.wait_ready_s is not None:
            await self.wait_ready(self.wait_ready_s)
        return self

    async def close(self) -> None:
        """Refuse new calls, let the micro-batcher's batches in flight finish, send the exposures
        still waiting (for at most ``timeout_s``), close the channel."""
        if not self._begin_close():
            return
        if self._batcher is not None:
            await self._batcher.close()  # type: ignore[attr-defined]  # the core holds it as the Batcher protocol; this driver made an AsyncBatcher
        if self._exposures is not None:
            await self._exposures.close(self.timeout_s)  # type: ignore[attr-defined]  # this driver made an AsyncExposureLog
        if self._triton is not None:
            await self._triton.close()

    async def __aenter__(self) -> Self:
        try:
            return await self.connect()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- calls -----------------------------------------------------------------------------------
    recommend = _awaitable(ClientCore._plan_recommend)
    recommend_many = _awaitable(ClientCore._plan_recommend_many)
    embed = _awaitable(ClientCore._plan_embed)
    track = _awaitable(ClientCore._plan_track)
    track_many = _awaitable(ClientCore._plan_track_many)
    update_items = _awaitable(ClientCore._plan_update_items)
    set_rules = _awaitable(ClientCore._plan_set_rules)
    list_rules = _awaitable(ClientCore._plan_list_rules)
    rollback_rules = _awaitable(ClientCore._plan_rollback_rules)

    # -- the driver ------------------------------------------------------------------------------
    async def _drive(self, plan: Plan[T]) -> T:
        """Run ``plan`` on the loop: await each step it yields and resume it with the outcome."""
        run = Run(plan)
        while not run.done:
            try:
                reply = await self._perform(run.step)  # type: ignore[arg-type]  # a run that is not done has a step
            except BaseException as error:  # noqa: BLE001 - cancellation too: the plan releases what it holds
                run.fail(error)
            else:
                run.reply(reply)
        return run.result

    # -- health ----------------------------------------------------------------------------------
    is_live = _awaitable(ClientCore._plan_is_live)
    is_ready = _awaitable(ClientCore._plan_is_ready)
    wait_ready = _awaitable(ClientCore._plan_wait_ready)

    async def _perform(self, step: Step) -> Any:
        match step:
            case Call():
                return await getattr(self._client(), step.method)(*step.args, **step.kwargs)
            case Sleep():
                return await asyncio.sleep(step.seconds)
            case Wait():
                return await _wait(step.future, step)
            case Gather():
                return await asyncio.gather(*(self._drive(plan) for plan in step.plans))  # concurrently
        raise TypeError(f"not a step: {step!r}")

    # -- metadata --------------------------------------------------------------------------------
    model_metadata = _awaitable(ClientCore._plan_model_metadata)
    model_config = _awaitable(ClientCore._plan_model_config)
    inference_statistics = _awaitable(ClientCore._plan_inference_statistics)
