"""The run viewer with composed graphs, in headless Chromium: a subgraph node
draws its child graph inside its box (any depth down) and is running while any
of its child nodes runs; a node sent as several tasks shows how many run.

Every node that has to be seen running waits on a `trio.Event` the test sets
once the page shows it, so nothing here depends on how fast anything is.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from test_browser import Page, select_graph, viewer_page

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    NodeContext,
    NodePartial,
    Send,
    StateSnapshot,
)

NodeFn = Callable[[StateSnapshot, NodeContext], Awaitable[NodePartial]]

# How the page spells a path (research, then work[2]) and a count of tasks.
PATH_SEP = " \u203a "
TIMES = "\u00d7"


def shown(*parts: str) -> str:
    return PATH_SEP.join(parts)


def waits_for(gate: trio.Event, name: str) -> NodeFn:
    """A node that says it started, waits for ``gate``, and records its task."""

    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        ctx.emit(name, f"{name} waits (task {ctx.task_index})")
        await gate.wait()
        key = name if ctx.task_index is None else f"{name}{ctx.task_index}"
        return NodePartial(extra={key: True})

    return node


def single(name: str, node: NodeFn | App) -> GraphBuilder:
    """START -> name -> END."""
    return GraphBuilder().add_node(name, node).add_edge(START, name).add_edge(name, END)


def research(search_gate: trio.Event, work_gate: trio.Event) -> App:
    """START -> research -> END, research a subgraph: START -> search, which
    sends two ``work`` tasks -> END."""
    child = (
        GraphBuilder()
        .add_node("search", waits_for(search_gate, "search"))
        .add_node("work", waits_for(work_gate, "work"))
        .add_edge(START, "search")
        .add_conditional_edge(
            "search", lambda snapshot: [Send("work", i) for i in range(2)], ["work"]
        )
        .add_edge("work", END)
        .compile()
    )
    return single("research", child).compile()


def deep(gate: trio.Event) -> App:
    """Three levels: outer -> mid -> leaf, each a subgraph of the one above."""
    inner = single("leaf", waits_for(gate, "leaf")).compile()
    mid = single("mid", inner).compile()
    return single("outer", mid).compile()


def fan_out(gate: trio.Event) -> App:
    """START -> fan -> END, fan a subgraph: START -> plan -(three sends)-> work
    -> END."""

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"items": ["a", "b", "c"]})

    child = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("work", waits_for(gate, "work"))
        .add_edge(START, "plan")
        .add_conditional_edge(
            "plan",
            lambda snapshot: [Send("work", item) for item in snapshot.extra["items"]],
            ["work"],
        )
        .add_edge("work", END)
        .compile()
    )
    return single("fan", child).compile()


# Every class change of the nodes named (by data-path), as the list of the
# states the viewer showed each in (running, done), without repeats.
RECORD_STATES = """
((paths) => {
  window.states = {};
  for (const path of paths) {
    const g = document.querySelector(`#graph g.node[data-path="${path}"]`);
    const classes = () =>
      ["running", "done"].filter((c) => g.classList.contains(c)).join(" ");
    const states = window.states[path] = [];
    new MutationObserver(() => {
      const now = classes();
      if (states[states.length - 1] !== now) states.push(now);
    }).observe(g, { attributes: true, attributeFilter: ["class"] });
  }
})
"""

READ_NODES = """
[...document.querySelectorAll("#graph g.node")].map((g) => ({
  node: g.dataset.node, path: g.dataset.path, depth: g.dataset.depth,
  classes: [...g.classList].filter((c) => c !== "node"),
  tasks: g.dataset.tasks,
  badge: g.querySelector(".tasks") ? {
    visibility: g.querySelector(".tasks").getAttribute("visibility"),
    text: g.querySelector(".tasks text").textContent,
    title: g.querySelector(".tasks title").textContent,
  } : null,
}))
"""

READ_EVENTS = """
[...document.querySelectorAll("#events li")].map((li) => ({
  scope: li.dataset.scope, node: li.dataset.node, path: li.dataset.path || null,
  task: li.dataset.task ?? null,
  shown: li.querySelector(".ev-node") ? li.querySelector(".ev-node").textContent : "",
}))
"""

# The box of one drawn node, on the page.
BOX = """
((path) => {
  const r = document.querySelector(`#graph g.node[data-path="${path}"] > rect`)
    .getBoundingClientRect();
  return {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
})
"""


def by_path(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n["path"]: n for n in nodes}


def running(path: str) -> str:
    return (
        f"document.querySelector('#graph g.node[data-path=\"{path}\"]')"
        ".classList.contains('running')"
    )


def tasks_are(path: str, count: int) -> str:
    return (
        f"document.querySelector('#graph g.node[data-path=\"{path}\"]')"
        f".dataset.tasks === '{count}'"
    )


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        outer["left"] < inner["left"]
        and inner["right"] < outer["right"]
        and outer["top"] < inner["top"]
        and inner["bottom"] < outer["bottom"]
    )


async def start_run(page: Page) -> None:
    await page.js("document.getElementById('start').click()")


async def test_subgraph_nodes_are_drawn_inside_and_run_with_their_parent() -> None:
    search_gate, work_gate, leaf_gate = trio.Event(), trio.Event(), trio.Event()
    apps = {
        "research": research(search_gate, work_gate),
        "deep": deep(leaf_gate),
    }
    with trio.fail_after(40):
        async with viewer_page(apps) as (page, _):
            await page.wait_for(
                "document.querySelectorAll('#graph g.node').length === 7"
            )

            # The child graph is drawn inside its subgraph node's box.
            nodes = by_path(await page.js(READ_NODES))
            assert sorted(nodes) == [
                "END",
                "START",
                "research",
                "research/END",
                "research/START",
                "research/search",
                "research/work",
            ]
            assert "subgraph" in nodes["research"]["classes"]
            assert nodes["research/search"]["depth"] == "1"
            assert nodes["research/search"]["node"] == "search"
            parent = await page.js(f"{BOX}('research')")
            for child in ("START", "search", "work", "END"):
                box = await page.js(f"{BOX}('research/{child}')")
                assert inside(box, parent), (child, box, parent)
            label = await page.js(
                "document.querySelector('#graph svg').getAttribute('aria-label')"
            )
            assert label == (
                "Graph research: 3 nodes, 2 edges, and 4 nodes inside its subgraphs"
            )

            # The child node runs: so does the subgraph node around it.
            await page.js(
                f"{RECORD_STATES}(['research', 'research/search', 'research/work'])"
            )
            await start_run(page)
            await page.wait_for(running("research/search"))
            nodes = by_path(await page.js(READ_NODES))
            assert "running" in nodes["research"]["classes"]
            assert "running" not in nodes["research/work"]["classes"]
            assert "done" in nodes["research/START"]["classes"]
            assert "done" not in nodes["research/END"]["classes"]

            # Then its two sent tasks, still inside the running parent.
            search_gate.set()
            await page.wait_for(tasks_are("research/work", 2))
            nodes = by_path(await page.js(READ_NODES))
            assert "running" in nodes["research"]["classes"]
            assert "done" in nodes["research/search"]["classes"]
            assert nodes["research/work"]["badge"] == {
                "visibility": "visible",
                "text": TIMES + "2",
                "title": "2 sent tasks running: 0, 1",
            }
            work_gate.set()
            await page.wait_for("document.body.dataset.state === 'done'")
            assert (
                await page.js("document.getElementById('status').textContent")
                == "completed"
            )
            nodes = by_path(await page.js(READ_NODES))
            assert all("running" not in n["classes"] for n in nodes.values())
            assert {p for p, n in nodes.items() if "done" in n["classes"]} == set(nodes)
            assert nodes["research/work"]["tasks"] == "0"
            assert nodes["research/work"]["badge"]["visibility"] == "hidden"
            # The parent was running from its start to its own end, through
            # the gap between its child's two steps.
            states = await page.js("window.states")
            assert states == {
                "research": ["running", "done"],
                "research/search": ["running", "done"],
                "research/work": ["running", "done"],
            }, states

            # The event list names each child event by its path, sent
            # tasks by their index.
            events = await page.js(READ_EVENTS)
            lifecycle = [
                (e["scope"], e["shown"], e["path"], e["task"])
                for e in events
                if e["scope"] in ("node.start", "node.end")
            ]
            assert lifecycle[:3] == [
                ("node.start", "research", "research", None),
                (
                    "node.start",
                    shown("research", "search"),
                    "research/search",
                    None,
                ),
                ("node.end", shown("research", "search"), "research/search", None),
            ]
            # Both tasks start before either ends (they wait on one gate).
            assert lifecycle[3:5] == [
                (
                    "node.start",
                    shown("research", "work[0]"),
                    "research/work[0]",
                    "0",
                ),
                (
                    "node.start",
                    shown("research", "work[1]"),
                    "research/work[1]",
                    "1",
                ),
            ]
            assert sorted(lifecycle[5:7]) == [
                ("node.end", shown("research", "work[0]"), "research/work[0]", "0"),
                ("node.end", shown("research", "work[1]"), "research/work[1]", "1"),
            ]
            assert lifecycle[7:] == [("node.end", "research", "research", None)]
            # A child step's end is listed under its subgraph node.
            step_ends = [
                (e["shown"], e["path"]) for e in events if e["scope"] == "step.end"
            ]
            assert step_ends == [
                ("research", "research"),
                ("research", "research"),
                ("", None),
            ]
            own = [e for e in events if e["scope"] == "work"]
            assert [(e["shown"], e["task"]) for e in own] == [
                (shown("research", "work[0]"), "0"),
                (shown("research", "work[1]"), "1"),
            ]
            final = await page.js("document.getElementById('final-state').innerText")
            assert shown("research", "search") in final
            assert shown("research", "work") in final
            # The run's own step, never a child's.
            assert "Last step\t1" in final or "Last step\n1" in final, final

            # Three levels: each box inside the one above, all running
            # while the innermost node runs.
            await select_graph(page, "deep", 9)
            nodes = by_path(await page.js(READ_NODES))
            assert nodes["outer/mid/leaf"]["depth"] == "2"
            outer, mid, leaf = [
                await page.js(f"{BOX}({json.dumps(p)})")
                for p in ("outer", "outer/mid", "outer/mid/leaf")
            ]
            assert inside(mid, outer)
            assert inside(leaf, mid)
            await start_run(page)
            await page.wait_for(running("outer/mid/leaf"))
            nodes = by_path(await page.js(READ_NODES))
            assert {p for p, n in nodes.items() if "running" in n["classes"]} == {
                "outer",
                "outer/mid",
                "outer/mid/leaf",
            }
            leaf_gate.set()
            await page.wait_for("document.body.dataset.state === 'done'")
            nodes = by_path(await page.js(READ_NODES))
            assert all("running" not in n["classes"] for n in nodes.values())
            assert {"outer", "outer/mid", "outer/mid/leaf"} <= {
                p for p, n in nodes.items() if "done" in n["classes"]
            }
            assert page.errors() == []


async def test_a_fan_out_shows_how_many_sent_tasks_run() -> None:
    gate = trio.Event()
    with trio.fail_after(30):
        async with viewer_page({"fan": fan_out(gate)}) as (page, _):
            await page.wait_for(
                "document.querySelectorAll('#graph g.node').length === 7"
            )
            await start_run(page)
            await page.wait_for(tasks_are("fan/work", 3))
            nodes = by_path(await page.js(READ_NODES))
            assert "running" in nodes["fan/work"]["classes"]
            assert "running" in nodes["fan"]["classes"]
            assert nodes["fan/work"]["badge"] == {
                "visibility": "visible",
                "text": TIMES + "3",
                "title": "3 sent tasks running: 0, 1, 2",
            }
            # One task each: no badge on the others.
            for path in ("fan", "fan/plan"):
                assert nodes[path]["tasks"] == "0"
                assert nodes[path]["badge"] is None
            starts = [
                (e["shown"], e["task"])
                for e in await page.js(READ_EVENTS)
                if e["scope"] == "node.start"
            ]
            assert starts == [
                ("fan", None),
                (shown("fan", "plan"), None),
                (shown("fan", "work[0]"), "0"),
                (shown("fan", "work[1]"), "1"),
                (shown("fan", "work[2]"), "2"),
            ]

            gate.set()
            await page.wait_for("document.body.dataset.state === 'done'")
            assert (
                await page.js("document.getElementById('status').textContent")
                == "completed"
            )
            nodes = by_path(await page.js(READ_NODES))
            assert "running" not in nodes["fan/work"]["classes"]
            assert "done" in nodes["fan/work"]["classes"]
            assert nodes["fan/work"]["tasks"] == "0"
            assert nodes["fan/work"]["badge"]["visibility"] == "hidden"
            assert (
                await page.js(
                    "document.querySelectorAll('#graph g.node.running').length"
                )
                == 0
            )
            ends = [
                (e["node"], e["path"], e["task"])
                for e in await page.js(READ_EVENTS)
                if e["scope"] == "node.end" and e["node"] == "work"
            ]
            assert sorted(ends) == [
                ("work", "fan/work[0]", "0"),
                ("work", "fan/work[1]", "1"),
                ("work", "fan/work[2]", "2"),
            ]
            assert page.errors() == []


def failing_child() -> App:
    """START -> research -> END, research a subgraph whose node ``boom`` fails."""

    async def boom(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        raise RuntimeError("the search index is gone")

    return single("research", single("boom", boom).compile()).compile()


async def test_a_failing_child_node_marks_it_and_its_parent_failed() -> None:
    with trio.fail_after(30):
        async with viewer_page({"failing": failing_child()}) as (page, _):
            await page.wait_for(
                "document.querySelectorAll('#graph g.node').length === 6"
            )
            await start_run(page)
            await page.wait_for("document.body.dataset.state === 'done'")
            status = await page.js("document.getElementById('status').textContent")
            assert status.startswith("error"), status
            nodes = by_path(await page.js(READ_NODES))
            assert "failed" in nodes["research/boom"]["classes"]
            assert "failed" in nodes["research"]["classes"]
            assert all("running" not in n["classes"] for n in nodes.values())
            assert "done" not in nodes["research/END"]["classes"]
            errors = [
                (e["node"], e["path"])
                for e in await page.js(READ_EVENTS)
                if e["scope"] == "node.error"
            ]
            assert errors == [("boom", "research/boom"), ("research", "research")]
            assert page.errors() == []


async def test_a_top_level_fan_out_shows_its_sent_tasks() -> None:
    gate = trio.Event()

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("work", waits_for(gate, "work"))
        .add_edge(START, "plan")
        .add_conditional_edge(
            "plan", lambda snapshot: [Send("work", i) for i in range(3)], ["work"]
        )
        .add_edge("work", END)
        .compile()
    )
    with trio.fail_after(30):
        async with viewer_page({"top": app}) as (page, _):
            await start_run(page)
            await page.wait_for(tasks_are("work", 3))
            nodes = by_path(await page.js(READ_NODES))
            assert "running" in nodes["work"]["classes"]
            assert nodes["work"]["badge"]["text"] == TIMES + "3"
            gate.set()
            await page.wait_for("document.body.dataset.state === 'done'")
            assert (
                await page.js("document.getElementById('status').textContent")
                == "completed"
            )
            nodes = by_path(await page.js(READ_NODES))
            assert "done" in nodes["work"]["classes"]
            assert nodes["work"]["tasks"] == "0"
