"""Helpers shared by the test modules (import them as `from helpers import ...`)."""

from __future__ import annotations

from collections.abc import Sequence

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
