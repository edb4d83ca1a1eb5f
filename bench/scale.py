"""Scale-out on PostgreSQL: the run queue and worker processes, side by side
with the single-process runner on the same store.

Throughput: N runs of a 10-step chain (each node appends one message), every
step checkpointed to PostgreSQL, timed after N/4 untimed runs per process (a
connection prepares and plans each statement on its first uses; a long-lived
process has done so; ``--cold``: after 8, as a freshly started process).
"runner" runs them in this process, 8 at a time, on one `PostgresCheckpointer`;
"N worker(s)" submits them to a `RunQueue` (4 submitting tasks) served by that
many ``python -m weavegraph worker`` processes (concurrency 8 each), timed from
the first submission until the queue says every run completed. Runs per second,
and the ratios the issue asks for: one worker against the runner (target:
within 1.5x), and each worker count against the one before (target: throughput
does not fall). Beside them, what a run costs: the statements PostgreSQL ran
per run (``pg_stat_statements``, when the server loads it, as the throwaway
cluster does: counted in one more round per row after the timed ones, which run
with the counting off) and the CPU per run of this machine (this process, the
workers and every PostgreSQL process, from /proc, in the timed rounds), so a
row that does the same work with more CPU shows it.

Latency: submit to first event (a run submitted to an idle worker, until its
first event is readable from the queue's event log), median of several.
Takeover: a worker holding a running run is killed with ``kill -9``; the time
from the kill until another worker claimed the run (the database's clock), for
a lease of 2 seconds.

PostgreSQL: the server named by ``WEAVEGRAPH_TEST_POSTGRES_DSN``, else a
throwaway cluster from tests/pgcluster.py (``fsync=off``).
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
import trio

import weavegraph as wg
from weavegraph.scale import RunQueue

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DSN_VARIABLE = "WEAVEGRAPH_TEST_POSTGRES_DSN"
STEPS = 10
CONCURRENCY = 8


def _append(name: str) -> Any:
    async def node(snapshot: wg.StateSnapshot, ctx: wg.NodeContext) -> wg.NodePartial:
        return wg.NodePartial(messages=[wg.Message.assistant(name)])

    return node


def _chain() -> wg.App:
    builder = wg.GraphBuilder()
    previous = wg.START
    for i in range(STEPS):
        builder.add_node(f"n{i}", _append(f"n{i}"))
        builder.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    builder.add_edge(previous, wg.END)
    return builder.compile()


def _slow() -> wg.App:
    async def tick(snapshot: wg.StateSnapshot, ctx: wg.NodeContext) -> wg.NodePartial:
        await trio.sleep(0.05)
        return wg.NodePartial(extra={"ticks": snapshot.extra.get("ticks", 0) + 1})

    def more(snapshot: wg.StateSnapshot) -> str:
        return "tick" if snapshot.extra["ticks"] < 400 else wg.END

    return (
        wg.GraphBuilder()
        .add_node("tick", tick)
        .add_edge(wg.START, "tick")
        .add_conditional_edge("tick", more, path_map=["tick", wg.END])
        .compile()
    )


APPS = {"chain": _chain(), "slow": _slow()}
"""What the worker processes serve (``scale:APPS``)."""


# ------------------------------------------------------------------ set-up


class Postgres:
    """A DSN for a fresh schema, on the tests' server or a throwaway cluster."""

    def __init__(self) -> None:
        import psycopg

        self.cluster: Any = None
        self.schema = f"wgscale_{os.getpid()}"
        server = os.environ.get(DSN_VARIABLE)
        if not server:
            sys.path.insert(0, str(ROOT / "tests"))
            from pgcluster import Cluster

            self.cluster = Cluster({"shared_preload_libraries": "pg_stat_statements"})
            server = self.cluster.start()
        self.server = server
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.schema}")
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT pg_stat_statements_reset()")
                self.statements = True
            except psycopg.Error:  # not loaded by the server: no statement count
                self.statements = False
        separator = "&" if "?" in server else "?"
        self.dsn = f"{server}{separator}options=-csearch_path%3D{self.schema}"
        self.count_statements(False)

    def count_statements(self, on: bool) -> None:
        """Turn ``pg_stat_statements``' counting on or off (it costs a little)."""
        import psycopg

        self.counting = False
        if not self.statements:
            return
        try:
            with psycopg.connect(self.server, autocommit=True) as conn:
                track = "top" if on else "none"
                conn.execute(f"ALTER SYSTEM SET pg_stat_statements.track = {track}")
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error:  # not the server's superuser: no statement count
            self.statements = False
        else:
            self.counting = on

    def reset(self) -> None:
        """Empty the schema: every row gets the same fresh tables."""
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {self.schema}")

    def stop(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.server, autocommit=True) as conn:
                if self.statements:
                    conn.execute("ALTER SYSTEM RESET pg_stat_statements.track")
                    conn.execute("SELECT pg_reload_conf()")
                conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        finally:
            if self.cluster is not None:
                self.cluster.stop()


