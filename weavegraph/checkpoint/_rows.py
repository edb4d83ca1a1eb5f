"""The stored row format of the SQL checkpointers: encoding, folding, checking.

One row per stored step. A row does not repeat the history; it holds what the
step changed relative to its *base* row (``base_step``: the session's latest
row when it was written), per part:

* ``messages_json`` / ``errors_json``: the items appended (``{"append": [...]}``,
  or ``""`` when none), or the whole list (``{"reset": [...]}``) when the list
  was rewritten (a custom reducer) or the row has no base;
* ``state_json``: the ``extra`` keys set or deleted (``{"set": {...},
  "delete": [...]}``) or the whole map (``{"reset": {...}}``), the three
  channel versions, and the counts of messages, errors and ``extra`` keys after
  the step;
* ``seen_json``: the version-gating entries, as a delta or whole, like ``extra``;
* frontier, join progress and the step's metadata, whole.

Three columns make loading a step read a bounded number of rows however long
the session is. ``snap_step`` is the row of the step's chain that holds
``extra`` and the gating memory whole (a *snapshot*, written every
`SNAPSHOT_EVERY` rows, so folding them reads at most that many rows);
``mroot``/``eroot`` are the rows where the step's message/error list was last
stored whole, so its history is read from the rows that appended to it, in one
indexed range. Deltas are only ever written on top of the session's latest row,
which makes the rows that share a root exactly the step's ancestors.

A row's ``digest`` covers every column; loading also checks every field (types,
ranges, the chain, the counts), so a row edited outside weavegraph is reported
as a `CheckpointError` naming the session and the step, never loaded wrong.

Every value of ``extra``, every message and every error goes through the value
seam below (`encode_value` … `decode_error`), which is the one place that knows
how values become JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import attrs
from cattrs.errors import BaseValidationError

from .._codec import converter, decode_target, dumps, encode_extra, encode_target, loads
from .._codec import decode_value as _decode_value
from .._codec import encode_value as _encode_value
from .._core.errors import CheckpointError, ErrorEvent, StateError
from .._core.state import History, Message, Send, VersionedState, Versions
from .record import Checkpoint

SNAPSHOT_EVERY = 64
"""A row holds ``extra`` and the gating memory whole at least every this many rows."""

SNAPSHOT_WEIGHT = 4
"""...and as soon as the deltas since the last snapshot weigh this many times it.

