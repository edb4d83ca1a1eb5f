"""The run viewer page in headless Chromium, against a real hypercorn server.

Chromium (Debian's ``chromium`` package, which ``make test`` installs) is driven
over the Chrome DevTools Protocol on a WebSocket (``trio-websocket``): open the
page, start a run with the form, wait for the stream's end, then read the page.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from live import reviewer
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    InMemoryCheckpointer,
    Message,
    NodeContext,
    NodePartial,
    RetryPolicy,
    RuntimeConfig,
    StateSnapshot,
)
from weavegraph.serve import serve_sse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,1000",
    "--remote-debugging-port=0",
]
DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://\S+)")


# ---------------------------------------------------------------- the workflow


async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    question = snapshot.last_message.content if snapshot.last_message else ""
    ctx.emit("plan", f"reading: {question}")
    await trio.sleep(0.1)
    ctx.emit("plan", "plan ready")
    await trio.sleep(0.1)
    return NodePartial(messages=[Message.assistant("plan: answer briefly")])


async def write(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    pieces = ["Weave", "graph", " streams", " tokens."]
    for piece in pieces:
        ctx.emit_llm_chunk("draft", piece)
        await trio.sleep(0.08)
    ctx.emit_llm_final("draft", "")
    return NodePartial(messages=[Message.assistant("".join(pieces))])


async def review(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await trio.sleep(0.1)
    ctx.emit("review", "looks fine")
    await trio.sleep(0.1)
    return NodePartial(messages=[Message.assistant("approved")])


def assistant() -> App:
    """START -> plan -> write -(router)-> review | END; review -> END."""
    return (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("write", write)
        .add_node("review", review)
        .add_edge(START, "plan")
        .add_edge("plan", "write")
        .add_conditional_edge("write", lambda snapshot: "review", ["review", END])
        .add_edge("review", END)
        # The app's own setting: a run the server starts has lifecycle events
        # anyway (the viewer's "running" highlight follows them).
        .compile(RuntimeConfig(lifecycle_events=False))
    )


# The run's events: per step node.start, the node's own events, node.end,
# step.end, the step's updates and values; then the stream's end.
RUN_EVENTS = 3 * 5 + (2 + 5 + 1) + 1


def fails() -> App:
    """A run whose error text imitates a completed sentinel."""

    async def crash(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("crash", "about to fail")
        raise RuntimeError("the model said status=completed step=99")

    return (
        GraphBuilder()
        .add_node("crash", crash)
        .add_edge(START, "crash")
        .add_edge("crash", END)
        .compile()
    )


def echo() -> App:
    async def say(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("echo", "echo")

    return (
        GraphBuilder()
        .add_node("say", say)
        .add_edge(START, "say")
        .add_edge("say", END)
        .compile()
    )


# ------------------------------------------------------------------- Chromium


class DevTools:
    """A small Chrome DevTools Protocol client: commands, replies and events."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived: dict[int, trio.Event] = {}

    async def read_forever(self) -> None:
        try:
            while True:
                message = json.loads(await self.ws.get_message())
                if "id" in message and message["id"] in self._arrived:
                    self._replies[message["id"]] = message
                    self._arrived.pop(message["id"]).set()
                else:
                    self.events.append(message)
        except ConnectionClosed:
            pass

    async def call(
        self, method: str, params: dict[str, Any] | None = None, **routing: Any
    ) -> dict[str, Any]:
        self._next_id += 1
        number = self._next_id
        arrived = self._arrived[number] = trio.Event()
        await self.ws.send_message(
            json.dumps(
                {"id": number, "method": method, "params": params or {}, **routing}
            )
        )
        with trio.fail_after(10):
            await arrived.wait()
        reply = self._replies.pop(number)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result


