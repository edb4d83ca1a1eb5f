"""SSE serving throughput of weavegraph over loopback, next to the in-process stream.

What is measured
----------------
One graph with one node that emits N events (20,000 by default) with
``ctx.emit("tick", "m")`` and ``await trio.lowlevel.checkpoint()`` after every 256.
Its event bus has the default capacity and ``overflow="block"`` (lossless: the SSE
server forces that policy on the runs it starts, and the in-process scenarios use
the same).  The same compiled graph is read five ways:

* **in-process, 1 reader** -- ``async with app.invoke_streaming(state) as (run,
  events)``: the first event with ``await events.receive()``, the rest with
  ``async for``, then ``await run.join()``.
* **in-process, K readers** -- an ``EventBus`` built from the app's config, K
  streams ``bus.subscribe(stop_at_stream_end=True)`` made before the bus starts
  (the way ``App.start_streaming`` subscribes its one stream), each read by its
  own task, while ``open_runner(app, event_bus=bus)`` runs one session with
  ``create_session`` + ``run_until_complete``.
* **HTTP, 1 client** -- ``weavegraph.serve.serve_sse`` (hypercorn's trio worker,
  127.0.0.1, port 0, ``log_capacity=N + 10``, ``grace=30`` s) and an
  ``httpx2.AsyncClient``: ``client.stream("POST", "/runs")`` read to its end with
  ``aiter_bytes``.  SSE frames are counted as occurrences of ``b"\\nevent: "`` in
  the raw bytes (occurrences split across two chunks included), which is the
  cheapest correct count; no JSON is decoded on the client.
* **HTTP, K clients** -- the same POST, and once its response headers are in
  (the run is then registered), K - 1 more clients ``GET /runs/{id}/events`` on
  the same run.  With ``log_capacity`` >= N + 1 every late client starts from
  event 1 and must get every event.  Reported as deliveries/s = N * K / time,
  where time runs from sending the POST to the end of the last client's stream.
* **HTTP, client in a separate process** -- the two HTTP scenarios again, run by
  a child process (this script with a hidden ``--client-of URL``) against the
  server of this process, so that server and client each get a core of their
  own when the machine has two.  The child times its own runs; its start-up is
  not timed.

Unless labelled "separate process", the HTTP client runs in the server's process
and event loop: client and server then share one core's worth of Python, and the
HTTP figures are the sum of both sides' costs.

Events/s and deliveries/s count the N ``tick`` events; the stream-end sentinel is
checked but not counted.  Whole-run times include run start-up and the sentinel.

**Time to first event** is measured twice:

* on a second graph served by the same server, whose node emits a single event,
  over 20 runs per path (after 2 untimed ones): in-process from entering
  ``invoke_streaming`` to the return of the first ``await events.receive()``;
  over HTTP from sending the POST to reading the first chunk that holds an
  ``event:`` line (the stream is then read to its end);
* inside the throughput runs (reader 0: the POST client, or the first
  in-process reader), where the first event follows 256 emits.

Verification: every reader of every run (warm-ups included) must receive exactly
N + 1 events (N ticks + the stream-end sentinel), the last one being the sentinel
with ``status=completed``; an HTTP stream must contain no ``event: dropped``
frame.  A run that fails verification makes its scenario "error".

Method: as in ``bench/engine.py``, graph construction and compilation are not
timed, everything alive before the timed runs (the server, the client, their
libraries) is moved out of the GC's reach with ``gc.freeze()``, and a collection
runs before each timed run.  As in ``bench/event_bus.py`` the scenarios are
interleaved (``--warmup`` untimed rounds, then ``--runs`` timed rounds, each
running every scenario once), so that a phase of load on a shared machine does
not land on one scenario only.  One event loop hosts the server, the client and
the in-process scenarios; the server is idle while the in-process ones run.
Figures are the median run with the fastest and slowest next to it.

Running
-------
::

    .venv/bin/python bench/serve.py                   # N = 20,000, K = 50, median of 5
    .venv/bin/python bench/serve.py --quick           # N = 2,000, K = 10: a few seconds
    .venv/bin/python bench/serve.py --events 50000 --runs 7
    .venv/bin/python bench/serve.py --no-subprocess   # skip the separate-process client
    .venv/bin/python bench/serve.py --first-runs 50   # more time-to-first-event runs
    .venv/bin/python bench/serve.py --profile         # + cProfile of the HTTP runs

``--profile`` appends, after the measurement, a cProfile of one same-process run
of each HTTP scenario (server and client together) and, unless
``--no-subprocess``, of this process alone while a child client does one run of
each: the server's own costs.  Each profile shows own time grouped by package,
the cumulative time of the main server and client functions, and the top
functions.

Progress goes to stderr, the report to stdout.  The exit status is 1 if a
scenario raised or a reader did not receive every event.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import os
import pstats
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import trio

# ``_common`` sits next to this file; the checkout's own weavegraph is measured
# even when it is not installed.  Both hold for ``python bench/serve.py`` and
# ``python -m bench.serve``.
_BENCH = Path(__file__).resolve().parent
_ROOT = _BENCH.parent
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))
if (_ROOT / "weavegraph").is_dir() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import httpx2  # noqa: E402
from _common import (  # noqa: E402
    Failed,
    Measured,
    Table,
    add_run_options,
    check_run_options,
    environment_line,
    fmt_ms,
    fmt_ratio,
    fmt_us,
)

# --------------------------------------------------------------------------- #
# Sizes and constants
# --------------------------------------------------------------------------- #

FULL_EVENTS, FULL_CLIENTS = 20_000, 50
QUICK_EVENTS, QUICK_CLIENTS = 2_000, 10
YIELD_EVERY = 256
"""The producing node checkpoints after this many ``ctx.emit`` calls."""
GRACE_S = 30.0
"""Seconds a served run survives without clients (attaching ones keep it alive)."""
FIRST_RUNS = 20
FIRST_WARMUP = 2
RUN_TIMEOUT_S = 300.0
"""A run that takes longer than this fails (instead of hanging the script)."""

STREAM_GRAPH = "stream"
FIRST_GRAPH = "first"

EVENT_MARK = b"\nevent: "
DROPPED_MARK = b"\nevent: dropped"
STREAM_END = b"__weavegraph_stream_end__"
COMPLETED = b"status=completed"

Via = Literal["in-process", "http", "http-separate"]


# --------------------------------------------------------------------------- #
# The graphs
# --------------------------------------------------------------------------- #


def build_apps(n: int) -> dict[str, Any]:
    """``{"stream": N-event app, "first": 1-event app}``, both lossless."""
    from weavegraph import (
        END,
        START,
        EventBusConfig,
        GraphBuilder,
        NodeContext,
        RuntimeConfig,
    )

    checkpoint = trio.lowlevel.checkpoint
    chunks, rest = divmod(n, YIELD_EVERY)

    async def produce(snapshot: Any, ctx: NodeContext) -> None:
        emit = ctx.emit
        for _ in range(chunks):
            for _ in range(YIELD_EVERY):
                emit("tick", "m")
            await checkpoint()
        for _ in range(rest):
            emit("tick", "m")

    async def once(snapshot: Any, ctx: NodeContext) -> None:
        ctx.emit("tick", "m")

    config = RuntimeConfig(event_bus=EventBusConfig(overflow="block"))

    def one_node(fn: Callable[[Any, NodeContext], Awaitable[None]]) -> Any:
        return (
            GraphBuilder()
            .add_node("p", fn)
            .add_edge(START, "p")
            .add_edge("p", END)
            .compile(config)
        )

    return {STREAM_GRAPH: one_node(produce), FIRST_GRAPH: one_node(once)}


# --------------------------------------------------------------------------- #
# One run, as seen by its readers
# --------------------------------------------------------------------------- #


@dataclass
class Reading:
    """What one run delivered."""

    elapsed: float
    """Seconds from starting the run (or sending the POST) to the last reader's end."""
    first: float
    """Seconds from the same start to reader 0's first event."""
    received: list[int]
    """Events each reader got, stream-end sentinel included."""
    problems: list[str] = field(default_factory=list)


