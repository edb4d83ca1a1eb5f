"""weavegraph: graph-driven, trio-native workflows over versioned state.

Describe a workflow as a graph of async nodes with `GraphBuilder`, compile it into
an `App`, and run it with `App.invoke` (or stream its events with
`App.invoke_streaming`). Every public name is importable from here.
"""

from __future__ import annotations

from ._core.errors import CheckpointError as CheckpointError
from ._core.errors import CycleError as CycleError
from ._core.errors import DuplicateEdgeError as DuplicateEdgeError
from ._core.errors import DuplicateNodeError as DuplicateNodeError
from ._core.errors import EdgeFromEndError as EdgeFromEndError
from ._core.errors import ErrorDetail as ErrorDetail
from ._core.errors import ErrorEvent as ErrorEvent
from ._core.errors import ErrorScope as ErrorScope
from ._core.errors import EventBusClosed as EventBusClosed
from ._core.errors import GraphError as GraphError
from ._core.errors import InvalidEdgeError as InvalidEdgeError
from ._core.errors import InvalidNodeError as InvalidNodeError
from ._core.errors import InvalidReducerError as InvalidReducerError
from ._core.errors import InvalidRouterError as InvalidRouterError
from ._core.errors import MissingEntryError as MissingEntryError
from ._core.errors import MissingInput as MissingInput
from ._core.errors import NodeError as NodeError
from ._core.errors import NodeNotFound as NodeNotFound
from ._core.errors import NodeOutputError as NodeOutputError
from ._core.errors import NodeTimeoutError as NodeTimeoutError
from ._core.errors import NoPathToEndError as NoPathToEndError
from ._core.errors import ProviderError as ProviderError
from ._core.errors import ReducerError as ReducerError
from ._core.errors import ReservedNodeNameError as ReservedNodeNameError
from ._core.errors import RouterError as RouterError
from ._core.errors import SessionNotFound as SessionNotFound
from ._core.errors import StepLimitExceeded as StepLimitExceeded
from ._core.errors import UnknownNodeError as UnknownNodeError
from ._core.errors import UnreachableNodesError as UnreachableNodesError
from ._core.errors import ValidationFailed as ValidationFailed
from ._core.errors import WeavegraphError as WeavegraphError
from ._core.errors import WorkflowError as WorkflowError
from ._core.graph import END as END
from ._core.graph import START as START
from ._core.graph import Graph as Graph
from ._core.graph import GraphBuilder as GraphBuilder
from ._core.graph import Node as Node
from ._core.graph import RetryPolicy as RetryPolicy
from ._core.reducers import BarrierOutcome as BarrierOutcome
from ._core.reducers import add_errors as add_errors
from ._core.reducers import add_messages as add_messages
from ._core.reducers import apply_barrier as apply_barrier
from ._core.reducers import map_merge as map_merge
from ._core.state import Append as Append
from ._core.state import History as History
from ._core.state import Message as Message
from ._core.state import NodePartial as NodePartial
from ._core.state import Replace as Replace
from ._core.state import Role as Role
from ._core.state import StateError as StateError
from ._core.state import StateSnapshot as StateSnapshot
from ._core.state import VersionedState as VersionedState
from ._core.state import Versions as Versions
from ._runtime.app import App as App
from ._runtime.config import ConfigError as ConfigError
from ._runtime.config import RuntimeConfig as RuntimeConfig
from ._runtime.context import NodeContext as NodeContext
from ._runtime.engine import StepReport as StepReport
from ._runtime.invocation import Invocation as Invocation
from ._runtime.invocation import RunCancelledError as RunCancelledError
from ._runtime.replay import ReplayComparison as ReplayComparison
from ._runtime.replay import ReplayMismatchError as ReplayMismatchError
from ._runtime.replay import ReplayRun as ReplayRun
from ._runtime.replay import compare_event_sequences as compare_event_sequences
from ._runtime.replay import compare_final_state as compare_final_state
from ._runtime.replay import compare_replay_runs as compare_replay_runs
from ._runtime.replay import normalize_event as normalize_event
from ._runtime.replay import normalize_state as normalize_state
from ._runtime.runner import AppRunner as AppRunner
from ._runtime.runner import InvalidEntryError as InvalidEntryError
from ._runtime.runner import PausedReport as PausedReport
from ._runtime.runner import RunMetadata as RunMetadata
from ._runtime.runner import SessionInit as SessionInit
from ._runtime.runner import open_runner as open_runner
from .checkpoint.memory import InMemoryCheckpointer as InMemoryCheckpointer
from .checkpoint.postgres import PostgresCheckpointer as PostgresCheckpointer
from .checkpoint.record import Checkpoint as Checkpoint
from .checkpoint.record import CheckpointConflict as CheckpointConflict
from .checkpoint.record import Checkpointer as Checkpointer
from .checkpoint.record import SessionSummary as SessionSummary
from .checkpoint.record import StepPage as StepPage
from .checkpoint.sqlite import SQLiteCheckpointer as SQLiteCheckpointer
from .events.bus import BusMetrics as BusMetrics
from .events.bus import EventBus as EventBus
from .events.bus import EventBusConfig as EventBusConfig
from .events.bus import EventBusConfigError as EventBusConfigError
from .events.sinks import ChannelSink as ChannelSink
from .events.sinks import EventSink as EventSink
from .events.sinks import JsonLinesSink as JsonLinesSink
from .events.sinks import LoggingSink as LoggingSink
from .events.sinks import MemorySink as MemorySink
from .events.sinks import StdOutSink as StdOutSink
from .events.stream import EventStream as EventStream
from .events.types import DIAGNOSTIC_SCOPE as DIAGNOSTIC_SCOPE
from .events.types import INVOCATION_END_SCOPE as INVOCATION_END_SCOPE
from .events.types import STREAM_END_SCOPE as STREAM_END_SCOPE
from .events.types import DiagnosticEvent as DiagnosticEvent
from .events.types import Event as Event
from .events.types import EventDecodeError as EventDecodeError
from .events.types import LLMEvent as LLMEvent
from .events.types import NodeEvent as NodeEvent
from .events.types import event_from_json as event_from_json

