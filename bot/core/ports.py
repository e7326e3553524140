"""Ports the core depends on. Each has an in-memory implementation and a contract test suite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from bot.core.types import (
    BotMembershipChanged,
    Callback,
    ChatRef,
    Image,
    IncomingMessage,
    OutgoingMessage,
    PlatformCapabilities,
    SentPart,
)

Event = IncomingMessage | Callback | BotMembershipChanged
EventHandler = Callable[[Event], Awaitable[None]]


@runtime_checkable
class ChatPlatform(Protocol):
    """One chat platform (Telegram, web chat, LINE...) seen from the core.

    Inbound: the adapter turns platform updates into neutral events and awaits ``handler``.
    Outbound: ``send_part`` delivers exactly one platform message (text already split to fit
    ``capabilities.max_text_length``) or raises a :class:`bot.core.types.SendError` subclass.
    Only :class:`bot.core.outbound.Outbound` calls ``send_part``.
    """

    name: str
    capabilities: PlatformCapabilities

    def set_handler(self, handler: EventHandler) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_part(
        self, chat: ChatRef, text: str, message: OutgoingMessage, *, with_extras: bool
    ) -> SentPart: ...

    async def answer_callback(self, callback: Callback, text: str | None = None) -> None: ...


__all__ = ["ChatPlatform", "Event", "EventHandler", "Image"]
