"""Values of the storable domain come back from every store exactly as stored.

Random nested values (JSON values, tuples, sets, frozensets, bytes, datetimes,
dates, times, timedeltas, Decimals, UUIDs, enum members, registered attrs
objects, dicts with any hashable keys) are saved in a checkpoint's ``extra``
and in an error's context, loaded back, and compared recursively: same types,
same values, same dict order, same zones and folds.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from weavegraph import (
    ErrorEvent,
    InMemoryCheckpointer,
    NodePartial,
    PostgresCheckpointer,
    Role,
    SQLiteCheckpointer,
    VersionedState,
)
from weavegraph._codec import TAG, decode_value, encode_value, register_type
from weavegraph._core.values import check_value
from weavegraph.lowlevel import Checkpoint, apply_barrier


class Colour(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


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
    x: Any
    y: Any = None


@register_type
@attrs.define
class Box:
    items: Any
    _note: str = ""


# ------------------------------------------------------------------ strategies

offsets = st.timedeltas(
    min_value=dt.timedelta(hours=-23, minutes=-59),
    max_value=dt.timedelta(hours=23, minutes=59),
)
fixed_zones = st.one_of(
    st.just(dt.UTC),
    st.builds(dt.timezone, offsets),
    st.builds(dt.timezone, offsets, st.text("ABCDEFGHIJ+-", min_size=1, max_size=5)),
)
zones = st.one_of(st.none(), fixed_zones, st.timezones())
enum_members = st.sampled_from(
    [*Colour, *Level, *Role, Perm.R, Perm.R | Perm.X, Perm(0)]
)
decimals = st.decimals(allow_nan=True, allow_infinity=True).filter(
    lambda d: not d.is_snan()
)

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.dates(),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=True),
    st.uuids(),
    enum_members,
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(inner, max_size=3),
    ),
    max_leaves=6,
)

leaves = st.one_of(
    hashable_leaves,
    st.floats(),  # NaN and the infinities too
    st.integers(min_value=2**63 - 3, max_value=2**70),
    decimals,
    st.datetimes(timezones=zones),
    st.times(timezones=st.none() | fixed_zones),
)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.text(max_size=4), st.just(TAG), st.just("v"))
    return st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.builds(Point, inner, inner),
        st.builds(Box, inner, note=st.text(max_size=3)),
    )


values = st.recursive(leaves, containers, max_leaves=20)
extras = st.dictionaries(
    st.one_of(st.text(max_size=5), st.just(TAG)), values, max_size=5
)


# ---------------------------------------------------------------- exactness


def same(a: Any, b: Any, path: str = "value") -> None:
    """Exactly equal: types, values, dict order, zones and folds, recursively."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, float):
        if math.isnan(a):
            assert math.isnan(b), path
        else:
            assert a == b, f"{path}: {a!r} != {b!r}"
            assert math.copysign(1, a) == math.copysign(1, b), path
    elif isinstance(a, Decimal):
        assert a.compare_total(b) == 0, f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dt.datetime | dt.time):
        assert a.fold == b.fold, path
        assert type(a.tzinfo) is type(b.tzinfo), path
        assert a.tzinfo == b.tzinfo, path
        assert a.replace(tzinfo=None) == b.replace(tzinfo=None), path
        assert a.tzname() == b.tzname(), path
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert len(a) == len(b), path
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            same(ka, kb, f"{path} key {ka!r}")
            same(va, vb, f"{path}[{ka!r}]")
    elif isinstance(a, set | frozenset):
        assert a == b, path
        for x in a:
            matches = [y for y in b if y == x]
            assert len(matches) == 1, path
            same(x, matches[0], f"{path}{{{x!r}}}")
    elif attrs.has(type(a)):
        for field in attrs.fields(type(a)):
            same(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# -------------------------------------------------------------- the encoding


@settings(max_examples=300)
@given(values)
def test_encoding_round_trips_with_and_without_orjson(value: Any) -> None:
    assert check_value(value) is None
    encoded = encode_value(value)
    via_orjson = orjson.loads(orjson.dumps(encoded))
    via_json = json.loads(json.dumps(encoded, ensure_ascii=False, allow_nan=False))
    assert via_orjson == via_json
    same(value, decode_value(via_orjson))
    same(value, decode_value(via_json))


# ------------------------------------------------------------------ the stores

BACKENDS = ["memory", "sqlite", "postgres"]


def factory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Any]:
    if backend == "memory":
        return InMemoryCheckpointer
    if backend == "sqlite":
        path = tmp_path / "values.db"
        return lambda: SQLiteCheckpointer(path)
    dsn = request.getfixturevalue("postgres_dsn")
    return lambda: PostgresCheckpointer(dsn)


async def save_and_load(
    make: Callable[[], Any], first: dict[str, Any], second: dict[str, Any]
) -> None:
    session = f"values-{uuid.uuid4().hex}"
    event = ErrorEvent.node("n", 1, "recorded", context=dict(first))
    state = apply_barrier(
        VersionedState(), ["n"], [NodePartial(extra=first, errors=[event])]
    ).state
    # A second step sets, changes and deletes keys: the stores write a delta.
    update = {**second, **dict.fromkeys(k for k in first if k not in second)}
    later = apply_barrier(state, ["n"], [NodePartial(extra=update)]).state
    store = make()
    try:
        for step, current in enumerate((state, later)):
            await store.save(
                Checkpoint(session_id=session, step=step, state=current, frontier=["n"])
            )
            loaded = await store.load_latest(session)
            assert loaded is not None
            assert loaded.step == step
            assert set(loaded.state.extra) == set(current.extra)
            for key in current.extra:
                same(current.extra[key], loaded.state.extra[key], f"extra[{key!r}]")
            same(current.errors[0].context, loaded.state.errors[0].context, "context")
    finally:
        await store.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_domain_values_survive_every_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    make = factory(backend, request, tmp_path)

    @settings(max_examples=40)
    @given(extras, extras)
    def check(first: dict[str, Any], second: dict[str, Any]) -> None:
        trio.run(save_and_load, make, first, second)

    check()
