"""Suite-wide pytest configuration.

The folder holding this file is put on ``sys.path`` by pytest, so test modules
import shared code as ``from helpers import ...`` and ``from strategies import ...``.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "weavegraph",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("weavegraph")
