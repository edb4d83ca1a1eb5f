"""Per-step engine overhead of weavegraph, next to raw trio and two peer frameworks.

What is measured
----------------
Three workloads whose node bodies do (almost) nothing, so that the time spent
is the engine's own bookkeeping: scheduling, state merging, routing, joins.

* ``chain``   START -> n0 -> n1 -> ... -> n99 -> END; every node returns an
  empty update.  Reported as µs per node-step (whole run / 100).
* ``fan-out`` START -> fan -> {b0 .. b999} -> join -> END, where ``join`` waits
  for all 1000 branches.  Reported as µs per branch (whole run / 1000).
* ``loop``    a single node ``tick`` increments a counter in state; a router on
  ``tick`` sends control back to ``tick`` while the counter is below 1000, then
  to END.  Reported as µs per iteration (whole run / 1000).

Each workload runs on:

* **weavegraph** -- ``GraphBuilder`` / ``app.invoke`` under ``trio.run``.
* **raw trio** -- the hand-written minimum: the very same weavegraph node
  functions awaited directly in a trio loop with the same shape (a ``for`` loop
  for the chain, a nursery with one task per branch for the fan-out, a
  ``while`` loop plus the same router for the loop).  No graph, no state
  merging beyond ``dict.update``.  For the fan-out this is not a hard floor: an
  engine that runs branches which never suspend without starting a task each
  can beat it.
* **langgraph** -- ``langgraph.graph.StateGraph`` compiled and driven with
  ``ainvoke`` under ``asyncio.run`` (LangGraph is asyncio-only).
* **pydantic-graph** -- ``pydantic_graph.GraphBuilder``; it is built on anyio, so
  it is run under ``trio.run`` and only falls back to asyncio (and says so) if
  that fails.

The peers live in the optional ``bench`` extra; a missing one is reported as
"not installed" instead of failing the script.

Method: for each (engine, workload) the graph is built and compiled, then run
once with counting node bodies to check that exactly the expected nodes ran,
then rebuilt with trivial bodies, run ``--warmup`` times untimed and ``--runs``
times timed.  Only the whole ``invoke``/``ainvoke``/``run`` call is inside the
timed region: event-loop start-up, graph construction, compilation and creating
the input state are not.  Objects alive before timing starts are moved out of
the GC's reach (``gc.freeze()``) so that no engine pays for the others' imports,
and a collection runs before every timed run.  The figure reported is the median
whole-run wall time divided by the number of units.

Running
-------
::

    .venv/bin/python bench/engine.py             # full sizes, median of 5 runs
    .venv/bin/python bench/engine.py --runs 11   # more runs
    .venv/bin/python bench/engine.py --quick     # small sizes, a few seconds
    .venv/bin/python bench/engine.py --engines weavegraph,raw-trio

Install the peers with the ``bench`` extra (``pip install -e '.[bench]'``).  The
exit status is 1 only if weavegraph itself raised or ran the wrong number of
nodes; targets that are missed are reported but do not change it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import trio

# ``_common`` sits next to this file; the checkout's own weavegraph is measured
# even when it is not installed.  Both hold for ``python bench/engine.py`` and
# ``python -m bench.engine``.
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
    Probe,
    Runner,
    Table,
    Unavailable,
    add_run_options,
    check_run_options,
    dist_version,
    environment_line,
    find_module,
    fmt_ms,
    fmt_ratio,
    fmt_us,
    pick_subset,
    run_on,
    run_trio_else_asyncio,
    time_runner,
)

# --------------------------------------------------------------------------- #
# Workloads
# --------------------------------------------------------------------------- #

WorkloadKind = Literal["chain", "fanout", "loop"]


@dataclass(frozen=True)
class Workload:
    kind: WorkloadKind
    size: int
    unit: str
    """What one unit of ``size`` is: a node-step, a branch, an iteration."""
    target_us: float
    """weavegraph's budget per unit."""

    @property
    def label(self) -> str:
        return "fan-out" if self.kind == "fanout" else self.kind

    @property
    def expected_calls(self) -> int:
        """Node-body calls a correct run makes (fan-out adds ``fan`` and ``join``)."""
        return self.size + 2 if self.kind == "fanout" else self.size

    @property
    def step_budget(self) -> int:
        """Generous max-steps / recursion limit: never the thing being measured."""
        return max(10_000, 4 * self.size)