def _cpu_of(pid: int) -> float:
    """CPU seconds (user and system) of process ``pid`` so far; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


@attrs.define
class Cost:
    """What a row's runs cost: statements and CPU milliseconds per run."""

    statements: float | None
    cpu_ms: float | None


class Meter:
    """Measures `Cost` between `start` and `stop` (``pids``: the workers)."""

    def __init__(self, pg: Postgres, pids: list[int]) -> None:
        self.pg = pg
        self.pids = pids
        self.linux = os.path.isdir("/proc/self")

    def _cpu(self) -> dict[int, float]:
        if not self.linux:
            return {}
        found = {pid: _cpu_of(pid) for pid in [*self.pids, *_postgres_pids()]}
        found[0] = time.process_time()
        return found

    def _statements(self, reset: bool) -> float:
        import psycopg

        with psycopg.connect(self.pg.server, autocommit=True) as conn:
            if reset:
                conn.execute("SELECT pg_stat_statements_reset()")
                return 0.0
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
                " WHERE query NOT LIKE '%%pg_stat_statements%%'"
                " AND query NOT LIKE 'SELECT EXISTS (SELECT %% FROM weavegraph_runs%%'"
            ).fetchone()
            assert row is not None
            return float(row[0])

    def start(self) -> None:
        self.counting = self.pg.counting  # off in the timed rounds
        if self.counting:
            self._statements(reset=True)
        self.before = self._cpu()

    def stop(self, runs: int) -> Cost:
        after = self._cpu()
        cpu = sum(v - self.before.get(pid, 0.0) for pid, v in after.items())
        return Cost(
            self._statements(reset=False) / runs if self.counting else None,
            cpu * 1e3 / runs if self.linux else None,
        )


class Workers:
    """``count`` worker processes serving `APPS`, each announced before use."""

    def __init__(self, dsn: str, count: int, lease: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
        env["PYTHONUNBUFFERED"] = "1"
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "weavegraph",
                    "worker",
                    "scale:APPS",
                    "--db",
                    dsn,
                    "--concurrency",
                    str(CONCURRENCY),
                    "--lease",
                    str(lease),
                ],
                cwd=str(ROOT),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(count)
        ]
        self.names = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("worker "):
                self.stop()
                raise RuntimeError(f"a worker did not start: {line!r}")
            self.names.append(line.split()[1])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def _given(i: int) -> wg.VersionedState:
    return wg.VersionedState.with_user_message(f"run {i}")


def _check(final: wg.VersionedState) -> None:
    got = [m.content for m in final.messages][1:]
    if got != [f"n{i}" for i in range(STEPS)]:
        raise AssertionError(f"a run ended with {got!r}")


async def _until_completed(dsn: str, count: int) -> None:
    """Return once no submitted run is queued or running any more (one
    connection, polled through the queue's partial indexes, so the polling
    costs the server little), then check that ``count`` runs completed.

    Raises:
        AssertionError: a run ended otherwise (its error).
    """
    import psycopg

    def wait() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute(
                "SELECT EXISTS (SELECT 1 FROM weavegraph_runs WHERE status"
                " = 'queued') OR EXISTS (SELECT 1 FROM weavegraph_runs"
                " WHERE status = 'running')"
            ).fetchone() != (False,):
                time.sleep(0.01)
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'completed'),"
                " max(error) FILTER (WHERE status IN ('failed', 'cancelled'))"
                " FROM weavegraph_runs"
            ).fetchone()
            assert row is not None
            if row[1] is not None:
                raise AssertionError(f"a run did not complete: {row[1]}")
            if row[0] != count:
                raise AssertionError(f"{row[0]} runs completed, not {count}")

    await trio.to_thread.run_sync(wait)


