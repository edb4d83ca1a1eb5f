"""examples/workers.py against a real PostgreSQL: two workers, a server, a kill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "workers.py"


def test_the_workers_example_survives_its_kill(postgres_dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--db", postgres_dsn],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 workers and a server on http://127.0.0.1:" in out
    assert "posted 4 runs (detached)" in out
    assert "(SIGKILL) while it ran runs" in out
    for sid in ("t0", "t1", "t2", "t3"):
        assert f"{sid}: completed, ticks=20, attempts=" in out
    assert "attempts=2" in out  # at least one run was taken over
    assert "in order: True" in out
    assert out.rstrip().endswith("stopped")
