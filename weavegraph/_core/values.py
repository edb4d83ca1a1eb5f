"""The storable value domain: what ``extra`` (and error contexts) may hold.

Every value of the domain survives a checkpoint (save, then load) exactly: same
type, same value. The domain is

* JSON values: ``str``, ``int``, ``float`` (NaN and the infinities included),
  ``bool``, ``None``, ``list``, ``dict``;
* ``tuple``, ``set``, ``frozenset``, and ``dict`` with keys that are not strings
  (any hashable value of the domain);
* ``bytes``; ``datetime.datetime``, ``date``, ``time`` and ``timedelta`` (naive or
  with a `datetime.timezone` or a `zoneinfo.ZoneInfo` zone, kept exactly);
  ``decimal.Decimal``; ``uuid.UUID``;
* members of `enum.Enum` classes that can be imported by module and qualified
  name (nothing to register);
* instances of attrs classes registered with `register_type`, whose ``__init__``
  fields hold values of the domain.

Types are matched exactly: a subclass of ``str`` or ``float`` (``numpy.float64``)
is outside the domain, because it would come back as its base type. Values
nest at most `MAX_DEPTH` containers deep.

This module only decides membership (`check_value`, `check_extra`) and keeps the
registry of attrs types; ``weavegraph._codec`` turns values into JSON and back.
It is pure: no I/O, no trio, no cattrs.
"""

from __future__ import annotations

import datetime as _dt
import enum
import importlib
import json
import sys
import uuid
import weakref
import zoneinfo
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from .errors import StateError

T = TypeVar("T")

MAX_DEPTH = 100
"""How many containers (lists, dicts, tuples, sets, attrs objects) may nest."""

# ------------------------------------------------------------ registered types

_by_name: dict[str, type] = {}
_names: dict[type, str] = {}


