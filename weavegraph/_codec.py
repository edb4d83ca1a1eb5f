"""The one cattrs converter of weavegraph, JSON helpers and the value encoding.

Every (un)structuring to JSON — events, state, checkpoints — goes through
`converter`. It uses cattrs' orjson preconf converter when orjson is installed (the
``json`` extra) and the standard-library one otherwise; the JSON they produce is the
same.

Values of the storable domain (``weavegraph._core.values``) are written with
`encode_value` and read back with `decode_value`: plain JSON values stay as they
are, everything else becomes a tagged object ``{"$wg": <tag>, ...}``, so a round
trip gives back the same types and values whatever optional packages are
installed. The state's JSON form (`converter`, `state_to_json`) encodes ``extra``,
error contexts and error details this way.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum
import json
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._core.errors import (
    ErrorDetail,
    ErrorEvent,
    ErrorScope,
    StateError,
    WeavegraphError,
)
from ._core.state import (
    Append,
    History,
    Message,
    NodePartial,
    Replace,
    Send,
    StateSnapshot,
    ToolCall,
    VersionedState,
    Versions,
)
from ._core.values import (
    MAX_DEPTH,
    check_value,
    enum_name,
    init_fields,
    registered_name,
    registered_type,
    resolve_enum,
    text_ok,
    tz_supported,
)
from ._core.values import register_type as register_type

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


# ------------------------------------------------------------ value encoding

TAG = "$wg"
"""The key that marks a tagged value in the JSON form of the storable domain."""

_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1  # orjson's range; larger ints are tagged, for one behaviour
_FLOATS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


class _Unencodable(Exception):
    """Internal: the value at hand is outside the domain."""


def _item_key(item: Any) -> str:
    return dumps(item)


def _named_offset(tz: _dt.tzinfo) -> str | None:
    """The explicit name of a `datetime.timezone`, if it has one."""
    offset = tz.utcoffset(None)
    name = tz.tzname(None)
    if offset is None or name == _dt.timezone(offset).tzname(None):
        return None
    return name


def _encode_datetime(value: _dt.datetime) -> dict[str, Any]:
    tz = value.tzinfo
    out: dict[str, Any]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        # The wall time and the zone, not an offset: exact even in a DST gap.
        out = {TAG: "datetime", "v": value.replace(tzinfo=None).isoformat()}
        out["tz"] = tz.key
    elif tz_supported(tz):
        out = {TAG: "datetime", "v": value.isoformat()}
        name = _named_offset(tz) if tz is not None else None
        if name is not None:
            out["tzname"] = name
    else:
        raise _Unencodable
    if value.fold:
        out["fold"] = 1
    return out


def _encode_time(value: _dt.time) -> dict[str, Any]:
    tz = value.tzinfo
    if not tz_supported(tz, for_time=True):
        raise _Unencodable
    out: dict[str, Any] = {TAG: "time", "v": value.isoformat()}
    name = _named_offset(tz) if tz is not None else None
    if name is not None:
        out["tzname"] = name
    if value.fold:
        out["fold"] = 1
    return out


def _enc(value: Any, depth: int) -> Any:
    cls = type(value)
    if cls is str:
        if value.isascii() or text_ok(value):
            return value
        raise _Unencodable
    if cls is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        return {TAG: "int", "v": str(value)}
    if cls is bool or value is None:
        return value
    if cls is float:
        if value - value == 0.0:  # finite: inf - inf and nan - nan are nan
            return value
        return {TAG: "float", "v": "nan" if value != value else str(value)}
    if depth >= MAX_DEPTH:
        raise _Unencodable
    depth += 1
    if cls is list:
        items: list[Any] = []
        for item in value:
            kind = type(item)
            # Plain leaves inline, without a call: lists of plain data are common.
            if (kind is str and item.isascii()) or kind is bool or item is None:
                items.append(item)
            else:
                items.append(_enc(item, depth))
        return items
    if cls is dict:
        if TAG not in value:
            out: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str or not (key.isascii() or text_ok(key)):
                    break
                kind = type(item)
                if (kind is str and item.isascii()) or kind is bool or item is None:
                    out[key] = item
                else:
                    out[key] = _enc(item, depth)
            else:
                return out
        # Keys that are not strings, or a dict that looks like a tag: pairs.
        pairs = [[_enc(k, depth), _enc(v, depth)] for k, v in value.items()]
        return {TAG: "dict", "v": pairs}
    if cls is tuple:
        return {TAG: "tuple", "v": [_enc(item, depth) for item in value]}
    if cls is set or cls is frozenset:
        items = [_enc(item, depth) for item in value]
        items.sort(key=_item_key)  # the same JSON for the same set, in any process
        return {TAG: "set" if cls is set else "frozenset", "v": items}
    if cls is bytes:
        return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if cls is _dt.datetime:
        return _encode_datetime(value)
    if cls is _dt.date:
        return {TAG: "date", "v": value.isoformat()}
    if cls is _dt.time:
        return _encode_time(value)
    if cls is _dt.timedelta:
        return {
            TAG: "timedelta",
            "v": [value.days, value.seconds, value.microseconds],
        }
    if cls is Decimal:
        if value.is_snan():
            raise _Unencodable
        return {TAG: "decimal", "v": str(value)}
    if cls is uuid.UUID:
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, enum.Enum):
        name = enum_name(cls)
        if name is None:
            raise _Unencodable
        if isinstance(value, enum.Flag):
            if type(value.value) is not int:
                raise _Unencodable
            return {TAG: "enum", "t": name, "flag": value.value}
        return {TAG: "enum", "t": name, "v": value.name}
    type_ = registered_name(cls)
    if type_ is not None:
        fields = {f.name: _enc(getattr(value, f.name), depth) for f in init_fields(cls)}
        return {TAG: "attrs", "t": type_, "v": fields}
    raise _Unencodable


def encode_value(value: Any, path: str = "value") -> Any:
    """The JSON-ready form of a value of the storable domain.

    Plain JSON values (finite floats, ints within 64 bits, dicts with string
    keys and no ``"$wg"`` key) are returned as they are, so existing JSON stays
    readable; everything else becomes a tagged object ``{"$wg": tag, ...}``.
    Sets are written in a stable order, so equal values give equal JSON.

    Args:
        value: The value to encode.
        path: How to name ``value`` in an error message.

    Raises:
        StateError: ``value`` holds something outside the domain; the message
            names its key path (``extra["tools"][2]["when"]``) and why.
    """
    try:
        return _enc(value, 0)
    except (_Unencodable, RecursionError):
        found = check_value(value, path)
        if found is None:  # pragma: no cover - the checker and encoder agree
            raise StateError(f"cannot store {path}: outside the domain") from None
        raise StateError(f"cannot store {found.path}: {found.reason}") from None


def encode_extra(extra: Mapping[str, Any], path: str = "extra") -> dict[str, Any]:
    """`encode_value` for each value of an ``extra`` mapping (keys unchanged).

    Raises:
        StateError: a key is not a string, or a value is outside the domain.
    """
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if type(key) is not str:
            raise StateError(f"cannot store {path}: its key {key!r} is not a string")
        out[key] = encode_value(value, f"{path}[{json.dumps(key, ensure_ascii=False)}]")
    return out


def _malformed(data: Any, why: str) -> StateError:
    text = repr(data)
    if len(text) > 80:
        text = text[:77] + "..."
    return StateError(f"malformed stored value {text}: {why}")


def _payload(data: dict[str, Any], kind: type | tuple[type, ...], *extra: str) -> Any:
    allowed = {TAG, "v", *extra}
    if "v" not in data or not data.keys() <= allowed:
        raise _malformed(data, f"a {data[TAG]!r} value has the keys {sorted(allowed)}")
    payload = data["v"]
    if not isinstance(payload, kind):
        raise _malformed(data, "its 'v' has the wrong type")
    return payload


def _optional_fold(data: dict[str, Any]) -> int:
    fold = data.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int:
        raise _malformed(data, "'fold' must be 0 or 1")
    return fold


def _dec_tagged(data: dict[str, Any]) -> Any:
    tag = data[TAG]
    try:
        if tag == "tuple":
            return tuple(_dec(item) for item in _payload(data, list))
        if tag == "set":
            return {_dec(item) for item in _payload(data, list)}
        if tag == "frozenset":
            return frozenset(_dec(item) for item in _payload(data, list))
        if tag == "dict":
            out = {}
            for pair in _payload(data, list):
                if type(pair) is not list or len(pair) != 2:
                    raise _malformed(data, "a dict is stored as [key, value] pairs")
                out[_dec(pair[0])] = _dec(pair[1])
            return out
        if tag == "bytes":
            return base64.b64decode(_payload(data, str), validate=True)
        if tag == "int":
            return int(_payload(data, str))
        if tag == "float":
            name = _payload(data, str)
            if name not in _FLOATS:
                raise _malformed(data, "a tagged float is 'nan', 'inf' or '-inf'")
            return _FLOATS[name]
        if tag == "datetime":
            return _dec_datetime(data)
        if tag == "date":
            return _dt.date.fromisoformat(_payload(data, str))
        if tag == "time":
            value = _dt.time.fromisoformat(_payload(data, str, "tzname", "fold"))
            value = _with_tzname(value, data)
            return value.replace(fold=_optional_fold(data))
        if tag == "timedelta":
            parts = _payload(data, list)
            if len(parts) != 3 or any(type(p) is not int for p in parts):
                raise _malformed(data, "a timedelta is [days, seconds, microseconds]")
            return _dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])
        if tag == "decimal":
            return Decimal(_payload(data, str))
        if tag == "uuid":
            return uuid.UUID(_payload(data, str))
        if tag == "enum":
            return _dec_enum(data)
        if tag == "attrs":
            return _dec_attrs(data)
    except (ValueError, TypeError, InvalidOperation, binascii.Error) as exc:
        if isinstance(exc, StateError):
            raise
        raise _malformed(data, str(exc) or type(exc).__name__) from exc
    raise _malformed(data, f"unknown tag {tag!r}")


def _with_tzname(value: Any, data: dict[str, Any]) -> Any:
    name = data.get("tzname")
    if name is None:
        return value
    offset = value.utcoffset()
    if type(name) is not str or offset is None:
        raise _malformed(data, "'tzname' needs a string and a UTC offset")
    return value.replace(tzinfo=_dt.timezone(offset, name))


def _dec_datetime(data: dict[str, Any]) -> _dt.datetime:
    text = _payload(data, str, "tz", "tzname", "fold")
    value = _dt.datetime.fromisoformat(text)
    zone = data.get("tz")
    if zone is not None:
        if type(zone) is not str or value.tzinfo is not None or "tzname" in data:
            raise _malformed(data, "'tz' names the zone of a naive wall time")
        try:
            value = value.replace(tzinfo=zoneinfo.ZoneInfo(zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise _malformed(data, f"unknown time zone {zone!r}") from exc
    else:
        value = _with_tzname(value, data)
    result: _dt.datetime = value.replace(fold=_optional_fold(data))
    return result


def _dec_enum(data: dict[str, Any]) -> enum.Enum:
    if not data.keys() <= {TAG, "t", "v", "flag"} or ("v" in data) == ("flag" in data):
        raise _malformed(data, "an enum member is stored as 't' and 'v' (or 'flag')")
    name = data.get("t")
    cls = resolve_enum(name) if type(name) is str else None
    if cls is None:
        raise _malformed(data, f"no importable Enum class {name!r}")
    if "flag" in data:
        if type(data["flag"]) is not int:
            raise _malformed(data, "a Flag member is stored as its int value")
        return cls(data["flag"])
    member = data["v"]
    if type(member) is not str or member not in cls.__members__:
        raise _malformed(data, f"{name} has no member {member!r}")
    return cls[member]


def _dec_attrs(data: dict[str, Any]) -> Any:
    if not data.keys() <= {TAG, "t", "v"}:
        raise _malformed(data, "an attrs object is stored as 't' and 'v'")
    name = data.get("t")
    cls = registered_type(name) if type(name) is str else None
    if cls is None:
        raise _malformed(
            data,
            f"the class {name!r} is not registered; call"
            " weavegraph.register_type(cls) before loading",
        )
    fields = _payload(data, dict, "t")
    aliases = {f.name: f.alias for f in init_fields(cls)}
    kwargs: dict[str, Any] = {}
    for field, stored in fields.items():
        alias = aliases.get(field)
        if alias is None:
            raise _malformed(data, f"{name} has no init field {field!r}")
        kwargs[alias] = _dec(stored)
    return cls(**kwargs)


def _dec(data: Any) -> Any:
    cls = type(data)
    if cls is list:
        return [_dec(item) for item in data]
    if cls is dict:
        if TAG in data:
            return _dec_tagged(data)
        return {key: _dec(item) for key, item in data.items()}
    return data


def decode_value(data: Any) -> Any:
    """The value whose `encode_value` form is ``data`` (parsed JSON).

    Plain JSON decodes to itself, so JSON written before tags existed loads
    unchanged. Enum classes and registered attrs classes are found by module
    and qualified name; their module is imported if it is not loaded yet.

    Raises:
        StateError: ``data`` holds a malformed or unknown tagged value, or names a
            class that cannot be found.
    """
    try:
        return _dec(data)
    except RecursionError:
        raise _malformed(data, "nested too deeply") from None


def encode_target(target: str | Send) -> Any:
    """The JSON-ready form of a frontier target: a name, or a `Send` as
    ``{"send": node, "payload": ...}``."""
    if isinstance(target, str):
        return target
    return {"send": target.node, "payload": encode_value(target.payload)}


def decode_target(data: Any) -> str | Send:
    """The frontier target whose `encode_target` form is ``data``.

    Raises:
        StateError: ``data`` is neither a name nor a sent task.
    """
    if isinstance(data, str):
        return data
    if (
        isinstance(data, dict)
        and set(data) == {"send", "payload"}
        and isinstance(data["send"], str)
    ):
        return Send(data["send"], decode_value(data["payload"]))
    raise StateError(f"a frontier target is a node name or a sent task, got {data!r}")


def partial_to_json(partial: NodePartial) -> dict[str, Any]:
    """A partial's JSON form: only the channels it writes.

    ``messages`` (every field of each message), ``extra`` (the value encoding;
    ``null`` deletes a key), ``errors`` and ``frontier`` (``{"kind": "replace"
    | "append", "targets": [...]}``, each target a name or a sent task as
    `encode_target` writes it). A partial that writes nothing is ``{}``. The
    one form of pending writes and of ``updates`` stream items.

    Raises:
        StateError: its ``extra`` holds a value outside the storable domain.
    """
    out: dict[str, Any] = {}
    if partial.messages is not None:
        out["messages"] = [converter.unstructure(m, Message) for m in partial.messages]
    if partial.extra is not None:
        out["extra"] = encode_extra(partial.extra)
    if partial.errors is not None:
        out["errors"] = [converter.unstructure(e, ErrorEvent) for e in partial.errors]
    if partial.frontier is not None:
        kind = "replace" if isinstance(partial.frontier, Replace) else "append"
        out["frontier"] = {
            "kind": kind,
            "targets": [encode_target(t) for t in partial.frontier.targets],
        }
    return out


def partial_from_json(data: Any) -> NodePartial:
    """The partial whose `partial_to_json` form is ``data``.

    Raises:
        StateError: ``data`` is not such a form.
    """
    if not isinstance(data, Mapping):
        raise StateError(f"a partial's JSON form is an object, got {data!r:.80}")
    unknown = set(data) - {"messages", "extra", "errors", "frontier"}
    if unknown:
        raise StateError(
            f"a partial has messages, extra, errors and frontier; got {sorted(unknown)}"
        )
    try:
        frontier: Replace | Append | None = None
        command = data.get("frontier")
        if command is not None:
            kind = command.get("kind") if isinstance(command, Mapping) else None
            if kind not in ("replace", "append"):
                raise StateError(f"malformed frontier command {command!r:.80}")
            targets = [decode_target(t) for t in command.get("targets", [])]
            frontier = Replace(targets) if kind == "replace" else Append(targets)
        messages = data.get("messages")
        errors = data.get("errors")
        return NodePartial(
            messages=None
            if messages is None
            else [converter.structure(m, Message) for m in messages],
            extra=None if "extra" not in data else decode_extra(data["extra"]),
            errors=None
            if errors is None
            else [converter.structure(e, ErrorEvent) for e in errors],
            frontier=frontier,
        )
    except StateError:
        raise
    except (WeavegraphError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateError(f"malformed partial {data!r:.80}: {exc}") from exc


def decode_extra(data: Any) -> Mapping[str, Any]:
    """The read-only ``extra`` mapping whose `encode_extra` form is ``data``.

    Raises:
        StateError: ``data`` is not an object, or holds a malformed value.
    """
    if type(data) is not dict:
        raise StateError(
            f"extra must be stored as an object, got {type(data).__name__}"
        )
    return MappingProxyType({key: _dec(item) for key, item in data.items()})


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
    out: dict[str, Any] = {
        "message": error.message,
        "details": encode_value(error.details, "details"),
    }
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
        details=decode_value(value.get("details")),
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
    conv.register_unstructure_hook(Message, _unstructure_message)
    conv.register_structure_hook(ToolCall, _structure_tool_call)
    conv.register_unstructure_hook(ToolCall, _unstructure_tool_call)
    conv.register_unstructure_hook(
        ErrorEvent,
        make_dict_unstructure_fn(
            ErrorEvent,
            conv,
            tags=override(unstruct_hook=list),
            context=override(unstruct_hook=_encode_context),
        ),
    )
    conv.register_structure_hook(
        ErrorEvent,
        make_dict_structure_fn(
            ErrorEvent,
            conv,
            _cattrs_forbid_extra_keys=False,
            context=override(struct_hook=_decode_any),
        ),
    )
    # The state's JSON form is exact: ``extra`` goes through the value encoding.
    for state_type in (VersionedState, StateSnapshot):
        conv.register_unstructure_hook(
            state_type,
            make_dict_unstructure_fn(
                state_type, conv, extra=override(unstruct_hook=encode_extra)
            ),
        )
        conv.register_structure_hook(
            state_type,
            make_dict_structure_fn(
                state_type,
                conv,
                _cattrs_forbid_extra_keys=False,
                extra=override(struct_hook=_decode_extra_hook),
            ),
        )
    conv.register_structure_hook(
        Versions,
        make_dict_structure_fn(Versions, conv, _cattrs_forbid_extra_keys=False),
    )
    return conv


def _encode_context(value: Any) -> Any:
    return encode_value(value, "context")


def _decode_any(value: Any, _: Any) -> Any:
    return decode_value(value)


def _decode_extra_hook(value: Any, _: Any) -> Mapping[str, Any]:
    return decode_extra(value)


# A message's JSON form: ``{"role", "content"}`` plus, each only when it is not
# its default, ``"tool_calls": [{"id", "name", "arguments"}]``, ``"tool_call_id"``,
# ``"name"`` and ``"metadata"``; arguments and metadata go through the value
# encoding. So JSON written before these fields existed is still what a plain
# message is written as, and loads unchanged.


def _unstructure_tool_call(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    path = "ToolCall.arguments" if index is None else f"tool_calls[{index}].arguments"
    return {
        "id": call.id,
        "name": call.name,
        "arguments": encode_value(dict(call.arguments), path),
    }


def _unstructure_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": str(message.role), "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            _unstructure_tool_call(call, index)
            for index, call in enumerate(message.tool_calls)
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    metadata = message.metadata
    if metadata:
        out["metadata"] = encode_value(dict(metadata), "metadata")
    return out


def _decoded_object(value: Any, what: str) -> dict[str, Any]:
    decoded = decode_value(value)
    if type(decoded) is not dict:
        raise ValueError(f"{what} must be stored as an object, got {value!r:.80}")
    return decoded


def _structure_tool_call(value: Any, _: Any = None) -> ToolCall:
    if not isinstance(value, Mapping):
        raise ValueError(f"a tool call must be an object, got {value!r:.80}")
    arguments = value.get("arguments")
    return ToolCall(
        value.get("id"),  # type: ignore[arg-type]
        value.get("name"),  # type: ignore[arg-type]
        {} if arguments is None else _decoded_object(arguments, "tool call arguments"),
    )


def _structure_message(value: Any, _: Any) -> Message:
    if not isinstance(value, Mapping):
        raise ValueError(f"a message must be an object, got {value!r}")
    calls = value.get("tool_calls")
    if calls is not None and type(calls) is not list:
        raise ValueError(f"a message's tool_calls must be a list, got {calls!r:.80}")
    metadata = value.get("metadata")
    return Message(
        value.get("role"),
        value.get("content"),  # type: ignore[arg-type]
        tool_calls=[_structure_tool_call(c) for c in calls] if calls else (),
        tool_call_id=value.get("tool_call_id"),
        name=value.get("name"),
        metadata=(
            {} if metadata is None else _decoded_object(metadata, "message metadata")
        ),
    )


converter: cattrs.Converter = _make()
"""The converter used for every JSON form weavegraph writes or reads."""


def state_to_json(state: VersionedState) -> dict[str, Any]:
    """The JSON-ready form of a state (messages, extra, errors, versions)."""
    return converter.unstructure(state, VersionedState)  # type: ignore[no-any-return]
