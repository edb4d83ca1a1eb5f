"""The storable value domain: the checker, the registry, and its JSON encoding."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest

from weavegraph import Message, Role, StateError, VersionedState, WeavegraphError
from weavegraph._codec import (
    TAG,
    converter,
    decode_extra,
    decode_value,
    encode_extra,
    encode_value,
    register_type,
    state_to_json,
)
from weavegraph._core.values import MAX_DEPTH, Unstorable, check_extra, check_value
from weavegraph.errors import ErrorDetail, ErrorEvent

UTC = dt.UTC
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


class Colour(enum.Enum):
    RED = "red"
    GREEN = 2
    VERDE = 2  # noqa: PIE796 - an alias, on purpose


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


@register_type
@attrs.frozen
class Point:
    x: int
    y: float = 0.0


@register_type
@attrs.define
class Tool:
    name: str
    args: tuple[Any, ...] = ()
    _secret: str = "s"  # stored by field name, rebuilt through its alias
    calls: int = attrs.field(init=False, default=0)


@attrs.frozen
class NotRegistered:
    x: int


class Plain:
    pass


class MyStr(str):
    pass


def same(a: Any, b: Any, path: str = "value") -> None:
    """Exactly equal: types, values, dict order, zones and folds, recursively."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, float):
        if math.isnan(a):
            assert math.isnan(b), path
        else:
            assert a == b and math.copysign(1, a) == math.copysign(1, b), path
    elif isinstance(a, Decimal):
        assert a.compare_total(b) == 0, path
    elif isinstance(a, dt.datetime | dt.time):
        assert a == b and a.fold == b.fold, path
        assert a.tzinfo == b.tzinfo and type(a.tzinfo) is type(b.tzinfo), path
        assert a.tzname() == b.tzname(), path
        if isinstance(a, dt.datetime):
            assert a.replace(tzinfo=None) == b.replace(tzinfo=None), path
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(map(type, a)) == list(map(type, b)), path
        assert list(a) == list(b), path
        for key in a:
            same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, set | frozenset):
        assert a == b, path
        for x in a:
            (y,) = [y for y in b if y == x]
            same(x, y, f"{path}{{{x!r}}}")
    elif attrs.has(type(a)):
        for field in attrs.fields(type(a)):
            same(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}")
    else:
        assert a == b, path


def roundtrip(value: Any) -> Any:
    encoded = encode_value(value)
    # One behaviour with or without orjson: both parse to the same data.
    text = json.dumps(encoded, ensure_ascii=False, allow_nan=False)
    assert orjson.loads(orjson.dumps(encoded)) == json.loads(text)
    return decode_value(json.loads(text))


