"""``python -m weavegraph worker``: run a worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import functools
import signal
from collections.abc import Mapping
from typing import TextIO

import trio

from .._runtime.app import App
from .queue import EventRetention
from .worker import Worker, serve_worker


async def run_worker(
    apps: Mapping[str, App],
    dsn: str,
    *,
    concurrency: int,
    lease: float,
    retention: EventRetention | None = None,
    out: TextIO,
) -> int:
    """Serve ``apps`` from the queue at ``dsn``; on SIGTERM or SIGINT hand the
    runs back and return 128 + the signal's number."""
    received = 0
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            worker: Worker = await nursery.start(
                functools.partial(
                    serve_worker,
                    apps,
                    dsn,
                    concurrency=concurrency,
                    lease=lease,
                    retention=retention,
                )
            )
            out.write(
                f"worker {worker.name} serving {', '.join(sorted(apps))}"
                f" (concurrency {concurrency}, lease {lease:g}s; SIGTERM or Ctrl-C"
                " hands its runs back and stops)\n"
            )
            out.flush()
            async for signum in signals:
                received = signum
                worker.stop()
                break
    return 128 + received if received else 0