FULL_SIZES = {"chain": 100, "fanout": 1000, "loop": 1000}
QUICK_SIZES = {"chain": 20, "fanout": 100, "loop": 100}


def make_workloads(quick: bool) -> list[Workload]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    return [
        Workload("chain", sizes["chain"], "step", target_us=20.0),
        Workload("fanout", sizes["fanout"], "branch", target_us=12.0),
        Workload("loop", sizes["loop"], "iteration", target_us=25.0),
    ]


class StepCountError(RuntimeError):
    pass


# --------------------------------------------------------------------------- #
# Engines
# --------------------------------------------------------------------------- #


class Engine:
    """One column of the report.

    Subclasses import their framework in ``load`` and turn a workload into a
    ``Runner`` in ``build``; ``measure`` is shared.
    """

    name: str = ""
    backend: Backend = "trio"

    def __init__(self) -> None:
        self.unavailable: Unavailable | None = None
        self.notes: list[str] = []

    @property
    def event_loop(self) -> str:
        return self.backend

    def load(self) -> Unavailable | None:
        raise NotImplementedError

    def build(self, wl: Workload, probe: Probe | None) -> Runner:
        raise NotImplementedError

    async def _measure(self, wl: Workload, runs: int, warmup: int) -> list[float]:
        probe = Probe()
        checked = self.build(wl, probe)
        await checked.run(checked.prepare())
        if probe.calls != wl.expected_calls:
            raise StepCountError(
                f"node bodies ran {probe.calls} times, expected {wl.expected_calls}"
            )
        return await time_runner(self.build(wl, None), runs=runs, warmup=warmup)

    def run_samples(self, wl: Workload, runs: int, warmup: int) -> list[float]:
        samples: list[float] = run_on(
            self.backend, lambda: self._measure(wl, runs, warmup)
        )
        return samples

    def measure(self, wl: Workload, runs: int, warmup: int) -> Outcome:
        if self.unavailable is not None:
            return self.unavailable
        try:
            samples = self.run_samples(wl, runs, warmup)
        except Exception as exc:
            print(f"\n[{self.name}/{wl.label}] failed:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
            return Failed(_describe(exc))
        return Measured(samples, wl.size)


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf exception inside any exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


# ---- weavegraph and raw trio share the same node functions ----------------- #

NodeFn = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class WeaveBodies:
    """Node functions with weavegraph's ``(snapshot, ctx)`` signature."""

    noop: NodeFn
    tick: NodeFn
    route: Callable[[Any], Any]


def weave_bodies(
    partial: Callable[..., Any], end: Any, limit: int, probe: Probe | None
) -> WeaveBodies:
    if probe is None:

        async def noop(snapshot: Any, ctx: Any) -> None:
            return None

        async def tick(snapshot: Any, ctx: Any) -> Any:
            return partial(extra={"count": snapshot.extra.get("count", 0) + 1})

    else:
        hit = probe.hit

        async def noop(snapshot: Any, ctx: Any) -> None:
            hit()
            return None

        async def tick(snapshot: Any, ctx: Any) -> Any:
            hit()
            return partial(extra={"count": snapshot.extra.get("count", 0) + 1})

    def route(snapshot: Any) -> Any:
        return "tick" if snapshot.extra.get("count", 0) < limit else end

    return WeaveBodies(noop, tick, route)


class WeavegraphEngine(Engine):
    name = "weavegraph"
    REQUIRED = (
        "GraphBuilder",
        "START",
        "END",
        "NodePartial",
        "VersionedState",
        "RuntimeConfig",
    )

    def __init__(self) -> None:
        super().__init__()
        self.wg: Any = None

    def load(self) -> Unavailable | None:
        try:
            wg = importlib.import_module("weavegraph")
        except Exception as exc:
            self.notes.append(f"import weavegraph: {type(exc).__name__}: {exc}")
            return Unavailable("not importable")
        missing = [n for n in self.REQUIRED if not hasattr(wg, n)]
        if missing:
            where = (
                "namespace package, no __init__.py yet"
                if getattr(wg, "__file__", None) is None
                else wg.__file__
            )
            self.notes.append(f"weavegraph ({where}) lacks: {', '.join(missing)}")
            return Unavailable("not importable")
        self.wg = wg
        self.notes.append(f"weavegraph imported from {wg.__file__}")
        return None

    def build(self, wl: Workload, probe: Probe | None) -> Runner:
        wg = self.wg
        bodies = weave_bodies(wg.NodePartial, wg.END, wl.size, probe)
        b = wg.GraphBuilder()
        if wl.kind == "chain":
            names = [f"n{i}" for i in range(wl.size)]
            for name in names:
                b.add_node(name, bodies.noop)
            b.add_edge(wg.START, names[0])
            for src, dst in itertools.pairwise(names):
                b.add_edge(src, dst)
            b.add_edge(names[-1], wg.END)
        elif wl.kind == "fanout":
            branches = [f"b{i}" for i in range(wl.size)]
            b.add_node("fan", bodies.noop)
            for name in branches:
                b.add_node(name, bodies.noop)
            b.add_node("join", bodies.noop)
            b.add_edge(wg.START, "fan")
            for name in branches:
                b.add_edge("fan", name)
            b.add_edge(branches, "join")
            b.add_edge("join", wg.END)
        else:
            b.add_node("tick", bodies.tick)
            b.add_edge(wg.START, "tick")
            b.add_conditional_edge("tick", bodies.route)
        app = b.compile(wg.RuntimeConfig(max_steps=wl.step_budget))
        return Runner(
            prepare=lambda: wg.VersionedState.with_user_message("go"),
            run=app.invoke,
        )


@dataclass(slots=True)
class _RawSnapshot:
    """Bare stand-in for a state snapshot: just the attributes nodes read."""

    messages: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[Any] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _RawPartial:
    """Used in place of ``weavegraph.NodePartial`` while weavegraph is absent."""

    extra: dict[str, Any]


_RAW_END = "__end__"


def _apply(snapshot: _RawSnapshot, update: Any) -> None:
    if update is not None:
        snapshot.extra.update(update.extra)


class RawTrioEngine(Engine):
    name = "raw trio"

    def __init__(self, weave: WeavegraphEngine) -> None:
        super().__init__()
        self.weave = weave

    def load(self) -> Unavailable | None:
        if self.weave.wg is not None:
            self.notes.append(
                "raw trio awaits the same node functions as weavegraph "
                "(returning weavegraph.NodePartial)"
            )
        else:
            self.notes.append(
                "raw trio: weavegraph not importable, node functions return a "
                "stand-in partial instead of weavegraph.NodePartial"
            )
        return None

    def build(self, wl: Workload, probe: Probe | None) -> Runner:
        wg = self.weave.wg
        partial = wg.NodePartial if wg is not None else _RawPartial
        end = wg.END if wg is not None else _RAW_END
        bodies = weave_bodies(partial, end, wl.size, probe)
        noop, tick, route, size = bodies.noop, bodies.tick, bodies.route, wl.size

        if wl.kind == "chain":
            steps = [noop] * size

            async def run(snapshot: _RawSnapshot) -> _RawSnapshot:
                for step in steps:
                    _apply(snapshot, await step(snapshot, None))
                return snapshot

        elif wl.kind == "fanout":

            async def run(snapshot: _RawSnapshot) -> _RawSnapshot:
                _apply(snapshot, await noop(snapshot, None))
                async with trio.open_nursery() as nursery:
                    for _ in range(size):
                        nursery.start_soon(noop, snapshot, None)
                _apply(snapshot, await noop(snapshot, None))
                return snapshot

        else:

            async def run(snapshot: _RawSnapshot) -> _RawSnapshot:
                while True:
                    _apply(snapshot, await tick(snapshot, None))
                    if route(snapshot) == end:
                        return snapshot

        return Runner(prepare=_RawSnapshot, run=run)


# ---- LangGraph ------------------------------------------------------------- #


class _LgState(TypedDict, total=False):
    count: int


class LangGraphEngine(Engine):
    name = "langgraph"
    backend: Backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.graph_mod: Any = None

    def load(self) -> Unavailable | None:
        found = find_module("langgraph.graph")
        if isinstance(found, Unavailable):
            return found
        self.graph_mod = found
        self.notes.append(
            "langgraph: StateGraph + ainvoke under asyncio.run (default loop), "
            "async node functions, no checkpointer"
        )
        return None

    def build(self, wl: Workload, probe: Probe | None) -> Runner:
        lg = self.graph_mod
        start, end, limit = lg.START, lg.END, wl.size
        hit = probe.hit if probe is not None else None

        if hit is None:

            async def noop(state: _LgState) -> dict[str, Any]:
                return {}

            async def tick(state: _LgState) -> dict[str, Any]:
                return {"count": state.get("count", 0) + 1}

        else:

            async def noop(state: _LgState) -> dict[str, Any]:
                hit()
                return {}

            async def tick(state: _LgState) -> dict[str, Any]:
                hit()
                return {"count": state.get("count", 0) + 1}

        def route(state: _LgState) -> str:
            return "tick" if state.get("count", 0) < limit else end

        g = lg.StateGraph(_LgState)
        if wl.kind == "chain":
            names = [f"n{i}" for i in range(wl.size)]
            for name in names:
                g.add_node(name, noop)
            g.add_edge(start, names[0])
            for src, dst in itertools.pairwise(names):
                g.add_edge(src, dst)
            g.add_edge(names[-1], end)
        elif wl.kind == "fanout":
            branches = [f"b{i}" for i in range(wl.size)]
            g.add_node("fan", noop)
            for name in branches:
                g.add_node(name, noop)
            g.add_node("join", noop)
            g.add_edge(start, "fan")
            for name in branches:
                g.add_edge("fan", name)
            g.add_edge(branches, "join")
            g.add_edge("join", end)
        else:
            g.add_node("tick", tick)
            g.add_edge(start, "tick")
            g.add_conditional_edges("tick", route, ["tick", end])
        app = g.compile()
        config = {"recursion_limit": wl.step_budget}

        def prepare() -> _LgState:
            return {"count": 0}

        async def run(state: _LgState) -> Any:
            return await app.ainvoke(state, config)

        return Runner(prepare=prepare, run=run)


# ---- pydantic-graph -------------------------------------------------------- #


@dataclass
class _PgState:
    count: int = 0


class PydanticGraphEngine(Engine):
    name = "pydantic-graph"

    def __init__(self) -> None:
        super().__init__()
        self.pg: Any = None
        self.backends_used: set[str] = set()

    def load(self) -> Unavailable | None:
        found = find_module("pydantic_graph")
        if isinstance(found, Unavailable):
            return found
        if not hasattr(found, "GraphBuilder"):
            version = dist_version("pydantic-graph")
            return Unavailable(f"no GraphBuilder API in pydantic-graph {version}")
        self.pg = found
        self.notes.append(
            "pydantic-graph: GraphBuilder steps, auto_instrument=False; fan-out is "
            "a broadcast fork into the branches plus a reduce_null Join in front "
            "of the 'join' step; the loop routes on tick's output via a Decision"
        )
        return None

    @property
    def event_loop(self) -> str:
        return "+".join(sorted(self.backends_used)) or "trio, else asyncio"

    def run_samples(self, wl: Workload, runs: int, warmup: int) -> list[float]:
        result = run_trio_else_asyncio(lambda: self._measure(wl, runs, warmup))
        self.backends_used.add(result.backend)
        if result.fallback_reason is not None:
            self.notes.append(
                f"pydantic-graph/{wl.label}: failed under trio "
                f"({result.fallback_reason}); measured under asyncio instead"
            )
        samples: list[float] = result.value
        return samples

    def build(self, wl: Workload, probe: Probe | None) -> Runner:
        pg = self.pg
        limit = wl.size
        hit = probe.hit if probe is not None else None

        if hit is None:

            async def noop(ctx: Any) -> None:
                return None

            async def tick(ctx: Any) -> int:
                ctx.state.count += 1
                return int(ctx.state.count)

        else:

            async def noop(ctx: Any) -> None:
                hit()
                return None

            async def tick(ctx: Any) -> int:
                hit()
                ctx.state.count += 1
                return int(ctx.state.count)

        g = pg.GraphBuilder(
            name=f"bench_{wl.kind}", state_type=_PgState, auto_instrument=False
        )
        if wl.kind == "chain":
            steps = [g.step(noop, node_id=f"n{i}") for i in range(wl.size)]
            g.add_edge(g.start_node, steps[0])
            for src, dst in itertools.pairwise(steps):
                g.add_edge(src, dst)
            g.add_edge(steps[-1], g.end_node)
        elif wl.kind == "fanout":
            fan = g.step(noop, node_id="fan")
            branches = [g.step(noop, node_id=f"b{i}") for i in range(wl.size)]
            join = g.step(noop, node_id="join")
            collect = g.join(pg.reduce_null, initial=None, node_id="collect")
            g.add_edge(g.start_node, fan)
            g.add(g.edge_from(fan).to(*branches))
            g.add(g.edge_from(*branches).to(collect))
            g.add_edge(collect, join)
            g.add_edge(join, g.end_node)
        else:
            step = g.step(tick, node_id="tick")
            again = g.match(int, matches=lambda count: count < limit).to(step)
            done = g.match(int).to(g.end_node)
            g.add_edge(g.start_node, step)
            g.add(g.edge_from(step).to(g.decision().branch(again).branch(done)))
        graph = g.build()

        async def run(state: _PgState) -> Any:
            return await graph.run(state=state)

        return Runner(prepare=_PgState, run=run)


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #

ENGINE_KEYS = ("weavegraph", "raw-trio", "langgraph", "pydantic-graph")
PEERS = ("langgraph", "pydantic-graph")

Results = dict[tuple[str, WorkloadKind], Outcome]


def _cell(outcome: Outcome, value: Callable[[Measured], str]) -> str:
    if isinstance(outcome, Measured):
        return value(outcome)
    if isinstance(outcome, Unavailable):
        return outcome.reason if len(outcome.reason) <= 16 else "unavailable"
    return "error"


def _per_unit(m: Measured) -> str:
    return fmt_us(m.per_unit_us)


def _whole_run(m: Measured) -> str:
    lo, hi = min(m.samples) * 1e3, max(m.samples) * 1e3
    return f"{fmt_ms(m.median_s * 1e3)} [{fmt_ms(lo)} .. {fmt_ms(hi)}]"


def _ratio(num: Outcome, den: Outcome) -> str:
    if isinstance(num, Measured) and isinstance(den, Measured):
        return fmt_ratio(num.per_unit_us / den.per_unit_us)
    return "-"


def render_report(
    engines: Sequence[Engine],
    workloads: Sequence[Workload],
    results: Results,
    *,
    runs: int,
    warmup: int,
    quick: bool,
) -> str:
    names = [e.name for e in engines]
    by_name = {e.name: e for e in engines}
    out: list[str] = []
    sizes = "quick sizes" if quick else "full sizes"
    out.append("weavegraph engine overhead (trivial node bodies)")
    out.append(
        environment_line(["trio", "weavegraph", "langgraph", "pydantic-graph", "anyio"])
    )
    out.append(
        f"{sizes}; median of {runs} timed run(s) after {warmup} warm-up; "
        "build/compile, loop start-up and input creation are not timed"
    )
    loops = ", ".join(
        f"{e.name}={e.event_loop}" for e in engines if e.unavailable is None
    )
    if loops:
        out.append(f"event loops: {loops}")

    out.append("")
    out.append("Per-unit cost, µs (median whole-run time / units)")
    t = Table(["workload", "unit", "size", *names], left=2)
    for wl in workloads:
        t.add(
            wl.label,
            f"µs/{wl.unit}",
            str(wl.size),
            *(_cell(results[n, wl.kind], _per_unit) for n in names),
        )
    out.append(t.render())

    out.append("")
    out.append("Whole run, ms: median [min .. max]")
    t = Table(["workload", *names])
    for wl in workloads:
        t.add(wl.label, *(_cell(results[n, wl.kind], _whole_run) for n in names))
    out.append(t.render())

    weave = by_name.get("weavegraph")
    raw = by_name.get("raw trio")
    peers = [e.name for e in engines if e.name in PEERS]
    ratio_headers: list[str] = []
    if weave and raw:
        ratio_headers.append("weavegraph / raw trio")
    if weave:
        ratio_headers += [f"{p} / weavegraph" for p in peers]
    if ratio_headers:
        out.append("")
        out.append("Ratios of per-unit cost (peer / weavegraph > 1: weavegraph faster)")
        t = Table(["workload", *ratio_headers])
        for wl in workloads:
            cells: list[str] = []
            wo = results["weavegraph", wl.kind]
            if raw:
                cells.append(_ratio(wo, results["raw trio", wl.kind]))
            cells += [_ratio(results[p, wl.kind], wo) for p in peers]
            t.add(wl.label, *cells)
        out.append(t.render())

    floor_notes: list[str] = []
    if weave:
        out.append("")
        title = "Targets for weavegraph"
        if quick:
            title += " (quick sizes: indicative only)"
        out.append(title)
        headers = ["workload", "target", "weavegraph", "verdict"]
        if raw:
            headers.append("raw trio")
        t = Table(headers, left=2)
        for wl in workloads:
            wo = results["weavegraph", wl.kind]
            target = f"<= {wl.target_us:g} µs/{wl.unit}"
            if isinstance(wo, Measured):
                verdict = "PASS" if wo.per_unit_us <= wl.target_us else "MISS"
                cells = [wl.label, target, fmt_us(wo.per_unit_us), verdict]
            else:
                cells = [wl.label, target, _cell(wo, str), "-"]
            if raw:
                floor = results["raw trio", wl.kind]
                cells.append(_cell(floor, _per_unit))
                if isinstance(floor, Measured) and floor.per_unit_us > wl.target_us:
                    floor_notes.append(
                        f"{wl.label}: the raw trio baseline alone takes "
                        f"{fmt_us(floor.per_unit_us)} µs/{wl.unit} on this machine, "
                        f"above the {wl.target_us:g} µs target"
                    )
                if (
                    isinstance(floor, Measured)
                    and isinstance(wo, Measured)
                    and wo.per_unit_us < floor.per_unit_us
                ):
                    floor_notes.append(
                        f"{wl.label}: weavegraph is faster than the raw trio baseline"
                        + (
                            ", which starts one nursery task per branch"
                            if wl.kind == "fanout"
                            else ""
                        )
                    )
            t.add(*cells)
        out.append(t.render())

    notes: list[str] = [*floor_notes]
    for e in engines:
        notes += e.notes
    for (name, kind), outcome in results.items():
        if isinstance(outcome, Failed):
            notes.append(f"{name}/{kind}: ERROR {outcome.error}")
        elif isinstance(outcome, Unavailable) and len(outcome.reason) > 16:
            notes.append(f"{name}: {outcome.reason}")
    if notes:
        out.append("")
        out.append("Notes")
        out += [f"  - {n}" for n in dict.fromkeys(notes)]
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def make_engines(selected: Sequence[str]) -> list[Engine]:
    weave = WeavegraphEngine()
    # Loaded first even when not selected: raw trio reuses its NodePartial/END.
    weave.unavailable = weave.load()
    all_engines: dict[str, Engine] = {
        "weavegraph": weave,
        "raw-trio": RawTrioEngine(weave),
        "langgraph": LangGraphEngine(),
        "pydantic-graph": PydanticGraphEngine(),
    }
    engines = [all_engines[key] for key in ENGINE_KEYS if key in selected]
    for engine in engines:
        if engine is not weave:
            engine.unavailable = engine.load()
    return engines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-step engine overhead: weavegraph vs raw trio and peers."
    )
    add_run_options(
        parser,
        unit="measurement",
        quick_help=f"small sizes {QUICK_SIZES} instead of {FULL_SIZES} (a smoke test)",
    )
    parser.add_argument(
        "--engines",
        default=",".join(ENGINE_KEYS),
        help=f"comma-separated subset of {','.join(ENGINE_KEYS)} (default: all)",
    )
    args = parser.parse_args(argv)
    check_run_options(parser, args)
    selected = pick_subset(parser, "--engines", args.engines, ENGINE_KEYS)
    args.engines = selected
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = make_workloads(args.quick)
    engines = make_engines(args.engines)

    results: Results = {}
    for wl in workloads:
        for engine in engines:
            label = f"  {wl.label:<8} {engine.name:<15}"
            print(label, end="", file=sys.stderr, flush=True)
            outcome = engine.measure(wl, args.runs, args.warmup)
            results[engine.name, wl.kind] = outcome
            status = (
                f"{fmt_us(outcome.per_unit_us)} µs/{wl.unit}"
                if isinstance(outcome, Measured)
                else _cell(outcome, str)
            )
            print(f" {status}", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    print(
        render_report(
            engines,
            workloads,
            results,
            runs=args.runs,
            warmup=args.warmup,
            quick=args.quick,
        )
    )
    weave_failed = any(
        isinstance(outcome, Failed)
        for (name, _), outcome in results.items()
        if name == "weavegraph"
    )
    return 1 if weave_failed else 0


if __name__ == "__main__":
    sys.exit(main())
