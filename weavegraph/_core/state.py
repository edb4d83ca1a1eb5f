"""Messages, the versioned three-channel state, snapshots and node partials.

The state is immutable. Appending to a channel returns a new `History` that shares
its storage with the old one (see `History`), so taking a snapshot or merging a
superstep never copies the conversation.
"""

from __future__ import annotations

import enum
import itertools
import json
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


def _check_text(value: object, what: str) -> str:
    """``value`` if it is a non-empty string of valid Unicode text."""
    if not isinstance(value, str) or not value:
        raise StateError(f"{what} must be a non-empty string, got {value!r}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StateError(
                f"{what} holds a lone surrogate, which is not valid Unicode text"
            ) from None
    return value


def _check_optional_text(what: str) -> Any:
    def check(_: object, __: object, value: Any) -> None:
        if value is not None:
            _check_text(value, what)

    return check


_NO_MAPPING: dict[str, Any] = {}
"""The shared empty default of `Message.metadata` and `ToolCall.arguments`.

Never written to: those fields are only ever read through a read-only view."""


def _storable_mapping(value: object, what: str) -> dict[str, Any]:
    if value is _NO_MAPPING:
        return _NO_MAPPING
    if not isinstance(value, Mapping):
        raise StateError(
            f"{what} must be a mapping with string keys, got"
            f" {type(value).__name__}: {value!r:.80}"
        )
    data = dict(value)
    if not data:
        return _NO_MAPPING
    for key, item in data.items():
        if type(key) is not str:
            raise StateError(f"{what} keys must be strings, got {key!r}")
        found = _check_value(item, f"{what}[{json.dumps(key, ensure_ascii=False)}]")
        if found is not None:
            raise StateError(f"cannot store {found.path}: {found.reason}")
    return data


def _to_arguments(value: object) -> dict[str, Any]:
    return _storable_mapping(value, "ToolCall.arguments")


def _to_metadata(value: object) -> dict[str, Any]:
    return _storable_mapping(value, "Message.metadata")


