"""The scale-out tests import their apps as ``scale_apps`` (this folder is on
``sys.path``, and on the ``PYTHONPATH`` of the worker processes they start)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
