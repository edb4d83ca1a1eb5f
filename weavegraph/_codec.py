"""The one cattrs converter of weavegraph, and JSON encoding helpers.

Every (un)structuring to JSON — events, state, checkpoints — goes through
`converter`. It uses cattrs' orjson preconf converter when orjson is installed (the
``json`` extra) and the standard-library one otherwise; the JSON they produce is the
same.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._core.errors import ErrorDetail, ErrorEvent, ErrorScope
from ._core.state import History, Message, VersionedState, Versions

_orjson: Any
try:
    import orjson

    _orjson = orjson
except ImportError:  # pragma: no cover - without the optional orjson
    _orjson = None


def _make_converter() -> cattrs.Converter:
    if _orjson is not None:
        from cattrs.preconf.orjson import make_converter as make_orjson

        return make_orjson()
    from cattrs.preconf.json import make_converter as make_json  # pragma: no cover

    return make_json()  # pragma: no cover


def dumps(
    obj: Any, *, pretty: bool = False, default: Callable[[Any], Any] | None = None
) -> str:
    """Encode JSON-ready data as text (compact, or two-space indented).

    ``default`` turns objects JSON cannot hold into ones it can.
    """
    if _orjson is not None:
        option = _orjson.OPT_INDENT_2 if pretty else 0
        return str(_orjson.dumps(obj, option=option, default=default).decode())
    if pretty:  # pragma: no cover - only without orjson
        return json.dumps(obj, indent=2, ensure_ascii=False, default=default)
    return json.dumps(  # pragma: no cover - only without orjson
        obj, separators=(",", ":"), ensure_ascii=False, default=default
    )


def dumps_bytes(obj: Any) -> bytes:
    """Encode JSON-ready data as compact UTF-8 bytes."""
    if _orjson is not None:
        return bytes(_orjson.dumps(obj))
    return json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False
    ).encode()  # pragma: no cover


def loads(data: str | bytes) -> Any:
    """Decode JSON text."""
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)  # pragma: no cover


def _iso(value: _dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC).isoformat()


def _parse_dt(value: Any, _: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp string, got {value!r}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    parsed = _dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)


def _unstructure_scope(scope: ErrorScope) -> dict[str, Any]:
    out: dict[str, Any] = {"scope": scope.scope}
    if scope.scope == "node":
        out["kind"] = scope.node
        out["step"] = scope.step
    elif scope.scope == "scheduler":
        out["step"] = scope.step
    elif scope.scope == "runner":
        out["session"] = scope.session
        out["step"] = scope.step
    return out


def _structure_scope(value: Any, _: Any) -> ErrorScope:
    if not isinstance(value, Mapping):
        raise ValueError(f"an error scope must be an object, got {value!r}")
    kind = value.get("scope", "app")
    if kind == "node":
        return ErrorScope.for_node(str(value["kind"]), int(value["step"]))
    if kind == "scheduler":
        return ErrorScope.for_scheduler(int(value["step"]))
    if kind == "runner":
        return ErrorScope.for_runner(str(value["session"]), int(value["step"]))
    if kind == "app":
        return ErrorScope.for_app()
    raise ValueError(f"unknown error scope {kind!r}")


def _unstructure_detail(error: ErrorDetail) -> dict[str, Any]:
    out: dict[str, Any] = {"message": error.message, "details": error.details}
    if error.cause is not None:
        out["cause"] = _unstructure_detail(error.cause)
    return out


def _structure_detail(value: Any, _: Any) -> ErrorDetail:
    if not isinstance(value, Mapping) or not isinstance(value.get("message"), str):
        raise ValueError(f"an error must be an object with a message, got {value!r}")
    cause = value.get("cause")
    return ErrorDetail(
        message=value["message"],
        cause=_structure_detail(cause, None) if cause is not None else None,
        details=value.get("details"),
    )


def _make() -> cattrs.Converter:
    conv = _make_converter()
    conv.register_unstructure_hook(_dt.datetime, _iso)
    conv.register_structure_hook(_dt.datetime, _parse_dt)
    conv.register_unstructure_hook(ErrorScope, _unstructure_scope)
    conv.register_structure_hook(ErrorScope, _structure_scope)
    conv.register_unstructure_hook(ErrorDetail, _unstructure_detail)
    conv.register_structure_hook(ErrorDetail, _structure_detail)
    conv.register_unstructure_hook(
        MappingProxyType, lambda m: conv.unstructure(dict(m))
    )
    conv.register_unstructure_hook_func(
        lambda t: getattr(t, "__origin__", t) is History,
        lambda h: [conv.unstructure(item) for item in h],
    )

    def _history_hook(cl: Any) -> Any:
        (item_type,) = getattr(cl, "__args__", (Any,))

        def structure(value: Any, _: Any) -> History[Any]:
            if not isinstance(value, list | tuple):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            return History(conv.structure(v, item_type) for v in value)

        return structure

    conv.register_structure_hook_factory(
        lambda t: getattr(t, "__origin__", t) is History, _history_hook
    )

    def _structure_mapping(value: Any, _: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected an object, got {type(value).__name__}")
        return MappingProxyType(dict(value))

    conv.register_structure_hook_func(
        lambda t: t == Mapping[str, Any], _structure_mapping
    )
    conv.register_structure_hook(Message, _structure_message)
    conv.register_unstructure_hook(
        Message, lambda m: {"role": str(m.role), "content": m.content}
    )
    conv.register_unstructure_hook(
        ErrorEvent,
        make_dict_unstructure_fn(ErrorEvent, conv, tags=override(unstruct_hook=list)),
    )
    conv.register_structure_hook(
        ErrorEvent,
        make_dict_structure_fn(ErrorEvent, conv, _cattrs_forbid_extra_keys=False),
    )
    conv.register_structure_hook(
        VersionedState,
        make_dict_structure_fn(VersionedState, conv, _cattrs_forbid_extra_keys=False),
    )
    conv.register_structure_hook(
        Versions,
        make_dict_structure_fn(Versions, conv, _cattrs_forbid_extra_keys=False),
    )
    return conv


def _structure_message(value: Any, _: Any) -> Message:
    if not isinstance(value, Mapping):
        raise ValueError(f"a message must be an object, got {value!r}")
    return Message(value.get("role"), value.get("content"))  # type: ignore[arg-type]


converter: cattrs.Converter = _make()
"""The converter used for every JSON form weavegraph writes or reads."""


def state_to_json(state: VersionedState) -> dict[str, Any]:
    """The JSON-ready form of a state (messages, extra, errors, versions)."""
    return converter.unstructure(state, VersionedState)  # type: ignore[no-any-return]
