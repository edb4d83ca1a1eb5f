"""Durable tasks across a process kill: every finished call runs exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "durable_proc.py"


def phase(store: str, log: Path, name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), store, str(log), name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def calls(log: Path) -> Counter[str]:
    return Counter(log.read_text().splitlines())


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_durable_tasks_survive_kill_9(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = (
        str(tmp_path / "d.db")
        if kind == "sqlite"
        else request.getfixturevalue("postgres_dsn")
    )
    log = tmp_path / "calls.log"
    log.touch()
    assert phase(store, log, "start") == "['approve?']"
    assert calls(log) == Counter({"one start": 1, "one done": 1})

    # Answer, and die by SIGKILL in the middle of the third call.
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), store, str(log), "answer"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while "three start" not in log.read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the third call never started"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert calls(log)["two done"] == 1 and calls(log)["three done"] == 0

    # A new process resumes: one and two come from the store, the answer too;
    # only the unfinished call runs again, then the node asks its second question.
    assert phase(store, log, "recover") == "['sign?']"
    assert calls(log) == Counter(
        {
            "one start": 1,
            "one done": 1,
            "two start": 1,
            "two done": 1,
            "three start": 2,
            "three done": 1,
        }
    )
    final = phase(store, log, "sign")
    assert final == "{'results': ['one!', 'two!', 'three!'], 'by': ['approve', 'Ann']}"
    done = calls(log)
    assert {k: v for k, v in done.items() if k.endswith("done")} == {
        "one done": 1,
        "two done": 1,
        "three done": 1,
    }