def verify(reading: Reading, n: int, readers: int) -> str | None:
    """Why ``reading`` is not a lossless run of ``n`` events to ``readers``, if so."""
    if reading.problems:
        shown = "; ".join(dict.fromkeys(reading.problems))
        return f"{len(reading.problems)} reader(s) failed: {shown}"
    if len(reading.received) != readers:
        return f"{len(reading.received)} readers reported, expected {readers}"
    wrong = [r for r in reading.received if r != n + 1]
    if wrong:
        return (
            f"{len(wrong)} of {readers} reader(s) did not get exactly {n + 1} events "
            f"(got e.g. {wrong[0]})"
        )
    return None


class FrameCounter:
    """Counts SSE frames in a byte stream that arrives in arbitrary chunks.

    A frame is an ``event:`` line (the server writes ``id: ...`` before it, so the
    line always follows a newline; a ``\\n`` stands in for the start of the
    stream).  Occurrences split across two chunks are counted by looking at the
    few bytes around each boundary; no chunk is copied.
    """

    __slots__ = ("_last", "_prev", "dropped", "first_at", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.dropped = 0
        self.first_at: float | None = None
        self._prev = b""
        self._last = b"\n"

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        last = self._last
        edge = last[-(len(EVENT_MARK) - 1) :] + chunk[: len(EVENT_MARK) - 1]
        frames = chunk.count(EVENT_MARK) + edge.count(EVENT_MARK)
        if frames and self.first_at is None:
            self.first_at = time.perf_counter()
        self.frames += frames
        edge = last[-(len(DROPPED_MARK) - 1) :] + chunk[: len(DROPPED_MARK) - 1]
        self.dropped += chunk.count(DROPPED_MARK) + edge.count(DROPPED_MARK)
        self._prev, self._last = last, chunk

    def problem(self) -> str | None:
        """What is wrong with the stream as read so far, taken as complete."""
        if self.dropped:
            return f"{self.dropped} 'event: dropped' frame(s)"
        tail = (self._prev + self._last).rstrip(b"\n")
        final = tail.rsplit(b"\n\n", 1)[-1]
        if STREAM_END not in final:
            return "the stream does not end with the stream-end sentinel"
        if COMPLETED not in final:
            return "the run did not complete: " + final[-120:].decode(errors="replace")
        return None


# ---- in-process ------------------------------------------------------------ #


def _sentinel_problem(last: Any) -> str | None:
    if last is None or not last.is_stream_end:
        return "the stream does not end with the stream-end sentinel"
    if "status=completed" not in last.message:
        return f"the run did not complete: {last.message}"
    return None


async def inproc_one(app: Any) -> Reading:
    """``invoke_streaming``: one run, its one stream read to the end."""
    from weavegraph import VersionedState

    state = VersionedState()
    start = time.perf_counter()
    async with app.invoke_streaming(state) as (run, events):
        last = await events.receive()
        first = time.perf_counter() - start
        received = 1
        async for event in events:
            received += 1
            last = event
        await run.join()
    elapsed = time.perf_counter() - start
    problem = _sentinel_problem(last)
    return Reading(elapsed, first, [received], [problem] if problem else [])


async def inproc_many(app: Any, k: int) -> Reading:
    """``k`` subscribers of one run's bus (subscribed before it starts)."""
    from weavegraph import VersionedState, open_runner

    bus = app.config.event_bus.build()
    streams = [bus.subscribe(stop_at_stream_end=True) for _ in range(k)]
    received = [0] * k
    problems: list[str] = []
    first = 0.0
    start = time.perf_counter()

    async def consume(i: int, stream: Any) -> None:
        nonlocal first
        count = 0
        last: Any = None
        with stream:
            async for event in stream:
                if not count and not i:
                    first = time.perf_counter() - start
                count += 1
                last = event
        received[i] = count
        problem = _sentinel_problem(last)
        if problem:
            problems.append(problem)

    session = f"bench-{uuid.uuid4().hex}"
    async with trio.open_nursery() as nursery:
        for i, stream in enumerate(streams):
            nursery.start_soon(consume, i, stream)
        async with open_runner(app, event_bus=bus) as runner:
            await runner.create_session(session, VersionedState())
            await runner.run_until_complete(session)
    elapsed = time.perf_counter() - start
    return Reading(elapsed, first, received, problems)


# ---- over HTTP --------------------------------------------------------------- #


async def _expect_ok(response: httpx2.Response, what: str) -> None:
    if response.status_code != 200:
        body = (await response.aread())[:200].decode(errors="replace")
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {body}")


async def _read_stream(response: httpx2.Response, counter: FrameCounter) -> None:
    feed = counter.feed
    async with aclosing(response.aiter_bytes()) as chunks:
        async for chunk in chunks:
            feed(chunk)


async def http_run(
    client: httpx2.AsyncClient, base: str, graph: str, k: int
) -> Reading:
    """One run of ``graph`` started by a POST client, with ``k - 1`` attaching."""
    session = f"bench-{uuid.uuid4().hex}"
    counters = [FrameCounter() for _ in range(k)]
    start = time.perf_counter()

    async def post(*, task_status: trio.TaskStatus[None]) -> None:
        body = {"graph": graph, "session_id": session}
        async with client.stream("POST", f"{base}/runs", json=body) as response:
            await _expect_ok(response, "POST /runs")
            task_status.started()
            await _read_stream(response, counters[0])

    async def attach(i: int) -> None:
        url = f"{base}/runs/{session}/events"
        async with client.stream("GET", url) as response:
            await _expect_ok(response, "GET /runs/{id}/events")
            await _read_stream(response, counters[i])

    async with trio.open_nursery() as nursery:
        await nursery.start(post)
        for i in range(1, k):
            nursery.start_soon(attach, i)
    elapsed = time.perf_counter() - start
    problems = [p for p in (c.problem() for c in counters) if p is not None]
    first_at = counters[0].first_at
    first = (first_at - start) if first_at is not None else elapsed
    return Reading(elapsed, first, [c.frames for c in counters], problems)


def make_client(k: int) -> httpx2.AsyncClient:
    """A client whose pool keeps a connection for every concurrent stream."""
    limits = httpx2.Limits(max_connections=k + 8, max_keepalive_connections=k + 8)
    return httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(60.0))


