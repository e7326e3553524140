"""Ports the core depends on. Each has an in-memory implementation and a contract test suite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
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


# --------------------------------------------------------------------------- community

from bot.core.types import InviteLink, JoinRequest, MemberChanged  # noqa: E402

CommunityEvent = MemberChanged | JoinRequest
"""Events a platform with groups emits besides :data:`Event` (through the same handler)."""


@runtime_checkable
class GroupAdmin(Protocol):
    """Group administration a platform offers to the community features (Telegram today)."""

    name: str

    async def create_invite_link(
        self,
        chat: ChatRef,
        *,
        name: str | None = None,
        member_limit: int | None = None,
        expires_at: datetime | None = None,
        creates_join_request: bool = False,
    ) -> InviteLink: ...

    async def revoke_invite_link(self, chat: ChatRef, url: str) -> None: ...

    async def approve_join_request(self, chat: ChatRef, user_id: str) -> None: ...

    async def decline_join_request(self, chat: ChatRef, user_id: str) -> None: ...

    async def member_count(self, chat: ChatRef) -> int: ...

    def start_link(self, payload: str) -> str | None:
        """The deep link that opens a private chat with the bot and sends ``/start payload``."""
        ...


# --------------------------------------------------------------------------- advisors' forum


@runtime_checkable
class ForumAdmin(Protocol):
    """Topics in a forum group (Telegram supergroup with topics), used as the advisors'
    workspace: one topic per handed-off customer. Messages go into a topic through
    :class:`bot.core.outbound.Outbound` with ``OutgoingMessage.thread_id`` set."""

    name: str

    async def create_forum_topic(self, chat: ChatRef, name: str) -> str:
        """Create a topic and return its thread id."""
        ...

    async def close_forum_topic(self, chat: ChatRef, thread_id: str) -> None:
        """Close a topic; closing a closed topic is not an error."""
        ...

    async def reopen_forum_topic(self, chat: ChatRef, thread_id: str) -> None:
        """Reopen a topic; reopening an open one is not an error, a deleted one raises
        :class:`bot.core.types.PermanentSendError`."""
        ...