class Page:
    """One tab, reached through a flattened CDP session."""

    def __init__(self, devtools: DevTools, session_id: str) -> None:
        self.devtools = devtools
        self.session_id = session_id

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.devtools.call(method, params, sessionId=self.session_id)

    async def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page (awaiting promises); its JSON value."""
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise AssertionError(
                f"page script failed: {result['exceptionDetails']}\n{expression}"
            )
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 10.0) -> None:
        """Poll until ``expression`` is true (errors, as while loading, mean no)."""
        probe = (
            f"(() => {{ try {{ return Boolean({expression}); }}"
            " catch (e) { return String(e); } })()"
        )
        last: Any = None
        with trio.move_on_after(seconds):
            while True:  # the page is polled: nothing here could be waited on
                last = await self.js(probe)
                if last is True:
                    return
                await trio.sleep(0.05)
        state = await self.js("document.body && document.body.dataset.state")
        events = await self.js(
            "document.getElementById('events') &&"
            " document.getElementById('events').innerText"
        )
        raise AssertionError(
            f"timed out waiting for {expression} (last: {last})\n"
            f"body state: {state}\nevents:\n{events}\n"
            f"page errors: {self.errors()}"
        )

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors the page reported so far."""
        found = []
        for event in self.devtools.events:
            if event.get("sessionId") != self.session_id:
                continue
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif (
                event.get("method") == "Runtime.consoleAPICalled"
                and params.get("type") == "error"
            ):
                found.append(json.dumps(params["args"])[:500])
        return found


def chromium_binary() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium"
            " package; run `make test`, which installs it",
            pytrace=False,
        )
    return CHROMIUM


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[DevTools]:
    """Headless Chromium in its own process group and profile, always killed."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="weavegraph-chromium-") as profile:
        process = await trio.lowlevel.open_process(
            [str(binary), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        log = bytearray()
        found = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process, log, found)
                with trio.move_on_after(15):
                    await found.wait()
                match = DEVTOOLS_LINE.search(log)
                if match is None:
                    raise AssertionError(
                        "Chromium did not open its DevTools port:\n"
                        + log.decode(errors="replace")[-3000:]
                    )
                async with open_websocket_url(
                    match.group(1).decode(), max_message_size=64 << 20
                ) as ws:
                    devtools = DevTools(ws)
                    nursery.start_soon(devtools.read_forever)
                    yield devtools
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await _kill(process)


async def _drain(process: trio.Process, log: bytearray, found: trio.Event) -> None:
    assert process.stderr is not None
    async with process.stderr:
        while chunk := await process.stderr.receive_some():
            log += chunk
            if DEVTOOLS_LINE.search(log):
                found.set()


async def _kill(process: trio.Process) -> None:
    """SIGTERM to Chromium's process group, SIGKILL if it lingers."""
    for sig, patience in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        with trio.move_on_after(patience):
            await process.wait()
        if process.returncode is not None:
            break
    with contextlib.suppress(ProcessLookupError):  # helpers left behind
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def open_page(devtools: DevTools) -> Page:
    target = await devtools.call("Target.createTarget", {"url": "about:blank"})
    attached = await devtools.call(
        "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
    )
    page = Page(devtools, attached["sessionId"])
    await page.call("Runtime.enable")
    await page.call("Page.enable")
    return page


@contextlib.asynccontextmanager
async def viewer_page(apps: Any, **options: Any) -> AsyncIterator[tuple[Page, str]]:
    """A real server of ``apps`` on loopback and a Chromium page showing its
    viewer, ready: ``(page, url)``. The server stops when the block ends."""
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_sse, apps, port=0, **options))
        async with chromium() as devtools:
            page = await open_page(devtools)
            await page.call("Page.navigate", url=urls[0] + "/")
            await page.wait_for("document.body.dataset.state === 'ready'")
            yield page, urls[0]
        nursery.cancel_scope.cancel()


async def screenshot(page: Page, path: Path) -> bytes:
    metrics = await page.call("Page.getLayoutMetrics")
    size = metrics["cssContentSize"]
    shot = await page.call(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={
            "x": 0,
            "y": 0,
            "width": size["width"],
            "height": size["height"],
            "scale": 1,
        },
    )
    data = base64.b64decode(shot["data"])
    await trio.Path(path).write_bytes(data)
    return data


# ----------------------------------------------------------------------- test

