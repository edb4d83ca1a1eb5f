"""Rows of schema versions 1 and 2, rewritten once in the current format.

Those rows held every part of a step's delta in ``state_json`` and a CRC-32 of
four columns; each could name any earlier row as its base. The upgrade to
schema 3 folds each session's rows in step order (checking each digest, so a
damaged row is reported rather than blessed with a fresh one) and stores the
session again, each row a delta of the one before.
"""

from __future__ import annotations

import datetime as _dt
import zlib
from collections.abc import Sequence
from typing import Any

from cattrs.errors import BaseValidationError

from .._codec import converter, loads
from .._core.errors import CheckpointError, ErrorEvent
from .._core.state import History, Message, VersionedState, Versions
from ._rows import Stored, encode_row, row_values
from .record import Checkpoint

Cursor = Any

_LEGACY_COLUMNS = (
    "session_id, step, base_step, created_at, state_json, frontier_json, seen_json,"
    " joins_json, ran_nodes_json, skipped_nodes_json, updated_channels_json, digest"
)


def _digest(state: str, seen: str, frontier: str, joins: str) -> str:
    text = "\x00".join((state, seen, frontier, joins))
    return format(zlib.crc32(text.encode()), "08x")


class _Acc:
    """A session's folded state at one legacy row."""

    def __init__(self) -> None:
        self.messages: History[Message] = History()
        self.errors: History[ErrorEvent] = History()
        self.extra: dict[str, Any] = {}
        self.seen: dict[str, tuple[int, int]] = {}

    def copy(self) -> _Acc:
        other = _Acc()
        other.messages, other.errors = self.messages, self.errors
        other.extra, other.seen = dict(self.extra), dict(self.seen)
        return other


def _list(history: History[Any], delta: Any, decode: Any) -> History[Any]:
    if not isinstance(delta, dict):
        raise ValueError("a list delta is not an object")
    if "reset" in delta:
        return History(decode(item) for item in delta["reset"])
    if "append" in delta:
        return history.extend([decode(item) for item in delta["append"]])
    raise ValueError("a list delta has neither 'append' nor 'reset'")


def _map(target: dict[str, Any], delta: Any, pair: bool = False) -> None:
    if not isinstance(delta, dict):
        raise ValueError("a map delta is not an object")
    if "reset" in delta:
        target.clear()
        changed = delta["reset"]
    else:
        changed = delta.get("set", {})
        for key in delta.get("delete", []):
            target.pop(key, None)
    if not isinstance(changed, dict):
        raise ValueError("a map delta does not hold an object")
    for key, value in changed.items():
        target[key] = (int(value[0]), int(value[1])) if pair else value


def _message(doc: Any) -> Message:
    return converter.structure(doc, Message)


def _error(doc: Any) -> ErrorEvent:
    return converter.structure(doc, ErrorEvent)


def _checkpoints(session_id: str, records: Sequence[Any]) -> list[Checkpoint]:
    saved: dict[int, _Acc] = {}
    acc = _Acc()
    acc_step: int | None = None
    previous: int | None = None
    out = []
    for record in records:
        (_, step, base, created, state_json, frontier, seen_json, joins, ran,
         skipped, updated, digest) = record  # fmt: skip
        where = f"session {session_id!r} at step {step!r}"
        try:
            if not digest or digest != _digest(state_json, seen_json, frontier, joins):
                raise ValueError(
                    "its content does not match its digest (was it edited outside"
                    " weavegraph?)"
                )
            if base is None:
                acc = _Acc()
            elif base != acc_step:
                if base not in saved:
                    raise ValueError(
                        f"it is stored relative to step {base}, which is missing"
                    )
                acc = saved[base].copy()
            doc = loads(state_json)
            acc.messages = _list(acc.messages, doc["messages"], _message)
            acc.errors = _list(acc.errors, doc.get("errors", {"append": []}), _error)
            _map(acc.extra, doc["extra"])
            _map(acc.seen, loads(seen_json), pair=True)
            acc_step = step
            saved[step] = acc.copy()
            versions = converter.structure(doc.get("versions", {}), Versions)
            joined = loads(joins)
            out.append(
                Checkpoint(
                    session_id=session_id,
                    step=step,
                    state=VersionedState._trusted(
                        acc.messages, dict(acc.extra), acc.errors, versions
                    ),
                    frontier=[str(n) for n in loads(frontier)],
                    versions_seen=dict(acc.seen),
                    join_progress={k: frozenset(v) for k, v in joined.items()},
                    created_at=_dt.datetime.fromisoformat(created),
                    ran_nodes=loads(ran or "[]"),
                    skipped_nodes=loads(skipped or "[]"),
                    updated_channels=loads(updated or "[]"),
                    parent_step=previous,
                )
            )
            previous = step
        except (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            BaseValidationError,
        ) as exc:
            raise CheckpointError(
                f"cannot upgrade the checkpoint store: the row for {where} is"
                f" corrupt: {exc}"
            ) from exc
    return out


def convert(cur: Cursor, d: Any, insert_sql: str) -> None:
    """Rewrite every legacy row in the current format (inside the migration)."""
    cur.execute("SELECT DISTINCT session_id FROM steps ORDER BY session_id")
    sessions = [r[0] for r in cur.fetchall()]
    for sid in sessions:
        cur.execute(
            d.q(
                f"SELECT {_LEGACY_COLUMNS} FROM steps WHERE session_id = ?"
                " ORDER BY step"
            ),
            (sid,),
        )
        checkpoints = _checkpoints(sid, cur.fetchall())
        cur.execute(d.q("DELETE FROM steps WHERE session_id = ?"), (sid,))
        tip: Stored | None = None
        for checkpoint in checkpoints:
            row, tip = encode_row(checkpoint, tip)
            cur.execute(insert_sql, row_values(row))
