"""The conversation core: every inbound event from every platform ends up here.

Handlers in the adapters translate; this service decides. It stores each message, keeps
contacts, chats and conversations up to date, answers commands, and asks the configured
:class:`Responder` (the knowledge base, later the handoff desk) what to say.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot.core.batch_writer import BatchWriter
from bot.core.directory import Directory
from bot.core.i18n import LANGUAGES, Translator, normalise_language
from bot.core.metrics import Metrics
from bot.core.outbound import Outbound
from bot.core.ports import Event
from bot.core.types import (
    BotMembershipChanged,
    Button,
    Callback,
    ChatKind,
    ChatRef,
    IncomingMessage,
    MemberStatus,
    OutgoingMessage,
)
from config.settings import BotSettings
from models import Database
from models.base import utcnow
from models.chat import ChatKind as ModelChatKind
from models.conversation import ConversationStatus, MessageDirection, MessageStatus
from models.repositories import (
    ChatRepository,
    ContactRepository,
    ConversationRepository,
    MessageRepository,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TurnContext:
    """What a responder knows about one inbound message."""

    message: IncomingMessage
    language: str
    contact_id: int
    conversation_id: int
    conversation_status: ConversationStatus
    chat_id: int
    first_contact: bool = False


@dataclass(slots=True)
class CallbackContext:
    callback: Callback
    language: str
    contact_id: int
    conversation_id: int | None
    chat_id: int


class Responder(Protocol):
    """Decides the bot's reply to a text message (knowledge base, handoff...)."""

    async def respond(self, ctx: TurnContext) -> list[OutgoingMessage]: ...


CallbackHandler = Callable[[CallbackContext], Awaitable[list[OutgoingMessage]]]
Relay = Callable[[TurnContext], Awaitable[None]]


class FallbackResponder:
    """Used when no knowledge base is configured: an honest 'I don't know'."""

    def __init__(self, translate: Translator) -> None:
        self.t = translate

    async def respond(self, ctx: TurnContext) -> list[OutgoingMessage]:
        return [OutgoingMessage(text=self.t("fallback", ctx.language))]