# Every time a node gains the "running" class, however the frames were batched:
# a record's new value is the old value of the next record on the same element.
RECORD_RUNNING = """
window.runningSeen = [];
new MutationObserver((records) => {
  const running = (value) => (value || "").split(/\\s+/).includes("running");
  records.forEach((record, i) => {
    const later = records.slice(i + 1).find((r) => r.target === record.target);
    const now = later ? later.oldValue : record.target.getAttribute("class");
    if (!running(record.oldValue) && running(now)) {
      window.runningSeen.push(record.target.dataset.node);
    }
  });
}).observe(document.getElementById("graph"), {
  subtree: true, attributes: true, attributeFilter: ["class"], attributeOldValue: true,
});
"""

READ_PAGE = """
(() => {
  const items = [...document.querySelectorAll("#events li")];
  return {
    events: items.map((li) => ({
      type: li.dataset.type, scope: li.dataset.scope, node: li.dataset.node,
      id: li.dataset.id || null, text: li.innerText,
    })),
    status: document.getElementById("status").textContent,
    finalState: document.getElementById("final-state").innerText,
    llm: document.getElementById("llm-output").innerText,
    drops: document.getElementById("drops").textContent,
    svgNodes: [...document.querySelectorAll("#graph svg g.node")].map(
      (g) => g.dataset.node),
    done: [...document.querySelectorAll("#graph g.node.done")].map(
      (g) => g.dataset.node),
    running: document.querySelectorAll("#graph g.node.running").length,
    conditional: document.querySelectorAll("#graph path.edge.conditional").length,
    updates: [...document.querySelectorAll("#updates > li")].map((li) => ({
      step: li.dataset.step,
      nodes: [...li.querySelectorAll(".update")].map((d) => d.dataset.node),
      text: li.innerText,
    })),
    stepState: document.getElementById("step-state").innerText,
    edges: document.querySelectorAll("#graph path.edge").length,
    runningSeen: window.runningSeen || [],
  };
})()
"""

NODES = ["START", "plan", "write", "review", "END"]
NODE_MESSAGES = ["reading: what is weavegraph?", "plan ready", "looks fine"]


def check_end(seen: dict[str, Any]) -> None:
    """What any view of the finished run shows, whole or not."""
    assert seen["events"][-1]["scope"] == "stream end"
    assert "status=completed" in seen["events"][-1]["text"]
    assert "completed" in seen["status"]
    final = seen["finalState"]
    assert re.search(r"session=\S+ status=completed step=3", final), final
    assert re.search(r"Last step\s+3", final), final
    assert sorted(seen["svgNodes"]) == sorted(NODES)
    assert "END" in seen["done"]
    assert seen["running"] == 0


def check_whole_run(seen: dict[str, Any]) -> None:
    node_events = [e for e in seen["events"] if e["type"] == "node"]
    assert [(e["node"], e["scope"]) for e in node_events] == [
        ("plan", "plan"),
        ("plan", "plan"),
        ("review", "review"),
    ]
    for event, message in zip(node_events, NODE_MESSAGES, strict=True):
        assert message in event["text"]
    llm = [e for e in seen["events"] if e["type"] == "llm"]
    assert [e["scope"] for e in llm] == ["llm.chunk"] * 4 + ["llm.final"]
    assert {e["node"] for e in llm} == {"write"}
    # Every mode was asked for: the events are numbered without a gap.
    assert [e["id"] for e in seen["events"]] == [
        str(i) for i in range(1, RUN_EVENTS + 1)
    ]
    starts = [e["node"] for e in seen["events"] if e["scope"] == "node.start"]
    assert starts == ["plan", "write", "review"]
    assert [e["type"] for e in seen["events"]].count("updates") == 3
    assert [e["type"] for e in seen["events"]].count("values") == 3
    # The updates panel: each step's partials, by node.
    assert [(u["step"], u["nodes"]) for u in seen["updates"]] == [
        ("1", ["plan"]),
        ("2", ["write"]),
        ("3", ["review"]),
    ]
    assert "assistant: plan: answer briefly" in seen["updates"][0]["text"]
    assert "assistant: Weavegraph streams tokens." in seen["updates"][1]["text"]
    assert re.search(r"After step\s+3", seen["stepState"]), seen["stepState"]
    assert "assistant: approved" in seen["stepState"]
    assert seen["drops"] == "0"
    # The final event is the stream's last piece: the text shows once.
    assert seen["llm"].count("Weavegraph streams tokens.") == 1
    final = seen["finalState"]
    for text in ("plan", "write", "review", "Weavegraph streams tokens."):
        assert text in final, (text, final)
    assert re.search(r"Missed events\s+0", final), final
    # The state the run ended with, fetched from GET /runs/{id}/state.
    for text in (
        "user: what is weavegraph?",
        "assistant: plan: answer briefly",
        "assistant: Weavegraph streams tokens.",
        "assistant: approved",
    ):
        assert text in final, (text, final)
    assert "messages 4" in final, final
    assert set(seen["done"]) == set(NODES)
    check_end(seen)


