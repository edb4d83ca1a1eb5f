"""Helpers shared by the test modules (import them as `from helpers import ...`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from weavegraph import (
    END,
    START,
    App,
    Event,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
)


def appender(text: str):
    """A node that appends one assistant message ``text``."""

    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(messages=[Message.assistant(text)])

    node.__name__ = node.__qualname__ = f"append_{text}"
    return node


def tracer(name: str):
    """A node appending ``ran:<name>:step:<step>``, like the reference's TestNode."""

    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(messages=[Message.assistant(f"ran:{name}:step:{ctx.step}")])

    return node


async def noop(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """A node that changes nothing."""


def chain_app(names: Sequence[str], config: RuntimeConfig | None = None) -> App:
    """START -> names[0] -> ... -> END, every node an `appender` of its name."""
    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, appender(name))
    previous = START
    for name in names:
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(config)


def hi() -> VersionedState:
    """One user message, every version 1."""
    return VersionedState.with_user_message("hi")


async def drain(channel: trio.abc.ReceiveChannel[Event]) -> list[Event]:
    """Every event left in ``channel``."""
    return [event async for event in channel]


STORES = ["memory", "sqlite", "postgres"]
"""The three checkpointers every persistence behaviour is tested on."""


@asynccontextmanager
async def open_store(kind: str, tmp_path: Path, request: Any) -> AsyncIterator[Any]:
    """A fresh store of ``kind`` (``"none"`` gives ``None``), closed afterwards.

    ``request`` is pytest's fixture request: PostgreSQL gets a schema of its own.
    """
    from weavegraph import (
        InMemoryCheckpointer,
        PostgresCheckpointer,
        SQLiteCheckpointer,
    )

    if kind == "none":
        yield None
    elif kind == "memory":
        yield InMemoryCheckpointer()
    elif kind == "sqlite":
        async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
            yield store
    else:
        async with PostgresCheckpointer(
            request.getfixturevalue("postgres_dsn")
        ) as store:
            yield store