DOMAIN = {
    "str": "héllo",
    "empty str": "",
    "int": 7,
    "big int": 2**64,
    "negative big int": -(2**63) - 1,
    "int64 max": 2**63 - 1,
    "float": 0.1,
    "negative zero": -0.0,
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "bool": True,
    "none": None,
    "list": [1, "a", None],
    "dict": {"b": 1, "a": 2},
    "tuple": (1, (2, 3), []),
    "empty tuple": (),
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({b"x", 2}),
    "bytes": b"x\x00\xff",
    "naive datetime": dt.datetime(2025, 5, 1, 12, 30, 5, 123456),
    "utc datetime": dt.datetime(2025, 5, 1, 12, tzinfo=UTC),
    "offset datetime": dt.datetime(2025, 5, 1, 12, tzinfo=PLUS_0530),
    "named offset": dt.datetime(
        2025, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST")
    ),
    "sub-minute offset": dt.datetime(
        1900, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=561))
    ),
    "zoned datetime": dt.datetime(2025, 7, 1, 9, tzinfo=PARIS),
    "ambiguous fold=1": dt.datetime(2025, 10, 26, 2, 30, tzinfo=PARIS, fold=1),
    "imaginary time": dt.datetime(2025, 3, 30, 2, 30, tzinfo=PARIS),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(23, 59, 59, 999999),
    "time with offset": dt.time(8, tzinfo=PLUS_0530),
    "time fold": dt.time(1, fold=1),
    "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "decimal": Decimal("1.10"),
    "decimal nan": Decimal("NaN"),
    "decimal -0": Decimal("-0"),
    "decimal inf": Decimal("-Infinity"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "enum": Colour.RED,
    "enum alias": Colour.VERDE,
    "int enum": Level.HIGH,
    "str enum": Role.TOOL,
    "flag": Perm.R | Perm.X,
    "empty flag": Perm(0),
    "attrs": Point(1, 2.5),
    "attrs with private field": Tool("search", ("q", 1), secret="k"),
    "message": Message.user("hi"),
    "dict with int keys": {1: "a", 2: "b"},
    "dict with tuple keys": {(1, "a"): [1], (2,): {}},
    "dict with mixed keys": {"a": 1, 2: "b", None: 3, Colour.RED: 4},
    "dict that looks like a tag": {TAG: "set", "v": [1, 2]},
    "tag key only": {TAG: None},
    "nested tag lookalike": [{"x": {TAG: "tuple", "v": []}}],
}


@pytest.mark.parametrize("value", DOMAIN.values(), ids=DOMAIN.keys())
def test_domain_values_round_trip_exactly(value: Any) -> None:
    assert check_value(value) is None
    same(value, roundtrip(value))


def test_fold_and_zone_are_kept() -> None:
    fold = roundtrip(dt.datetime(2025, 10, 26, 2, 30, tzinfo=PARIS, fold=1))
    assert fold.fold == 1
    assert fold.utcoffset() == dt.timedelta(hours=1)
    assert fold.tzinfo is PARIS
    # A wall time in the spring gap keeps its wall time, not its instant.
    gap = roundtrip(dt.datetime(2025, 3, 30, 2, 30, tzinfo=PARIS))
    assert (gap.hour, gap.minute) == (2, 30)


def test_private_attrs_field_comes_back_and_init_false_is_recomputed() -> None:
    tool = Tool("search", secret="k")
    tool.calls = 5
    back = roundtrip(tool)
    assert back._secret == "k"
    assert back.calls == 0


def test_plain_json_is_left_as_is() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": {}}]}
    assert encode_value(value) == value
    assert decode_value(value) == value


def test_tag_forms() -> None:
    assert encode_value((1, 2)) == {TAG: "tuple", "v": [1, 2]}
    assert encode_value(b"x") == {TAG: "bytes", "v": "eA=="}
    assert encode_value(float("nan")) == {TAG: "float", "v": "nan"}
    assert encode_value(2**70) == {TAG: "int", "v": str(2**70)}
    assert encode_value(Colour.RED) == {
        TAG: "enum",
        "t": f"{__name__}:Colour",
        "v": "RED",
    }
    assert encode_value(Point(1)) == {
        TAG: "attrs",
        "t": f"{__name__}:Point",
        "v": {"x": 1, "y": 0.0},
    }
    assert encode_value({TAG: 1}) == {TAG: "dict", "v": [[TAG, 1]]}


def test_sets_encode_in_a_stable_order() -> None:
    one = encode_value({"b", "a", "c", 3, (1,)})
    two = encode_value({(1,), 3, "c", "a", "b"})
    assert one == two


def test_extra_keeps_top_level_keys() -> None:
    extra = {TAG: (1,), "k": {1, 2}}
    encoded = encode_extra(extra)
    assert list(encoded) == [TAG, "k"]
    back = decode_extra(json.loads(json.dumps(encoded)))
    same(dict(back), extra)
    with pytest.raises(TypeError):
        back["k"] = 1  # type: ignore[index]


# ------------------------------------------------------------------ the checker

