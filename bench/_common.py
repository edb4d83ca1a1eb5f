"""Shared helpers for the benchmark scripts in ``bench/``.

Nothing here depends on a particular event loop: the timing helpers only use
``time.perf_counter`` and plain ``await``, so they work the same under trio and
asyncio.  Scripts import it as ``_common`` after putting ``bench/`` on
``sys.path``, so they work both as ``python bench/<script>.py`` and as
``python -m bench.<script>``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.metadata
import importlib.util
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

# --------------------------------------------------------------------------- #
# Running one whole graph invocation
# --------------------------------------------------------------------------- #


@dataclass
class Probe:
    """Counts node-body calls during an untimed verification run."""

    calls: int = 0

    def hit(self) -> None:
        self.calls += 1


@dataclass(frozen=True)
class Runner:
    """One benchmarkable unit of work: a whole graph run.

    ``prepare`` builds the run's input (outside the timed region); ``run``
    performs the run and is the only thing that is timed.
    """

    prepare: Callable[[], Any]
    run: Callable[[Any], Awaitable[Any]]


async def time_runner(runner: Runner, *, runs: int, warmup: int) -> list[float]:
    """Time ``runs`` whole invocations of ``runner`` after ``warmup`` untimed ones.

    Returns wall-clock seconds per run.  Before timing, everything alive (imported
    libraries, the compiled graph) is moved to the GC's permanent generation with
    ``gc.freeze()``: the collector stays enabled during runs, but its passes only
    walk objects the run itself created, not whichever other frameworks this
    process happens to have imported.  A collection before every run (outside the
    timed region) keeps one run's garbage from being billed to the next.
    """
    for _ in range(warmup):
        await runner.run(runner.prepare())
    gc.collect()
    gc.freeze()
    try:
        samples: list[float] = []
        for _ in range(runs):
            payload = runner.prepare()
            gc.collect()
            start = time.perf_counter()
            await runner.run(payload)
            samples.append(time.perf_counter() - start)
    finally:
        gc.unfreeze()
    return samples


# --------------------------------------------------------------------------- #
# Outcomes of one (engine, workload) measurement
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Measured:
    """Successful measurement: wall-clock seconds of each timed run."""

    samples: Sequence[float]
    units: int
    """Number of node-steps / branches / iterations a run performs."""

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    @property
    def per_unit_us(self) -> float:
        return self.median_s / self.units * 1e6


@dataclass(frozen=True)
class Unavailable:
    """The engine could not be used at all (missing package, broken import)."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """The engine was importable but the workload raised or misbehaved."""

    error: str


Outcome = Measured | Unavailable | Failed


# --------------------------------------------------------------------------- #
# Event-loop selection
# --------------------------------------------------------------------------- #

Backend = Literal["trio", "asyncio"]


@dataclass
class LoopResult:
    """Value produced inside an event loop plus the loop that produced it."""

    value: Any
    backend: Backend
    fallback_reason: str | None = None


def run_on(backend: Backend, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn()`` to completion on a fresh event loop of the given kind."""
    if backend == "trio":
        return trio.run(fn)

    async def main() -> Any:
        return await fn()

    return asyncio.run(main())


def run_trio_else_asyncio(fn: Callable[[], Awaitable[Any]]) -> LoopResult:
    """Run ``fn()`` under trio; if that raises, retry it under asyncio.

    Meant for anyio-based libraries that should work on trio but might not.
    The retry reason is recorded so that it can be reported.
    """
    try:
        return LoopResult(run_on("trio", fn), "trio")
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    return LoopResult(run_on("asyncio", fn), "asyncio", fallback_reason=reason)


# --------------------------------------------------------------------------- #
# Formatting
# --------------------------------------------------------------------------- #


def fmt_us(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"


def fmt_ms(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


@dataclass
class Table:
    """Plain-text table.

    ``left`` is how many leading columns are left-aligned (labels); the rest are
    right-aligned (numbers).
    """

    headers: Sequence[str]
    left: int = 1
    rows: list[Sequence[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"expected {len(self.headers)} cells, got {len(cells)}")
        self.rows.append(cells)

    def render(self, indent: str = "  ") -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.ljust(w) if i < self.left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return indent + "  ".join(parts).rstrip()

        rule = indent + "  ".join("-" * w for w in widths)
        return "\n".join([line(self.headers), rule, *map(line, self.rows)])


# --------------------------------------------------------------------------- #
# Environment
# --------------------------------------------------------------------------- #


def dist_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or ``None`` if absent."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_line(dists: Sequence[str]) -> str:
    """One-line summary of interpreter, platform and package versions."""
    parts = [
        f"{platform.python_implementation()} {platform.python_version()}",
        f"{sys.platform}/{platform.machine()}",
    ]
    parts += [f"{dist} {dist_version(dist) or '-'}" for dist in dists]
    return " | ".join(parts)


def add_run_options(
    parser: argparse.ArgumentParser, *, unit: str, quick_help: str
) -> None:
    """The options every benchmark takes: --runs, --warmup and --quick."""
    parser.add_argument(
        "--runs", type=int, default=5, help=f"timed runs per {unit} (default 5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs first (default 1)"
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)


def check_run_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    """Reject impossible --runs and --warmup values."""
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")


def pick_subset(
    parser: argparse.ArgumentParser, flag: str, value: str, keys: Sequence[str]
) -> list[str]:
    """The comma-separated ``value`` of ``flag``, checked against ``keys``."""
    selected = [s.strip() for s in value.split(",") if s.strip()]
    unknown = sorted(set(selected) - set(keys))
    if unknown or not selected:
        parser.error(f"{flag}: unknown {unknown}; choose from {list(keys)}")
    return selected


def find_module(module: str, *, also_missing: Sequence[str] = ()) -> Any:
    """Import an optional peer: the module, or `Unavailable` saying why not.

    Tells "not installed" (the package, or one of ``also_missing``, is absent)
    from "installed but broken".
    """
    top = module.partition(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return Unavailable("not installed")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] in {top, *also_missing}:
            return Unavailable("not installed")
        return Unavailable(f"import failed ({type(exc).__name__}: {exc})")
    except Exception as exc:
        return Unavailable(f"import failed ({type(exc).__name__}: {exc})")
