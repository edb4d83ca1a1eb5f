"""Messages, the versioned three-channel state, snapshots and node partials.

The state is immutable. Appending to a channel returns a new `History` that shares
its storage with the old one (see `History`), so taking a snapshot or merging a
superstep never copies the conversation.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar, final, overload

import attrs

from .errors import ErrorEvent, StateError

T = TypeVar("T")

MESSAGES = "messages"
EXTRA = "extra"
ERRORS = "errors"
CHANNELS: tuple[str, ...] = (MESSAGES, EXTRA, ERRORS)


# ----------------------------------------------------------------------- messages


class Role(enum.StrEnum):
    """The well-known message roles. Any other non-empty string is a custom role."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


_ROLES: dict[str, Role] = {r.value: r for r in Role}


def _to_role(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise StateError(
            f"a message role must be a non-empty string such as 'user', got {value!r}"
        )
    return _ROLES.get(value, value)


def _check_content(_: object, __: object, value: Any) -> None:
    if not isinstance(value, str):
        raise StateError(
            f"message content must be a string, got {type(value).__name__};"
            " serialise structured content to text (for example with json.dumps)"
        )
    if not value.isascii():
        # A lone surrogate cannot be written as UTF-8: refuse it here rather
        # than when the checkpoint is saved.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise StateError(
                f"message content holds a lone surrogate at index {exc.start},"
                " which is not valid Unicode text"
            ) from None


