"""Fixtures for the knowledge-base tests: databases (SQLite, and PostgreSQL when reachable),
a fast hashing embedder, and the real default embedder (built once per session)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import KnowledgeBaseSettings
from knowledge_base.embedder import Embedder, HashingEmbedder
from models import Database

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def _pg_reachable() -> str | None:
    """None when PostgreSQL answers at 127.0.0.1:5432, else the reason to skip."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
    except OSError as exc:
        return f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc.strerror or exc})"
    engine = create_async_engine(PG_URL)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "skip"
        return f"PostgreSQL database 'test' not usable: {type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()
    return None


_PG_SKIP: list[str | None] = []


async def pg_skip_reason() -> str | None:
    """Why the PostgreSQL variant is skipped (checked once per session), or None."""
    if not _PG_SKIP:
        _PG_SKIP.append(await _pg_reachable())
    return _PG_SKIP[0]


async def _sqlite_db(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    return db


async def _pg_db(schema: str) -> Database:
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    db = Database(PG_URL, pool_size=2)

    @event.listens_for(db.engine.sync_engine, "connect")
    def _search_path(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.autocommit = True
        cur = dbapi_conn.cursor()
        cur.execute(f'SET SESSION search_path TO "{schema}"')
        cur.close()
        dbapi_conn.autocommit = False

    await db.upgrade()
    return db


async def _drop_pg_schema(schema: str) -> None:
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await admin.dispose()


@pytest_asyncio.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database in a temp dir."""
    db = await _sqlite_db(tmp_path / "kb.db")
    yield db
    await db.dispose()


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database: SQLite, then PostgreSQL in a schema of its own (skipped when no
    server is reachable)."""
    if request.param == "sqlite":
        db = await _sqlite_db(tmp_path / "kb.db")
        yield db
        await db.dispose()
        return
    reason = await pg_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    schema = f"kb_test_{uuid.uuid4().hex[:12]}"
    db = await _pg_db(schema)
    try:
        yield db
    finally:
        await db.dispose()
        await _drop_pg_schema(schema)


@pytest.fixture(scope="session")
def hashing_embedder() -> Embedder:
    """Character n-gram hashing: no model, deterministic, fast."""
    return HashingEmbedder()


@pytest.fixture(scope="session")
def hashing_intents(hashing_embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose ``intents/`` holds the bundled NLU classifier trained with the hashing
    embedder (trained once per session; copy it into a test's data dir to skip training)."""
    from knowledge_base.service import KnowledgeService

    data_dir = tmp_path_factory.mktemp("hashing-intents")
    service = KnowledgeService(
        db=None,  # type: ignore[arg-type]  # training needs no database
        settings=KnowledgeBaseSettings(data_dir=str(data_dir), sample=None),
        embedder=hashing_embedder,
    )
    service.train_classifier()
    return data_dir


@pytest.fixture
def seed_data_dir(hashing_intents: Path) -> Callable[[Path], Path]:
    """A function copying the pre-trained hashing intent classifier into a data dir."""

    def seed(data_dir: Path) -> Path:
        shutil.copytree(hashing_intents / "intents", data_dir / "intents", dirs_exist_ok=True)
        return data_dir

    return seed


@pytest.fixture(scope="session")
def real_kb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Embedder, Path]]:
    """The real default embedder and a data dir holding the bundled sample's index, intent
    classifier and tuned thresholds (built once; kept in pytest's cache dir so later runs
    only re-embed what changed)."""
    from knowledge_base.embedder import make_embedder
    from knowledge_base.service import KnowledgeService

    try:
        data_dir = Path(request.config.cache.mkdir("kb-real-data"))  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no cache dir: build in a temp dir
        data_dir = tmp_path_factory.mktemp("kb-real-data")
    # Thresholds are re-tuned every session (cheap) so edits to the sample never go stale.
    (data_dir / "thresholds.json").unlink(missing_ok=True)
    embedder = make_embedder("auto")
    db_path = tmp_path_factory.mktemp("kb-real") / "kb.db"

    async def build() -> None:
        db = await _sqlite_db(db_path)
        try:
            service = KnowledgeService(
                db=db,
                settings=KnowledgeBaseSettings(data_dir=str(data_dir), sample="bundled"),
                embedder=embedder,
            )
            await service.ensure_ready()
        finally:
            await db.dispose()

    asyncio.run(build())
    yield embedder, data_dir
