"""CRM fixtures: a CrmService over the shared ``db`` fixture (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm import CrmPolicy, CrmService
from models import Database
from models.chat import ChatKind
from models.repositories import ChatRepository, ContactRepository, MessageRepository

NOW = datetime(2025, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


class FakeSender:
    """Records messages instead of sending them."""

    def __init__(self, fail_for: set[int] | None = None) -> None:
        self.sent: list[tuple[int, str, str]] = []
        self.fail_for = fail_for or set()

    async def send(self, contact_id: int, text: str, *, key: str) -> bool:
        if contact_id in self.fail_for:
            return False
        self.sent.append((contact_id, text, key))
        return True


class FakeIssuer:
    def __init__(self) -> None:
        self.issued: list[tuple[int, str, str]] = []

    async def issue(self, contact_id: int, *, reason: str, key: str) -> str | None:
        self.issued.append((contact_id, reason, key))
        return f"CPN-{len(self.issued)}"


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer()


@pytest.fixture
def crm(db: Database, sender: FakeSender, issuer: FakeIssuer) -> CrmService:
    return CrmService(db=db, policy=CrmPolicy(), sender=sender, issuer=issuer,
                      bot_username="kizuna_bot")


async def identity(db: Database, platform: str, external_id: str, name: str | None = None,
                   *, language: str | None = None) -> int:
    """Create (or find) a contact through its platform identity; returns the contact id."""
    async with db.session() as session:
        repo = ContactRepository(session)
        ident, _ = await repo.identify(platform, external_id, display_name=name)
        if language:
            await repo.set_language(ident.contact_id, language)
        return ident.contact_id


async def say(db: Database, platform: str, external_id: str, text: str,
              at: datetime | None = None) -> None:
    """Store an inbound private message from this identity."""
    async with db.session() as session:
        ident, _ = await ContactRepository(session).identify(platform, external_id)
        chat = await ChatRepository(session).upsert(platform, external_id, ChatKind.PRIVATE)
        msg = await MessageRepository(session).add_incoming(
            chat=chat, conversation_id=None, contact_id=ident.contact_id, text=text)
        if at is not None:
            msg.created_at = at


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path
