"""``python -m weavegraph runs|serve ...`` against SQLite and PostgreSQL stores.

Every error the user can fix is one ``error: ...`` line on stderr, exit status 2,
and leaves no file behind.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import chain_app, hi

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    PostgresCheckpointer,
    Resume,
    RuntimeConfig,
    Send,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
)
from weavegraph._cli import main, resolve_target
from weavegraph.serve import SSEApp

ROOT = Path(__file__).resolve().parent.parent


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return str(request.getfixturevalue("postgres_dsn"))


class Failing:
    """Runs the CLI in a scratch folder and checks the one-line error contract."""

    def __init__(self, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.folder = folder
        self.capsys = capsys

    def files(self) -> list[Path]:
        # Importing a serve target may write its bytecode: that is Python's doing.
        return sorted(p for p in self.folder.rglob("*") if "__pycache__" not in p.parts)

    def __call__(self, *args: str) -> str:
        before = self.files()
        self.capsys.readouterr()
        code, printed = cli(*args)
        err = self.capsys.readouterr().err
        assert code == 2, (code, err)
        assert printed == ""
        assert err.count("\n") == 1 and err.endswith("\n"), err
        assert err.startswith("error: ")
        assert self.files() == before, "the command created files"
        return err.strip()


@pytest.fixture
def fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Failing:
    monkeypatch.chdir(tmp_path)
    # load_target makes the current folder importable as `python -m` does; keep
    # that change (and the modules it imports) local to the test.
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    return Failing(tmp_path, capsys)


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[str]:
    """The name of a fresh module in ``tmp_path`` holding serve targets."""
    import importlib

    name = f"targets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from weavegraph import END, START, GraphBuilder, NodePartial

            async def node(snapshot, ctx):
                return NodePartial(extra={"served": True})

            def make_app():
                return (GraphBuilder().add_node("node", node)
                        .add_edge(START, "node").add_edge("node", END).compile())

            async def make_app_async():
                return make_app()

            def make_apps():
                return {"one": make_app(), "two": make_app()}

            def make_sse_app():
                from weavegraph.serve import sse_app
                return sse_app(make_app(), keepalive=5.0)

            def needs_config(config, retries=3):
                return make_app()

            def returns_number():
                return 42

            def raises():
                raise ValueError("no API key\\nsecond line")

            app = make_app()
            number = 42
            builder = GraphBuilder()
            mixed = {"good": app, "bad": "oops"}
            """
        )
    )
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


# ----------------------------------------------------------------------- runs


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


def test_show_last_limits_the_messages(tmp_path: Path) -> None:
    db = str(tmp_path / "runs.db")
    store_two_runs(db)
    code, text = cli("runs", "show", "first", "--db", db, "--last", "1")
    assert code == 0
    assert "  assistant: B" in text and "  assistant: A" not in text
    code, text = cli("runs", "show", "first", "--db", db, "--last", "0")
    assert code == 0
    assert "assistant:" not in text and "user:" not in text


def test_unknown_session(db: str, fails: Failing) -> None:
    store_two_runs(db)
    for action in ("show", "steps"):
        line = fails("runs", action, "nope", "--db", db)
        assert line.startswith("error: no session 'nope' in ")
        assert "runs list" in line
    assert "postgresql://" not in line  # a DSN may hold a password: never echoed


def test_steps_of_a_known_session_that_match_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "runs.db")
    store_two_runs(db)
    assert cli("runs", "steps", "first", "--db", db, "--node", "Z") == (
        0,
        "no steps in which 'Z' ran (0 match)\n",
    )
    assert cli("runs", "steps", "first", "--db", db, "--offset", "50") == (
        0,
        "no steps at offset 50 (3 match)\n",
    )


@pytest.mark.parametrize("action", [["list"], ["show", "s1"], ["steps", "s1"]])
def test_reading_a_missing_sqlite_file_creates_nothing(
    fails: Failing, tmp_path: Path, action: list[str]
) -> None:
    line = fails("runs", *action, "--db", "typo.db")
    assert line.startswith("error: no SQLite file 'typo.db': check the path")
    nested = fails("runs", *action, "--db", "sub/dir/typo.db")
    assert "no SQLite file" in nested
    assert list(tmp_path.iterdir()) == []


