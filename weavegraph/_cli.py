"""The command line: ``python -m weavegraph serve|runs ...``.

Every error the user can fix is reported as one line on stderr, ``error: ...``,
saying what to do, with exit status 2. Reading commands (``runs
list|show|steps|history``) never create a file: a SQLite path that does not
exist is such an error; ``runs fork`` writes only into an existing store.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import inspect
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TextIO

import attrs
import trio

from ._codec import converter, dumps, encode_target, encode_value
from ._core.errors import WeavegraphError
from ._core.frontier import is_complete
from ._core.graph import END, START
from ._core.session import Interrupt, check_session_id
from ._runtime.app import App
from ._runtime.pending import restore_pending
from .checkpoint.postgres import PostgresCheckpointer
from .checkpoint.record import Checkpoint
from .checkpoint.sqlite import SQLiteCheckpointer

USAGE_ERROR = 2
"""The exit status of every error the user can fix (as argparse uses for usage)."""

_CONNECT_TIMEOUT = 5  # seconds; the pool would otherwise wait 10 s and log retries


class CommandError(WeavegraphError):
    """A fault in what the command line asked for; its message says what to do."""


# --------------------------------------------------------------------- stores


def is_postgres(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database (URL or key=value DSN)."""
    return db.startswith(("postgresql://", "postgres://")) or any(
        key in db for key in ("host=", "dbname=")
    )