OUTSIDE = {
    "object": (object(), "value", "object"),
    "plain class": (Plain(), "value", "Plain"),
    "unregistered attrs": (NotRegistered(1), "value", "register_type(NotRegistered)"),
    "str subclass": (MyStr("x"), "value", "str(x)"),
    "read-only mapping": (VersionedState().extra, "value", "dict(x)"),
    "history": (VersionedState().messages, "value", "list(x)"),
    "complex in a list": ([1, 2, 1j], "value[2]", "complex"),
    "nested key path": (
        {"tools": [{}, {}, {"when": Plain()}]},
        'value["tools"][2]["when"]',
        "Plain",
    ),
    "set member": ({1, Plain()}, "value{*}", "Plain"),
    "attrs field": (Point(Plain()), "value.x", "Plain"),  # type: ignore[arg-type]
    "dict key": ({Plain(): 1}, "value", "the key"),
    "lone surrogate": ("a\ud800", "value", "surrogate"),
    "surrogate key": ({"\udfff": 1}, "value", "surrogate"),
    "signalling nan": (Decimal("sNaN"), "value", "signalling"),
    "foreign tzinfo": (
        dt.datetime(2025, 1, 1, tzinfo=dt.tzinfo()),
        "value",
        "zoneinfo.ZoneInfo",
    ),
    "zoned time": (dt.time(1, tzinfo=PARIS), "value", "datetime.timezone zones"),
    "local enum": (None, "value", "module level"),
    "too deep": (None, "value" + "[0]" * MAX_DEPTH, "nest"),
}


def _local_enum() -> Any:
    class Local(enum.Enum):
        A = 1

    return Local.A


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


OUTSIDE["local enum"] = (_local_enum(), "value", "module level")
OUTSIDE["too deep"] = (_deep(MAX_DEPTH + 1), "value" + "[0]" * MAX_DEPTH, "nest")


@pytest.mark.parametrize(("value", "path", "reason"), OUTSIDE.values(), ids=OUTSIDE)
def test_values_outside_the_domain(value: Any, path: str, reason: str) -> None:
    found = check_value(value)
    assert isinstance(found, Unstorable)
    assert found.path == path
    assert reason in found.reason
    with pytest.raises(StateError) as info:
        encode_value(value)
    assert path in str(info.value)
    assert isinstance(info.value, WeavegraphError)


def test_deepest_allowed_nesting() -> None:
    assert check_value(_deep(MAX_DEPTH)) is None
    same(_deep(MAX_DEPTH), roundtrip(_deep(MAX_DEPTH)))


def test_cycles_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert check_value(loop) is not None
    with pytest.raises(StateError):
        encode_value(loop)


def test_check_extra_paths() -> None:
    assert check_extra({"a": 1, "b": None, "c": (1, {2})}) is None
    found = check_extra({"ok": 1, 'we"ird': [Plain()]})
    assert found is not None
    assert found.path == 'extra["we\\"ird"][0]'
    assert str(found).startswith('extra["we\\"ird"][0]: ')


def test_encode_extra_names_the_key() -> None:
    with pytest.raises(StateError, match=r'extra\["k"\]\[1\]'):
        encode_extra({"k": [1, Plain()]})
    with pytest.raises(StateError, match="not a string"):
        encode_extra({1: 2})  # type: ignore[dict-item]


# ----------------------------------------------------------------- registration


def test_register_type_is_idempotent_and_returns_the_class() -> None:
    assert register_type(Point) is Point


def test_register_type_needs_an_attrs_class() -> None:
    with pytest.raises(StateError, match="attrs class"):
        register_type(Plain)
    with pytest.raises(StateError, match="attrs class"):
        register_type(Point(1))  # type: ignore[arg-type]


def test_register_type_refuses_a_second_class_with_the_same_name() -> None:
    def make() -> type:
        @attrs.frozen
        class Twin:
            x: int

        return Twin

    register_type(make())
    with pytest.raises(StateError, match="already registered"):
        register_type(make())


