"""Event streaming throughput of weavegraph, next to raw trio, a floor and LangGraph.

What is measured
----------------
Every scenario pushes N events (200,000 by default) from one producer to its
readers; all of them run in one process:

* **raw trio** -- one memory-channel hop: ``trio.open_memory_channel(1024)``, a
  producer task ``await send.send(ev)`` for N pre-built events, a consumer
  ``async for``.  Both ends checkpoint on every event, so this is the cost of a
  per-event scheduling round trip, not a ceiling for a batching bus.
* **floors** -- no bus, no scheduler: ``NodeEvent(scope=..., message=...,
  node_id=..., step=..., session_id=...)`` in a loop; the same through the node
  context's own construction path (``NodeContext._node_event``, private, timed
  only when present); and ``ctx.emit`` into a started bus that has no
  subscriber (built, counted, delivered to nobody).
* **weavegraph end to end, 1 reader** -- a one-node graph whose node emits N
  events, read with ``async with app.invoke_streaming(state) as (run, events):
  async for ev in events``.  Events/s is N over the wall time of the whole
  block (run start-up, the stream-end sentinel and ``run.join()`` included).
  Three producer styles:

  (a) bus ``capacity=1024, overflow="block"``; ``ctx.emit`` with
      ``await trio.lowlevel.checkpoint()`` after every 256 events (lossless);
  (b) same bus; ``await ctx.emit_async(...)`` for every event (lossless, with
      end-to-end backpressure);
  (c) the default bus (``drop_oldest``, capacity 1024); ``ctx.emit`` and never
      yield.  The reader gets what fits; received + dropped must equal N + 1
      (the +1 is the stream-end sentinel).

* **weavegraph bus, K readers** -- ``weavegraph.EventBus`` used directly,
  ``capacity=1024, overflow="block"``, K in {1, 4, 16} streams each read by its
  own task, one producer task emitting N pre-built events, then
  ``bus.close()``.  Reported as deliveries/s = N * K / time.  Two bus paths:
  *broadcaster* (streams subscribed before ``async with bus:``, so the bus
  starts its broadcaster task and fans out whole batches) and *inline* (streams
  subscribed inside the block of a bus that had none at start: no task,
  ``emit`` hands each event to every buffer itself).  Producer styles:
  ``bus.emit`` plus a checkpoint every 256 events (both paths), and ``await
  bus.emit_async(ev)`` per event (broadcaster path, K in {1, 16} only: at one
  scheduler round per event it is the slowest row by far).
* **LangGraph** -- a one-node ``StateGraph`` whose node writes N items with
  ``get_stream_writer()``, consumed with ``async for chunk in
  graph.astream(inputs, stream_mode="custom")`` under ``asyncio.run``.  The
  item is one constant payload object (the cheapest possible for LangGraph).
  Reported as "not installed" when langgraph is absent.

Every run (warm-up included) counts what each reader received and checks it;
a lossless weavegraph scenario that loses or duplicates an event counts as a
failure.  Peak RSS (``ru_maxrss``, process-wide, so it only ever grows) is
taken right after each scenario's first run, in scenario order.

Bounded memory: with a producer that never yields and a lossy policy, the bus
must hold at most about ``capacity`` events per subscriber (plus one pending
batch) whatever N is.  For a few bus set-ups the script runs N and 10 * N
events once each under ``tracemalloc`` and prints the peak traced memory above
the start of the run; the peak must not grow with N.  For comparison it does
the same (at N / 10 and N) for the lossless end-to-end producers (a) and (b),
whose memory depends on whether the reader keeps up, and reports how many
events the reader had waiting at most; a lossless producer that never yields is
the control, whose memory must grow with N.

Method: as in ``bench/engine.py``, graph construction and compilation are not
timed, everything alive before a timed run is moved out of the GC's reach
(``gc.freeze()``) and a collection runs before each one.  Unlike there, the
scenarios are interleaved, because the rates swing by up to 2x between phases
on a shared machine: first every scenario does its ``--warmup`` untimed runs in
turn, then each of ``--runs`` rounds times one run of every scenario, each on a
fresh event loop.  Figures are the median run, with the slowest and fastest
shown next to it; ratios are the median of the ratios within each round.  The
report names the weavegraph commit measured, and warns if ``weavegraph/``
changed while the script ran.  The bus's "event stream lagged" warning (logged once per
lossy run) is silenced while measuring.

Running
-------
::

    .venv/bin/python bench/event_bus.py               # N = 200,000, median of 5
    .venv/bin/python bench/event_bus.py --quick       # N = 20,000, smoke test
    .venv/bin/python bench/event_bus.py --events 500000 --runs 7
    .venv/bin/python bench/event_bus.py --scenarios e2e,langgraph
    .venv/bin/python bench/event_bus.py --profile     # cProfile of e2e (a)

Progress goes to stderr, the report to stdout.  The exit status is 1 only if
weavegraph itself raised, lost an event in a lossless scenario, or could not
account for every event in a lossy one; missed targets do not change it.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import pstats
import statistics
import subprocess
import sys
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict

import trio

# ``_common`` sits next to this file; the checkout's own weavegraph is measured
# even when it is not installed.  Both hold for ``python bench/event_bus.py`` and
# ``python -m bench.event_bus``.
_BENCH = Path(__file__).resolve().parent
_ROOT = _BENCH.parent
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))
if (_ROOT / "weavegraph").is_dir() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from _common import (  # noqa: E402
    Backend,
    Failed,
    Measured,
    Outcome,
    Runner,
    Table,
    Unavailable,
    add_run_options,
    check_run_options,
    environment_line,
    find_module,
    fmt_ratio,
    pick_subset,
    run_on,
    time_runner,
)

from weavegraph import (  # noqa: E402
    END,
    START,
    EventBus,
    EventBusConfig,
    EventStream,
    GraphBuilder,
    NodeContext,
    NodeEvent,
    RuntimeConfig,
    VersionedState,
)

# --------------------------------------------------------------------------- #
# Sizes and targets
# --------------------------------------------------------------------------- #

FULL_EVENTS = 200_000
QUICK_EVENTS = 20_000
CAPACITY = 1024
YIELD_EVERY = 256
"""The checkpointing producers yield to the scheduler after this many emits."""
SAMPLE_EVERY = 64
"""The lossless memory runs sample the reader's backlog after this many events."""
SUBSCRIBER_COUNTS = (1, 4, 16)
ASYNC_SUBSCRIBER_COUNTS = (1, 16)