def test_a_folder_or_a_foreign_file_is_refused(fails: Failing, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    assert fails("runs", "list", "--db", "folder") == (
        "error: 'folder' is a folder: give --db the SQLite file in it"
    )
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("not a database")
    assert "not a usable SQLite checkpoint store" in fails(
        "runs", "list", "--db", "foreign.txt"
    )
    assert foreign.read_text() == "not a database"


def test_an_empty_store(tmp_path: Path) -> None:
    db = tmp_path / "new.db"

    async def create() -> None:
        async with SQLiteCheckpointer(db) as store:
            await store.list_sessions()

    trio.run(create)
    assert cli("runs", "list", "--db", str(db)) == (0, "no sessions stored\n")


def test_unreachable_postgres_fails_fast(fails: Failing) -> None:
    dsn = f"postgresql://weavegraph:secret@127.0.0.1:{free_port()}/nowhere"
    started = time.monotonic()
    line = fails("runs", "list", "--db", dsn)
    assert time.monotonic() - started < 8  # not the pool's 10 s wait
    assert line.startswith("error: cannot connect to PostgreSQL: ")
    assert "check the DSN and that the server is running" in line
    assert "secret" not in line


@pytest.mark.parametrize(
    "dsn", ["postgresql://[::1/db", "host=localhost dbname=x nonsense"]
)
def test_invalid_postgres_dsn(fails: Failing, dsn: str) -> None:
    line = fails("runs", "show", "s1", "--db", dsn)
    assert line.startswith("error: invalid PostgreSQL DSN: ")
    assert "postgresql://user@host:port/dbname" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["runs", "list"], "the following arguments are required: --db"),
        (["runs", "steps", "s1", "--db", "x.db", "--limit", "0"], "expected a number"),
        (["runs", "show", "s1", "--db", "x.db", "--last", "many"], "whole number"),
        (["serve"], "the following arguments are required: TARGET"),
        (["sreve", "x:app"], "invalid choice: 'sreve'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_usage_errors_are_one_line(
    fails: Failing, args: list[str], expected: str
) -> None:
    line = fails(*args)
    assert expected in line
    assert line.endswith("--help`)")


# ------------------------------------------------------ review and time travel


