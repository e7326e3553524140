"""Small database helpers shared by the community services."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from community.errors import CommunityError
from models import Database

T = TypeVar("T")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def insert_ignore(db: Database, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL."""
    if db.is_sqlite:
        return sqlite.insert(table).on_conflict_do_nothing()
    return postgresql.insert(table).on_conflict_do_nothing()


async def retry_locked(fn: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    """Run ``fn`` again when SQLite reports a lock conflict between concurrent writers."""
    for i in range(attempts):
        try:
            return await fn()
        except OperationalError as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            await asyncio.sleep(0.01 * (i + 1))
    raise AssertionError("unreachable")


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value or ""):
        raise CommunityError(
            f"{what} {value!r} is not valid: use 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    return value