TARGET_E2E_RATE = 500_000.0
"""Events/s, end to end, one reader."""
TARGET_FLOOR_SHARE = 0.60
"""End to end, as a share of the bare ``NodeEvent`` construction rate."""
TARGET_FANOUT_RATE = 2_000_000.0
"""Deliveries/s with ``TARGET_FANOUT_SUBS`` readers."""
TARGET_FANOUT_SUBS = 16
MEMORY_FACTOR = 10
"""The bounded-memory check compares N events against this many times N."""
MEMORY_GROWTH_LIMIT = 1.20
MEMORY_SLACK_BYTES = 64 * 1024
"""Peak at ``MEMORY_FACTOR * N`` may exceed the peak at N by 20% + 64 KiB."""
REFERENCE_LANGGRAPH_RATE = 207_000.0
"""LangGraph ``stream_mode="custom"`` events/s on the machine the targets were
set on; only used to put this machine's figures in proportion."""

Policy = Literal["drop_oldest", "drop_newest", "block"]
Group = Literal["raw", "floor", "e2e", "fanout", "fanout-async", "langgraph", "memory"]
GROUPS: tuple[Group, ...] = (
    "raw",
    "floor",
    "e2e",
    "fanout",
    "fanout-async",
    "langgraph",
    "memory",
)

# --------------------------------------------------------------------------- #
# What the readers saw
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Tally:
    """What one run delivered: per reader, events received and dropped."""

    received: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    ends_with_sentinel: bool | None = None
    """For weavegraph runs: whether the last event read was the stream end."""

    @property
    def total_received(self) -> int:
        return sum(self.received)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped)


Record = Callable[[Tally], None]
Check = Callable[[Tally], str | None]


def expect_exact(n: int) -> Check:
    """One reader must receive exactly ``n`` items."""

    def check(t: Tally) -> str | None:
        if t.received == (n,):
            return None
        return f"reader received {t.total_received:,} items, expected {n:,}"

    return check


def expect_lossless_run(n: int) -> Check:
    """A streamed run: all ``n`` events plus the sentinel, last; nothing dropped."""

    def check(t: Tally) -> str | None:
        if t.received == (n + 1,) and t.total_dropped == 0 and t.ends_with_sentinel:
            return None
        return (
            f"lossless run lost events: reader received {t.total_received:,}"
            f" (dropped {t.total_dropped:,}, ends with sentinel:"
            f" {t.ends_with_sentinel}), expected {n + 1:,} = {n:,} + sentinel"
        )

    return check


def expect_accounted_run(n: int) -> Check:
    """A lossy streamed run: received + dropped = ``n`` + sentinel, sentinel last."""

    def check(t: Tally) -> str | None:
        if t.total_received + t.total_dropped == n + 1 and t.ends_with_sentinel:
            return None
        return (
            f"events unaccounted for: received {t.total_received:,} + dropped"
            f" {t.total_dropped:,} != {n + 1:,} (= {n:,} + sentinel), or the"
            f" sentinel was not last (ends with sentinel: {t.ends_with_sentinel})"
        )

    return check


def expect_fanout(n: int, k: int, *, lossless: bool) -> Check:
    """``k`` bus readers: each gets all ``n`` (lossless) or received + dropped = n."""

    def check(t: Tally) -> str | None:
        if len(t.received) != k:
            return f"{len(t.received)} readers reported, expected {k}"
        dropped = t.dropped or (0,) * k
        for i, (got, lost) in enumerate(zip(t.received, dropped, strict=True)):
            if lossless and (got != n or lost != 0):
                return f"reader {i} received {got:,} of {n:,} (dropped {lost:,})"
            if not lossless and got + lost != n:
                return f"reader {i}: received {got:,} + dropped {lost:,} != {n:,}"
        return None

    return check


# --------------------------------------------------------------------------- #
# Scenarios
# --------------------------------------------------------------------------- #


@dataclass
class Scenario:
    """One row of the throughput table."""

    key: str
    group: Group
    label: str
    framework: Literal["weavegraph", "raw trio", "python", "langgraph"]
    backend: Backend
    events: int
    subscribers: int
    build: Callable[[Record], Runner]
    check: Check
    lossless: bool = True
    unavailable: Unavailable | None = None

    @property
    def units(self) -> int:
        """Deliveries per run: events times readers."""
        return self.events * self.subscribers

    @property
    def unit(self) -> str:
        return "deliveries/s" if self.subscribers > 1 else "events/s"


def make_event() -> NodeEvent:
    return NodeEvent(scope="tick", message="m", node_id="p", step=1, session_id="s")


_PREBUILT: list[NodeEvent] = []


def prebuilt_events(n: int) -> list[NodeEvent]:
    """``n`` events built once per process and shared by the scenarios that send
    ready-made events (raw trio, the bus fan-out)."""
    if len(_PREBUILT) != n:
        _PREBUILT[:] = [make_event() for _ in range(n)]
    return _PREBUILT


# ---- raw trio -------------------------------------------------------------- #


def build_raw_trio(n: int, record: Record) -> Runner:
    def prepare() -> list[NodeEvent]:
        return prebuilt_events(n)

    async def run(events: list[NodeEvent]) -> None:
        send, receive = trio.open_memory_channel[NodeEvent](CAPACITY)

        async def produce() -> None:
            async with send:
                for ev in events:
                    await send.send(ev)

        received = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for _ in receive:
                    received += 1
        record(Tally((received,)))

    return Runner(prepare=prepare, run=run)


# ---- floors ---------------------------------------------------------------- #


def build_floor_event(n: int, record: Record) -> Runner:
    async def run(payload: None) -> None:
        built = 0
        for _ in range(n):
            NodeEvent(scope="tick", message="m", node_id="p", step=1, session_id="s")
            built += 1
        record(Tally((built,)))

    return Runner(prepare=lambda: None, run=run)


def build_floor_ctx_construct(n: int, record: Record) -> Runner:
    async def run(payload: None) -> None:
        async with EventBus() as bus:
            ctx = NodeContext(node_id="p", step=1, session_id="s", bus=bus)
            construct = ctx._node_event
            built = 0
            for _ in range(n):
                construct("tick", "m", {})
                built += 1
        record(Tally((built,)))

    return Runner(prepare=lambda: None, run=run)


def build_floor_ctx_emit(n: int, record: Record) -> Runner:
    async def run(payload: None) -> None:
        async with EventBus() as bus:  # no subscriber at start: inline, no task
            emit = NodeContext(node_id="p", step=1, session_id="s", bus=bus).emit
            for _ in range(n):
                emit("tick", "m")
            published = bus.metrics().published
        record(Tally((published,)))

    return Runner(prepare=lambda: None, run=run)


