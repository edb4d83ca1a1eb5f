"""Two writers of one session in real threads and real processes: one wins.

Every trial lines both writers up at a barrier, then each tries to store the
same steps of the same session from its own connections. Exactly one batch
is stored, whole; the other writer gets `CheckpointConflict` and nothing of
its batch is stored.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import racer
import trio

KINDS = ["sqlite", "postgres"]


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "race.db")
    else:
        yield "postgres", request.getfixturevalue("postgres_dsn")


async def prepare(kind: str, where: str, trials: int, steps: int | None) -> None:
    async with racer.open_store(kind, where) as store:
        await store.open()
        if steps is not None:
            for trial in range(trials):
                await store.append(racer.base(f"race-{trial}", steps))


async def check(
    kind: str, where: str, outcomes: dict[str, list[str]], first: int
) -> None:
    left, right = outcomes["left"], outcomes["right"]
    assert len(left) == len(right)
    async with racer.open_store(kind, where) as store:
        for trial, pair in enumerate(zip(left, right, strict=True)):
            winners = [p for p in pair if p != "lost"]
            assert len(winners) == 1, f"trial {trial}: {pair}"
            page = await store.query_steps(f"race-{trial}", min_step=first)
            # The winner's three steps, whole: none of the loser's.
            assert [c.step for c in page.checkpoints] == [first + 2, first + 1, first]
            assert page.checkpoints[-1].state.extra["who"] == winners[0]
            assert page.checkpoints[0].state.extra["who"] == winners[0]
            assert page.checkpoints[0].parent_step == first + 1


def run_threads(kind: str, where: str, trials: int, steps: int | None) -> Any:
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[str]] = {}

    def writer(marker: str) -> None:
        outcomes[marker] = racer.race(kind, where, marker, trials, steps, barrier)

    threads = [threading.Thread(target=writer, args=(m,)) for m in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("steps", [None, 3], ids=["new-session", "next-step"])
async def test_two_threads_racing_one_session_one_wins(
    target: tuple[str, str], steps: int | None
) -> None:
    kind, where = target
    trials = 150 if kind == "sqlite" else 80
    await prepare(kind, where, trials, steps)
    outcomes = await trio.to_thread.run_sync(run_threads, kind, where, trials, steps)
    assert set(outcomes) == {"left", "right"}
    await check(kind, where, outcomes, 0 if steps is None else steps + 1)
    # Both writers won some races: the barrier really made them race.
    assert {"left", "right"} <= set(outcomes["left"]) | set(outcomes["right"])


def run_processes(kind: str, where: str, trials: int, steps: int | None) -> Any:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    processes = [
        ctx.Process(
            target=racer.race_in_process,
            args=(kind, where, marker, trials, steps, barrier, results),
        )
        for marker in ("left", "right")
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return outcomes


@pytest.mark.parametrize("steps", [None, 3], ids=["new-session", "next-step"])
async def test_two_processes_racing_one_session_one_wins(
    target: tuple[str, str], steps: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, where = target
    # The spawned interpreters import ``racer`` from this folder.
    monkeypatch.setattr(sys, "path", [str(Path(__file__).parent), *sys.path])
    trials = 40
    await prepare(kind, where, trials, steps)
    outcomes = await trio.to_thread.run_sync(run_processes, kind, where, trials, steps)
    await check(kind, where, outcomes, 0 if steps is None else steps + 1)