@attrs.frozen
class Message:
    """One chat message.

    Args:
        role: A `Role` or any other non-empty string (a custom role).
        content: The text.
    """

    role: str = attrs.field(converter=_to_role)
    content: str = attrs.field(validator=_check_content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A message with role ``user``."""
        return cls(Role.USER, content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        """A message with role ``assistant``."""
        return cls(Role.ASSISTANT, content)

    @classmethod
    def system(cls, content: str) -> Message:
        """A message with role ``system``."""
        return cls(Role.SYSTEM, content)

    @classmethod
    def tool(cls, content: str) -> Message:
        """A message with role ``tool``."""
        return cls(Role.TOOL, content)


# ------------------------------------------------------------------------ history


@final
class History(Sequence[T], Generic[T]):
    """An immutable, append-only sequence whose versions share storage.

    ``history.extend(items)`` returns a new `History`; the old one is unchanged. When
    the old one is the newest version of its storage, the new items are appended to
    the shared list in place (amortised O(len(items))), otherwise the visible prefix
    is copied first. Every `History` only ever shows its own prefix, so a snapshot
    handed to a node stays valid whatever happens later.
    """

    __slots__ = ("_items", "_len")

    _items: list[T]
    _len: int

    def __init__(self, items: Iterable[T] = ()) -> None:
        self._items = list(items)
        self._len = len(self._items)

    @classmethod
    def _view(cls, items: list[T], length: int) -> History[T]:
        view: History[T] = object.__new__(cls)
        view._items = items
        view._len = length
        return view

    def extend(self, items: Sequence[T]) -> History[T]:
        """Return a new history with ``items`` appended."""
        if not items:
            return self
        if len(self._items) == self._len:
            self._items.extend(items)
            return History._view(self._items, len(self._items))
        copied = self._items[: self._len]
        copied.extend(items)
        return History._view(copied, len(copied))

    def suffix_after(self, older: History[T]) -> list[T] | None:
        """The items appended since ``older``, or ``None`` if this is not an extension.

        O(appended) when both share storage (the usual case along one run);
        otherwise the prefixes are compared.
        """
        if self._len < older._len:
            return None
        if self._items is not older._items and (
            self._items[: older._len] != older._items[: older._len]
        ):
            return None
        return self._items[older._len : self._len]

    def append(self, item: T) -> History[T]:
        """Return a new history with ``item`` appended."""
        return self.extend((item,))

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self._items[: self._len][index])
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("History index out of range")
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        # Bounded by our own length: items appended later by newer versions that
        # share the list stay invisible.
        return itertools.islice(self._items, self._len)

    def __reversed__(self) -> Iterator[T]:
        return reversed(self._items[: self._len])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self._len == other._len and (
                self._items is other._items or list(self) == list(other)
            )
        if isinstance(other, list | tuple):
            return self._len == len(other) and list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"History({list(self)!r})"

    def to_list(self) -> list[T]:
        """A new list with the visible items."""
        return self._items[: self._len]


def _to_history(kind: type, what: str) -> Any:
    def convert(value: object) -> History[Any]:
        if isinstance(value, History):
            return value
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise StateError(f"{what} must be a list of {kind.__name__}, got {value!r}")
        items = list(value)
        for item in items:
            if not isinstance(item, kind):
                raise StateError(
                    f"{what} must contain only {kind.__name__} objects, got"
                    f" {type(item).__name__}: {item!r}"
                )
        return History(items)

    return convert


def _message_history(value: object) -> History[Message]:
    return _to_history(Message, "messages")(value)  # type: ignore[no-any-return]


def _error_history(value: object) -> History[ErrorEvent]:
    return _to_history(ErrorEvent, "errors")(value)  # type: ignore[no-any-return]


def freeze_extra(value: object) -> Mapping[str, Any]:
    """Validate a JSON-like mapping with string keys and return a read-only copy."""
    if not isinstance(value, Mapping):
        raise StateError(f"extra must be a mapping with string keys, got {value!r}")
    data = dict(value)
    for key in data:
        if type(key) is not str and not isinstance(key, str):
            raise StateError(f"extra keys must be strings, got {key!r}")
    return MappingProxyType(data)


# -------------------------------------------------------------------------- state


@attrs.frozen(kw_only=True)
class Versions:
    """Per-channel version counters; each starts at 1 and only the barrier bumps."""

    messages: int = 1
    extra: int = 1
    errors: int = 1

    def gate_key(self) -> tuple[int, int]:
        """The versions that version gating looks at: (messages, extra)."""
        return (self.messages, self.extra)


_EMPTY_EXTRA: Mapping[str, Any] = MappingProxyType({})


@attrs.frozen(kw_only=True, eq=True)
class StateSnapshot:
    """The read-only view of the state that a node receives.

    Attributes:
        messages: The conversation so far.
        extra: JSON-like key/value data.
        errors: Recorded `ErrorEvent` s.
        versions: The channel versions this snapshot was taken at.
    """

    messages: History[Message]
    extra: Mapping[str, Any]
    errors: History[ErrorEvent]
    versions: Versions

    @property
    def last_message(self) -> Message | None:
        """The newest message, or ``None`` when there are none."""
        return self.messages[-1] if self.messages else None


@attrs.frozen(kw_only=True, eq=True)
class VersionedState:
    """The workflow state: ``messages``, ``extra`` and ``errors`` with versions.

    A `VersionedState` is immutable; the barrier produces a new one after every
    superstep. Build one with `with_user_message`, `with_messages` or `builder`.
    """

    messages: History[Message] = attrs.field(
        factory=History, converter=_message_history
    )
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY_EXTRA, converter=freeze_extra)
    errors: History[ErrorEvent] = attrs.field(factory=History, converter=_error_history)
    versions: Versions = attrs.field(factory=Versions)
    _snapshot: StateSnapshot | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    @versions.validator
    def _check_versions(self, _: object, value: object) -> None:
        if not isinstance(value, Versions):
            raise StateError(f"versions must be a Versions record, got {value!r}")

    @classmethod
    def with_user_message(cls, text: str) -> VersionedState:
        """A state holding one user message; every version is 1."""
        return cls(messages=[Message.user(text)])

    @classmethod
    def with_messages(cls, messages: Iterable[Message]) -> VersionedState:
        """A state holding ``messages``; every version is 1."""
        return cls(messages=list(messages))

    @classmethod
    def builder(cls) -> StateBuilder:
        """Start a `StateBuilder`."""
        return StateBuilder()

    def snapshot(self) -> StateSnapshot:
        """The read-only view handed to nodes; shares storage, copies nothing."""
        snap = self._snapshot
        if snap is None:
            snap = StateSnapshot(
                messages=self.messages,
                extra=self.extra,
                errors=self.errors,
                versions=self.versions,
            )
            object.__setattr__(self, "_snapshot", snap)
        return snap

    @classmethod
    def _trusted(
        cls,
        messages: History[Message],
        extra: Mapping[str, Any],
        errors: History[ErrorEvent],
        versions: Versions,
    ) -> VersionedState:
        """Build from already-validated parts, skipping converters (barrier path)."""
        state = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(state, "messages", messages)
        setattr_(state, "extra", extra)
        setattr_(state, "errors", errors)
        setattr_(state, "versions", versions)
        setattr_(state, "_snapshot", None)
        return state


@attrs.define
class StateBuilder:
    """Builds a `VersionedState` step by step (every version starts at 1)."""

    _messages: list[Message] = attrs.field(factory=list)
    _extra: dict[str, Any] = attrs.field(factory=dict)

    def with_message(self, role: str, content: str) -> StateBuilder:
        """Append a message with any role."""
        self._messages.append(Message(role, content))
        return self

    def with_user_message(self, content: str) -> StateBuilder:
        """Append a user message."""
        return self.with_message(Role.USER, content)

    def with_assistant_message(self, content: str) -> StateBuilder:
        """Append an assistant message."""
        return self.with_message(Role.ASSISTANT, content)

    def with_system_message(self, content: str) -> StateBuilder:
        """Append a system message."""
        return self.with_message(Role.SYSTEM, content)

    def with_extra(self, key: str, value: Any) -> StateBuilder:
        """Set ``extra[key]``."""
        if not isinstance(key, str):
            raise StateError(f"extra keys must be strings, got {key!r}")
        self._extra[key] = value
        return self

    def build(self) -> VersionedState:
        """The finished state."""
        return VersionedState(messages=list(self._messages), extra=dict(self._extra))


# ----------------------------------------------------------------- node partials


def _to_targets(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise StateError(
            f"frontier commands take a list of node names, got {value!r};"
            " write Replace(['node']) rather than Replace('node')"
        )
    targets = tuple(value)
    for target in targets:
        if not isinstance(target, str):
            raise StateError(f"frontier targets must be node names, got {target!r}")
    return targets


@attrs.frozen
class Replace:
    """Frontier command: this node's next targets are exactly ``targets``.

    It replaces the node's unconditional edges and suppresses its routers;
    ``Replace([])`` ends this branch.
    """

    targets: tuple[str, ...] = attrs.field(converter=_to_targets)


@attrs.frozen
class Append:
    """Frontier command: follow this node's edges and routers, plus ``targets``."""

    targets: tuple[str, ...] = attrs.field(converter=_to_targets)


FrontierCommand = Replace | Append


def _partial_messages(value: object) -> tuple[Message, ...] | None:
    if value is None:
        return None
    if isinstance(value, Message):
        raise StateError("NodePartial(messages=...) takes a list: wrap it as [message]")
    return tuple(_to_history(Message, "NodePartial.messages")(value))


def _partial_errors(value: object) -> tuple[ErrorEvent, ...] | None:
    if value is None:
        return None
    if isinstance(value, ErrorEvent):
        raise StateError("NodePartial(errors=...) takes a list: wrap it as [error]")
    return tuple(_to_history(ErrorEvent, "NodePartial.errors")(value))


def _partial_extra(value: object) -> Mapping[str, Any] | None:
    return None if value is None else freeze_extra(value)


def _check_frontier(_: object, __: object, value: Any) -> None:
    if value is not None and not isinstance(value, Replace | Append):
        raise StateError(
            f"NodePartial(frontier=...) takes Replace([...]) or Append([...]),"
            f" got {value!r}"
        )


@attrs.frozen(kw_only=True)
class NodePartial:
    """A node's sparse update, merged by the barrier at the end of the superstep.

    Args:
        messages: Messages to append.
        extra: Keys to set in ``extra``; a ``None`` value deletes the key.
        errors: Recoverable `ErrorEvent` s to record (the run goes on).
        frontier: A `Replace` or `Append` command steering the next frontier.
    """

    EMPTY: ClassVar[NodePartial]

    messages: tuple[Message, ...] | None = attrs.field(
        default=None, converter=_partial_messages
    )
    extra: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_partial_extra
    )
    errors: tuple[ErrorEvent, ...] | None = attrs.field(
        default=None, converter=_partial_errors
    )
    frontier: FrontierCommand | None = attrs.field(
        default=None, validator=_check_frontier
    )


NodePartial.EMPTY = NodePartial()
