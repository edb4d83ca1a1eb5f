"""Helpers for tests against a real hypercorn server on 127.0.0.1:0.

`running_server` starts `serve_sse` in a nursery and yields its URL;
`server_process` runs one in a process of its own; `RawClient`
speaks HTTP/1.1 over a plain trio socket (h11 parses the answers), for the
requests a polite client library would never send: bodies that never arrive,
odd headers, hang-ups at chosen moments.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import h11
import httpx2
import trio

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
)
from weavegraph.serve import serve_sse

STREAM_END = "__weavegraph_stream_end__"
SCRIPT = Path(__file__).resolve().parent / "server_process.py"


def ticker(
    count: int = 3,
    delay: float = 0.0,
    size: int = 0,
    config: RuntimeConfig | None = None,
) -> App:
    """START -> tick -> END; ``tick`` emits ``count`` events, ``delay`` apart.

    The app's lifecycle events are off, but a run the server starts has them
    anyway: its log holds ``node.start``, the ticks, ``node.end``,
    ``step.end``, the step's updates (sent only to clients asking for
    ``updates``) and the stream's end.
    """
    config = attrs.evolve(config or RuntimeConfig(), lifecycle_events=False)

    async def tick(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        for i in range(count):
            ctx.emit("tick", f"t{i}" + "x" * size)
            await trio.sleep(delay)
        return NodePartial(messages=[Message.assistant(f"ticked {count}")])

    return (
        GraphBuilder()
        .add_node("tick", tick)
        .add_edge(START, "tick")
        .add_edge("tick", END)
        .compile(config)
    )


def failing(text: str) -> App:
    """START -> fail -> END; ``fail`` raises ``RuntimeError(text)``."""

    async def fail(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise RuntimeError(text)

    return (
        GraphBuilder()
        .add_node("fail", fail)
        .add_edge(START, "fail")
        .add_edge("fail", END)
        .compile()
    )


async def loop_step(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    n = snapshot.extra.get("n", 0) + 1
    return NodePartial(extra={"n": n}, messages=[Message.assistant("x" * 100)])


def looping(steps: int) -> App:
    """START -> loop (``steps`` times, one message each) -> END."""
    return (
        GraphBuilder()
        .add_node("loop", loop_step)
        .add_edge(START, "loop")
        .add_conditional_edge(
            "loop",
            lambda s: END if s.extra.get("n", 0) >= steps else "loop",
            path_map=["loop", END],
        )
        .compile()
    )


async def store_session(store: Any, session_id: str, steps: int) -> None:
    """Store a finished session of ``steps`` supersteps in ``store``."""
    app = looping(steps)
    config = attrs.evolve(
        app.config, checkpointer=store, session_id=session_id, max_steps=steps + 5
    )
    await app.invoke(VersionedState(messages=[Message.user("go")]), config=config)


@asynccontextmanager
async def running_server(app: Any, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` (an App, a mapping of Apps or an SSEApp) for the block."""
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_sse, app, port=0, **options))
        yield urls[0]
        nursery.cancel_scope.cancel()


@attrs.define
class ServerProcess:
    """A `server_process.py` running: its process, URL, and what it printed."""

    process: trio.Process
    url: str
    printed: bytearray

    async def output(self) -> bytes:
        """Everything the process printed, once it has exited."""
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some():
            self.printed += chunk
        return bytes(self.printed)


