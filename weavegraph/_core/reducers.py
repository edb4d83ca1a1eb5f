"""Reducers and the barrier that merges a superstep's partials into the state.

A reducer is a plain function ``(current, update) -> new``. Channel reducers work
on a whole channel (``messages``, ``extra``, ``errors``); key reducers on one key
of ``extra``. The barrier folds the partials of a superstep in frontier order, so
it is deterministic whatever order the nodes finished in:

* ``messages`` and ``errors``: the partials' items are concatenated (errors then
  sorted) and each channel reducer runs once on the result;
* ``extra``: each partial is applied in turn. A key with a key reducer gets
  ``reducer(current, value)`` (the first write of an absent key is stored as
  is), then the channel reducers run on that partial's update. Plain keys that
  several nodes set to different values are reported as `KeyConflict` s (the
  last write wins).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from .errors import (
    ErrorDetail,
    ErrorEvent,
    InvalidReducerError,
    ReducerError,
    StateError,
)
from .state import (
    CHANNELS,
    ERRORS,
    EXTRA,
    MESSAGES,
    FrontierCommand,
    History,
    Message,
    NodePartial,
    VersionedState,
    Versions,
    freeze_extra,
)
from .values import check_extra, check_value

Reducer = Callable[[Any, Any], Any]
"""``(current_value, update) -> new_value`` for one channel or one ``extra`` key."""


# ------------------------------------------------------------ channel reducers


def add_messages(
    current: History[Message], update: Sequence[Message]
) -> History[Message]:
    """Append ``update`` to the message history (the default for ``messages``)."""
    return current.extend(update)


def map_merge(
    current: Mapping[str, Any], update: Mapping[str, Any]
) -> Mapping[str, Any]:
    """Shallow-merge ``update`` into ``current``; a ``None`` value deletes the key.

    The default reducer for ``extra``. The result is a new read-only mapping;
    ``current`` is left untouched.
    """
    merged = dict(current)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return MappingProxyType(merged)


def add_errors(
    current: History[ErrorEvent], update: Sequence[ErrorEvent]
) -> History[ErrorEvent]:
    """Append ``update`` to the recorded errors (the default for ``errors``)."""
    return current.extend(update)


# ---------------------------------------------------------------- key reducers


def append(current: Any, value: Any) -> Any:
    """Key reducer: extend the stored list with the written list.

    ``[1, 2]`` then a write of ``[3]`` gives ``[1, 2, 3]``. A stored tuple stays a
    tuple.

    Raises:
        StateError: either side is not a list or tuple (write ``[item]`` to add
            one item).
    """
    if not isinstance(current, list | tuple) or not isinstance(value, list | tuple):
        raise StateError(
            f"append joins lists, got {type(current).__name__} and"
            f" {type(value).__name__}; write a list (wrap one item as [item])"
        )
    if isinstance(current, tuple):
        return (*current, *value)
    return [*current, *value]


def add(current: Any, value: Any) -> Any:
    """Key reducer: add the written number to the stored one (a counter).

    Raises:
        StateError: either side is not a number (``bool`` does not count).
    """
    for side in (current, value):
        if isinstance(side, bool) or not isinstance(side, numbers.Number):
            raise StateError(
                f"add sums numbers, got {type(current).__name__} and"
                f" {type(value).__name__}"
            )
    return current + value


def merge(current: Any, value: Any) -> Any:
    """Key reducer: shallow-merge the written dict into the stored one.

    Keys of the write win; ``None`` is an ordinary value here (only top-level
    ``extra`` keys are deleted by ``None``).

    Raises:
        StateError: either side is not a mapping.
    """
    if not isinstance(current, Mapping) or not isinstance(value, Mapping):
        raise StateError(
            f"merge combines dicts, got {type(current).__name__} and"
            f" {type(value).__name__}"
        )
    return {**current, **value}


def replace(current: Any, value: Any) -> Any:
    """Key reducer: keep the written value (last write wins, without a conflict)."""
    return value


KEY_REDUCERS: Mapping[str, Reducer] = MappingProxyType(
    {"append": append, "add": add, "merge": merge, "replace": replace}
)
"""The built-in key reducers by the names `with_key_reducer` accepts."""

# Built-ins that turn values of the storable domain into values of the domain:
# their results need no second check.
_DOMAIN_SAFE = frozenset(KEY_REDUCERS.values())


def reducer_label(reducer: Reducer) -> str:
    """A stable name for ``reducer``: ``module.qualname`` (used in graph hashes)."""
    module = getattr(reducer, "__module__", None) or type(reducer).__module__
    name = getattr(reducer, "__qualname__", None) or type(reducer).__qualname__
    return f"{module}.{name}"


def _key_label(key: str) -> str:
    return f"extra[{json.dumps(key, ensure_ascii=False)}]"


DEFAULT_REDUCERS: Mapping[str, tuple[Reducer, ...]] = MappingProxyType(
    {MESSAGES: (add_messages,), EXTRA: (map_merge,), ERRORS: (add_errors,)}
)
_NO_KEY_REDUCERS: Mapping[str, Reducer] = MappingProxyType({})


@attrs.frozen
class ReducerRegistry:
    """Which reducers run, in order, for each channel, and for ``extra`` keys."""

    by_channel: Mapping[str, tuple[Reducer, ...]] = DEFAULT_REDUCERS
    by_key: Mapping[str, Reducer] = _NO_KEY_REDUCERS

    def with_reducer(
        self, channel: str, reducer: Reducer, *, replace: bool = False
    ) -> ReducerRegistry:
        """Return a registry with ``reducer`` added after ``channel``'s reducers.

        With ``replace=True`` it becomes the channel's only reducer.

        Raises:
            InvalidReducerError: unknown channel, or ``reducer`` is not callable.
        """
        if channel not in CHANNELS:
            raise InvalidReducerError(
                f"unknown channel {channel!r}; reducers apply to one of"
                f" {', '.join(CHANNELS)}"
                + (
                    "; for one key of extra use with_key_reducer(key, reducer)"
                    if isinstance(channel, str)
                    else ""
                )
            )
        if not callable(reducer):
            raise InvalidReducerError(
                f"the reducer for {channel!r} must be a function (current, update) ->"
                f" new value, got {reducer!r}"
            )
        current = () if replace else self.by_channel.get(channel, ())
        updated = dict(self.by_channel)
        updated[channel] = (*current, reducer)
        return attrs.evolve(self, by_channel=MappingProxyType(updated))

    def with_key_reducer(self, key: str, reducer: Reducer | str) -> ReducerRegistry:
        """Return a registry where writes to ``extra[key]`` fold with ``reducer``.

        Args:
            key: The ``extra`` key.
            reducer: A function ``(current, value) -> new`` or the name of a
                built-in: ``"append"``, ``"add"``, ``"merge"``, ``"replace"``.

        Raises:
            InvalidReducerError: ``key`` is not a non-empty string, it already has
                a key reducer, or ``reducer`` is neither callable nor a known name.
        """
        if not isinstance(key, str) or not key:
            raise InvalidReducerError(
                f"a key reducer needs a non-empty extra key, got {key!r}"
            )
        if isinstance(reducer, str):
            named = KEY_REDUCERS.get(reducer)
            if named is None:
                raise InvalidReducerError(
                    f"unknown key reducer {reducer!r} for {_key_label(key)}; the"
                    f" built-ins are {', '.join(map(repr, KEY_REDUCERS))}, or pass a"
                    " function (current, value) -> new value"
                )
            reducer = named
        elif not callable(reducer):
            raise InvalidReducerError(
                f"the key reducer for {_key_label(key)} must be a function"
                f" (current, value) -> new value or a built-in name, got {reducer!r}"
            )
        existing = self.by_key.get(key)
        if existing is not None:
            raise InvalidReducerError(
                f"{_key_label(key)} already has the key reducer"
                f" {reducer_label(existing)}; a key has one reducer"
            )
        updated = dict(self.by_key)
        updated[key] = reducer
        return attrs.evolve(self, by_key=MappingProxyType(updated))

    def signature(self) -> list[str]:
        """``channel:[label, ...]`` then ``key:<key>:label`` strings, for hashing."""
        out = [
            f"{channel}:[{','.join(map(reducer_label, self.by_channel[channel]))}]"
            for channel in sorted(self.by_channel)
        ]
        out += [
            f"key:{json.dumps(key)}:{reducer_label(self.by_key[key])}"
            for key in sorted(self.by_key)
        ]
        return out


_DEFAULT_REGISTRY = ReducerRegistry()


# ---------------------------------------------------------------------- barrier


@attrs.frozen
class KeyConflict:
    """Several nodes of one superstep set the same plain ``extra`` key.

    The values differed and the key has no key reducer, so the last write in
    frontier order won and the others were lost.

    Attributes:
        key: The ``extra`` key.
        nodes: The writing nodes, in frontier order; the last one won.
    """

    key: str
    nodes: tuple[str, ...]

    @property
    def winner(self) -> str:
        """The node whose value was kept."""
        return self.nodes[-1]

    def describe(self) -> str:
        """A one-line message naming the key, the nodes and the fix."""
        names = ", ".join(map(repr, self.nodes))
        return (
            f"{_key_label(self.key)} was written by {names} in one step; the last"
            f" write ({self.winner!r}) won and the others were lost. Declare a key"
            f" reducer to combine them: GraphBuilder.with_key_reducer"
            f"({json.dumps(self.key)}, 'append' | 'add' | 'merge' | reducer), or"
            " 'replace' to keep the last write without this warning"
        )


@attrs.frozen
class BarrierOutcome:
    """What the barrier did.

    Attributes:
        state: The new state.
        updated_channels: ``"messages"`` then ``"extra"``, those whose version bumped.
        errors: The errors recorded by this barrier, in their deterministic order.
        frontier_commands: ``(node, command)`` pairs in frontier order.
        conflicts: Plain ``extra`` keys that several nodes set to different
            values, in the order the keys were first written.
    """

    state: VersionedState
    updated_channels: tuple[str, ...] = ()
    errors: tuple[ErrorEvent, ...] = ()
    frontier_commands: tuple[tuple[str, FrontierCommand], ...] = ()
    conflicts: tuple[KeyConflict, ...] = ()


def _run_reducers(
    registry: ReducerRegistry, channel: str, current: Any, update: Any
) -> Any:
    value = current
    for reducer in registry.by_channel.get(channel, ()):
        try:
            value = reducer(value, update)
        except Exception as exc:
            raise ReducerError(
                f"reducer {reducer_label(reducer)} for channel {channel!r} raised"
                f" {type(exc).__name__}: {exc}"
            ) from exc
    return value


def _coerce(channel: str, reducer_output: Any) -> Any:
    """Accept what custom reducers commonly return, reject the rest clearly."""
    try:
        if channel == EXTRA:
            return freeze_extra(reducer_output)
        if isinstance(reducer_output, History):
            return reducer_output
        kind = Message if channel == MESSAGES else ErrorEvent
        items = list(reducer_output)
        for item in items:
            if not isinstance(item, kind):
                raise StateError(f"got a {type(item).__name__} item")
        return History(items)
    except (StateError, TypeError) as exc:
        raise ReducerError(
            f"the reducers of channel {channel!r} returned {reducer_output!r}, which"
            f" is not a valid {channel} value ({exc})"
        ) from exc


def _fold_key(reducer: Reducer, key: str, current: Any, value: Any, node: str) -> Any:
    try:
        result = reducer(current, value)
    except Exception as exc:
        raise ReducerError(
            f"the key reducer {reducer_label(reducer)} of {_key_label(key)} raised"
            f" {type(exc).__name__} on the write of node {node!r}: {exc}"
        ) from exc
    if reducer not in _DOMAIN_SAFE:
        found = check_value(result, _key_label(key))
        if found is not None:
            raise ReducerError(
                f"the key reducer {reducer_label(reducer)} of {_key_label(key)}"
                f" returned a value that cannot be stored, at {found}"
            )
    return result


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    return a is b or (type(a) is type(b) and a == b)


def _merge_extra(
    reg: ReducerRegistry,
    current: Mapping[str, Any],
    writes: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[Mapping[str, Any], tuple[KeyConflict, ...]]:
    """Fold the ``extra`` writes of one superstep, in frontier order."""
    by_key = reg.by_key
    chain = reg.by_channel.get(EXTRA, ())
    # Last-write-wins (and so a lost write) only happens under map_merge.
    track = len(writes) > 1 and map_merge in chain
    writers: dict[str, list[tuple[str, Any]]] = {}
    result: Mapping[str, Any]
    if chain == (map_merge,):
        # The default: one working dict instead of a mapping per partial.
        merged = dict(current)
        for node, update in writes:
            for key, value in update.items():
                reducer = by_key.get(key) if by_key else None
                if reducer is None:
                    if track:
                        writers.setdefault(key, []).append((node, value))
                elif value is not None and key in merged:
                    value = _fold_key(reducer, key, merged[key], value, node)
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        result = MappingProxyType(merged)
    else:
        # Custom channel reducers see every partial's update, one at a time.
        result = current
        for node, update in writes:
            effective: Mapping[str, Any] = update
            folded: dict[str, Any] | None = None
            for key, value in update.items():
                reducer = by_key.get(key) if by_key else None
                if reducer is None:
                    if track:
                        writers.setdefault(key, []).append((node, value))
                elif value is not None and key in result:
                    if folded is None:
                        folded = dict(update)
                    folded[key] = _fold_key(reducer, key, result[key], value, node)
            if folded is not None:
                effective = MappingProxyType(folded)
            result = _coerce(EXTRA, _run_reducers(reg, EXTRA, result, effective))
        for key, value in result.items():
            if current.get(key, _MISSING) is not value:
                found = check_value(value, _key_label(key))
                if found is not None:
                    raise ReducerError(
                        "the reducers of channel 'extra' returned a value that cannot"
                        f" be stored, at {found}"
                    )
    conflicts = tuple(
        KeyConflict(key, tuple(node for node, _ in entries))
        for key, entries in writers.items()
        if len(entries) > 1
        and not all(_same(entries[0][1], value) for _, value in entries[1:])
    )
    return result, conflicts


def _refuse(node: str, where: str, found: Any) -> StateError:
    return StateError(
        f"node {node!r} wrote a value that cannot be stored, in {where} at {found}"
    )


def _check_error(event: ErrorEvent, path: str) -> Any:
    """The first unstorable context or details value of ``event``, or ``None``."""
    if event.context is not None:
        found = check_value(event.context, f"{path}.context")
        if found is not None:
            return found
    detail: ErrorDetail | None = event.error
    where = f"{path}.error"
    while detail is not None:
        if detail.details is not None:
            found = check_value(detail.details, f"{where}.details")
            if found is not None:
                return found
        detail = detail.cause
        where += ".cause"
    return None


def apply_barrier(
    state: VersionedState,
    ran: Sequence[str],
    partials: Sequence[NodePartial | None],
    registry: ReducerRegistry | None = None,
) -> BarrierOutcome:
    """Merge ``partials`` (one per node of ``ran``, same order) into ``state``.

    Versions follow the reference rules: ``messages`` bumps by one when its length
    changed, ``extra`` when its content changed, ``errors`` never.

    Raises:
        StateError: a partial's ``extra`` (or an error's context or details)
            holds a value outside the storable domain; the message names the
            node and the key path.
        ReducerError: a reducer raised or returned a value of the wrong type.
    """
    reg = registry if registry is not None else _DEFAULT_REGISTRY
    message_parts: list[tuple[Message, ...]] = []
    writes: list[tuple[str, Mapping[str, Any]]] = []
    errors: list[ErrorEvent] = []
    commands: list[tuple[str, FrontierCommand]] = []
    for index, partial in enumerate(partials):
        if partial is None:
            continue
        node = ran[index] if index < len(ran) else "?"
        if partial.messages:
            message_parts.append(partial.messages)
        if partial.extra:
            found = check_extra(partial.extra)
            if found is not None:
                raise _refuse(node, "extra", found)
            writes.append((node, partial.extra))
        if partial.errors:
            for position, event in enumerate(partial.errors):
                error = event.error
                if (
                    event.context is not None
                    or error.details is not None
                    or error.cause is not None
                ):
                    found = _check_error(event, f"errors[{position}]")
                    if found is not None:
                        raise _refuse(node, "its errors", found)
            errors.extend(partial.errors)
        if partial.frontier is not None:
            commands.append((node, partial.frontier))
    if len(errors) > 1:
        errors.sort(key=ErrorEvent.sort_key)

    new_messages = state.messages
    new_extra = state.extra
    new_errors = state.errors
    conflicts: tuple[KeyConflict, ...] = ()
    if message_parts:
        messages = (
            message_parts[0]
            if len(message_parts) == 1
            else tuple(m for part in message_parts for m in part)
        )
        new_messages = _coerce(
            MESSAGES, _run_reducers(reg, MESSAGES, state.messages, messages)
        )
    if writes:
        new_extra, conflicts = _merge_extra(reg, state.extra, writes)
    if errors:
        new_errors = _coerce(
            ERRORS, _run_reducers(reg, ERRORS, state.errors, tuple(errors))
        )

    versions = state.versions
    updated: list[str] = []
    messages_version = versions.messages
    extra_version = versions.extra
    if len(new_messages) != len(state.messages):
        messages_version += 1
        updated.append(MESSAGES)
    if new_extra is not state.extra and new_extra != state.extra:
        extra_version += 1
        updated.append(EXTRA)
    if updated:
        versions = Versions(
            messages=messages_version, extra=extra_version, errors=versions.errors
        )
    if (
        new_messages is state.messages
        and new_extra is state.extra
        and new_errors is state.errors
    ):
        new_state = state
    else:
        new_state = VersionedState._trusted(
            new_messages, new_extra, new_errors, versions
        )
    return BarrierOutcome(
        state=new_state,
        updated_channels=tuple(updated),
        errors=tuple(errors),
        frontier_commands=tuple(commands),
        conflicts=conflicts,
    )