async def select_graph(page: Page, name: str, nodes: int) -> None:
    """Pick ``name`` in the graph picker; wait for its ``nodes`` to be drawn."""
    await page.js(
        "{ const s = document.getElementById('graph-select');"
        f"s.value = {json.dumps(name)};"
        "s.dispatchEvent(new Event('change')); }"
    )
    await page.wait_for(
        f"document.querySelectorAll('#graph g.node').length === {nodes}"
    )


async def test_viewer_shows_a_live_run_in_chromium(tmp_path: Path) -> None:
    apps = {"assistant": assistant(), "echo": echo(), "fails": fails()}
    # The server keeps the last 6 events of a run: the live client sees them
    # all, one re-attaching after the run misses the others.
    with trio.fail_after(30):
        async with viewer_page(apps, log_capacity=6) as (page, _):
            await page.wait_for(
                "document.querySelectorAll('#graph svg g.node').length === 5"
            )

            # Two graphs: the picker shows both and redraws on a change.
            options = await page.js(
                "[...document.querySelectorAll('#graph-select option')]"
                ".map((o) => o.value)"
            )
            assert options == ["assistant", "echo", "fails"]
            assert (
                await page.js("document.getElementById('graph-picker').hidden") is False
            )
            for name, count in (("echo", 3), ("fails", 3), ("assistant", 5)):
                await select_graph(page, name, count)

            # A run started from the form, streamed through fetch().
            await page.js(RECORD_RUNNING)
            await page.js(
                "document.getElementById('message').value = 'what is weavegraph?';"
                "document.getElementById('start').click()"
            )
            await page.wait_for("document.body.dataset.state === 'done'")
            seen = await page.js(READ_PAGE)
            check_whole_run(seen)
            assert seen["edges"] == 5
            assert seen["conditional"] == 2
            assert seen["runningSeen"] == ["plan", "write", "review"]

            png = await screenshot(page, tmp_path / "viewer.png")
            assert png.startswith(b"\x89PNG\r\n\x1a\n")
            assert len(png) > 10_000

            # Re-attaching to the finished session replays what the server
            # still holds through EventSource (closed at the stream's end):
            # one "dropped" frame for the events gone, counted once
            # although the event numbers jump as well.
            gone = RUN_EVENTS - 6
            await page.js("document.getElementById('attach').click()")
            await page.wait_for("document.body.dataset.state === 'done'")
            seen = await page.js(READ_PAGE)
            assert seen["events"][0]["type"] == "dropped"
            assert f"{gone} events dropped" in seen["events"][0]["text"]
            assert [e["id"] for e in seen["events"][1:]] == [
                str(i) for i in range(gone + 1, RUN_EVENTS + 1)
            ]
            assert seen["drops"] == str(gone)
            assert re.search(rf"Missed events\s+{gone}", seen["finalState"])
            assert [u["step"] for u in seen["updates"]] == ["3"]
            check_end(seen)
            await screenshot(page, tmp_path / "viewer-attached.png")

            # The status is the sentinel's metadata, not a pattern in its
            # text: an error message saying "status=completed" fools nothing.
            await select_graph(page, "fails", 3)
            await page.js(
                "document.getElementById('session-id').value = 'spoof-1';"
                "document.getElementById('start').click()"
            )
            await page.wait_for("document.body.dataset.state === 'done'")
            seen = await page.js(READ_PAGE)
            end = seen["events"][-1]
            assert end["scope"] == "stream end"
            assert "status=completed step=99" in end["text"]
            assert await page.js(
                "document.querySelector('#events li:last-child')"
                ".classList.contains('bad')"
            )
            assert seen["status"].startswith("error:"), seen["status"]
            assert re.search(r"Status\s+error", seen["finalState"])
            # The sentinel's own step (0 or 1, as the runner counts a
            # failed step), never the 99 its text mentions.
            assert re.search(r"Last step\s+[01]\n", seen["finalState"])
            assert "END" not in seen["done"]

            # The page runs under a Content-Security-Policy without inline
            # code: it loaded its script and style from files, and the
            # browser reported no violation (it would be a console error).
            styled = await page.js(
                "getComputedStyle(document.querySelector('header')).display"
            )
            assert styled == "flex"
            assert page.errors() == []


