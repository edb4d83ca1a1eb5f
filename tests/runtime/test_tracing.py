"""The OpenTelemetry adapter: spans, parents across trio tasks, retries, errors,
timeouts, cancellation, and no cost (no import) when tracing is off.

Each test gets its own SDK `TracerProvider` with an `InMemorySpanExporter`,
handed to `Tracing.create(..., tracer_provider=...)`: the global provider can be
set only once per process, so setting it here would leak from test to test. The
global path (``trace.set_tracer_provider``) is tested in a subprocess instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers import chain_app, hi
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from weavegraph import (
    END,
    START,
    GraphBuilder,
    InMemoryCheckpointer,
    NodeContext,
    NodePartial,
    RetryPolicy,
    RuntimeConfig,
    Send,
    StateSnapshot,
    WorkflowError,
)
from weavegraph._core.errors import NodeTimeoutError
from weavegraph._core.session import Interrupt
from weavegraph._runtime import engine
from weavegraph._runtime import tracing as tracing_module
from weavegraph._runtime.activation import InterruptSignal
from weavegraph._runtime.tracing import (
    ATTEMPT,
    GRAPH_HASH,
    NODE,
    SESSION_ID,
    STATUS,
    STEP,
    TASK,
    TIMEOUT,
    NodeSpan,
    RunSpan,
    StepSpan,
    Tracing,
)


@attrs.frozen
class Traced:
    tracing: Tracing
    exporter: InMemorySpanExporter
    tracer: trace.Tracer

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def one(self, name: str, **attributes: Any) -> ReadableSpan:
        found = [
            s
            for s in self.spans()
            if s.name == name
            and all(
                (s.attributes or {}).get(f"weavegraph.{k}") == v
                for k, v in attributes.items()
            )
        ]
        assert len(found) == 1, (name, attributes, [s.name for s in self.spans()])
        return found[0]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield Traced(
            Tracing.create(True, tracer_provider=provider),
            exporter,
            provider.get_tracer("tests"),
        )
    finally:
        provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def assert_clean(span: ReadableSpan, status: str) -> None:
    """Ended without an error: no exception event, an unset status code."""
    assert attrs_of(span)[STATUS] == status
    assert span.status.status_code is StatusCode.UNSET
    assert not [e for e in span.events if e.name == "exception"]
    assert span.end_time is not None


# ------------------------------------------------------------------ structure


async def test_run_step_node_spans_with_attributes(traced: Traced) -> None:
    t = traced.tracing
    assert t.enabled
    with t.run("s1", "hash-1") as run:
        assert run.recording
        with t.step("s1", 1):
            with t.node("s1", 1, "fetch", 1):
                pass
            with t.node("s1", 1, "fan", 1, task=2):
                pass
        run.set_status("completed")
    run_span = traced.one("weavegraph.run")
    step = traced.one("weavegraph.step")
    fetch = traced.one("weavegraph.node", node="fetch")
    fan = traced.one("weavegraph.node", node="fan")
    assert attrs_of(run_span) == {
        SESSION_ID: "s1",
        GRAPH_HASH: "hash-1",
        STATUS: "completed",
    }
    assert attrs_of(step) == {SESSION_ID: "s1", STEP: 1, STATUS: "completed"}
    assert attrs_of(fetch) == {
        SESSION_ID: "s1",
        STEP: 1,
        NODE: "fetch",
        ATTEMPT: 1,
        STATUS: "completed",
    }
    assert TASK not in attrs_of(fetch)
    assert attrs_of(fan)[TASK] == 2
    assert parent_of(run_span) is None
    assert parent_of(step) == span_id(run_span)
    assert parent_of(fetch) == parent_of(fan) == span_id(step)
    for span in (run_span, step, fetch, fan):
        assert_clean(span, "completed")
        assert span.context is not None and run_span.context is not None
        assert span.context.trace_id == run_span.context.trace_id
    scope = run_span.instrumentation_scope
    assert scope is not None and scope.name == "weavegraph"
    assert scope.version == "0.1.0"


async def test_the_callers_current_span_is_the_parent_of_the_run(
    traced: Traced,
) -> None:
    with traced.tracer.start_as_current_span("request") as request:
        with traced.tracing.run("s", "h"), traced.tracing.step("s", 1):
            pass
    run = traced.one("weavegraph.run")
    assert parent_of(run) == request.get_span_context().span_id
    # Nothing stays current after the blocks.
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert tracing_module._step_parent.get() is None


async def test_a_run_without_an_explicit_status_infers_it(traced: Traced) -> None:
    with traced.tracing.run("s", "h"):
        pass
    assert_clean(traced.one("weavegraph.run"), "completed")


async def test_a_parent_tasks_span_is_the_parent_in_nursery_children(
    traced: Traced,
) -> None:
    # Trio copies the context variables (so the current OTel span) into a
    # child task when it is spawned: children spawned inside the step see it,
    # a child spawned before the step was opened does not.
    t = traced.tracing
    opened = trio.Event()

    async def early() -> None:
        await opened.wait()
        with t.run("early", "h"):
            pass

    async def child(name: str) -> None:
        await trio.lowlevel.checkpoint()
        with t.node("s", 1, name, 1):
            await trio.lowlevel.checkpoint()
            with traced.tracer.start_as_current_span(f"inside {name}"):
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as outer:
        outer.start_soon(early)
        await trio.testing.wait_all_tasks_blocked()
        with t.run("s", "h"), t.step("s", 1):
            async with trio.open_nursery() as nursery:
                for name in ("a", "b", "c"):
                    nursery.start_soon(child, name)
            opened.set()
    step = traced.one("weavegraph.step")
    for name in ("a", "b", "c"):
        node = traced.one("weavegraph.node", node=name)
        assert parent_of(node) == span_id(step)
        assert parent_of(traced.one(f"inside {name}")) == span_id(node)
    assert parent_of(traced.one("weavegraph.run", session_id="early")) is None


async def test_a_worker_spawned_during_a_node_parents_to_the_step(
    traced: Traced,
) -> None:
    # The engine starts a worker when a running node suspends: the worker's
    # context is copied while that node's span is current, yet its nodes are
    # children of the step, not of their sibling.
    t = traced.tracing
    with t.step("s", 3):
        async with trio.open_nursery() as nursery:

            async def worker() -> None:
                for name in ("b", "c"):
                    with t.node("s", 3, name, 1):
                        await trio.lowlevel.checkpoint()

            with t.node("s", 3, "a", 1):
                nursery.start_soon(worker)
                await trio.sleep(0.01)
    step = traced.one("weavegraph.step")
    for name in ("a", "b", "c"):
        assert parent_of(traced.one("weavegraph.node", node=name)) == span_id(step)


async def test_a_subgraph_run_inside_a_node_is_its_child(traced: Traced) -> None:
    t = traced.tracing
    with t.run("outer", "h1"), t.step("outer", 1):
        with t.node("outer", 1, "sub", 1):
            with t.run("inner", "h2"), t.step("inner", 1):
                with t.node("inner", 1, "leaf", 1):
                    pass
        with t.node("outer", 1, "after", 1):
            pass
    outer_step = traced.one("weavegraph.step", session_id="outer")
    sub = traced.one("weavegraph.node", node="sub")
    inner_run = traced.one("weavegraph.run", session_id="inner")
    inner_step = traced.one("weavegraph.step", session_id="inner")
    assert parent_of(inner_run) == span_id(sub)
    assert parent_of(inner_step) == span_id(inner_run)
    assert parent_of(traced.one("weavegraph.node", node="leaf")) == span_id(inner_step)
    assert parent_of(traced.one("weavegraph.node", node="after")) == span_id(outer_step)


async def test_a_node_outside_any_step_parents_to_the_current_span(
    traced: Traced,
) -> None:
    with traced.tracer.start_as_current_span("caller") as caller:
        with traced.tracing.node("s", 1, "n", 1):
            pass
    node = traced.one("weavegraph.node")
    assert parent_of(node) == caller.get_span_context().span_id


# -------------------------------------------------------- retries and errors


async def test_a_retry_is_an_event_on_the_failed_attempt(traced: Traced) -> None:
    t = traced.tracing
    with t.step("s", 1):
        for attempt in (1, 2, 3):
            with t.node("s", 1, "flaky", attempt) as span:
                if attempt < 3:
                    span.retry(ConnectionError(f"down {attempt}"), 0.25 * attempt)
    first = traced.one("weavegraph.node", attempt=1)
    second = traced.one("weavegraph.node", attempt=2)
    third = traced.one("weavegraph.node", attempt=3)
    assert events(first)[-1] == (
        "weavegraph.retry",
        {
            "weavegraph.attempt": 1,
            "weavegraph.error": "ConnectionError: down 1",
            "weavegraph.retry.delay": 0.25,
        },
    )
    exception = dict(events(first))["exception"]
    assert exception["exception.type"] == "ConnectionError"
    assert exception["exception.message"] == "down 1"
    assert exception["exception.escaped"] == "False"
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "ConnectionError: down 1"
    assert attrs_of(first)[STATUS] == "error"
    assert events(second)[-1][1]["weavegraph.retry.delay"] == 0.5
    assert_clean(third, "completed")
    assert_clean(traced.one("weavegraph.step"), "completed")


async def test_an_error_leaving_a_node_is_recorded_up_to_the_run(
    traced: Traced,
) -> None:
    t = traced.tracing
    with pytest.raises(KeyError):
        with t.run("s", "h") as run:
            try:
                with t.step("s", 1), t.node("s", 1, "boom", 1):
                    raise KeyError("missing")
            except KeyError:
                run.set_status("error", "node 'boom' failed: KeyError: 'missing'")
                raise
    node = traced.one("weavegraph.node")
    step = traced.one("weavegraph.step")
    run_span = traced.one("weavegraph.run")
    for span in (node, step, run_span):
        assert span.status.status_code is StatusCode.ERROR
        assert attrs_of(span)[STATUS] == "error"
        (exception,) = [a for name, a in events(span) if name == "exception"]
        assert exception["exception.type"] == "KeyError"
        assert exception["exception.escaped"] == "True"
    assert node.status.description == "KeyError: 'missing'"
    # The run keeps the text its sentinel gives.
    assert run_span.status.description == "node 'boom' failed: KeyError: 'missing'"


async def test_record_error_is_not_recorded_twice(traced: Traced) -> None:
    error = ValueError("bad output")
    with pytest.raises(ValueError):
        with traced.tracing.node("s", 1, "n", 1) as span:
            span.record_error(error)
            raise error
    node = traced.one("weavegraph.node")
    assert [name for name, _ in events(node)] == ["exception"]
    assert node.status.status_code is StatusCode.ERROR


async def test_a_node_error_inside_a_nursery_is_an_error(traced: Traced) -> None:
    t = traced.tracing

    async def bad() -> None:
        with t.node("s", 1, "bad", 1):
            raise RuntimeError("no")

    async def slow() -> None:
        with t.node("s", 1, "slow", 1):
            await trio.sleep_forever()

    with pytest.RaisesGroup(RuntimeError):
        with t.step("s", 1):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                nursery.start_soon(bad)
    assert traced.one("weavegraph.node", node="bad").status.status_code is (
        StatusCode.ERROR
    )
    # The sibling was cancelled because of it: cancelled, not an error.
    assert_clean(traced.one("weavegraph.node", node="slow"), "cancelled")
    step = traced.one("weavegraph.step")
    assert step.status.status_code is StatusCode.ERROR
    assert attrs_of(step)[STATUS] == "error"


async def test_a_timeout_is_marked(
    traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    t = traced.tracing
    with pytest.raises(NodeTimeoutError):
        with t.node("s", 1, "slow", 1):
            try:
                with trio.fail_after(1.5):
                    await trio.sleep(10)
            except trio.TooSlowError:
                raise NodeTimeoutError("slow", 1.5) from None
    node = traced.one("weavegraph.node")
    assert attrs_of(node)[TIMEOUT] == 1.5
    assert attrs_of(node)[STATUS] == "error"
    assert node.status.status_code is StatusCode.ERROR
    assert node.status.description == "node 'slow' timed out after 1.5s"


async def test_a_retried_timeout_and_an_explicit_mark(traced: Traced) -> None:
    t = traced.tracing
    with t.node("s", 1, "a", 1) as span:
        span.retry(NodeTimeoutError("a", 2.0), 1.0)
    with t.node("s", 1, "b", 1) as span:
        span.mark_timeout(3)
    with t.node("s", 1, "c", 1) as span:
        span.mark_timeout(4, NodeTimeoutError("c", 4))
    a = traced.one("weavegraph.node", node="a")
    assert attrs_of(a)[TIMEOUT] == 2.0
    assert events(a)[-1][0] == "weavegraph.retry"
    b = traced.one("weavegraph.node", node="b")
    assert attrs_of(b)[TIMEOUT] == 3.0
    assert b.status.status_code is StatusCode.UNSET
    c = traced.one("weavegraph.node", node="c")
    assert attrs_of(c)[TIMEOUT] == 4.0
    assert c.status.status_code is StatusCode.ERROR


# ---------------------------------------------------------- ends that are fine


async def test_cancellation_ends_every_span_cleanly(traced: Traced) -> None:
    t = traced.tracing

    async def node(name: str) -> None:
        with t.node("s", 1, name, 1):
            await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        with t.run("s", "h") as run:
            try:
                with t.step("s", 1):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(node, "a")
                        nursery.start_soon(node, "b")
            except BaseException:
                run.set_status("cancelled")
                raise
    assert scope.cancelled_caught
    spans = traced.spans()
    assert sorted(s.name for s in spans) == [
        "weavegraph.node",
        "weavegraph.node",
        "weavegraph.run",
        "weavegraph.step",
    ]
    for span in spans:
        assert_clean(span, "cancelled")
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_cancelled_run_without_an_explicit_status(traced: Traced) -> None:
    with trio.CancelScope() as scope:
        with traced.tracing.run("s", "h"):
            scope.cancel()
            await trio.sleep(1)
    assert_clean(traced.one("weavegraph.run"), "cancelled")


async def test_an_interrupt_is_not_an_error() -> None:
    class Pause(Exception):
        pass

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    t = Tracing.create(True, tracer_provider=provider, pauses=(Pause,))
    interrupt = Interrupt(id="i1", node="ask", payload="ok?")
    with pytest.raises(Pause):
        with t.run("s", "h") as run:
            with t.step("s", 1):
                with pytest.raises(InterruptSignal):
                    with t.node("s", 1, "ask", 1):
                        raise InterruptSignal(interrupt)
                raise Pause
            run.set_status("interrupted")  # not reached: the runner sets it
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert_clean(spans["weavegraph.node"], "interrupted")
    assert_clean(spans["weavegraph.step"], "interrupted")
    assert_clean(spans["weavegraph.run"], "interrupted")
    provider.shutdown()


async def test_run_status_values(traced: Traced) -> None:
    for tracing in (traced.tracing, Tracing.create(False)):
        with tracing.run("s", "h") as run:
            with pytest.raises(ValueError, match="unknown run status 'done'"):
                run.set_status("done")
            run.set_status("interrupted")
    assert_clean(traced.one("weavegraph.run"), "interrupted")


# --------------------------------------------------------------- tracing off


async def test_disabled_tracing_creates_no_spans_and_allocates_nothing(
    traced: Traced,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    off = Tracing.create(False, tracer_provider=provider)
    assert not off.enabled
    assert off is Tracing.create(False)
    handles: list[Any] = []
    with off.run("s", "h") as run:
        handles.append(run)
        with off.step("s", 1) as step:
            handles.append(step)
            with off.node("s", 1, "n", 1, task=0) as node:
                handles.append(node)
                node.retry(ValueError("x"), 1.0)
                node.record_error(ValueError("x"))
                node.mark_timeout(1.0, ValueError("x"))
        run.set_status("error", "x")
    assert [type(h) for h in handles] == [RunSpan, StepSpan, NodeSpan]
    assert not any(h.recording for h in handles)
    # The very same shared objects every time.
    assert off.run("a", "b") is off.run("c", "d")
    assert off.node("a", 1, "x", 1) is off.node("b", 2, "y", 2)
    with pytest.raises(ZeroDivisionError):
        with off.node("s", 1, "n", 1):
            1 / 0  # noqa: B018 - the no-op passes exceptions through
    provider.shutdown()
    assert exporter.get_finished_spans() == ()


def test_global_tracing_is_made_once_per_process() -> None:
    # Engines are made per run: the global-provider object is shared.
    assert Tracing.create(True) is Tracing.create(True)
    assert Tracing.create(True).enabled
    assert Tracing.create(True, pauses=(KeyError,)) is not Tracing.create(True)
    provider = TracerProvider()
    assert Tracing.create(True, tracer_provider=provider) is not Tracing.create(
        True, tracer_provider=provider
    )
    provider.shutdown()


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tracing_off_never_imports_opentelemetry() -> None:
    out = run_python(
        """
        import sys
        import trio
        import weavegraph
        from weavegraph._runtime.tracing import Tracing

        async def main():
            t = Tracing.create(False)
            with t.run("s", "h") as run, t.step("s", 1):
                with t.node("s", 1, "n", 1) as node:
                    node.retry(ValueError("x"), 0.1)
                run.set_status("completed")

        trio.run(main)
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    assert out.strip() == "[]"


