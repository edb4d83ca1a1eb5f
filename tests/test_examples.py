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
    "research_assistant.py": [
        "[synthesise @ step 3] combining 3 findings",
        "revision 2: approve",
        "status=completed step=7",
        "answer (2 revisions):",
    ],
}


def test_every_example_is_covered() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)


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
    for line in EXPECTED[script]:
        assert line in result.stdout, result.stdout
