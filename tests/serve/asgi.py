"""Driving an ASGI app in-process: requests in, messages out, disconnects."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio


class Client:
    """One in-flight request: read what the app sends, or hang up."""

    def __init__(self, to_app: trio.MemorySendChannel[dict[str, Any]]) -> None:
        self.to_app = to_app
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.finished = trio.Event()
        self._arrived = trio.lowlevel.ParkingLot()

    def _feed(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {
                k.decode(): v.decode() for k, v in message.get("headers", [])
            }
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.finished.set()
        self._arrived.unpark_all()

    async def wait_for(self, text: bytes) -> None:
        while text not in self.body:
            await self._arrived.park()

    async def disconnect(self) -> None:
        await self.to_app.send({"type": "http.disconnect"})

    def json(self) -> Any:
        return json.loads(self.body)

    def frames(self) -> list[dict[str, str]]:
        """The SSE frames received so far (comments skipped)."""
        out = []
        for block in self.body.decode().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                fields[key] = value
            if fields:
                out.append(fields)
        return out


@asynccontextmanager
async def request(
    app: Any,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """Start ``method path`` against ``app``; the block can read or disconnect.

    A POST or PATCH says its body is JSON unless ``headers`` say otherwise.
    """
    raw = (
        b""
        if body is None
        else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    path, _, query = path.partition("?")
    given = {k.lower(): v for k, v in (headers or {}).items()}
    if method in ("POST", "PATCH"):
        given.setdefault("content-type", "application/json")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in given.items()],
    }
    to_app, from_client = trio.open_memory_channel[dict[str, Any]](16)
    client = Client(to_app)
    await to_app.send({"type": "http.request", "body": raw, "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        client._feed(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, scope, from_client.receive, send)
        yield client


async def fetch(
    app: Any, method: str, path: str, body: Any = None, **kw: Any
) -> Client:
    """A whole request: wait for the complete response."""
    async with request(app, method, path, body, **kw) as client:
        await client.finished.wait()
    return client