async def draft(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    answer = await ctx.interrupt({"draft": "Dear Ann", "question": "send it?"})
    return NodePartial(extra={"verdict": answer})


async def send(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(
        messages=[Message.assistant(f"verdict {snapshot.extra['verdict']}")]
    )


def review_app(store: Any) -> App:
    return (
        GraphBuilder()
        .add_node("draft", draft)
        .add_node("send", send)
        .add_edge(START, "draft")
        .add_edge("draft", "send")
        .add_edge("send", END)
        .compile(RuntimeConfig(checkpointer=store))
    )


def open_store(db: str) -> Any:
    if db.startswith("postgresql://"):
        return PostgresCheckpointer(db)
    return SQLiteCheckpointer(db)


def invoke(db: str, value: Any, session_id: str) -> VersionedState:
    async def run() -> VersionedState:
        async with open_store(db) as store:
            return await review_app(store).invoke(value, session_id=session_id)

    return trio.run(run)


def test_show_history_and_fork_a_reviewed_session(db: str) -> None:
    invoke(db, VersionedState(messages=[Message.user("write")]), "mail")
    code, text = cli("runs", "show", "mail", "--db", db)
    assert code == 0
    assert "step      0 (interrupted)" in text
    assert (
        'waiting   draft@1#0 (draft): {"draft":"Dear Ann","question":"send it?"}'
        in (text)
    )
    shown = json.loads(cli("runs", "show", "mail", "--db", db, "--json")[1])
    assert shown["interrupts"] == [
        {
            "id": "draft@1#0",
            "node": "draft",
            "payload": {"draft": "Dear Ann", "question": "send it?"},
        }
    ]

    invoke(db, Resume("yes"), "mail")
    code, text = cli("runs", "history", "mail", "--db", db)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == [
        "STEP",
        "PARENT",
        "RAN",
        "NEXT",
        "MESSAGES",
        "WAITING",
        "CREATED",
    ]
    assert [line.split()[:5] for line in lines[2:5]] == [
        ["2", "1", "send", "-", "2"],
        ["1", "0", "draft", "send", "1"],
        ["0", "-", "-", "draft", "1"],
    ]
    assert lines[-1] == "3 of 3 steps, newest first"
    code, text = cli(
        "runs", "history", "mail", "--db", db, "--limit", "1", "--offset", "1"
    )
    assert text.splitlines()[2].split()[0] == "1"
    assert text.splitlines()[-1] == "1 of 3 steps, newest first (more: raise --offset)"

    code, text = cli("runs", "show", "mail", "--db", db, "--step", "1")
    assert code == 0
    assert "step      1 (open)" in text and "frontier  send" in text
    assert 'extra     {"verdict":"yes"}' in text
    code, text = cli("runs", "show", "mail", "--db", db, "--step", "0", "--json")
    assert json.loads(text)["step"] == 0 and json.loads(text)["extra"] == {}

    # Time travel: back to step 0, and this time the answer is no.
    code, text = cli(
        "runs", "fork", "mail", "--db", db, "--step", "0", "--to", "mail-2"
    )
    assert (code, text) == (0, "forked mail at step 0 into mail-2 (next: draft)\n")
    code, text = cli("runs", "show", "mail-2", "--db", db)
    assert "forked    from mail at step 0" in text
    shown = json.loads(cli("runs", "show", "mail-2", "--db", db, "--json")[1])
    assert shown["forked_from"] == ["mail", 0]
    paused = invoke(db, None, "mail-2")
    assert "verdict" not in paused.extra
    final = invoke(db, Resume("no"), "mail-2")
    assert final.messages[-1].content == "verdict no"
    code, text = cli("runs", "show", "mail", "--db", db)
    assert "step      2 (complete)" in text and "assistant: verdict yes" in text
    code, text = cli("runs", "list", "--db", db)
    assert sorted(line.split()[0] for line in text.splitlines()[2:]) == [
        "mail",
        "mail-2",
    ]


def test_review_commands_report_one_line_errors(db: str, fails: Failing) -> None:
    invoke(db, VersionedState(messages=[Message.user("write")]), "mail")
    invoke(db, Resume("yes"), "mail")
    assert fails("runs", "show", "mail", "--db", db, "--step", "9") == (
        "error: session 'mail' has no step 9: its stored steps go from 0 to 2; see"
        " them with `python -m weavegraph runs history`"
    )
    line = fails("runs", "history", "nope", "--db", db)
    assert line.startswith("error: no session 'nope' in ")
    assert "no step 7" in fails(
        "runs", "fork", "mail", "--db", db, "--step", "7", "--to", "m2"
    )
    assert "no session 'nope'" in fails(
        "runs", "fork", "nope", "--db", db, "--step", "0", "--to", "m2"
    )
    assert fails("runs", "fork", "mail", "--db", db, "--step", "0", "--to", "mail") == (
        "error: cannot fork into 'mail': that session exists in "
        + ("the PostgreSQL store" if db.startswith("postgresql://") else repr(db))
        + "; pick a new id with --to"
    )
    assert "invalid session id 'a b'" in fails(
        "runs", "fork", "mail", "--db", db, "--step", "0", "--to", "a b"
    )
    # Nothing of that wrote a session.
    _, text = cli("runs", "list", "--db", db)
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["mail"]
    assert cli("runs", "history", "mail", "--db", db, "--offset", "5") == (
        0,
        "no steps at offset 5 (3 stored)\n",
    )


@pytest.mark.parametrize(
    "action",
    [
        ["history", "s1"],
        ["show", "s1", "--step", "0"],
        ["fork", "s1", "--step", "0", "--to", "s2"],
    ],
)
def test_review_commands_never_create_a_store(
    fails: Failing, tmp_path: Path, action: list[str]
) -> None:
    line = fails("runs", *action, "--db", "typo.db")
    assert line.startswith("error: no SQLite file 'typo.db': check the path")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["runs", "fork", "s1", "--db", "x.db", "--to", "s2"], "required: --step"),
        (["runs", "fork", "s1", "--db", "x.db", "--step", "0"], "required: --to"),
        (
            ["runs", "fork", "s1", "--db", "x.db", "--step", "-1", "--to", "b"],
            "expected a number >= 0",
        ),
        (["runs", "show", "s1", "--db", "x.db", "--step", "x"], "whole number"),
        (
            ["runs", "history", "s1", "--db", "x.db", "--limit", "0"],
            "expected a number",
        ),
    ],
)
def test_review_usage_errors_are_one_line(
    fails: Failing, args: list[str], expected: str
) -> None:
    line = fails(*args)
    assert expected in line
    assert line.endswith("--help`)")


