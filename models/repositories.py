"""Repositories: the only code that writes the core tables. Each takes an ``AsyncSession``
whose transaction the caller owns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import utcnow
from models.chat import Chat, ChatKind
from models.contact import Contact, ContactIdentity, DeepLinkStart
from models.conversation import (
    Conversation,
    ConversationEvent,
    ConversationStatus,
    Message,
    MessageDirection,
    MessageStatus,
)

# Which status changes are allowed (the conversation state machine).
TRANSITIONS: dict[ConversationStatus, set[ConversationStatus]] = {
    ConversationStatus.BOT: {ConversationStatus.WAITING, ConversationStatus.RESOLVED},
    ConversationStatus.WAITING: {
        ConversationStatus.WITH_ADVISOR,
        ConversationStatus.BOT,
        ConversationStatus.RESOLVED,
    },
    ConversationStatus.WITH_ADVISOR: {
        ConversationStatus.WAITING,
        ConversationStatus.RESOLVED,
        ConversationStatus.WITH_ADVISOR,  # transfer to another advisor
    },
    ConversationStatus.RESOLVED: {ConversationStatus.BOT},
}


class InvalidTransition(ValueError):
    pass


async def _get_or_create(session: AsyncSession, model: Any, lookup: dict[str, Any],
                         defaults: dict[str, Any]) -> tuple[Any, bool]:
    stmt = select(model).filter_by(**lookup)
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is not None:
        return found, False
    try:
        async with session.begin_nested():
            obj = model(**lookup, **defaults)
            session.add(obj)
            await session.flush()
        return obj, True
    except IntegrityError:  # another worker created it first
        return (await session.execute(stmt)).scalar_one(), False


class ContactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def identify(
        self,
        platform: str,
        external_id: str,
        *,
        display_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
    ) -> tuple[ContactIdentity, bool]:
        """Find or create the identity (and its contact). Returns (identity, created)."""
        stmt = select(ContactIdentity).where(
            ContactIdentity.platform == platform, ContactIdentity.external_id == external_id
        )
        identity = (await self.session.execute(stmt)).scalar_one_or_none()
        if identity is None:
            try:
                async with self.session.begin_nested():
                    contact = Contact(display_name=display_name, language=None)
                    self.session.add(contact)
                    await self.session.flush()
                    identity = ContactIdentity(
                        contact=contact,
                        platform=platform,
                        external_id=external_id,
                        username=username,
                        language_code=language_code,
                    )
                    self.session.add(identity)
                    await self.session.flush()
                return identity, True
            except IntegrityError:
                identity = (await self.session.execute(stmt)).scalar_one()
        changed = False
        if username and identity.username != username:
            identity.username = username
            changed = True
        if language_code and identity.language_code != language_code:
            identity.language_code = language_code
            changed = True
        if display_name and identity.contact.display_name != display_name:
            identity.contact.display_name = display_name
            changed = True
        if changed:
            await self.session.flush()
        return identity, False

    async def get_identity(self, platform: str, external_id: str) -> ContactIdentity | None:
        stmt = select(ContactIdentity).where(
            ContactIdentity.platform == platform, ContactIdentity.external_id == external_id
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def set_language(self, contact_id: int, language: str) -> None:
        await self.session.execute(
            update(Contact).where(Contact.id == contact_id).values(language=language)
        )

    async def mark_unreachable(
        self, platform: str, external_id: str, reason: str, *, at: datetime | None = None
    ) -> None:
        await self.session.execute(
            update(ContactIdentity)
            .where(
                ContactIdentity.platform == platform,
                ContactIdentity.external_id == external_id,
                ContactIdentity.unreachable_at.is_(None),
            )
            .values(unreachable_at=at or utcnow(), unreachable_reason=reason[:256])
        )

    async def mark_reachable(self, platform: str, external_id: str) -> None:
        await self.session.execute(
            update(ContactIdentity)
            .where(
                ContactIdentity.platform == platform, ContactIdentity.external_id == external_id
            )
            .values(unreachable_at=None, unreachable_reason=None)
        )

    async def record_start(self, identity: ContactIdentity, payload: str) -> DeepLinkStart:
        first = identity.first_payload is None
        if first:
            identity.first_payload = payload[:128]
        row = DeepLinkStart(
            contact_id=identity.contact_id,
            platform=identity.platform,
            payload=payload[:128],
            first_contact=first,
        )
        self.session.add(row)
        await self.session.flush()
        return row


class ChatRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(
        self, platform: str, external_id: str, kind: ChatKind, title: str | None = None
    ) -> Chat:
        chat, created = await _get_or_create(
            self.session,
            Chat,
            {"platform": platform, "external_id": external_id},
            {"kind": kind, "title": title},
        )
        if not created and title and chat.title != title:
            chat.title = title
            await self.session.flush()
        return chat

    async def get(self, platform: str, external_id: str) -> Chat | None:
        stmt = select(Chat).where(Chat.platform == platform, Chat.external_id == external_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def set_bot_status(self, chat: Chat, status: str) -> None:
        chat.bot_status = status
        if status in ("left", "kicked"):
            chat.bot_removed_at = utcnow()
        else:
            chat.bot_removed_at = None
        await self.session.flush()


class ConversationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current(self, chat: Chat, contact_id: int | None) -> Conversation:
        """The chat's open conversation, or a new one (a resolved one is not reopened)."""
        return await self.current_for(chat.id, chat.kind is ChatKind.PRIVATE, contact_id)

    async def current_for(
        self, chat_id: int, private: bool, contact_id: int | None
    ) -> Conversation:
        stmt = (
            select(Conversation)
            .where(
                Conversation.chat_id == chat_id,
                Conversation.status != ConversationStatus.RESOLVED,
            )
            .order_by(Conversation.id.desc())
            .limit(1)
        )
        conv = (await self.session.execute(stmt)).scalar_one_or_none()
        if conv is None:
            conv = Conversation(
                chat_id=chat_id,
                contact_id=contact_id if private else None,
                status=ConversationStatus.BOT,
            )
            self.session.add(conv)
            await self.session.flush()
            self.session.add(
                ConversationEvent(
                    conversation_id=conv.id, kind="opened", to_status=conv.status.value
                )
            )
        return conv

    async def change_status(
        self,
        conversation: Conversation,
        new_status: ConversationStatus,
        *,
        actor: str | None = None,
        assignee: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> ConversationEvent:
        """The one place a conversation's status changes; records an event."""
        old = conversation.status
        if new_status not in TRANSITIONS[old]:
            raise InvalidTransition(f"conversation {conversation.id}: {old} -> {new_status}")
        conversation.status = new_status
        if new_status is ConversationStatus.WITH_ADVISOR:
            conversation.assignee = assignee
        elif new_status in (ConversationStatus.BOT, ConversationStatus.WAITING):
            conversation.assignee = None
        conversation.resolved_at = utcnow() if new_status is ConversationStatus.RESOLVED else None
        event = ConversationEvent(
            conversation_id=conversation.id,
            kind="status",
            from_status=old.value,
            to_status=new_status.value,
            actor=actor,
            data=data,
        )
        self.session.add(event)
        await self.session.flush()
        return event

    async def events(self, conversation_id: int) -> list[ConversationEvent]:
        stmt = (
            select(ConversationEvent)
            .where(ConversationEvent.conversation_id == conversation_id)
            .order_by(ConversationEvent.id)
        )
        return list((await self.session.execute(stmt)).scalars())


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_incoming(
        self,
        *,
        chat: Chat | None = None,
        chat_id: int | None = None,
        conversation_id: int | None,
        contact_id: int | None,
        text: str | None,
        kind: str = "text",
        platform_message_id: str | None = None,
        reply_to_platform_id: str | None = None,
        platform_date: datetime | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Message:
        if chat_id is None:
            assert chat is not None, "chat or chat_id is required"
            chat_id = chat.id
        msg = Message(
            chat_id=chat_id,
            conversation_id=conversation_id,
            contact_id=contact_id,
            direction=MessageDirection.IN,
            status=MessageStatus.RECEIVED,
            kind=kind,
            text=text,
            platform_message_id=platform_message_id,
            reply_to_platform_id=reply_to_platform_id,
            platform_date=platform_date,
            payload=payload,
            sender="contact",
        )
        self.session.add(msg)
        await self.session.flush()
        return msg

    async def add_outgoing(
        self,
        *,
        chat_id: int,
        conversation_id: int | None,
        contact_id: int | None,
        text: str,
        sender: str,
        payload: dict[str, Any] | None = None,
        reply_to_platform_id: str | None = None,
    ) -> Message:
        msg = Message(
            chat_id=chat_id,
            conversation_id=conversation_id,
            contact_id=contact_id,
            direction=MessageDirection.OUT,
            status=MessageStatus.PENDING,
            text=text,
            sender=sender,
            payload=payload,
            reply_to_platform_id=reply_to_platform_id,
        )
        self.session.add(msg)
        await self.session.flush()
        return msg

    async def mark_sent(self, message_id: int, platform_ids: list[str], attempts: int) -> None:
        await self.session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                status=MessageStatus.SENT,
                platform_message_id=",".join(platform_ids)[:256] or None,
                attempts=attempts,
                sent_at=utcnow(),
                error=None,
            )
        )

    async def mark_failed(self, message_id: int, error: str, attempts: int) -> None:
        await self.session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status=MessageStatus.FAILED, error=error[:512], attempts=attempts)
        )

    async def history(self, chat_id: int, limit: int = 50) -> list[Message]:
        stmt = (
            select(Message)
            .where(Message.chat_id == chat_id)
            .order_by(Message.id.desc())
            .limit(limit)
        )
        return list(reversed((await self.session.execute(stmt)).scalars().all()))

    async def count(self, **filters: Any) -> int:
        stmt = select(func.count()).select_from(Message).filter_by(**filters)
        return int((await self.session.execute(stmt)).scalar_one())
