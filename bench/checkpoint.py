"""Checkpointing every step: weavegraph's stores next to LangGraph's SqliteSaver.

Time: a chain of N nodes, each appending one assistant message to a history of 10,
a checkpoint after every step; per step, against the same framework without a
store. Each run gets a fresh SQLite file (PostgreSQL: a fresh session), opened
before timing; timed is the invoke call, which for weavegraph includes storing
the last checkpoint. LangGraph: ``StateGraph(MessagesState)``, sync nodes and
``invoke`` on ``SqliteSaver``, with SQLite's default ``synchronous=FULL`` and with
``NORMAL`` (what weavegraph's store uses).

Bytes: what steps 1..N add to a SQLite file (every stored value, whatever the
schema), per step: the whole run minus a store holding only the state before the
first node. Resume: ``open_runner`` + ``create_session`` of a stored session of
S steps (its state has a constant size) until its state is loaded.

PostgreSQL: the server named by ``WEAVEGRAPH_TEST_POSTGRES_DSN``, else a throwaway
cluster from tests/pgcluster.py (``fsync=off``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from _common import Case, expect, header, measure, ms, options, peer, ratio, table, us

import weavegraph as wg

ROOT = Path(__file__).resolve().parent.parent
DSN_VARIABLE = "WEAVEGRAPH_TEST_POSTGRES_DSN"
HISTORY = 10


def history_text(i: int) -> str:
    return f"history message {i:05d}: the quick brown fox jumps over".ljust(60, ".")


class Scratch:
    """Fresh SQLite file names in a temporary folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="weavegraph-bench-"))
        self._count = itertools.count()

    def path(self) -> Path:
        return self.root / f"{next(self._count)}.sqlite"