def test_unregistered_names_fail_to_decode_clearly() -> None:
    data = {TAG: "attrs", "t": f"{__name__}:Nope", "v": {}}
    with pytest.raises(StateError, match="register_type"):
        decode_value(data)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "data",
    [
        {TAG: "nope", "v": 1},
        {TAG: "tuple"},
        {TAG: "tuple", "v": "ab"},
        {TAG: "tuple", "v": [], "extra": 1},
        {TAG: "set", "v": [[1]]},
        {TAG: "dict", "v": [[1]]},
        {TAG: "dict", "v": [[[1], 2]]},
        {TAG: "bytes", "v": "!!"},
        {TAG: "int", "v": "x"},
        {TAG: "float", "v": "NaN"},
        {TAG: "datetime", "v": "yesterday"},
        {TAG: "datetime", "v": "2025-01-01T00:00:00", "tz": "Mars/Base"},
        {TAG: "datetime", "v": "2025-01-01T00:00:00+01:00", "tz": "Europe/Paris"},
        {TAG: "datetime", "v": "2025-01-01T00:00:00", "fold": 2},
        {TAG: "datetime", "v": "2025-01-01T00:00:00", "tzname": "X"},
        {TAG: "time", "v": 5},
        {TAG: "timedelta", "v": [1, 2]},
        {TAG: "decimal", "v": "1,5"},
        {TAG: "uuid", "v": "not-a-uuid"},
        {TAG: "enum", "t": "no.such.module:E", "v": "A"},
        {TAG: "enum", "t": f"{__name__}:Colour", "v": "BLUE"},
        {TAG: "enum", "t": f"{__name__}:Point", "v": "x"},
        {TAG: "enum", "t": f"{__name__}:Colour"},
        {TAG: "enum", "t": f"{__name__}:Perm", "flag": "1"},
        {TAG: "attrs", "t": f"{__name__}:Point", "v": {"z": 1}},
        {TAG: "attrs", "t": f"{__name__}:Point", "v": [1]},
        [{TAG: "tuple", "v": 3}],
    ],
    ids=repr,
)
def test_malformed_stored_values(data: Any) -> None:
    with pytest.raises(StateError, match="malformed stored value"):
        decode_value(data)


def test_decode_extra_needs_an_object() -> None:
    with pytest.raises(StateError, match="object"):
        decode_extra([1])


# ------------------------------------------------------------- the state's JSON


def test_state_json_form_is_exact() -> None:
    extra = {"tags": {"a", "b"}, "pair": (1, 2), "when": dt.datetime(2025, 1, 1)}
    event = ErrorEvent.node(
        "n",
        1,
        ErrorDetail(message="m", details={"got": (1, 2)}),
        context={"seen": frozenset({1})},
    )
    state = VersionedState(extra=extra, errors=[event])
    text = json.dumps(state_to_json(state), allow_nan=False)
    back = converter.structure(json.loads(text), VersionedState)
    assert back == state
    same(dict(back.extra), extra)
    same(back.errors[0].context, {"seen": frozenset({1})})
    same(back.errors[0].error.details, {"got": (1, 2)})
    snap = converter.unstructure(state.snapshot())
    assert snap["extra"] == state_to_json(state)["extra"]


def test_old_plain_json_states_still_load() -> None:
    doc = {
        "messages": [{"role": "user", "content": "hi"}],
        "extra": {"k": [1, 2]},
        "errors": [],
        "versions": {"messages": 1, "extra": 1, "errors": 1},
    }
    state = converter.structure(doc, VersionedState)
    assert state.extra["k"] == [1, 2]


def test_messages_refuse_lone_surrogates() -> None:
    with pytest.raises(StateError, match="surrogate"):
        Message.user("a\ud800b")
    assert Message.user("ünïcode ✓").content == "ünïcode ✓"
