"""Cost of checkpointing every superstep: weavegraph's stores next to LangGraph's.

What is measured
----------------
1. **Time.** A chain START -> n0 -> n1 -> ... -> n99 -> END in which every node
   appends one assistant message (``NodePartial(messages=[Message.assistant("x")])``
   in weavegraph, ``{"messages": [AIMessage("x")]}`` in LangGraph), started from
   a history of 10 messages of ~60 characters, with a checkpoint saved after
   every step:

   * **weavegraph, no checkpointer** -- ``app.invoke`` without a store: the
     baseline the checkpointing overhead is measured against.
   * **weavegraph + SQLiteCheckpointer** -- ``app.invoke`` with
     ``RuntimeConfig(checkpointer=store, session_id=...)``, a fresh temporary file
     per run.
   * **weavegraph + PostgresCheckpointer** -- the same against a real PostgreSQL
     server, a fresh schema per run. The server is the one named by
     ``WEAVEGRAPH_BENCH_POSTGRES_DSN`` when that is set, else a throwaway cluster
     started with ``tests/pgcluster.py`` (Debian's ``postgresql`` package; it runs
     with ``fsync=off``). If neither works, it is reported as unavailable.
   * **langgraph, no checkpointer** -- ``StateGraph(MessagesState)`` +
     ``ainvoke``, for context. (``--lg-state dicts`` uses a plain list of
     role/content dicts merged with ``operator.add`` instead of langchain
     messages, for every LangGraph variant.)
   * **langgraph + SqliteSaver** -- synchronous nodes, ``graph.invoke`` with a
     ``thread_id`` config, a fresh file per run; once as configured by default
     (SQLite's ``synchronous=FULL``) and once with ``PRAGMA synchronous=NORMAL``
     on its connection, the setting weavegraph's store uses.
   * **langgraph + AsyncSqliteSaver** -- async nodes, ``ainvoke`` under
     ``asyncio.run``, a fresh file per run.

   The figure is µs per step: the median whole-run wall time divided by the
   number of nodes. The timed region is the ``invoke``/``ainvoke`` call alone,
   which for weavegraph includes waiting until every checkpoint is stored (the
   runner writes them behind the run, in batches, and flushes before returning)
   and for LangGraph includes its pending background writes. Opening the store
   (and creating its schema), compiling the graph, building the input state and
   closing the store are not timed: every run gets its own store, opened before
   the timing loop starts and closed after it ends.

2. **Bytes.** Untimed runs on fresh SQLite files, for initial histories of 10
   and 1000 messages and for chains of 10 and 100 nodes:

   * weavegraph: the summed length of the seven JSON columns of the ``steps``
     rows of steps 1..N, divided by N (step 0 holds the initial history and is
     shown on its own), and the file growth per step over a store that holds
     only step 0. The mean distance from a row to the step it is stored
     relative to (``step - base_step``) is shown too: 1 means every row is a
     delta from the step just before it.
   * LangGraph (``SqliteSaver``): the summed length of the ``checkpoint`` and
     ``metadata`` blobs of the ``checkpoints`` table plus the ``value`` blobs of
     the ``writes`` table, divided by the number of checkpoints, and the file
     growth per checkpoint over an empty store.

   Each figure is the median of three runs.

Before timing, every run is checked once: the final state holds the initial
history plus one message per node, each node body ran once, and for weavegraph's
stores the stored latest checkpoint (``load_latest``) is the last step with the
same number of messages.

Running
-------
::

    .venv/bin/python bench/checkpoint.py            # full sizes, median of 5 runs
    .venv/bin/python bench/checkpoint.py --runs 11  # more runs
    .venv/bin/python bench/checkpoint.py --quick    # small sizes, a few seconds
    .venv/bin/python bench/checkpoint.py --lg-state dicts  # LangGraph on plain dicts
    .venv/bin/python bench/checkpoint.py --variants wg-none,wg-sqlite

LangGraph's savers come with the ``bench`` extra (``pip install -e '.[bench]'``:
``langgraph`` and ``langgraph-checkpoint-sqlite``); a missing one is reported as
"not installed". The exit status is 1 only if weavegraph itself raised or
produced a wrong result; missed targets are reported but do not change it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import operator
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

# ``_common`` sits next to this file; the checkout's own weavegraph is measured
# even when it is not installed. Both hold for ``python bench/checkpoint.py`` and
# ``python -m bench.checkpoint``.
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
    environment_line,
    find_module,
    fmt_ms,
    fmt_ratio,
    fmt_us,
    pick_subset,
    run_on,
    time_runner,
)

# --------------------------------------------------------------------------- #
# Sizes and targets
# --------------------------------------------------------------------------- #

SESSION = "bench"
DSN_ENV = "WEAVEGRAPH_BENCH_POSTGRES_DSN"


@dataclass(frozen=True)
class Sizes:
    chain: int
    """Nodes of the timed chain (one step each)."""
    small_chain: int
    """The shorter chain of the bytes-vs-graph-size comparison."""
    history: int
    """Initial messages of the timed runs."""
    histories: tuple[int, int]
    """Initial messages of the bytes-vs-history comparison (small, large)."""


FULL = Sizes(chain=100, small_chain=10, history=10, histories=(10, 1000))
QUICK = Sizes(chain=20, small_chain=5, history=10, histories=(10, 100))

TARGET_SQLITE_US = 120.0
TARGET_SPEEDUP = 4.0
STORAGE_REPEATS = 3
INDEPENDENCE_TOLERANCE = 0.10
"""Bytes/step counts as independent of history or graph size within ±10 %."""

REFERENCE = (
    "LangGraph reference measured earlier on this project: 511 µs/step with "
    "SqliteSaver (sync), 950 µs/step with AsyncSqliteSaver, 7.3 KB per checkpoint"
)


def history_text(i: int) -> str:
    """The ``i``-th initial message: 60 characters."""
    return f"history message {i:05d}: the quick brown fox jumps over".ljust(60, ".")


def steps_expected(chain: int) -> int:
    """Supersteps a chain of ``chain`` nodes runs (one node each)."""
    return chain


class CheckError(RuntimeError):
    """A run produced the wrong result."""


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf exception inside any exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _files_size(path: Path) -> int:
    """Bytes of a SQLite database including any WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            total += candidate.stat().st_size
    return total


