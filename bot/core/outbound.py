"""The one outbound path: every message any part of Kizuna sends goes through ``Outbound``.

It stores the message, degrades rich parts the platform lacks, splits long text, waits for the
shared rate limiter, honours the platform's ``retry_after``, retries transient errors with
backoff, records permanent errors and marks unreachable recipients so nobody sends to them again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.core.metrics import Metrics
from bot.core.ports import ChatPlatform
from bot.core.shared import Rate, RateLimiter
from bot.core.textsplit import split_text
from bot.core.types import (
    ChatKind,
    ChatRef,
    MarkupError,
    OutgoingMessage,
    PermanentSendError,
    PlatformCapabilities,
    RetryAfter,
    SendError,
    TransientSendError,
)
from models import Database
from models.repositories import ChatRepository, ContactRepository, MessageRepository

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PlatformLimits:
    """Send limits of one platform (per bot)."""

    overall: Rate = Rate(30, 1.0)
    private_chat: Rate = Rate(1, 1.0, burst=1)
    group_chat: Rate = Rate(20, 60.0, burst=3)

    @classmethod
    def unlimited(cls) -> PlatformLimits:
        big = Rate(1e9, 1.0)
        return cls(big, big, big)


@dataclass(slots=True)
class DeliveryResult:
    ok: bool
    message_id: int | None = None  # our stored message id
    platform_message_ids: list[str] = field(default_factory=list)
    error: str | None = None
    unreachable: bool = False
    attempts: int = 0


def degrade(message: OutgoingMessage, caps: PlatformCapabilities) -> OutgoingMessage:
    """Turn rich parts a platform lacks into text (Rasa-style)."""
    text = message.text
    buttons = message.buttons
    image = message.image
    if buttons and not caps.buttons:
        lines = []
        n = 0
        for row in buttons:
            for button in row:
                n += 1
                lines.append(f"{n}) {button.text}" + (f": {button.url}" if button.url else ""))
        text = f"{text}\n\n" + "\n".join(lines) if text else "\n".join(lines)
        buttons = []
    if image is not None and not caps.images:
        if image.url:
            text = f"{text}\n{image.url}" if text else image.url
        image = None
    return replace(message, text=text, buttons=buttons, image=image)


class Outbound:
    def __init__(
        self,
        *,
        db: Database,
        platforms: dict[str, ChatPlatform],
        rate_limiter: RateLimiter,
        metrics: Metrics,
        limits: dict[str, PlatformLimits] | None = None,
        max_attempts: int = 5,
        max_rate_limited_waits: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        on_sent: Callable[[ChatRef, OutgoingMessage, DeliveryResult], Awaitable[None]]
        | None = None,
    ) -> None:
        self.db = db
        self.platforms = platforms
        self.rate_limiter = rate_limiter
        self.metrics = metrics
        self.limits = limits or {}
        self.max_attempts = max_attempts
        self.max_rate_limited_waits = max_rate_limited_waits
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.on_sent = on_sent

    async def send(
        self,
        chat: ChatRef,
        message: OutgoingMessage,
        *,
        conversation_id: int | None = None,
        contact_id: int | None = None,
    ) -> DeliveryResult:
        """Store and deliver one message; never raises for delivery failures."""
        platform = self.platforms.get(chat.platform)
        if platform is None:
            raise ValueError(f"no platform {chat.platform!r} is configured")
        message = degrade(message, platform.capabilities)
        if not message.text.strip() and message.image is None:
            raise ValueError("refusing to send an empty message")
        async with self.db.session() as session:
            chat_row = await ChatRepository(session).upsert(
                chat.platform, chat.id, _model_kind(chat.kind), chat.title
            )
            identity = None
            if chat.kind is ChatKind.PRIVATE:
                identity = await ContactRepository(session).get_identity(chat.platform, chat.id)
                if contact_id is None and identity is not None:
                    contact_id = identity.contact_id
            stored = await MessageRepository(session).add_outgoing(
                chat_id=chat_row.id,
                conversation_id=conversation_id,
                contact_id=contact_id,
                text=message.text,
                sender=message.sender,
                payload=_payload(message),
                reply_to_platform_id=message.reply_to,
            )
            blocked = (identity is not None and not identity.reachable) or (
                chat.kind is ChatKind.GROUP and not chat_row.bot_present
            )
            if blocked:
                reason = "recipient unreachable (blocked the bot or bot removed)"
                await MessageRepository(session).mark_failed(stored.id, reason, 0)
        if blocked:
            return DeliveryResult(False, stored.id, error=reason, unreachable=True)
        result = await self.deliver(platform, chat, message)
        result.message_id = stored.id
        async with self.db.session() as session:
            messages = MessageRepository(session)
            if result.ok:
                await messages.mark_sent(stored.id, result.platform_message_ids, result.attempts)
            else:
                await messages.mark_failed(stored.id, result.error or "failed", result.attempts)
                if result.unreachable:
                    await self._mark_unreachable(session, chat, result.error or "")
        if self.on_sent is not None:
            await self.on_sent(chat, message, result)
        return result

    async def _mark_unreachable(self, session: Any, chat: ChatRef, reason: str) -> None:
        if chat.kind is ChatKind.PRIVATE:
            await ContactRepository(session).mark_unreachable(chat.platform, chat.id, reason)
        else:
            chats = ChatRepository(session)
            row = await chats.get(chat.platform, chat.id)
            if row is not None:
                await chats.set_bot_status(row, "left")

    async def deliver(
        self,
        platform: ChatPlatform,
        chat: ChatRef,
        message: OutgoingMessage,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> DeliveryResult:
        """Send without storing a ``messages`` row (callers keep their own record, e.g. the
        drop outbox): split, rate-limit, retry, map errors.

        ``before_send`` is awaited once, after the first part's rate-limit slot is taken and
        right before the platform is first called: the drop outbox commits its "sending"
        intent there, so a crash leaves in doubt only requests that were really on their way
        (not ones still queued behind the rate limiter)."""
        caps = platform.capabilities
        limit = caps.max_text_length
        parts = split_text(message.text, limit) if message.text else [""]
        ids: list[str] = []
        attempts_total = 0
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            part_message = message if index == 0 else replace(message, reply_to=None)
            if not last:
                part_message = replace(part_message, buttons=[], image=None)
            try:
                sent_id, attempts = await self._send_part(
                    platform, chat, part, part_message, last,
                    before_send=before_send if index == 0 else None,
                )
            except SendError as exc:
                unreachable = isinstance(exc, PermanentSendError) and exc.recipient_unreachable
                return DeliveryResult(
                    False,
                    platform_message_ids=ids,
                    error=exc.description,
                    unreachable=unreachable,
                    attempts=attempts_total + getattr(exc, "attempts", 1),
                )
            attempts_total += attempts
            if sent_id is not None:
                ids.append(sent_id)
        return DeliveryResult(True, platform_message_ids=ids, attempts=attempts_total)

    def _buckets(self, platform: str, chat: ChatRef) -> list[tuple[str, Rate]]:
        limits = self.limits.get(platform, PlatformLimits())
        per_chat = limits.private_chat if chat.kind is ChatKind.PRIVATE else limits.group_chat
        return [
            (f"{platform}:all", limits.overall),
            (f"{platform}:chat:{chat.id}", per_chat),
        ]

    async def _send_part(
        self,
        platform: ChatPlatform,
        chat: ChatRef,
        text: str,
        message: OutgoingMessage,
        with_extras: bool,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[str | None, int]:
        buckets = self._buckets(platform.name, chat)
        attempts = 0
        waits = 0
        while True:
            wait = await self.rate_limiter.reserve(buckets)
            if wait > 0:
                await self.sleep(wait)
                continue
            if before_send is not None:
                await before_send()
                before_send = None
            attempts += 1
            try:
                sent = await platform.send_part(chat, text, message, with_extras=with_extras)
                self.metrics.messages_out.labels(platform.name).inc()
                return sent.platform_message_id, attempts
            except RetryAfter as exc:
                self.metrics.rate_limited.labels(platform.name).inc()
                waits += 1
                attempts -= 1  # being told to wait is not a failed attempt
                log.warning(
                    "rate limited by platform",
                    extra={"platform": platform.name, "chat": chat.id, "retry_after": exc.seconds},
                )
                if waits > self.max_rate_limited_waits:
                    exc.attempts = attempts + waits  # type: ignore[attr-defined]
                    raise
                bucket, rate = buckets[1]
                await self.rate_limiter.penalize(bucket, rate, exc.seconds)
                await self.sleep(exc.seconds)
            except MarkupError as exc:
                self.metrics.send_errors.labels(platform.name, "markup").inc()
                if message.format == "plain":
                    exc.attempts = attempts  # type: ignore[attr-defined]
                    raise
                log.warning("markup rejected, sending as plain text", extra={"error": str(exc)})
                message = replace(message, format="plain")
                text = _strip_tags(text)
            except TransientSendError as exc:
                self.metrics.send_errors.labels(platform.name, "transient").inc()
                if attempts >= self.max_attempts:
                    exc.attempts = attempts  # type: ignore[attr-defined]
                    raise
                delay = min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1))
                await self.sleep(delay * (0.5 + random.random() / 2))
            except PermanentSendError as exc:
                kind = "unreachable" if exc.recipient_unreachable else "permanent"
                self.metrics.send_errors.labels(platform.name, kind).inc()
                exc.attempts = attempts  # type: ignore[attr-defined]
                raise


def _strip_tags(text: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]{0,200}>", "", text))


def _model_kind(kind: ChatKind) -> Any:
    from models.chat import ChatKind as ModelChatKind

    return ModelChatKind(kind.value)


def _payload(message: OutgoingMessage) -> dict[str, Any] | None:
    data: dict[str, Any] = {}
    if message.buttons:
        data["buttons"] = [
            [
                {k: v for k, v in (("text", b.text), ("callback_data", b.callback_data),
                                   ("url", b.url)) if v is not None}
                for b in row
            ]
            for row in message.buttons
        ]
    if message.image is not None:
        data["image"] = {"url": message.image.url, "file_id": message.image.file_id}
    if message.format != "plain":
        data["format"] = message.format
    return data or None
