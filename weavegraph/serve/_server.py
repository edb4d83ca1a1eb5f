"""`serve_sse`: run the SSE app under hypercorn's trio worker."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio

from .._runtime.app import App
from ..checkpoint.record import Checkpointer
from ._sse import SSEApp, sse_app


async def serve_sse(
    app_or_apps: App | Mapping[str, App] | SSEApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    checkpointer: Checkpointer | None = None,
    shutdown_trigger: Any = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app_or_apps`` over HTTP until cancelled (or ``shutdown_trigger``).

    For ``urls = await nursery.start(serve_sse, app, port=0)``: the started value
    is the list of bound URLs (port 0 picks a free port). ``options`` go to
    `sse_app`. Needs hypercorn (``pip install 'weavegraph[serve]'``).
    """
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError(
            "serving needs hypercorn: install 'weavegraph[serve]'"
        ) from exc
    asgi = (
        app_or_apps
        if isinstance(app_or_apps, SSEApp)
        else sse_app(app_or_apps, checkpointer=checkpointer, **options)
    )
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 5.0
    await serve(
        asgi,  # type: ignore[arg-type]
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )


async def serve_until_interrupted(
    app_or_apps: App | Mapping[str, App] | SSEApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    checkpointer: Checkpointer | None = None,
    announce: Any = None,
    **options: Any,
) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    Open streams end with their runs' cancelled sentinels rather than being cut.
    ``announce(urls)`` is called once the server listens. Returns the number of
    the signal received. For command-line programs (call it from ``trio.run``).
    """
    stop = trio.Event()
    received: list[int] = []

    async def watch(signals: Any) -> None:
        async for signum in signals:
            received.append(signum)
            stop.set()
            return

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            urls = await nursery.start(
                partial(
                    serve_sse,
                    app_or_apps,
                    host=host,
                    port=port,
                    checkpointer=checkpointer,
                    shutdown_trigger=stop.wait,
                    **options,
                )
            )
            if announce is not None:
                announce(urls)
            await stop.wait()
    return received[0] if received else 0
