"""The package's layers, pinned: nothing imports upward.

``_core`` is pure (standard library, attrs, itself); ``events`` and
``checkpoint`` sit on ``_core`` and the neutral modules (``_codec``, ``_trio``)
and know nothing of each other, the runtime or the server; ``_runtime`` never
imports ``serve``. Every import counts, also inside functions and under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "weavegraph"

# Third-party packages each layer may import (the standard library is always
# allowed).
THIRD_PARTY = {
    "_core": {"attrs"},
    "_codec": {"attrs", "cattrs", "orjson"},
    "_trio": {"trio"},
    "events": {"attrs", "cattrs", "trio"},
    "checkpoint": {"attrs", "cattrs", "trio", "psycopg", "psycopg_pool"},
}

FORBIDDEN = {
    "_core": {"_runtime", "events", "checkpoint", "serve", "_codec", "_trio"},
    "_codec": {"_runtime", "events", "checkpoint", "serve"},
    "_trio": {"_runtime", "events", "checkpoint", "serve", "_codec"},
    "events": {"_runtime", "checkpoint", "serve"},
    "checkpoint": {"_runtime", "events", "serve"},
    "_runtime": {"serve"},
    "scale": {"serve"},
}


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def imports(path: Path) -> list[tuple[int, str]]:
    """Absolute module names imported by ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["weavegraph", *path.relative_to(PACKAGE).parent.parts]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
                if node.module is None:
                    found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
                    continue
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def violations() -> list[str]:
    stdlib = sys.stdlib_module_names
    problems: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        for line, module in imports(path):
            top, _, rest = module.partition(".")
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            if top == "weavegraph":
                target = rest.split(".")[0]
                if not rest:
                    if layer in FORBIDDEN:
                        problems.append(f"{where} (the package root)")
                elif target in FORBIDDEN.get(layer, ()):
                    problems.append(where)
            elif (
                layer in THIRD_PARTY
                and top not in stdlib
                and top not in THIRD_PARTY[layer]
                and top != "__future__"
            ):
                problems.append(f"{where} (third-party)")
    return problems


def test_no_layer_imports_upward() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .._runtime.app import App\n", True),
        ("from ..events.codec import x\n", True),
        ("import attrs\nimport re\n", False),
        ("import trio\n", True),
        ("from . import state\n", False),
    ],
)
def test_the_checker_sees_core_violations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: bool
) -> None:
    # The rule itself can fail: a planted upward import in _core is reported.
    fake = tmp_path / "weavegraph"
    (fake / "_core").mkdir(parents=True)
    (fake / "_core" / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert bool(violations()) is expected
