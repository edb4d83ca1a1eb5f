"""Checkpoint records, the `Checkpointer` protocol, and the stored row format.

A `Checkpoint` is everything needed to continue a session between two supersteps.
The SQL backends store one row per step, but a row does not repeat the history:
it holds what changed since the session's previous stored step (the messages and
errors appended, the ``extra`` keys set or deleted, the gating entries updated),
plus a pointer to that base step. Storage therefore grows with the conversation,
not with its square; any step's full state is rebuilt by folding the rows from
the nearest full row. A channel rewritten by a custom reducer (not an append) is
stored in full for that step.
"""

from __future__ import annotations

import datetime as _dt
import zlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import attrs
from cattrs.errors import BaseValidationError as cattrs_errors

from .._codec import converter, dumps, loads
from .._core.errors import CheckpointError, ErrorEvent
from .._core.session import Session
from .._core.state import History, Message, VersionedState, Versions, freeze_extra


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _frozen_seen(value: Mapping[str, Any]) -> Mapping[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for key, pair in value.items():
        if type(pair) is not tuple:  # e.g. lists from JSON
            pair = (int(pair[0]), int(pair[1]))
        out[key] = pair
    return MappingProxyType(out)


def _frozen_joins(value: Mapping[str, Any]) -> Mapping[str, frozenset[str]]:
    return MappingProxyType({k: frozenset(v) for k, v in value.items()})


@attrs.frozen(kw_only=True)
class Checkpoint:
    """A session between two supersteps.

    Attributes:
        session_id: The session.
        step: The last superstep that ran (0: before the first).
        state: The state after that step.
        frontier: The nodes of the next superstep.
        versions_seen: Version-gating memory: per node, the (messages, extra)
            versions it last ran at.
        join_progress: Per join, the sources that ran since its target last ran.
        concurrency_limit: The configured limit (``None``: none).
        created_at: When the checkpoint was made.
        ran_nodes: Nodes that ran in this step.
        skipped_nodes: Frontier entries skipped in this step.
        updated_channels: Channels whose version this step bumped.
        graph_hash: ``App.graph.graph_hash`` of the graph that produced it.
        config_hash: ``RuntimeConfig.config_hash`` of the run.
    """

    session_id: str
    step: int
    state: VersionedState
    frontier: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    versions_seen: Mapping[str, tuple[int, int]] = attrs.field(
        factory=dict, converter=_frozen_seen
    )
    join_progress: Mapping[str, frozenset[str]] = attrs.field(
        factory=dict, converter=_frozen_joins
    )
    concurrency_limit: int | None = None
    created_at: _dt.datetime = attrs.field(factory=_utcnow)
    ran_nodes: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    skipped_nodes: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    updated_channels: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    graph_hash: str = ""
    config_hash: str = ""

    @classmethod
    def from_session(
        cls,
        session: Session,
        *,
        concurrency_limit: int | None = None,
        ran_nodes: tuple[str, ...] = (),
        skipped_nodes: tuple[str, ...] = (),
        updated_channels: tuple[str, ...] = (),
        graph_hash: str = "",
        config_hash: str = "",
    ) -> Checkpoint:
        """Capture ``session`` (plus optional step metadata).

        The session's parts are already validated, so this skips the converters:
        it runs after every superstep.
        """
        checkpoint = object.__new__(cls)
        fields = {
            "session_id": session.session_id,
            "step": session.step,
            "state": session.state,
            "frontier": tuple(session.frontier),
            "versions_seen": MappingProxyType(dict(session.versions_seen)),
            "join_progress": MappingProxyType(dict(session.join_progress)),
            "concurrency_limit": concurrency_limit,
            "created_at": _utcnow(),
            "ran_nodes": tuple(ran_nodes),
            "skipped_nodes": tuple(skipped_nodes),
            "updated_channels": tuple(updated_channels),
            "graph_hash": graph_hash,
            "config_hash": config_hash,
        }
        for name, value in fields.items():
            object.__setattr__(checkpoint, name, value)
        return checkpoint

    def to_session(self) -> Session:
        """A `Session` that continues from this checkpoint."""
        return Session(
            session_id=self.session_id,
            state=self.state,
            step=self.step,
            frontier=self.frontier,
            versions_seen=dict(self.versions_seen),
            join_progress=dict(self.join_progress),
        )


@attrs.frozen(kw_only=True)
class SessionSummary:
    """One stored session, as listed by `Checkpointer.list_sessions`."""

    session_id: str
    last_step: int
    created_at: _dt.datetime
    updated_at: _dt.datetime
    graph_hash: str = ""


@attrs.frozen(kw_only=True)
class StepPage:
    """One page of `Checkpointer.query_steps` results (newest step first).

    Attributes:
        checkpoints: The page, ordered by step descending.
        total: How many steps match the query in all.
        offset: Where this page starts.
        limit: The page size asked for.
    """

    checkpoints: tuple[Checkpoint, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_next(self) -> bool:
        """Whether another page follows."""
        return self.offset + self.limit < self.total


MAX_PAGE = 1000


def check_query(limit: int, offset: int) -> None:
    """Validate paging arguments."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise CheckpointError(
            f"limit must be an int from 1 to {MAX_PAGE}, got {limit!r}"
        )
    if not isinstance(offset, int) or offset < 0:
        raise CheckpointError(f"offset must be an int >= 0, got {offset!r}")


@runtime_checkable
class Checkpointer(Protocol):
    """Where sessions are saved. Every method is async and safe to call concurrently."""

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` (replacing the same step if present)."""
        ...

    async def save_with_concurrency_check(
        self, checkpoint: Checkpoint, expected_last_step: int | None
    ) -> None:
        """Store it only if the session's latest step is ``expected_last_step``.

        ``None`` means the session must not exist yet. Raises `CheckpointConflict`.
        """
        ...

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The session's newest checkpoint, or ``None`` for an unknown session."""
        ...

    async def list_sessions(self) -> list[SessionSummary]:
        """Every stored session, most recently updated first."""
        ...

    async def query_steps(
        self,
        session_id: str,
        *,
        limit: int = 100,
        offset: int = 0,
        min_step: int | None = None,
        max_step: int | None = None,
        ran_node: str | None = None,
        skipped_node: str | None = None,
    ) -> StepPage:
        """Stored steps of a session, newest first, filtered and paged.

        ``ran_node``/``skipped_node`` match node names exactly.
        """
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session and its steps; whether it existed."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


# ----------------------------------------------------------------- row format


@attrs.frozen(kw_only=True)
class StepRow:
    """One stored step, as JSON texts (the columns of the ``steps`` table)."""

    session_id: str
    step: int
    base_step: int | None
    created_at: str
    state_json: str
    frontier_json: str
    seen_json: str
    joins_json: str
    ran_nodes_json: str
    skipped_nodes_json: str
    updated_channels_json: str
    digest: str = ""

    def content_digest(self) -> str:
        """A digest of the row's content, stored with it to detect edits."""
        return row_digest(
            self.state_json, self.seen_json, self.frontier_json, self.joins_json
        )


def row_digest(state_json: str, seen_json: str, frontier_json: str, joins: str) -> str:
    """The digest stored in the ``digest`` column.

    A CRC-32 of the content: it catches rows edited by hand or damaged, which is
    its purpose (it is not a defence against deliberate forgery).
    """
    text = "\x00".join((state_json, seen_json, frontier_json, joins))
    return format(zlib.crc32(text.encode()), "08x")


def _plain(item: Any) -> Any:
    if type(item) is Message:  # the common case, without the converter's dispatch
        return {"role": str(item.role), "content": item.content}
    return converter.unstructure(item)


def _list_delta(new: History[Any], old: History[Any] | None) -> dict[str, Any]:
    if old is not None:
        added = new.suffix_after(old)
        if added is not None:
            return {"append": [_plain(i) for i in added]}
    return {"reset": [_plain(i) for i in new]}


def _map_delta(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    if old is None:
        return {"reset": dict(new)}
    try:
        # Set operations on the items run in C: cheap even for large maps.
        changed = dict(new.items() - old.items())
    except TypeError:  # unhashable values (lists, dicts): compare one by one
        missing = object()
        changed = {k: v for k, v in new.items() if old.get(k, missing) != v}
    delta: dict[str, Any] = {"set": changed}
    if len(old) > len(new) - sum(1 for k in changed if k not in old):
        delta["delete"] = list(old.keys() - new.keys())
    return delta


def encode_row(checkpoint: Checkpoint, base: Checkpoint | None) -> StepRow:
    """The row for ``checkpoint``, as a delta from ``base`` (``None``: full row).

    ``base`` must be the stored checkpoint of the same session that this row will
    name as its base step (normally the previous step saved by this process).
    """
    state = checkpoint.state
    old = base.state if base is not None else None
    versions = state.versions
    state_doc = {
        "messages": _list_delta(state.messages, old.messages if old else None),
        "extra": _map_delta(state.extra, old.extra if old else None),
        "errors": _list_delta(state.errors, old.errors if old else None),
        "versions": {
            "messages": versions.messages,
            "extra": versions.extra,
            "errors": versions.errors,
        },
    }
    seen = checkpoint.versions_seen
    old_seen = base.versions_seen if base is not None else None
    state_json = dumps(state_doc, default=converter.unstructure)
    frontier_json = dumps(list(checkpoint.frontier))
    seen_json = dumps(_map_delta(seen, old_seen))
    joins_json = dumps({k: sorted(v) for k, v in checkpoint.join_progress.items()})
    return StepRow(
        session_id=checkpoint.session_id,
        step=checkpoint.step,
        base_step=base.step if base is not None else None,
        created_at=checkpoint.created_at.astimezone(_dt.UTC).isoformat(),
        state_json=state_json,
        frontier_json=frontier_json,
        seen_json=seen_json,
        joins_json=joins_json,
        ran_nodes_json=dumps(list(checkpoint.ran_nodes)),
        skipped_nodes_json=dumps(list(checkpoint.skipped_nodes)),
        updated_channels_json=dumps(list(checkpoint.updated_channels)),
        digest=row_digest(state_json, seen_json, frontier_json, joins_json),
    )


class _Folded:
    """The state of a session while rows are folded in step order."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.errors: list[Any] = []
        self.extra: dict[str, Any] = {}
        self.seen: dict[str, Any] = {}

    def copy(self) -> _Folded:
        other = _Folded()
        other.messages = list(self.messages)
        other.errors = list(self.errors)
        other.extra = dict(self.extra)
        other.seen = dict(self.seen)
        return other


def _apply_list(target: list[Any], delta: Any, what: str) -> None:
    if not isinstance(delta, Mapping):
        raise ValueError(f"{what} is not an object")
    if "reset" in delta:
        target[:] = _as_list(delta["reset"], what)
    elif "append" in delta:
        target.extend(_as_list(delta["append"], what))
    else:
        raise ValueError(f"{what} has neither 'append' nor 'reset'")


def _apply_map(target: dict[str, Any], delta: Any, what: str) -> None:
    if not isinstance(delta, Mapping):
        raise ValueError(f"{what} is not an object")
    if "reset" in delta:
        target.clear()
        target.update(_as_dict(delta["reset"], what))
        return
    target.update(_as_dict(delta.get("set", {}), what))
    for key in _as_list(delta.get("delete", []), what):
        target.pop(key, None)


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must hold a list, got {type(value).__name__}")
    return value


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must hold an object, got {type(value).__name__}")
    return value


def decode_rows(
    rows: Sequence[StepRow],
    *,
    wanted: set[int] | None = None,
    concurrency_limit: int | None = None,
    graph_hash: str = "",
    config_hash: str = "",
) -> list[Checkpoint]:
    """Rebuild checkpoints from rows of one session, in ascending step order.

    Each row's base must be an earlier row of ``rows`` (or none). Only the steps
    in ``wanted`` (default: all) are materialised. Folding is linear in the total
    size of the rows.

    Raises:
        CheckpointError: a row is malformed, was edited outside weavegraph, or
            names a missing base; the message names the session and the step.
    """
    out: list[Checkpoint] = []
    # Rows whose folded state a later, non-adjacent row starts from.
    keep: set[int] = set()
    for index, row in enumerate(rows):
        if row.base_step is not None and (
            index == 0 or rows[index - 1].step != row.base_step
        ):
            keep.add(row.base_step)
    saved: dict[int, _Folded] = {}
    acc = _Folded()
    acc_step: int | None = None
    for row in rows:
        try:
            if row.digest and row.digest != row.content_digest():
                raise CheckpointError(
                    f"corrupt checkpoint row for session {row.session_id!r} at step"
                    f" {row.step}: its content does not match its digest (was it"
                    " edited outside weavegraph?)"
                )
            if row.base_step is None:
                acc = _Folded()
            elif row.base_step != acc_step:
                base = saved.get(row.base_step)
                if base is None:
                    raise CheckpointError(
                        f"corrupt checkpoint chain for session {row.session_id!r}:"
                        f" step {row.step} is stored relative to step"
                        f" {row.base_step}, which is missing"
                    )
                acc = base.copy()
            doc = _fold(row, acc)
            acc_step = row.step
            if row.step in keep:
                saved[row.step] = acc.copy()
            if wanted is None or row.step in wanted:
                out.append(
                    _materialise(
                        row, acc, doc, concurrency_limit, graph_hash, config_hash
                    )
                )
        except CheckpointError:
            raise
        except (ValueError, TypeError, KeyError, cattrs_errors) as exc:
            raise CheckpointError(
                f"corrupt checkpoint row for session {row.session_id!r} at step"
                f" {row.step}: {exc}"
            ) from exc
    return out


def _fold(row: StepRow, acc: _Folded) -> dict[str, Any]:
    doc = loads(row.state_json)
    if not isinstance(doc, dict):
        raise ValueError("state is not a JSON object")
    _apply_list(acc.messages, doc["messages"], "messages")
    _apply_list(acc.errors, doc.get("errors", {"append": []}), "errors")
    _apply_map(acc.extra, doc["extra"], "extra")
    _apply_map(acc.seen, loads(row.seen_json), "versions_seen")
    return doc


def _materialise(
    row: StepRow,
    acc: _Folded,
    doc: dict[str, Any],
    concurrency_limit: int | None,
    graph_hash: str,
    config_hash: str,
) -> Checkpoint:
    versions = converter.structure(doc.get("versions", {}), Versions)
    state = VersionedState._trusted(
        History(converter.structure(m, Message) for m in acc.messages),
        freeze_extra(dict(acc.extra)),
        History(converter.structure(e, ErrorEvent) for e in acc.errors),
        versions,
    )
    frontier = _as_list(loads(row.frontier_json), "frontier")
    joins = _as_dict(loads(row.joins_json), "join progress")
    return Checkpoint(
        session_id=row.session_id,
        step=row.step,
        state=state,
        frontier=[str(n) for n in frontier],
        versions_seen={k: tuple(v) for k, v in acc.seen.items()},
        join_progress={
            k: frozenset(_as_list(v, "join progress")) for k, v in joins.items()
        },
        concurrency_limit=concurrency_limit,
        created_at=converter.structure(row.created_at, _dt.datetime),
        ran_nodes=_as_list(loads(row.ran_nodes_json or "[]"), "ran_nodes"),
        skipped_nodes=_as_list(loads(row.skipped_nodes_json or "[]"), "skipped_nodes"),
        updated_channels=_as_list(
            loads(row.updated_channels_json or "[]"), "updated_channels"
        ),
        graph_hash=graph_hash,
        config_hash=config_hash,
    )