# ---- weavegraph end to end -------------------------------------------------- #

E2EStyle = Literal["emit", "emit_async", "emit_no_yield"]


def build_e2e_app(
    n: int,
    style: E2EStyle,
    policy: Policy,
    capacity: int,
    yield_every: int = YIELD_EVERY,
) -> Any:
    checkpoint = trio.lowlevel.checkpoint
    chunks, rest = divmod(n, yield_every)

    async def emit_yielding(snapshot: Any, ctx: NodeContext) -> None:
        emit = ctx.emit
        for _ in range(chunks):
            for _ in range(yield_every):
                emit("tick", "m")
            await checkpoint()
        for _ in range(rest):
            emit("tick", "m")

    async def emit_async(snapshot: Any, ctx: NodeContext) -> None:
        emit = ctx.emit_async
        for _ in range(n):
            await emit("tick", "m")

    async def emit_no_yield(snapshot: Any, ctx: NodeContext) -> None:
        emit = ctx.emit
        for _ in range(n):
            emit("tick", "m")

    producer = {
        "emit": emit_yielding,
        "emit_async": emit_async,
        "emit_no_yield": emit_no_yield,
    }[style]
    config = RuntimeConfig(event_bus=EventBusConfig(capacity=capacity, overflow=policy))
    return (
        GraphBuilder()
        .add_node("p", producer)
        .add_edge(START, "p")
        .add_edge("p", END)
        .compile(config)
    )


async def stream_one_run(app: Any, state: VersionedState) -> Tally:
    """The measured unit of the end-to-end scenarios: one whole streamed run."""
    received = 0
    last: Any = None
    async with app.invoke_streaming(state) as (run, events):
        async for ev in events:
            received += 1
            last = ev
        await run.join()
    return Tally(
        (received,),
        (events.dropped,),
        ends_with_sentinel=last is not None and last.is_stream_end,
    )


async def stream_one_run_probed(app: Any, state: VersionedState) -> tuple[Tally, int]:
    """`stream_one_run` that also samples the reader's buffer + backlog every
    ``SAMPLE_EVERY`` events; returns the high-water mark with the tally (for
    untimed runs only)."""
    received = 0
    high = 0
    last: Any = None
    async with app.invoke_streaming(state) as (run, events):
        async for ev in events:
            received += 1
            last = ev
            if not received % SAMPLE_EVERY:
                high = max(high, events.buffered + 1)
        await run.join()
    tally = Tally(
        (received,),
        (events.dropped,),
        ends_with_sentinel=last is not None and last.is_stream_end,
    )
    return tally, high


def build_e2e(
    n: int,
    style: E2EStyle,
    policy: Policy,
    record: Record,
    *,
    yield_every: int = YIELD_EVERY,
) -> Runner:
    app = build_e2e_app(n, style, policy, CAPACITY, yield_every)

    async def run(state: VersionedState) -> None:
        record(await stream_one_run(app, state))

    return Runner(prepare=VersionedState, run=run)


# ---- weavegraph bus, K readers ---------------------------------------------- #

BusPath = Literal["broadcaster", "inline"]
BusStyle = Literal["emit", "emit_async", "emit_no_yield"]


async def run_bus(
    events: Sequence[NodeEvent] | int,
    k: int,
    path: BusPath,
    style: BusStyle,
    *,
    capacity: int = CAPACITY,
    policy: Policy = "block",
    yield_every: int = YIELD_EVERY,
) -> Tally:
    """One producer, ``k`` reading tasks, one bus; what each reader got.

    ``events`` is either ready-made events or a count of events to build on the
    fly (the bounded-memory runs must not hold N events themselves).
    """
    bus = EventBus(capacity=capacity, overflow=policy)
    streams: list[EventStream] = []
    if path == "broadcaster":  # subscribed before start: the bus runs a task
        streams = [bus.subscribe() for _ in range(k)]
    received = [0] * k
    checkpoint = trio.lowlevel.checkpoint

    async def consume(i: int, stream: EventStream) -> None:
        count = 0
        async for _ in stream:
            count += 1
        received[i] = count

    async def produce() -> None:
        if isinstance(events, int):
            emit = bus.emit
            for _ in range(events):
                emit(make_event())
        elif style == "emit":
            emit = bus.emit
            for start in range(0, len(events), yield_every):
                for ev in events[start : start + yield_every]:
                    emit(ev)
                await checkpoint()
        elif style == "emit_async":
            emit_async = bus.emit_async
            for ev in events:
                await emit_async(ev)
        else:
            emit = bus.emit
            for ev in events:
                emit(ev)
        bus.close()

    async with bus:
        if path == "inline":  # the bus had no subscriber at start: no task
            streams = [bus.subscribe() for _ in range(k)]
        async with trio.open_nursery() as nursery:
            for i, stream in enumerate(streams):
                nursery.start_soon(consume, i, stream)
            nursery.start_soon(produce)
    return Tally(tuple(received), tuple(s.dropped for s in streams))


def build_fanout(
    n: int,
    k: int,
    path: BusPath,
    style: BusStyle,
    record: Record,
    *,
    yield_every: int = YIELD_EVERY,
) -> Runner:
    def prepare() -> list[NodeEvent]:
        return prebuilt_events(n)

    async def run(events: list[NodeEvent]) -> None:
        record(await run_bus(events, k, path, style, yield_every=yield_every))

    return Runner(prepare=prepare, run=run)


# ---- LangGraph -------------------------------------------------------------- #


class _LgState(TypedDict, total=False):
    done: bool


_LG_PAYLOAD = {"scope": "tick", "message": "m"}


def load_langgraph() -> Unavailable | tuple[Any, Any]:
    graph_mod = find_module("langgraph.graph")
    if isinstance(graph_mod, Unavailable):
        return graph_mod
    config_mod = find_module("langgraph.config")
    if isinstance(config_mod, Unavailable):
        return config_mod
    if not hasattr(config_mod, "get_stream_writer"):
        return Unavailable("langgraph has no langgraph.config.get_stream_writer")
    return graph_mod, config_mod


def build_langgraph(mods: tuple[Any, Any], n: int, record: Record) -> Runner:
    graph_mod, config_mod = mods
    get_stream_writer = config_mod.get_stream_writer
    payload = _LG_PAYLOAD

    async def producer(state: _LgState) -> dict[str, Any]:
        write = get_stream_writer()
        for _ in range(n):
            write(payload)
        return {"done": True}

    g = graph_mod.StateGraph(_LgState)
    g.add_node("p", producer)
    g.add_edge(graph_mod.START, "p")
    g.add_edge("p", graph_mod.END)
    app = g.compile()

    def prepare() -> _LgState:
        return {"done": False}

    async def run(inputs: _LgState) -> None:
        received = 0
        async for _ in app.astream(inputs, stream_mode="custom"):
            received += 1
        record(Tally((received,)))

    return Runner(prepare=prepare, run=run)


