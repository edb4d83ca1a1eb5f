"""Checkpointers: where sessions are saved between supersteps.

`InMemoryCheckpointer` for tests, `SQLiteCheckpointer` (embedded, the default
for durable runs) and `PostgresCheckpointer` (the ``postgres`` extra) all derive from
the `Checkpointer` base class.
"""

from __future__ import annotations

from .._core.errors import CheckpointConflict as CheckpointConflict
from .memory import InMemoryCheckpointer as InMemoryCheckpointer
from .postgres import PostgresCheckpointer as PostgresCheckpointer
from .record import Checkpoint as Checkpoint
from .record import Checkpointer as Checkpointer
from .record import SessionSummary as SessionSummary
from .record import StepPage as StepPage
from .sqlite import SQLiteCheckpointer as SQLiteCheckpointer

__all__ = (
    "Checkpoint",
    "CheckpointConflict",
    "Checkpointer",
    "InMemoryCheckpointer",
    "PostgresCheckpointer",
    "SQLiteCheckpointer",
    "SessionSummary",
    "StepPage",
)
