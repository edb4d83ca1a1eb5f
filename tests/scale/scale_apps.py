"""Apps the scale-out tests run in worker processes (importable as ``scale_apps``).

* ``fanout``: ``split`` fans out to ``a``, ``b`` and ``c``, joined by ``merge``,
  for ``extra["rounds"]`` rounds (default 3); each node sleeps
  ``extra["delay"]`` seconds (default 0.02), so a run spans several steps and a
  worker can be killed in the middle of one.
* ``chain``: ten nodes in a row, each appending its name (the bench's graph).
* ``slow``: one node that sleeps ``extra["delay"]`` seconds, ten times.
"""

from __future__ import annotations

import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
)


async def _pause(snapshot: StateSnapshot) -> None:
    await trio.sleep(float(snapshot.extra.get("delay", 0.02)))


async def split(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await _pause(snapshot)
    done = int(snapshot.extra.get("round", 0))
    return NodePartial(extra={"round": done + 1})


def branch(name: str):
    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await _pause(snapshot)
        ctx.emit(name, f"{name} in round {snapshot.extra['round']}")
        return NodePartial(
            messages=[Message.assistant(f"{name}{snapshot.extra['round']}")]
        )

    return node


async def merge(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    total = sum(1 for m in snapshot.messages if m.role == "assistant")
    return NodePartial(extra={"total": total})


def again(snapshot: StateSnapshot) -> str:
    return "split" if snapshot.extra["round"] < snapshot.extra.get("rounds", 3) else END


_fanout = GraphBuilder().add_node("split", split).add_node("merge", merge)
_fanout.add_edge(START, "split")
for _name in ("a", "b", "c"):
    _fanout.add_node(_name, branch(_name))
    _fanout.add_edge("split", _name)
_fanout.add_edge(["a", "b", "c"], "merge")
_fanout.add_conditional_edge("merge", again, path_map=["split", END])
fanout = _fanout.compile()


def _append(name: str):
    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(messages=[Message.assistant(name)])

    return node


_chain = GraphBuilder()
_previous = START
for _index in range(10):
    _chain.add_node(f"n{_index}", _append(f"n{_index}"))
    _chain.add_edge(_previous, f"n{_index}")
    _previous = f"n{_index}"
_chain.add_edge(_previous, END)
chain = _chain.compile()


async def tick(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await _pause(snapshot)
    return NodePartial(extra={"ticks": int(snapshot.extra.get("ticks", 0)) + 1})


def more(snapshot: StateSnapshot) -> str:
    return "tick" if snapshot.extra["ticks"] < snapshot.extra.get("limit", 10) else END


slow = (
    GraphBuilder()
    .add_node("tick", tick)
    .add_edge(START, "tick")
    .add_conditional_edge("tick", more, path_map=["tick", END])
    .compile()
)

APPS = {"fanout": fanout, "chain": chain, "slow": slow}