# ---- the list --------------------------------------------------------------- #


def make_scenarios(n: int, groups: Sequence[Group]) -> list[Scenario]:
    out: list[Scenario] = []

    def add(
        key: str,
        group: Group,
        label: str,
        framework: Literal["weavegraph", "raw trio", "python", "langgraph"],
        build: Callable[[Record], Runner],
        check: Check,
        *,
        subscribers: int = 1,
        backend: Backend = "trio",
        lossless: bool = True,
        unavailable: Unavailable | None = None,
    ) -> None:
        if group in groups:
            out.append(
                Scenario(
                    key=key,
                    group=group,
                    label=label,
                    framework=framework,
                    backend=backend,
                    events=n,
                    subscribers=subscribers,
                    build=build,
                    check=check,
                    lossless=lossless,
                    unavailable=unavailable,
                )
            )

    exact = expect_exact(n)
    add(
        "raw",
        "raw",
        "raw trio: memory channel, 1 hop",
        "raw trio",
        partial(build_raw_trio, n),
        exact,
    )
    add(
        "floor-event",
        "floor",
        "floor: NodeEvent(...) alone",
        "python",
        partial(build_floor_event, n),
        exact,
    )
    add(
        "floor-ctx",
        "floor",
        "floor: NodeContext._node_event",
        "weavegraph",
        partial(build_floor_ctx_construct, n),
        exact,
        unavailable=(
            None
            if callable(getattr(NodeContext, "_node_event", None))
            else Unavailable("no NodeContext._node_event")
        ),
    )
    add(
        "floor-ctx-emit",
        "floor",
        "floor: ctx.emit, bus w/o subscriber",
        "weavegraph",
        partial(build_floor_ctx_emit, n),
        exact,
    )
    add(
        "e2e-emit",
        "e2e",
        "e2e (a) block: emit + ckpt/256",
        "weavegraph",
        partial(build_e2e, n, "emit", "block"),
        expect_lossless_run(n),
    )
    add(
        "e2e-async",
        "e2e",
        "e2e (b) block: await emit_async",
        "weavegraph",
        partial(build_e2e, n, "emit_async", "block"),
        expect_lossless_run(n),
    )
    add(
        "e2e-drop",
        "e2e",
        "e2e (c) drop_oldest: emit, no yield",
        "weavegraph",
        partial(build_e2e, n, "emit_no_yield", "drop_oldest"),
        expect_accounted_run(n),
        lossless=False,
    )
    paths: tuple[BusPath, ...] = ("broadcaster", "inline")
    for k in SUBSCRIBER_COUNTS:
        for path in paths:
            add(
                f"bus-{k}-{path}-emit",
                "fanout",
                f"bus {k:>2} sub, {path}: emit + ckpt/{YIELD_EVERY}",
                "weavegraph",
                partial(build_fanout, n, k, path, "emit"),
                expect_fanout(n, k, lossless=True),
                subscribers=k,
            )
    for k in ASYNC_SUBSCRIBER_COUNTS:
        add(
            f"bus-{k}-broadcaster-async",
            "fanout-async",
            f"bus {k:>2} sub, broadcaster: emit_async",
            "weavegraph",
            partial(build_fanout, n, k, "broadcaster", "emit_async"),
            expect_fanout(n, k, lossless=True),
            subscribers=k,
        )
    if "langgraph" in groups:
        found = load_langgraph()

        def build_lg(record: Record) -> Runner:
            if isinstance(found, Unavailable):
                raise RuntimeError(found.reason)
            return build_langgraph(found, n, record)

        add(
            "langgraph",
            "langgraph",
            'langgraph: astream(stream_mode="custom")',
            "langgraph",
            build_lg,
            exact,
            backend="asyncio",
            unavailable=found if isinstance(found, Unavailable) else None,
        )
    return out


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #


@dataclass
class Result:
    scenario: Scenario
    outcome: Outcome
    tallies: list[Tally] = field(default_factory=list)
    rss_mib: float | None = None

    @property
    def rate(self) -> float | None:
        """Median deliveries (events times readers) per second."""
        if isinstance(self.outcome, Measured):
            return self.outcome.units / self.outcome.median_s
        return None