# --------------------------------------------------------------------------- #
# Scenarios and the interleaved measurement
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Scenario:
    key: str
    path: Via
    readers: int
    run: Callable[[], Awaitable[Reading]]


@dataclass
class Result:
    """A scenario's samples (or failure) and its first-event latencies."""

    key: str
    path: Via
    readers: int
    events: int
    outcome: Measured | Failed
    firsts: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        """Events (1 reader) or deliveries (K readers) per second, median run."""
        if isinstance(self.outcome, Measured):
            return self.outcome.units / self.outcome.median_s
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "key": self.key,
            "path": self.path,
            "readers": self.readers,
            "events": self.events,
            "firsts": self.firsts,
        }
        if isinstance(self.outcome, Measured):
            data["samples"] = list(self.outcome.samples)
        else:
            data["error"] = self.outcome.error
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        outcome: Measured | Failed
        if "samples" in data:
            outcome = Measured(data["samples"], data["events"] * data["readers"])
        else:
            outcome = Failed(str(data["error"]))
        return cls(
            data["key"],
            data["path"],
            data["readers"],
            data["events"],
            outcome,
            list(data["firsts"]),
        )


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf exception inside any exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def say(text: str, *, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


async def _attempt(sc: Scenario, n: int) -> Reading | str:
    """Run ``sc`` once; its reading, or why it failed."""
    try:
        with trio.fail_after(RUN_TIMEOUT_S):
            reading = await sc.run()
    except Exception as exc:
        say(f"\n[{sc.key}] failed:")
        traceback.print_exception(exc, file=sys.stderr)
        return _describe(exc)
    return verify(reading, n, sc.readers) or reading


def _short_rate(sc: Scenario, n: int, elapsed: float) -> str:
    rate = n * sc.readers / elapsed
    unit = "ev/s" if sc.readers == 1 else "dlv/s"
    return f"{sc.key} {rate:,.0f} {unit}"


async def measure_rounds(
    scenarios: Sequence[Scenario], n: int, runs: int, warmup: int, tag: str = ""
) -> list[Result]:
    """``warmup`` untimed rounds, then ``runs`` timed ones; every round runs every
    scenario once, in order."""
    errors: dict[str, str] = {}
    samples: dict[str, list[float]] = {sc.key: [] for sc in scenarios}
    firsts: dict[str, list[float]] = {sc.key: [] for sc in scenarios}

    for w in range(warmup):
        say(f"  {tag}warm-up {w + 1}/{warmup}:", end="")
        for sc in scenarios:
            if sc.key in errors:
                continue
            got = await _attempt(sc, n)
            if isinstance(got, str):
                errors[sc.key] = got
                say(f" {sc.key} ERROR", end="")
            else:
                say(" " + _short_rate(sc, n, got.elapsed), end=";")
        say("")

    gc.collect()
    gc.freeze()
    try:
        for r in range(runs):
            say(f"  {tag}round {r + 1}/{runs}:", end="")
            for sc in scenarios:
                if sc.key in errors:
                    continue
                gc.collect()
                got = await _attempt(sc, n)
                if isinstance(got, str):
                    errors[sc.key] = got
                    say(f" {sc.key} ERROR", end="")
                    continue
                samples[sc.key].append(got.elapsed)
                firsts[sc.key].append(got.first)
                say(" " + _short_rate(sc, n, got.elapsed), end=";")
            say("")
    finally:
        gc.unfreeze()

    results: list[Result] = []
    for sc in scenarios:
        outcome: Measured | Failed
        if sc.key in errors:
            outcome = Failed(errors[sc.key])
        else:
            outcome = Measured(samples[sc.key], n * sc.readers)
        results.append(Result(sc.key, sc.path, sc.readers, n, outcome, firsts[sc.key]))
    return results


async def measure_first_event(
    scenarios: Sequence[Scenario], runs: int, warmup: int, tag: str = ""
) -> list[Result]:
    """Time to first event on the 1-event graph, the paths alternating."""
    say(f"  {tag}time to first event: {warmup} untimed + {runs} timed runs per path")
    errors: dict[str, str] = {}
    firsts: dict[str, list[float]] = {sc.key: [] for sc in scenarios}
    gc.collect()
    gc.freeze()
    try:
        for i in range(warmup + runs):
            for sc in scenarios:
                if sc.key in errors:
                    continue
                gc.collect()
                got = await _attempt(sc, 1)
                if isinstance(got, str):
                    errors[sc.key] = got
                elif i >= warmup:
                    firsts[sc.key].append(got.first)
    finally:
        gc.unfreeze()
    results: list[Result] = []
    for sc in scenarios:
        outcome: Measured | Failed
        if sc.key in errors:
            outcome = Failed(errors[sc.key])
        else:
            outcome = Measured(firsts[sc.key], 1)
        results.append(Result(sc.key, sc.path, sc.readers, 1, outcome, firsts[sc.key]))
    return results


def http_scenarios(
    client: httpx2.AsyncClient, base: str, k: int, path: Via
) -> tuple[list[Scenario], Scenario]:
    """The throughput scenarios over HTTP and the first-event one."""
    throughput = [
        Scenario(
            f"{path}/1", path, 1, partial(http_run, client, base, STREAM_GRAPH, 1)
        ),
        Scenario(
            f"{path}/{k}", path, k, partial(http_run, client, base, STREAM_GRAPH, k)
        ),
    ]
    first = Scenario(
        f"{path}/first", path, 1, partial(http_run, client, base, FIRST_GRAPH, 1)
    )
    return throughput, first


# --------------------------------------------------------------------------- #
# The separate-process client
# --------------------------------------------------------------------------- #


async def client_process_main(
    base: str, n: int, k: int, runs: int, warmup: int, first_runs: int
) -> dict[str, Any]:
    """What the child does: the HTTP scenarios against ``base``."""
    async with make_client(k) as client:
        throughput, first = http_scenarios(client, base, k, "http-separate")
        results = await measure_rounds(throughput, n, runs, warmup, tag="[client] ")
        if first_runs:
            results += await measure_first_event(
                [first], first_runs, FIRST_WARMUP, tag="[client] "
            )
    return {"results": [r.to_json() for r in results]}


async def run_client_process(
    base: str, n: int, k: int, runs: int, warmup: int, first_runs: int
) -> list[Result] | str:
    """Run the child against ``base``; its results, or why there are none."""
    command = [
        sys.executable,
        str(_BENCH / "serve.py"),
        "--client-of",
        base,
        "--events",
        str(n),
        "--clients",
        str(k),
        "--runs",
        str(runs),
        "--warmup",
        str(warmup),
        "--first-runs",
        str(first_runs),
    ]
    say(f"  separate-process client: {runs} run(s) after {warmup} warm-up")
    done = await trio.run_process(command, capture_stdout=True, check=False)
    if done.returncode != 0:
        return f"the client process exited with status {done.returncode}"
    try:
        data = json.loads(done.stdout)
        return [Result.from_json(item) for item in data["results"]]
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable output of the client process: {_describe(exc)}"


# --------------------------------------------------------------------------- #
# Profile
# --------------------------------------------------------------------------- #

# Where a function's own time is booked, by the path of its source file.  The
# first match wins, so weavegraph.serve comes before the rest of weavegraph.
_GROUPS = (
    ("/weavegraph/serve/", "weavegraph.serve (SSE app, run log)"),
    ("/weavegraph/events/", "weavegraph events (bus, streams, types)"),
    ("/weavegraph/", "weavegraph engine"),
    ("/hypercorn/", "hypercorn (server)"),
    ("/h11/", "h11 (HTTP/1.1, server and client)"),
    ("/httpcore2/", "httpcore2 (client)"),
    ("/httpx2/", "httpx2 (client)"),
    ("/trio/", "trio"),
    ("/cattrs/", "cattrs"),
    ("/attr/", "attrs"),
    ("/attrs/", "attrs"),
)


def _group(filename: str, name: str) -> str:
    if filename == "~":
        if "orjson" in name:
            return "orjson (C)"
        if "socket" in name:
            return "socket send/recv (C)"
        if "epoll" in name or "select" in name:
            return "epoll wait (C)"
        return "other built-ins (C)"
    for marker, label in _GROUPS:
        if marker in filename:
            return label
    if "/lib/python3" in filename and "site-packages" not in filename:
        return "standard library (Python)"
    return "other Python"


# Cumulative figures worth seeing on their own: (file suffix, function, label).
# They nest (``_stream`` includes ``encode_sse`` and the send), so they do not add up.
_KEY_FUNCTIONS = (
    (
        "weavegraph/serve/_sse.py",
        "_stream",
        "server: per-client loop (read log, encode, send)",
    ),
    (
        "weavegraph/serve/_sse.py",
        "encode_sse",
        "server: encode_sse (once per event per client)",
    ),
    ("weavegraph/serve/_sse.py", "_pump", "server: run's stream -> run log"),
    ("hypercorn/protocol/http_stream.py", "app_send", "server: hypercorn app_send"),
    ("bench/serve.py", "produce", "node: ctx.emit of the N events"),
    ("bench/serve.py", "_read_stream", "client: httpx2 stream reading + counting"),
)

StatsMap = dict[tuple[str, int, str], tuple[Any, ...]]


def _profile_table(stats: StatsMap, wall: float, top: int) -> str:
    by_group: dict[str, float] = {}
    total = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        group = _group(filename, name)
        by_group[group] = by_group.get(group, 0.0) + tottime
        total += tottime
    out: list[str] = []
    t = Table(["where (own time of functions)", "s", "share"])
    for label, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        t.add(label, f"{seconds:.3f}", f"{seconds / total:.0%}")
    out.append(t.render())

    out.append("")
    t = Table(["cumulative time of (these nest)", "calls", "cum s", "of wall"])
    for suffix, func, label in _KEY_FUNCTIONS:
        hits = [
            v
            for (f, _l, name), v in stats.items()
            if name == func and f.endswith(suffix)
        ]
        if hits:
            calls = sum(v[1] for v in hits)
            cum = sum(v[3] for v in hits)
            t.add(label, f"{calls:,}", f"{cum:.3f}", f"{cum / wall:.0%}")
    out.append(t.render())

    out.append("")
    t = Table(["function (top by own time)", "calls", "own s", "cum s"])
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, name), (_cc, nc, tottime, cumtime, _callers) in ranked:
        where = name if filename == "~" else f"{_short_path(filename)}:{line} {name}"
        t.add(where, f"{nc:,}", f"{tottime:.3f}", f"{cumtime:.3f}")
    out.append(t.render())
    return "\n".join(out)


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", str(_ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def profiled(
    fn: Callable[[], Awaitable[Any]],
) -> tuple[Any, StatsMap, float]:
    """``await fn()`` under cProfile; its value, the raw stats and the wall time."""
    gc.collect()
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    try:
        value = await fn()
    finally:
        profile.disable()
    wall = time.perf_counter() - start
    stats: StatsMap = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return value, stats, wall