def _filesystem(path: str) -> str:
    """The filesystem type ``path`` lives on (from /proc/mounts), or ``?``."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1]
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def _load() -> str:
    """The 1/5/15-minute load averages (other processes skew the timings)."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


class Scratch:
    """A temporary folder handing out fresh database file names."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="weavegraph-bench-ckpt-"))
        self._count = itertools.count()

    def path(self, stem: str) -> Path:
        return self.root / f"{stem}-{next(self._count)}.sqlite"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- #
# PostgreSQL
# --------------------------------------------------------------------------- #


class Postgres:
    """Where the PostgreSQL variant runs: a DSN from the environment or a cluster."""

    def __init__(self) -> None:
        self.dsn: str | None = None
        self.origin = ""
        self.problem: str | None = None
        self.version = "?"
        self._cluster: Any = None
        self._schemas = (f"wgbench_{os.getpid()}_{i}" for i in itertools.count())
        self._created: list[str] = []

    def start(self) -> None:
        dsn = os.environ.get(DSN_ENV)
        if dsn:
            self.dsn, self.origin = dsn, f"server from ${DSN_ENV}"
        else:
            tests = _ROOT / "tests"
            if str(tests) not in sys.path:
                sys.path.insert(0, str(tests))
            try:
                from pgcluster import Cluster  # type: ignore[import-not-found]

                self._cluster = Cluster()
                self.dsn = self._cluster.start()
            except Exception as exc:
                self.problem = _first_line(_describe(exc))
                self.stop()
                return
            self.origin = (
                "throwaway local cluster (tests/pgcluster.py: fsync=off, "
                "synchronous_commit=off, full_page_writes=off)"
            )
        try:
            with self._connect() as conn:
                row = conn.execute("SHOW server_version").fetchone()
                self.version = str(row[0]).split()[0] if row else "?"
        except Exception as exc:
            self.problem = _first_line(_describe(exc))
            self.stop()

    def _connect(self) -> Any:
        import psycopg

        assert self.dsn is not None
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def fresh_schema_dsn(self) -> str:
        """Create an empty schema; a DSN whose ``search_path`` is that schema."""
        assert self.dsn is not None
        schema = next(self._schemas)
        with self._connect() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
        self._created.append(schema)
        if self.dsn.startswith(("postgres://", "postgresql://")):
            sep = "&" if "?" in self.dsn else "?"
            return f"{self.dsn}{sep}options=-csearch_path%3D{schema}"
        return f"{self.dsn} options='-csearch_path={schema}'"

    def drop_schemas(self) -> None:
        if not self._created or self.dsn is None:
            return
        try:
            with self._connect() as conn:
                for schema in self._created:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except Exception as exc:
            print(f"  (could not drop bench schemas: {exc})", file=sys.stderr)
        self._created.clear()

    def stop(self) -> None:
        if self._cluster is not None:
            try:
                self._cluster.stop()
            finally:
                self._cluster = None

    @property
    def description(self) -> str:
        if self.problem is not None:
            return f"unavailable ({self.problem})"
        if self.dsn is None:
            return "not used"
        return f"PostgreSQL {self.version}, {self.origin}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else text
    return first if len(first) <= 160 else first[:157] + "..."


# --------------------------------------------------------------------------- #
# Targets: one compiled graph bound to one fresh store
# --------------------------------------------------------------------------- #


class Target:
    """A graph bound to its own fresh store, ready for exactly one run."""

    async def run(self, state: Any) -> int:
        """Run the chain; return how many messages the final state holds."""
        raise NotImplementedError

    async def stored_latest(self) -> tuple[int, int] | None:
        """(step, message count) of the stored latest checkpoint, if checkable."""
        return None

    async def close(self) -> None:
        return None


@dataclass
class Storage:
    """Bytes one run left in its store."""

    per_step: float
    """weavegraph: JSON bytes per step (steps 1..N); LangGraph: per checkpoint."""
    file_per_step: float
    largest: int
    """Largest single row / checkpoint, bytes."""
    first: int
    """weavegraph: the step-0 row; LangGraph: number of checkpoints."""
    base_distance: float | None = None
    """weavegraph: mean ``step - base_step`` over steps 1..N."""


StorageOutcome = Storage | Unavailable | Failed


class Variant:
    """One row of the timing report."""

    key = ""
    label = ""
    family: Literal["weavegraph", "langgraph"] = "weavegraph"
    backend: Backend = "trio"
    measures_storage = False

    def __init__(self) -> None:
        self.unavailable: Unavailable | None = None

    def load(self) -> Unavailable | None:
        raise NotImplementedError

    def make_state(self, history: int) -> Any:
        raise NotImplementedError

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        raise NotImplementedError

    async def storage_once(self, scratch: Scratch, chain: int, history: int) -> Storage:
        raise NotImplementedError

    # -------------------------------------------------------------- timing

    async def _check(self, chain: int, history: int) -> None:
        probe = Probe()
        target = await self.open_target(chain, probe)
        try:
            count = await target.run(self.make_state(history))
            stored = await target.stored_latest()
        finally:
            await target.close()
        if probe.calls != chain:
            raise CheckError(f"node bodies ran {probe.calls} times, expected {chain}")
        if count != history + chain:
            raise CheckError(
                f"final state holds {count} messages, expected {history + chain}"
            )
        if stored is not None and stored != (steps_expected(chain), history + chain):
            raise CheckError(
                f"stored latest checkpoint is (step, messages) = {stored}, expected"
                f" {(steps_expected(chain), history + chain)}"
            )

    async def _timed(
        self, chain: int, history: int, runs: int, warmup: int
    ) -> list[float]:
        await self._check(chain, history)
        targets: list[Target] = []
        try:
            # One at a time, so that a failure still closes the ones opened.
            for _ in range(runs + warmup):
                targets.append(await self.open_target(chain, None))  # noqa: PERF401
            pending = iter(targets)

            def prepare() -> tuple[Target, Any]:
                return next(pending), self.make_state(history)

            async def run(payload: tuple[Target, Any]) -> int:
                target, state = payload
                return await target.run(state)

            return await time_runner(
                Runner(prepare=prepare, run=run), runs=runs, warmup=warmup
            )
        finally:
            for target in targets:
                await target.close()

    def measure(self, chain: int, history: int, runs: int, warmup: int) -> Outcome:
        if self.unavailable is not None:
            return self.unavailable
        try:
            samples: list[float] = run_on(
                self.backend, lambda: self._timed(chain, history, runs, warmup)
            )
        except Exception as exc:
            print(f"\n[{self.label}] failed:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
            return Failed(_describe(exc))
        return Measured(samples, chain)

    # ------------------------------------------------------------- storage

    def storage(self, scratch: Scratch, chain: int, history: int) -> StorageOutcome:
        if self.unavailable is not None:
            return self.unavailable

        async def repeated() -> list[Storage]:
            return [
                await self.storage_once(scratch, chain, history)
                for _ in range(STORAGE_REPEATS)
            ]

        try:
            found: list[Storage] = run_on(self.backend, repeated)
        except Exception as exc:
            print(f"\n[{self.label} bytes] failed:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
            return Failed(_describe(exc))
        distances = [s.base_distance for s in found if s.base_distance is not None]
        return Storage(
            per_step=statistics.median(s.per_step for s in found),
            file_per_step=statistics.median(s.file_per_step for s in found),
            largest=int(statistics.median(s.largest for s in found)),
            first=int(statistics.median(s.first for s in found)),
            base_distance=statistics.median(distances) if distances else None,
        )


# ---- weavegraph ------------------------------------------------------------ #


class _WeaveTarget(Target):
    def __init__(self, app: Any, config: Any, store: Any = None) -> None:
        self.app = app
        self.config = config
        self.store = store
        self.after_close: Callable[[], None] | None = None

    async def run(self, state: Any) -> int:
        final = await self.app.invoke(state, config=self.config)
        return len(final.messages)

    async def stored_latest(self) -> tuple[int, int] | None:
        if self.store is None:
            return None
        latest = await self.store.load_latest(SESSION)
        if latest is None:
            return (-1, 0)
        return int(latest.step), len(latest.state.messages)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.aclose()
        if self.after_close is not None:
            self.after_close()


class WeavegraphVariant(Variant):
    family: Literal["weavegraph", "langgraph"] = "weavegraph"
    store_kind = "none"
    REQUIRED = (
        "GraphBuilder",
        "START",
        "END",
        "NodePartial",
        "Message",
        "VersionedState",
        "RuntimeConfig",
    )

    def __init__(self, scratch: Scratch) -> None:
        super().__init__()
        self.scratch = scratch
        self.wg: Any = None
        self._apps: dict[tuple[int, bool], Any] = {}

    def load(self) -> Unavailable | None:
        try:
            wg = importlib.import_module("weavegraph")
        except Exception as exc:
            return Unavailable(f"import failed ({_describe(exc)})")
        missing = [n for n in self.REQUIRED if not hasattr(wg, n)]
        if missing:
            return Unavailable(f"weavegraph lacks {', '.join(missing)}")
        self.wg = wg
        return None

    def make_state(self, history: int) -> Any:
        msg = self.wg.Message
        return self.wg.VersionedState.with_messages(
            [msg.user(history_text(i)) for i in range(history)]
        )

    def app(self, chain: int, probe: Probe | None) -> Any:
        """The compiled chain (cached unless node calls are being counted)."""
        if probe is None and (chain, False) in self._apps:
            return self._apps[chain, False]
        wg = self.wg
        reply = wg.Message.assistant("x")
        hit = probe.hit if probe is not None else None

        if hit is None:

            async def node(snapshot: Any, ctx: Any) -> Any:
                return wg.NodePartial(messages=[reply])

        else:

            async def node(snapshot: Any, ctx: Any) -> Any:
                hit()
                return wg.NodePartial(messages=[reply])

        b = wg.GraphBuilder()
        names = [f"n{i}" for i in range(chain)]
        for name in names:
            b.add_node(name, node)
        b.add_edge(wg.START, names[0])
        for src, dst in itertools.pairwise(names):
            b.add_edge(src, dst)
        b.add_edge(names[-1], wg.END)
        app = b.compile(wg.RuntimeConfig(max_steps=max(1000, 4 * chain)))
        if probe is None:
            self._apps[chain, False] = app
        return app

    def config(self, chain: int, store: Any) -> Any:
        return self.wg.RuntimeConfig(
            max_steps=max(1000, 4 * chain), checkpointer=store, session_id=SESSION
        )


class WeaveNoStore(WeavegraphVariant):
    key = "wg-none"
    label = "weavegraph, no checkpointer"

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        return _WeaveTarget(self.app(chain, probe), self.config(chain, None))


class WeaveSQLite(WeavegraphVariant):
    key = "wg-sqlite"
    label = "weavegraph + SQLiteCheckpointer"
    store_kind = "sqlite"
    measures_storage = True

    def load(self) -> Unavailable | None:
        problem = super().load()
        if problem is None and not hasattr(self.wg, "SQLiteCheckpointer"):
            return Unavailable("weavegraph lacks SQLiteCheckpointer")
        return problem

    async def _open_store(self, path: Path) -> Any:
        store = self.wg.SQLiteCheckpointer(path)
        await store.open()
        return store

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        path = self.scratch.path("wg")
        store = await self._open_store(path)
        target = _WeaveTarget(self.app(chain, probe), self.config(chain, store), store)
        target.after_close = lambda: _unlink_db(path)
        return target

    async def storage_once(self, scratch: Scratch, chain: int, history: int) -> Storage:
        wg = self.wg
        app = self.app(chain, None)
        # A store holding only step 0 (the initial history): the file-size floor.
        floor_path = scratch.path("wg-floor")
        store = await self._open_store(floor_path)
        try:
            async with wg.open_runner(app, checkpointer=store) as runner:
                await runner.create_session(SESSION, self.make_state(history))
                await runner.flush()
        finally:
            await store.aclose()
        floor = _files_size(floor_path)
        _unlink_db(floor_path)

        path = scratch.path("wg-bytes")
        store = await self._open_store(path)
        try:
            final = await app.invoke(
                self.make_state(history), config=self.config(chain, store)
            )
        finally:
            await store.aclose()
        if len(final.messages) != history + chain:
            raise CheckError(
                f"final state holds {len(final.messages)} messages,"
                f" expected {history + chain}"
            )
        size = _files_size(path)
        try:
            return _weave_rows(path, chain, size - floor)
        finally:
            _unlink_db(path)


_WEAVE_ROW_BYTES = (
    "length(state_json) + length(seen_json) + length(frontier_json)"
    " + length(joins_json) + length(ran_nodes_json) + length(skipped_nodes_json)"
    " + length(updated_channels_json)"
)


def _weave_rows(path: Path, chain: int, growth: int) -> Storage:
    steps = steps_expected(chain)
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            f"SELECT step, base_step, {_WEAVE_ROW_BYTES} FROM steps"
            " WHERE session_id = ? ORDER BY step",
            (SESSION,),
        ).fetchall()
    finally:
        conn.close()
    stored = [int(r[0]) for r in rows]
    if stored != list(range(steps + 1)):
        raise CheckError(
            f"steps table holds steps {stored[:3]}..{stored[-3:]} ({len(stored)}"
            f" rows), expected 0..{steps}"
        )
    later = rows[1:]
    distances = [r[0] - r[1] if r[1] is not None else r[0] for r in later]
    return Storage(
        per_step=sum(int(r[2]) for r in later) / steps,
        file_per_step=growth / steps,
        largest=max(int(r[2]) for r in later),
        first=int(rows[0][2]),
        base_distance=statistics.mean(distances),
    )


def _unlink_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class WeavePostgres(WeavegraphVariant):
    key = "wg-postgres"
    label = "weavegraph + PostgresCheckpointer"
    store_kind = "postgres"

    def __init__(self, scratch: Scratch, postgres: Postgres) -> None:
        super().__init__(scratch)
        self.postgres = postgres

    def load(self) -> Unavailable | None:
        problem = super().load()
        if problem is not None:
            return problem
        if not hasattr(self.wg, "PostgresCheckpointer"):
            return Unavailable("weavegraph lacks PostgresCheckpointer")
        if importlib.util.find_spec("psycopg") is None:
            return Unavailable("unavailable (psycopg not installed)")
        self.postgres.start()
        if self.postgres.problem is not None:
            return Unavailable(self.postgres.description)
        return None

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        dsn = self.postgres.fresh_schema_dsn()
        store = self.wg.PostgresCheckpointer(dsn)
        await store.open()
        return _WeaveTarget(self.app(chain, probe), self.config(chain, store), store)


# ---- LangGraph ------------------------------------------------------------- #


class _LangTarget(Target):
    def __init__(
        self,
        invoke: Callable[[Any], Awaitable[Any]],
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._invoke = invoke
        self._close = close

    async def run(self, state: Any) -> int:
        out = await self._invoke(state)
        return len(out["messages"])

    async def close(self) -> None:
        if self._close is not None:
            await self._close()


class _DictMessages(TypedDict):
    """LangGraph state for ``--lg-state dicts``: plain role/content dicts."""

    messages: Annotated[list[dict[str, str]], operator.add]


LgState = Literal["messages", "dicts"]


class LangGraphVariant(Variant):
    family: Literal["weavegraph", "langgraph"] = "langgraph"
    backend: Backend = "asyncio"
    sync_nodes = False

    def __init__(self, scratch: Scratch, state_kind: LgState) -> None:
        super().__init__()
        self.scratch = scratch
        self.state_kind = state_kind
        self.lg: Any = None
        self.ai_message: Any = None
        self.human_message: Any = None

    def load(self) -> Unavailable | None:
        found = find_module("langgraph.graph")
        if isinstance(found, Unavailable):
            return found
        self.lg = found
        if self.state_kind == "messages":
            messages = find_module("langchain_core.messages")
            if isinstance(messages, Unavailable):
                return messages
            self.ai_message = messages.AIMessage
            self.human_message = messages.HumanMessage
        return None

    def make_state(self, history: int) -> Any:
        if self.state_kind == "dicts":
            return {
                "messages": [
                    {"role": "user", "content": history_text(i)} for i in range(history)
                ]
            }
        human = self.human_message
        return {"messages": [human(history_text(i)) for i in range(history)]}

    def builder(self, chain: int, probe: Probe | None) -> Any:
        lg = self.lg
        hit = probe.hit if probe is not None else None
        if self.state_kind == "dicts":
            schema: Any = _DictMessages

            def reply() -> Any:
                return {"role": "assistant", "content": "x"}

        else:
            schema = lg.MessagesState
            ai = self.ai_message

            def reply() -> Any:
                return ai("x")

        def node(state: Any) -> dict[str, Any]:
            if hit is not None:
                hit()
            return {"messages": [reply()]}

        async def anode(state: Any) -> dict[str, Any]:
            if hit is not None:
                hit()
            return {"messages": [reply()]}

        g = lg.StateGraph(schema)
        names = [f"n{i}" for i in range(chain)]
        for name in names:
            g.add_node(name, node if self.sync_nodes else anode)
        g.add_edge(lg.START, names[0])
        for src, dst in itertools.pairwise(names):
            g.add_edge(src, dst)
        g.add_edge(names[-1], lg.END)
        return g

    @staticmethod
    def run_config(chain: int) -> dict[str, Any]:
        return {
            "configurable": {"thread_id": SESSION},
            "recursion_limit": max(1000, 4 * chain),
        }


class LangNoStore(LangGraphVariant):
    key = "lg-none"
    label = "langgraph, no checkpointer"

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        graph = self.builder(chain, probe).compile()
        config = {"recursion_limit": max(1000, 4 * chain)}

        async def invoke(state: Any) -> Any:
            return await graph.ainvoke(state, config)

        return _LangTarget(invoke)


class LangSqlite(LangGraphVariant):
    key = "lg-sqlite"
    label = "langgraph + SqliteSaver (invoke)"
    sync_nodes = True
    measures_storage = True

    def __init__(self, scratch: Scratch, state_kind: LgState) -> None:
        super().__init__(scratch, state_kind)
        self.saver_cls: Any = None

    def load(self) -> Unavailable | None:
        problem = super().load()
        if problem is not None:
            return problem
        found = find_module("langgraph.checkpoint.sqlite")
        if isinstance(found, Unavailable):
            return found
        self.saver_cls = found.SqliteSaver
        return None

    synchronous: str | None = None
    """``PRAGMA synchronous`` to set on the saver's connection (``None``: default)."""

    def _open_saver(self, path: Path) -> tuple[Any, sqlite3.Connection]:
        conn = sqlite3.connect(path, check_same_thread=False)
        if self.synchronous is not None:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        saver = self.saver_cls(conn)
        saver.setup()
        return saver, conn

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        path = self.scratch.path("lg")
        saver, conn = self._open_saver(path)
        graph = self.builder(chain, probe).compile(checkpointer=saver)
        config = self.run_config(chain)

        async def invoke(state: Any) -> Any:
            return graph.invoke(state, config)

        async def close() -> None:
            conn.close()
            _unlink_db(path)

        return _LangTarget(invoke, close)

    async def storage_once(self, scratch: Scratch, chain: int, history: int) -> Storage:
        empty_path = scratch.path("lg-empty")
        _, conn = self._open_saver(empty_path)
        conn.close()
        floor = _files_size(empty_path)
        _unlink_db(empty_path)

        path = scratch.path("lg-bytes")
        saver, conn = self._open_saver(path)
        try:
            graph = self.builder(chain, None).compile(checkpointer=saver)
            out = graph.invoke(self.make_state(history), self.run_config(chain))
        finally:
            conn.close()
        if len(out["messages"]) != history + chain:
            raise CheckError(
                f"final state holds {len(out['messages'])} messages,"
                f" expected {history + chain}"
            )
        growth = _files_size(path) - floor
        conn = sqlite3.connect(path)
        try:
            count, blobs, largest = conn.execute(
                "SELECT COUNT(*),"
                " COALESCE(SUM(length(checkpoint) + length(metadata)), 0),"
                " COALESCE(MAX(length(checkpoint) + length(metadata)), 0)"
                " FROM checkpoints WHERE thread_id = ?",
                (SESSION,),
            ).fetchone()
            (writes,) = conn.execute(
                "SELECT COALESCE(SUM(length(value)), 0) FROM writes"
                " WHERE thread_id = ?",
                (SESSION,),
            ).fetchone()
        finally:
            conn.close()
            _unlink_db(path)
        if not count:
            raise CheckError("SqliteSaver stored no checkpoints")
        return Storage(
            per_step=(int(blobs) + int(writes)) / int(count),
            file_per_step=growth / int(count),
            largest=int(largest),
            first=int(count),
        )


