"""Failures, cancellation, timeouts, retries and the step limit."""

from __future__ import annotations

import pytest
import trio
from helpers import appender, hi, noop

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    ErrorEvent,
    GraphBuilder,
    MemorySink,
    Message,
    NodeContext,
    NodePartial,
    RetryPolicy,
    RouterError,
    RuntimeConfig,
    StateSnapshot,
    StepLimitExceeded,
    WorkflowError,
)
from weavegraph._codec import converter
from weavegraph.errors import (
    MissingInput,
    NodeOutputError,
    NodeTimeoutError,
    ReducerError,
)


def single(node, **kwargs):
    return (
        GraphBuilder()
        .add_node("X", node, **kwargs)
        .add_edge(START, "X")
        .add_edge("X", END)
        .compile(kwargs.pop("config", None))
    )


async def test_failure_trace_2_18_4() -> None:
    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise MissingInput("test_key")

    sink = MemorySink()
    with pytest.raises(WorkflowError) as info:
        await single(x).invoke_with_sinks(hi(), [sink])
    err = info.value
    assert isinstance(err.__cause__, MissingInput)
    assert err.step == 1
    assert err.state is not None
    (recorded,) = err.state.errors
    assert recorded == err.error_event
    as_json = converter.unstructure(recorded, ErrorEvent)
    assert as_json["scope"] == {"scope": "node", "kind": "X", "step": 1}
    assert as_json["error"] == {
        "message": "missing expected input: test_key",
        "details": None,
    }
    assert as_json["tags"] == ["node"]
    assert as_json["context"] == {}
    ends = [e for e in sink.events if e.is_stream_end]
    assert len(ends) == 1
    assert ends[0].message.endswith(
        "status=error step=1 error=missing expected input: test_key"
    )


async def test_plain_exceptions_are_described_with_their_type() -> None:
    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise ValueError("boom")

    with pytest.raises(WorkflowError) as info:
        await single(x).invoke(hi())
    assert info.value.error_event.error.message == "ValueError: boom"
    assert "node 'X' at step 1" in str(info.value)


