"""``python -m weavegraph runs ...`` against SQLite and PostgreSQL stores."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio
from helpers import chain_app, hi

from weavegraph import PostgresCheckpointer, RuntimeConfig, SQLiteCheckpointer
from weavegraph._cli import main


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out)
    return code, out.getvalue()


def store_two_runs(db: str) -> None:
    async def run() -> None:
        store = (
            PostgresCheckpointer(db)
            if db.startswith("postgresql://")
            else SQLiteCheckpointer(db)
        )
        async with store:
            for sid in ("first", "second"):
                app = chain_app(
                    ["A", "B"], RuntimeConfig(session_id=sid, checkpointer=store)
                )
                await app.invoke(hi())

    trio.run(run)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return str(request.getfixturevalue("postgres_dsn"))


def test_runs_list_show_steps(db: str) -> None:
    store_two_runs(db)
    code, text = cli("runs", "list", "--db", db)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == ["SESSION", "LAST", "STEP", "UPDATED", "CREATED"]
    assert [line.split()[0] for line in lines[2:]] == ["second", "first"]

    code, text = cli("runs", "show", "first", "--db", db)
    assert code == 0
    assert "step      2 (complete)" in text
    assert "  assistant: B" in text

    code, text = cli("runs", "show", "first", "--db", db, "--json")
    assert code == 0
    shown = json.loads(text)
    assert [m["content"] for m in shown["messages"]] == ["hi", "A", "B"]

    code, text = cli("runs", "steps", "first", "--db", db, "--node", "A")
    assert code == 0
    assert text.splitlines()[2].split()[:2] == ["1", "A"]
    assert "1 of 1 steps" in text


def test_unknown_session_and_bad_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.db")
    store_two_runs(db)
    assert cli("runs", "show", "nope", "--db", db)[0] == 1
    assert "no session 'nope'" in capsys.readouterr().err
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("not a database")
    assert cli("runs", "list", "--db", str(foreign))[0] == 1
    assert "error:" in capsys.readouterr().err


def test_empty_store(tmp_path: Path) -> None:
    assert cli("runs", "list", "--db", str(tmp_path / "new.db")) == (
        0,
        "no sessions stored\n",
    )


def test_serve_command_runs_the_example(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx2

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    db = tmp_path / "served.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "weavegraph", "serve", "examples.sse_server:app",
         "--port", str(port), "--db", str(db)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(f"{url}/graph", timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        with httpx2.stream(
            "POST",
            f"{url}/runs",
            json={"messages": ["cli"], "session_id": "c1"},
            timeout=30,
        ) as response:
            body = response.read().decode()
        assert "searched the forum for 'cli'" in body
        assert "session=c1 status=completed step=2" in body
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert f"serving examples.sse_server:app on http://127.0.0.1:{port}" in out
    code, text = cli("runs", "show", "c1", "--db", str(db))
    assert code == 0 and "step      2 (complete)" in text
