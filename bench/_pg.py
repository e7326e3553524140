"""A throwaway PostgreSQL database on the local server for benchmarks."""

from __future__ import annotations

import uuid

SERVER = "postgresql://postgres@127.0.0.1:5432"


async def pg_database() -> tuple[str, str] | None:
    """Create a fresh database; ``(url, name)``, or ``None`` when no server answers."""
    try:
        import asyncpg

        conn = await asyncpg.connect(f"{SERVER}/test", timeout=3)
    except Exception:
        return None
    name = f"kizuna_bench_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return f"{SERVER}/{name}", name


async def drop_pg(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{SERVER}/test")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()