# ---------------------------------------------------------------------- serve


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (
            ":nothing",
            "has no attribute 'nothing': name the App (or its factory) defined in",
        ),
        (
            ":number",
            ":number is int 42, not an App: point serve at an App, a dict of Apps,"
            " or a function with no arguments that returns one",
        ),
        (":builder", ":builder is a GraphBuilder (serve what its .compile() returns)"),
        (":mixed", ":mixed is a mapping with non-App values ('bad': str)"),
        (
            ":needs_config",
            ":needs_config takes arguments (config); serve calls a factory with none",
        ),
        (":returns_number", ":returns_number() returned int 42, not an App"),
        (
            ":raises",
            ":raises() raised ValueError: no API key; call it in Python to see the"
            " traceback",
        ),
        ("", "expected module:attribute (like examples.sse_server:app), got"),
    ],
)
def test_serve_refuses_what_is_not_an_app(
    fails: Failing, targets: str, suffix: str, expected: str
) -> None:
    line = fails("serve", targets + suffix, "--port", "0")
    assert expected in line


def test_serve_reports_a_bad_module_path(fails: Failing) -> None:
    assert fails("serve", "no_such_module:app") == (
        "error: no module 'no_such_module': check the module path, and run from"
        " the folder it is importable from"
    )
    assert "no module 'examples.no_such'" in fails("serve", "examples.no_such:app")


def test_serve_reports_a_module_that_fails_to_import(
    fails: Failing, tmp_path: Path
) -> None:
    (tmp_path / "broken_mod_x1.py").write_text("import not_installed_dep_x1\n")
    (tmp_path / "raising_mod_x1.py").write_text("raise RuntimeError('boom')\n")
    try:
        line = fails("serve", "broken_mod_x1:app")
        assert "importing 'broken_mod_x1' failed: No module named" in line
        assert "install what it needs" in line
        line = fails("serve", "raising_mod_x1:app")
        assert "importing 'raising_mod_x1' raised RuntimeError: boom" in line
    finally:
        sys.modules.pop("broken_mod_x1", None)
        sys.modules.pop("raising_mod_x1", None)


def test_serve_with_an_unreachable_postgres(fails: Failing, targets: str) -> None:
    dsn = f"postgresql://127.0.0.1:{free_port()}/nowhere"
    line = fails("serve", f"{targets}:app", "--port", "0", "--db", dsn)
    assert line.startswith("error: cannot connect to PostgreSQL: ")


def test_serve_when_the_port_is_taken(tmp_path: Path, targets: str) -> None:
    # In a child process: hypercorn leaves the socket that failed to bind to the
    # garbage collector, and this suite turns that ResourceWarning into an error.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "weavegraph", "serve", f"{targets}:app",
             "--port", str(port)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use;"
        " choose another --port (or stop the program using it)\n"
    )
    created = {p.name for p in tmp_path.iterdir()} - {"__pycache__"}
    assert created == {f"{targets}.py"}