def test_without_the_extra_tracing_is_off() -> None:
    out = run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if not installed
        from weavegraph._runtime.tracing import Tracing

        t = Tracing.create(True)
        with t.run("s", "h"), t.step("s", 1), t.node("s", 1, "n", 1):
            pass
        print(t.enabled, t is Tracing.create(False))
        """
    )
    assert out.split() == ["False", "True"]


def test_spans_go_through_the_global_provider() -> None:
    # Made before the application sets its provider (as an App compiled at
    # import time would be), the tracer still finds it; before that, spans
    # are the API's no-op ones.
    out = run_python(
        """
        import trio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from weavegraph._runtime.tracing import Tracing

        t = Tracing.create(True)
        with t.run("before", "h") as run, t.step("before", 1) as step:
            with t.node("before", 1, "n", 1) as node:
                print("before", t.enabled, run.recording, step.recording)
                print("current", trace.get_current_span() is trace.INVALID_SPAN)
        with t.node("before", 1, "alone", 1) as node:
            print("alone", node.recording)

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        async def main():
            async def node(name):
                with t.node("s", 1, name, 1):
                    await trio.sleep(0)

            with t.run("s", "h") as run, t.step("s", 1):
                print("after", run.recording)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(node, "a")
                    nursery.start_soon(node, "b")

        trio.run(main)
        spans = exporter.get_finished_spans()
        by_id = {s.context.span_id: s.name for s in spans}
        def key(s):
            return s.name, s.attributes.get("weavegraph.node") or ""

        for s in sorted(spans, key=key):
            parent = by_id.get(s.parent.span_id) if s.parent else None
            print(s.name, s.attributes.get("weavegraph.node"), parent)
        """
    )
    assert out.splitlines() == [
        "before True False False",
        "current True",
        "alone False",
        "after True",
        "weavegraph.node a weavegraph.step",
        "weavegraph.node b weavegraph.step",
        "weavegraph.run None None",
        "weavegraph.step None weavegraph.run",
    ]


def test_the_span_names_and_attributes_are_documented() -> None:
    doc = tracing_module.__doc__ or ""
    names: Sequence[str] = [
        tracing_module.RUN_SPAN,
        tracing_module.STEP_SPAN,
        tracing_module.NODE_SPAN,
        tracing_module.RETRY_EVENT,
        SESSION_ID,
        GRAPH_HASH,
        STEP,
        NODE,
        ATTEMPT,
        TASK,
        STATUS,
        TIMEOUT,
        tracing_module.ERROR,
        tracing_module.RETRY_DELAY,
    ]
    for name in names:
        assert f"``{name}``" in doc, name


# ------------------------------------------------------- through real runs
# The engine uses one `Tracing` per setting for the whole process, made for
# the global provider; these tests put one made for their own provider in its
# place, so real runs of real apps export to the in-memory exporter.


@pytest.fixture
def run_traced(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(traced.exporter))
    live = Tracing.create(True, tracer_provider=provider, pauses=(engine.Paused,))
    monkeypatch.setitem(engine._TRACINGS, True, live)
    yield Traced(live, traced.exporter, traced.tracer)
    provider.shutdown()


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_a_run_has_a_span_per_run_step_and_node_attempt(
    run_traced: Traced,
) -> None:
    app = chain_app(["a", "b"], RuntimeConfig(session_id="traced-1"))
    await app.invoke(hi())
    spans = run_traced.spans()
    (run,) = by_name(spans, "weavegraph.run")
    steps = by_name(spans, "weavegraph.step")
    nodes = by_name(spans, "weavegraph.node")
    assert attrs_of(run) == {
        SESSION_ID: "traced-1",
        GRAPH_HASH: app.graph.graph_hash,
        STATUS: "completed",
    }
    assert [attrs_of(s) for s in steps] == [
        {SESSION_ID: "traced-1", STEP: step, STATUS: "completed"} for step in (1, 2)
    ]
    assert [attrs_of(s) for s in nodes] == [
        {
            SESSION_ID: "traced-1",
            STEP: step,
            NODE: node,
            ATTEMPT: 1,
            STATUS: "completed",
        }
        for step, node in ((1, "a"), (2, "b"))
    ]
    assert [parent_of(s) for s in steps] == [span_id(run)] * 2
    assert [parent_of(s) for s in nodes] == [span_id(s) for s in steps]
    for span in spans:
        assert_clean(span, "completed")


async def test_concurrent_nodes_and_sent_tasks_are_children_of_their_step(
    run_traced: Traced,
) -> None:
    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        await trio.lowlevel.checkpoint()

    async def fetch(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep(0.001)  # every task waits: they overlap
        return NodePartial(extra={f"got{ctx.task_index}": ctx.payload})

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("fetch", fetch)
        .add_edge(START, "plan")
        .add_conditional_edge("plan", lambda s: [Send("fetch", x) for x in "xyz"])
        .add_edge("fetch", END)
        .compile()
    )
    final = await app.invoke(hi())
    assert final.extra == {"got0": "x", "got1": "y", "got2": "z"}
    spans = run_traced.spans()
    step2 = run_traced.one("weavegraph.step", step=2)
    fetches = [s for s in by_name(spans, "weavegraph.node") if attrs_of(s)[STEP] == 2]
    assert sorted(attrs_of(s)[TASK] for s in fetches) == [0, 1, 2]
    assert {attrs_of(s)[NODE] for s in fetches} == {"fetch"}
    assert [parent_of(s) for s in fetches] == [span_id(step2)] * 3
    assert TASK not in attrs_of(run_traced.one("weavegraph.node", node="plan"))


async def test_retries_errors_and_timeouts_of_real_nodes(
    run_traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    attempts = 0

    async def flaky(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError(f"down {attempts}")

    async def slow(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        await trio.sleep(10)

    app = (
        GraphBuilder()
        .add_node("flaky", flaky, retry=RetryPolicy(max_attempts=3, backoff=0.5))
        .add_node("slow", slow, timeout=2.0)
        .add_edge(START, "flaky")
        .add_edge("flaky", "slow")
        .add_edge("slow", END)
        .compile()
    )
    with pytest.raises(WorkflowError, match="timed out"):
        await app.invoke(hi())
    flaky_spans = [
        run_traced.one("weavegraph.node", node="flaky", attempt=n) for n in (1, 2, 3)
    ]
    for n, span in enumerate(flaky_spans[:2], start=1):
        assert events(span)[-1] == (
            "weavegraph.retry",
            {
                "weavegraph.attempt": n,
                "weavegraph.error": f"ConnectionError: down {n}",
                "weavegraph.retry.delay": pytest.approx(0.5 * 2 ** (n - 1)),
            },
        )
        assert span.status.status_code is StatusCode.ERROR
    assert_clean(flaky_spans[2], "completed")
    slow_span = run_traced.one("weavegraph.node", node="slow")
    assert attrs_of(slow_span)[TIMEOUT] == 2.0
    assert slow_span.status.status_code is StatusCode.ERROR
    assert slow_span.status.description == "node 'slow' timed out after 2s"
    (exception,) = [a for name, a in events(slow_span) if name == "exception"]
    assert exception["exception.type"].endswith(".NodeTimeoutError")
    run = run_traced.one("weavegraph.run")
    assert attrs_of(run)[STATUS] == "error"
    assert run.status.status_code is StatusCode.ERROR
    assert "timed out" in (run.status.description or "")
    assert attrs_of(run_traced.one("weavegraph.step", step=2))[STATUS] == "error"


async def test_the_callers_span_is_the_parent_of_a_real_run(
    run_traced: Traced,
) -> None:
    with run_traced.tracer.start_as_current_span("request") as request:
        await chain_app(["a"]).invoke(hi())
    run = run_traced.one("weavegraph.run")
    assert parent_of(run) == request.get_span_context().span_id
    request_span = run_traced.one("request")
    assert run.context is not None and request_span.context is not None
    assert run.context.trace_id == request_span.context.trace_id


async def test_a_span_opened_by_node_code_is_a_child_of_the_node(
    run_traced: Traced,
) -> None:
    async def call_out(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        with run_traced.tracer.start_as_current_span("http get"):
            await trio.lowlevel.checkpoint()

    app = (
        GraphBuilder()
        .add_node("call", call_out)
        .add_edge(START, "call")
        .add_edge("call", END)
        .compile()
    )
    await app.invoke(hi())
    node = run_traced.one("weavegraph.node")
    assert parent_of(run_traced.one("http get")) == span_id(node)


async def test_an_interrupted_run_is_not_an_error(run_traced: Traced) -> None:
    async def ask(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        await ctx.interrupt("ok?")

    app = (
        GraphBuilder()
        .add_node("ask", ask)
        .add_edge(START, "ask")
        .add_edge("ask", END)
        .compile(RuntimeConfig(checkpointer=InMemoryCheckpointer()))
    )
    await app.invoke(hi(), session_id="paused")
    for name in ("weavegraph.run", "weavegraph.step", "weavegraph.node"):
        assert_clean(run_traced.one(name), "interrupted")


async def test_tracing_false_produces_no_spans(run_traced: Traced) -> None:
    app = chain_app(["a", "b"], RuntimeConfig(tracing=False))
    await app.invoke(hi())
    async with app.invoke_streaming(hi()) as (run, stream):
        async for _ in stream:
            pass
        await run.join()
    assert run_traced.spans() == []
    await chain_app(["a"]).invoke(hi())  # the same process, tracing on
    assert len(by_name(run_traced.spans(), "weavegraph.run")) == 1


def test_real_runs_use_the_global_provider_once_it_is_set() -> None:
    # No provider: runs open no spans (the node sees no current span); once the
    # application sets one, the next run of the same app is traced through it.
    out = run_python(
        """
        import trio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from weavegraph import END, START, GraphBuilder, VersionedState

        seen = []

        async def node(snapshot, ctx):
            seen.append(trace.get_current_span().get_span_context().is_valid)

        app = (GraphBuilder().add_node("n", node).add_edge(START, "n")
               .add_edge("n", END).compile())
        trio.run(app.invoke, VersionedState())
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        trio.run(app.invoke, VersionedState())
        print(seen)
        print(sorted(s.name for s in exporter.get_finished_spans()))
        """
    )
    assert out.splitlines() == [
        "[False, True]",
        "['weavegraph.node', 'weavegraph.run', 'weavegraph.step']",
    ]


async def test_a_subgraph_nodes_run_is_a_child_of_its_span(run_traced: Traced) -> None:
    inner = chain_app(["leaf"])
    outer = (
        GraphBuilder()
        .add_node("sub", inner)
        .add_node("after", appender_node)
        .add_edge(START, "sub")
        .add_edge("sub", "after")
        .add_edge("after", END)
        .compile(RuntimeConfig(session_id="outer"))
    )
    await outer.invoke(hi())
    spans = run_traced.spans()
    runs = by_name(spans, "weavegraph.run")
    (top,) = [s for s in runs if attrs_of(s)[SESSION_ID] == "outer"]
    (child,) = [s for s in runs if attrs_of(s)[SESSION_ID] != "outer"]
    sub = run_traced.one("weavegraph.node", node="sub")
    leaf = run_traced.one("weavegraph.node", node="leaf")
    after = run_traced.one("weavegraph.node", node="after")
    assert parent_of(child) == span_id(sub)
    assert attrs_of(child)[GRAPH_HASH] == inner.graph.graph_hash
    assert attrs_of(top)[GRAPH_HASH] == outer.graph.graph_hash
    (child_step,) = [
        s
        for s in by_name(spans, "weavegraph.step")
        if attrs_of(s)[SESSION_ID] == attrs_of(child)[SESSION_ID]
    ]
    assert parent_of(child_step) == span_id(child)
    assert parent_of(leaf) == span_id(child_step)
    outer_step = run_traced.one("weavegraph.step", step=1, session_id="outer")
    assert parent_of(outer_step) == span_id(top)
    assert parent_of(sub) == span_id(outer_step)
    assert parent_of(after) == span_id(run_traced.one("weavegraph.step", step=2))
    for span in spans:
        assert_clean(span, "completed")


async def appender_node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(extra={"after": True})
