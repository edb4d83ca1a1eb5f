"""weavegraph: graph-driven, trio-native workflows over versioned state.

Describe a workflow as a graph of async nodes with `GraphBuilder`, compile it into
an `App`, and run it with `App.invoke` (or stream its events with
`App.invoke_streaming`). The root holds what a workflow author writes every day;
`weavegraph.errors` has every exception, `weavegraph.testing` helpers for testing
graphs, and `weavegraph.lowlevel` the building blocks under the runtime.
"""

from __future__ import annotations

from ._codec import register_type as register_type
from ._core.errors import CheckpointConflict as CheckpointConflict
from ._core.errors import CheckpointError as CheckpointError
from ._core.errors import ConfigError as ConfigError
from ._core.errors import ErrorEvent as ErrorEvent
from ._core.errors import EventBusClosed as EventBusClosed
from ._core.errors import GraphError as GraphError
from ._core.errors import InvalidSessionIdError as InvalidSessionIdError
from ._core.errors import NodeNotFound as NodeNotFound
from ._core.errors import NotInTrioError as NotInTrioError
from ._core.errors import RouterError as RouterError
from ._core.errors import RunCancelledError as RunCancelledError
from ._core.errors import SessionNotFound as SessionNotFound
from ._core.errors import StateError as StateError
from ._core.errors import StepLimitExceeded as StepLimitExceeded
from ._core.errors import WeavegraphError as WeavegraphError
from ._core.errors import WorkflowError as WorkflowError
from ._core.graph import END as END
from ._core.graph import START as START
from ._core.graph import Graph as Graph
from ._core.graph import Node as Node
from ._core.graph import RetryPolicy as RetryPolicy
from ._core.reducers import add_errors as add_errors
from ._core.reducers import add_messages as add_messages
from ._core.reducers import map_merge as map_merge
from ._core.session import Interrupt as Interrupt
from ._core.session import Resume as Resume
from ._core.state import Append as Append
from ._core.state import Message as Message
from ._core.state import NodePartial as NodePartial
from ._core.state import Replace as Replace
from ._core.state import Role as Role
from ._core.state import Send as Send
from ._core.state import StateSnapshot as StateSnapshot
from ._core.state import ToolCall as ToolCall
from ._core.state import VersionedState as VersionedState
from ._runtime.app import App as App
from ._runtime.app import GraphBuilder as GraphBuilder
from ._runtime.config import RuntimeConfig as RuntimeConfig
from ._runtime.context import NodeContext as NodeContext
from ._runtime.engine import StepReport as StepReport
from ._runtime.invocation import Invocation as Invocation
from ._runtime.runner import AppRunner as AppRunner
from ._runtime.runner import PausedReport as PausedReport
from ._runtime.runner import SessionInit as SessionInit
from ._runtime.runner import SessionState as SessionState
from ._runtime.runner import open_runner as open_runner
from .checkpoint.memory import InMemoryCheckpointer as InMemoryCheckpointer
from .checkpoint.postgres import PostgresCheckpointer as PostgresCheckpointer
from .checkpoint.record import Checkpointer as Checkpointer
from .checkpoint.sqlite import SQLiteCheckpointer as SQLiteCheckpointer
from .events.bus import EventBus as EventBus
from .events.bus import EventBusConfig as EventBusConfig
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
from .events.types import LLMEvent as LLMEvent
from .events.types import NodeEvent as NodeEvent
from .events.types import event_from_json as event_from_json
from .scale.queue import RunQueue as RunQueue
from .scale.worker import serve_worker as serve_worker

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
    # state
    "Message",
    "ToolCall",
    "Role",
    "VersionedState",
    "StateSnapshot",
    "NodePartial",
    "Replace",
    "Send",
    "Append",
    "add_messages",
    "map_merge",
    "add_errors",
    "register_type",
    # running
    "App",
    "RuntimeConfig",
    "Invocation",
    "StepReport",
    "open_runner",
    "AppRunner",
    "SessionInit",
    "SessionState",
    "PausedReport",
    "Interrupt",
    "Resume",
    # persistence
    "Checkpointer",
    "InMemoryCheckpointer",
    "SQLiteCheckpointer",
    "PostgresCheckpointer",
    "RunQueue",
    "serve_worker",
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
    "EventStream",
    "EventSink",
    "StdOutSink",
    "MemorySink",
    "ChannelSink",
    "JsonLinesSink",
    "LoggingSink",
    # errors (all of them: weavegraph.errors)
    "ErrorEvent",
    "WeavegraphError",
    "GraphError",
    "ConfigError",
    "StateError",
    "InvalidSessionIdError",
    "NotInTrioError",
    "NodeNotFound",
    "RouterError",
    "WorkflowError",
    "StepLimitExceeded",
    "RunCancelledError",
    "CheckpointError",
    "CheckpointConflict",
    "SessionNotFound",
    "EventBusClosed",
)