def type_name(cls: type) -> str:
    """The stored name of a class: ``"module:qualified.name"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_type(cls: type[T]) -> type[T]:
    """Allow instances of the attrs class ``cls`` in the state.

    Instances are stored as their ``__init__`` fields (by name, each a value of
    the domain) under the class's module and qualified name, and rebuilt by
    calling ``cls(**fields)`` when loaded, so validators and converters run
    again. Fields with ``init=False`` are not stored: ``__attrs_post_init__``
    recomputes them. Registering the same class again does nothing; usable as a
    class decorator.

    Args:
        cls: An attrs class (``@attrs.define``, ``@attrs.frozen`` …).

    Returns:
        ``cls`` itself.

    Raises:
        StateError: ``cls`` is not an attrs class, or another class is already
            registered under the same module and qualified name.
    """
    is_attrs = isinstance(cls, type) and attrs.has(cls)
    if not is_attrs:
        raise StateError(
            f"register_type takes an attrs class (decorated with @attrs.define or"
            f" @attrs.frozen), got {cls!r}"
        )
    name = type_name(cls)
    existing = _by_name.get(name)
    if existing is not None and existing is not cls:
        raise StateError(
            f"another class is already registered as {name!r}; stored values name"
            " their class by module and qualified name, so these must be unique"
        )
    _by_name[name] = cls
    _names[cls] = name
    return cls


def registered_name(cls: type) -> str | None:
    """The name ``cls`` is registered under, or ``None``."""
    return _names.get(cls)


def registered_type(name: str) -> type | None:
    """The class registered as ``name``, importing its module once if needed.

    Importing the module runs its ``register_type`` calls, so a fresh process can
    load values of classes it has not touched yet.
    """
    cls = _by_name.get(name)
    if cls is None:
        module, _, _ = name.partition(":")
        if module and module not in sys.modules:
            try:
                importlib.import_module(module)
            except ImportError:
                return None
        cls = _by_name.get(name)
    return cls


def init_fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    """The fields of the registered attrs class ``cls`` that ``__init__`` takes."""
    return tuple(f for f in attrs.fields(cls) if f.init)


# ------------------------------------------------------------------------ enums

_enum_names: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()


def _lookup(module_name: str, qualname: str) -> object:
    obj: object = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj


def enum_name(cls: type[enum.Enum]) -> str | None:
    """``"module:qualname"`` of an importable enum class, else ``None``."""
    name = _enum_names.get(cls)
    if name is None:
        if _lookup(cls.__module__, cls.__qualname__) is not cls:
            return None
        name = type_name(cls)
        _enum_names[cls] = name
    return name


def resolve_enum(name: str) -> type[enum.Enum] | None:
    """The enum class stored as ``name``, importing its module if needed."""
    module, _, qualname = name.partition(":")
    if not module or not qualname:
        return None
    if module not in sys.modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    cls = _lookup(module, qualname)
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls
    return None


# ----------------------------------------------------------------------- checks


@attrs.frozen
class Unstorable:
    """Where a value leaves the domain, and why.

    Attributes:
        path: The key path of the offending value, such as
            ``extra["tools"][2]["when"]``.
        reason: What is wrong with it, with a hint.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class _Bad(Exception):
    """Internal: raised at the offending value, collects the path on the way up."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str] = []


def text_ok(text: str) -> bool:
    """Whether ``text`` is valid Unicode text (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def tz_supported(tz: _dt.tzinfo | None, *, for_time: bool = False) -> bool:
    """Whether a value with this ``tzinfo`` can be stored exactly."""
    if tz is None or type(tz) is _dt.timezone:
        return True
    return not for_time and type(tz) is zoneinfo.ZoneInfo and tz.key is not None


_SIMPLE: frozenset[type] = frozenset(
    {int, bool, float, type(None), bytes, _dt.date, _dt.timedelta, uuid.UUID}
)
"""Types whose every value is storable (``str`` needs a look at its text)."""


def _key_segment(key: object) -> str:
    if type(key) is str:
        return f"[{json.dumps(key, ensure_ascii=False)}]"
    return f"[{key!r}]"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: object) -> str:
    cls = type(value)
    name = cls.__qualname__ if cls.__module__ == "builtins" else type_name(cls)
    name = name.replace(":", ".")
    hint = (
        "store JSON values, tuples, sets, bytes, datetimes, Decimals, UUIDs, enum"
        " members or registered attrs objects (see the storable value domain in"
        " docs/concepts.md)"
    )
    if attrs.has(cls):
        hint = f"register the class with weavegraph.register_type({cls.__qualname__})"
    elif isinstance(value, enum.Enum):
        hint = "define the Enum class at module level so that it can be imported"
    else:
        for base, convert in (
            (str, "str(x)"),
            (int, "int(x)"),
            (float, "float(x)"),
            (bytes, "bytes(x)"),
            (list, "list(x)"),
            (tuple, "tuple(x)"),
            (dict, "dict(x)"),
            (set, "set(x)"),
            (frozenset, "frozenset(x)"),
        ):
            if isinstance(value, base):
                hint = (
                    f"it is a subclass of {base.__name__}, which would come back as"
                    f" a plain {base.__name__}; convert it with {convert}"
                )
                break
        else:
            if isinstance(value, Mapping):
                hint = "convert it with dict(x)"
            elif isinstance(value, Sequence | AbstractSet):
                hint = "convert it with list(x), tuple(x) or set(x)"
    return f"{_short(value)} is a {name}, outside the storable value domain; {hint}"


