"""Every exception weavegraph raises on purpose, and the error records.

All derive from `WeavegraphError`; the common ones are also at the package root.
"""

from __future__ import annotations

from ._core.errors import AuthorizationError as AuthorizationError
from ._core.errors import CheckpointConflict as CheckpointConflict
from ._core.errors import CheckpointError as CheckpointError
from ._core.errors import ConfigError as ConfigError
from ._core.errors import CycleError as CycleError
from ._core.errors import DuplicateEdgeError as DuplicateEdgeError
from ._core.errors import DuplicateNodeError as DuplicateNodeError
from ._core.errors import EdgeFromEndError as EdgeFromEndError
from ._core.errors import ErrorDetail as ErrorDetail
from ._core.errors import ErrorEvent as ErrorEvent
from ._core.errors import ErrorScope as ErrorScope
from ._core.errors import EventBusClosed as EventBusClosed
from ._core.errors import EventBusConfigError as EventBusConfigError
from ._core.errors import EventDecodeError as EventDecodeError
from ._core.errors import GraphError as GraphError
from ._core.errors import HTTPError as HTTPError
from ._core.errors import InvalidEdgeError as InvalidEdgeError
from ._core.errors import InvalidEntryError as InvalidEntryError
from ._core.errors import InvalidNodeError as InvalidNodeError
from ._core.errors import InvalidReducerError as InvalidReducerError
from ._core.errors import InvalidRouterError as InvalidRouterError
from ._core.errors import InvalidSessionIdError as InvalidSessionIdError
from ._core.errors import LeaseLost as LeaseLost
from ._core.errors import MissingEntryError as MissingEntryError
from ._core.errors import MissingInput as MissingInput
from ._core.errors import NodeError as NodeError
from ._core.errors import NodeNotFound as NodeNotFound
from ._core.errors import NodeOutputError as NodeOutputError
from ._core.errors import NodeTimeoutError as NodeTimeoutError
from ._core.errors import NoPathToEndError as NoPathToEndError
from ._core.errors import NotInTrioError as NotInTrioError
from ._core.errors import PortalClosedError as PortalClosedError
from ._core.errors import ProviderError as ProviderError
from ._core.errors import QueueError as QueueError
from ._core.errors import ReducerError as ReducerError
from ._core.errors import ReplayMismatchError as ReplayMismatchError
from ._core.errors import ReservedNodeNameError as ReservedNodeNameError
from ._core.errors import ReservedScopeError as ReservedScopeError
from ._core.errors import RouterError as RouterError
from ._core.errors import RunAlreadyActive as RunAlreadyActive
from ._core.errors import RunCancelledError as RunCancelledError
from ._core.errors import RunFailedError as RunFailedError
from ._core.errors import SessionNotFound as SessionNotFound
from ._core.errors import StateError as StateError
from ._core.errors import StepLimitExceeded as StepLimitExceeded
from ._core.errors import UnknownAppError as UnknownAppError
from ._core.errors import UnknownNodeError as UnknownNodeError
from ._core.errors import UnreachableNodesError as UnreachableNodesError
from ._core.errors import UsageError as UsageError
from ._core.errors import ValidationFailed as ValidationFailed
from ._core.errors import WeavegraphError as WeavegraphError
from ._core.errors import WorkflowError as WorkflowError

__all__ = (
    "UsageError",
    "AuthorizationError",
    "HTTPError",
    "ErrorDetail",
    "ErrorScope",
    "ErrorEvent",
    "WeavegraphError",
    "ConfigError",
    "EventBusConfigError",
    "StateError",
    "InvalidSessionIdError",
    "NotInTrioError",
    "ReservedScopeError",
    "EventDecodeError",
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
    "WorkflowError",
    "StepLimitExceeded",
    "CheckpointError",
    "CheckpointConflict",
    "SessionNotFound",
    "EventBusClosed",
    "RunCancelledError",
    "InvalidEntryError",
    "PortalClosedError",
    "ReplayMismatchError",
    "LeaseLost",
    "QueueError",
    "RunAlreadyActive",
    "RunFailedError",
    "UnknownAppError",
)
