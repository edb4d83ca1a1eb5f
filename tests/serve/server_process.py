"""A server in its own process, for tests that signal it or starve it of files.

``python server_process.py [--nofile N] [option=value ...]`` serves a graph whose
one node ticks every 50 ms for a minute, on 127.0.0.1 and a free port, until
SIGINT or SIGTERM. It prints ``serving on <url>`` once it listens and
``stopped <signal>`` at the end. ``--nofile`` lowers the soft limit of open
files first; each ``option=value`` (a Python literal) goes to `sse_app`.
"""

from __future__ import annotations

import ast
import resource
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import ticker

from weavegraph.serve import serve_until_interrupted


def main(argv: list[str]) -> int:
    options = {}
    args = iter(argv)
    for arg in args:
        if arg == "--nofile":
            soft = int(next(args))
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        else:
            key, _, value = arg.partition("=")
            options[key] = ast.literal_eval(value)

    async def serve() -> int:
        return await serve_until_interrupted(
            ticker(count=1200, delay=0.05),
            port=0,
            announce=lambda urls: print(f"serving on {urls[0]}", flush=True),
            **options,
        )

    signum = trio.run(serve)
    print(f"stopped {signum}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
