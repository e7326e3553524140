"""Repository tests, on SQLite and on PostgreSQL (when it runs on this machine)."""

from __future__ import annotations

import asyncio

import pytest

from models import ChatKind, ConversationStatus, Database, MessageStatus
from models.repositories import (
    ChatRepository,
    ContactRepository,
    ConversationRepository,
    InvalidTransition,
    MessageRepository,
)


async def test_migrations_reach_head(db: Database):
    assert await db.current_revision() == Database.head_revision()


async def test_identity_is_unique_per_platform(db: Database):
    async with db.session() as s:
        a, created_a = await ContactRepository(s).identify("telegram", "42", display_name="Aiko")
        b, created_b = await ContactRepository(s).identify("telegram", "42", username="aiko")
        c, _ = await ContactRepository(s).identify("webchat", "42")
    assert created_a and not created_b
    assert a.id == b.id and a.contact_id == b.contact_id
    assert c.contact_id != a.contact_id
    async with db.session() as s:
        again = await ContactRepository(s).get_identity("telegram", "42")
        assert again is not None and again.username == "aiko"
        assert again.contact.display_name == "Aiko"


async def test_concurrent_identify_creates_one_identity(db: Database):
    async def one() -> int:
        async with db.session() as s:
            ident, _ = await ContactRepository(s).identify("telegram", "777")
            return ident.id

    ids = await asyncio.gather(*(one() for _ in range(8)))
    assert len(set(ids)) == 1


async def test_status_changes_in_one_place_with_events(db: Database):
    async with db.session() as s:
        ident, _ = await ContactRepository(s).identify("telegram", "1")
        chat = await ChatRepository(s).upsert("telegram", "1", ChatKind.PRIVATE)
        convs = ConversationRepository(s)
        conv = await convs.current(chat, ident.contact_id)
        assert conv.status is ConversationStatus.BOT
        await convs.change_status(conv, ConversationStatus.WAITING, actor="contact")
        await convs.change_status(conv, ConversationStatus.WITH_ADVISOR, actor="advisor:mei",
                                  assignee="mei")
        assert conv.assignee == "mei"
        await convs.change_status(conv, ConversationStatus.RESOLVED, actor="advisor:mei")
        with pytest.raises(InvalidTransition):
            await convs.change_status(conv, ConversationStatus.WITH_ADVISOR)
        events = await convs.events(conv.id)
        assert [(e.from_status, e.to_status) for e in events if e.kind == "status"] == [
            ("bot", "waiting"), ("waiting", "with_advisor"), ("with_advisor", "resolved")]
        # A resolved conversation is not reopened: the next message starts a new one.
        newer = await convs.current(chat, ident.contact_id)
        assert newer.id != conv.id and newer.status is ConversationStatus.BOT


async def test_messages_in_and_out_are_stored(db: Database):
    async with db.session() as s:
        chat = await ChatRepository(s).upsert("telegram", "-100", ChatKind.GROUP, "Moms")
        msgs = MessageRepository(s)
        text = "مرحبا 👋 " + "x" * 5000
        incoming = await msgs.add_incoming(chat=chat, conversation_id=None, contact_id=None,
                                           text=text, platform_message_id="5")
        out = await msgs.add_outgoing(chat_id=chat.id, conversation_id=None, contact_id=None,
                                      text="hi", sender="bot")
        await msgs.mark_sent(out.id, ["6"], 1)
    async with db.session() as s:
        history = await MessageRepository(s).history(chat.id)
        assert [m.id for m in history] == [incoming.id, out.id]
        assert history[0].text == text
        assert history[1].status is MessageStatus.SENT and history[1].platform_message_id == "6"
        assert history[0].created_at.tzinfo is not None


async def test_unreachable_and_bot_status(db: Database):
    async with db.session() as s:
        contacts = ContactRepository(s)
        await contacts.identify("telegram", "9")
        await contacts.mark_unreachable("telegram", "9", "blocked the bot")
        chat = await ChatRepository(s).upsert("telegram", "-5", ChatKind.GROUP)
        await ChatRepository(s).set_bot_status(chat, "kicked")
    async with db.session() as s:
        ident = await ContactRepository(s).get_identity("telegram", "9")
        assert ident is not None and not ident.reachable
        chat2 = await ChatRepository(s).get("telegram", "-5")
        assert chat2 is not None and not chat2.bot_present and chat2.bot_removed_at


async def test_deep_link_start_kept_for_attribution(db: Database):
    async with db.session() as s:
        contacts = ContactRepository(s)
        ident, _ = await contacts.identify("telegram", "11")
        first = await contacts.record_start(ident, "store-shibuya")
        second = await contacts.record_start(ident, "campaign-spring")
        assert first.first_contact and not second.first_contact
        assert ident.first_payload == "store-shibuya"


async def test_models_match_the_migrations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every model change comes with a migration (Alembic finds nothing to generate)."""
    import warnings

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models.base import Base

    database = Database(f"sqlite+aiosqlite:///{tmp_path}/drift.db")
    await database.upgrade()

    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # expression indexes are skipped, with a warning
            return compare_metadata(ctx, Base.metadata)

    async with database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    await database.dispose()
    assert changes == []
