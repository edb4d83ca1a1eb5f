"""Reducers and the barrier that merges a superstep's partials into the state.

A reducer is a plain function ``(current, update) -> new`` for one channel. The
barrier first merges all partials of a superstep in frontier order, then runs each
channel's reducers once, in registration order, on that merged update. It is
deterministic whatever order the nodes finished in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from .errors import ErrorEvent, InvalidReducerError, ReducerError, StateError
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

Reducer = Callable[[Any, Any], Any]
"""``(current_value, update) -> new_value`` for one channel."""


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


def reducer_label(reducer: Reducer) -> str:
    """A stable name for ``reducer``: ``module.qualname`` (used in graph hashes)."""
    module = getattr(reducer, "__module__", None) or type(reducer).__module__
    name = getattr(reducer, "__qualname__", None) or type(reducer).__qualname__
    return f"{module}.{name}"


DEFAULT_REDUCERS: Mapping[str, tuple[Reducer, ...]] = MappingProxyType(
    {MESSAGES: (add_messages,), EXTRA: (map_merge,), ERRORS: (add_errors,)}
)


@attrs.frozen
class ReducerRegistry:
    """Which reducers run, in order, for each channel."""

    by_channel: Mapping[str, tuple[Reducer, ...]] = DEFAULT_REDUCERS

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
            )
        if not callable(reducer):
            raise InvalidReducerError(
                f"the reducer for {channel!r} must be a function (current, update) ->"
                f" new value, got {reducer!r}"
            )
        current = () if replace else self.by_channel.get(channel, ())
        updated = dict(self.by_channel)
        updated[channel] = (*current, reducer)
        return ReducerRegistry(MappingProxyType(updated))

    def signature(self) -> list[str]:
        """``channel:[label, ...]`` strings, sorted by channel, for hashing."""
        return [
            f"{channel}:[{','.join(map(reducer_label, self.by_channel[channel]))}]"
            for channel in sorted(self.by_channel)
        ]


_DEFAULT_REGISTRY = ReducerRegistry()
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


@attrs.frozen
class BarrierOutcome:
    """What the barrier did.

    Attributes:
        state: The new state.
        updated_channels: ``"messages"`` then ``"extra"``, those whose version bumped.
        errors: The errors recorded by this barrier, in their deterministic order.
        frontier_commands: ``(node, command)`` pairs in frontier order.
    """

    state: VersionedState
    updated_channels: tuple[str, ...] = ()
    errors: tuple[ErrorEvent, ...] = ()
    frontier_commands: tuple[tuple[str, FrontierCommand], ...] = ()


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
        ReducerError: a reducer raised or returned a value of the wrong type.
    """
    reg = registry if registry is not None else _DEFAULT_REGISTRY
    messages: Sequence[Message]
    extra: Mapping[str, Any]
    errors: list[ErrorEvent]
    commands: list[tuple[str, FrontierCommand]] = []
    if len(partials) == 1:
        # One partial needs no merging: use its (already validated) parts as is.
        only = partials[0]
        messages = (only.messages or ()) if only is not None else ()
        extra = (only.extra or _NO_EXTRA) if only is not None else _NO_EXTRA
        errors = list(only.errors or ()) if only is not None else []
        if only is not None and only.frontier is not None:
            commands.append((ran[0] if ran else "?", only.frontier))
    else:
        merged_messages: list[Message] = []
        merged_extra: dict[str, Any] = {}
        errors = []
        for index, partial in enumerate(partials):
            if partial is None:
                continue
            if partial.messages:
                merged_messages.extend(partial.messages)
            if partial.extra:
                merged_extra.update(partial.extra)
            if partial.errors:
                errors.extend(partial.errors)
            if partial.frontier is not None:
                origin = ran[index] if index < len(ran) else "?"
                commands.append((origin, partial.frontier))
        messages = merged_messages
        extra = MappingProxyType(merged_extra)
    if len(errors) > 1:
        errors.sort(key=ErrorEvent.sort_key)

    new_messages = state.messages
    new_extra = state.extra
    new_errors = state.errors
    if messages:
        new_messages = _coerce(
            MESSAGES, _run_reducers(reg, MESSAGES, state.messages, tuple(messages))
        )
    if extra:
        merged = _run_reducers(reg, EXTRA, state.extra, extra)
        # map_merge builds a fresh read-only dict of validated keys: no copy needed.
        trusted = reg.by_channel.get(EXTRA) == (map_merge,)
        new_extra = merged if trusted else _coerce(EXTRA, merged)
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
    )
