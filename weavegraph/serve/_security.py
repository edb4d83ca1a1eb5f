"""What the SSE app checks before it serves a request, and the headers it adds.

Pure functions over the ASGI scope: the request record an ``authorize`` hook
sees, the Host check against DNS rebinding, the CORS policy, the security
headers. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import attrs

from .._core.errors import AuthorizationError as AuthorizationError
from .._core.errors import ConfigError
from .._core.errors import HTTPError as HTTPError

Scope: TypeAlias = MutableMapping[str, Any]
Headers: TypeAlias = list[tuple[bytes, bytes]]

Action: TypeAlias = Literal["start", "resume", "read", "list"]
"""What a request wants to do, as the ``authorize`` hook is told."""

ACTIONS: tuple[Action, ...] = ("start", "resume", "read", "list")


@attrs.frozen(kw_only=True)
class Request:
    """What an ``authorize`` hook sees of a request.

    Attributes:
        method: ``"GET"``, ``"POST"`` …
        path: The decoded path, such as ``/runs/demo-1/events``.
        headers: Header values by lower-case name (repeated headers joined
            with ``", "``).
        client: The peer's ``(host, port)`` when the server knows it.
        session_id: The session the request is about (``None`` for a new run
            whose id the server picks, and for ``list``).
        graph: The graph a new run uses (``None`` unless starting one).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    client: tuple[str, int] | None
    session_id: str | None = None
    graph: str | None = None

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        """The request of an ASGI HTTP ``scope``."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        client = scope.get("client")
        return cls(
            method=scope["method"],
            path=scope["path"],
            headers=MappingProxyType(headers),
            client=(str(client[0]), int(client[1])) if client else None,
        )


Authorize: TypeAlias = Callable[[Request, str], bool | Awaitable[bool]]
"""``authorize(request, action)``: ``True`` serves the request, ``False`` is a 403."""


# ---------------------------------------------------------------------- hosts


def split_host(value: str) -> str:
    """The host of a ``Host`` header value, lower-case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    host, colon, port = value.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) always means this machine."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_hosts(value: Iterable[str] | None) -> tuple[str, ...] | None:
    """Validate an ``allowed_hosts`` option."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigError(
            f"allowed_hosts is a list of host names, got the string {value!r}"
        )
    hosts = tuple(value)
    for host in hosts:
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"allowed_hosts: not a host name: {host!r}")
    return tuple(h.strip().lower() for h in hosts)


def host_allowed(scope: Scope, allowed: tuple[str, ...] | None) -> str | None:
    """``None`` when the request's ``Host`` is acceptable, else why not.

    With ``allowed`` ``None`` (the default), a connection that arrived on a
    loopback address must name a loopback host (``localhost``, ``127.0.0.1``,
    ``[::1]``): a page on another site whose name was re-pointed to 127.0.0.1
    (DNS rebinding) cannot reach a local server. Other connections are not
    checked then. A list allows exactly its names (any port); ``".example.com"``
    allows the domain and its subdomains; ``"*"`` allows any host.
    """
    if allowed is not None and "*" in allowed:
        return None
    server = scope.get("server")
    if allowed is None and not (server and is_loopback(str(server[0]))):
        return None
    given = None
    for name, value in scope.get("headers", ()):
        if name in (b"host", b":authority"):
            given = value.decode("latin-1")
            break
    if not given:
        return "the request has no Host header"
    host = split_host(given)
    if allowed is None:
        if is_loopback(host):
            return None
        return (
            f"host {given!r} is not allowed: this server listens on a loopback"
            " address and answers only to loopback names (pass allowed_hosts=)"
        )
    for pattern in allowed:
        if host == pattern or (pattern.startswith(".") and host.endswith(pattern)):
            return None
        if pattern.startswith(".") and host == pattern[1:]:
            return None
    return f"host {given!r} is not allowed (allowed hosts: {list(allowed)})"


# ----------------------------------------------------------------------- CORS

CORS_METHODS = b"GET, POST, PATCH"
CORS_HEADERS = ("content-type", "last-event-id", "authorization")
CORS_MAX_AGE = b"600"


def check_origins(value: Iterable[str] | None) -> frozenset[str]:
    """Validate a ``cors_origins`` option (exact origins, or ``"*"``)."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        raise ConfigError(
            f"cors_origins is a list of origins, got the string {value!r}"
        )
    origins = frozenset(value)
    for origin in origins:
        if origin != "*" and (
            not isinstance(origin, str)
            or "://" not in origin
            or origin.endswith("/")
            or origin != origin.strip()
        ):
            raise ConfigError(
                "cors_origins: an origin is scheme://host[:port] with no path,"
                f" like 'https://app.example.com', or '*'; got {origin!r}"
            )
    return origins


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), or ``None``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def cors_headers(scope: Scope, origins: frozenset[str]) -> Headers:
    """The CORS headers for an allowed ``Origin`` (nothing otherwise)."""
    if not origins:
        return []
    origin = header(scope, b"origin")
    if origin is None or ("*" not in origins and origin not in origins):
        return []
    allowed = b"*" if "*" in origins else origin.encode("latin-1")
    return [(b"access-control-allow-origin", allowed), (b"vary", b"Origin")]


def preflight(scope: Scope, origins: frozenset[str]) -> Headers:
    """The answer headers to a CORS preflight; raises when it is refused.

    The ``Access-Control-Allow-Origin`` header is not among them: every answer
    gets it from `cors_headers`.
    """
    if not origins:
        raise HTTPError(
            405, "method OPTIONS not allowed: this server does not enable CORS"
        )
    allow = cors_headers(scope, origins)
    if not allow:
        raise HTTPError(403, "cross-origin requests from this origin are not allowed")
    method = header(scope, b"access-control-request-method")
    if method not in ("GET", "POST", "PATCH"):
        raise HTTPError(403, f"cross-origin {method} requests are not allowed")
    asked = header(scope, b"access-control-request-headers") or ""
    names = [h.strip().lower() for h in asked.split(",") if h.strip()]
    refused = [h for h in names if h not in CORS_HEADERS]
    if refused:
        raise HTTPError(403, f"cross-origin requests may not send {refused}")
    return [
        (b"access-control-allow-methods", CORS_METHODS),
        (b"access-control-allow-headers", ", ".join(CORS_HEADERS).encode()),
        (b"access-control-max-age", CORS_MAX_AGE),
    ]


# -------------------------------------------------------------------- headers

SECURITY_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
"""On every answer."""

API_CSP = b"default-src 'none'; frame-ancestors 'none'"
"""The policy of JSON and event-stream answers: nothing to run or embed."""

PAGE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    b" img-src 'self' data:; base-uri 'none'; form-action 'none';"
    b" frame-ancestors 'none'"
)
"""The viewer page's policy: its own script and style files only, no inline code."""

PAGE_HEADERS: Headers = [
    (b"content-security-policy", PAGE_CSP),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def is_json(scope: Scope) -> bool:
    """Whether the request says its body is JSON (``application/json``)."""
    value = header(scope, b"content-type")
    if value is None:
        return False
    return value.split(";")[0].strip().lower() == "application/json"
