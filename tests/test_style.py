"""House rules that a linter does not check."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "weavegraph"


def test_memory_channels_are_never_closed_with_async_with() -> None:
    # ``async with channel:`` can hide the real exception inside a cancelled scope.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncWith):
                for item in node.items:
                    text = ast.unparse(item.context_expr)
                    if any(
                        word in text for word in ("send", "recv", "receive", "inbox")
                    ):
                        offenders.append(f"{path.name}:{node.lineno}: {text}")
    assert offenders == []


def test_core_never_imports_trio() -> None:
    for path in (PACKAGE / "_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "trio" for a in node.names), path
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "trio", path


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()