class LangSqliteNormal(LangSqlite):
    key = "lg-sqlite-normal"
    label = "langgraph + SqliteSaver (invoke), synchronous=NORMAL"
    measures_storage = False
    synchronous = "NORMAL"


class LangAsyncSqlite(LangGraphVariant):
    key = "lg-async-sqlite"
    label = "langgraph + AsyncSqliteSaver (ainvoke)"

    def __init__(self, scratch: Scratch, state_kind: LgState) -> None:
        super().__init__(scratch, state_kind)
        self.saver_cls: Any = None
        self.aiosqlite: Any = None

    def load(self) -> Unavailable | None:
        problem = super().load()
        if problem is not None:
            return problem
        found = find_module(
            "langgraph.checkpoint.sqlite.aio", also_missing=["aiosqlite"]
        )
        if isinstance(found, Unavailable):
            return found
        driver = find_module("aiosqlite")
        if isinstance(driver, Unavailable):
            return driver
        self.saver_cls = found.AsyncSqliteSaver
        self.aiosqlite = driver
        return None

    async def open_target(self, chain: int, probe: Probe | None) -> Target:
        path = self.scratch.path("lg-async")
        conn = await self.aiosqlite.connect(path)
        saver = self.saver_cls(conn)
        await saver.setup()
        graph = self.builder(chain, probe).compile(checkpointer=saver)
        config = self.run_config(chain)

        async def invoke(state: Any) -> Any:
            return await graph.ainvoke(state, config)

        async def close() -> None:
            await conn.close()
            _unlink_db(path)

        return _LangTarget(invoke, close)


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #

StorageKey = tuple[str, int, int]
"""(variant key, chain length, initial history)."""


@dataclass
class Results:
    timing: dict[str, Outcome]
    storage: dict[StorageKey, StorageOutcome]


def _cell(outcome: Outcome | StorageOutcome, value: Callable[[Any], str]) -> str:
    if isinstance(outcome, Measured | Storage):
        return value(outcome)
    if isinstance(outcome, Unavailable):
        return outcome.reason if len(outcome.reason) <= 16 else "unavailable"
    return "error"


def _ratio(num: Outcome, den: Outcome) -> str:
    if isinstance(num, Measured) and isinstance(den, Measured):
        return fmt_ratio(num.per_unit_us / den.per_unit_us)
    return "-"


def _bytes(value: float) -> str:
    return f"{value:,.0f}"


def _growth(big: StorageOutcome, small: StorageOutcome) -> float | None:
    if isinstance(big, Storage) and isinstance(small, Storage) and small.per_step:
        return big.per_step / small.per_step
    return None


def render_report(
    variants: Sequence[Variant],
    results: Results,
    sizes: Sizes,
    postgres: Postgres,
    scratch: Scratch,
    *,
    runs: int,
    warmup: int,
    quick: bool,
    load_at_start: str,
) -> str:
    out: list[str] = []
    by_key = {v.key: v for v in variants}
    timing = results.timing
    out.append(
        f"weavegraph checkpoint cost: chain of {sizes.chain} nodes, one assistant"
        " message per step, a checkpoint after every step"
    )
    out.append(
        environment_line(
            [
                "trio",
                "weavegraph",
                "orjson",
                "psycopg",
                "langgraph",
                "langgraph-checkpoint",
                "langgraph-checkpoint-sqlite",
                "aiosqlite",
            ]
        )
    )
    out.append(
        f"{'quick' if quick else 'full'} sizes; median of {runs} timed run(s) after"
        f" {warmup} warm-up; initial history {sizes.history} messages; a fresh"
        " store per run, opened before timing; timed: the invoke call until it"
        " returns (weavegraph: final checkpoint flush included)"
    )
    out.append(
        f"SQLite files in {scratch.root.parent} ({_filesystem(str(scratch.root))});"
        f" sqlite {sqlite3.sqlite_version}"
    )
    out.append(f"PostgreSQL: {postgres.description}")
    out.append(f"load average: {load_at_start} at start, {_load()} at the end")

    # ---- timing
    base = {
        "weavegraph": timing.get("wg-none"),
        "langgraph": timing.get("lg-none"),
    }
    out.append("")
    out.append(
        f"Per-step cost, µs (median whole run / {sizes.chain} steps); overhead ="
        " minus the same framework without a checkpointer"
    )
    t = Table(
        ["variant", "loop", "µs/step", "overhead µs/step", "whole run ms [min .. max]"],
        left=2,
    )
    for v in variants:
        o = timing[v.key]
        floor = base[v.family]
        overhead = "-"
        if (
            isinstance(o, Measured)
            and isinstance(floor, Measured)
            and v.key not in {"wg-none", "lg-none"}
        ):
            overhead = fmt_us(o.per_unit_us - floor.per_unit_us)
        whole = _cell(
            o,
            lambda m: (
                f"{fmt_ms(m.median_s * 1e3)} [{fmt_ms(min(m.samples) * 1e3)}"
                f" .. {fmt_ms(max(m.samples) * 1e3)}]"
            ),
        )
        t.add(
            v.label,
            v.backend,
            _cell(o, lambda m: fmt_us(m.per_unit_us)),
            overhead,
            whole,
        )
    out.append(t.render())

    pairs = [
        ("lg-sqlite", "wg-sqlite"),
        ("lg-sqlite-normal", "wg-sqlite"),
        ("lg-async-sqlite", "wg-sqlite"),
        ("lg-sqlite", "wg-postgres"),
        ("lg-async-sqlite", "wg-postgres"),
        ("lg-none", "wg-none"),
    ]
    shown = [(a, b) for a, b in pairs if a in by_key and b in by_key]
    if shown:
        out.append("")
        out.append("Ratios of µs/step (LangGraph / weavegraph; > 1: weavegraph faster)")
        t = Table(["LangGraph", "weavegraph", "ratio"], left=2)
        for a, b in shown:
            t.add(by_key[a].label, by_key[b].label, _ratio(timing[a], timing[b]))
        out.append(t.render())

    # ---- targets
    wg_sqlite = timing.get("wg-sqlite")
    out.append("")
    out.append(
        "Targets for weavegraph" + (" (quick sizes: indicative only)" if quick else "")
    )
    t = Table(["target", "measured", "verdict"], left=1)
    if wg_sqlite is not None:
        if isinstance(wg_sqlite, Measured):
            us = wg_sqlite.per_unit_us
            verdict = "PASS" if us <= TARGET_SQLITE_US else "MISS"
            t.add(
                f"SQLite <= {TARGET_SQLITE_US:g} µs/step",
                f"{fmt_us(us)} µs/step",
                verdict,
            )
        else:
            t.add(f"SQLite <= {TARGET_SQLITE_US:g} µs/step", _cell(wg_sqlite, str), "-")
    peers = [
        ("lg-sqlite", "LangGraph SqliteSaver"),
        ("lg-sqlite-normal", "LangGraph SqliteSaver at synchronous=NORMAL"),
    ]
    for key, name in peers:
        peer = timing.get(key)
        if wg_sqlite is None or peer is None:
            continue
        label = f"SQLite >= {TARGET_SPEEDUP:g}x faster than {name}"
        if isinstance(wg_sqlite, Measured) and isinstance(peer, Measured):
            speed = peer.per_unit_us / wg_sqlite.per_unit_us
            verdict = "PASS" if speed >= TARGET_SPEEDUP else "MISS"
            t.add(label, fmt_ratio(speed), verdict)
        else:
            t.add(label, "-", "-")
    out.append(t.render())
    out.append(f"  ({REFERENCE})")

    # ---- storage
    small_h, large_h = sizes.histories
    big, small = sizes.chain, sizes.small_chain
    grid = [(big, small_h), (big, large_h), (small, small_h)]
    storage = results.storage
    if "wg-sqlite" in by_key:
        out.append("")
        out.append(
            "weavegraph SQLiteCheckpointer, bytes stored per step (steps 1..N;"
            f" median of {STORAGE_REPEATS} untimed runs)"
        )
        t = Table(
            [
                "chain",
                "history",
                "row B/step",
                "file B/step",
                "largest row B",
                "step-0 row B",
                "mean base distance",
            ],
            left=0,
        )
        for chain, history in grid:
            s = storage[("wg-sqlite", chain, history)]
            t.add(
                str(chain),
                str(history),
                _cell(s, lambda x: _bytes(x.per_step)),
                _cell(s, lambda x: _bytes(x.file_per_step)),
                _cell(s, lambda x: _bytes(x.largest)),
                _cell(s, lambda x: _bytes(x.first)),
                _cell(
                    s,
                    lambda x: (
                        "-" if x.base_distance is None else f"{x.base_distance:.1f}"
                    ),
                ),
            )
        out.append(t.render())
        out.append(
            "  row B/step: summed length of the 7 JSON columns; file B/step: file"
            " growth over a store holding only step 0 (whole pages, so coarse for"
            " short chains); base distance: step - base_step (1 = each row is a"
            " delta from the step before)"
        )
    if "lg-sqlite" in by_key:
        out.append("")
        out.append(
            "LangGraph SqliteSaver, bytes stored per checkpoint (median of"
            f" {STORAGE_REPEATS} untimed runs)"
        )
        t = Table(
            [
                "chain",
                "history",
                "blob B/ckpt",
                "file B/ckpt",
                "largest ckpt B",
                "ckpts",
            ],
            left=0,
        )
        for chain, history in grid:
            s = storage[("lg-sqlite", chain, history)]
            t.add(
                str(chain),
                str(history),
                _cell(s, lambda x: _bytes(x.per_step)),
                _cell(s, lambda x: _bytes(x.file_per_step)),
                _cell(s, lambda x: _bytes(x.largest)),
                _cell(s, lambda x: str(x.first)),
            )
        out.append(t.render())
        out.append(
            "  blob B/ckpt: checkpoint + metadata blobs plus writes.value blobs, per"
            " checkpoint; file B/ckpt: file growth over an empty store"
        )

    growth_rows: list[tuple[str, str, float | None, float | None]] = []
    for key, name in (("wg-sqlite", "weavegraph"), ("lg-sqlite", "LangGraph")):
        if key not in by_key:
            continue
        by_history = _growth(storage[(key, big, large_h)], storage[(key, big, small_h)])
        by_graph = _growth(storage[(key, big, small_h)], storage[(key, small, small_h)])
        growth_rows.append((name, key, by_history, by_graph))
    if growth_rows:
        out.append("")
        out.append(
            "Growth of bytes per step (1.00x = independent;"
            f" weavegraph verdict within ±{INDEPENDENCE_TOLERANCE:.0%})"
        )
        t = Table(
            [
                "framework",
                f"history {small_h} -> {large_h}",
                f"chain {small} -> {big}",
                "verdict",
            ],
            left=1,
        )
        for name, key, by_history, by_graph in growth_rows:
            verdict = "-"
            if key == "wg-sqlite" and by_history is not None and by_graph is not None:
                ok = all(
                    abs(g - 1.0) <= INDEPENDENCE_TOLERANCE
                    for g in (by_history, by_graph)
                )
                verdict = "PASS" if ok else "MISS"
            t.add(
                name,
                "-" if by_history is None else fmt_ratio(by_history),
                "-" if by_graph is None else fmt_ratio(by_graph),
                verdict,
            )
        out.append(t.render())

    # ---- notes
    notes: list[str] = []
    lang = [v for v in variants if isinstance(v, LangGraphVariant)]
    if lang:
        state = (
            "StateGraph(MessagesState) (add_messages reducer, langchain"
            " AIMessage/HumanMessage)"
            if lang[0].state_kind == "messages"
            else "StateGraph over a TypedDict whose messages are a list of"
            " role/content dicts merged with operator.add"
        )
        notes.append(
            f"langgraph: {state}, default durability; SqliteSaver on"
            " sqlite3.connect(check_same_thread=False), AsyncSqliteSaver on"
            " aiosqlite.connect; saver.setup() before timing; sync variants use"
            " plain def nodes and graph.invoke, the others async def nodes and"
            " ainvoke"
        )
        notes.append(
            "durability differs: weavegraph's SQLite store runs WAL with"
            " synchronous=NORMAL and stores checkpoints in batches behind the run"
            " (flushed before invoke returns); LangGraph's savers use SQLite's"
            " default synchronous=FULL in WAL mode, one transaction per checkpoint"
        )
    for v in variants:
        o = timing[v.key]
        if isinstance(o, Failed):
            notes.append(f"{v.label}: ERROR {o.error}")
        elif isinstance(o, Unavailable) and len(o.reason) > 16:
            notes.append(f"{v.label}: {o.reason}")
    far = [
        (chain, history, s.base_distance)
        for (key, chain, history), s in storage.items()
        if key == "wg-sqlite"
        and isinstance(s, Storage)
        and s.base_distance is not None
        and s.base_distance > 1.5
    ]
    if far:
        where = ", ".join(f"{d:.1f} (chain {c}, history {h})" for c, h, d in far)
        notes.append(
            "weavegraph rows are stored as deltas from a step several steps back"
            f" (mean distance {where}; 1 would be the previous step): bytes per"
            " step then grow with that distance, which depends on how many"
            " checkpoints the runner hands to the store in one batch, i.e. on"
            " timing"
        )
    for (key, chain, history), s in storage.items():
        if isinstance(s, Failed):
            notes.append(
                f"{by_key[key].label} bytes (chain {chain}, history {history}):"
                f" ERROR {s.error}"
            )
    if notes:
        out.append("")
        out.append("Notes")
        out += [f"  - {n}" for n in dict.fromkeys(notes)]
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #

