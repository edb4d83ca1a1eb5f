"""The command line: ``python -m weavegraph runs list|show|steps --db ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import trio

from ._codec import converter, dumps
from ._core.errors import WeavegraphError
from ._core.frontier import is_complete
from .checkpoint.postgres import PostgresCheckpointer
from .checkpoint.record import Checkpoint
from .checkpoint.sqlite import SQLiteCheckpointer


def open_store(db: str) -> Any:
    """A checkpointer for ``db``: a PostgreSQL URL/DSN, else a SQLite file path."""
    if db.startswith(("postgresql://", "postgres://")) or any(
        key in db for key in ("host=", "dbname=")
    ):
        return PostgresCheckpointer(db, pool_size=1)
    return SQLiteCheckpointer(db)


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
        if index == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _summary(cp: Checkpoint) -> dict[str, Any]:
    state = cp.state
    return {
        "session_id": cp.session_id,
        "step": cp.step,
        "frontier": list(cp.frontier),
        "ran_nodes": list(cp.ran_nodes),
        "versions": converter.unstructure(state.versions),
        "messages": [converter.unstructure(m) for m in state.messages],
        "extra": converter.unstructure(dict(state.extra)),
        "errors": [converter.unstructure(e) for e in state.errors],
        "graph_hash": cp.graph_hash,
        "created_at": cp.created_at.isoformat(),
    }


async def _runs(args: argparse.Namespace, out: TextIO) -> int:
    async with open_store(args.db) as store:
        if args.action == "list":
            sessions = await store.list_sessions()
            if not sessions:
                out.write("no sessions stored\n")
                return 0
            rows: list[tuple[str, ...]] = [
                ("SESSION", "LAST STEP", "UPDATED", "CREATED")
            ]
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
            return 0
        if args.action == "show":
            cp = await store.load_latest(args.session)
            if cp is None:
                sys.stderr.write(f"no session {args.session!r} in {args.db}\n")
                return 1
            if args.json:
                out.write(dumps(_summary(cp), pretty=True) + "\n")
                return 0
            status = "complete" if is_complete(cp.frontier) else "open"
            out.write(f"session   {cp.session_id}\n")
            out.write(f"step      {cp.step} ({status})\n")
            out.write(f"frontier  {', '.join(cp.frontier) or '-'}\n")
            v = cp.state.versions
            out.write(
                f"versions  messages={v.messages} extra={v.extra} errors={v.errors}\n"
            )
            out.write(f"messages  ({len(cp.state.messages)})\n")
            for message in cp.state.messages[-args.last :]:
                out.write(f"  {message.role}: {message.content}\n")
            out.write(
                f"extra     {dumps(converter.unstructure(dict(cp.state.extra)))}\n"
            )
            for error in cp.state.errors:
                out.write(f"error     {error}\n")
            return 0
        page = await store.query_steps(
            args.session,
            limit=args.limit,
            offset=args.offset,
            ran_node=args.node,
        )
        if not page.checkpoints:
            sys.stderr.write(f"no steps for session {args.session!r} in {args.db}\n")
            return 1
        step_rows: list[tuple[str, ...]] = [
            ("STEP", "RAN", "SKIPPED", "UPDATED", "MESSAGES", "NEXT")
        ]
        step_rows += [
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
        _table(step_rows, out)
        more = " (more: raise --offset)" if page.has_next else ""
        out.write(f"{len(page.checkpoints)} of {page.total} steps{more}\n")
        return 0


def load_target(spec: str) -> Any:
    """Import ``module:attribute`` (an `App`, or a mapping of name to `App`)."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise WeavegraphError(
            f"expected module:attribute (like examples.sse_server:app), got {spec!r}"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current folder is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeavegraphError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise WeavegraphError(
            f"{module_name!r} has no attribute {attribute!r}"
        ) from None
    return target


async def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from contextlib import AsyncExitStack

    from .serve import serve_until_interrupted

    target = load_target(args.target)

    def announce(urls: list[str]) -> None:
        out.write(f"serving {args.target} on {', '.join(urls)} (Ctrl-C to stop)\n")
        out.flush()

    async with AsyncExitStack() as stack:
        store = (
            await stack.enter_async_context(open_store(args.db)) if args.db else None
        )
        signum = await serve_until_interrupted(
            target,
            host=args.host,
            port=args.port,
            checkpointer=store,
            announce=announce,
        )
    return 128 + signum if signum else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m weavegraph``."""
    parser = argparse.ArgumentParser(
        prog="python -m weavegraph", description="weavegraph command line"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve a graph over HTTP (SSE) with hypercorn's trio worker"
    )
    serve.add_argument("target", help="module:attribute of an App (or a dict of Apps)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--db", help="checkpoint runs to this SQLite file or PostgreSQL URL"
    )
    runs = commands.add_parser("runs", help="inspect stored sessions")
    actions = runs.add_subparsers(dest="action", required=True)
    db_help = "a SQLite file, or a PostgreSQL URL (postgresql://...)"
    listing = actions.add_parser("list", help="list stored sessions")
    listing.add_argument("--db", required=True, help=db_help)
    show = actions.add_parser("show", help="show a session's latest state")
    show.add_argument("session")
    show.add_argument("--db", required=True, help=db_help)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--last", type=int, default=10, help="messages to show")
    steps = actions.add_parser("steps", help="list a session's stored steps")
    steps.add_argument("session")
    steps.add_argument("--db", required=True, help=db_help)
    steps.add_argument("--limit", type=int, default=20)
    steps.add_argument("--offset", type=int, default=0)
    steps.add_argument("--node", help="only steps in which this node ran")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    try:
        return trio.run(_serve if args.command == "serve" else _runs, args, stream)
    except WeavegraphError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            return 130
        raise
