"""Run weavegraph from asyncio hosts (Jupyter, IPython, asyncio programs).

A notebook's kernel already runs an asyncio loop, and trio cannot start a second
loop in the same thread. This module runs **one long-lived trio guest run** on
the host's asyncio loop (`trio.lowlevel.start_guest_run`) — a portal — and hands
it jobs. From asyncio code::

    from weavegraph import notebook

    final = await notebook.invoke(app, state)
    async for event in notebook.stream(app, state):
        print(event)

The first call starts the portal on the running loop; `stop` ends it. Many cells
can run and stream concurrently. Cancellation passes both ways: cancelling the
asyncio task (interrupting a cell) cancels the trio run, and a run cancelled on
the trio side ends the asyncio stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import trio

from ._core.errors import PortalClosedError, RunCancelledError
from ._core.state import VersionedState
from ._runtime.app import App
from ._runtime.config import RuntimeConfig
from .events.types import Event

__all__ = ("Portal", "PortalClosedError", "invoke", "portal", "stop", "stream")

T = TypeVar("T")

_QUEUE_SIZE = 256


class Portal:
    """A trio guest run on an asyncio loop that runs weavegraph jobs.

    Get the shared one with `portal`; it is created on the running loop at the
    first use.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stopped: trio.Event | None = None
        self._ready: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._closed = False

    # ----------------------------------------------------------------- lifetime

    def _start(self) -> None:
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
            done_callback=self._finished,
            host_uses_signal_set_wakeup_fd=True,
        )

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stopped = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if not self._ready.done():
                self._ready.set_result(None)
            await self._stopped.wait()
            nursery.cancel_scope.cancel("notebook portal stopped")

    def _finished(self, outcome: Any) -> None:
        self._closed = True
        if not self._ready.done():
            self._ready.set_exception(PortalClosedError("the trio guest run failed"))
        if not self._done.done():
            self._done.set_result(None)
        try:
            outcome.unwrap()
        except BaseException as exc:  # report, the host loop keeps going
            self.loop.call_exception_handler(
                {
                    "message": "weavegraph notebook portal ended with an error",
                    "exception": exc,
                }
            )

    async def ready(self) -> None:
        """Wait until the guest run accepts jobs."""
        await asyncio.shield(self._ready)

    async def stop(self) -> None:
        """Cancel every job and end the guest run. Idempotent."""
        if self._closed:
            return
        await self.ready()
        stopped = self._stopped
        assert stopped is not None
        self._call_soon(stopped.set)
        await asyncio.shield(self._done)

    def _call_soon(self, fn: Callable[[], Any]) -> None:
        if self._closed or self._token is None:
            raise PortalClosedError("the notebook portal is not running")
        self._token.run_sync_soon(fn)

    # --------------------------------------------------------------------- jobs

    async def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``await job()`` as a trio task; return or raise its outcome.

        Cancelling the awaiting asyncio task cancels the trio task.
        """
        await self.ready()
        future: asyncio.Future[T] = self.loop.create_future()
        scope = trio.CancelScope()

        async def task() -> None:
            try:
                with scope:
                    result = await job()
                    if not future.done():
                        future.set_result(result)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            finally:
                # Cancelled on the trio side (or stopped): tell the asyncio side.
                if not future.done():
                    future.set_exception(
                        RunCancelledError("the run was cancelled in the trio guest run")
                    )

        assert self._nursery is not None
        nursery = self._nursery
        self._call_soon(lambda: nursery.start_soon(task))
        try:
            return await future
        except asyncio.CancelledError:
            if not self._closed:
                self._call_soon(scope.cancel)
            raise

    async def invoke(
        self, app: App, state: VersionedState, *, config: RuntimeConfig | None = None
    ) -> VersionedState:
        """``await app.invoke(state)`` in the guest run."""
        return await self.run(lambda: app.invoke(state, config=config))

    async def stream(
        self, app: App, state: VersionedState, *, config: RuntimeConfig | None = None
    ) -> AsyncIterator[Event]:
        """Yield the run's events (ending with its sentinel) to asyncio code.

        The run's failure is raised after the sentinel. Leaving the loop early
        (``break``, or the cell being interrupted) cancels the run.
        """
        await self.ready()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        room = [trio.Event()]
        scope = trio.CancelScope()

        async def pump() -> None:
            ended = False
            try:
                with scope:
                    async with app.invoke_streaming(state, config=config) as (
                        run,
                        events,
                    ):
                        async for event in events:
                            queue.put_nowait(("event", event))
                            while queue.qsize() >= _QUEUE_SIZE:
                                room[0] = trio.Event()
                                await room[0].wait()
                        await run.join()
                    queue.put_nowait(("end", None))
                    ended = True
            except Exception as exc:
                queue.put_nowait(("error", exc))
                ended = True
            finally:
                if not ended:
                    queue.put_nowait(
                        ("error", RunCancelledError("the run was cancelled"))
                    )

        assert self._nursery is not None
        nursery = self._nursery
        self._call_soon(lambda: nursery.start_soon(pump))
        try:
            while True:
                kind, value = await queue.get()
                if not self._closed:
                    self._call_soon(room[0].set)
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            if not self._closed:
                self._call_soon(scope.cancel)


_portals: dict[asyncio.AbstractEventLoop, Portal] = {}


async def portal() -> Portal:
    """The portal of the running asyncio loop, started on first use."""
    loop = asyncio.get_running_loop()
    current = _portals.get(loop)
    if current is None or current._closed:
        current = Portal(loop)
        _portals[loop] = current
        current._start()
    await current.ready()
    return current


async def invoke(
    app: App, state: VersionedState, *, config: RuntimeConfig | None = None
) -> VersionedState:
    """Run ``app`` to completion from asyncio code; return the final state."""
    return await (await portal()).invoke(app, state, config=config)


async def stream(
    app: App, state: VersionedState, *, config: RuntimeConfig | None = None
) -> AsyncIterator[Event]:
    """``async for event in stream(app, state)`` from asyncio code."""
    current = await portal()
    async for event in current.stream(app, state, config=config):
        yield event


async def stop() -> None:
    """Stop the running loop's portal (a later call starts a new one)."""
    current = _portals.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await current.stop()
