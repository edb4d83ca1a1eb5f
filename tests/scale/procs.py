"""Worker and server processes for the scale-out tests (all on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class Proc:
    """One ``python -m weavegraph ...`` process; `stop` ends it (bounded)."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
        env["PYTHONUNBUFFERED"] = "1"
        # Closed with the process object; a file never fills up like a pipe.
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "weavegraph", *args],
            cwd=str(ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.first_line = ""
        self.log = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, timeout: float = 30.0) -> str:
        """The first line it prints (its announcement), within ``timeout``."""
        stdout = self.popen.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        line = _read_line(stdout, deadline)
        if not line:
            self.stop()
            raise AssertionError(
                f"process {self.popen.args} printed nothing:\n{self.stderr_text}"
            )
        self.first_line = line
        return line

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status. Keeps what
        it wrote on stderr (`stderr_text`) and closes its files."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if not self._stderr.closed:
            self._stderr.seek(0)
            self.log = self._stderr.read()
            self._stderr.close()
            assert self.popen.stdout is not None
            self.popen.stdout.close()
        return self.popen.returncode

    @property
    def stderr_text(self) -> str:
        """Everything it wrote on stderr (once stopped)."""
        return self.log


def _read_line(stream: IO[str], deadline: float) -> str:
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                return stream.readline()
        return ""
    finally:
        selector.close()


def worker(dsn: str, *extra: str, concurrency: int = 4, lease: float = 2.0) -> Proc:
    """A worker process serving `scale_apps.APPS`, started and announced."""
    proc = Proc(
        "worker",
        "scale_apps:APPS",
        "--db",
        dsn,
        "--concurrency",
        str(concurrency),
        "--lease",
        str(lease),
        *extra,
    )
    line = proc.wait_for_line()
    assert line.startswith("worker "), line
    return proc


def worker_name(proc: Proc) -> str:
    return proc.first_line.split()[1]


def server(dsn: str) -> tuple[Proc, str]:
    """A ``serve --queue`` process for `scale_apps.APPS` on a free port; its URL."""
    import re

    proc = Proc("serve", "scale_apps:APPS", "--db", dsn, "--queue", "--port", "0")
    line = proc.wait_for_line()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, line
    return proc, found.group(0)
