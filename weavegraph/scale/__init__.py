"""Scale-out on PostgreSQL: a durable run queue, workers under leases, fencing,
and an event log any server can stream.

* `RunQueue` — submit runs, read their status, wait for them, cancel them, and
  follow their events;
* `serve_worker` — claim queued runs (``FOR UPDATE SKIP LOCKED``) and run them
  under a renewed lease, every step write fenced by the lease's token;
* `EventRetention` — how many and how old events are kept.

See ``docs/scale-out.md``.
"""

from __future__ import annotations

from .queue import EventRetention as EventRetention
from .queue import RunEvents as RunEvents
from .queue import RunQueue as RunQueue
from .queue import RunStatus as RunStatus
from .worker import LeasedCheckpointer as LeasedCheckpointer
from .worker import Worker as Worker
from .worker import serve_worker as serve_worker

__all__ = (
    "EventRetention",
    "LeasedCheckpointer",
    "RunEvents",
    "RunQueue",
    "RunStatus",
    "Worker",
    "serve_worker",
)
