"""examples/tool_agent.py against an OpenAI-compatible endpoint served in the test.

The endpoint (hypercorn's trio worker on 127.0.0.1) answers chat completions
requests with scripted turns in the streaming format: ``data: {chunk}`` frames,
tool calls as an id and name first and then fragments of their JSON arguments,
``data: [DONE]`` at the end. It records every request, and notices when a
client hangs up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx2
import openai
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from weavegraph import END, Message, Send, VersionedState
from weavegraph.errors import ConfigError, WorkflowError
from weavegraph.serve import serve_sse

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "tool_agent.py"

# The openai client leaves its stream's inner async generators to the garbage
# collector after ``data: [DONE]``; trio closes them but says so with a
# ResourceWarning (hidden outside of ``-W error``). Nothing else is ignored.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator '(openai|httpx2|httpcore2)[.]:ResourceWarning"
)


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("tool_agent", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tool_agent"] = module  # attrs resolves the module by name
    spec.loader.exec_module(module)
    return module


agent = load_example()


# ---------------------------------------------------------------- the endpoint


@attrs.define
class Turn:
    """One scripted answer: its deltas, then ``[DONE]`` unless it ``hold`` s."""

    deltas: list[dict[str, Any]]
    finish: str = "stop"
    hold: bool = False
    status: int = 200


def text(*tokens: str) -> list[dict[str, Any]]:
    return [{"content": token} for token in tokens]


def tool_call(
    index: int, id: str | None, name: str, pieces: Iterable[str]
) -> list[Any]:
    """A call as the API streams it: id, type and name, then argument pieces."""
    first: dict[str, Any] = {"index": index, "type": "function"}
    if id is not None:  # some local servers send none
        first["id"] = id
    out: list[dict[str, Any]] = [
        {"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]}
    ]
    out += [
        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
        for piece in pieces
    ]
    return out


@attrs.define
class ChatEndpoint:
    """An ASGI app answering POST /v1/chat/completions with ``turns`` in order."""

    turns: list[Turn]
    requests: list[dict[str, Any]] = attrs.Factory(list)
    authorization: list[str] = attrs.Factory(list)
    holding: trio.Event = attrs.Factory(trio.Event)
    disconnected: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["path"] == "/v1/chat/completions", scope["path"]
        assert scope["method"] == "POST"
        headers = dict(scope["headers"])
        self.authorization.append(headers.get(b"authorization", b"").decode())
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        self.requests.append(request)
        turn = self.turns[len(self.requests) - 1]
        if turn.status != 200:
            error = {"error": {"message": "bad key", "type": "invalid_request_error"}}
            await send(
                {
                    "type": "http.response.start",
                    "status": turn.status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await self._frame(send, json.dumps(error), more=False)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        deltas = [first, *turn.deltas, {}]
        for i, delta in enumerate(deltas):
            chunk = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": request["model"],
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": turn.finish if i == len(deltas) - 1 else None,
                    }
                ],
            }
            if turn.hold and i == len(deltas) - 1:
                break  # never finishes
            await self._frame(send, f"data: {json.dumps(chunk)}\n\n")
        if turn.hold:
            self.holding.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return
        await self._frame(send, "data: [DONE]\n\n", more=False)

    @staticmethod
    async def _frame(send: Any, data: str, *, more: bool = True) -> None:
        await send(
            {"type": "http.response.body", "body": data.encode(), "more_body": more}
        )
        # One frame at a time, as a model produces them.
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def running_endpoint(endpoint: ChatEndpoint) -> AsyncIterator[str]:
    """Serve ``endpoint`` on 127.0.0.1 for the block; yields its ``/v1`` URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            lambda task_status: serve(endpoint, config, task_status=task_status)
        )
        yield urls[0] + "/v1"
        nursery.cancel_scope.cancel()


def settings(url: str) -> Any:
    return agent.ModelSettings(base_url=url, model="test-model", api_key="test-key")


CALCULATE = tool_call(0, "call_a", "calculate", ['{"expre', 'ssion": "17', ' * 23"}'])
CAPITAL = tool_call(1, "call_b", "capital", ['{"coun', 'try": "Portugal"}'])
ANSWER = ("17 * 23", " is 391", "; the capital", " of Portugal is Lisbon.")


def two_calls_then_answer() -> ChatEndpoint:
    return ChatEndpoint(
        [
            Turn([*text("Let me", " check."), *CALCULATE, *CAPITAL], "tool_calls"),
            Turn(text(*ANSWER)),
        ]
    )


# ---------------------------------------------------------------------- tests