async def test_failing_node_cancels_its_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def slow(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        try:
            await trio.sleep(10)
            finished.append(ctx.node_id)
        except trio.Cancelled:
            cancelled.append(ctx.node_id)
            raise

    async def bad(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        await trio.sleep(1)
        raise RuntimeError("bad node")

    builder = GraphBuilder().add_node("fan", noop).add_edge(START, "fan")
    for name, node in [("s1", slow), ("bad", bad), ("s2", slow)]:
        builder.add_node(name, node).add_edge("fan", name).add_edge(name, END)
    start = trio.current_time()
    with pytest.raises(WorkflowError) as info:
        await builder.compile().invoke(hi())
    assert trio.current_time() - start == pytest.approx(1.0)
    assert sorted(cancelled) == ["s1", "s2"]
    assert finished == []
    assert info.value.error_event.scope.node == "bad"
    # Outputs of the failed step are discarded; the step counter advanced.
    assert info.value.step == 2
    assert [m.content for m in info.value.state.messages] == ["hi"]


async def test_node_returning_the_wrong_type() -> None:
    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> dict[str, int]:
        return {"count": 1}

    with pytest.raises(WorkflowError) as info:
        await single(x).invoke(hi())
    cause = info.value.__cause__
    assert isinstance(cause, NodeOutputError)
    assert "returned dict" in str(cause)
    assert "NodePartial" in str(cause)


async def test_timeout_fails_the_node_and_names_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        await trio.sleep(60)

    with pytest.raises(WorkflowError) as info:
        await single(x, timeout=5).invoke(hi())
    assert isinstance(info.value.__cause__, NodeTimeoutError)
    event = info.value.error_event
    assert event.error.message == "node 'X' timed out after 5s"
    assert event.tags == ("node", "timeout")
    assert trio.current_time() == pytest.approx(5.0)


async def test_retry_until_success_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[tuple[int, float]] = []

    async def flaky(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        attempts.append((ctx.attempt, trio.current_time()))
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return NodePartial(messages=[Message.assistant("ok")])

    policy = RetryPolicy(max_attempts=3, backoff=0.5, multiplier=2.0)
    final = await single(flaky, retry=policy).invoke(hi())
    assert final.messages[-1].content == "ok"
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert [t for _, t in attempts] == pytest.approx([0.0, 0.5, 1.5])


async def test_retry_gives_up_after_max_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    async def broken(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with pytest.raises(WorkflowError) as info:
        await single(broken, retry=RetryPolicy(max_attempts=2)).invoke(hi())
    assert calls == 2
    assert info.value.error_event.error.message == "ConnectionError: down"


async def test_retry_only_on_listed_exceptions() -> None:
    calls = 0

    async def broken(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("nope")

    policy = RetryPolicy(max_attempts=5, retry_on=(ConnectionError,))
    with pytest.raises(WorkflowError):
        await single(broken, retry=policy).invoke(hi())
    assert calls == 1


async def test_timeouts_are_retried_per_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_then_fast(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        if ctx.attempt == 1:
            await trio.sleep(10)
        return NodePartial(extra={"attempt": ctx.attempt})

    final = await single(
        slow_then_fast, timeout=1, retry=RetryPolicy(max_attempts=2)
    ).invoke(hi())
    assert final.extra == {"attempt": 2}


def test_retry_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=-1)
    assert RetryPolicy(backoff=1, multiplier=3, max_backoff=5).delay(3) == 5.0


async def test_step_limit() -> None:
    async def forever(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    app = (
        GraphBuilder()
        .add_node("loop", forever)
        .add_edge(START, "loop")
        .add_conditional_edge("loop", lambda s: "loop", path_map=["loop", END])
        .compile(RuntimeConfig(max_steps=7))
    )
    sink = MemorySink()
    with pytest.raises(StepLimitExceeded) as info:
        await app.invoke_with_sinks(hi(), [sink])
    assert isinstance(info.value, WorkflowError)
    assert info.value.state is not None
    assert info.value.state.extra == {"n": 7}
    assert "max_steps=7" in info.value.error_event.error.message
    assert info.value.error_event.tags == ("runner", "step_limit")
    assert sink.events[-1].message.startswith(
        f"session={info.value.session_id} status=error step=7"
    )


async def test_default_step_limit_is_100() -> None:
    async def forever(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"n": snapshot.extra.get("n", 0) + 1})

    app = (
        GraphBuilder()
        .add_node("loop", forever)
        .add_edge(START, "loop")
        .add_conditional_edge("loop", lambda s: "loop", path_map=["loop", END])
        .compile()
    )
    with pytest.raises(StepLimitExceeded) as info:
        await app.invoke(hi())
    assert info.value.step == 100


async def test_router_returning_a_non_string() -> None:
    app = (
        GraphBuilder()
        .add_node("X", appender("x"))
        .add_edge(START, "X")
        .add_conditional_edge("X", lambda s: 42)
        .compile()
    )
    with pytest.raises(WorkflowError) as info:
        await app.invoke(hi())
    assert isinstance(info.value.__cause__, RouterError)
    assert "returned 42 (int)" in info.value.error_event.error.message
    assert info.value.error_event.tags == ("runner", "router")


async def test_raising_router() -> None:
    def router(snapshot: StateSnapshot) -> str:
        raise LookupError("no route")

    app = (
        GraphBuilder()
        .add_node("X", appender("x"))
        .add_edge(START, "X")
        .add_conditional_edge("X", router)
        .compile()
    )
    with pytest.raises(WorkflowError, match="no route"):
        await app.invoke(hi())


async def test_raising_reducer_is_reported_and_state_is_untouched() -> None:
    def explode(current: object, update: object) -> object:
        raise ArithmeticError("reducer broke")

    app = (
        GraphBuilder()
        .add_node("X", appender("x"))
        .add_edge(START, "X")
        .add_edge("X", END)
        .with_reducer("messages", explode)
        .compile()
    )
    with pytest.raises(WorkflowError) as info:
        await app.invoke(hi())
    assert isinstance(info.value.__cause__, ReducerError)
    assert "reducer broke" in info.value.error_event.error.message
    assert info.value.error_event.scope.scope == "runner"
    assert [m.content for m in info.value.state.messages] == ["hi"]


async def test_recoverable_errors_go_to_the_errors_channel() -> None:
    async def warn(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(errors=[ErrorEvent.node(ctx.node_id, ctx.step, "minor")])

    final = await single(warn).invoke(hi())
    assert [e.error.message for e in final.errors] == ["minor"]
    assert final.versions.errors == 1  # the reference never bumps errors


async def test_cancelling_the_caller_cancels_the_run_with_a_sentinel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled = False

    async def slow(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        nonlocal cancelled
        try:
            await trio.sleep(100)
        except trio.Cancelled:
            cancelled = True
            raise

    sink = MemorySink()
    with trio.move_on_after(1):
        await single(slow).invoke_with_sinks(hi(), [sink])
    assert cancelled
    # The attempt started and never ended: no node.end or node.error follows.
    assert [e.scope_label for e in sink.events] == ["node.start", STREAM_END_SCOPE]
    assert sink.events[-1].message.split(" ", 1)[1] == "status=cancelled step=0"


async def test_keyboard_interrupt_is_never_wrapped() -> None:
    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await single(x).invoke(hi())