@asynccontextmanager
async def server_process(*args: str) -> AsyncIterator[ServerProcess]:
    """`server_process.py` with ``args``, once it listens; always ended after."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    printed = bytearray()
    try:
        with trio.fail_after(30):
            while b"\n" not in printed:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the server exited before listening: {printed!r}"
                printed += chunk
        line = printed.split(b"\n")[0].decode()
        assert line.startswith("serving on "), line
        yield ServerProcess(process, line.removeprefix("serving on "), printed)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()


def frames(text: str) -> list[dict[str, str]]:
    """The SSE frames of ``text`` (comments skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        if fields:
            out.append(fields)
    return out


async def read_stream(
    client: httpx2.AsyncClient, method: str, url: str, **kw: Any
) -> tuple[int, list[dict[str, str]]]:
    """A whole SSE answer: its status and frames."""
    async with client.stream(method, url, **kw) as response:
        body = await response.aread()
    return response.status_code, frames(body.decode())


def sentinel(found: list[dict[str, str]]) -> dict[str, Any]:
    """The data of the stream-end frame, which must be the last frame."""
    assert found, "no frame at all"
    data: dict[str, Any] = json.loads(found[-1]["data"])
    assert data["scope"] == STREAM_END, found[-1]
    return data


class Answer:
    """A response read by `RawClient`."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:200]!r}>"


class RawClient:
    """One HTTP/1.1 connection driven by hand."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RawClient]:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            yield cls(stream, parts.netloc)

    async def send_head(
        self, method: str, target: str, headers: dict[str, str] | None = None
    ) -> None:
        """The request line and headers (``Host`` added unless given)."""
        given = {k.lower(): v for k, v in (headers or {}).items()}
        given.setdefault("host", self.host)
        request = h11.Request(method=method, target=target, headers=list(given.items()))
        await self.stream.send_all(self.conn.send(request))

    async def send_body(self, data: bytes, *, end: bool = True) -> None:
        await self.stream.send_all(self.conn.send(h11.Data(data=data)))
        if end:
            await self.stream.send_all(self.conn.send(h11.EndOfMessage()))

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Answer:
        """A whole request, then its whole answer."""
        head = dict(headers or {})
        if body or method == "POST":
            head.setdefault("content-length", str(len(body)))
        await self.send_head(method, target, head)
        if body:
            await self.send_body(body)
        elif "content-length" in {k.lower() for k in head}:
            await self.stream.send_all(self.conn.send(h11.EndOfMessage()))
        return await self.answer()

    async def answer(self) -> Answer:
        """Read one response to its end."""
        status = 0
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.conn.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Answer(status, headers, bytes(body))

    async def closed_by_server(self) -> bool:
        """Whether the server closed the connection (reads until EOF)."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


# ---------------------------------------------------------------- human review


async def draft_node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """Drafts a message to ``extra["to"]`` and asks whether to send it."""
    to = snapshot.extra.get("to", "the team")
    text = snapshot.extra.get("draft") or f"Dear {to}, the report is ready."
    ctx.emit("draft", f"drafted for {to}")
    answer = await ctx.interrupt({"draft": text, "question": "send it?"})
    return NodePartial(extra={"draft": text, "verdict": answer})


async def send_node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    verdict = snapshot.extra.get("verdict")
    if verdict == "yes":
        text = f"sent: {snapshot.extra['draft']}"
    else:
        text = f"not sent ({verdict!r})"
    ctx.emit("send", text)
    return NodePartial(messages=[Message.assistant(text)])


def reviewer(config: RuntimeConfig | None = None) -> App:
    """START -> draft (interrupts for approval) -> send -> END."""
    return (
        GraphBuilder()
        .add_node("draft", draft_node)
        .add_node("send", send_node)
        .add_edge(START, "draft")
        .add_edge("draft", "send")
        .add_edge("send", END)
        .compile(config)
    )


def asker(name: str) -> Any:
    async def ask(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        answer = await ctx.interrupt(f"{name}?")
        return NodePartial(extra={name: answer})

    return ask


def two_reviewers() -> App:
    """START -> (legal, tone) in parallel, each interrupting -> END."""
    return (
        GraphBuilder()
        .add_node("legal", asker("legal"))
        .add_node("tone", asker("tone"))
        .add_edge(START, "legal")
        .add_edge(START, "tone")
        .add_edge("legal", END)
        .add_edge("tone", END)
        .compile()
    )