async def profile_http(
    scenarios: Sequence[Scenario], n: int, top: int
) -> list[tuple[str, str]]:
    """cProfile one run of each same-process HTTP scenario (server + client)."""
    sections: list[tuple[str, str]] = []
    for sc in scenarios:
        say(f"  profiling {sc.key}")
        got, stats, wall = await profiled(partial(_attempt, sc, n))
        status = "" if isinstance(got, Reading) else f", ERROR {got}"
        title = (
            f"{sc.key}, server + client in this process: one run, "
            f"{wall:.3f} s under the profiler{status}"
        )
        sections.append((title, _profile_table(stats, wall, top)))
    return sections


async def profile_server(
    base: str, n: int, k: int, args: argparse.Namespace
) -> tuple[str, str]:
    """cProfile this process (the server alone) while a child client does one
    untimed run of each HTTP scenario."""
    say("  profiling the server alone (client in a separate process)")
    got, stats, wall = await profiled(partial(run_client_process, base, n, k, 1, 0, 0))
    status = "" if isinstance(got, list) else f", ERROR {got}"
    title = (
        f"server alone, while a separate-process client does one run of "
        f"http-separate/1 and one of http-separate/{k}: {wall:.3f} s wall including "
        f"the child's start-up (idle here){status}"
    )
    return title, _profile_table(stats, wall, args.profile_top)