READ_REVIEW = """
(() => ({
  hidden: document.getElementById("review-panel").hidden,
  items: [...document.querySelectorAll("#interrupts .interrupt")].map((d) => ({
    id: d.dataset.id, node: d.dataset.node,
    payload: d.querySelector("pre.payload").innerText,
  })),
  status: document.getElementById("status").textContent,
}))()
"""


async def test_viewer_answers_an_interrupt_and_shows_past_steps(
    tmp_path: Path,
) -> None:
    apps = {"review": reviewer()}
    with trio.fail_after(40):
        async with viewer_page(apps, checkpointer=InMemoryCheckpointer()) as (page, _):
            assert await page.js("document.getElementById('review-panel').hidden")

            # The run pauses: the page shows what the node asks.
            await page.js(
                "document.getElementById('extra').value = '{\"to\": \"Ann\"}';"
                "document.getElementById('session-id').value = 'mail-1';"
                "document.getElementById('start').click()"
            )
            await page.wait_for("document.body.dataset.state === 'done'")
            await page.wait_for("!document.getElementById('review-panel').hidden")
            seen = await page.js(READ_REVIEW)
            assert seen["status"] == "interrupted"
            waiting = await page.js(
                "[...document.querySelectorAll('#graph g.node.waiting')]"
                ".map((g) => g.dataset.node)"
            )
            assert waiting == ["draft"]
            [item] = seen["items"]
            assert item["node"] == "draft"
            assert json.loads(item["payload"]) == {
                "draft": "Dear Ann, the report is ready.",
                "question": "send it?",
            }
            await screenshot(page, tmp_path / "viewer-interrupted.png")

            # Answer it from the form: the continuation streams to the end.
            await page.js(
                "document.getElementById('answer-0').value = 'yes';"
                "document.getElementById('answer').click()"
            )
            await page.wait_for(
                "document.body.dataset.state === 'done'"
                " && document.getElementById('status').textContent"
                " === 'completed'"
            )
            seen = await page.js(READ_PAGE)
            assert seen["events"][-1]["scope"] == "stream end"
            assert "status=completed" in seen["events"][-1]["text"]
            sends = [e for e in seen["events"] if e["scope"] == "send"]
            assert [e["text"] for e in sends] == [
                sends[0]["text"]
            ] and "sent: Dear Ann, the report is ready." in sends[0]["text"]
            assert "assistant: sent: Dear Ann" in seen["finalState"]
            assert await page.js("document.getElementById('review-panel').hidden")

            # The step slider reads past states from the server.
            await page.wait_for("!document.getElementById('history-panel').hidden")
            last = await page.js("document.body.dataset.step")
            steps = await page.js(
                "Number(document.getElementById('step-slider').max) + 1"
            )
            assert steps >= 3
            await page.js(
                "{ const s = document.getElementById('step-slider');"
                "s.value = '0'; s.dispatchEvent(new Event('input')); }"
            )
            await page.wait_for("document.body.dataset.step === '0'")
            view = await page.js("document.getElementById('step-view').innerText")
            assert re.search(r"Next\s+draft", view), view
            assert '"to": "Ann"' in view
            assert "sent:" not in view
            await page.js(
                "{ const s = document.getElementById('step-slider');"
                "s.value = s.max; s.dispatchEvent(new Event('input')); }"
            )
            await page.wait_for(f"document.body.dataset.step === '{last}'")
            view = await page.js("document.getElementById('step-view').innerText")
            assert "sent: Dear Ann" in view
            assert re.search(r"Status\s+completed", view), view
            await screenshot(page, tmp_path / "viewer-steps.png")

            # A breakpoint: the page offers to resume past it.
            await page.js(
                """(async () => {
                  const post = (path, body) => fetch(path, {
                    method: "POST", body: JSON.stringify(body),
                    headers: {"Content-Type": "application/json"},
                  }).then((r) => r.text());
                  await post("/runs", {session_id: "mail-2"});
                  await post("/runs/mail-2/resume",
                             {value: "yes", interrupt_before: ["send"]});
                })()"""
            )
            await page.js(
                "document.getElementById('session-id').value = 'mail-2';"
                "document.getElementById('attach').click()"
            )
            await page.wait_for(
                "document.body.dataset.state === 'done'"
                " && !document.getElementById('review-panel').hidden"
            )
            assert (
                await page.js("document.getElementById('answer').textContent")
                == "Resume"
            )
            assert "next: send" in await page.js(
                "document.getElementById('interrupts').innerText"
            )
            await page.js("document.getElementById('answer').click()")
            await page.wait_for(
                "document.body.dataset.state === 'done'"
                " && document.getElementById('status').textContent"
                " === 'completed'"
            )
            seen = await page.js(READ_PAGE)
            assert "assistant: sent: Dear the team" in seen["finalState"]
            assert page.errors() == []


