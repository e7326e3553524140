"""Advisor accounts: create, change, password hashing (argon2id) and verification."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select

from bot.core.i18n import LANGUAGES
from models import Database
from models.advisors import Advisor, Role

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters
# A real hash to verify against when the user does not exist (same time either way).
_DUMMY = _hasher.hash("kizuna-no-such-user")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
MIN_PASSWORD = 10


class AccountError(ValueError):
    """Bad account data; the message names the field."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccountError("password: at most 1024 characters")
    return _hasher.hash(password)


def check_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(slots=True)
class AccountInput:
    username: str
    display_name: str | None = None
    password: str | None = None
    role: str = "advisor"
    languages: Sequence[str] = ()
    skills: Sequence[str] = ()
    capacity: int | None = None
    senior: bool = False
    telegram_username: str | None = None


def _clean(data: AccountInput, default_capacity: int) -> dict[str, object]:
    if not USERNAME_RE.match(data.username or ""):
        raise AccountError("username: 2-64 letters, digits, '_', '.' or '-'")
    try:
        role = Role(data.role)
    except ValueError:
        raise AccountError(f"role: one of {', '.join(r.value for r in Role)}") from None
    langs = [lang.strip().lower() for lang in data.languages if lang.strip()]
    bad = [lang for lang in langs if lang not in LANGUAGES]
    if bad:
        raise AccountError(f"languages: unknown {bad} (use {', '.join(LANGUAGES)})")
    capacity = data.capacity if data.capacity is not None else default_capacity
    if not 1 <= capacity <= 500:
        raise AccountError("capacity: 1-500")
    tg = (data.telegram_username or "").strip().lstrip("@") or None
    if tg is not None and not re.fullmatch(r"[A-Za-z0-9_]{3,64}", tg):
        raise AccountError("telegram username: letters, digits and '_'")
    return {
        "username": data.username, "display_name": (data.display_name or data.username)[:128],
        "role": role, "languages": langs,
        "skills": sorted({s.strip().lower() for s in data.skills if s.strip()}),
        "capacity": capacity, "senior": bool(data.senior), "telegram_username": tg,
    }


class Accounts:
    def __init__(self, db: Database, *, default_capacity: int = 5) -> None:
        self.db = db
        self.default_capacity = default_capacity

    async def create(self, data: AccountInput) -> int:
        values = _clean(data, self.default_capacity)
        pw = hash_password(data.password) if data.password else None
        async with self.db.session() as session:
            exists = (await session.execute(select(Advisor.id).where(
                func.lower(Advisor.username) == data.username.lower()))).scalar_one_or_none()
            if exists is not None:
                raise AccountError(f"username: {data.username!r} is taken")
            row = Advisor(password_hash=pw, **values)
            session.add(row)
            await session.flush()
            return row.id

    async def update(self, username: str, **changes: object) -> None:
        async with self.db.session() as session:
            row = await self._get(session, username)
            current = AccountInput(
                username=row.username, display_name=row.display_name, role=row.role.value,
                languages=row.languages or [], skills=row.skills or [], capacity=row.capacity,
                senior=row.senior, telegram_username=row.telegram_username)
            for key, value in changes.items():
                if value is not None:
                    setattr(current, key, value)
            values = _clean(current, self.default_capacity)
            values.pop("username")
            for key, value in values.items():
                setattr(row, key, value)
            if changes.get("telegram_username") is not None:
                row.telegram_user_id = None  # re-linked on the next message from that account

    async def set_password(self, username: str, password: str) -> None:
        hashed = hash_password(password)
        async with self.db.session() as session:
            row = await self._get(session, username)
            row.password_hash = hashed

    async def deactivate(self, username: str) -> None:
        async with self.db.session() as session:
            row = await self._get(session, username)
            row.active = False
            row.on_shift = False

    async def authenticate(self, username: str, password: str) -> int | None:
        """The advisor id for a correct username and password, else None (constant work)."""
        async with self.db.session() as session:
            row = (await session.execute(select(Advisor).where(
                func.lower(Advisor.username) == (username or "").lower(),
                Advisor.active.is_(True)))).scalar_one_or_none()
        ok = check_password(row.password_hash if row else None, password or "")
        return row.id if (ok and row is not None) else None

    @staticmethod
    async def _get(session: object, username: str) -> Advisor:
        row = (await session.execute(select(Advisor).where(  # type: ignore[attr-defined]
            func.lower(Advisor.username) == username.lower()))).scalar_one_or_none()
        if row is None:
            raise AccountError(f"no advisor {username!r}")
        return row


async def ensure_initial_admin(accounts: Accounts, data_dir: str) -> str | None:
    """On a fresh install (no advisor accounts at all) create ``admin`` with a random
    password, kept in ``data_dir/initial_admin_password`` (mode 0600) until changed; returns
    the password when it was created now or is still the initial one, else None."""
    import os
    import secrets
    from pathlib import Path

    path = Path(data_dir) / "initial_admin_password"
    async with accounts.db.session() as session:
        count = (await session.execute(select(func.count()).select_from(Advisor))).scalar_one()
        admin = (await session.execute(select(Advisor).where(Advisor.username == "admin"))
                 ).scalar_one_or_none()
    if count == 0:
        password = secrets.token_urlsafe(12)
        await accounts.create(AccountInput(username="admin", display_name="Admin",
                                           password=password, role="admin"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return password
    if admin is not None and path.is_file():
        password = path.read_text().strip()
        if check_password(admin.password_hash, password):
            return password
        path.unlink(missing_ok=True)  # changed since: forget the initial one
    return None
