"""Full control: an `AppRunner` publishing to a custom event bus.

Each "request" gets its own bus, with its own sinks and its own stream, so
concurrent clients never see each other's events (per-client isolation). The
stream is subscribed before the run starts, so no event is missed; the run is a
task of a nursery next to the consumer; the consumer filters events by type.
"""

from __future__ import annotations

import io

import trio

from weavegraph import (
    END,
    START,
    App,
    EventBus,
    GraphBuilder,
    Message,
    NodeContext,
    NodeEvent,
    NodePartial,
    StateSnapshot,
    StdOutSink,
    VersionedState,
    open_runner,
)


async def fetch(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Pretend to fetch a page, reporting progress."""
    for percent in (25, 50, 100):
        await trio.sleep(0.01)
        ctx.emit("progress", f"fetched {percent}%", percent=percent)
    ctx.emit_diagnostic("cache", "page stored in the cache")
    return NodePartial(extra={"page": f"<html>{snapshot.messages[-1].content}</html>"})


async def summarise(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Stream a summary, token by token."""
    words = ["The", "page", "is", "short."]
    for word in words[:-1]:
        ctx.emit_llm_chunk("summary", word + " ")
    # The final event is the stream's last piece: the chunks, final included,
    # add up to the whole text.
    ctx.emit_llm_final("summary", words[-1])
    return NodePartial(messages=[Message.assistant(" ".join(words))])


def build() -> App:
    """fetch -> summarise."""
    return (
        GraphBuilder()
        .add_node("fetch", fetch)
        .add_node("summarise", summarise)
        .add_edge(START, "fetch")
        .add_edge("fetch", "summarise")
        .add_edge("summarise", END)
        .compile()
    )


async def handle_request(app: App, client: str, url: str) -> list[str]:
    """One client's run: its own bus, its own log sink, its own stream."""
    log = io.StringIO()
    bus = EventBus(sinks=[StdOutSink(log, show_scope=True)], capacity=256)
    seen: list[str] = []
    async with open_runner(app, event_bus=bus) as runner:
        events = runner.event_stream(stop_at_stream_end=True)  # before the run
        await runner.create_session(client, VersionedState.with_user_message(url))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run_until_complete, client)
            async for event in events:
                if isinstance(event, NodeEvent):  # filter: node progress only
                    seen.append(f"{client}: {event.message}")
                elif event.is_stream_end:
                    seen.append(f"{client}: done ({event.message.split()[1]})")
    print(f"--- log sink of {client} ---")
    print(log.getvalue(), end="")
    return seen


async def main() -> None:
    """Two clients at once; each sees only its own events."""
    app = build()
    results: dict[str, list[str]] = {}

    async def client(name: str, url: str) -> None:
        results[name] = await handle_request(app, name, url)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client, "alice", "https://example.org/a")
        nursery.start_soon(client, "bob", "https://example.org/b")
    for name in ("alice", "bob"):
        print(f"--- stream of {name} ---")
        print("\n".join(results[name]))
        assert all(line.startswith(name) for line in results[name])


if __name__ == "__main__":
    trio.run(main)
