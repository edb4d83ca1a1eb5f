"""A tool-calling agent over any OpenAI-compatible chat completions endpoint.

::

    START -> model --(a Send("tool", call) per tool call)--> tool -> model
                   \\--(no tool calls)--> END

``model`` streams a reply from the endpoint, emitting each token as an ``llm``
event (stream id ``turn-N``), and returns the assistant `Message` with the tool
calls the model asked for. The router on ``model`` sends each call to ``tool``
as its own task of the next step (``ctx.payload`` is the call, ``ctx.task_index``
its place); ``tool`` runs one of two small local tools and answers with
``Message.tool_result``. The tasks' messages merge in call order, and the edge
``tool -> model`` schedules ``model`` once, after every call of the step: that
is the join. The last turn offers no tools, so the loop ends.

Environment:
    TOOL_AGENT_BASE_URL: The endpoint's base URL, ``/v1`` included (required),
        for example ``http://127.0.0.1:8080/v1`` for a local server.
    TOOL_AGENT_MODEL: The model name to ask for (required).
    TOOL_AGENT_API_KEY: The key, sent as a bearer token (default ``none``, for
        local servers that take none).

The HTTP client is the official ``openai`` package, an optional extra
(``pip install 'weavegraph[openai]'``); it runs on trio through anyio. Each
model call opens its own client in an ``async with`` block, so a cancelled run
closes the request to the model at once.

Run::

    TOOL_AGENT_BASE_URL=http://127.0.0.1:8080/v1 TOOL_AGENT_MODEL=my-model \\
        python examples/tool_agent.py "What is 17 * 23, and the capital of Peru?"
"""

from __future__ import annotations

import ast
import inspect
import json
import operator
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    Send,
    StateSnapshot,
    VersionedState,
)
from weavegraph.errors import ConfigError, UsageError

SYSTEM_PROMPT = (
    "You are a careful assistant. Use the calculate tool for arithmetic and the"
    " capital tool for capital cities; call several tools at once when you can."
)

# ---------------------------------------------------------------------- tools

CAPITALS = {
    "france": "Paris",
    "japan": "Tokyo",
    "kenya": "Nairobi",
    "peru": "Lima",
    "portugal": "Lisbon",
}

_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


class ToolInputError(ValueError):
    """A tool was called with arguments it cannot use; the model is told why."""


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ToolInputError("exponents above 100 are refused")
        try:
            return _OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolInputError("division by zero") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ToolInputError(
        "only numbers, + - * / // % ** and parentheses are allowed,"
        f" not {ast.dump(node)[:40]}"
    )