@dataclass
class ConversationService:
    db: Database
    outbound: Outbound
    translate: Translator
    settings: BotSettings
    metrics: Metrics
    responder: Responder | None = None
    callback_handlers: dict[str, CallbackHandler] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    directory: Directory = field(default_factory=Directory)
    # While a person has a private conversation, what the customer writes goes here instead
    # of to the responder (the handoff desk shows it to the advisors).
    relay: Relay | None = None
    # Tried first for every inbound message; True = consumed (e.g. the advisors' forum).
    interceptors: list[Callable[[IncomingMessage], Awaitable[bool]]] = field(
        default_factory=list)
    writer: BatchWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = BatchWriter(self.db)
        if self.responder is None:
            self.responder = FallbackResponder(self.translate)
        self.callback_handlers.setdefault("lang", self._on_language_callback)

    # ----------------------------------------------------------------- dispatch
    async def handle(self, event: Event) -> None:
        """Entry point for every adapter. Never raises: a failing event is logged."""
        started = self.clock()
        platform = event.chat.platform
        try:
            if isinstance(event, IncomingMessage):
                await self._on_message(event)
            elif isinstance(event, Callback):
                await self._on_callback(event)
            elif isinstance(event, BotMembershipChanged):
                await self._on_membership(event)
        except Exception:
            log.exception("failed to handle event", extra={"platform": platform})
        finally:
            self.metrics.handling_seconds.labels(platform).observe(self.clock() - started)

    # ----------------------------------------------------------------- messages
    async def _on_message(self, msg: IncomingMessage) -> None:
        self.metrics.messages_in.labels(msg.chat.platform, msg.chat.kind.value).inc()
        for intercept in self.interceptors:
            if await intercept(msg):
                return
        directory = self.directory
        cached = directory.cached(msg)
        if cached is not None and msg.command != "start" and not msg.addressed_to_bot:
            identity, chat, conversation_id = cached  # hot path: no lookups at all
            created, status = False, None
        else:
            async with self.db.session() as session:
                identity, created = await directory.identity(session, msg.sender)
                chat = await directory.chat(session, msg.chat)
                if msg.chat.kind is ChatKind.PRIVATE and not identity.reachable:
                    # They wrote to us, so they unblocked the bot.
                    await ContactRepository(session).mark_reachable(msg.sender.platform,
                                                                    msg.sender.id)
                    directory.forget_identity(msg.sender.platform, msg.sender.id)
                conversation_id, status = await directory.conversation(
                    session, msg.chat, chat, identity.contact_id,
                    need_status=msg.addressed_to_bot,
                )
                if msg.command == "start" and msg.command_args:
                    contacts = ContactRepository(session)
                    row = await contacts.get_identity(msg.sender.platform, msg.sender.id)
                    if row is not None:
                        await contacts.record_start(row, msg.command_args.strip())
        kind = "command" if msg.command else ("photo" if msg.image else "text")
        await self.writer.add({
            "chat_id": chat.chat_id,
            "conversation_id": conversation_id,
            "contact_id": identity.contact_id,
            "direction": MessageDirection.IN,
            "status": MessageStatus.RECEIVED,
            "kind": kind,
            "text": msg.text,
            "platform_message_id": msg.message_id,
            "reply_to_platform_id": msg.reply_to_message_id,
            "platform_date": msg.date,
            "payload": {"command": msg.command, "args": msg.command_args}
            if msg.command else None,
            "sender": "contact",
            "attempts": 0,
            "created_at": utcnow(),
        })
        if not msg.addressed_to_bot:
            return
        language = (
            identity.language
            or normalise_language(msg.sender.language_code)
            or self.settings.default_language
        )
        ctx = TurnContext(
            message=msg,
            language=language,
            contact_id=identity.contact_id,
            conversation_id=conversation_id,
            conversation_status=status or ConversationStatus.BOT,
            chat_id=chat.chat_id,
            first_contact=created,
        )
        replies = await self._replies(ctx)
        for reply in replies:
            if msg.chat.kind is ChatKind.GROUP and reply.reply_to is None:
                reply.reply_to = msg.message_id
            await self.outbound.send(
                msg.chat, reply, conversation_id=ctx.conversation_id, contact_id=ctx.contact_id
            )

    async def _replies(self, ctx: TurnContext) -> list[OutgoingMessage]:
        msg, lang, t = ctx.message, ctx.language, self.translate
        if msg.command == "start":
            name = msg.sender.display_name
            name_part = (", " if lang == "en" else "、") + name if name else ""
            if lang == "zh" and name:
                name_part = "，" + name
            return [OutgoingMessage(text=t("welcome", lang, name_part=name_part,
                                           bot=self.settings.name))]
        if msg.command == "help":
            return [OutgoingMessage(text=t("help", lang))]
        if msg.command == "language":
            return [language_picker(t, lang)]
        if msg.command is not None:
            return []  # another bot's or an unknown command: stay quiet, as bots should
        if ctx.conversation_status in (ConversationStatus.WAITING,
                                       ConversationStatus.WITH_ADVISOR):
            if self.relay is not None and msg.chat.kind is ChatKind.PRIVATE:
                await self.relay(ctx)
            return []  # a person has (or is about to have) this conversation: step aside
        text = msg.text.strip()
        if not text:
            if msg.image is not None:
                return [OutgoingMessage(text=t("unsupported", lang))]
            return [OutgoingMessage(text=t("empty_message", lang))]
        if len(text) > self.settings.max_incoming_text:
            return [OutgoingMessage(text=t("too_long", lang))]
        assert self.responder is not None
        return await self.responder.respond(ctx)

    # ----------------------------------------------------------------- callbacks
    async def _on_callback(self, cb: Callback) -> None:
        prefix, _, _rest = cb.data.partition(":")
        handler = self.callback_handlers.get(prefix)
        async with self.db.session() as session:
            identity, _ = await ContactRepository(session).identify(
                cb.sender.platform, cb.sender.id, display_name=cb.sender.display_name,
                username=cb.sender.username, language_code=cb.sender.language_code,
            )
            chat = await ChatRepository(session).upsert(
                cb.chat.platform, cb.chat.id, ModelChatKind(cb.chat.kind.value), cb.chat.title
            )
            conversation = await ConversationRepository(session).current(
                chat, identity.contact_id
            )
            await MessageRepository(session).add_incoming(
                chat=chat, conversation_id=conversation.id, contact_id=identity.contact_id,
                text=cb.data, kind="callback", reply_to_platform_id=cb.message_id,
            )
            language = (
                identity.contact.language
                or normalise_language(cb.sender.language_code)
                or self.settings.default_language
            )
            ctx = CallbackContext(cb, language, identity.contact_id, conversation.id, chat.id)
        platform = self.outbound.platforms[cb.chat.platform]
        if handler is None:
            log.info("unknown callback data", extra={"data": cb.data[:64]})
            await platform.answer_callback(cb)
            return
        replies = await handler(ctx)
        await platform.answer_callback(cb)
        for reply in replies:
            await self.outbound.send(
                cb.chat, reply, conversation_id=ctx.conversation_id, contact_id=ctx.contact_id
            )

    async def _on_language_callback(self, ctx: CallbackContext) -> list[OutgoingMessage]:
        choice = ctx.callback.data.partition(":")[2]
        if choice not in LANGUAGES:
            return []
        async with self.db.session() as session:
            await ContactRepository(session).set_language(ctx.contact_id, choice)
        self.directory.forget_identity(ctx.callback.sender.platform, ctx.callback.sender.id)
        return [OutgoingMessage(text=self.translate("language_set", choice))]

    # ----------------------------------------------------------------- membership
    async def _on_membership(self, ev: BotMembershipChanged) -> None:
        async with self.db.session() as session:
            if ev.chat.kind is ChatKind.GROUP:
                chats = ChatRepository(session)
                chat = await chats.upsert(
                    ev.chat.platform, ev.chat.id, ModelChatKind.GROUP, ev.chat.title
                )
                await chats.set_bot_status(chat, ev.new_status.value)
                log.info("bot membership changed", extra={
                    "chat": ev.chat.id, "status": ev.new_status.value})
            else:
                contacts = ContactRepository(session)
                self.directory.forget_identity(ev.chat.platform, ev.chat.id)
                if ev.new_status is MemberStatus.KICKED:
                    await contacts.identify(ev.chat.platform, ev.chat.id)
                    await contacts.mark_unreachable(
                        ev.chat.platform, ev.chat.id, "blocked the bot"
                    )
                elif ev.new_status is MemberStatus.MEMBER:
                    await contacts.mark_reachable(ev.chat.platform, ev.chat.id)


def language_picker(t: Translator, lang: str) -> OutgoingMessage:
    buttons = [
        [Button(t("language_name", code), callback_data=f"lang:{code}") for code in LANGUAGES]
    ]
    return OutgoingMessage(text=t("choose_language", lang), buttons=buttons)


__all__ = [
    "CallbackContext",
    "ChatRef",
    "ConversationService",
    "FallbackResponder",
    "Responder",
    "TurnContext",
    "language_picker",
]
