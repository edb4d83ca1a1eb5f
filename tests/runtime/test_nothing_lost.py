"""Nothing lost: finished work of a failed or cancelled step is kept, on every
store; a resume runs only what did not finish and ends like an uninterrupted
run; of two writers of one session exactly one wins."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio
from helpers import STORES, hi, open_store

from weavegraph import (
    END,
    START,
    App,
    CheckpointConflict,
    Checkpointer,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    PostgresCheckpointer,
    RuntimeConfig,
    SQLiteCheckpointer,
    StateSnapshot,
    WorkflowError,
    open_runner,
)
from weavegraph.testing import normalize_state


class FanOut:
    """START → fan → (a, b, flaky) → join → END, counting every node call.

    ``flaky`` fails while ``failures`` is positive, or waits for ``release``.
    """

    def __init__(self, failures: int = 0, block: bool = False) -> None:
        self.calls: Counter[str] = Counter()
        self.failures = failures
        self.block = block
        self.release = trio.Event()
        self.siblings_done = trio.Event()

    def app(self, store: Checkpointer | None) -> App:
        def worker(name: str):  # type: ignore[no-untyped-def]
            async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
                self.calls[name] += 1
                if name == "flaky":
                    if self.failures > 0:
                        self.failures -= 1
                        await trio.sleep(0.01)  # let the siblings finish first
                        raise RuntimeError("flaky failed")
                    if self.block:
                        self.siblings_done.set()
                        await self.release.wait()
                else:
                    await trio.lowlevel.checkpoint()
                return NodePartial(
                    messages=[Message.assistant(name)], extra={name: ctx.step}
                )

            return node

        builder = GraphBuilder().add_node("fan", worker("fan")).add_edge(START, "fan")
        for name in ("a", "b", "flaky"):
            builder.add_node(name, worker(name)).add_edge("fan", name)
        builder.add_node("join", worker("join"))
        builder.add_edge(["a", "b", "flaky"], "join").add_edge("join", END)
        return builder.compile(RuntimeConfig(checkpointer=store))


async def uninterrupted() -> dict[str, object]:
    final = await FanOut().app(None).invoke(hi())
    return normalize_state(final)


@pytest.mark.parametrize("kind", STORES)
async def test_a_failed_step_keeps_its_finished_siblings(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    expected = await uninterrupted()
    graph = FanOut(failures=2)
    async with open_store(kind, tmp_path, request) as store:
        app = graph.app(store)
        with pytest.raises(WorkflowError):
            await app.invoke(hi(), session_id="s")
        async with open_runner(app, checkpointer=store) as runner:
            pending = await runner.get_state("s")
        assert pending.step == 1  # the step that failed is not committed
        assert pending.next == ("flaky",)
        assert sorted(pending.pending_writes) == ["a", "b"]
        partial = pending.pending_writes["a"]
        assert partial is not None and partial.extra == {"a": 2}
        assert pending.error is not None and pending.error.scope.node == "flaky"
        # A resume that fails again runs only flaky and stores no extra step.
        with pytest.raises(WorkflowError):
            await app.invoke(None, session_id="s")
        latest = await store.load_latest("s")
        assert latest is not None and latest.step == 1
        assert graph.calls == Counter({"fan": 1, "a": 1, "b": 1, "flaky": 2})
        # The resume that succeeds merges kept and new partials in order.
        final = await app.invoke(None, session_id="s")
    assert graph.calls == Counter({"fan": 1, "a": 1, "b": 1, "flaky": 3, "join": 1})
    assert normalize_state(final) == expected


@pytest.mark.parametrize("kind", STORES)
async def test_a_cancelled_step_keeps_what_finished(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    expected = await uninterrupted()
    graph = FanOut(block=True)
    async with open_store(kind, tmp_path, request) as store:
        app = graph.app(store)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                run, events = await app.start_streaming(nursery, hi(), session_id="c")
                await graph.siblings_done.wait()
                await trio.testing.wait_all_tasks_blocked()
                run.cancel()
                ends = [e async for e in events if e.is_stream_end]
        assert ends[-1].metadata["status"] == "cancelled"
        async with open_runner(app, checkpointer=store) as runner:
            pending = await runner.get_state("c")
        assert sorted(pending.pending_writes) == ["a", "b"]
        assert pending.next == ("flaky",) and pending.error is None
        graph.release.set()
        final = await app.invoke(None, session_id="c")
    assert graph.calls == Counter({"fan": 1, "a": 1, "b": 1, "flaky": 2, "join": 1})
    assert normalize_state(final) == expected


def racing(base: type[Checkpointer]) -> type[Checkpointer]:
    """``base`` whose first two ``load_latest`` calls wait for each other."""
    looked = [0]
    both = trio.Event()

    class Racing(base):  # type: ignore[valid-type,misc]
        async def load_latest(self, session_id: str) -> object:
            found = await super().load_latest(session_id)
            looked[0] += 1
            if looked[0] == 2:
                both.set()
            await both.wait()
            return found

    return Racing


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_of_two_writers_of_one_new_session_exactly_one_wins(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Two stores on one database stand for two processes. Both look the
    # session up before either writes (a rendezvous in load_latest), so both
    # start it fresh and race for its first step: exactly one may win.
    base = SQLiteCheckpointer if kind == "sqlite" else PostgresCheckpointer
    target = (
        str(tmp_path / "race.db")
        if kind == "sqlite"
        else request.getfixturevalue("postgres_dsn")
    )

    async def run(app: App, session_id: str, outcomes: list[str]) -> None:
        try:
            await app.invoke(hi(), session_id=session_id)
            outcomes.append("won")
        except CheckpointConflict:
            outcomes.append("conflict")

    for trial in range(5):
        Racing = racing(base)
        outcomes: list[str] = []
        graphs = [FanOut(), FanOut()]
        async with Racing(target) as first, Racing(target) as second:
            async with trio.open_nursery() as nursery:
                for graph, store in zip(graphs, (first, second), strict=True):
                    nursery.start_soon(run, graph.app(store), f"race-{trial}", outcomes)
            stored = await base.load_latest(first, f"race-{trial}")
        assert sorted(outcomes) == ["conflict", "won"], trial
        assert stored is not None and stored.step == 3
        # The loser learned it before running any node.
        assert sorted(sum(g.calls.values()) for g in graphs) == [0, 5]