# --------------------------------------------------------------------------- #
# The whole measurement (server side)
# --------------------------------------------------------------------------- #


@dataclass
class Report:
    n: int
    k: int
    runs: int
    warmup: int
    quick: bool
    first_runs: int
    url: str = ""
    load: list[str] = field(default_factory=list)
    """1-minute load average at the start and at the end, when known."""
    throughput: list[Result] = field(default_factory=list)
    first: list[Result] = field(default_factory=list)
    separate: list[Result] | str | None = None
    profile: list[tuple[str, str]] = field(default_factory=list)


class _QuietHypercorn(logging.Filter):
    """Drops hypercorn's start-up banner ("Running on ..."); keeps warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


async def measure_all(args: argparse.Namespace) -> Report:
    from weavegraph.serve import serve_sse

    n, k = args.events, args.clients
    report = Report(n, k, args.runs, args.warmup, args.quick, args.first_runs)
    report.load.append(_load())
    apps = build_apps(n)
    stream_app, first_app = apps[STREAM_GRAPH], apps[FIRST_GRAPH]
    logging.getLogger("hypercorn.error").addFilter(_QuietHypercorn())

    async with trio.open_nursery() as nursery:
        server = partial(serve_sse, apps, port=0, log_capacity=n + 10, grace=GRACE_S)
        urls: list[str] = await nursery.start(server)
        base = report.url = urls[0]
        say(f"server at {base}; N = {n:,} events, K = {k} clients")
        async with make_client(k) as client:
            http, http_first = http_scenarios(client, base, k, "http")
            scenarios = [
                Scenario(
                    "in-process/1", "in-process", 1, partial(inproc_one, stream_app)
                ),
                Scenario(
                    f"in-process/{k}",
                    "in-process",
                    k,
                    partial(inproc_many, stream_app, k),
                ),
                *http,
            ]
            report.throughput = await measure_rounds(
                scenarios, n, args.runs, args.warmup
            )
            inproc_first = Scenario(
                "in-process/first", "in-process", 1, partial(inproc_one, first_app)
            )
            if args.first_runs:
                report.first = await measure_first_event(
                    [inproc_first, http_first], args.first_runs, FIRST_WARMUP
                )
            if args.profile:
                report.profile = await profile_http(http, n, args.profile_top)
        if args.subprocess:
            report.separate = await run_client_process(
                base, n, k, args.runs, args.warmup, args.first_runs
            )
            if args.profile:
                report.profile.append(await profile_server(base, n, k, args))
        nursery.cancel_scope.cancel()
    report.load.append(_load())
    return report


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #

PATH_LABELS: dict[Via, str] = {
    "in-process": "in-process",
    "http": "HTTP, same process",
    "http-separate": "HTTP, separate process",
}


def _what(r: Result) -> str:
    if r.path == "in-process":
        return "invoke_streaming" if r.readers == 1 else "EventBus subscribers"
    return "POST" if r.readers == 1 else f"POST + {r.readers - 1} GET"


def _rate_cell(r: Result) -> str:
    rate = r.rate
    return f"{rate:,.0f}" if rate is not None else "error"


def _spread_ms(m: Measured) -> str:
    lo, hi = min(m.samples) * 1e3, max(m.samples) * 1e3
    return f"{fmt_ms(m.median_s * 1e3)} [{fmt_ms(lo)} .. {fmt_ms(hi)}]"


def _spread_us(values: Sequence[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values) * 1e6
    lo, hi = min(values) * 1e6, max(values) * 1e6
    return f"{fmt_us(med)} [{fmt_us(lo)} .. {fmt_us(hi)}]"


def _find(results: Sequence[Result], path: Via, readers: int) -> Result | None:
    for r in results:
        if r.path == path and r.readers == readers:
            return r
    return None


def _rate_ratio(inproc: Result | None, http: Result | None) -> str:
    if inproc is None or http is None or inproc.rate is None or http.rate is None:
        return "-"
    return fmt_ratio(inproc.rate / http.rate)


def _latency(r: Result | None) -> float | None:
    if r is None or not isinstance(r.outcome, Measured):
        return None
    return r.outcome.median_s


def _is_first(r: Result) -> bool:
    return r.key.endswith("/first")


def render_report(report: Report) -> str:
    n, k = report.n, report.k
    separate = report.separate if isinstance(report.separate, list) else []
    throughput = [*report.throughput, *(r for r in separate if not _is_first(r))]
    firsts = [*report.first, *(r for r in separate if _is_first(r))]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None

    out: list[str] = []
    out.append("weavegraph SSE serving throughput over loopback")
    out.append(
        environment_line(["trio", "weavegraph", "hypercorn", "h11", "httpx2", "orjson"])
        + f" | {cores or os.cpu_count()} CPU(s)"
        + f" | load average {' -> '.join(report.load)} (start -> end)"
    )
    sizes = "quick sizes" if report.quick else "full sizes"
    out.append(
        f"{sizes}: N = {n:,} events per run (ctx.emit, a checkpoint every "
        f"{YIELD_EVERY}), K = {k} readers; median of {report.runs} timed run(s) "
        f"after {report.warmup} warm-up, scenarios interleaved"
    )
    out.append(
        f"server: weavegraph.serve.serve_sse (hypercorn trio worker) on "
        f"127.0.0.1, log_capacity = N + 10, grace = {GRACE_S:g} s; client: "
        "httpx2.AsyncClient, frames counted in the raw bytes"
    )
    out.append(
        "NOTE: 'same process' means the HTTP client runs in the server's process "
        "and trio loop, so client and server share one core's worth of Python and "
        "the figure is bounded by the sum of both sides' costs. 'separate process' "
        "runs the client in a child process (its own interpreter and core)."
    )

    out.append("")
    out.append("Throughput (events/s for 1 reader, deliveries/s = N * K / time for K)")
    t = Table(
        ["path", "readers", "reader(s)", "per s", "whole run, ms: median [min .. max]"],
        left=1,
    )
    for r in throughput:
        spread = _spread_ms(r.outcome) if isinstance(r.outcome, Measured) else "-"
        t.add(PATH_LABELS[r.path], str(r.readers), _what(r), _rate_cell(r), spread)
    out.append(t.render())

    out.append("")
    out.append("HTTP overhead: in-process rate / HTTP rate (> 1: in-process faster)")
    headers = ["readers", "HTTP same process"]
    if separate:
        headers.append("HTTP separate process")
    t = Table(headers)
    for readers in (1, k):
        inproc = _find(report.throughput, "in-process", readers)
        cells = [str(readers), _rate_ratio(inproc, _find(throughput, "http", readers))]
        if separate:
            cells.append(
                _rate_ratio(inproc, _find(throughput, "http-separate", readers))
            )
        t.add(*cells)
    out.append(t.render())
    per_client = _find(throughput, "http", k)
    single = _find(throughput, "http", 1)
    if per_client and single and per_client.rate and single.rate:
        out.append(
            f"  same process: {k} HTTP clients together get "
            f"{per_client.rate / single.rate:.2f}x the events/s of one; "
            f"each of them {per_client.rate / k:,.0f} events/s"
        )

    if firsts:
        out.append("")
        out.append(
            f"Time to first event, µs: median [min .. max] over {report.first_runs} "
            "runs (1-event graph; HTTP: POST sent -> first chunk with an event: line; "
            "in-process: invoke_streaming entered -> first events.receive() returned)"
        )
        t = Table(["path", "µs", "HTTP / in-process"])
        inproc_latency = _latency(_find(firsts, "in-process", 1))
        for r in firsts:
            if isinstance(r.outcome, Measured):
                latency = r.outcome.median_s
                ratio = (
                    fmt_ratio(latency / inproc_latency)
                    if inproc_latency and r.path != "in-process"
                    else "-"
                )
                t.add(PATH_LABELS[r.path], _spread_us(r.firsts), ratio)
            else:
                t.add(PATH_LABELS[r.path], "error", "-")
        out.append(t.render())

    out.append("")
    out.append(
        f"First event inside the N-event throughput runs, µs (reader 0; the node "
        f"emits {YIELD_EVERY} events before its first checkpoint; over HTTP with "
        f"{k} readers the other clients attach as soon as the POST's headers are "
        "in, and the POST client's first chunk competes with them)"
    )
    t = Table(["path", "readers", "µs: median [min .. max]"])
    for r in throughput:
        t.add(PATH_LABELS[r.path], str(r.readers), _spread_us(r.firsts))
    out.append(t.render())

    out.append("")
    out.append("Verification")
    ok = all(isinstance(r.outcome, Measured) for r in [*throughput, *firsts])
    if ok:
        out.append(
            f"  every reader of every run (warm-ups included) got all {n:,} events "
            f"plus the stream-end sentinel (status=completed), no 'dropped' frames; "
            f"{k} concurrent HTTP clients: {k} x {n:,} = {k * n:,} deliveries per run"
        )
    out.extend(
        f"  ERROR {PATH_LABELS[r.path]}/{r.readers}: {r.outcome.error}"
        for r in [*throughput, *firsts]
        if isinstance(r.outcome, Failed)
    )
    if isinstance(report.separate, str):
        out.append(f"  separate-process client: ERROR {report.separate}")
    elif report.separate is None:
        out.append("  separate-process client: not run (--no-subprocess)")

    for title, table in report.profile:
        out.append("")
        out.append(f"Profile: {title}; cProfile inflates Python-heavy parts")
        out.append(table)
    return "\n".join(out)


def failed(report: Report) -> bool:
    separate = report.separate if isinstance(report.separate, list) else []
    results = [*report.throughput, *report.first, *separate]
    return isinstance(report.separate, str) or any(
        isinstance(r.outcome, Failed) for r in results
    )


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SSE serving throughput of weavegraph over loopback."
    )
    add_run_options(
        parser,
        unit="scenario",
        quick_help=f"N = {QUICK_EVENTS:,} events and {QUICK_CLIENTS} clients "
        f"(instead of {FULL_EVENTS:,} and {FULL_CLIENTS}): a few seconds",
    )
    parser.add_argument(
        "--events", type=int, default=None, help="events per run (overrides --quick)"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="concurrent readers of the multi-reader scenarios (overrides --quick)",
    )
    parser.add_argument(
        "--no-subprocess",
        dest="subprocess",
        action="store_false",
        help="skip the HTTP client in a separate process",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the HTTP runs (server + client, and the server alone)",
    )
    parser.add_argument(
        "--profile-top", type=int, default=25, help="functions listed per profile"
    )
    parser.add_argument(
        "--first-runs",
        type=int,
        default=FIRST_RUNS,
        help=f"timed runs per path of the time-to-first-event measurement "
        f"(default {FIRST_RUNS}; 0 skips it)",
    )
    parser.add_argument("--client-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = QUICK_EVENTS if args.quick else FULL_EVENTS
    if args.clients is None:
        args.clients = QUICK_CLIENTS if args.quick else FULL_CLIENTS
    if args.first_runs < 0:
        parser.error("--first-runs must be >= 0")
    check_run_options(parser, args)
    if args.events < 1:
        parser.error("--events must be >= 1")
    if args.clients < 2:
        parser.error("--clients must be >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_of is not None:
        data = trio.run(
            client_process_main,
            args.client_of,
            args.events,
            args.clients,
            args.runs,
            args.warmup,
            args.first_runs,
        )
        print(json.dumps(data))
        return 0
    report = trio.run(measure_all, args)
    say("")
    print(render_report(report))
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
