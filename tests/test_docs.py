"""Every ``python`` block in the README and docs/ runs, in order, per page.

Blocks of one page share a namespace. A block with top-level ``await`` runs in a
fresh trio loop (it stands for code inside a trio task).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def run_block(source: str, namespace: dict[str, Any], where: str) -> None:
    code = compile(source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:

        async def main() -> None:
            await eval(code, namespace)

        trio.run(main)
    else:
        exec(code, namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_code_runs(page: Path) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    blocks = BLOCK.findall(page.read_text())
    for index, source in enumerate(blocks):
        where = f"{page.name}[block {index + 1}]"
        if "trio.run(" in source and "await " not in source:
            # A script-style block: it starts its own trio loop.
            exec(compile(source, where, "exec"), namespace)
            continue
        run_block(source, namespace, where)


def test_blocks_are_found() -> None:
    found = {p.name: len(BLOCK.findall(p.read_text())) for p in PAGES}
    assert found["tutorial.md"] >= 4
    assert found["README.md"] >= 2
    assert found["streaming.md"] >= 9
    assert found["persistence.md"] >= 3
