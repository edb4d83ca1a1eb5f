"""Replay conformance: compare two runs' final states and event sequences.

Typical use: run a session uninterrupted, run it again with a crash and a
resume, and check that both ended the same way::

    comparison = compare_replay_runs(ReplayRun(a_state, a_events),
                                     ReplayRun(b_state, b_events))
    comparison.assert_matches()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .._codec import converter, dumps
from .._core.errors import ReplayMismatchError
from .._core.state import VersionedState
from ..events.types import Event
from .lifecycle import NODE_END

EventNormalizer = Callable[[Event], Any]


def normalize_event(event: Event) -> dict[str, Any]:
    """The event's normalized JSON without what differs between equal runs.

    That is its ``timestamp``, and for ``node.end`` lifecycle events the
    measured ``duration`` (also in the message of events recorded by earlier
    versions).
    """
    data = event.to_json()
    del data["timestamp"]
    if data["scope"] == NODE_END and "duration" in data["metadata"]:
        data["metadata"] = {
            k: v for k, v in data["metadata"].items() if k != "duration"
        }
        if " finished in " in data["message"]:
            data["message"] = data["message"].split(" finished in ", 1)[0] + " finished"
    return data


def normalize_state(state: VersionedState) -> dict[str, Any]:
    """A plain dict of the state's channels and versions (errors keep their time)."""
    return {
        "messages": [converter.unstructure(m) for m in state.messages],
        "messages_version": state.versions.messages,
        "extra": converter.unstructure(dict(state.extra)),
        "extra_version": state.versions.extra,
        "errors": [converter.unstructure(e) for e in state.errors],
        "errors_version": state.versions.errors,
    }


@attrs.frozen
class ReplayRun:
    """A run to compare: its final state and the events it emitted."""

    final_state: VersionedState
    events: tuple[Event, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class ReplayComparison:
    """The differences found (none: the runs match)."""

    differences: tuple[str, ...] = ()

    @property
    def is_match(self) -> bool:
        """Whether no difference was found."""
        return not self.differences

    def assert_matches(self) -> None:
        """Raise `ReplayMismatchError` listing the differences, if any."""
        if self.differences:
            raise ReplayMismatchError(self.differences)


def _text(value: Any) -> str:
    return dumps(value)


def compare_final_state(
    left: VersionedState, right: VersionedState
) -> ReplayComparison:
    """One difference line per channel (or version) that differs."""
    a, b = normalize_state(left), normalize_state(right)
    return ReplayComparison(
        tuple(
            f"final state differs in {key}: left={_text(a[key])} right={_text(b[key])}"
            for key in a
            if a[key] != b[key]
        )
    )


def compare_event_sequences(
    left: Sequence[Event],
    right: Sequence[Event],
    normalizer: EventNormalizer = normalize_event,
) -> ReplayComparison:
    """The count difference (if any), then the first differing event (if any)."""
    differences: list[str] = []
    if len(left) != len(right):
        differences.append(f"event count differs: left={len(left)} right={len(right)}")
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        na, nb = normalizer(a), normalizer(b)
        if na != nb:
            differences.append(
                f"event {index} differs: left={_text(na)} right={_text(nb)}"
            )
            break
    return ReplayComparison(tuple(differences))


def compare_replay_runs(
    left: ReplayRun,
    right: ReplayRun,
    normalizer: EventNormalizer = normalize_event,
) -> ReplayComparison:
    """State differences first, then event differences."""
    return ReplayComparison(
        compare_final_state(left.final_state, right.final_state).differences
        + compare_event_sequences(left.events, right.events, normalizer).differences
    )