__version__ = "0.1.0"

__all__ = (
    # graph authoring
    "START",
    "END",
    "GraphBuilder",
    "Graph",
    "Node",
    "NodeContext",
    "RetryPolicy",
    "App",
    "RuntimeConfig",
    "Invocation",
    "StepReport",
    # runner and persistence
    "open_runner",
    "AppRunner",
    "SessionInit",
    "PausedReport",
    "RunMetadata",
    "Checkpoint",
    "Checkpointer",
    "InMemoryCheckpointer",
    "SQLiteCheckpointer",
    "PostgresCheckpointer",
    "SessionSummary",
    "StepPage",
    # replay
    "ReplayRun",
    "ReplayComparison",
    "normalize_event",
    "normalize_state",
    "compare_final_state",
    "compare_event_sequences",
    "compare_replay_runs",
    # state
    "Message",
    "Role",
    "History",
    "Versions",
    "VersionedState",
    "StateSnapshot",
    "NodePartial",
    "Replace",
    "Append",
    "BarrierOutcome",
    "apply_barrier",
    "add_messages",
    "map_merge",
    "add_errors",
    # events
    "Event",
    "NodeEvent",
    "DiagnosticEvent",
    "LLMEvent",
    "event_from_json",
    "STREAM_END_SCOPE",
    "INVOCATION_END_SCOPE",
    "DIAGNOSTIC_SCOPE",
    "EventBus",
    "EventBusConfig",
    "BusMetrics",
    "EventStream",
    "EventSink",
    "StdOutSink",
    "MemorySink",
    "ChannelSink",
    "JsonLinesSink",
    "LoggingSink",
    # errors
    "ErrorEvent",
    "ErrorScope",
    "ErrorDetail",
    "WeavegraphError",
    "GraphError",
    "ReservedNodeNameError",
    "DuplicateNodeError",
    "InvalidNodeError",
    "InvalidEdgeError",
    "EdgeFromEndError",
    "DuplicateEdgeError",
    "UnknownNodeError",
    "MissingEntryError",
    "CycleError",
    "UnreachableNodesError",
    "NoPathToEndError",
    "InvalidRouterError",
    "InvalidReducerError",
    "NodeNotFound",
    "NodeError",
    "MissingInput",
    "ProviderError",
    "ValidationFailed",
    "NodeTimeoutError",
    "NodeOutputError",
    "RouterError",
    "ReducerError",
    "StateError",
    "ConfigError",
    "EventBusConfigError",
    "EventDecodeError",
    "WorkflowError",
    "StepLimitExceeded",
    "RunCancelledError",
    "CheckpointError",
    "CheckpointConflict",
    "InvalidEntryError",
    "ReplayMismatchError",
    "SessionNotFound",
    "EventBusClosed",
)