def check_postgres(dsn: str) -> None:
    """Fail fast, in one line, when ``dsn`` is invalid or the server unreachable.

    Blocking; the CLI runs it in a worker thread.
    """
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise CommandError(
            "PostgreSQL stores need psycopg: pip install 'weavegraph[postgres]'"
        ) from None
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise CommandError(
            f"invalid PostgreSQL DSN: {_first_line(exc)}; expected"
            " postgresql://user@host:port/dbname or 'host=... dbname=...'"
        ) from None
    try:
        psycopg.connect(dsn, connect_timeout=_CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        raise CommandError(
            f"cannot connect to PostgreSQL: {_first_line(exc)}; check the DSN and"
            " that the server is running"
        ) from None


def check_sqlite(path: str, *, create: bool) -> None:
    """Refuse a folder, and (unless ``create``) a file that does not exist."""
    if path == ":memory:":
        return
    if Path(path).is_dir():
        raise CommandError(f"{path!r} is a folder: give --db the SQLite file in it")
    if not create and not Path(path).exists():
        raise CommandError(
            f"no SQLite file {path!r}: check the path (runs commands read an"
            " existing store; `serve --db` or a checkpointed run creates one)"
        )


async def open_store(db: str, *, create: bool) -> Any:
    """A checkpointer for ``db``: a PostgreSQL URL/DSN, else a SQLite file path.

    With ``create=False`` (reading commands) a missing SQLite file is a
    `CommandError` instead of a new, empty store. A PostgreSQL DSN is checked
    with one short connection first, so a bad one fails in seconds, in one line.
    """
    if is_postgres(db):
        await trio.to_thread.run_sync(check_postgres, db, abandon_on_cancel=True)
        return PostgresCheckpointer(db, pool_size=1)
    await trio.to_thread.run_sync(partial(check_sqlite, db, create=create))
    return SQLiteCheckpointer(db)


def _where(db: str) -> str:
    # Never echo a PostgreSQL DSN: it may hold a password.
    return "the PostgreSQL store" if is_postgres(db) else repr(db)


# ----------------------------------------------------------------------- runs


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
        if index == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _interrupts(cp: Checkpoint) -> tuple[Interrupt, ...]:
    """The interrupts a stored step is paused on (only the newest step has any)."""
    if not cp.pending:
        return ()
    session = cp.to_session()
    restore_pending(session, cp.pending)
    return session.interrupts


def _summary(cp: Checkpoint) -> dict[str, Any]:
    state = cp.state
    return {
        "session_id": cp.session_id,
        "step": cp.step,
        "parent_step": cp.parent_step,
        "frontier": list(cp.frontier),
        "sends": [encode_target(s) for s in cp.sends],
        "ran_nodes": list(cp.ran_nodes),
        "interrupts": [
            {"id": i.id, "node": i.node, "payload": encode_value(i.payload)}
            for i in _interrupts(cp)
        ],
        "versions": converter.unstructure(state.versions),
        "messages": [converter.unstructure(m) for m in state.messages],
        "extra": converter.unstructure(dict(state.extra)),
        "errors": [converter.unstructure(e) for e in state.errors],
        "graph_hash": cp.graph_hash,
        "created_at": cp.created_at.isoformat(),
        "forked_from": None if cp.forked_from is None else list(cp.forked_from),
    }


def _unknown_session(args: argparse.Namespace) -> CommandError:
    return CommandError(
        f"no session {args.session!r} in {_where(args.db)}: list the stored ones"
        " with `python -m weavegraph runs list --db ...`"
    )


async def _list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    sessions = await store.list_sessions()
    if not sessions:
        out.write("no sessions stored\n")
        return
    rows: list[tuple[str, ...]] = [("SESSION", "LAST STEP", "UPDATED", "CREATED")]
    rows += [
        (
            s.session_id,
            str(s.last_step),
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            s.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for s in sessions
    ]
    _table(rows, out)


async def _at_step(store: Any, args: argparse.Namespace, step: int | None) -> Any:
    """The session's stored checkpoint at ``step`` (``None``: the newest)."""
    if step is None:
        cp = await store.load_latest(args.session)
        if cp is None:
            raise _unknown_session(args)
        return cp
    page = await store.query_steps(args.session, min_step=step, max_step=step, limit=1)
    if page.checkpoints:
        return page.checkpoints[0]
    newest = await store.query_steps(args.session, limit=1)
    if not newest.checkpoints:
        raise _unknown_session(args)
    oldest = await store.query_steps(
        args.session, limit=1, offset=max(newest.total - 1, 0)
    )
    first = oldest.checkpoints[0].step if oldest.checkpoints else 0
    raise CommandError(
        f"session {args.session!r} has no step {step}: its stored steps go from"
        f" {first} to {newest.checkpoints[0].step}; see them with `python -m"
        " weavegraph runs history`"
    )


async def _show(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    cp = await _at_step(store, args, args.step)
    if args.json:
        out.write(dumps(_summary(cp), pretty=True) + "\n")
        return
    waiting = _interrupts(cp)
    status = (
        "interrupted"
        if waiting
        else "complete"
        if is_complete(cp.frontier, cp.sends)
        else "open"
    )
    out.write(f"session   {cp.session_id}\n")
    out.write(f"step      {cp.step} ({status})\n")
    out.write(f"frontier  {', '.join(cp.frontier) or '-'}\n")
    for index, send in enumerate(cp.sends):
        payload = dumps(encode_value(send.payload))
        out.write(f"sent      {send.node}[{index}]: {payload:.200}\n")
    if cp.forked_from is not None:
        origin, at = cp.forked_from
        out.write(f"forked    from {origin} at step {at}\n")
    for interrupt in waiting:
        payload = dumps(encode_value(interrupt.payload))
        out.write(f"waiting   {interrupt.id} ({interrupt.node}): {payload}\n")
    v = cp.state.versions
    out.write(f"versions  messages={v.messages} extra={v.extra} errors={v.errors}\n")
    messages = cp.state.messages
    out.write(f"messages  ({len(messages)})\n")
    for message in messages[max(len(messages) - args.last, 0) :]:
        out.write(f"  {message.role}: {message.content}\n")
    out.write(f"extra     {dumps(converter.unstructure(dict(cp.state.extra)))}\n")
    for error in cp.state.errors:
        out.write(f"error     {error}\n")


async def _history(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    page = await store.query_steps(args.session, limit=args.limit, offset=args.offset)
    if not page.checkpoints:
        if page.total == 0:
            raise _unknown_session(args)
        out.write(f"no steps at offset {args.offset} ({page.total} stored)\n")
        return
    rows: list[tuple[str, ...]] = [
        ("STEP", "PARENT", "RAN", "NEXT", "MESSAGES", "WAITING", "CREATED")
    ]
    for cp in page.checkpoints:
        waiting = ",".join(i.node for i in _interrupts(cp)) or "-"
        parent = "-" if cp.parent_step is None else str(cp.parent_step)
        rows.append(
            (
                str(cp.step),
                parent,
                ",".join(cp.ran_nodes) or "-",
                ",".join(n for n in cp.frontier if n not in (START, END)) or "-",
                str(len(cp.state.messages)),
                waiting,
                cp.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    _table(rows, out)
    more = " (more: raise --offset)" if page.has_next else ""
    out.write(f"{len(page.checkpoints)} of {page.total} steps, newest first{more}\n")


async def _fork(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    target = check_session_id(args.to)
    source = await _at_step(store, args, args.step)
    if await store.load_latest(target) is not None:
        raise CommandError(
            f"cannot fork into {target!r}: that session exists in"
            f" {_where(args.db)}; pick a new id with --to"
        )
    # The fork starts at the chosen step with its state, frontier and gating,
    # as a new session's first checkpoint; nothing pending comes along.
    fork = attrs.evolve(
        source,
        session_id=target,
        parent_step=None,
        pending=None,
        ran_nodes=(),
        skipped_nodes=(),
        updated_channels=(),
        created_at=datetime.datetime.now(datetime.UTC),
        forked_from=(source.session_id, source.step),
    )
    await store.append([fork])
    upcoming = ", ".join(n for n in fork.frontier if n not in (START, END)) or "-"
    out.write(
        f"forked {args.session} at step {source.step} into {target}"
        f" (next: {upcoming})\n"
    )


async def _steps(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    page = await store.query_steps(
        args.session, limit=args.limit, offset=args.offset, ran_node=args.node
    )
    if not page.checkpoints:
        known = page.total > 0
        if not known and args.node is not None:
            known = (await store.query_steps(args.session, limit=1, offset=0)).total > 0
        if not known:
            raise _unknown_session(args)
        which = f" in which {args.node!r} ran" if args.node is not None else ""
        past = f" at offset {args.offset}" if page.total else ""
        out.write(f"no steps{which}{past} ({page.total} match)\n")
        return
    rows: list[tuple[str, ...]] = [
        ("STEP", "RAN", "SKIPPED", "UPDATED", "MESSAGES", "NEXT")
    ]
    rows += [
        (
            str(cp.step),
            ",".join(cp.ran_nodes) or "-",
            ",".join(cp.skipped_nodes) or "-",
            ",".join(cp.updated_channels) or "-",
            str(len(cp.state.messages)),
            ",".join(cp.frontier) or "-",
        )
        for cp in page.checkpoints
    ]
    _table(rows, out)
    more = " (more: raise --offset)" if page.has_next else ""
    out.write(f"{len(page.checkpoints)} of {page.total} steps{more}\n")
    await _child_steps(store, args, out)


async def _child_steps(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    """The steps of the session's subgraph runs, each with its path.

    A subgraph node's run is stored as the session ``parent:node@step`` (nested
    ones append to it), so the path is the id past the parent's.
    """
    prefix = f"{args.session}:"
    children = sorted(
        s.session_id
        for s in await store.list_sessions()
        if s.session_id.startswith(prefix)
    )
    if not children:
        return
    rows: list[tuple[str, ...]] = [("PATH", "STEP", "RAN", "UPDATED", "NEXT")]
    for child in children:
        path = " / ".join(child[len(prefix) :].split(":"))
        steps = await store.query_steps(child, limit=args.limit, ran_node=args.node)
        rows += [
            (
                path,
                str(cp.step),
                ",".join(cp.ran_nodes) or "-",
                ",".join(cp.updated_channels) or "-",
                ",".join(cp.frontier) or "-",
            )
            for cp in reversed(steps.checkpoints)
        ]
    out.write(f"subgraph runs ({len(children)}):\n")
    _table(rows, out)


_ACTIONS: dict[str, Callable[[Any, argparse.Namespace, TextIO], Awaitable[None]]] = {
    "list": _list,
    "show": _show,
    "steps": _steps,
    "history": _history,
    "fork": _fork,
}


async def _runs(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_store(args.db, create=False) as store:
        await _ACTIONS[args.action](store, args, out)
    return 0


# ---------------------------------------------------------------------- serve


def load_target(spec: str) -> Any:
    """Import ``module:attribute`` (dots in the attribute walk into objects)."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"expected module:attribute (like examples.sse_server:app), got {spec!r}"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current folder is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise CommandError(
                f"no module {missing!r}: check the module path, and run from the"
                " folder it is importable from"
            ) from None
        raise CommandError(
            f"importing {module_name!r} failed: {exc}; install what it needs"
        ) from None
    except Exception as exc:
        raise CommandError(
            f"importing {module_name!r} raised {_describe(exc)}; run"
            f" `python -c 'import {module_name}'` to see the traceback"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(
                f"{module_name!r} has no attribute {attribute!r}: name the App"
                f" (or its factory) defined in {module_name!r}"
            ) from None
    return target


def _servable(value: object) -> bool:
    from .serve import SSEApp

    if isinstance(value, App | SSEApp):
        return True
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, App) for k, v in value.items())
    )


def _kind(value: object) -> str:
    from . import GraphBuilder

    if isinstance(value, Mapping):
        wrong = [
            f"{k!r}: {type(v).__name__}"
            for k, v in value.items()
            if not isinstance(v, App)
        ]
        if not value:
            return "an empty mapping"
        if wrong:
            return f"a mapping with non-App values ({', '.join(wrong[:3])})"
        return "a mapping with non-string keys"
    if isinstance(value, GraphBuilder):
        return "a GraphBuilder (serve what its .compile() returns)"
    if inspect.ismodule(value):
        return f"the module {value.__name__!r}"
    return f"{type(value).__name__} {_short_repr(value)}"


async def resolve_target(spec: str) -> Any:
    """What ``serve`` serves for ``spec``: an App, a dict of Apps, or an SSEApp.

    A zero-argument callable (a factory, sync or async) is called and must return
    one of those. Anything else is a `CommandError` naming what was found.
    """
    target = load_target(spec)
    if _servable(target):
        return target
    if not callable(target) or isinstance(target, Mapping):
        raise CommandError(
            f"{spec} is {_kind(target)}, not an App: point serve at an App, a dict"
            " of Apps, or a function with no arguments that returns one"
        )
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        needed = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if needed:
            raise CommandError(
                f"{spec} takes arguments ({', '.join(needed)}); serve calls a"
                " factory with none: give them defaults or wrap it in a function"
                " without arguments"
            )
    try:
        made = target()
        if inspect.isawaitable(made):
            made = await made
    except Exception as exc:
        raise CommandError(
            f"{spec}() raised {_describe(exc)}; call it in Python to see the traceback"
        ) from None
    if not _servable(made):
        raise CommandError(
            f"{spec}() returned {_kind(made)}, not an App: the factory must return"
            " an App or a dict of Apps"
        )
    return made


def _require_hypercorn() -> None:
    try:
        import hypercorn.config
        import hypercorn.trio  # noqa: F401
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "hypercorn":
            raise CommandError(
                "serving needs hypercorn, which is not installed: pip install"
                " 'weavegraph[serve]'"
            ) from None
        raise CommandError(
            f"hypercorn cannot be imported ({exc}): reinstall 'weavegraph[serve]'"
        ) from None


def _listen_error(exc: OSError, host: str, port: int) -> CommandError:
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return CommandError(f"cannot resolve --host {host!r}: {exc.strerror}")
    if exc.errno == errno.EADDRINUSE:
        return CommandError(
            f"cannot listen on {where}: the address is already in use; choose"
            " another --port (or stop the program using it)"
        )
    if exc.errno == errno.EACCES:
        return CommandError(
            f"cannot listen on {where}: permission denied; choose a --port of 1024"
            " or above"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return CommandError(
            f"cannot listen on {where}: no such address on this machine; check"
            " --host (127.0.0.1 or 0.0.0.0)"
        )
    return CommandError(f"cannot listen on {where}: {exc.strerror or exc}")


async def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from contextlib import AsyncExitStack

    from .serve import serve_until_interrupted

    _require_hypercorn()
    target: Any = None if args.queue else await resolve_target(args.target)
    listening = False

    def announce(urls: list[str]) -> None:
        nonlocal listening
        listening = True
        out.write(f"serving {args.target} on {', '.join(urls)} (Ctrl-C to stop)\n")
        out.flush()

    async with AsyncExitStack() as stack:
        store = None
        if args.db:
            opened = await open_store(args.db, create=True)
            store = await stack.enter_async_context(opened)
        if args.queue:  # the runs go to the workers; the app holds the store
            target, store = await _queue_app(args, store, stack), None
        try:
            signum = await serve_until_interrupted(
                target,
                host=args.host,
                port=args.port,
                checkpointer=store,
                announce=announce,
            )
        except (OSError, BaseExceptionGroup) as exc:
            bind = _leaf(exc, OSError)
            if listening or bind is None:
                raise
            raise _listen_error(bind, args.host, args.port) from None
    return 128 + signum if signum else 0


# -------------------------------------------------------------------- worker


async def _worker_apps(specs: Sequence[str]) -> dict[str, App]:
    """``[name=]module:attribute`` per app (an App, or a dict of name to App)."""
    apps: dict[str, App] = {}
    for spec in specs:
        name, _, target = spec.rpartition("=")
        found = await resolve_target(target)
        if isinstance(found, App):
            found = {name or target.rpartition(":")[2].split(".")[-1]: found}
        elif not isinstance(found, Mapping) or name:
            raise CommandError(
                f"{spec}: a worker runs Apps; name=module:attribute names one App"
            )
        for key, app in found.items():
            if key in apps and apps[key] is not app:
                raise CommandError(f"two apps are named {key!r}: name one name=...")
            apps[key] = app
    return apps


async def _worker(args: argparse.Namespace, out: TextIO) -> int:
    from .scale._command import run_worker

    if not is_postgres(args.db):
        raise CommandError(
            f"--db must be a PostgreSQL URL (postgresql://...), got {args.db!r}:"
            " the run queue lives in PostgreSQL"
        )
    from .scale.queue import EventRetention

    apps = await _worker_apps(args.targets)
    retention = EventRetention(
        max_events=args.keep_events or None, max_age=args.events_max_age or None
    )
    return await run_worker(
        apps,
        args.db,
        concurrency=args.concurrency,
        lease=args.lease,
        retention=retention,
        out=out,
    )


async def _queue_app(args: argparse.Namespace, store: Any, stack: Any) -> Any:
    """``serve --queue``: the SSE app whose runs go through the run queue."""
    from .scale.queue import RunQueue
    from .serve._queue import QueueSSEApp

    if not args.db or not is_postgres(args.db):
        raise CommandError(
            "serve --queue needs --db postgresql://...: the run queue lives in"
            " PostgreSQL"
        )
    apps = await _worker_apps([args.target])
    queue = await stack.enter_async_context(RunQueue(args.db))
    return QueueSSEApp(apps, queue=queue, checkpointer=store)


def _add_worker_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run queued runs from PostgreSQL (see docs/scale-out.md)",
        description=(
            "Claim runs of the given apps from the run queue in PostgreSQL and run"
            " them, under a lease renewed while each run goes on. Each TARGET is"
            " [name=]module:attribute naming an App (queued under its attribute"
            " name, or name) or a dict of name to App. SIGTERM or Ctrl-C hands the"
            " worker's runs back to the queue and stops."
        ),
    )
    worker.add_argument("targets", metavar="TARGET", nargs="+")
    worker.add_argument(
        "--db", required=True, help="the PostgreSQL URL of the queue and the store"
    )
    worker.add_argument(
        "--concurrency", type=_count(1), default=8, help="runs at most at once"
    )
    worker.add_argument(
        "--lease",
        type=float,
        default=10.0,
        help="seconds a claim lasts unless renewed (renewed every third)",
    )
    worker.add_argument(
        "--keep-events",
        type=_count(0),
        default=10_000,
        metavar="N",
        help="events kept per run, the newest (0: all)",
    )
    worker.add_argument(
        "--events-max-age",
        type=float,
        default=7 * 24 * 3600.0,
        metavar="SECONDS",
        help="delete events older than this (0: never)",
    )


# --------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points to ``--help``."""

    def error(self, message: str) -> NoReturn:
        _report(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(USAGE_ERROR)


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a number >= {minimum}, got {value}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m weavegraph``."""
    parser = _Parser(prog="python -m weavegraph", description="weavegraph command line")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a graph over HTTP (SSE) with hypercorn's trio worker",
        description=(
            "Serve a graph over HTTP (SSE) with hypercorn's trio worker (needs the"
            " 'serve' extra). TARGET is module:attribute naming an App, a dict of"
            " name to App, an SSE app built with weavegraph.serve.sse_app, or a"
            " function taking no arguments (def or async def) that returns one of"
            " those; serve calls such a factory once at start-up."
        ),
    )
    serve.add_argument(
        "target",
        metavar="TARGET",
        help="module:attribute of an App, a dict of Apps, or a zero-argument"
        " factory returning one",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=_count(0), default=8000, help="0 picks a free one"
    )
    serve.add_argument(
        "--db",
        help="checkpoint runs to this SQLite file (created if missing) or"
        " PostgreSQL URL",
    )
    runs = commands.add_parser(
        "runs",
        help="inspect stored sessions",
        description=(
            "Inspect stored sessions, and fork one. Never creates a store: every"
            " command but fork only reads."
        ),
    )
    actions = runs.add_subparsers(dest="action", required=True)
    db_help = "an existing SQLite file, or a PostgreSQL URL (postgresql://...)"
    listing = actions.add_parser("list", help="list stored sessions")
    listing.add_argument("--db", required=True, help=db_help)
    show = actions.add_parser(
        "show", help="show a session's latest state (or a past step's)"
    )
    show.add_argument("session")
    show.add_argument("--db", required=True, help=db_help)
    show.add_argument(
        "--step", type=_count(0), help="the stored step to show (default: newest)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--last", type=_count(0), default=10, help="messages to show")
    steps = actions.add_parser("steps", help="list a session's stored steps")
    steps.add_argument("session")
    steps.add_argument("--db", required=True, help=db_help)
    steps.add_argument("--limit", type=_count(1), default=20)
    steps.add_argument("--offset", type=_count(0), default=0)
    steps.add_argument("--node", help="only steps in which this node ran")
    history = actions.add_parser(
        "history",
        help="list a session's stored steps, newest first, with their parents",
    )
    history.add_argument("session")
    history.add_argument("--db", required=True, help=db_help)
    history.add_argument("--limit", type=_count(1), default=20)
    history.add_argument("--offset", type=_count(0), default=0)
    fork = actions.add_parser(
        "fork",
        help="start a new session from a stored step (time travel)",
        description=(
            "Start session NEW from step N of SESSION: its state, next nodes and"
            " gating at that step. Resuming NEW re-runs from there; SESSION is"
            " untouched. Writes into the existing store only."
        ),
    )
    fork.add_argument("session")
    fork.add_argument("--db", required=True, help=db_help)
    fork.add_argument("--step", type=_count(0), required=True, metavar="N")
    fork.add_argument("--to", required=True, metavar="NEW", help="the new session id")
    _add_worker_parser(commands)
    serve.add_argument(
        "--queue",
        action="store_true",
        help="enqueue POST /runs for workers (python -m weavegraph worker) and"
        " stream any queued run's events; needs --db postgresql://...",
    )
    return parser


# ----------------------------------------------------------------------- main


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _report(message: str) -> None:
    one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    sys.stderr.write(f"error: {one_line}\n")
    sys.stderr.flush()


def _leaf(exc: BaseException, kind: type[BaseException]) -> Any:
    """The first exception of ``kind`` in ``exc`` (a group is searched)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, kind) else None


def _only_faults(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_faults(inner) for inner in exc.exceptions)
    return isinstance(exc, WeavegraphError)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status.

    0 on success, 2 (with one ``error: ...`` line on stderr) for anything the
    user can fix, 130 after Ctrl-C, 128 + the signal number when ``serve``
    stops on a signal.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already reported
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    stream = out if out is not None else sys.stdout
    try:
        command = {"serve": _serve, "worker": _worker}.get(args.command, _runs)
        return trio.run(command, args, stream)
    except WeavegraphError as exc:  # CommandError included
        _report(str(exc))
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            return 130
        if not _only_faults(group):
            raise  # a bug: keep the traceback
        _report(str(_leaf(group, Exception)))
        return USAGE_ERROR