So snapshots add at most a quarter to the bytes of those deltas, and a small
state (cheap to store whole) is read back from a few rows, not 64."""

ROW_FORMAT = 3


# ---------------------------------------------------------------- value seam


def encode_value(value: Any, path: str = "value") -> Any:
    """The JSON form of one stored value (an ``extra`` value, a pending record's).

    Raises:
        StateError: ``value`` is outside the storable domain; the message names
            ``path``.
    """
    return _encode_value(value, path)


def decode_value(doc: Any) -> Any:
    """The value stored as ``doc`` by `encode_value`.

    Raises:
        ValueError: ``doc`` is a malformed encoding.
    """
    try:
        return _decode_value(doc)
    except StateError as exc:
        raise ValueError(str(exc)) from exc


def _key_path(root: str, key: str) -> str:
    return f"{root}[{json.dumps(key, ensure_ascii=False)}]"


def encode_message(message: Message) -> Any:
    """The JSON form of a message."""
    return converter.unstructure(message, Message)


def decode_message(doc: Any) -> Message:
    """The message stored as ``doc``."""
    if not isinstance(doc, dict):
        raise ValueError(f"a message must be an object, got {doc!r}")
    return converter.structure(doc, Message)


def encode_error(error: ErrorEvent) -> Any:
    """The JSON form of an error event."""
    return converter.unstructure(error, ErrorEvent)


def decode_error(doc: Any) -> ErrorEvent:
    """The error event stored as ``doc``."""
    if not isinstance(doc, dict):
        raise ValueError(f"an error event must be an object, got {doc!r}")
    return converter.structure(doc, ErrorEvent)


def _json(value: Any) -> str:
    return dumps(value)


# ------------------------------------------------------------------ the rows


class StepRow(NamedTuple):
    """One stored step, as it sits in the ``steps`` table (columns in order)."""

    session_id: str
    step: int
    base_step: int | None
    parent_step: int | None
    snap_step: int
    mroot: int
    eroot: int
    created_at: str
    state_json: str
    messages_json: str
    errors_json: str
    seen_json: str
    frontier_json: str
    joins_json: str
    ran_nodes_json: str
    skipped_nodes_json: str
    updated_channels_json: str
    digest: str = ""

    def content_digest(self) -> str:
        """The digest of every column but ``digest``."""
        return row_digest(self)


COLUMNS = (
    "session_id",
    "step",
    "base_step",
    "parent_step",
    "snap_step",
    "mroot",
    "eroot",
    "created_at",
    "state_json",
    "messages_json",
    "errors_json",
    "seen_json",
    "frontier_json",
    "joins_json",
    "ran_nodes_json",
    "skipped_nodes_json",
    "updated_channels_json",
    "digest",
)
"""The ``steps`` columns in `StepRow` order."""

_INT_COLUMNS = ("step", "snap_step", "mroot", "eroot")
_OPTIONAL_INT_COLUMNS = ("base_step", "parent_step")
_TEXT_COLUMNS = COLUMNS[7:]


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def row_digest(row: StepRow) -> str:
    """The digest stored in the ``digest`` column: a CRC-32 of every other column.

    It catches rows edited by hand or damaged (a forger who recomputes it is
    caught by the field checks on load instead).
    """
    text = "\x1f".join(
        (
            row.session_id,
            str(row.step),
            _text(row.base_step),
            _text(row.parent_step),
            str(row.snap_step),
            str(row.mroot),
            str(row.eroot),
            row.created_at,
            row.state_json,
            row.messages_json,
            row.errors_json,
            row.seen_json,
            row.frontier_json,
            row.joins_json,
            row.ran_nodes_json,
            row.skipped_nodes_json,
            row.updated_channels_json,
        )
    )
    return format(zlib.crc32(text.encode()), "08x")


def row_values(row: StepRow) -> tuple[Any, ...]:
    """The row's column values, in `COLUMNS` order."""
    return tuple(row)


def _step_like(value: Any) -> bool:
    return type(value) is int and value >= 0


def row_from(record: Sequence[Any], session_id: str) -> StepRow:
    """A `StepRow` from a database record in `COLUMNS` order, types checked.

    Raises:
        CheckpointError: a column holds the wrong type (hand-edited).
    """
    if (
        len(record) == len(COLUMNS)
        and record[0] == session_id
        and _step_like(record[1])
        and (record[2] is None or _step_like(record[2]))
        and (record[3] is None or _step_like(record[3]))
        and _step_like(record[4])
        and _step_like(record[5])
        and _step_like(record[6])
    ):
        # Text columns are checked by the digest (joining them fails otherwise).
        return StepRow._make(record)
    values = dict(zip(COLUMNS, record, strict=True))
    where = f"session {session_id!r} at step {values['step']!r}"
    if values["session_id"] != session_id:
        raise _corrupt_where(where, "wrong session id")
    for name in _INT_COLUMNS:
        if not _step_like(values[name]):
            raise _corrupt_where(where, f"{name} is {values[name]!r}, not a step")
    for name in _OPTIONAL_INT_COLUMNS:
        value = values[name]
        if value is not None and not _step_like(value):
            raise _corrupt_where(where, f"{name} is {value!r}, not a step")
    raise _corrupt_where(where, f"it has {len(record)} columns")


def _corrupt_where(where: str, what: str) -> CheckpointError:
    return CheckpointError(f"corrupt checkpoint row for {where}: {what}")


def corrupt(session_id: str, step: int, what: str) -> CheckpointError:
    """The error for a malformed stored step."""
    return CheckpointError(
        f"corrupt checkpoint row for session {session_id!r} at step {step}: {what}"
    )


# ------------------------------------------------------------------ encoding


@attrs.frozen(kw_only=True)
class Stored:
    """A checkpoint as stored: the base a writer's next delta is relative to.

    Attributes:
        checkpoint: The checkpoint.
        digest: Its row's digest (the write checks the base is still stored so).
        snap_step: Its chain's snapshot row.
        mroot: Where its message list was last stored whole.
        eroot: Where its error list was last stored whole.
        depth: Rows after the snapshot row in its chain (0: it is one).
        snap_bytes: Bytes of the snapshot row's ``extra`` and gating parts.
        delta_bytes: Bytes of those parts in the rows after it, this one included.
    """

    checkpoint: Checkpoint
    digest: str
    snap_step: int
    mroot: int
    eroot: int
    depth: int
    snap_bytes: int
    delta_bytes: int


def _list_part(
    new: History[Any], old: History[Any] | None, encode: Callable[[Any], Any]
) -> tuple[str, bool]:
    """(the JSON of a list's delta, whether it is stored whole)."""
    if old is not None:
        added = new.suffix_after(old)
        if added is not None:
            if not added:
                return "", False
            return _json({"append": [encode(i) for i in added]}), False
    return _json({"reset": [encode(i) for i in new]}), True


def _extra_delta(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    # By identity: the barrier keeps the objects of keys no node wrote, and an
    # equality test would miss 1 -> True, {1} -> frozenset({1}), 1 -> 1.0.
    missing = object()
    changed = {
        k: encode_value(v, _key_path("extra", k))
        for k, v in new.items()
        if old.get(k, missing) is not v
    }
    delta: dict[str, Any] = {"set": changed}
    if len(old) > len(new) - sum(1 for k in changed if k not in old):
        delta["delete"] = sorted(old.keys() - new.keys())
    return delta


def _seen_delta(
    new: Mapping[str, tuple[int, int]], old: Mapping[str, tuple[int, int]]
) -> dict[str, Any]:
    changed = dict(new.items() - old.items())
    delta: dict[str, Any] = {"set": changed}
    if len(old) > len(new) - sum(1 for k in changed if k not in old):
        delta["delete"] = sorted(old.keys() - new.keys())
    return delta


def _utc_text(value: _dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC).isoformat()


def _state_json(state: VersionedState, extra: dict[str, Any]) -> str:
    versions = state.versions
    return _json(
        {
            "extra": extra,
            "versions": [versions.messages, versions.extra, versions.errors],
            "counts": [len(state.messages), len(state.errors), len(state.extra)],
        }
    )


def _whole_parts(checkpoint: Checkpoint) -> tuple[str, str]:
    return (
        _state_json(checkpoint.state, {"reset": encode_extra(checkpoint.state.extra)}),
        _json({"reset": dict(checkpoint.versions_seen)}),
    )


def encode_row(checkpoint: Checkpoint, base: Stored | None) -> tuple[StepRow, Stored]:
    """The row for ``checkpoint`` as a delta from ``base`` (``None``: whole).

    ``base`` must be the session's latest stored step, and ``checkpoint`` must
    come after it; the write checks both in its transaction. The row holds
    ``extra`` and the gating memory whole (a snapshot) when the deltas since
    the last snapshot weigh `SNAPSHOT_WEIGHT` times as much, and at least every
    `SNAPSHOT_EVERY` rows.
    Returns the row and what the next row of the session may be based on.
    Pure CPU work.
    """
    state = checkpoint.state
    step = checkpoint.step
    if base is not None and base.checkpoint.step >= step:
        base = None
    messages_json, m_whole = _list_part(
        state.messages, base.checkpoint.state.messages if base else None, encode_message
    )
    errors_json, e_whole = _list_part(
        state.errors, base.checkpoint.state.errors if base else None, encode_error
    )
    snap_step, depth, delta_bytes = step, 0, 0
    if base is None:
        state_json, seen_json = _whole_parts(checkpoint)
    else:
        old = base.checkpoint
        state_json = _state_json(state, _extra_delta(state.extra, old.state.extra))
        seen_json = _json(_seen_delta(checkpoint.versions_seen, old.versions_seen))
        size = len(state_json) + len(seen_json)
        if (
            base.depth + 1 >= SNAPSHOT_EVERY
            or base.delta_bytes + size >= SNAPSHOT_WEIGHT * base.snap_bytes
        ):
            state_json, seen_json = _whole_parts(checkpoint)
        else:
            snap_step, depth = base.snap_step, base.depth + 1
            delta_bytes = base.delta_bytes + size
    row = StepRow(
        session_id=checkpoint.session_id,
        step=step,
        base_step=None if base is None else base.checkpoint.step,
        parent_step=checkpoint.parent_step,
        snap_step=snap_step,
        mroot=step if m_whole or base is None else base.mroot,
        eroot=step if e_whole or base is None else base.eroot,
        created_at=_utc_text(checkpoint.created_at),
        state_json=state_json,
        messages_json=messages_json,
        errors_json=errors_json,
        seen_json=seen_json,
        frontier_json=_json(
            [*checkpoint.frontier, *map(encode_target, checkpoint.sends)]
            if checkpoint.sends
            else list(checkpoint.frontier)
        ),
        joins_json=_json({k: sorted(v) for k, v in checkpoint.join_progress.items()}),
        ran_nodes_json=_json(list(checkpoint.ran_nodes)),
        skipped_nodes_json=_json(list(checkpoint.skipped_nodes)),
        updated_channels_json=_json(list(checkpoint.updated_channels)),
    )
    row = row._replace(digest=row.content_digest())
    stored = Stored(
        checkpoint=checkpoint,
        digest=row.digest,
        snap_step=row.snap_step,
        mroot=row.mroot,
        eroot=row.eroot,
        depth=depth,
        snap_bytes=(len(state_json) + len(seen_json))
        if depth == 0
        else base.snap_bytes,  # type: ignore[union-attr]
        delta_bytes=delta_bytes,
    )
    return row, stored


def plan_session(
    checkpoints: Sequence[Checkpoint], tip: Stored | None
) -> list[tuple[StepRow, Stored, bool]]:
    """Encode one session's checkpoints, in order, each on the previous tip.

    Returns (row, what it stores, whether it becomes the tip). A checkpoint
    that does not come after the tip (an out-of-order save) is stored whole
    and leaves the tip alone.
    """
    out: list[tuple[StepRow, Stored, bool]] = []
    for checkpoint in checkpoints:
        on_top = tip is None or checkpoint.step > tip.checkpoint.step
        row, stored = encode_row(checkpoint, tip if on_top else None)
        out.append((row, stored, on_top))
        if on_top:
            tip = stored
    return out


# ------------------------------------------------------------- pending records


@attrs.frozen(kw_only=True)
class PendingRow:
    """A session's pending record, as it sits in the ``pending`` table."""

    session_id: str
    base_step: int
    created_at: str
    value_json: str
    digest: str


def _pending_digest(sid: str, base_step: int, created_at: str, value: str) -> str:
    text = "\x1f".join((sid, str(base_step), created_at, value))
    return format(zlib.crc32(text.encode()), "08x")


def encode_pending(
    session_id: str, base_step: int, value: Mapping[str, Any]
) -> PendingRow:
    """The row for a pending record (its values through the value seam)."""
    if not isinstance(value, Mapping):
        raise CheckpointError(
            f"a pending record is a mapping with string keys, got {value!r}"
        )
    for key in value:
        if not isinstance(key, str):
            raise CheckpointError(f"pending record keys must be strings, got {key!r}")
    created = _utc_text(_dt.datetime.now(_dt.UTC))
    text = _json(
        {k: encode_value(v, _key_path("pending", k)) for k, v in value.items()}
    )
    return PendingRow(
        session_id=session_id,
        base_step=base_step,
        created_at=created,
        value_json=text,
        digest=_pending_digest(session_id, base_step, created, text),
    )


def decode_pending(
    record: Sequence[Any], session_id: str, last_step: int
) -> Mapping[str, Any]:
    """The pending record of a ``pending`` row (base_step, created_at, value, digest).

    Raises:
        CheckpointError: the row is malformed or not attached to the latest step.
    """
    base_step, created_at, text, digest = record
    if type(base_step) is not int or base_step != last_step:
        raise CheckpointError(
            f"corrupt pending record for session {session_id!r}: attached to step"
            f" {base_step!r}, but the latest step is {last_step}"
        )
    where = f"corrupt pending record for session {session_id!r} at step {base_step}"
    if not (isinstance(created_at, str) and isinstance(text, str)):
        raise CheckpointError(f"{where}: a column is not text")
    if digest != _pending_digest(session_id, base_step, created_at, text):
        raise CheckpointError(
            f"{where}: its content does not match its digest (was it edited"
            " outside weavegraph?)"
        )
    try:
        parse_time(created_at)
        doc = loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return MappingProxyType({k: decode_value(v) for k, v in doc.items()})
    except (ValueError, TypeError, KeyError, BaseValidationError) as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def copy_pending(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """``value`` as a store hands it back: through the value seam and JSON."""
    row = encode_pending("", 0, value)
    return MappingProxyType(
        {k: decode_value(v) for k, v in loads(row.value_json).items()}
    )


# ------------------------------------------------------------------- decoding


def parse_time(text: Any) -> _dt.datetime:
    """A stored timestamp: ISO 8601 text with an offset.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(text, str):
        raise ValueError(f"a timestamp must be text, got {text!r}")
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return value


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must hold a list, got {type(value).__name__}")
    return value


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must hold an object, got {type(value).__name__}")
    return value


def _frontier(value: Any) -> tuple[list[str], list[Send]]:
    """A stored frontier: node names, then the sent tasks (``{"send": ...}``)."""
    names: list[str] = []
    sends: list[Send] = []
    for entry in _as_list(value, "frontier"):
        if isinstance(entry, str):
            if sends:
                raise ValueError("frontier names come before its sent tasks")
            names.append(entry)
        else:
            try:
                target = decode_target(entry)
            except StateError as exc:
                raise ValueError(str(exc)) from None
            assert isinstance(target, Send)
            sends.append(target)
    return names, sends


def _names(value: Any, what: str) -> list[str]:
    names = _as_list(value, what)
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{what} must hold node names, got {name!r}")
    return names


def _seen_pair(value: Any, node: str) -> tuple[int, int]:
    if (
        type(value) is list
        and len(value) == 2
        and type(value[0]) is int
        and type(value[1]) is int
        and value[0] >= 0
        and value[1] >= 0
    ):
        return (value[0], value[1])
    raise ValueError(
        f"the gating entry of {node!r} must be two ints >= 0, got {value!r}"
    )


_CHANNELS = ("messages", "extra", "errors")


def _map_part(delta: Any, what: str) -> tuple[bool, dict[str, Any], list[str]]:
    """(whole?, keys set, keys deleted) of a map delta."""
    if type(delta) is dict:
        size = len(delta)
        if size == 1:
            reset = delta.get("reset")
            if type(reset) is dict:
                return True, reset, []
            changed = delta.get("set")
            if type(changed) is dict:
                return False, changed, []
        elif size == 2:
            changed, deleted = delta.get("set"), delta.get("delete")
            if type(changed) is dict and type(deleted) is list:
                for key in deleted:
                    if type(key) is not str:
                        raise ValueError(
                            f"{what} deletes a key that is not text: {key!r}"
                        )
                return False, changed, deleted
    raise ValueError(f"{what} must hold 'set' (and 'delete') or 'reset'")


def _list_doc(text: str, what: str) -> tuple[bool, list[Any]]:
    """(whole?, items) of a list part."""
    if text == "":
        return False, []
    doc = _as_dict(loads(text), what)
    if set(doc) == {"reset"}:
        return True, _as_list(doc["reset"], what)
    if set(doc) == {"append"}:
        items = _as_list(doc["append"], what)
        if not items:
            raise ValueError(
                f"{what} appends nothing (an empty append is stored as '')"
            )
        return False, items
    raise ValueError(f"{what} must hold 'append' or 'reset'")


class _Parsed:
    """The parts of a row that a fold needs, checked."""

    __slots__ = ("counts", "extra", "row", "seen", "versions")

    def __init__(self, row: StepRow) -> None:
        self.row = row
        doc = loads(row.state_json)
        if type(doc) is not dict or doc.keys() != {"extra", "versions", "counts"}:
            raise ValueError("state must hold exactly extra, versions and counts")
        versions, counts = doc["versions"], doc["counts"]
        if type(versions) is not list or len(versions) != 3:
            raise ValueError("versions must hold three numbers")
        if type(counts) is not list or len(counts) != 3:
            raise ValueError("counts must hold three numbers")
        for name, version in zip(_CHANNELS, versions, strict=True):
            if type(version) is not int or version < 1:
                raise ValueError(
                    f"the {name} version must be an int >= 1, got {version!r}"
                )
        for count in counts:
            if type(count) is not int or count < 0:
                raise ValueError(f"a count must be an int >= 0, got {count!r}")
        self.versions: list[int] = versions
        self.counts: list[int] = counts
        self.extra = _map_part(doc["extra"], "extra")
        self.seen = _map_part(loads(row.seen_json), "versions_seen")


def check_structure(row: StepRow) -> None:
    """The checks a row passes on its own: digest and chain columns.

    Raises:
        CheckpointError: naming the session and the step.
    """
    sid, step, base, parent = row.session_id, row.step, row.base_step, row.parent_step
    try:
        intact = bool(row.digest) and row.digest == row.content_digest()
    except TypeError:  # a text column holds a number
        raise corrupt(
            sid, step, "a column that holds text holds something else"
        ) from None
    if not intact:
        raise corrupt(
            sid,
            step,
            "its content does not match its digest (was it edited outside weavegraph?)",
        )
    if base is not None and base >= step:
        raise corrupt(sid, step, f"base_step {base} does not come before it")
    if parent is not None and parent >= step:
        raise corrupt(sid, step, f"parent_step {parent} does not come before it")
    for name, value in (("snap_step", row.snap_step), ("mroot", row.mroot),
                        ("eroot", row.eroot)):  # fmt: skip
        if value != step and (base is None or value > base):
            raise corrupt(sid, step, f"{name} {value} is not in its chain")


class _Chained(NamedTuple):
    """A wanted step as its snapshot chain leaves it."""

    parsed: _Parsed
    extra: Mapping[str, Any]
    seen: dict[str, tuple[int, int]]
    depth: int
    snap_bytes: int
    delta_bytes: int


class _Fold:
    """Checkpoints of one session rebuilt from its rows."""

    def __init__(
        self,
        session_id: str,
        source: RowSource,
        concurrency_limit: int | None,
        graph_hash: str,
        config_hash: str,
        forked_from: tuple[str, int] | None,
    ) -> None:
        self.session_id = session_id
        self.source = source
        self.concurrency_limit = concurrency_limit
        self.graph_hash = graph_hash
        self.config_hash = config_hash
        self.forked_from = forked_from
        self._checked: set[int] = set()

    def _check(self, row: StepRow) -> None:
        # Rows of one read come from one snapshot: check each step once.
        if row.step not in self._checked:
            check_structure(row)
            self._checked.add(row.step)

    def run(self, wanted: Sequence[StepRow]) -> list[Stored]:
        for row in wanted:
            self._check(row)
        order = sorted(wanted, key=lambda r: r.step)
        extras = self._chains(order)
        messages = self._histories(order, "messages", decode_message)
        errors = self._histories(order, "errors", decode_error)
        out: list[Stored] = []
        for row in order:
            try:
                out.append(
                    self._stored(
                        row, extras[row.step], messages[row.step], errors[row.step]
                    )
                )
            except CheckpointError:
                raise
            except (ValueError, TypeError, KeyError, BaseValidationError) as exc:
                raise corrupt(self.session_id, row.step, str(exc)) from exc
        return out

    def _chains(self, order: Sequence[StepRow]) -> dict[int, _Chained]:
        """Per wanted step: its parsed row, extra, gating memory and chain facts."""
        groups: dict[int, list[int]] = {}
        for row in order:
            groups.setdefault(row.snap_step, []).append(row.step)
        out: dict[int, _Chained] = {}
        for snap, steps in groups.items():
            rows = self.source.chain(snap, steps[-1])
            wanted = set(steps)
            extra: dict[str, Any] = {}
            seen: dict[str, tuple[int, int]] = {}
            previous: _Parsed | None = None
            snap_bytes = delta_bytes = 0
            for depth, row in enumerate(rows):
                size = len(row.state_json) + len(row.seen_json)
                if depth:
                    delta_bytes += size
                else:
                    snap_bytes = size
                self._check(row)
                try:
                    parsed = _Parsed(row)
                    self._link(row, parsed, previous, snap)
                    self._apply(parsed, extra, seen)
                except CheckpointError:
                    raise
                except (ValueError, TypeError, KeyError, BaseValidationError) as exc:
                    raise corrupt(self.session_id, row.step, str(exc)) from exc
                if row.step in wanted:
                    out[row.step] = _Chained(
                        parsed,
                        MappingProxyType(dict(extra)),
                        dict(seen),
                        depth,
                        snap_bytes,
                        delta_bytes,
                    )
                previous = parsed
            missing = wanted - out.keys()
            if missing:
                raise self._broken(min(missing), snap, "its snapshot row")
        return out

    def _link(
        self, row: StepRow, parsed: _Parsed, previous: _Parsed | None, snap: int
    ) -> None:
        whole = parsed.extra[0], parsed.seen[0]
        if previous is None:
            if row.step != snap:
                raise self._broken(row.step, snap, "its snapshot row")
            if whole != (True, True):
                raise ValueError("a snapshot row must hold extra and gating whole")
            return
        if whole != (False, False):
            raise ValueError("a row after its snapshot must hold deltas")
        if row.base_step != previous.row.step:
            raise self._broken(row.step, previous.row.step, "the row before it")
        old, new = previous.versions, parsed.versions
        if new[0] < old[0] or new[1] < old[1] or new[2] < old[2]:
            raise ValueError("channel versions went down since its base step")

    def _apply(
        self,
        parsed: _Parsed,
        extra: dict[str, Any],
        seen: dict[str, tuple[int, int]],
    ) -> None:
        whole, changed, deleted = parsed.extra
        if whole:
            extra.clear()
        for key, doc in changed.items():
            extra[key] = decode_value(doc)
        for key in deleted:
            if key not in extra:
                raise ValueError(f"extra deletes {key!r}, which is not there")
            del extra[key]
        whole, changed, deleted = parsed.seen
        if whole:
            seen.clear()
        for key, pair in changed.items():
            seen[key] = _seen_pair(pair, key)
        for key in deleted:
            seen.pop(key, None)
        if len(extra) != parsed.counts[2]:
            raise ValueError(
                f"extra holds {len(extra)} keys, the row says {parsed.counts[2]}"
            )

    def _histories(
        self,
        order: Sequence[StepRow],
        channel: Literal["messages", "errors"],
        decode: Callable[[Any], Any],
    ) -> dict[int, History[Any]]:
        """Per wanted step: its message (or error) list, sharing storage."""
        roots: dict[int, list[int]] = {}
        for row in order:
            root = row.mroot if channel == "messages" else row.eroot
            roots.setdefault(root, []).append(row.step)
        out: dict[int, History[Any]] = {}
        for root, steps in roots.items():
            rows = self.source.history(channel, root, steps[-1])
            history: History[Any] = History()
            index = 0
            for position, row in enumerate(rows):
                while index < len(steps) and steps[index] < row.step:
                    out[steps[index]] = history
                    index += 1
                self._check(row)
                try:
                    text = (
                        row.messages_json if channel == "messages" else row.errors_json
                    )
                    whole, items = _list_doc(text, channel)
                    if whole != (position == 0) or (position == 0 and row.step != root):
                        raise ValueError(
                            f"the {channel} list must be stored whole at step"
                            f" {root} and appended to after it"
                        )
                    history = history.extend([decode(item) for item in items])
                except (ValueError, TypeError, KeyError, BaseValidationError) as exc:
                    raise corrupt(self.session_id, row.step, str(exc)) from exc
            if not rows or rows[0].step != root:
                raise self._broken(steps[0], root, f"the row holding its {channel}")
            for step in steps[index:]:
                out[step] = history
        return out

    def _broken(self, step: int, base: int, what: str) -> CheckpointError:
        return CheckpointError(
            f"corrupt checkpoint chain for session {self.session_id!r}: step {step}"
            f" is stored relative to step {base} ({what}), which is missing or not"
            " in its chain"
        )

    def _stored(
        self,
        row: StepRow,
        chained: _Chained,
        messages: History[Message],
        errors: History[ErrorEvent],
    ) -> Stored:
        parsed = chained.parsed
        if [len(messages), len(errors)] != parsed.counts[:2]:
            raise ValueError(
                f"it holds {len(messages)} messages and {len(errors)} errors, the"
                f" row says {parsed.counts[0]} and {parsed.counts[1]}"
            )
        joins = _as_dict(loads(row.joins_json), "join progress")
        frontier, sends = _frontier(loads(row.frontier_json))
        m, x, e = parsed.versions
        versions = Versions(messages=m, extra=x, errors=e)
        state = VersionedState._trusted(messages, chained.extra, errors, versions)
        checkpoint = Checkpoint(
            session_id=row.session_id,
            step=row.step,
            state=state,
            frontier=frontier,
            sends=sends,
            versions_seen=chained.seen,
            join_progress={k: _names(v, "join progress") for k, v in joins.items()},
            concurrency_limit=self.concurrency_limit,
            created_at=parse_time(row.created_at),
            ran_nodes=_names(loads(row.ran_nodes_json), "ran_nodes"),
            skipped_nodes=_names(loads(row.skipped_nodes_json), "skipped_nodes"),
            updated_channels=_names(
                loads(row.updated_channels_json), "updated_channels"
            ),
            graph_hash=self.graph_hash,
            config_hash=self.config_hash,
            parent_step=row.parent_step,
            forked_from=self.forked_from,
        )
        return Stored(
            checkpoint=checkpoint,
            digest=row.digest,
            snap_step=row.snap_step,
            mroot=row.mroot,
            eroot=row.eroot,
            depth=chained.depth,
            snap_bytes=chained.snap_bytes,
            delta_bytes=chained.delta_bytes,
        )


class RowSource:
    """Where a fold reads the rows it needs (the SQL side implements it)."""

    def prefetch(self, wanted: Sequence[StepRow]) -> None:
        """Read ahead what the fold of ``wanted`` will ask for (optional)."""

    def chain(self, snap_step: int, upto: int) -> Sequence[StepRow]:
        """Rows whose ``snap_step`` is ``snap_step``, steps ``snap_step..upto``,
        ascending."""
        raise NotImplementedError

    def history(
        self, channel: Literal["messages", "errors"], root: int, upto: int
    ) -> Sequence[StepRow]:
        """Rows of root ``root`` for ``channel`` with items, steps ``root..upto``,
        ascending."""
        raise NotImplementedError


def decode_steps(
    session_id: str,
    wanted: Sequence[StepRow],
    source: RowSource,
    *,
    concurrency_limit: int | None,
    graph_hash: str,
    config_hash: str,
    forked_from: tuple[str, int] | None = None,
) -> list[Stored]:
    """Rebuild the checkpoints of ``wanted`` (rows of one session), ascending.

    Reads through ``source`` only the rows their chains need: at most
    `SNAPSHOT_EVERY` per snapshot, plus the rows that appended to their
    histories. Shared histories share storage, so a page costs its size plus
    the history once.

    Raises:
        CheckpointError: a row is malformed, was edited outside weavegraph, or
            its chain is broken; the message names the session and the step.
    """
    source.prefetch(wanted)
    fold = _Fold(
        session_id, source, concurrency_limit, graph_hash, config_hash, forked_from
    )
    return fold.run(wanted)