def _check(value: Any, depth: int) -> None:
    cls = type(value)
    if cls is str:
        if not text_ok(value):
            raise _Bad(
                f"{_short(value)} holds a lone surrogate, which is not valid"
                " Unicode text and cannot be stored"
            )
        return
    if cls in _SIMPLE:
        return
    if depth >= MAX_DEPTH:
        raise _Bad(f"values may nest at most {MAX_DEPTH} containers deep")
    # Leaves are checked inline (no call): containers of plain data are common
    # and large, and the barrier checks every write.
    if cls is list or cls is tuple:
        for index, item in enumerate(value):
            kind = type(item)
            if kind in _SIMPLE or (kind is str and item.isascii()):
                continue
            try:
                _check(item, depth + 1)
            except _Bad as bad:
                bad.segments.append(f"[{index}]")
                raise
        return
    if cls is dict:
        for key, item in value.items():
            if type(key) is str:
                if not key.isascii() and not text_ok(key):
                    raise _Bad(f"the key {key!r} holds a lone surrogate")
            else:
                try:
                    _check(key, depth + 1)
                except _Bad as bad:
                    bad.reason = f"the key {_short(key)}: {bad.reason}"
                    raise
            kind = type(item)
            if kind in _SIMPLE or (kind is str and item.isascii()):
                continue
            try:
                _check(item, depth + 1)
            except _Bad as bad:
                bad.segments.append(_key_segment(key))
                raise
        return
    if cls is set or cls is frozenset:
        for item in value:
            try:
                _check(item, depth + 1)
            except _Bad as bad:
                bad.segments.append("{*}")
                raise
        return
    if cls is _dt.datetime:
        if not tz_supported(value.tzinfo):
            raise _Bad(_bad_tz(value))
        return
    if cls is _dt.time:
        if not tz_supported(value.tzinfo, for_time=True):
            raise _Bad(_bad_tz(value))
        return
    if cls is Decimal:
        if value.is_snan():
            raise _Bad(
                "a signalling NaN Decimal cannot even be compared; store"
                " Decimal('NaN') instead"
            )
        return
    if isinstance(value, enum.Enum):
        if enum_name(cls) is None:
            raise _Bad(_describe(value))
        if isinstance(value, enum.Flag) and type(value.value) is not int:
            raise _Bad(f"{_short(value)}: only Flag classes with int values are stored")
        return
    if cls in _names:
        for field in init_fields(cls):
            try:
                _check(getattr(value, field.name), depth + 1)
            except _Bad as bad:
                bad.segments.append(f".{field.name}")
                raise
        return
    raise _Bad(_describe(value))


def _bad_tz(value: _dt.datetime | _dt.time) -> str:
    zone = type(value.tzinfo)
    allowed = (
        "datetime.timezone" if isinstance(value, _dt.time) else
        "datetime.timezone or zoneinfo.ZoneInfo (with a key)"
    )  # fmt: skip
    return (
        f"{_short(value)} has a tzinfo of type {zone.__module__}.{zone.__qualname__};"
        f" only {allowed} zones are stored exactly"
    )


def check_value(value: object, path: str = "value") -> Unstorable | None:
    """The first place where ``value`` leaves the storable domain, or ``None``.

    Args:
        value: Any object.
        path: How to name ``value`` itself in the returned path.

    Returns:
        ``None`` when the whole value is storable, else an `Unstorable` whose
        ``path`` extends ``path`` with ``[index]``, ``["key"]``, ``{*}`` (a set
        member) and ``.field`` (an attrs field) segments.
    """
    try:
        _check(value, 0)
    except _Bad as bad:
        return Unstorable(path + "".join(reversed(bad.segments)), bad.reason)
    except RecursionError:
        return Unstorable(path, f"values may nest at most {MAX_DEPTH} containers deep")
    return None


def check_extra(extra: Mapping[str, Any], path: str = "extra") -> Unstorable | None:
    """`check_value` for each value of an ``extra`` mapping (``None`` deletes)."""
    for key, value in extra.items():
        cls = type(value)
        if cls is int or cls is bool or value is None:
            continue
        if cls is str and value.isascii():
            continue
        found = check_value(value, path + _key_segment(key))
        if found is not None:
            return found
    return None


def require_storable(value: object, path: str = "value") -> None:
    """Raise `StateError` unless ``value`` is in the storable domain.

    Raises:
        StateError: naming the key path and the reason.
    """
    found = check_value(value, path)
    if found is not None:
        raise StateError(f"cannot store {found.path}: {found.reason}")


# Weavegraph's own records are storable too.
def _register_builtin_records() -> None:
    from .errors import ErrorDetail, ErrorEvent, ErrorScope
    from .state import Message

    for cls in (Message, ErrorEvent, ErrorDetail, ErrorScope):
        register_type(cls)


_register_builtin_records()
