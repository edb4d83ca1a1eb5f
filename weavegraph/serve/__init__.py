"""Serve workflows to web clients: Server-Sent Events over ASGI, for trio servers.

`sse_app` builds the ASGI application; `serve_sse` runs it with hypercorn's trio
worker (the ``serve`` extra), for ``nursery.start``. `queue_sse_app` builds the
one whose runs go through a PostgreSQL run queue (``docs/scale-out.md``).
"""

from __future__ import annotations

from ._queue import QueueSSEApp as QueueSSEApp
from ._queue import queue_sse_app as queue_sse_app
from ._security import Action as Action
from ._security import AuthorizationError as AuthorizationError
from ._security import HTTPError as HTTPError
from ._security import Request as Request
from ._server import serve_sse as serve_sse
from ._server import serve_until_interrupted as serve_until_interrupted
from ._sse import SSEApp as SSEApp
from ._sse import encode_sse as encode_sse
from ._sse import sse_app as sse_app

__all__ = (
    "Action",
    "AuthorizationError",
    "HTTPError",
    "QueueSSEApp",
    "Request",
    "SSEApp",
    "encode_sse",
    "queue_sse_app",
    "serve_sse",
    "serve_until_interrupted",
    "sse_app",
)
