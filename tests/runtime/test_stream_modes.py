"""Stream modes: ``events``, ``updates`` (partials by node) and ``values`` (state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import STORES, open_store

from weavegraph import (
    END,
    START,
    App,
    Event,
    GraphBuilder,
    MemorySink,
    Message,
    NodeContext,
    NodePartial,
    Replace,
    Resume,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
    WorkflowError,
    event_from_json,
)
from weavegraph.errors import ConfigError, EventDecodeError, ReservedScopeError
from weavegraph.events.steps import partial_from_json, partial_to_json
from weavegraph.lowlevel import Engine, StepUpdates, StepValues


async def first(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    ctx.emit("progress", "first")
    return NodePartial(messages=[Message.assistant("one")], extra={"seen": 1})


async def second(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    ctx.emit("progress", "second")


def chain(config: RuntimeConfig | None = None) -> App:
    return (
        GraphBuilder()
        .add_node("first", first)
        .add_node("second", second)
        .add_edge(START, "first")
        .add_edge("first", "second")
        .add_edge("second", END)
        .compile(config)
    )


async def stream(app: App, *modes: str, **kwargs: Any) -> list[Event]:
    state = kwargs.pop("state", VersionedState.with_user_message("go"))
    chosen = modes or None
    async with app.invoke_streaming(state, modes=chosen, **kwargs) as (run, events):
        items = [e async for e in events]
        await run.join()
    return items


def kinds(items: list[Event]) -> list[str]:
    return [e.type if e.type in ("updates", "values") else "event" for e in items]


async def test_events_alone_is_what_a_stream_always_showed() -> None:
    items = await stream(chain(), "events")
    assert not any(isinstance(e, StepUpdates | StepValues) for e in items)
    assert [e.scope_label for e in items if e.type == "node"] == ["progress"] * 2
    assert sum(e.is_stream_end for e in items) == 1 and items[-1].is_stream_end
    default = await stream(chain())
    assert [e.scope_label for e in default] == [e.scope_label for e in items]


async def test_updates_alone_give_each_steps_partials_by_node() -> None:
    items = await stream(chain(), "updates")
    assert kinds(items) == ["updates", "updates", "event"]
    one, two = items[0], items[1]
    assert isinstance(one, StepUpdates) and isinstance(two, StepUpdates)
    assert one.step == 1 and two.step == 2
    assert dict(one.updates) == {
        "first": NodePartial(messages=[Message.assistant("one")], extra={"seen": 1})
    }
    assert dict(two.updates) == {"second": NodePartial()}  # returned None
    assert one.session_id == items[-1].metadata["session_id"]
    assert one.scope_label == "step.updates" and "first" in one.message
    assert items[-1].metadata["status"] == "completed"


async def test_values_alone_give_the_state_after_each_step() -> None:
    items = await stream(chain(), "values")
    assert kinds(items) == ["values", "values", "event"]
    one, two = items[0], items[1]
    assert isinstance(one, StepValues) and isinstance(two, StepValues)
    assert [m.content for m in one.state.messages] == ["go", "one"]
    assert one.state.extra["seen"] == 1
    assert two.state == one.state  # the second node wrote nothing
    assert one.scope_label == "step.values"


async def test_modes_combine_in_order_events_then_updates_then_values() -> None:
    items = await stream(chain(), "values", "updates", "events")
    steps: list[tuple[str, Any]] = []
    for e in items:
        step = e.step if isinstance(e, StepUpdates | StepValues) else None
        if step is None and e.type == "node":
            step = e.to_json()["metadata"]["step"]
        if step is not None:
            steps.append((kinds([e])[0], step))
    assert steps == [
        ("event", 1),
        ("updates", 1),
        ("values", 1),
        ("event", 2),
        ("updates", 2),
        ("values", 2),
    ]
    assert items[-1].is_stream_end and sum(e.is_stream_end for e in items) == 1
    # Every event of a step comes before that step's items.
    first_update = next(i for i, e in enumerate(items) if e.type == "updates")
    assert all(
        e.to_json()["metadata"].get("step") == 1
        for e in items[:first_update]
        if e.type == "node"
    )


async def test_a_single_mode_name_is_accepted() -> None:
    app = chain()
    async with app.invoke_streaming(
        VersionedState.with_user_message("go"), modes="updates"
    ) as (_, events):
        items = [e async for e in events]
    assert kinds(items) == ["updates", "updates", "event"]


async def test_fan_out_updates_are_keyed_by_every_node_that_ran() -> None:
    async def worker(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.lowlevel.checkpoint()  # the branches run concurrently
        return NodePartial(extra={ctx.node_id: ctx.step})

    async def router(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(frontier=Replace(["left", "right", "middle"]))

    app = (
        GraphBuilder()
        .add_node("split", router)
        .add_node("left", worker)
        .add_node("right", worker)
        .add_node("middle", worker)
        .add_edge(START, "split")
        .add_edge("split", "left")
        .add_edge("split", "right")
        .add_edge("split", "middle")
        .add_edge("left", END)
        .add_edge("right", END)
        .add_edge("middle", END)
        .compile()
    )
    items = await stream(app, "updates", "values")
    updates = [e for e in items if isinstance(e, StepUpdates)]
    assert [u.step for u in updates] == [1, 2]
    assert list(updates[0].updates) == ["split"]
    assert updates[0].updates["split"].frontier == Replace(["left", "right", "middle"])
    assert list(updates[1].updates) == ["left", "right", "middle"]
    assert {n: dict(p.extra or {}) for n, p in updates[1].updates.items()} == {
        "left": {"left": 2},
        "right": {"right": 2},
        "middle": {"middle": 2},
    }
    (last_values,) = [e for e in items if isinstance(e, StepValues) and e.step == 2]
    assert dict(last_values.state.extra) == {"left": 2, "right": 2, "middle": 2}


async def test_a_failed_step_has_no_items_and_one_sentinel() -> None:
    async def boom(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        ctx.emit("progress", "about to fail")
        raise RuntimeError("boom")

    app = (
        GraphBuilder()
        .add_node("first", first)
        .add_node("boom", boom)
        .add_edge(START, "first")
        .add_edge("first", "boom")
        .add_edge("boom", END)
        .compile()
    )
    async with app.invoke_streaming(
        VersionedState.with_user_message("go"), modes=("events", "updates", "values")
    ) as (run, events):
        items = [e async for e in events]
        with pytest.raises(WorkflowError):
            await run.join()
    assert [
        (e.type, e.step) for e in items if isinstance(e, StepUpdates | StepValues)
    ] == [
        ("updates", 1),
        ("values", 1),
    ]
    progress = [i for i, e in enumerate(items) if e.scope_label == "progress"]
    assert len(progress) == 2
    assert sum(e.is_stream_end for e in items) == 1 and items[-1].is_stream_end
    assert items[-1].metadata["status"] == "error"


@pytest.mark.parametrize("kind", ["none", *STORES])
async def test_with_and_without_a_checkpointer(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async def ask(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        answer = await ctx.interrupt("name?")
        return NodePartial(extra={"name": answer})

    async with open_store(kind, tmp_path, request) as store:
        app = (
            GraphBuilder()
            .add_node("first", first)
            .add_node("ask", ask)
            .add_edge(START, "first")
            .add_edge("first", "ask")
            .add_edge("ask", END)
            .compile(RuntimeConfig(checkpointer=store))
        )
        items = await stream(app, "updates", "values", session_id="modes-1")
        end = items[-1]
        assert sum(e.is_stream_end for e in items) == 1 and end.is_stream_end
        # The interrupted step committed nothing: only step 1 has items.
        assert [(e.type, e.step) for e in items[:-1]] == [
            ("updates", 1),
            ("values", 1),
        ]
        assert end.metadata["status"] == "interrupted"
        if store is None:
            return  # resuming needs a store
        resumed = await stream(
            app, "updates", "values", session_id="modes-1", state=Resume("Ada")
        )
        assert [(e.type, e.step) for e in resumed[:-1]] == [
            ("updates", 2),
            ("values", 2),
        ]
        assert dict(resumed[0].updates) == {"ask": NodePartial(extra={"name": "Ada"})}
        assert resumed[1].state.extra == {"seen": 1, "name": "Ada"}
        assert resumed[-1].metadata["status"] == "completed"


async def test_the_json_form_round_trips_messages_with_every_field() -> None:
    from weavegraph._core.state import ToolCall

    call = ToolCall("call-1", "search", {"q": "trio", "when": (2024, 1)})
    message = Message(
        "assistant",
        "",
        tool_calls=[call],
        name="planner",
        metadata={"model": "m", "tokens": {1, 2}},
    )
    reply = Message("tool", "found", tool_call_id="call-1", name="search")

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(
            messages=[message, reply], extra={"gone": None, "at": b"\x00"}
        )

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_edge(START, "plan")
        .add_edge("plan", END)
        .compile()
    )
    items = await stream(app, "updates", "values")
    update, values = items[0], items[1]
    assert isinstance(update, StepUpdates) and isinstance(values, StepValues)
    data = update.to_json()
    assert data["type"] == "updates" and data["scope"] == "step.updates"
    assert set(data) == {"type", "scope", "message", "timestamp", "metadata"}
    shown = data["metadata"]["updates"]["plan"]["messages"][0]
    assert shown["tool_calls"] == [
        {
            "id": "call-1",
            "name": "search",
            "arguments": {"q": "trio", "when": {"$wg": "tuple", "v": [2024, 1]}},
        }
    ]
    assert shown["name"] == "planner" and shown["metadata"]["model"] == "m"
    tool = data["metadata"]["updates"]["plan"]["messages"][1]
    assert tool["tool_call_id"] == "call-1"
    assert data["metadata"]["step"] == 1
    assert data["metadata"]["session_id"] == update.session_id
    state_json = values.to_json()["metadata"]["state"]
    assert state_json["messages"][1]["tool_calls"][0]["id"] == "call-1"
    for item in (update, values):
        again = event_from_json(item.to_json_str())
        assert again == item and type(again) is type(item)
    assert event_from_json(update.to_json())
    back = event_from_json(update.to_json_str())
    assert isinstance(back, StepUpdates)
    assert back.updates["plan"].messages == (message, reply)


def test_partials_round_trip_through_their_json_form() -> None:
    partials = [
        NodePartial(),
        NodePartial(messages=[Message.user("hi")]),
        NodePartial(extra={"a": {1, 2}, "b": None}),
        NodePartial(frontier=Replace(["x"])),
    ]
    for partial in partials:
        assert partial_from_json(partial_to_json(partial)) == partial
    assert partial_to_json(NodePartial()) == {}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"metadata": {"updates": {}}}, "int 'step'"),
        ({"metadata": {"step": 1}}, "'updates' object"),
        ({"metadata": {"step": 1, "updates": {"n": []}}}, "is an object"),
        ({"metadata": {"step": 1, "updates": {"n": {"x": 1}}}}, "got \\['x'\\]"),
        ({"scope": "other", "metadata": {"step": 1, "updates": {}}}, "has scope"),
        ({"type": "values", "metadata": {"step": 1}}, "'state' object"),
    ],
)
def test_malformed_items_are_refused(data: dict[str, Any], match: str) -> None:
    kind = data.get("type", "updates")
    obj = {
        "type": kind,
        "scope": data.get("scope", f"step.{kind}"),
        "message": "",
        "metadata": data["metadata"],
    }
    with pytest.raises(EventDecodeError, match=match):
        event_from_json(obj)


@pytest.mark.parametrize(
    "modes", [("event",), ("events", "value"), (), 3, {"updates": 1}]
)
async def test_unknown_modes_are_refused_with_the_valid_ones(modes: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        async with chain().invoke_streaming(VersionedState(), modes=modes):
            pass  # pragma: no cover - refused before the run starts
    assert "'events', 'updates', 'values'" in str(caught.value)
    with pytest.raises(ConfigError, match="'events', 'updates', 'values'"):
        RuntimeConfig(stream_modes=modes)
    with pytest.raises(ConfigError, match="'events', 'updates', 'values'"):
        chain().stream_sync(VersionedState(), modes=modes)


async def test_node_code_cannot_emit_step_item_scopes() -> None:
    async def spoof(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        for scope in ("step.updates", "step.values"):
            try:
                ctx.emit(scope, "fake")
            except ReservedScopeError as exc:
                ctx.emit("refused", str(exc))

    app = (
        GraphBuilder()
        .add_node("spoof", spoof)
        .add_edge(START, "spoof")
        .add_edge("spoof", END)
        .compile()
    )
    items = await stream(app, "events")
    refused = [e.message for e in items if e.scope_label == "refused"]
    assert len(refused) == 2 and all("stream modes" in m for m in refused)
    assert not any(e.scope_label.startswith("step.u") for e in items)


async def test_config_modes_reach_sinks_and_are_the_streams_default() -> None:
    sink = MemorySink()
    config = RuntimeConfig(stream_modes=("updates",))
    app = chain(config)
    await app.invoke_with_sinks(VersionedState.with_user_message("go"), [sink])
    assert [e.type for e in sink.events].count("updates") == 2
    assert any(e.type == "node" for e in sink.events)  # sinks see every item
    items = await stream(app)  # the stream shows the config's modes
    assert kinds(items) == ["updates", "updates", "event"]
    items = await stream(app, "events")  # events only, though updates are made
    assert "updates" not in kinds(items)


def test_stream_sync_takes_modes() -> None:
    items = list(
        chain().stream_sync(VersionedState.with_user_message("go"), modes="values")
    )
    assert kinds(items) == ["values", "values", "event"]


async def test_nothing_is_built_when_no_mode_asks() -> None:
    assert Engine(chain().graph, RuntimeConfig()).step_items is None
    assert Engine(chain().graph, RuntimeConfig(stream_modes="values")).step_items
    sink = MemorySink()
    await chain().invoke_with_sinks(VersionedState.with_user_message("go"), [sink])
    assert not any(isinstance(e, StepUpdates | StepValues) for e in sink.events)


async def test_replay_comparisons_see_the_items() -> None:
    from weavegraph.testing import ReplayRun, compare_replay_runs

    async def run(extra: int) -> ReplayRun:
        async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            return NodePartial(extra={"n": extra})

        app = (
            GraphBuilder()
            .add_node("n", node)
            .add_edge(START, "n")
            .add_edge("n", END)
            .compile(RuntimeConfig(session_id="same"))
        )
        async with app.invoke_streaming(VersionedState(), modes="updates") as (r, e):
            items = [item async for item in e]
            final = await r.join()
        return ReplayRun(final, items)

    one, again, other = await run(1), await run(1), await run(2)
    assert compare_replay_runs(one, again).is_match
    differences = compare_replay_runs(one, other).differences
    assert any("event 0 differs" in d and '"updates"' in d for d in differences)