def calculate(expression: str) -> str:
    """The value of an arithmetic expression, as text (``"17 * 23"`` -> ``"391"``)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ToolInputError(f"not an arithmetic expression: {expression!r}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def capital(country: str) -> str:
    """The capital of one of a few countries (a fixed table)."""
    found = CAPITALS.get(country.strip().lower())
    if found is None:
        raise ToolInputError(
            f"no capital known for {country!r}; known: {', '.join(sorted(CAPITALS))}"
        )
    return found


LOCAL_TOOLS: dict[str, Callable[..., str]] = {
    "calculate": calculate,
    "capital": capital,
}

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate an arithmetic expression exactly.",
            "parameters": {
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "description": "e.g. 17 * 23"}
                },
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "capital",
            "description": "The capital city of a country.",
            "parameters": {
                "type": "object",
                "properties": {"country": {"type": "string"}},
                "required": ["country"],
            },
        },
    },
]


def run_tool(name: str, arguments: Mapping[str, Any]) -> str:
    """Run the local tool ``name``; bad calls come back as ``error: ...`` text.

    A model that calls a tool wrongly should read why and try again, so a wrong
    name or argument is an answer, not a failed run.
    """
    tool = LOCAL_TOOLS.get(name)
    if tool is None:
        return f"error: no tool named {name!r}; the tools are {sorted(LOCAL_TOOLS)}"
    try:
        bound = inspect.signature(tool).bind(**arguments)
    except TypeError as exc:
        return f"error: {name}: {exc}"
    if not all(isinstance(v, str) for v in bound.arguments.values()):
        return f"error: {name} takes text arguments, got {dict(arguments)!r}"
    try:
        return tool(*bound.args, **bound.kwargs)
    except ToolInputError as exc:
        return f"error: {exc}"


# ---------------------------------------------------------------------- model


@attrs.frozen(kw_only=True)
class ModelSettings:
    """Where the model is: an OpenAI-compatible endpoint, a model, a key."""

    base_url: str
    model: str
    api_key: str = "none"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ModelSettings:
        """Read ``TOOL_AGENT_BASE_URL``, ``TOOL_AGENT_MODEL``, ``TOOL_AGENT_API_KEY``.

        Raises:
            ConfigError: the base URL or the model is not set.
        """
        base_url = environ.get("TOOL_AGENT_BASE_URL", "").strip()
        model = environ.get("TOOL_AGENT_MODEL", "").strip()
        missing = [
            name
            for name, value in (
                ("TOOL_AGENT_BASE_URL", base_url),
                ("TOOL_AGENT_MODEL", model),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"set {' and '.join(missing)}: the agent needs an OpenAI-compatible"
                " endpoint (for example TOOL_AGENT_BASE_URL=http://127.0.0.1:8080/v1)"
                " and a model name"
            )
        return cls(
            base_url=base_url,
            model=model,
            api_key=environ.get("TOOL_AGENT_API_KEY", "").strip() or "none",
        )


async def stream_reply(
    settings: ModelSettings,
    messages: Sequence[Message],
    ctx: NodeContext,
    *,
    stream_id: str,
    tools: list[dict[str, Any]] | None,
) -> Message:
    """Ask the model for its next message, streaming the tokens as ``llm`` events.

    Text deltas are emitted as they arrive; tool calls arrive as fragments
    (an id and name first, then pieces of the JSON arguments) keyed by their
    index, and are put together here. Cancelling this cancels the HTTP request:
    the stream and the client are closed by their ``async with`` blocks.

    Raises:
        UsageError: the ``openai`` package is not installed.
        openai.APIError: the endpoint failed (the node fails with it).
        StateError: the model's tool arguments are not a JSON object.
    """
    try:
        import openai
    except ImportError:  # pragma: no cover - depends on the extra
        raise UsageError(
            "the tool agent needs the openai client: pip install 'weavegraph[openai]'"
        ) from None
    options: dict[str, Any] = {"tools": tools} if tools else {}
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    async with openai.AsyncOpenAI(
        base_url=settings.base_url, api_key=settings.api_key
    ) as client:
        stream = await client.chat.completions.create(
            model=settings.model,
            messages=[m.to_openai() for m in messages],
            stream=True,
            **options,
        )
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue  # one reply was asked for
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        ctx.emit_llm_chunk(stream_id, delta.content)
                    for part in delta.tool_calls or ():
                        call = calls.setdefault(
                            part.index, {"id": "", "name": "", "arguments": ""}
                        )
                        call["id"] += part.id or ""
                        if part.function is not None:
                            call["name"] += part.function.name or ""
                            call["arguments"] += part.function.arguments or ""
    ctx.emit_llm_final(stream_id)
    return Message.from_openai(
        {
            "role": "assistant",
            "content": "".join(text),
            "tool_calls": [
                {
                    # Some local servers send no ids; the answers need one each.
                    "id": c["id"] or f"{stream_id}-call-{index}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for index, c in sorted(calls.items())
            ],
        }
    )


# ---------------------------------------------------------------------- graph


def route_tool_calls(snapshot: StateSnapshot) -> list[Send] | str:
    """The router on ``model``: a ``Send("tool", call)`` per call, else END."""
    calls = snapshot.messages[-1].tool_calls
    if not calls:
        return END
    return [Send("tool", call) for call in calls]


async def call_tool(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    """One sent task: run the call in ``ctx.payload``, answer it."""
    call = ctx.payload
    result = run_tool(call.name, call.arguments)
    arguments = json.dumps(dict(call.arguments))
    ctx.emit("tool", f"{call.name}({arguments}) -> {result}", call_id=call.id)
    return NodePartial(messages=[Message.tool_result(call, result)])


def build(settings: ModelSettings, *, max_turns: int = 4) -> App:
    """The agent: ``model`` -> a ``Send`` per tool call -> ``tool`` -> ``model``.

    Args:
        settings: The endpoint and model.
        max_turns: How many model turns a run may take; the last one is offered
            no tools, so the model has to answer.
    """

    async def model(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        turn = sum(1 for m in snapshot.messages if m.role == "assistant")
        reply = await stream_reply(
            settings,
            snapshot.messages,
            ctx,
            stream_id=f"turn-{turn}",
            tools=TOOL_SPECS if turn + 1 < max_turns else None,
        )
        return NodePartial(messages=[reply])

    return (
        GraphBuilder()
        .add_node("model", model)
        .add_node("tool", call_tool)
        .add_edge(START, "model")
        .add_conditional_edge("model", route_tool_calls)
        .add_edge("tool", "model")
        # model and tool alternate: 2 steps a turn bound the loop.
        .compile(RuntimeConfig(max_steps=2 * max_turns))
    )


def conversation(question: str) -> VersionedState:
    """The starting state: the system prompt and the user's question."""
    return VersionedState(
        messages=[Message.system(SYSTEM_PROMPT), Message.user(question)]
    )


async def main(question: str) -> VersionedState:
    """Run the agent on ``question``, printing tokens and tool calls as they come."""
    app = build(ModelSettings.from_env())
    async with app.invoke_streaming(conversation(question)) as (run, events):
        async for event in events:
            if event.type == "llm":
                print(event.chunk, end="\n" if event.is_final else "", flush=True)
            elif event.scope_label == "tool":
                print(f"[tool task {event.metadata['task']}] {event.message}")
        final = await run.join()
    print(f"answer: {final.messages[-1].content}")
    return final


if __name__ == "__main__":
    asked = " ".join(sys.argv[1:]) or "What is 17 * 23, and the capital of Portugal?"
    try:
        trio.run(main, asked)
    except ConfigError as exc:
        sys.exit(f"tool_agent: {exc}")
