"""Reducers: how the barrier combines the updates of a superstep.

Channel reducers (`add_messages`, `map_merge`, `add_errors`, or your own with
``GraphBuilder.with_reducer``) merge a whole channel. Key reducers fold every
write to one ``extra`` key (``GraphBuilder.with_key_reducer(key, reducer)``),
so parallel writes are combined instead of overwritten::

    builder.with_key_reducer("facts", reducers.append)  # or "append"

A reducer is a plain function ``(current, value) -> new``; the first write of an
absent key is stored as is.
"""

from __future__ import annotations

from ._core.reducers import Reducer as Reducer
from ._core.reducers import add as add
from ._core.reducers import add_errors as add_errors
from ._core.reducers import add_messages as add_messages
from ._core.reducers import append as append
from ._core.reducers import map_merge as map_merge
from ._core.reducers import merge as merge
from ._core.reducers import replace as replace

__all__ = (
    "Reducer",
    "add",
    "add_errors",
    "add_messages",
    "append",
    "map_merge",
    "merge",
    "replace",
)
