"""Suite-wide pytest configuration.

The folder holding this file is put on ``sys.path`` by pytest, so test modules
import shared code as ``from helpers import ...`` and ``from strategies import ...``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "weavegraph",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("weavegraph")


# ----------------------------------------------------------------- PostgreSQL

DSN_VARIABLE = "WEAVEGRAPH_TEST_POSTGRES_DSN"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL DSN: the one in the environment, or a throwaway cluster.

    A missing server is a failure, never a skip: the Postgres tests always run.
    """
    given = os.environ.get(DSN_VARIABLE)
    if given:
        yield given
        return
    from pgcluster import Cluster, PostgresUnavailable

    try:
        cluster = Cluster()
        dsn = cluster.start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield dsn
    finally:
        cluster.stop()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped after the test."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in postgres_server else "?"
    yield f"{postgres_server}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