async def test_tokens_tool_calls_and_the_answer() -> None:
    endpoint = two_calls_then_answer()
    async with running_endpoint(endpoint) as url:
        app = agent.build(settings(url))
        question = agent.conversation("What is 17 * 23, and the capital of Portugal?")
        async with app.invoke_streaming(question) as (run, events):
            seen = [event async for event in events]
            final = await run.join()

    # Every token is an llm event, in order, one stream per turn.
    llm = [(e.stream_id, e.chunk, e.is_final) for e in seen if e.type == "llm"]
    assert llm == [
        ("turn-0", "Let me", False),
        ("turn-0", " check.", False),
        ("turn-0", "", True),
        *[("turn-1", token, False) for token in ANSWER],
        ("turn-1", "", True),
    ]
    # The fragments became two calls; each ran as its own Send task.
    assistant = final.messages[2]
    assert assistant.content == "Let me check."
    assert [(c.id, c.name, dict(c.arguments)) for c in assistant.tool_calls] == [
        ("call_a", "calculate", {"expression": "17 * 23"}),
        ("call_b", "capital", {"country": "Portugal"}),
    ]
    tools = [e for e in seen if e.scope_label == "tool"]
    assert sorted((e.metadata["task"], e.metadata["call_id"]) for e in tools) == [
        (0, "call_a"),
        (1, "call_b"),
    ]
    assert sorted(e.message for e in tools) == [
        'calculate({"expression": "17 * 23"}) -> 391',
        'capital({"country": "Portugal"}) -> Lisbon',
    ]
    starts = [
        e.metadata["task"]
        for e in seen
        if e.scope_label == "node.start" and e.metadata["node"] == "tool"
    ]
    assert sorted(starts) == [0, 1]
    # Their answers follow in call order, then the model's final answer.
    assert list(final.messages[3:5]) == [
        Message("tool", "391", tool_call_id="call_a", name="calculate"),
        Message("tool", "Lisbon", tool_call_id="call_b", name="capital"),
    ]
    assert final.messages[5] == Message.assistant("".join(ANSWER))
    assert len(final.messages) == 6

    # The second request carried the whole conversation in the chat format.
    first, second = endpoint.requests
    assert endpoint.authorization == ["Bearer test-key"] * 2
    assert first["model"] == "test-model" and first["stream"] is True
    assert [t["function"]["name"] for t in first["tools"]] == ["calculate", "capital"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    sent = second["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[2]["tool_calls"]] == ["call_a", "call_b"]
    assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {
        "expression": "17 * 23"
    }
    assert [(m["tool_call_id"], m["content"]) for m in sent[3:]] == [
        ("call_a", "391"),
        ("call_b", "Lisbon"),
    ]


async def test_the_last_turn_offers_no_tools() -> None:
    # A model that keeps calling tools: the second of two turns gets no tools
    # and has to answer.
    endpoint = ChatEndpoint([Turn(CALCULATE, "tool_calls"), Turn(text("It is 391."))])
    async with running_endpoint(endpoint) as url:
        final = await agent.build(settings(url), max_turns=2).invoke(
            agent.conversation("17 * 23?")
        )
    assert "tools" in endpoint.requests[0]
    assert "tools" not in endpoint.requests[1]
    assert final.messages[-1] == Message.assistant("It is 391.")


async def test_a_bad_call_is_answered_with_the_error() -> None:
    endpoint = ChatEndpoint(
        [
            Turn(tool_call(0, "call_x", "capital", ['{"country": "Atlantis"}'])),
            Turn(text("I do not know.")),
        ]
    )
    async with running_endpoint(endpoint) as url:
        final = await agent.build(settings(url)).invoke(agent.conversation("?"))
    answer = final.messages[3]
    assert answer.tool_call_id == "call_x"
    assert answer.content.startswith("error: no capital known for 'Atlantis'")
    assert endpoint.requests[1]["messages"][3]["content"] == answer.content


async def test_calls_without_ids_get_ids_of_their_own() -> None:
    endpoint = ChatEndpoint(
        [
            Turn(
                [
                    *tool_call(0, None, "capital", ['{"country": "Peru"}']),
                    *tool_call(1, None, "capital", ['{"country": "Kenya"}']),
                ]
            ),
            Turn(text("Lima and Nairobi.")),
        ]
    )
    async with running_endpoint(endpoint) as url:
        final = await agent.build(settings(url)).invoke(agent.conversation("?"))
    ids = ["turn-0-call-0", "turn-0-call-1"]
    assert [c.id for c in final.messages[2].tool_calls] == ids
    assert [(m.tool_call_id, m.content) for m in final.messages[3:5]] == [
        ("turn-0-call-0", "Lima"),
        ("turn-0-call-1", "Nairobi"),
    ]
    sent = endpoint.requests[1]["messages"]
    assert [m.get("tool_call_id") for m in sent[3:]] == ids


async def test_cancelling_the_run_closes_the_request_to_the_model() -> None:
    endpoint = ChatEndpoint([Turn(text("Thinking", " hard"), hold=True)])
    async with running_endpoint(endpoint) as url:
        app = agent.build(settings(url))
        async with app.invoke_streaming(agent.conversation("?")) as (run, events):
            async for event in events:
                if event.type == "llm":
                    assert event.chunk == "Thinking"
                    break  # leaving the block cancels the run
        assert run.cancelled
        with trio.fail_after(10):
            await endpoint.disconnected.wait()


async def test_a_client_leaving_the_server_closes_the_request_to_the_model() -> None:
    # The run is served over SSE; its client hangs up mid-answer.
    endpoint = ChatEndpoint([Turn(text("Thinking", " hard"), hold=True)])
    async with running_endpoint(endpoint) as url:
        app = agent.build(settings(url))
        async with trio.open_nursery() as nursery:
            served = await nursery.start(
                lambda task_status: serve_sse(app, port=0, task_status=task_status)
            )
            state = {"messages": ["?"]}
            async with httpx2.AsyncClient(timeout=30) as client:
                async with client.stream(
                    "POST", f"{served[0]}/runs", json=state
                ) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("event: llm"):
                            break
                    await endpoint.holding.wait()
            # The response is closed: the server cancels the run, and the run
            # closes its request.
            with trio.fail_after(10):
                await endpoint.disconnected.wait()
            nursery.cancel_scope.cancel()


async def test_an_endpoint_error_fails_the_run_with_it() -> None:
    endpoint = ChatEndpoint([Turn([], status=401)])
    async with running_endpoint(endpoint) as url:
        with pytest.raises(WorkflowError) as failed:
            await agent.build(settings(url)).invoke(agent.conversation("?"))
    assert "model" in str(failed.value)
    assert isinstance(failed.value.__cause__, openai.AuthenticationError)
    assert len(endpoint.requests) == 1  # a refused key is not retried


def test_settings_come_from_the_environment() -> None:
    found = agent.ModelSettings.from_env(
        {"TOOL_AGENT_BASE_URL": "http://127.0.0.1:1/v1", "TOOL_AGENT_MODEL": "m"}
    )
    assert found == agent.ModelSettings(
        base_url="http://127.0.0.1:1/v1", model="m", api_key="none"
    )
    with pytest.raises(ConfigError, match="set TOOL_AGENT_MODEL: "):
        agent.ModelSettings.from_env({"TOOL_AGENT_BASE_URL": "http://x/v1"})
    with pytest.raises(
        ConfigError, match="set TOOL_AGENT_BASE_URL and TOOL_AGENT_MODEL"
    ):
        agent.ModelSettings.from_env({})


def test_the_tools() -> None:
    assert agent.run_tool("calculate", {"expression": "(2 + 3) * 4 / 8"}) == "2.5"
    assert agent.run_tool("calculate", {"expression": "2 ** 10"}) == "1024"
    refused = {
        "__import__('os')": "only numbers",
        "2 **": "not an arithmetic expression",
        "1 / 0": "division by zero",
        "2 ** 1000": "exponents above 100",
    }
    for expression, reason in refused.items():
        got = agent.run_tool("calculate", {"expression": expression})
        assert got.startswith("error: ") and reason in got, got
    assert agent.run_tool("capital", {"country": " Peru "}) == "Lima"
    assert "missing a required argument" in agent.run_tool("capital", {})
    assert "takes text arguments" in agent.run_tool("capital", {"country": 3})
    assert "no tool named 'weather'" in agent.run_tool("weather", {"city": "Lima"})


def test_the_router_sends_each_call_or_ends() -> None:
    reply = Message.from_openai(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "function": {"name": "capital", "arguments": "{}"}},
                {"id": "b", "function": {"name": "capital", "arguments": "{}"}},
            ],
        }
    )
    route = agent.route_tool_calls
    assert route(agent.conversation("?").snapshot()) == END
    answered = VersionedState.with_messages([Message.user("?"), reply])
    assert route(answered.snapshot()) == [
        Send("tool", reply.tool_calls[0]),
        Send("tool", reply.tool_calls[1]),
    ]


async def test_the_example_runs_as_a_script() -> None:
    endpoint = two_calls_then_answer()
    async with running_endpoint(endpoint) as url:
        env = {
            **os.environ,
            "TOOL_AGENT_BASE_URL": url,
            "TOOL_AGENT_MODEL": "test-model",
            "TOOL_AGENT_API_KEY": "test-key",
        }
        with trio.fail_after(120):
            done = await trio.run_process(
                [sys.executable, str(SCRIPT), "17 * 23 and the capital of Portugal?"],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert out.startswith("Let me check.\n")
    assert '[tool task 0] calculate({"expression": "17 * 23"}) -> 391' in out
    assert '[tool task 1] capital({"country": "Portugal"}) -> Lisbon' in out
    assert out.endswith(
        "17 * 23 is 391; the capital of Portugal is Lisbon.\n"
        "answer: 17 * 23 is 391; the capital of Portugal is Lisbon.\n"
    )
    assert endpoint.requests[1]["messages"][1]["content"] == (
        "17 * 23 and the capital of Portugal?"
    )


def test_the_script_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOL_AGENT_")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "tool_agent: set TOOL_AGENT_BASE_URL and TOOL_AGENT_MODEL" in done.stderr