def peak_rss_mib() -> float | None:
    """Peak resident set size of this process so far, in MiB."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf exception inside any exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Live:
    """A scenario being measured: its runner and what its runs produced so far."""

    scenario: Scenario
    runner: Runner
    tallies: list[Tally] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    rss_mib: float | None = None

    def note_rss(self) -> None:
        if self.rss_mib is None:
            self.rss_mib = peak_rss_mib()


async def _untimed(runner: Runner, count: int) -> None:
    for _ in range(count):
        await runner.run(runner.prepare())


def _failure(sc: Scenario, exc: Exception) -> Failed:
    print(f"\n[{sc.key}] failed:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return Failed(_describe(exc))


def measure_all(scenarios: Sequence[Scenario], runs: int, warmup: int) -> list[Result]:
    """Warm every scenario up in turn, then time them in interleaved rounds.

    Round ``i`` times one run of every scenario, each on a fresh event loop, so
    that a slow phase of a noisy machine hits every row alike instead of
    whichever scenario happened to run then.
    """
    done: dict[str, Result] = {}
    live: list[_Live] = []
    for sc in scenarios:
        if sc.unavailable is not None:
            done[sc.key] = Result(sc, sc.unavailable, rss_mib=peak_rss_mib())
            continue
        print(f"  warm-up  {sc.label}", file=sys.stderr, flush=True)
        tallies: list[Tally] = []
        try:
            entry = _Live(sc, sc.build(tallies.append), tallies)
            if warmup:
                run_on(sc.backend, partial(_untimed, entry.runner, warmup))
                entry.note_rss()
        except Exception as exc:
            done[sc.key] = Result(sc, _failure(sc, exc), tallies, peak_rss_mib())
            continue
        live.append(entry)

    for i in range(runs):
        print(f"  round {i + 1}/{runs} ", end="", file=sys.stderr, flush=True)
        for entry in list(live):
            sc = entry.scenario
            try:
                entry.samples += run_on(
                    sc.backend, partial(time_runner, entry.runner, runs=1, warmup=0)
                )
            except Exception as exc:
                done[sc.key] = Result(sc, _failure(sc, exc), entry.tallies, None)
                live.remove(entry)
                continue
            entry.note_rss()
            print(".", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)

    for entry in live:
        sc = entry.scenario
        problems = [p for p in map(sc.check, entry.tallies) if p is not None]
        if len(entry.tallies) != runs + warmup:
            problems.insert(
                0, f"{len(entry.tallies)} runs reported, expected {runs + warmup}"
            )
        outcome: Outcome = (
            Failed(problems[0]) if problems else Measured(entry.samples, sc.units)
        )
        done[sc.key] = Result(sc, outcome, entry.tallies, entry.rss_mib)
    return [done[sc.key] for sc in scenarios]


# --------------------------------------------------------------------------- #
# Bounded memory
# --------------------------------------------------------------------------- #

MemoryKind = Literal["e2e", "broadcaster", "inline"]


@dataclass(frozen=True)
class MemoryCase:
    kind: MemoryKind
    policy: Policy
    capacity: int
    subscribers: int
    style: E2EStyle = "emit_no_yield"
    yield_every: int = YIELD_EVERY

    @property
    def lossless(self) -> bool:
        return self.policy == "block"

    @property
    def label(self) -> str:
        if self.lossless:
            if self.style == "emit_async":
                return "e2e (b) await emit_async"
            if self.style == "emit_no_yield":
                return "control: emit, never yields"
            return f"e2e (a) emit + ckpt/{self.yield_every}"
        where = "e2e invoke_streaming" if self.kind == "e2e" else f"bus, {self.kind}"
        return f"{where}, {self.policy}"

    def sizes(self, n: int) -> tuple[int, int]:
        """N and 10 N; N / 10 and N for lossless runs, which may hold every event."""
        if self.lossless:
            return max(1, n // MEMORY_FACTOR), n
        return n, MEMORY_FACTOR * n


MEMORY_CASES = (
    MemoryCase("e2e", "drop_oldest", CAPACITY, 1),
    MemoryCase("broadcaster", "drop_oldest", CAPACITY, 1),
    MemoryCase("broadcaster", "drop_newest", CAPACITY, 1),
    MemoryCase("inline", "drop_oldest", CAPACITY, 1),
    MemoryCase("broadcaster", "drop_oldest", CAPACITY, 4),
    MemoryCase("broadcaster", "drop_oldest", 4 * CAPACITY, 1),
    # Lossless producers, for comparison: the bound then depends on the producer.
    MemoryCase("e2e", "block", CAPACITY, 1, "emit", YIELD_EVERY),
    MemoryCase("e2e", "block", CAPACITY, 1, "emit_async"),
    # Control: lossless and never yielding, so every event waits: must grow.
    MemoryCase("e2e", "block", CAPACITY, 1, "emit_no_yield"),
)


@dataclass
class MemoryResult:
    case: MemoryCase
    sizes: tuple[int, int]
    peaks: list[int] = field(default_factory=list)
    """tracemalloc peak above the run's start, bytes, for each of ``sizes``."""
    high_water: list[int] = field(default_factory=list)
    """End-to-end runs: most events the reader had waiting (buffer + backlog)."""
    tallies: list[Tally] = field(default_factory=list)
    error: str | None = None

    @property
    def bounded(self) -> bool | None:
        if self.error is not None or len(self.peaks) != 2:
            return None
        small, big = self.peaks
        return big <= small * MEMORY_GROWTH_LIMIT + MEMORY_SLACK_BYTES


async def traced_peak(case: MemoryCase, n: int) -> tuple[int, Tally, int | None]:
    """Run ``case`` with ``n`` events built on the fly; peak bytes above start."""
    app = (
        build_e2e_app(n, case.style, case.policy, case.capacity, case.yield_every)
        if case.kind == "e2e"
        else None
    )
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    high: int | None = None
    if app is not None:
        tally, high = await stream_one_run_probed(app, VersionedState())
    else:
        tally = await run_bus(
            n,
            case.subscribers,
            "inline" if case.kind == "inline" else "broadcaster",
            "emit_no_yield",
            capacity=case.capacity,
            policy=case.policy,
        )
    peak = tracemalloc.get_traced_memory()[1] - base
    return peak, tally, high


def _memory_check(case: MemoryCase, size: int) -> Check:
    if case.kind != "e2e":
        return expect_fanout(size, case.subscribers, lossless=case.lossless)
    return expect_lossless_run(size) if case.lossless else expect_accounted_run(size)


