"""Shared fixtures: databases (SQLite always, PostgreSQL when reachable) and fakes."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from models import Database

PG_URL = os.environ.get("KIZUNA_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KIZUNA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


PG_AVAILABLE = _reachable("127.0.0.1", 5432)
REDIS_AVAILABLE = _reachable("127.0.0.1", 6379)
requires_pg = pytest.mark.skipif(
    not PG_AVAILABLE, reason="PostgreSQL is not running on 127.0.0.1:5432"
)
requires_redis = pytest.mark.skipif(
    not REDIS_AVAILABLE, reason="Redis is not running on 127.0.0.1:6379"
)


async def make_pg_database() -> tuple[Database, str]:
    import asyncpg

    schema = f"kz_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return Database(PG_URL, schema=schema, pool_size=5), schema


async def drop_pg_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def db(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Database]:  # type: ignore[no-untyped-def]
    """A migrated database: SQLite file, and PostgreSQL in its own schema when reachable."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path}/test.db")
        await database.upgrade()
        yield database
        await database.dispose()
    else:
        database, schema = await make_pg_database()
        await database.upgrade()
        yield database
        await database.dispose()
        await drop_pg_schema(schema)


@pytest.fixture
async def sqlite_db(tmp_path) -> AsyncIterator[Database]:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/test.db")
    await database.upgrade()
    yield database
    await database.dispose()


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    del config
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


__all__ = ["asyncio", "requires_pg", "requires_redis"]
