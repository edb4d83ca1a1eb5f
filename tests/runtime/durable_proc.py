"""One phase of a reviewed run in a process of its own, for the kill -9 test.

``python durable_proc.py STORE LOG PHASE`` (STORE: a SQLite path or a
PostgreSQL DSN) runs the session ``d`` of a graph whose one node calls three
expensive functions between two interrupts. Each call appends ``<name> start``
and ``<name> done`` lines to LOG (flushed and synced), so the test can count
the calls that finished. PHASE: ``start`` runs to the first pause; ``answer``
answers it (``approve``) and runs on; ``recover`` resumes after a crash;
``sign`` answers the second interrupt. The third call of the ``answer`` phase
blocks, for the test to kill the process there. Prints what the session asks
(the pending interrupts' payloads) or, once complete, its ``extra``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import trio

from weavegraph import (
    END,
    START,
    Checkpointer,
    GraphBuilder,
    NodeContext,
    NodePartial,
    PostgresCheckpointer,
    Resume,
    RuntimeConfig,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
    open_runner,
)


def main(store_at: str, log: str, phase: str) -> None:
    def record(line: str) -> None:
        with open(log, "a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    async def expensive(name: str) -> str:
        record(f"{name} start")
        if name == "three" and phase == "answer":
            await trio.sleep_forever()  # killed here
        await trio.sleep(0.01)
        record(f"{name} done")
        return f"{name}!"

    async def review(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        one = await ctx.task("one", expensive, "one")
        verdict = await ctx.interrupt("approve?")
        two = await ctx.task("two", expensive, "two")
        three = await ctx.task("three", expensive, "three")
        signature = await ctx.interrupt("sign?")
        return NodePartial(
            extra={"results": [one, two, three], "by": [verdict, signature]}
        )

    async def run() -> None:
        store: Checkpointer
        if store_at.startswith("postgresql://"):
            store = PostgresCheckpointer(store_at)
        else:
            store = SQLiteCheckpointer(store_at)
        async with store:
            app = (
                GraphBuilder()
                .add_node("review", review)
                .add_edge(START, "review")
                .add_edge("review", END)
                .compile(RuntimeConfig(checkpointer=store))
            )
            given: Any = {
                "start": VersionedState.with_user_message("go"),
                "answer": Resume("approve"),
                "recover": None,
                "sign": Resume("Ann"),
            }[phase]
            state = await app.invoke(given, session_id="d")
            async with open_runner(app, checkpointer=store) as runner:
                asked = [i.payload for i in (await runner.get_state("d")).interrupts]
            print(asked or dict(state.extra), flush=True)

    trio.run(run)


if __name__ == "__main__":
    main(*sys.argv[1:])