def test_serve_without_hypercorn(tmp_path: Path, targets: str) -> None:
    # The import is blocked, not uninstalled: a finder refuses hypercorn.
    wrapper = textwrap.dedent(
        """
        import runpy, sys

        class NoHypercorn:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "hypercorn":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoHypercorn())
        sys.argv = ["weavegraph", *sys.argv[1:]]
        runpy.run_module("weavegraph", run_name="__main__", alter_sys=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, "serve", f"{targets}:app", "--port", "0"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "error: serving needs hypercorn, which is not installed:"
        " pip install 'weavegraph[serve]'\n"
    )


def test_serve_help_documents_factories() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "weavegraph", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "function taking no arguments (def or async def)" in " ".join(
        done.stdout.split()
    )


async def test_resolve_target_calls_factories(
    targets: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert isinstance(await resolve_target(f"{targets}:app"), App)
    assert isinstance(await resolve_target(f"{targets}:make_app"), App)
    assert isinstance(await resolve_target(f"{targets}:make_app_async"), App)
    apps = await resolve_target(f"{targets}:make_apps")
    assert sorted(apps) == ["one", "two"]
    assert all(isinstance(app, App) for app in apps.values())
    assert isinstance(await resolve_target(f"{targets}:make_sse_app"), SSEApp)


@contextmanager
def serving(target: str, cwd: Path, *options: str) -> Iterator[tuple[str, list[str]]]:
    """``python -m weavegraph serve target`` on a free port until SIGINT.

    Yields the base URL and a list that receives (stdout, returncode) at exit.
    """
    import httpx2

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "weavegraph", "serve", target, "--port", str(port),
         *options],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    result: list[str] = []
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
        yield url, result
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        result += [out, str(proc.returncode)]


def test_serve_command_runs_the_example(tmp_path: Path) -> None:
    import httpx2

    db = tmp_path / "served.db"
    with serving("examples.sse_server:app", ROOT, "--db", str(db)) as (url, result):
        with httpx2.stream(
            "POST",
            f"{url}/runs",
            json={"messages": ["cli"], "session_id": "c1"},
            timeout=30,
        ) as response:
            body = response.read().decode()
        assert "searched the forum for 'cli'" in body
        assert "session=c1 status=completed step=2" in body
    out, returncode = result
    assert returncode == "130"
    assert f"serving examples.sse_server:app on {url}" in out
    code, text = cli("runs", "show", "c1", "--db", str(db))
    assert code == 0 and "step      2 (complete)" in text


def test_serve_a_factory(tmp_path: Path, targets: str) -> None:
    import httpx2

    with serving(f"{targets}:make_app_async", tmp_path) as (url, result):
        graph = httpx2.get(f"{url}/graph", timeout=10)
        assert graph.status_code == 200
        with httpx2.stream(
            "POST", f"{url}/runs", json={"messages": ["x"]}, timeout=30
        ) as response:
            body = response.read().decode()
        assert "status=completed" in body
    out, returncode = result
    assert returncode == "130"
    assert f"serving {targets}:make_app_async on {url}" in out


def test_show_lists_a_paused_fan_outs_sends(db: str) -> None:
    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    async def run() -> None:
        async with open_store(db) as store:
            app = (
                GraphBuilder()
                .add_node("plan", plan)
                .add_node("work", work)
                .add_edge(START, "plan")
                .add_conditional_edge(
                    "plan", lambda s: [Send("work", {"doc": d}) for d in "ab"]
                )
                .add_edge("work", END)
                .compile(RuntimeConfig(checkpointer=store, interrupt_before=["work"]))
            )
            await app.invoke(VersionedState(), session_id="fan")

    trio.run(run)
    code, text = cli("runs", "show", "fan", "--db", db)
    assert code == 0 and "step      1 (open)" in text
    assert 'sent      work[0]: {"doc":"a"}' in text
    assert 'sent      work[1]: {"doc":"b"}' in text
    shown = json.loads(cli("runs", "show", "fan", "--db", db, "--json")[1])
    assert shown["sends"] == [
        {"send": "work", "payload": {"doc": "a"}},
        {"send": "work", "payload": {"doc": "b"}},
    ]


def test_steps_lists_subgraph_steps_with_their_path(db: str) -> None:
    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={ctx.node_id: True})

    def line(*names: str) -> GraphBuilder:
        builder = GraphBuilder()
        for name in names:
            builder.add_node(name, node)
        builder.add_edge(START, names[0])
        for a, b in itertools.pairwise(names):
            builder.add_edge(a, b)
        return builder.add_edge(names[-1], END)

    async def run() -> None:
        async with open_store(db) as store:
            inner = line("search", "rank").compile()
            outer = (
                GraphBuilder()
                .add_node("plan", node)
                .add_node("research", inner)
                .add_edge(START, "plan")
                .add_edge("plan", "research")
                .add_edge("research", END)
                .compile(RuntimeConfig(checkpointer=store))
            )
            await outer.invoke(VersionedState(), session_id="job")

    trio.run(run)
    code, text = cli("runs", "steps", "job", "--db", db)
    assert code == 0
    lines = text.splitlines()
    at = lines.index("subgraph runs (1):")
    assert lines[at + 1].split() == ["PATH", "STEP", "RAN", "UPDATED", "NEXT"]
    assert [r.split()[:3] for r in lines[at + 3 :]] == [
        ["research@2", "0", "-"],
        ["research@2", "1", "search"],
        ["research@2", "2", "rank"],
    ]