def _json_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """Where ``value`` is not plain JSON (tuples count as arrays), or ``None``."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return None
    if cls is float:
        if value - value == 0.0:
            return None
        return f"{path} is {value!r}, which JSON cannot hold"
    if depth >= 100:
        return f"{path} nests too deeply"
    if cls is list or cls is tuple:
        for index, item in enumerate(value):
            found = _json_problem(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
        return None
    if cls is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has the key {key!r}; JSON object keys are strings"
            found = _json_problem(
                item, f"{path}[{json.dumps(key, ensure_ascii=False)}]", depth + 1
            )
            if found is not None:
                return found
        return None
    return f"{path} is a {cls.__qualname__}, which JSON cannot hold"


@attrs.frozen(repr=False)
class ToolCall:
    """One tool (function) call that a model asked for.

    ``ToolCall("call_1", "search", {"query": "trio"})``. It reads and writes the
    OpenAI chat format with `from_openai` and `to_openai`; answer it with
    `Message.tool_result`.

    Args:
        id: The call's id, unique within its message; the tool's answer names
            it as its ``tool_call_id``.
        name: The tool's name.
        arguments: The arguments (string keys, values of the storable domain;
            the model sends JSON). Kept as a copy and shown read-only.

    Raises:
        StateError: a field has the wrong type; the message names it.
    """

    id: str = attrs.field(validator=lambda _, __, v: _check_text(v, "ToolCall.id"))
    name: str = attrs.field(validator=lambda _, __, v: _check_text(v, "ToolCall.name"))
    # A private dict behind a read-only view: the record stays immutable, and
    # its stored form (a registered attrs record) holds a plain dict.
    _arguments: dict[str, Any] = attrs.field(
        default=_NO_MAPPING,
        alias="arguments",
        converter=_to_arguments,
        hash=False,
    )

    @property
    def arguments(self) -> Mapping[str, Any]:
        """The arguments, read-only."""
        return MappingProxyType(self._arguments)

    def __repr__(self) -> str:
        return (
            f"ToolCall(id={self.id!r}, name={self.name!r},"
            f" arguments={self._arguments!r})"
        )

    @classmethod
    def from_openai(cls, obj: Mapping[str, Any]) -> ToolCall:
        """Parse one entry of an OpenAI chat message's ``tool_calls``.

        ``{"id": "call_1", "type": "function", "function": {"name": "search",
        "arguments": "{\\"query\\": \\"trio\\"}"}}``. The arguments are JSON
        text (empty text means no arguments); an object is accepted too, as some
        OpenAI-compatible servers send one. For the ``openai`` client's objects,
        pass ``call.model_dump()``.

        Raises:
            StateError: ``obj`` is not such an object, its type is not
                ``"function"``, or its arguments are not a JSON object.
        """
        if not isinstance(obj, Mapping):
            raise StateError(
                "an OpenAI tool call is an object, got"
                f" {type(obj).__name__}: {obj!r:.80}"
            )
        kind = obj.get("type", "function")
        if kind != "function":
            raise StateError(
                f"only function tool calls are supported, got type {kind!r}"
            )
        function = obj.get("function")
        if not isinstance(function, Mapping):
            raise StateError(
                f"an OpenAI tool call needs a 'function' object, got {function!r:.80}"
            )
        name = function.get("name")
        raw = function.get("arguments", "")
        arguments: Any
        if isinstance(raw, Mapping):
            arguments = raw
        elif isinstance(raw, str):
            if not raw.strip():
                arguments = {}
            else:
                try:
                    arguments = json.loads(raw)
                except ValueError as exc:
                    raise StateError(
                        f"the arguments of tool call {obj.get('id')!r} ({name!r})"
                        f" are not valid JSON: {exc}"
                    ) from None
                if not isinstance(arguments, dict):
                    raise StateError(
                        f"the arguments of tool call {obj.get('id')!r} ({name!r})"
                        f" must be a JSON object, got {raw!r:.80}"
                    )
        else:
            raise StateError(
                "an OpenAI tool call's function.arguments is JSON text, got"
                f" {type(raw).__name__}: {raw!r:.80}"
            )
        return cls(obj.get("id"), name, arguments)  # type: ignore[arg-type]

    def to_openai(self) -> dict[str, Any]:
        """This call in the OpenAI chat format (arguments as compact JSON text).

        Raises:
            StateError: an argument is not plain JSON (a set, bytes, a datetime
                …), so the model could not read it; tuples become arrays.
        """
        problem = _json_problem(self._arguments, "ToolCall.arguments")
        if problem is not None:
            raise StateError(f"cannot render the call {self.id!r} as JSON: {problem}")
        text = json.dumps(self._arguments, ensure_ascii=False, separators=(",", ":"))
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": text},
        }


def _to_tool_calls(value: object) -> tuple[ToolCall, ...]:
    if type(value) is tuple and not value:
        return ()
    if isinstance(value, str | bytes | Mapping | ToolCall) or not isinstance(
        value, Iterable
    ):
        raise StateError(
            f"Message.tool_calls must be a list of ToolCall, got {value!r:.80}"
        )
    calls = tuple(value)
    seen: set[str] = set()
    for call in calls:
        if type(call) is not ToolCall:
            raise StateError(
                "Message.tool_calls must contain only ToolCall objects, got"
                f" {type(call).__name__}: {call!r:.80}; build one with"
                " ToolCall(id, name, arguments) or ToolCall.from_openai(obj)"
            )
        if call.id in seen:
            raise StateError(
                f"Message.tool_calls holds two calls with the id {call.id!r};"
                " a tool result names its call by id, so ids must be unique"
            )
        seen.add(call.id)
    return calls


@attrs.frozen(repr=False)
class Message:
    """One chat message, with what tool-calling chat APIs use.

    ``Message("user", "hi")``; the helpers `user`, `assistant` (which takes tool
    calls), `system`, `tool` and `tool_result` build the usual ones, and
    `from_openai` / `to_openai` read and write the OpenAI chat format. All
    fields but ``role`` and ``content`` are keyword-only and optional, and a
    checkpoint keeps every one of them exactly.

    Args:
        role: A `Role` or any other non-empty string (a custom role).
        content: The text (``""`` for an assistant message that only calls
            tools).
        tool_calls: The `ToolCall` s an assistant message asks for (ids unique).
        tool_call_id: On a tool message, the id of the call it answers.
        name: The tool's name on a tool message, or a participant's name.
        metadata: Free data (string keys, values of the storable domain), kept
            as a copy and shown read-only. Not sent to a model by `to_openai`.

    Raises:
        StateError: a field has the wrong type; the message names the field.
    """

    role: str = attrs.field(converter=_to_role)
    content: str = attrs.field(validator=_check_content)
    tool_calls: tuple[ToolCall, ...] = attrs.field(
        default=(), converter=_to_tool_calls, kw_only=True
    )
    tool_call_id: str | None = attrs.field(
        default=None,
        validator=_check_optional_text("Message.tool_call_id"),
        kw_only=True,
    )
    name: str | None = attrs.field(
        default=None, validator=_check_optional_text("Message.name"), kw_only=True
    )
    # A private dict behind a read-only view, as in `ToolCall.arguments`.
    _metadata: dict[str, Any] = attrs.field(
        default=_NO_MAPPING,
        alias="metadata",
        converter=_to_metadata,
        hash=False,
        kw_only=True,
    )

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The free metadata, read-only."""
        return MappingProxyType(self._metadata)

    def __repr__(self) -> str:
        parts = [f"role={str(self.role)!r}", f"content={self.content!r}"]
        if self.tool_calls:
            parts.append(f"tool_calls={self.tool_calls!r}")
        if self.tool_call_id is not None:
            parts.append(f"tool_call_id={self.tool_call_id!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        if self._metadata:
            parts.append(f"metadata={self._metadata!r}")
        return f"Message({', '.join(parts)})"

    @classmethod
    def user(cls, content: str) -> Message:
        """A message with role ``user``."""
        return cls(Role.USER, content)

    @classmethod
    def assistant(
        cls, content: str = "", *, tool_calls: Iterable[ToolCall] = ()
    ) -> Message:
        """A message with role ``assistant``, optionally calling tools.

        Args:
            content: The text; often empty when the message calls tools.
            tool_calls: The calls the model asked for.
        """
        return cls(Role.ASSISTANT, content, tool_calls=tool_calls)

    @classmethod
    def system(cls, content: str) -> Message:
        """A message with role ``system``."""
        return cls(Role.SYSTEM, content)

    @classmethod
    def tool(
        cls,
        content: str,
        *,
        tool_call_id: str | None = None,
        name: str | None = None,
    ) -> Message:
        """A message with role ``tool`` (see `tool_result` to answer a call)."""
        return cls(Role.TOOL, content, tool_call_id=tool_call_id, name=name)

    @classmethod
    def tool_result(cls, call: ToolCall, content: str) -> Message:
        """The tool message answering ``call``: role ``tool``, its id and name.

        Args:
            call: The call this message answers.
            content: The tool's result as text (serialise structured results,
                for example with ``json.dumps``).

        Raises:
            StateError: ``call`` is not a `ToolCall`, or ``content`` not text.
        """
        if not isinstance(call, ToolCall):
            raise StateError(
                f"Message.tool_result answers a ToolCall, got {type(call).__name__}"
            )
        return cls(Role.TOOL, content, tool_call_id=call.id, name=call.name)

    @classmethod
    def from_openai(cls, obj: Mapping[str, Any]) -> Message:
        """Parse an OpenAI chat message (a request's or a response's).

        ``content`` may be ``None`` (an assistant message that only calls tools)
        or a list of text parts, which are joined; ``tool_calls`` entries are
        parsed by `ToolCall.from_openai`. Other keys are ignored.

        Raises:
            StateError: ``obj`` is not such an object, or a part is malformed.
        """
        if not isinstance(obj, Mapping):
            raise StateError(
                f"an OpenAI chat message is an object, got {type(obj).__name__}"
            )
        content: Any = obj.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            texts: list[str] = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    raise StateError(
                        f"only text content parts are supported, got {part!r:.80}"
                    )
                text = part.get("text")
                if not isinstance(text, str):
                    raise StateError("a text content part needs a string 'text'")
                texts.append(text)
            content = "".join(texts)
        calls = obj.get("tool_calls") or ()
        if isinstance(calls, str | bytes | Mapping) or not isinstance(calls, Iterable):
            raise StateError(
                f"an OpenAI message's tool_calls is a list, got {calls!r:.80}"
            )
        return cls(
            obj.get("role"),
            content,
            tool_calls=[ToolCall.from_openai(c) for c in calls],
            tool_call_id=obj.get("tool_call_id"),
            name=obj.get("name"),
        )

    def to_openai(self) -> dict[str, Any]:
        """This message in the OpenAI chat format (``metadata`` is left out).

        An assistant message that only calls tools gets ``"content": None``, as
        the API expects.

        Raises:
            StateError: a tool call's arguments are not plain JSON.
        """
        out: dict[str, Any] = {"role": str(self.role), "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
            if not self.content:
                out["content"] = None
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


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


@attrs.frozen
class Send:
    """A task for the next superstep: run ``node`` once with ``payload``.

    Routers and frontier commands return a list of them (mixed with plain names
    if they like) to fan out over data known only at run time: each `Send` is
    its own task, so one node may run any number of times in one step, each
    reading its own payload as ``ctx.payload``. Their partials merge at the
    barrier in send order. ``payload`` must be a storable value (it is part of
    the checkpoint until the task has run).
    """

    node: str
    payload: Any = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.node, str) or not self.node:
            raise StateError(
                f"Send(node, payload) takes a node name, got {self.node!r}"
            )
        found = _check_value(self.payload, f"the payload of Send({self.node!r})")
        if found is not None:
            raise StateError(f"cannot send {found.path}: {found.reason}")


Target = str | Send
"""A frontier target: a node name, or a `Send` of a payload to a node."""


def _to_targets(value: object) -> tuple[Target, ...]:
    if isinstance(value, str | Send) or not isinstance(value, Iterable):
        raise StateError(
            f"frontier commands take a list of node names (or Send items), got"
            f" {value!r}; write Replace(['node']) rather than Replace('node')"
        )
    targets = tuple(value)
    for target in targets:
        if not isinstance(target, str | Send):
            raise StateError(
                f"frontier targets must be node names or Send items, got {target!r}"
            )
    return targets


@attrs.frozen
class Replace:
    """Frontier command: this node's next targets are exactly ``targets``.

    It replaces the node's unconditional edges and suppresses its routers;
    ``Replace([])`` ends this branch. Targets are node names or `Send` items.
    """

    targets: tuple[Target, ...] = attrs.field(converter=_to_targets)


@attrs.frozen
class Append:
    """Frontier command: follow this node's edges and routers, plus ``targets``."""

    targets: tuple[Target, ...] = attrs.field(converter=_to_targets)


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


# ``values`` reads this module at its import (it registers `Message`), so it is
# imported last, when `Message` and `ToolCall` exist, whichever module loads first.
from .values import check_value as _check_value  # noqa: E402
from .values import register_type as _register_type  # noqa: E402

_register_type(ToolCall)
