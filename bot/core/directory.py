"""A read-through cache of who and where: identities, chats and group conversations.

The hot path of every inbound message needs the contact, the chat and the conversation. Looking
them up in the database each time costs several round trips; this cache keeps their ids (never
ORM objects) for a short TTL, so a message is usually stored with one INSERT. Anything that must
be current — the status of a private conversation, which a human advisor may change from
another process — is still read from the database.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.types import ChatKind, ChatRef, IncomingMessage, UserRef
from models.chat import ChatKind as ModelChatKind
from models.conversation import ConversationStatus
from models.repositories import ChatRepository, ContactRepository, ConversationRepository

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, maxsize: int, ttl: float, clock: Callable[[], float]) -> None:
        self.maxsize, self.ttl, self.clock = maxsize, ttl, clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        at, value = item
        if self.clock() - at > self.ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self.clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)


@dataclass(frozen=True, slots=True)
class KnownIdentity:
    identity_id: int
    contact_id: int
    language: str | None  # the contact's chosen language
    reachable: bool
    username: str | None
    language_code: str | None
    display_name: str | None


@dataclass(frozen=True, slots=True)
class KnownChat:
    chat_id: int
    title: str | None


class Directory:
    def __init__(self, *, ttl: float = 60.0, maxsize: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.identities: TTLCache[tuple[str, str], KnownIdentity] = TTLCache(maxsize, ttl, clock)
        self.chats: TTLCache[tuple[str, str], KnownChat] = TTLCache(maxsize, ttl, clock)
        self.group_conversations: TTLCache[int, int] = TTLCache(maxsize, ttl, clock)

    async def identity(self, session: AsyncSession, user: UserRef) -> tuple[KnownIdentity, bool]:
        key = (user.platform, user.id)
        known = self.identities.get(key)
        if known is not None and (
            (not user.username or user.username == known.username)
            and (not user.language_code or user.language_code == known.language_code)
            and (not user.display_name or user.display_name == known.display_name)
        ):
            return known, False
        identity, created = await ContactRepository(session).identify(
            user.platform, user.id, display_name=user.display_name, username=user.username,
            language_code=user.language_code,
        )
        known = KnownIdentity(
            identity.id, identity.contact_id, identity.contact.language, identity.reachable,
            identity.username, identity.language_code, identity.contact.display_name,
        )
        self.identities.put(key, known)
        return known, created

    def cached(self, msg: IncomingMessage) -> tuple[KnownIdentity, KnownChat, int] | None:
        """Identity, chat and group conversation from the cache alone, when all are there
        and nothing about them changed; else None."""
        if msg.chat.kind is not ChatKind.GROUP:
            return None
        user = msg.sender
        known = self.identities.get((user.platform, user.id))
        chat = self.chats.get((msg.chat.platform, msg.chat.id))
        if known is None or chat is None:
            return None
        if (user.username and user.username != known.username) or (
            user.display_name and user.display_name != known.display_name
        ) or (msg.chat.title and msg.chat.title != chat.title):
            return None
        conversation = self.group_conversations.get(chat.chat_id)
        if conversation is None:
            return None
        return known, chat, conversation

    def forget_identity(self, platform: str, external_id: str) -> None:
        self.identities.pop((platform, external_id))

    async def chat(self, session: AsyncSession, chat: ChatRef) -> KnownChat:
        key = (chat.platform, chat.id)
        known = self.chats.get(key)
        if known is not None and (not chat.title or chat.title == known.title):
            return known
        row = await ChatRepository(session).upsert(
            chat.platform, chat.id, ModelChatKind(chat.kind.value), chat.title
        )
        known = KnownChat(row.id, row.title)
        self.chats.put(key, known)
        return known

    async def conversation(
        self, session: AsyncSession, chat: ChatRef, known_chat: KnownChat, contact_id: int,
        *, need_status: bool,
    ) -> tuple[int, ConversationStatus | None]:
        """The open conversation's id, and its status when ``need_status`` (always fresh)."""
        if chat.kind is ChatKind.GROUP and not need_status:
            cached = self.group_conversations.get(known_chat.chat_id)
            if cached is not None:
                return cached, None
        conversation = await ConversationRepository(session).current_for(
            known_chat.chat_id, chat.kind is ChatKind.PRIVATE, contact_id
        )
        if chat.kind is ChatKind.GROUP:
            self.group_conversations.put(known_chat.chat_id, conversation.id)
        return conversation.id, conversation.status
