"""Cancelled or killed runs resume to the same end as uninterrupted ones."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from weavegraph import (
    END,
    START,
    Event,
    EventBus,
    GraphBuilder,
    MemorySink,
    Message,
    NodeContext,
    NodeEvent,
    NodePartial,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
    open_runner,
)
from weavegraph.testing import normalize_event


def workflow(n: int, edges: set[tuple[int, int]], loops: int) -> Any:
    """A random DAG of ``n`` nodes, then a counter loop of ``loops`` rounds."""

    def node(i: int) -> Any:
        async def body(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            await trio.sleep(0.001 * (i + 1))  # distinct: a deterministic order
            ctx.emit("work", f"n{i}", seen=len(snapshot.messages))
            return NodePartial(
                messages=[Message.assistant(f"n{i}@{ctx.step}")],
                extra={f"n{i}": ctx.step},
            )

        return body

    async def loop(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep(0.01)
        count = snapshot.extra.get("loop", 0) + 1
        ctx.emit("loop", str(count))
        return NodePartial(extra={"loop": count})

    builder = GraphBuilder().add_node("loop", loop)
    for i in range(n):
        builder.add_node(f"n{i}", node(i))
    incoming = {j for _, j in edges}
    outgoing = {i for i, _ in edges}
    for i in range(n):
        if i not in incoming:
            builder.add_edge(START, f"n{i}")
        if i not in outgoing:
            builder.add_edge(f"n{i}", "loop")
    for i, j in sorted(edges):
        builder.add_edge(f"n{i}", f"n{j}")
    builder.add_conditional_edge(
        "loop",
        lambda s: "loop" if s.extra["loop"] < loops else END,
        path_map=["loop", END],
    )
    return builder.compile()


async def run_to_end(
    app: Any, path: Path, cancel_at: float | None
) -> tuple[Any, list[Event]]:
    sink = MemorySink()
    async with SQLiteCheckpointer(path) as store:
        async with open_runner(
            app, checkpointer=store, event_bus=EventBus([sink])
        ) as r:
            init = await r.create_session("s", VersionedState.with_user_message("go"))
            if cancel_at is None:
                return await r.run_until_complete("s"), sink.events
            with trio.move_on_after(cancel_at):
                await r.run_until_complete("s")
            return init, sink.events


def after_step(
    events: list[Event], step: int, kept: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Normalized events, minus those of steps up to ``step`` (and the
    resumed run's ``session.resume``).

    Node events (and lifecycle events) of ``kept`` nodes in step ``step + 1``
    are left out too: those nodes finished before the cut and their partials
    were kept (pending writes), so the resumed run does not run them again.
    Events of nodes running concurrently in one step interleave as they
    happen, in any run; they are compared per step, in a canonical order.
    """

    def dropped(event: Event) -> bool:
        if event.is_stream_end:
            return False
        if event.scope_label == "session.resume":
            return True  # only a resumed run says what it continues from
        metadata = event.to_json()["metadata"]
        seen = metadata.get("step")
        if seen is not None and seen <= step:
            return True
        if isinstance(event, NodeEvent):
            return event.step == step + 1 and event.node_id in kept
        return seen == step + 1 and metadata.get("node") in kept

    kept_events = [normalize_event(e) for e in events if not dropped(e)]
    return sorted(
        kept_events,
        key=lambda e: (
            e["metadata"].get("step", math.inf),
            json.dumps(e, sort_keys=True),
        ),
    )


@settings(max_examples=25)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.sets(
                st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(
                    lambda e: e[0] < e[1]
                ),
                max_size=8,
            ),
            st.integers(1, 4),
            st.floats(0.0005, 0.06),
        )
    )
)
def test_resume_equals_uninterrupted(
    case: tuple[int, set[tuple[int, int]], int, float],
) -> None:
    n, edges, loops, cancel_at = case
    app = workflow(n, edges, loops)

    async def main(tmp: Path) -> None:
        full_state, full_events = await run_to_end(app, tmp / "full.db", None)
        await run_to_end(app, tmp / "cut.db", cancel_at)
        sink = MemorySink()
        async with (
            SQLiteCheckpointer(tmp / "cut.db") as store,
            open_runner(app, checkpointer=store, event_bus=EventBus([sink])) as runner,
        ):
            init = await runner.create_session("s", VersionedState())
            assert init.resumed  # at least the step-0 checkpoint was stored
            kept = frozenset((await runner.get_state("s")).pending_writes)
            state = await runner.run_until_complete("s")
        assert state == full_state
        assert after_step(sink.events, init.step) == after_step(
            full_events, init.step, kept
        )

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # A real clock: the mock clock's autojump slows down worker-thread waits.
        trio.run(main, Path(tmp))


CRASHING_RUN = textwrap.dedent(
    """
    import os, sys, trio
    from weavegraph import (END, START, GraphBuilder, NodePartial, RuntimeConfig,
                            SQLiteCheckpointer, VersionedState, open_runner)

    DELAY = float(os.environ.get("TICK_DELAY", "0"))

    async def tick(snapshot, ctx):
        await trio.sleep(DELAY)
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    app = (GraphBuilder().add_node("tick", tick).add_edge(START, "tick")
           .add_conditional_edge(
               "tick", lambda s: "tick" if s.extra["n"] < 400 else END,
               path_map=["tick", END])
           .compile(RuntimeConfig(max_steps=1000)))

    async def main(path):
        async with SQLiteCheckpointer(path) as store:
            async with open_runner(app, checkpointer=store) as runner:
                await runner.create_session("s", VersionedState())
                await runner.run_until_complete("s")

    trio.run(main, sys.argv[1])
    """
)


def test_a_killed_process_resumes_from_its_last_stored_step(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        env={**os.environ, "TICK_DELAY": "0.02"},
    )
    try:
        deadline = time.monotonic() + 60
        stored = 0
        while stored < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
            if path.exists():
                try:
                    with sqlite3.connect(path) as conn:
                        row = conn.execute("SELECT max(step) FROM steps").fetchone()
                        stored = row[0] or 0
                except sqlite3.Error:
                    pass
        assert stored >= 5, "the child never stored five steps"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    namespace: dict[str, Any] = {}
    exec(CRASHING_RUN.split("async def main")[0], namespace)
    app = namespace["app"]

    async def resume() -> tuple[int, Any]:
        async with SQLiteCheckpointer(path) as store:
            async with open_runner(app, checkpointer=store) as runner:
                init = await runner.create_session("s", VersionedState())
                return init.step, await runner.run_until_complete("s")

    step, state = trio.run(resume)
    assert step >= 5
    assert state.extra == {"n": 400}
    assert state.versions.extra == 401