# ------------------------------------------------------------------ rows


async def _run_chain(
    dsn: str, runs: int, warm: int, tag: str, started: Any = None
) -> float:
    """Run ``warm`` then ``runs`` chains in this process, 8 at a time, on one
    `PostgresCheckpointer`, calling ``started`` (if given) in between; the
    seconds the timed ``runs`` took (every final state checked)."""
    app = APPS["chain"]
    async with wg.PostgresCheckpointer(dsn) as store:
        config = attrs.evolve(app.config, checkpointer=store)
        limit = trio.Semaphore(CONCURRENCY)
        finals: list[wg.VersionedState] = []

        async def one(i: int, prefix: str) -> None:
            async with limit:
                final = await app.invoke(
                    _given(i), session_id=f"{prefix}{i}", config=config
                )
            finals.append(final)

        async def batch(count: int, prefix: str) -> None:
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(one, i, prefix)

        await batch(warm, f"{tag}w")
        if started is not None:
            await started()
        start = time.perf_counter()
        await batch(runs, f"{tag}r")
        elapsed = time.perf_counter() - start
    for final in finals:
        _check(final)
    return elapsed


async def runner_rate(pg: Postgres, runs: int, warm: int) -> tuple[float, Cost]:
    """Runs per second of the single-process runner, 8 at a time, and their
    cost, after ``warm`` runs that are not timed."""
    meter = Meter(pg, [])

    async def started() -> None:
        meter.start()

    elapsed = await _run_chain(pg.dsn, runs, warm, "", started)
    return runs / elapsed, meter.stop(runs)


def _runner_process(dsn: str, tag: str, runs: int, warm: int) -> None:
    """A runner process's body: warm up, say ``ready``, wait for a line on
    stdin, run, say ``done``."""

    async def started() -> None:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)

    trio.run(_run_chain, dsn, runs, warm, tag, started)
    print("done", flush=True)


class RunnerProcesses:
    """``count`` runner processes without a queue, each with its share of
    ``runs``, warmed up (`_runner_process`) and waiting for `go`."""

    def __init__(self, dsn: str, count: int, runs: int, warm: int) -> None:
        self.runs = runs // count * count
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--runner-process",
                    dsn,
                    f"p{k}-",
                    str(runs // count),
                    str(warm),
                ],
                cwd=str(ROOT),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for k in range(count)
        ]
        try:
            self.said("ready")
        except BaseException:
            self.stop()
            raise

    def said(self, word: str) -> None:
        """Wait until every process said ``word``."""
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != word:
                raise RuntimeError(f"a runner process said {line!r}, not {word}")

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


async def processes_rate(
    pg: Postgres, runs: int, count: int, warm: int
) -> tuple[float, Cost]:
    """Runs per second of ``count`` runner processes (no queue), ``runs`` in
    all, started together once each has warmed up, and their cost."""
    procs = await trio.to_thread.run_sync(RunnerProcesses, pg.dsn, count, runs, warm)
    try:
        meter = Meter(pg, [proc.pid for proc in procs.procs])
        meter.start()
        start = time.perf_counter()
        procs.go()
        await trio.to_thread.run_sync(procs.said, "done")
        elapsed = time.perf_counter() - start
        cost = meter.stop(procs.runs)
    finally:
        procs.stop()
    return procs.runs / elapsed, cost


