"""The public checkpoint records and the `Checkpointer` base class.

A `Checkpoint` is everything needed to continue a session between two
supersteps; `SessionSummary` and `StepPage` are what listing and paging return.
How the SQL stores lay a checkpoint out in rows lives in `_rows` (private).
"""

from __future__ import annotations

import abc
import datetime as _dt
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Self

import attrs
import trio

from .._core.errors import CheckpointConflict, CheckpointError
from .._core.session import Session
from .._core.state import Send, VersionedState


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


def _frozen_pending(value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CheckpointError(
            f"a pending record is a mapping with string keys, got {value!r}"
        )
    return MappingProxyType(dict(value))


def _origin(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or type(value[1]) is not int
        or value[1] < 0
    ):
        raise CheckpointError(
            "forked_from is None or a (session_id, step) pair with a step >= 0,"
            f" got {value!r}"
        )
    return (value[0], value[1])


def _sends(value: Any) -> tuple[Send, ...]:
    sends = tuple(value)
    for send in sends:
        if not isinstance(send, Send):
            raise CheckpointError(f"sends holds Send items, got {send!r}")
    return sends


def _optional_step(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise CheckpointError(f"a parent step is an int >= 0 or None, got {value!r}")
    return int(value)


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
        parent_step: The step this one follows: the session's previous stored
            step, ``None`` for a new session's first checkpoint. `Checkpointer.append`
            stores a checkpoint only if its parent is the session's latest step.
        pending: The session's pending record attached to this step (a
            JSON-ready mapping the runtime owns: partials of nodes that finished
            in a failed or cancelled step, the last error ...), or ``None``.
            Only a session's latest step carries one; saving a following step
            clears it.
        sends: The `Send` tasks of the next superstep (with their payloads),
            in send order.
        forked_from: ``(session_id, step)`` the session was forked from, or
            ``None``. A property of the session: stores keep the one its first
            checkpoint names.
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
    parent_step: int | None = attrs.field(default=None, converter=_optional_step)
    pending: Mapping[str, Any] | None = attrs.field(
        default=None, converter=_frozen_pending
    )
    forked_from: tuple[str, int] | None = attrs.field(default=None, converter=_origin)
    sends: tuple[Send, ...] = attrs.field(default=(), converter=_sends)

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
        parent_step: int | None = None,
        pending: Mapping[str, Any] | None = None,
        forked_from: tuple[str, int] | None = None,
    ) -> Checkpoint:
        """Capture ``session`` (plus optional step metadata).

        The session's parts are already validated, so this skips most
        converters: it runs after every superstep.

        Args:
            session: The session after its step.
            concurrency_limit: The run's limit.
            ran_nodes: Nodes that ran in the step.
            skipped_nodes: Frontier entries skipped in the step.
            updated_channels: Channels the step bumped.
            graph_hash: The graph's hash.
            config_hash: The run configuration's hash.
            parent_step: The step this checkpoint follows (``None``: the
                session's first).
            pending: A pending record to attach to this step.
            forked_from: The session's origin when it is a fork.
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
            "parent_step": _optional_step(parent_step),
            "pending": _frozen_pending(pending),
            "forked_from": forked_from,
            "sends": tuple(session.sends),
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
            sends=self.sends,
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
    forked_from: tuple[str, int] | None = None
    """``(session_id, step)`` the session was forked from, or ``None``."""


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
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise CheckpointError(
            f"limit must be an int from 1 to {MAX_PAGE}, got {limit!r}"
        )
    if type(offset) is not int or offset < 0:
        raise CheckpointError(f"offset must be an int >= 0, got {offset!r}")


def check_chain(checkpoints: Sequence[Checkpoint], latest: dict[str, int]) -> None:
    """Raise `CheckpointConflict` unless every checkpoint follows its session's tip.

    ``latest`` maps sessions to their stored latest step (absent: no such
    session); it is updated as if the checkpoints were stored, in order, so
    the second checkpoint of a session in a batch must follow the first.

    Raises:
        CheckpointError: a checkpoint's step does not come after its parent.
        CheckpointConflict: a parent is not the session's latest step.
    """
    for checkpoint in checkpoints:
        sid, parent = checkpoint.session_id, checkpoint.parent_step
        if parent is not None and checkpoint.step <= parent:
            raise CheckpointError(
                f"checkpoint of session {sid!r} at step {checkpoint.step} names"
                f" step {parent} as its parent; a step follows its parent"
            )
        found = latest.get(sid)
        if found != parent:
            raise CheckpointConflict(sid, parent, found)
        latest[sid] = checkpoint.step


class Checkpointer(abc.ABC):
    """Where sessions are saved: the base class of every store.

    Every method is async, safe to call concurrently, and a trio checkpoint.
    A write that has started completes even if its caller is cancelled (its
    transaction is never left half done). Use a store as an async context
    manager (``async with SQLiteCheckpointer(path) as store:``), or call
    `open` / `aclose` yourself.

    Two ways to write:

    * `append` (and its one-checkpoint form `save_with_concurrency_check`) is
      the guarded path: a checkpoint is stored only if its `Checkpoint.parent_step`
      is the session's latest stored step, so of two writers that continue the
      same step exactly one wins. This is what runs use.
    * `save` / `save_many` store unconditionally (imports, tools, tests): a
      saved step replaces the same step if stored, and the session's latest
      step only ever grows.

    Writing the session's latest step also sets (or clears) its pending
    record from `Checkpoint.pending`, in the same transaction; `save_pending`
    replaces it without a new step.
    """

    @property
    @abc.abstractmethod
    def backend(self) -> str:
        """``"memory"``, ``"sqlite"`` or ``"postgres"`` (other stores: their own)."""

    async def open(self) -> None:
        """Connect (and create or upgrade the schema) now rather than at first use."""
        await trio.lowlevel.checkpoint()

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ writing

    @abc.abstractmethod
    async def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store ``checkpoints``, each after its parent, all or nothing.

        Each checkpoint's `Checkpoint.parent_step` must be its session's latest
        stored step at the moment it is written: for the first checkpoint of a
        session in the batch, the stored latest step (``None``: the session
        must not exist yet); for a later one, the previous checkpoint of that
        session in the batch. The checks and the writes are one transaction.

        Raises:
            CheckpointConflict: a parent is not the latest step (another
                writer got there first); nothing of the batch is stored.
            CheckpointError: a step does not come after its parent, or the
                store failed.
        """

    async def save_with_concurrency_check(
        self, checkpoint: Checkpoint, expected_last_step: int | None
    ) -> None:
        """Store ``checkpoint`` if the session's latest step is ``expected_last_step``.

        ``None`` means the session must not exist yet. The same as `append`
        of ``checkpoint`` with ``parent_step=expected_last_step``.

        Raises:
            CheckpointConflict: another writer got there first.
        """
        if checkpoint.parent_step != expected_last_step:
            checkpoint = attrs.evolve(checkpoint, parent_step=expected_last_step)
        await self.append([checkpoint])

    @abc.abstractmethod
    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints unconditionally, in one transaction where the
        backend has them (a stored step is replaced; the latest never moves back).
        """

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` unconditionally (see `save_many`)."""
        await self.save_many([checkpoint])

    @abc.abstractmethod
    async def save_pending(
        self, session_id: str, base_step: int, pending: Mapping[str, Any] | None
    ) -> None:
        """Attach ``pending`` to the session's latest step, replacing any record.

        ``None`` clears it. The record is cleared automatically when a
        following step is stored. Values round-trip exactly as the state's do.

        Raises:
            CheckpointConflict: ``base_step`` is not the session's latest step
                (or the session does not exist).
        """

    @abc.abstractmethod
    async def delete_session(self, session_id: str) -> bool:
        """Delete the session, its steps and its pending record; whether it existed."""

    # ------------------------------------------------------------------ reading

    @abc.abstractmethod
    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The session's newest checkpoint (with its pending record), or ``None``.

        Raises:
            CheckpointError: the stored session is malformed; the message names
                the session and the step.
        """

    @abc.abstractmethod
    async def list_sessions(self) -> list[SessionSummary]:
        """Every stored session, most recently updated first."""

    @abc.abstractmethod
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

        ``min_step``/``max_step`` are inclusive; ``ran_node``/``skipped_node``
        match node names exactly. The latest step carries the pending record.

        Raises:
            CheckpointError: bad paging arguments, or a malformed stored step.
        """