# Every class change of the ``flaky`` node, as the sorted list of the states
# the viewer shows (running, retrying, done, failed).
RECORD_FLAKY = """
window.flakyStates = [];
const flaky = document.querySelector('#graph g.node[data-node="flaky"]');
const shown = () => ["running", "retrying", "done", "failed"]
  .filter((c) => flaky.classList.contains(c)).join(" ");
new MutationObserver(() => {
  const now = shown();
  const states = window.flakyStates;
  if (states[states.length - 1] !== now) states.push(now);
}).observe(flaky, { attributes: true, attributeFilter: ["class"] });
"""


def retrying() -> App:
    """START -> flaky -> END; ``flaky`` fails twice, then succeeds."""

    async def flaky(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep(0.3)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return NodePartial(extra={"attempts": ctx.attempt})

    return (
        GraphBuilder()
        .add_node("flaky", flaky, retry=RetryPolicy(max_attempts=3, backoff=0.3))
        .add_edge(START, "flaky")
        .add_edge("flaky", END)
        .compile()
    )


async def test_a_retrying_node_stays_highlighted_as_running() -> None:
    with trio.fail_after(30):
        async with viewer_page({"flaky": retrying()}) as (page, _):
            await page.wait_for(
                "document.querySelector('#graph g.node[data-node=\"flaky\"]')"
            )
            await page.js(RECORD_FLAKY)
            await page.js("document.getElementById('start').click()")
            # While it waits for its next attempt, the node is running.
            await page.wait_for(
                "document.querySelectorAll('#events li[data-scope=\"node.retry\"]')"
                ".length >= 1"
            )
            classes = await page.js(
                "[...document.querySelector('#graph g.node[data-node=\"flaky\"]')"
                ".classList]"
            )
            assert "running" in classes and "retrying" in classes, classes
            await page.wait_for("document.body.dataset.state === 'done'")
            seen = await page.js(READ_PAGE)
            assert "completed" in seen["status"]
            scopes = [e["scope"] for e in seen["events"] if e["node"] == "flaky"]
            assert scopes == [
                "node.start",
                "node.retry",
                "node.start",
                "node.retry",
                "node.start",
                "node.end",
            ]
            # Running from its first attempt to its end, then done, never
            # running again: the retries did not interrupt the highlight.
            states = await page.js("window.flakyStates")
            assert states == ["running", "running retrying", "done"], states
            assert seen["running"] == 0
            assert "flaky" in seen["done"]
            assert [(u["step"], u["nodes"]) for u in seen["updates"]] == [
                ("1", ["flaky"])
            ]
            assert 'extra: {"attempts":3}' in seen["updates"][0]["text"]
            assert page.errors() == []