async def queue_rate(
    pg: Postgres, runs: int, workers: Workers, warm: int
) -> tuple[float, Cost]:
    """Runs per second through the queue with ``workers`` started, and their
    cost, after ``warm`` runs per worker that are not timed."""
    dsn = pg.dsn
    meter = Meter(pg, [proc.pid for proc in workers.procs])
    async with RunQueue(dsn) as queue:

        async def batch(count: int, tag: str) -> None:
            pending = list(range(count))

            async def submitter() -> None:
                while pending:
                    i = pending.pop()
                    await queue.submit("chain", f"{tag}-{i}", _given(i))

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(submitter)

        warmed = warm * len(workers.procs)
        await batch(warmed, "w")
        await _until_completed(dsn, warmed)
        meter.start()
        start = time.perf_counter()
        await batch(runs, "q")
        await _until_completed(dsn, warmed + runs)
        elapsed = time.perf_counter() - start
        cost = meter.stop(runs)
        for i in (0, runs // 2, runs - 1):
            _check(await queue.wait(f"q-{i}"))
    return runs / elapsed, cost


async def first_event(dsn: str, samples: int) -> float:
    """Median seconds from submit until the run's first event can be read."""
    times = []
    async with RunQueue(dsn) as queue:
        for i in range(samples + 1):
            sid = f"first-{uuid.uuid4().hex[:8]}"
            start = time.perf_counter()
            await queue.submit("chain", sid, _given(i))
            async for _ in queue.events(sid):
                break
            if i:  # the first one warms the connections up
                times.append(time.perf_counter() - start)
            await queue.wait(sid)
    return statistics.median(times)


async def takeover(dsn: str, workers: Workers) -> float:
    """Seconds from a ``kill -9`` of the holder until another worker claimed."""
    async with RunQueue(dsn) as queue:
        await queue.submit("slow", "victim", wg.VersionedState())
        while True:
            status = await queue.status("victim")
            assert status is not None
            if status.status == "running" and status.worker:
                break
            await trio.sleep(0.01)
        index = workers.names.index(status.worker)
        import psycopg

        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        killed_at = row[0]
        os.kill(workers.procs[index].pid, signal.SIGKILL)
        while True:
            status = await queue.status("victim")
            assert status is not None
            if status.attempts >= 2 and status.claimed_at is not None:
                break
            await trio.sleep(0.01)
        await queue.cancel("victim")
    return float((status.claimed_at - killed_at).total_seconds())


async def one_row(
    pg: Postgres, row: str, runs: int, lease: float, warm: int
) -> tuple[float, Cost]:
    """Runs per second of ``row`` ("runner" or "N worker(s)") on a fresh
    schema, and their cost, after ``warm`` untimed runs per process."""
    pg.reset()
    if row == "runner":
        return await runner_rate(pg, runs, warm)
    if row.endswith("runners"):
        async with wg.PostgresCheckpointer(pg.dsn):
            pass  # the schema exists before the processes race to make it
        return await processes_rate(pg, runs, int(row.split()[0]), warm)
    async with RunQueue(pg.dsn):
        pass  # the schema exists before the workers race to make it
    workers = Workers(pg.dsn, int(row.split()[0]), lease)
    try:
        return await queue_rate(pg, runs, workers, warm)
    finally:
        workers.stop()


def warm_up(runs: int, cold: bool) -> int:
    """Untimed runs per process before a row's timed ``runs``: a quarter as
    many, so every pooled connection has prepared and planned its statements
    (per connection, in PostgreSQL and psycopg), as in a long-lived process;
    ``cold``: as many as run at once (a fresh process: every connection open,
    hardly a statement planned for good)."""
    return CONCURRENCY if cold else max(1, runs // 4)


ROWS = (
    "runner",
    "1 worker(s)",
    "2 worker(s)",
    "4 worker(s)",
    "2 runners",
    "4 runners",
)
"""The rows: the runner, the queue with 1, 2 and 4 workers, and as the
machine's own control 2 and 4 runner processes without a queue (so "4/2" can
be read against what four processes do on this machine anyway)."""
WORKERS = ROWS[1:4]


async def main() -> None:
    sys.path.insert(0, str(HERE))
    from _common import header, options, table

    args = options(
        "Scale-out on PostgreSQL: run queue and worker processes",
        {"cold": "time every row's processes from their start (8 untimed runs each)"},
        count=(600, 30),
        samples=(10, 3),
    )
    lease = 2.0
    warm = warm_up(args.count, args.cold)
    header("bench/scale.py", args, ("psycopg",))
    print(
        f"{args.count} runs of a {STEPS}-step chain per row, {CONCURRENCY} at a time"
        f" per process, after {warm} untimed run(s) per process;"
        f" lease {lease:g}s, {os.cpu_count()} CPU(s); rows in turn forward and"
        " backward (ABBA), ratios per round"
    )
    pg = Postgres()
    rates: dict[str, list[float]] = {row: [] for row in ROWS}
    costs: dict[str, list[Cost]] = {row: [] for row in ROWS}
    try:
        for index in range(args.runs):
            order = ROWS if index % 2 == 0 else ROWS[::-1]
            for row in order:
                rate, cost = await one_row(pg, row, args.count, lease, warm)
                rates[row].append(rate)
                costs[row].append(cost)
        counted: dict[str, float | None] = dict.fromkeys(ROWS)
        if pg.statements:
            pg.count_statements(True)
            for row in ROWS:
                counted[row] = (await one_row(pg, row, args.count, lease, warm))[
                    1
                ].statements
            pg.count_statements(False)
        pg.reset()
        async with RunQueue(pg.dsn):
            pass
        workers = Workers(pg.dsn, 2, lease)
        try:
            latency = await first_event(pg.dsn, args.samples)
            moved = await takeover(pg.dsn, workers)
        finally:
            workers.stop()
    finally:
        pg.stop()
    median = {name: statistics.median(values) for name, values in rates.items()}
    one = rates["1 worker(s)"]

    def per_round(name: str, base: list[float]) -> float:
        """The median over rounds of ``name``'s rate over ``base``'s."""
        return statistics.median(v / b for v, b in zip(rates[name], base, strict=True))

    def cpu(name: str) -> str:
        values = [c.cpu_ms for c in costs[name] if c.cpu_ms is not None]
        return f"{statistics.median(values):.1f}" if values else "n/a"

    def statements(name: str) -> str:
        value = counted[name]
        return "n/a" if value is None else f"{value:.1f}"

    table(
        "throughput (runs/s: median of rounds; ratios: median of each round's;"
        " cost per run: median of rounds)",
        ["row", "runs/s", "vs runner", "vs 1 worker", "statements/run", "CPU ms/run"],
        [
            [
                name,
                f"{median[name]:,.1f}",
                f"{per_round(name, rates['runner']):.2f}x",
                f"{per_round(name, one):.2f}x",
                statements(name),
                cpu(name),
            ]
            for name in ROWS
        ],
    )
    overhead = 1 / per_round("1 worker(s)", rates["runner"])
    print(f"\n  runner / 1 worker: {overhead:.2f}x (target: at most 1.50x)")

    def added(pairs: list[tuple[str, str]]) -> str:
        """Each row against the one before: the median ratio, and its range."""
        out = []
        for a, b in pairs:
            each = [v / w for v, w in zip(rates[b], rates[a], strict=True)]
            count = [n.split()[0] if n[0].isdigit() else "1" for n in (b, a)]
            out.append(
                f"{count[0]}/{count[1]} {statistics.median(each):.2f}x"
                f" (rounds {min(each):.2f}-{max(each):.2f})"
            )
        return ", ".join(out)

    print(f"  workers added: {added(list(itertools.pairwise(WORKERS)))}")
    print("    (target: throughput does not fall)")
    control = [("runner", "2 runners"), ("2 runners", "4 runners")]
    print(f"  runner processes added, no queue: {added(control)}")
    print(
        "  rates per round: "
        + "; ".join(
            f"{name} " + " ".join(f"{v:.0f}" for v in values)
            for name, values in rates.items()
        )
    )
    print(f"  submit to first event: {latency * 1e3:,.1f} ms (median)")
    print(f"  takeover after kill -9: {moved:,.2f} s (lease {lease:g}s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--runner-process"]:
        dsn, tag, runs, warm = sys.argv[2:6]
        _runner_process(dsn, tag, int(runs), int(warm))
    else:
        trio.run(main)
