"""A nursery whose lone failure surfaces as itself, not as a one-item group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._core.errors import NotInTrioError


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only leaf of ``group`` (marked to hide the group), or ``None``."""
    if len(group.exceptions) != 1:
        return None
    (only,) = group.exceptions
    if isinstance(only, BaseExceptionGroup):
        return None
    only.__suppress_context__ = True
    return only


@asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery()`` for library-owned tasks hidden behind an API.

    Trio wraps even a single failure in an ``ExceptionGroup``. When exactly one
    exception escapes (typically the caller's own, raised inside the block), it is
    re-raised as is, so users of ``async with`` APIs see the error they raised.
    Several concurrent failures still arrive as a group.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        only = single_exception(group)
        if only is None:
            raise
        raise only from only.__cause__


def require_trio(api: str) -> None:
    """Raise `NotInTrioError` unless called from inside a trio run.

    An asyncio host (a default Jupyter kernel) that awaits a weavegraph
    coroutine would otherwise fail deep inside trio with "Task got bad yield".
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise NotInTrioError(
            f"{api} runs on trio, but it was awaited outside a trio run (an asyncio"
            " loop, such as a default notebook kernel?). In a notebook use"
            " `await weavegraph.notebook.invoke(app, state)` (or"
            " `weavegraph.notebook.stream`), or switch IPython to trio with"
            " `%autoawait trio`; in a script call `trio.run(...)` or"
            " `app.invoke_sync(state)`."
        ) from None
