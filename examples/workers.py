"""Workers on PostgreSQL: two worker processes and a server share one database.

    python examples/workers.py --db postgresql://user@127.0.0.1/mydb

starts two ``python -m weavegraph worker workers:APPS`` processes and one
``python -m weavegraph serve workers:APPS --queue`` on a free port of 127.0.0.1,
posts four runs to the server (each detached: the run goes on when the
client hangs up), kills one worker with SIGKILL while it holds runs, waits for
every run through the queue — the killed worker's runs are taken over and go
on from their last committed step — then streams one run's whole event log
back from the server with ``Last-Event-ID`` and stops everything. The database
should be empty (or a weavegraph store): the queue's tables are created in it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    NodeContext,
    NodePartial,
    RunQueue,
    StateSnapshot,
)

HERE = Path(__file__).resolve().parent
STEPS = 20


async def tick(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """One slow step: a tenth of a second of "work"."""
    await trio.sleep(0.1)
    done = snapshot.extra.get("ticks", 0) + 1
    ctx.emit("tick", f"tick {done}/{STEPS}")
    return NodePartial(extra={"ticks": done})


def more(snapshot: StateSnapshot) -> str:
    return "tick" if snapshot.extra["ticks"] < STEPS else END


ticker = (
    GraphBuilder()
    .add_node("tick", tick)
    .add_edge(START, "tick")
    .add_conditional_edge("tick", more, path_map=["tick", END])
    .compile()
)
APPS = {"ticker": ticker}
"""What the workers and the server serve (``workers:APPS``)."""


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m weavegraph ARGS`` with this folder importable; its first line."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "weavegraph", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def post_run(url: str, session_id: str) -> int:
    """POST /runs?detach=true, read the first event, hang up; its id."""
    body = json.dumps({"graph": "ticker", "session_id": session_id}).encode()
    request = urllib.request.Request(
        f"{url}/runs?detach=true",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        for line in response:
            if line.startswith(b"id: "):
                return int(line[4:])
    raise RuntimeError(f"no event for {session_id}")


def stream(url: str, session_id: str, last: int) -> list[int]:
    """Every event id after ``last`` (Last-Event-ID) until the run's end, of
    every stream mode (a client of fewer modes sees fewer ids)."""
    request = urllib.request.Request(
        f"{url}/runs/{session_id}/events?modes=events,updates,values",
        headers={"Last-Event-ID": str(last)},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return [int(line[4:]) for line in response if line.startswith(b"id: ")]


async def watch(
    dsn: str, sessions: list[str], victim: str, kill: Callable[[], None]
) -> None:
    """Kill the victim once it holds a run, then wait for every run."""
    async with RunQueue(dsn) as queue:
        with trio.fail_after(60):
            while True:
                held = [(await queue.status(sid)) for sid in sessions]
                if any(s is not None and s.worker == victim for s in held):
                    break
                await trio.sleep(0.05)
        kill()
        print(f"killed worker {victim} (SIGKILL) while it ran runs")
        for sid in sessions:
            with trio.fail_after(120):
                final = await queue.wait(sid)
            status = await queue.status(sid)
            assert status is not None
            print(
                f"{sid}: {status.status}, ticks={final.extra['ticks']},"
                f" attempts={status.attempts}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    args = parser.parse_args()
    workers = []
    server = None
    try:
        for _ in range(2):
            proc, line = start(
                "worker",
                "workers:APPS",
                "--db",
                args.db,
                "--concurrency",
                "2",
                "--lease",
                "2",
            )
            workers.append((proc, line.split()[1]))
        server, line = start(
            "serve", "workers:APPS", "--db", args.db, "--queue", "--port", "0"
        )
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, line
        url = found.group(0)
        print(f"2 workers and a server on {url}")
        sessions = [f"t{i}" for i in range(4)]
        for sid in sessions:
            post_run(url, sid)
        print(f"posted {len(sessions)} runs (detached)")
        victim_proc, victim = workers[0]
        trio.run(watch, args.db, sessions, victim, victim_proc.kill)
        ids = stream(url, "t0", 0)
        in_order = ids == list(range(1, len(ids) + 1))
        print(f"streamed t0 from the server: {len(ids)} events, in order: {in_order}")
    finally:
        for proc in [p for p, _ in workers] + ([server] if server else []):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
    print("stopped")


if __name__ == "__main__":
    main()