def measure_memory(n: int) -> list[MemoryResult]:
    results: list[MemoryResult] = []
    tracemalloc.start()
    try:
        for case in MEMORY_CASES:
            res = MemoryResult(case, case.sizes(n))
            results.append(res)
            for size in res.sizes:
                print(
                    f"  memory  {case.label} cap={case.capacity}"
                    f" subs={case.subscribers} N={size:,}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    peak, tally, high = trio.run(traced_peak, case, size)
                except Exception as exc:
                    print(f"\n[memory {case.label}] failed:", file=sys.stderr)
                    traceback.print_exception(exc, file=sys.stderr)
                    res.error = _describe(exc)
                    break
                problem = _memory_check(case, size)(tally)
                res.peaks.append(peak)
                res.tallies.append(tally)
                if high is not None:
                    res.high_water.append(high)
                print(f" peak {peak / 1024:,.0f} KiB", file=sys.stderr, flush=True)
                if problem is not None:
                    res.error = problem
                    break
    finally:
        tracemalloc.stop()
    return results


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _rate_cell(res: Result) -> str:
    if res.rate is not None:
        return fmt_rate(res.rate)
    if isinstance(res.outcome, Unavailable):
        return res.outcome.reason if len(res.outcome.reason) <= 16 else "unavailable"
    return "error"


def _range_cell(res: Result) -> str:
    if not isinstance(res.outcome, Measured):
        return "-"
    units, samples = res.outcome.units, res.outcome.samples
    return f"{fmt_rate(units / max(samples))} .. {fmt_rate(units / min(samples))}"


def _delivered_cell(res: Result) -> str:
    if not res.tallies:
        return "-"
    t = res.tallies[-1]
    if len(t.received) > 1:
        if len(set(t.received)) == 1:
            text = f"{len(t.received)} x {t.received[0]:,}"
        else:
            text = "/".join(f"{r:,}" for r in t.received)
    else:
        text = f"{t.total_received:,}"
    if t.total_dropped:
        text += f" + {t.total_dropped:,} dropped"
    return text


def paired_ratio(num: Result | None, den: Result | None) -> float | None:
    """Median over rounds of ``num``'s rate / ``den``'s rate in the same round.

    Both were timed in every round, a few seconds apart, so a slow phase of the
    machine mostly cancels out of each round's ratio.
    """
    if num is None or den is None:
        return None
    a, b = num.outcome, den.outcome
    if not isinstance(a, Measured) or not isinstance(b, Measured):
        return None
    if len(a.samples) != len(b.samples):  # not aligned: fall back to medians
        return (a.units / a.median_s) / (b.units / b.median_s)
    return statistics.median(
        (a.units / ta) / (b.units / tb)
        for ta, tb in zip(a.samples, b.samples, strict=True)
    )


def _ratio_cell(num: Result | None, den: Result | None) -> str:
    ratio = paired_ratio(num, den)
    return "-" if ratio is None else fmt_ratio(ratio)


def _kib(value: float) -> str:
    return f"{value / 1024:,.0f}"


def _peak_cells(m: MemoryResult) -> list[str]:
    return [_kib(p) for p in m.peaks] + ["error"] * (2 - len(m.peaks))


def _growth_cell(m: MemoryResult) -> str:
    return fmt_ratio(m.peaks[1] / m.peaks[0]) if len(m.peaks) == 2 else "-"


def render_report(
    results: Sequence[Result],
    memory: Sequence[MemoryResult],
    *,
    n: int,
    runs: int,
    warmup: int,
    quick: bool,
    checkout: str | None = None,
    changed_during_run: bool = False,
) -> str:
    by_key = {r.scenario.key: r for r in results}
    out: list[str] = []
    out.append("weavegraph event streaming throughput")
    out.append(environment_line(["trio", "weavegraph", "langgraph", "attrs"]))
    if checkout is not None:
        out.append(checkout)
    sizes = "quick size" if quick else "full size"
    out.append(
        f"{sizes}: N = {n:,} events per run; median of {runs} timed run(s) after"
        f" {warmup} warm-up, scenarios interleaved round by round; bus capacity"
        f" {CAPACITY}; checkpointing producers"
        f" yield every {YIELD_EVERY} events"
    )
    loops = sorted({f"{r.scenario.framework}={r.scenario.backend}" for r in results})
    if loops:
        out.append(f"event loops: {', '.join(loops)}")

    if results:
        out.append("")
        out.append(
            "Throughput: events/s (one reader) or deliveries/s (events x readers"
            " / time); rates from the median run, then the slowest and fastest run"
        )
        t = Table(
            [
                "scenario",
                "loop",
                "unit",
                "subs",
                "median",
                "slowest .. fastest",
                "delivered (last run)",
                "peak RSS MiB",
            ],
            left=3,
        )
        for r in results:
            sc = r.scenario
            t.add(
                sc.label,
                sc.backend,
                sc.unit,
                str(sc.subscribers),
                _rate_cell(r),
                _range_cell(r),
                _delivered_cell(r),
                f"{r.rss_mib:,.0f}" if r.rss_mib is not None else "-",
            )
        out.append(t.render())

    floor = by_key.get("floor-event")
    ctx_floor = by_key.get("floor-ctx-emit")
    raw = by_key.get("raw")
    lg = by_key.get("langgraph")
    weave = [
        r for r in results if r.scenario.group in ("e2e", "fanout", "fanout-async")
    ]
    if weave and (floor or raw or lg):
        out.append("")
        out.append(
            "Ratios of rates (> 1: weavegraph faster): median over rounds of the"
            " ratio within a round; the floor and LangGraph columns only for"
            " end-to-end runs ('/ ctx.emit floor': against ctx.emit into a bus"
            " without subscriber)"
        )
        t = Table(
            [
                "weavegraph scenario",
                "/ NodeEvent floor",
                "/ ctx.emit floor",
                "/ raw trio",
                "/ langgraph",
            ]
        )
        for r in weave:
            is_e2e = r.scenario.group == "e2e"
            t.add(
                r.scenario.label,
                _ratio_cell(r, floor) if is_e2e else "-",
                _ratio_cell(r, ctx_floor) if is_e2e else "-",
                _ratio_cell(r, raw),
                _ratio_cell(r, lg) if is_e2e else "-",
            )
        out.append(t.render())

    lossy = [m for m in memory if not m.case.lossless]
    lossless = [m for m in memory if m.case.lossless]
    if lossy:
        small, big = lossy[0].sizes
        out.append("")
        out.append(
            "Bounded memory: tracemalloc peak above the run's start, KiB; producer"
            " never yields, events built on the fly; one run per size"
        )
        t = Table(
            [
                "set-up",
                "capacity",
                "subs",
                f"N={small:,}",
                f"N={big:,}",
                "growth",
                "B per slot",
                "received + dropped",
            ]
        )
        for m in lossy:
            c = m.case
            acct = (
                f"{m.tallies[-1].total_received:,} + {m.tallies[-1].total_dropped:,}"
                if m.tallies
                else "-"
            )
            t.add(
                c.label,
                str(c.capacity),
                str(c.subscribers),
                *_peak_cells(m),
                _growth_cell(m),
                f"{m.peaks[0] / c.capacity:,.0f}" if m.peaks else "-",
                acct,
            )
        out.append(t.render())
    if lossless:
        small, big = lossless[0].sizes
        out.append("")
        out.append(
            "For comparison, lossless producers (e2e, overflow='block', capacity"
            f" {CAPACITY}): tracemalloc peak, KiB, and the most events the reader"
            " had waiting (buffer + backlog, sampled every"
            f" {SAMPLE_EVERY} events); one run per size"
        )
        t = Table(
            [
                "producer",
                f"N={small:,}",
                f"N={big:,}",
                "growth",
                f"waiting N={small:,}",
                f"waiting N={big:,}",
                "memory",
            ]
        )
        for m in lossless:
            waiting = [f"{h:,}" for h in m.high_water]
            waiting += ["-"] * (2 - len(waiting))
            shape = (
                "-" if m.bounded is None else "bounded" if m.bounded else "grows with N"
            )
            t.add(m.case.label, *_peak_cells(m), _growth_cell(m), *waiting, shape)
        out.append(t.render())

    out.append("")
    out.append(
        "Targets for weavegraph" + (" (quick size: indicative only)" if quick else "")
    )
    t = Table(["target", "scenario", "measured", "verdict"], left=2)

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else "PASS" if ok else "MISS"

    for key in ("e2e-emit", "e2e-async"):
        e2e = by_key.get(key)
        if e2e is not None:
            rate = e2e.rate
            t.add(
                f">= {fmt_rate(TARGET_E2E_RATE)} events/s, 1 reader",
                e2e.scenario.label,
                _rate_cell(e2e),
                verdict(None if rate is None else rate >= TARGET_E2E_RATE),
            )
    for key in ("e2e-emit", "e2e-async"):
        e2e = by_key.get(key)
        if e2e is not None and floor is not None:
            share = paired_ratio(e2e, floor)
            t.add(
                f">= {TARGET_FLOOR_SHARE:.0%} of the NodeEvent floor",
                e2e.scenario.label,
                f"{share:.0%}" if share is not None else "-",
                verdict(None if share is None else share >= TARGET_FLOOR_SHARE),
            )
    for r in results:
        if (
            r.scenario.group in ("fanout", "fanout-async")
            and r.scenario.subscribers == TARGET_FANOUT_SUBS
        ):
            t.add(
                f">= {fmt_rate(TARGET_FANOUT_RATE)} deliveries/s,"
                f" {TARGET_FANOUT_SUBS} readers",
                r.scenario.label,
                _rate_cell(r),
                verdict(None if r.rate is None else r.rate >= TARGET_FANOUT_RATE),
            )
    for m in lossy:
        t.add(
            f"peak independent of N ({m.sizes[0]:,} vs {m.sizes[1]:,})",
            f"{m.case.label}, {m.case.capacity} x {m.case.subscribers}",
            (
                f"{_kib(m.peaks[0])} -> {_kib(m.peaks[1])} KiB"
                if len(m.peaks) == 2
                else "error"
            ),
            verdict(m.bounded),
        )
    if t.rows:
        out.append(t.render())
    if lossy:
        out.append(
            f"  memory rule: peak(10 N) <= {MEMORY_GROWTH_LIMIT:.2f} x peak(N)"
            f" + {MEMORY_SLACK_BYTES // 1024} KiB"
        )

    out.append("")
    out.append("Notes")
    if changed_during_run:
        out.append(
            "  - WARNING: weavegraph/ changed while this ran; rows may measure"
            " different versions (the checkout line is the state at the start)"
        )
    out += [f"  - {note}" for note in notes(results, memory, n=n)]
    return "\n".join(out)


def notes(
    results: Sequence[Result], memory: Sequence[MemoryResult], *, n: int
) -> list[str]:
    by_key = {r.scenario.key: r for r in results}
    out: list[str] = []
    drop = by_key.get("e2e-drop")
    if drop is not None and drop.tallies and isinstance(drop.outcome, Measured):
        sums = {t.total_received + t.total_dropped for t in drop.tallies}
        last = drop.tallies[-1]
        out.append(
            f"e2e (c): received {last.total_received:,} + dropped"
            f" {last.total_dropped:,} = {last.total_received + last.total_dropped:,}"
            f" = N + stream-end sentinel ({n:,} + 1); the sentinel arrived last;"
            f" checked in all {len(drop.tallies)} runs: "
            + ("OK" if sums == {n + 1} else f"MISMATCH {sorted(sums)}")
        )
    out += _lossless_memory_notes(memory)
    lossless = [
        r.scenario.label
        for r in results
        if r.scenario.framework == "weavegraph"
        and r.scenario.lossless
        and r.scenario.group in ("e2e", "fanout", "fanout-async")
        and isinstance(r.outcome, Measured)
    ]
    if lossless:
        out.append(
            f"lossless scenarios delivered every event to every reader in every run"
            f" (warm-up included): {len(lossless)} scenario(s)"
        )
    ctx_floor = by_key.get("floor-ctx-emit")
    if (
        ctx_floor is not None
        and ctx_floor.rate is not None
        and ctx_floor.rate < TARGET_E2E_RATE
    ):
        out.append(
            f"ctx.emit alone (event built and counted, delivered to nobody) runs at"
            f" {fmt_rate(ctx_floor.rate)}/s on this machine, below the"
            f" {fmt_rate(TARGET_E2E_RATE)} events/s end-to-end target, so that"
            " target cannot be met here whatever delivery costs"
        )
    lg = by_key.get("langgraph")
    if lg is not None and lg.rate is not None:
        factor = REFERENCE_LANGGRAPH_RATE / lg.rate
        line = (
            f"LangGraph runs at {fmt_rate(lg.rate)} events/s here against"
            f" ~{fmt_rate(REFERENCE_LANGGRAPH_RATE)} on the machine the targets were"
            f" set on (x{factor:.2f})"
        )
        ratio = paired_ratio(by_key.get("e2e-emit"), lg)
        if ratio is not None:
            line += (
                f"; at the measured ratio, e2e (a) would run at ~"
                f"{fmt_rate(ratio * REFERENCE_LANGGRAPH_RATE)} events/s there (rough:"
                " assumes both slow down alike)"
            )
        out.append(line)
    spreads = [
        max(r.outcome.samples) / min(r.outcome.samples)
        for r in results
        if isinstance(r.outcome, Measured) and len(r.outcome.samples) > 1
    ]
    if spreads and max(spreads) > 1.5:
        out.append(
            f"noisy machine: the fastest and slowest run of one scenario differ by"
            f" up to {max(spreads):.1f}x (median {statistics.median(spreads):.1f}x);"
            " absolute rates move with it, which is why ratios are taken within"
            " a round"
        )
    if "raw" in by_key:
        turn = reader_yield_every()
        out.append(
            "raw trio: send() and receive() each checkpoint on every event, so"
            " that row is a per-event scheduling baseline, not a ceiling; the bus"
            " moves events in batches and its readers yield"
            + (f" every {turn} events" if turn is not None else " less often")
        )
    if any(r.scenario.group in ("fanout", "fanout-async") for r in results):
        out.append(
            "bus paths: 'broadcaster' = streams subscribed before 'async with bus:',"
            " so the bus runs a broadcaster task that fans whole batches out;"
            " 'inline' = streams subscribed inside the block of a bus that had no"
            " subscriber at start, so emit() hands each event to every buffer"
            " itself; invoke_streaming always uses the broadcaster path"
        )
    if any(r.scenario.key == "floor-ctx" for r in results):
        out.append(
            "floor 'NodeContext._node_event' calls a private method (what ctx.emit"
            " builds before publishing); 'ctx.emit, bus w/o subscriber' is the"
            " public path into a started bus that delivers to nobody"
        )
    if any(r.scenario.framework == "langgraph" for r in results):
        out.append(
            "langgraph: StateGraph, one async node writing a constant payload via"
            " get_stream_writer(), astream(stream_mode='custom') under asyncio.run"
        )
    if any(r.rss_mib is not None for r in results):
        out.append(
            "peak RSS is the process-wide maximum (ru_maxrss) right after each"
            " scenario's first run, in table order, so it never decreases; from raw"
            f" trio on it includes the {n:,} pre-built events"
        )
    if memory:
        out.append(
            "'B per slot' is the peak at the smaller N over the capacity. A"
            " broadcaster-path bus holds at most one pending batch plus each"
            " reader's buffer, both capacity events long; readers share the event"
            " objects, so each extra reader adds one pointer per slot. Peak memory"
            " grows with capacity (and a little with readers), not with N"
        )
    for r in results:
        if isinstance(r.outcome, Failed):
            out.append(f"{r.scenario.label}: ERROR {r.outcome.error}")
        elif isinstance(r.outcome, Unavailable) and len(r.outcome.reason) > 16:
            out.append(f"{r.scenario.label}: {r.outcome.reason}")
    out += [f"memory {m.case.label}: ERROR {m.error}" for m in memory if m.error]
    return out


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(_ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def checkout_state() -> tuple[str, str] | None:
    """``(description, fingerprint)`` of the measured ``weavegraph/`` sources.

    The fingerprint changes when the committed tree or the local edits of
    ``weavegraph/`` do, so a run can tell whether they changed under it.
    """
    try:
        head = _git("rev-parse", "--short", "HEAD")
        tree = _git("rev-parse", "HEAD:weavegraph")
        edits = _git("diff", "HEAD", "--", "weavegraph")
        untracked = _git("ls-files", "--others", "--exclude-standard", "weavegraph")
    except (OSError, subprocess.CalledProcessError):
        return None
    dirty = bool(edits or untracked)
    state = "with uncommitted changes" if dirty else "clean"
    return (
        f"weavegraph checkout: {head} (weavegraph/ {state})",
        tree + edits + untracked,
    )


def reader_yield_every() -> int | None:
    """How many events an `EventStream` reader takes per scheduler turn (the
    stream module's private ``_YIELD_EVERY``), if it can be read."""
    from weavegraph.events import stream

    value = getattr(stream, "_YIELD_EVERY", None)
    return value if isinstance(value, int) else None


def _lossless_memory_notes(memory: Sequence[MemoryResult]) -> list[str]:
    out: list[str] = []
    for m in memory:
        c = m.case
        if not c.lossless or not m.high_water or m.bounded is None:
            continue
        waiting = f"at most {m.high_water[-1]:,} of {m.sizes[-1]:,} events waited"
        if c.style == "emit_no_yield":
            out.append(
                f"{c.label}: {waiting} and memory "
                + (
                    "grew with N, as it must: the check can see growth"
                    if not m.bounded
                    else "did NOT grow with N: the check may not see growth"
                )
            )
        elif c.style == "emit" and not m.bounded:
            turn = reader_yield_every()
            why = (
                f"an EventStream reader takes at most {turn} events per scheduler"
                f" turn and this producer adds {c.yield_every}, so the reader falls"
                " behind"
                if turn is not None and turn < c.yield_every
                else "the reader falls behind"
            )
            out.append(
                f"{c.label}: {why}; with overflow='block' the surplus waits in"
                f" its backlog: lossless, but {waiting}, so memory grows with N."
                f" The bus fan-out rows with ckpt/{c.yield_every} do the same"
            )
        else:
            out.append(f"{c.label}: the reader kept up ({waiting}); memory bounded")
    return out


# --------------------------------------------------------------------------- #
# Profiling
# --------------------------------------------------------------------------- #

PROFILE_STYLES: dict[str, tuple[E2EStyle, Policy]] = {
    "emit": ("emit", "block"),
    "emit_async": ("emit_async", "block"),
    "drop": ("emit_no_yield", "drop_oldest"),
}


def profile(n: int, which: str, top: int) -> int:
    """cProfile one end-to-end run (after one warm-up); top entries by tottime."""
    style, policy = PROFILE_STYLES[which]
    app = build_e2e_app(n, style, policy, CAPACITY)
    prof = cProfile.Profile()

    async def main() -> Tally:
        await stream_one_run(app, VersionedState())
        gc.collect()
        prof.enable()
        try:
            return await stream_one_run(app, VersionedState())
        finally:
            prof.disable()

    tally = trio.run(main)
    print(
        f"cProfile of one end-to-end run, 1 reader, producer style {which!r}"
        f" ({style}, {policy}), N = {n:,}; received {tally.total_received:,},"
        f" dropped {tally.total_dropped:,}"
    )
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    return 0


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Event streaming throughput: weavegraph vs raw trio and LangGraph."
    )
    add_run_options(
        parser,
        unit="scenario",
        quick_help=f"N = {QUICK_EVENTS:,} instead of {FULL_EVENTS:,}, for a smoke test",
    )
    parser.add_argument(
        "--events", type=int, default=None, help="N, events per run (overrides --quick)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(GROUPS),
        help=f"comma-separated subset of {','.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="emit",
        choices=sorted(PROFILE_STYLES),
        default=None,
        help="only cProfile one end-to-end run (style: emit, emit_async, drop;"
        " default emit) and print the top entries by tottime",
    )
    parser.add_argument(
        "--top", type=int, default=15, help="entries of the --profile listing"
    )
    args = parser.parse_args(argv)
    check_run_options(parser, args)
    if args.events is not None and args.events < 1:
        parser.error("--events must be >= 1")
    args.n = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    selected = pick_subset(parser, "--scenarios", args.scenarios, GROUPS)
    args.groups = selected
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # One "event stream lagged" warning per lossy run is expected here.
    logging.getLogger("weavegraph.event_bus").setLevel(logging.ERROR)
    if args.profile is not None:
        return profile(args.n, args.profile, args.top)

    start = checkout_state()
    results = measure_all(make_scenarios(args.n, args.groups), args.runs, args.warmup)
    for res in results:
        status = (
            f"{fmt_rate(res.rate)} {res.scenario.unit}"
            if res.rate is not None
            else _rate_cell(res)
        )
        print(f"  {res.scenario.label:<42} {status}", file=sys.stderr, flush=True)
    memory = measure_memory(args.n) if "memory" in args.groups else []
    print(file=sys.stderr)

    print(
        render_report(
            results,
            memory,
            n=args.n,
            runs=args.runs,
            warmup=args.warmup,
            quick=args.quick and args.events is None,
            checkout=start[0] if start is not None else None,
            changed_during_run=start is not None and checkout_state() != start,
        )
    )
    weave_failed = any(
        # The "python" floor builds weavegraph's own NodeEvent.
        isinstance(r.outcome, Failed)
        and r.scenario.framework in ("weavegraph", "python")
        for r in results
    ) or any(m.error is not None for m in memory)
    return 1 if weave_failed else 0


if __name__ == "__main__":
    sys.exit(main())
