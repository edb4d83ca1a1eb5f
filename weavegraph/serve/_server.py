"""`serve_sse`: run the SSE app under hypercorn's trio worker."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import trio

from .._core.errors import ConfigError, UsageError
from .._runtime.app import App
from ..checkpoint.record import Checkpointer
from ._sse import SSEApp, sse_app

MAX_HEADER_BYTES = 16 * 1024
"""The most bytes of request line and headers hypercorn buffers (431 beyond)."""


async def serve_sse(
    app_or_apps: App | Mapping[str, App] | SSEApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    checkpointer: Checkpointer | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    shutdown_timeout: float = 5.0,
    keep_alive_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``app_or_apps`` over HTTP until cancelled or ``shutdown_trigger`` returns.

    For ``urls = await nursery.start(serve_sse, app, port=0)``: the started value
    is the list of bound URLs (port 0 picks a free port). ``options`` go to
    `sse_app`. Needs hypercorn (``pip install 'weavegraph[serve]'``).

    When ``shutdown_trigger()`` returns, the shutdown is graceful: new requests
    get 503, live runs are cancelled and every open stream ends with its
    sentinel, then hypercorn closes what is left after ``shutdown_timeout``
    more seconds. Cancelling this function instead stops at once.

    Args:
        app_or_apps: An `App`, a mapping of name to `App`, or an `SSEApp`.
        host: The address to listen on.
        port: The port (0: any free one).
        checkpointer: Passed to `sse_app`.
        shutdown_trigger: An async function whose return starts the shutdown.
        shutdown_timeout: Seconds the streams get to end, then the connections.
        keep_alive_timeout: Seconds an idle connection stays open; it also
            bounds how long a client may take to send its request headers.
        options: `sse_app` options (not with a ready `SSEApp`).

    Raises:
        ConfigError: options given with an `SSEApp`.
        RuntimeError: hypercorn is not installed.
    """
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise UsageError(
            "serving needs hypercorn: install 'weavegraph[serve]'"
        ) from exc
    if isinstance(app_or_apps, SSEApp):
        if options or checkpointer is not None:
            raise ConfigError(
                "serve_sse: pass the options to sse_app when giving an SSEApp,"
                f" not here: {sorted(options) or ['checkpointer']}"
            )
        asgi = app_or_apps
    else:
        asgi = sse_app(app_or_apps, checkpointer=checkpointer, **options)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.include_server_header = False
    # Hypercorn's own bounds on a connection: the idle timer runs until the
    # request's headers are in, which bounds slow headers; the app bounds the
    # body (body_timeout) and the number of requests (max_connections).
    config.keep_alive_timeout = keep_alive_timeout
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.h2_max_header_list_size = MAX_HEADER_BYTES
    config.graceful_timeout = shutdown_timeout
    trigger = None
    if shutdown_trigger is not None:
        user_trigger = shutdown_trigger

        async def trigger() -> None:
            # Hypercorn closes connections first and tells the app (lifespan)
            # only afterwards: end the streams before letting it start.
            await user_trigger()
            with trio.move_on_after(shutdown_timeout):
                await asgi.aclose()

    await serve(
        asgi,  # type: ignore[arg-type]
        config,
        shutdown_trigger=trigger,
        task_status=task_status,
    )


async def serve_until_interrupted(
    app_or_apps: App | Mapping[str, App] | SSEApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    checkpointer: Checkpointer | None = None,
    announce: Callable[[list[str]], object] | None = None,
    **options: Any,
) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    Open streams end with their runs' cancelled sentinels rather than being cut.
    ``announce(urls)`` is called once the server listens. Returns the number of
    the signal received. For command-line programs (call it from ``trio.run``).
    ``options`` go to `serve_sse`.
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