def stored_bytes(path: Path) -> int:
    """Every value stored in a SQLite file: text and blob lengths, 8 per number."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master"
                " WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        total = 0
        for name in tables:
            for row in conn.execute(f'SELECT * FROM "{name}"'):
                for value in row:
                    if isinstance(value, str):
                        total += len(value.encode())
                    elif isinstance(value, bytes):
                        total += len(value)
                    elif value is not None:
                        total += 8
        return total
    finally:
        conn.close()


class Postgres:
    """A DSN for a fresh schema, on the server of the tests or a throwaway one."""

    def __init__(self, quick: bool) -> None:
        self.cluster: Any = None
        self.schema = f"wgbench_{os.getpid()}"
        self.dsn: str | None = None
        server = os.environ.get(DSN_VARIABLE)
        try:
            import psycopg

            if not server:
                sys.path.insert(0, str(ROOT / "tests"))
                from pgcluster import Cluster

                self.cluster = Cluster()
                server = self.cluster.start()
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {self.schema}")
        except Exception as exc:
            self.stop()
            if quick:
                raise
            print(f"skipped: PostgreSQL ({type(exc).__name__}: {exc})".splitlines()[0])
            return
        self.server = server
        separator = "&" if "?" in server else "?"
        self.dsn = f"{server}{separator}options=-csearch_path%3D{self.schema}"

    def stop(self) -> None:
        try:
            if self.dsn is not None:
                import psycopg

                self.dsn = None
                with psycopg.connect(self.server, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {self.schema} CASCADE")
        finally:
            if self.cluster is not None:
                self.cluster, cluster = None, self.cluster
                cluster.stop()


# ------------------------------------------------------------------ weavegraph


def wg_chain(chain: int) -> wg.App:
    reply = wg.Message.assistant("x")

    async def node(snapshot: Any, ctx: Any) -> wg.NodePartial:
        return wg.NodePartial(messages=[reply])

    b = wg.GraphBuilder()
    names = [f"n{i}" for i in range(chain)]
    for name in names:
        b.add_node(name, node)
    for src, dst in itertools.pairwise([wg.START, *names, wg.END]):
        b.add_edge(src, dst)
    return b.compile(wg.RuntimeConfig(max_steps=chain + 10))


def wg_history(history: int) -> wg.VersionedState:
    return wg.VersionedState.with_messages(
        wg.Message.user(history_text(i)) for i in range(history)
    )


def wg_timing_case(name: str, chain: int, open_store: Any) -> Case:
    """``open_store()``: an async context manager of a store, or None for none."""
    app = wg_chain(chain)

    async def run(watch: Any) -> tuple[int, Any]:
        session = f"s-{uuid.uuid4().hex}"
        state = wg_history(HISTORY)
        if open_store is None:
            config = wg.RuntimeConfig(max_steps=chain + 10)
            with watch:
                final = await app.invoke(state, config=config)
            return len(final.messages), None
        async with open_store() as store:
            config = wg.RuntimeConfig(
                checkpointer=store, session_id=session, max_steps=chain + 10
            )
            with watch:
                final = await app.invoke(state, config=config)
            latest = await store.load_latest(session)
        return len(final.messages), (latest.step, len(latest.state.messages))

    def check(result: tuple[int, Any]) -> None:
        count, stored = result
        expected = HISTORY + chain
        expect(count == expected, f"{count} messages at the end, expected {expected}")
        if open_store is not None:
            expect(stored == (chain, expected), f"stored (step, messages) {stored}")

    return Case(name, run, check, chain)


async def wg_bytes(scratch: Scratch, chain: int, history: int) -> float:
    app = wg_chain(chain)
    before, after = scratch.path(), scratch.path()
    async with (
        wg.SQLiteCheckpointer(before) as store,
        wg.open_runner(app, checkpointer=store) as runner,
    ):
        await runner.create_session("s", wg_history(history))
    async with wg.SQLiteCheckpointer(after) as store:
        config = wg.RuntimeConfig(
            checkpointer=store, session_id="s", max_steps=chain + 10
        )
        final = await app.invoke(wg_history(history), config=config)
    expect(len(final.messages) == history + chain, "wrong final state")
    return (stored_bytes(after) - stored_bytes(before)) / chain


def wg_loop(steps: int) -> wg.App:
    async def tick(snapshot: Any, ctx: Any) -> wg.NodePartial:
        return wg.NodePartial(extra={"count": snapshot.extra.get("count", 0) + 1})

    def route(snapshot: Any) -> str:
        return "tick" if snapshot.extra.get("count", 0) < steps else wg.END

    b = wg.GraphBuilder().add_node("tick", tick).add_edge(wg.START, "tick")
    return b.add_conditional_edge("tick", route).compile(
        wg.RuntimeConfig(max_steps=steps + 10)
    )


async def resume_case(backend: str, steps: int, open_store: Any) -> Case:
    """Store a session of ``steps`` steps (untimed); the case resumes it."""
    app, session = wg_loop(steps), f"resume-{steps}"
    async with open_store() as store:
        config = wg.RuntimeConfig(
            checkpointer=store, session_id=session, max_steps=steps + 10
        )
        final = await app.invoke(wg.VersionedState(), config=config)
    expect(final.extra["count"] == steps, f"the loop counted to {final.extra}")

    async def run(watch: Any) -> tuple[Any, Any]:
        async with open_store() as store:
            watch.start()
            async with wg.open_runner(app, checkpointer=store) as runner:
                init = await runner.create_session(session, wg.VersionedState())
                watch.stop()
                return init, runner.get_session(session).state.extra.get("count")

    def check(result: tuple[Any, Any]) -> None:
        init, count = result
        expect(init.resumed and init.step == steps, f"resumed as {init!r}")
        expect(count == steps, f"the resumed state counted to {count}, not {steps}")

    return Case(f"{backend}/{steps}", run, check)


# ------------------------------------------------------------------- LangGraph


class LangGraph:
    def __init__(self, lg: Any, messages: Any, saver: Any) -> None:
        self.lg, self.messages, self.saver = lg, messages, saver

    def graph(self, chain: int, saver: Any = None, **compile_options: Any) -> Any:
        ai = self.messages.AIMessage

        def node(state: Any) -> dict[str, Any]:
            return {"messages": [ai("x")]}

        g = self.lg.StateGraph(self.lg.MessagesState)
        names = [f"n{i}" for i in range(chain)]
        for name in names:
            g.add_node(name, node)
        for src, dst in itertools.pairwise([self.lg.START, *names, self.lg.END]):
            g.add_edge(src, dst)
        return g.compile(checkpointer=saver, **compile_options)

    def state(self, history: int) -> dict[str, Any]:
        human = self.messages.HumanMessage
        return {"messages": [human(history_text(i)) for i in range(history)]}

    def open_saver(self, path: Path, synchronous: str | None) -> tuple[Any, Any]:
        conn = sqlite3.connect(path, check_same_thread=False)
        if synchronous is not None:
            conn.execute(f"PRAGMA synchronous={synchronous}")
        saver = self.saver.SqliteSaver(conn)
        saver.setup()
        return saver, conn

    def timing_case(
        self,
        name: str,
        chain: int,
        scratch: Scratch | None,
        synchronous: str | None = None,
    ) -> Case:
        config = {"configurable": {"thread_id": "s"}, "recursion_limit": chain + 10}
        bare = self.graph(chain)

        async def run(watch: Any) -> tuple[int, int | None]:
            state = self.state(HISTORY)
            if scratch is None:
                with watch:
                    out = await bare.ainvoke(state, config)
                return len(out["messages"]), None
            saver, conn = self.open_saver(scratch.path(), synchronous)
            try:
                graph = self.graph(chain, saver)
                with watch:
                    out = graph.invoke(state, config)
                stored = len(graph.get_state(config).values["messages"])
            finally:
                conn.close()
            return len(out["messages"]), stored

        def check(result: tuple[int, int | None]) -> None:
            expected = HISTORY + chain
            expect(result[0] == expected, f"{result[0]} messages, not {expected}")
            expect(result[1] in (None, expected), f"{result[1]} messages stored")

        return Case(name, run, check, chain, loop="asyncio")

    def bytes_per_step(self, scratch: Scratch, chain: int, history: int) -> float:
        config = {"configurable": {"thread_id": "s"}, "recursion_limit": chain + 10}
        paths = scratch.path(), scratch.path()
        outputs = []
        for path, stop in zip(paths, (["n0"], None), strict=True):
            saver, conn = self.open_saver(path, None)
            try:
                graph = self.graph(chain, saver, interrupt_before=stop)
                outputs.append(graph.invoke(self.state(history), config))
            finally:
                conn.close()
        expect(len(outputs[1]["messages"]) == history + chain, "wrong final state")
        return (stored_bytes(paths[1]) - stored_bytes(paths[0])) / chain


# ------------------------------------------------------------------------ main


def sqlite_opener(scratch: Scratch, path: Path | None = None) -> Callable[[], Any]:
    return lambda: wg.SQLiteCheckpointer(path or scratch.path())


async def main_async(args: Any, scratch: Scratch, postgres: Postgres) -> None:
    chain, small_chain = args.chains
    lg_mods = [
        peer(m, args.quick)
        for m in (
            "langgraph.graph",
            "langchain_core.messages",
            "langgraph.checkpoint.sqlite",
        )
    ]
    lang = LangGraph(*lg_mods) if all(lg_mods) else None
    pg_opener = None
    if postgres.dsn is not None:
        dsn = postgres.dsn
        pg_opener = lambda: wg.PostgresCheckpointer(dsn)  # noqa: E731

    cases = [wg_timing_case("weavegraph, no store", chain, None)]
    cases.append(wg_timing_case("weavegraph + SQLite", chain, sqlite_opener(scratch)))
    if pg_opener is not None:
        cases.append(wg_timing_case("weavegraph + PostgreSQL", chain, pg_opener))
    if lang is not None:
        cases += [
            lang.timing_case("LangGraph, no store", chain, None),
            lang.timing_case("LangGraph + SqliteSaver", chain, scratch),
            lang.timing_case(
                "LangGraph + SqliteSaver, NORMAL", chain, scratch, "NORMAL"
            ),
        ]
    found = await measure(cases, args.runs)
    wg_sqlite = found["weavegraph + SQLite"]

    def overhead(name: str) -> str:
        if "+" not in name:
            return "-"
        bare = "weavegraph" if name.startswith("weavegraph") else "LangGraph"
        return us(found[name] - found[f"{bare}, no store"])

    table(
        f"Chain of {chain}, a checkpoint per step: µs per step",
        ["variant", "µs/step", "store µs/step", "this / weavegraph + SQLite"],
        [
            [
                c.name,
                us(found[c.name]),
                overhead(c.name),
                ratio(found[c.name], wg_sqlite),
            ]
            for c in cases
        ],
    )

    grid = [
        (chain, args.histories[0]),
        (chain, args.histories[1]),
        (small_chain, args.histories[0]),
    ]
    repeats = 1 if args.quick else 3
    sizes = {
        "weavegraph SQLite": [
            statistics.median([await wg_bytes(scratch, c, h) for _ in range(repeats)])
            for c, h in grid
        ]
    }
    if lang is not None:
        sizes["LangGraph SqliteSaver"] = [
            statistics.median(
                lang.bytes_per_step(scratch, c, h) for _ in range(repeats)
            )
            for c, h in grid
        ]
    h_small, h_big = args.histories
    table(
        "Bytes stored per step (1.00x: independent of history / graph size)",
        [
            "store",
            *(f"chain {c}, history {h}" for c, h in grid),
            f"history {h_big} / {h_small}",
            f"chain {chain} / {small_chain}",
        ],
        [
            [
                name,
                *(f"{v:,.0f}" for v in values),
                ratio(values[1], values[0]),
                ratio(values[0], values[2]),
            ]
            for name, values in sizes.items()
        ],
    )

    backends = {"SQLite": sqlite_opener(scratch, scratch.path())}
    if pg_opener is not None:
        backends["PostgreSQL"] = pg_opener
    resume = [
        await resume_case(backend, steps, opener)
        for backend, opener in backends.items()
        for steps in args.resume
    ]
    found = await measure(resume, args.runs)
    first, last = args.resume[0], args.resume[-1]
    table(
        "Resume a stored session (open_runner + create_session), ms",
        ["store", *(f"{s:,} steps" for s in args.resume), f"{last:,} / {first:,}"],
        [
            [
                backend,
                *(ms(found[f"{backend}/{s}"]) for s in args.resume),
                ratio(found[f"{backend}/{last}"], found[f"{backend}/{first}"]),
            ]
            for backend in backends
        ],
    )


def main() -> None:
    args = options(
        __doc__.splitlines()[0],
        chains=((100, 10), (10, 5)),
        histories=((10, 1000), (10, 100)),
        resume=((10, 1000, 10_000), (10, 50, 200)),
    )
    header(
        "bench/checkpoint.py",
        args,
        ["weavegraph", "langgraph", "langgraph-checkpoint-sqlite"],
    )
    scratch = Scratch()
    postgres = Postgres(args.quick)
    try:
        trio.run(main_async, args, scratch, postgres)
    finally:
        postgres.stop()
        shutil.rmtree(scratch.root, ignore_errors=True)


if __name__ == "__main__":
    main()
