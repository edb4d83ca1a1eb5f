"""The building blocks under the runtime, for extensions and tools.

Most programs never need these: they are what `App` and `AppRunner` are made of
(the barrier, the superstep engine, session records, bus metrics), exposed for
code that drives supersteps itself or inspects a run's machinery; and the typed
items of the ``updates`` and ``values`` stream modes (`StepUpdates`,
`StepValues`), for code that annotates or checks what a stream yields.
"""

from __future__ import annotations

from ._core.graph import BaseGraphBuilder as BaseGraphBuilder
from ._core.reducers import BarrierOutcome as BarrierOutcome
from ._core.reducers import KeyConflict as KeyConflict
from ._core.reducers import apply_barrier as apply_barrier
from ._core.session import SESSION_ID_RULE as SESSION_ID_RULE
from ._core.session import Session as Session
from ._core.session import check_session_id as check_session_id
from ._core.state import History as History
from ._core.state import Versions as Versions
from ._runtime.engine import Engine as Engine
from ._runtime.runner import RunMetadata as RunMetadata
from ._trio import open_service_nursery as open_service_nursery
from .checkpoint.record import Checkpoint as Checkpoint
from .checkpoint.record import SessionSummary as SessionSummary
from .checkpoint.record import StepPage as StepPage
from .events.bus import BusMetrics as BusMetrics
from .events.steps import StepUpdates as StepUpdates
from .events.steps import StepValues as StepValues
from .events.types import stream_end_event as stream_end_event

__all__ = (
    "SESSION_ID_RULE",
    "BarrierOutcome",
    "BaseGraphBuilder",
    "BusMetrics",
    "Checkpoint",
    "Engine",
    "History",
    "KeyConflict",
    "RunMetadata",
    "Session",
    "SessionSummary",
    "StepPage",
    "StepUpdates",
    "StepValues",
    "Versions",
    "apply_barrier",
    "check_session_id",
    "open_service_nursery",
    "stream_end_event",
)