VARIANT_KEYS = (
    "wg-none",
    "wg-sqlite",
    "wg-postgres",
    "lg-none",
    "lg-sqlite",
    "lg-sqlite-normal",
    "lg-async-sqlite",
)


def make_variants(
    selected: Sequence[str], scratch: Scratch, postgres: Postgres, lg_state: LgState
) -> list[Variant]:
    makers: dict[str, Callable[[], Variant]] = {
        "wg-none": lambda: WeaveNoStore(scratch),
        "wg-sqlite": lambda: WeaveSQLite(scratch),
        "wg-postgres": lambda: WeavePostgres(scratch, postgres),
        "lg-none": lambda: LangNoStore(scratch, lg_state),
        "lg-sqlite": lambda: LangSqlite(scratch, lg_state),
        "lg-sqlite-normal": lambda: LangSqliteNormal(scratch, lg_state),
        "lg-async-sqlite": lambda: LangAsyncSqlite(scratch, lg_state),
    }
    variants = [makers[key]() for key in VARIANT_KEYS if key in selected]
    for v in variants:
        v.unavailable = v.load()
    return variants


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Cost of checkpointing every step: weavegraph vs LangGraph."
    )
    add_run_options(
        parser,
        unit="measurement",
        quick_help=f"small sizes ({QUICK}) instead of ({FULL}), for a smoke test",
    )
    parser.add_argument(
        "--lg-state",
        choices=["messages", "dicts"],
        default="messages",
        help="LangGraph state: MessagesState with langchain messages (default), or"
        " a plain list of role/content dicts merged with operator.add",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANT_KEYS),
        help=f"comma-separated subset of {','.join(VARIANT_KEYS)} (default: all)",
    )
    args = parser.parse_args(argv)
    check_run_options(parser, args)
    selected = pick_subset(parser, "--variants", args.variants, VARIANT_KEYS)
    args.variants = selected
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    load_at_start = _load()
    scratch = Scratch()
    postgres = Postgres()
    results = Results(timing={}, storage={})
    try:
        variants = make_variants(args.variants, scratch, postgres, args.lg_state)

        for v in variants:
            print(f"  {v.label:<54}", end="", file=sys.stderr, flush=True)
            outcome = v.measure(sizes.chain, sizes.history, args.runs, args.warmup)
            results.timing[v.key] = outcome
            status = (
                f"{fmt_us(outcome.per_unit_us)} µs/step"
                if isinstance(outcome, Measured)
                else _cell(outcome, str)
            )
            print(f" {status}", file=sys.stderr, flush=True)
        postgres.drop_schemas()

        small_h, large_h = sizes.histories
        grid = [
            (sizes.chain, small_h),
            (sizes.chain, large_h),
            (sizes.small_chain, small_h),
        ]
        for v in variants:
            if not v.measures_storage:
                continue
            for chain, history in grid:
                label = f"{v.label} bytes, chain {chain}, history {history}"
                print(f"  {label:<72}", end="", file=sys.stderr, flush=True)
                found = v.storage(scratch, chain, history)
                results.storage[v.key, chain, history] = found
                status = (
                    f"{_bytes(found.per_step)} B/step"
                    if isinstance(found, Storage)
                    else _cell(found, str)
                )
                print(f" {status}", file=sys.stderr, flush=True)
        print(file=sys.stderr)

        print(
            render_report(
                variants,
                results,
                sizes,
                postgres,
                scratch,
                runs=args.runs,
                warmup=args.warmup,
                quick=args.quick,
                load_at_start=load_at_start,
            )
        )
    finally:
        postgres.drop_schemas()
        postgres.stop()
        scratch.remove()

    weave_failed = any(
        isinstance(o, Failed)
        for key, o in results.timing.items()
        if key.startswith("wg-")
    ) or any(
        isinstance(o, Failed)
        for (key, _, _), o in results.storage.items()
        if key.startswith("wg-")
    )
    return 1 if weave_failed else 0


if __name__ == "__main__":
    sys.exit(main())
