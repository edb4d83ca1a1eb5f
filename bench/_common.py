"""What every benchmark shares: options, the measuring loop, tables, optional peers.

A script describes its rows as `Case`s and hands them to `measure`, which runs
each case once untimed and checks its result, then times ``--runs`` rounds, every
case once per round (so a noisy phase of a shared machine hits all rows alike),
and returns the median of each. Only what a case wraps in its `Stopwatch` is
timed. Everything runs on one trio loop; asyncio-only peers run their samples on
a fresh asyncio loop in a worker thread while trio waits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.metadata
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import trio


class CheckFailed(AssertionError):
    """A benchmark produced a wrong result; its timings would mean nothing."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Stopwatch:
    """Adds up the time spent inside its ``with`` blocks (or start/stop pairs)."""

    __slots__ = ("_start", "elapsed")

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._start = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        self.elapsed += time.perf_counter() - self._start

    def __enter__(self) -> Stopwatch:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Case:
    """One measured row.

    ``run(watch)`` does one unit of work and returns what ``check`` verifies
    (``check`` raises `CheckFailed`, or returns an awaitable that may raise).
    The figure is seconds per ``units``.
    """

    name: str
    run: Callable[[Stopwatch], Awaitable[Any]]
    check: Callable[[Any], Any]
    units: int = 1
    loop: Literal["trio", "asyncio"] = "trio"


def whole(fn: Callable[[], Awaitable[Any]]) -> Callable[[Stopwatch], Awaitable[Any]]:
    """A `Case.run` that times all of ``fn()``."""

    async def run(watch: Stopwatch) -> Any:
        with watch:
            return await fn()

    return run


async def _sample(case: Case) -> tuple[float, Any]:
    watch = Stopwatch()
    if case.loop == "trio":
        value = await case.run(watch)
    else:
        value = await trio.to_thread.run_sync(lambda: asyncio.run(case.run(watch)))
    if watch.elapsed <= 0:
        raise RuntimeError(f"{case.name}: the run timed nothing")
    return watch.elapsed, value


async def measure(cases: Sequence[Case], runs: int) -> dict[str, float]:
    """Median seconds per unit of every case, by name (see the module docstring).

    Before every sample a collection runs and what survives it is moved out of
    the collector's reach (``gc.freeze``), so that no row pays for the imports,
    caches or leftovers of the others: each sample's collections see only what
    it allocates itself.
    """
    for case in cases:
        _, value = await _sample(case)
        try:
            verdict = case.check(value)
            if isinstance(verdict, Awaitable):
                await verdict
        except CheckFailed as exc:
            raise CheckFailed(f"{case.name}: {exc}") from None
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    try:
        for _ in range(runs):
            for case in cases:
                gc.collect()
                gc.freeze()
                elapsed, _ = await _sample(case)
                samples[case.name].append(elapsed / case.units)
    finally:
        gc.unfreeze()
    return {name: statistics.median(values) for name, values in samples.items()}


# ----------------------------------------------------------------- options, output


def options(
    description: str, flags: Mapping[str, str] | None = None, **sizes: tuple[Any, Any]
) -> argparse.Namespace:
    """``--quick`` and ``--runs``; ``flags`` maps a bench's own switches to
    their help; ``sizes`` maps a name to (full, quick) values."""
    parser = argparse.ArgumentParser(description=description)
    for flag, text in (flags or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=text)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and one timed run: a smoke test that still checks results",
    )
    parser.add_argument(
        "--runs", type=int, help="timed runs per row, median taken (default 5; 1 quick)"
    )
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    for name, (full, quick) in sizes.items():
        setattr(args, name, quick if args.quick else full)
    return args


def header(title: str, args: argparse.Namespace, dists: Sequence[str]) -> None:
    versions = [f"{dist} {_version(dist)}" for dist in ("trio", *dists)]
    mode = "quick sizes" if args.quick else "full sizes"
    print(f"{title} | Python {platform.python_version()} | {', '.join(versions)}")
    print(f"{mode}, median of {args.runs} timed run(s), results checked first")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a plain table: the first column left-aligned, the rest right."""
    widths = [
        max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        parts = [first.ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        return "  " + "  ".join(parts).rstrip()

    print(f"\n{title}")
    print(line(headers))
    for row in rows:
        print(line(row))


def us(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1e6
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.2f}"


def rate(seconds_per_unit: float | None) -> str:
    return "-" if seconds_per_unit is None else f"{1 / seconds_per_unit:,.0f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def peer(module: str, quick: bool) -> ModuleType | None:
    """Import a peer framework. Quick mode (CI) needs every peer; a full run
    reports a missing one and goes on without it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if quick:
            raise SystemExit(
                f"{module} is missing ({exc}); install the bench extra:"
                " pip install -e '.[dev,bench]'"
            ) from exc
        print(f"skipped: {module} is not installed ({exc})")
        return None
