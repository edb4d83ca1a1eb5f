"""Every example runs as a script and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "hello.py": ["assistant: Hello!", "messages version: 2"],
    "conditional_loop.py": ["[count@5] count is now 5", "final count: 5"],
    "fan_out_join.py": ["a: count the stars | b: count the stars | c: count the stars"],
    "streaming_events.py": [
        "alice: fetched 100%",
        "bob: done (status=completed)",
        "llm.chunk: [LLM summary] is \nllm.final: [LLM summary] short.",
    ],
    "convenience_streaming.py": [
        "final extra: {'units': 3}",
        # node.start, three work events, node.end, step.end, the stream's end
        "memory sink: 7 events; channel: 7;",
        "events.jsonl: 7 lines",
    ],
    "event_backpressure.py": [
        "event stream lagged; dropped events",
        "block: received  5000, dropped     0, first 0, last 4999",
    ],
    "notebook_streaming.py": [
        "llm.final  'asyncio'",
        "invoke -> 'trio runs inside asyncio'",
        "cancelled from asyncio: the trio run was cancelled too",
        "extra -> {'weather': 'Lisbon: 21°C'}",
    ],
    "map_reduce.py": [
        "first run failed: ConnectionError: the model dropped sqlite.md",
        "task 2: sqlite.md summarised",
        "calls: attrs.md=1, hypercorn.md=2, sqlite.md=2, trio.md=1",
    ],
    "subgraphs.py": [
        '    subgraph n1_graph ["research"]',
        "first run failed: workflow failed in node 'summarise' at step 2:"
        " ConnectionError: the model is overloaded",
        "research/summarise: summarising",
        "ARTICLE: Read trio.readthedocs.io and attrs.org.",
        "sessions stored: a1, a1:research@1",
        "calls: search=1, summarise=2, write=1",
    ],
    "research_assistant.py": [
        "[synthesise @ step 3] combining 3 findings",
        "revision 2: approve",
        "status=completed step=7",
        "answer (2 revisions):",
    ],
}


# Servers run until stopped, workers.py needs a PostgreSQL URL and tool_agent.py a
# model endpoint; each has a test of its own (workers.py: tests/scale/test_example.py,
# tool_agent.py: tests/test_tool_agent.py).
SERVERS = {"sse_server.py", "workers.py", "tool_agent.py"}


def test_every_example_is_covered() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED) | SERVERS


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr  # logging goes to stderr
    for line in EXPECTED[script]:
        assert line in output, output


def test_research_assistant_sessions_take_new_turns(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    command = [sys.executable, str(EXAMPLES / "research_assistant.py")]
    command += ["--db", str(db), "--session", "demo"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "resumed" not in first.stdout and "new turn" not in first.stdout
    assert "revision 2: approve" in first.stdout
    # The stored session is a conversation: a new question is a new turn.
    second = subprocess.run(
        [*command, "How do bees navigate?"], capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert "new turn of session 'demo' from step 8" in second.stdout
    assert "planning research for: How do bees navigate?" in second.stdout
    assert "status=completed step=15" in second.stdout
    # No question: resume what is stored (complete, so nothing runs).
    third = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=120
    )
    assert third.returncode == 0, third.stderr
    assert "resumed session 'demo' from step 15 (complete" in third.stdout
    assert "revision 1" not in third.stdout  # nothing ran again
    listing = subprocess.run(
        [sys.executable, "-m", "weavegraph", "runs", "steps", "demo", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "16 of 16 steps" in listing.stdout


def test_sse_server_example_serves_until_interrupted() -> None:
    import signal
    import socket
    import time

    import httpx2

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "sse_server.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx2.get(f"{url}/", timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert page.status_code == 200
        with httpx2.stream(
            "POST", f"{url}/runs", json={"messages": ["x"]}, timeout=30
        ) as r:
            body = r.read().decode()
        assert "event: llm" in body and "status=completed step=2" in body
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert f"serving on http://127.0.0.1:{port}" in out
    assert "stopped" in out
