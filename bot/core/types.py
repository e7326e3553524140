"""Neutral types every platform adapter translates to and from.

The conversation core sees only these; no SDK type crosses this line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class ChatKind(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class ChatRef:
    """Where a message lives: ``platform`` + ``kind`` + the platform's chat id."""

    platform: str
    kind: ChatKind
    id: str
    title: str | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class UserRef:
    """Who wrote: the platform's user id plus what the platform tells about them."""

    platform: str
    id: str
    display_name: str | None = field(default=None, compare=False, hash=False)
    username: str | None = field(default=None, compare=False, hash=False)
    language_code: str | None = field(default=None, compare=False, hash=False)
    is_bot: bool = field(default=False, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Button:
    """An inline button: either ``callback_data`` (comes back as a Callback) or a ``url``."""

    text: str
    callback_data: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.callback_data is None) == (self.url is None):
            raise ValueError("a button needs exactly one of callback_data or url")
        if self.callback_data is not None and len(self.callback_data.encode()) > 64:
            raise ValueError("callback_data is limited to 64 bytes")


@dataclass(frozen=True, slots=True)
class Image:
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = field(default=None, repr=False)
    filename: str = "image.png"


@dataclass(slots=True)
class OutgoingMessage:
    text: str = ""
    buttons: list[list[Button]] = field(default_factory=list)
    image: Image | None = None
    reply_to: str | None = None  # platform message id to reply to
    format: str = "plain"  # "plain" or "html" (a platform without HTML gets the text)
    sender: str = "bot"  # who composed it: "bot", "advisor:NAME", "drop:ID", ...
    thread_id: str | None = None  # a topic inside a forum group (Telegram message_thread_id)


@dataclass(slots=True)
class IncomingMessage:
    chat: ChatRef
    sender: UserRef
    text: str
    message_id: str | None = None
    date: datetime | None = None
    command: str | None = None  # "start", "help"... without slash or @botname
    command_args: str = ""
    mentions_bot: bool = False
    reply_to_bot: bool = False
    reply_to_message_id: str | None = None
    image: Image | None = None
    thread_id: str | None = None  # the forum topic it was written in, if any

    @property
    def addressed_to_bot(self) -> bool:
        """In a private chat always; in a group only by command, mention or reply."""
        if self.chat.kind is ChatKind.PRIVATE:
            return True
        return self.command is not None or self.mentions_bot or self.reply_to_bot


@dataclass(slots=True)
class Callback:
    """A press on an inline button."""

    chat: ChatRef
    sender: UserRef
    data: str
    callback_id: str
    message_id: str | None = None


class MemberStatus(enum.StrEnum):
    MEMBER = "member"
    ADMINISTRATOR = "administrator"
    LEFT = "left"
    KICKED = "kicked"  # in a private chat: the user blocked the bot
    RESTRICTED = "restricted"


@dataclass(slots=True)
class BotMembershipChanged:
    """The bot's own membership changed: added to/removed from a group, blocked/unblocked."""

    chat: ChatRef
    actor: UserRef | None
    old_status: MemberStatus
    new_status: MemberStatus


@dataclass(frozen=True, slots=True)
class PlatformCapabilities:
    buttons: bool = True
    images: bool = True
    max_text_length: int = 4096
    max_caption_length: int = 1024


@dataclass(slots=True)
class SentPart:
    platform_message_id: str | None


class SendError(Exception):
    """Base of the neutral send errors adapters raise."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class RetryAfter(SendError):
    """The platform asks to wait ``seconds`` before sending again (Telegram 429)."""

    def __init__(self, seconds: float, description: str = "Too Many Requests") -> None:
        super().__init__(description)
        self.seconds = seconds


class TransientSendError(SendError):
    """Network trouble or a 5xx: worth retrying with backoff."""


class PermanentSendError(SendError):
    """Will not succeed by retrying (bad request, chat not found...)."""

    def __init__(self, description: str, *, recipient_unreachable: bool = False) -> None:
        super().__init__(description)
        self.recipient_unreachable = recipient_unreachable


class MarkupError(PermanentSendError):
    """The platform rejected the message's markup or entities; plain text may still go."""


# --------------------------------------------------------------------------- community events


@dataclass(slots=True)
class MemberChanged:
    """Someone else's membership in a group changed (joined, left, was removed)."""

    chat: ChatRef
    user: UserRef
    actor: UserRef | None
    old_status: MemberStatus
    new_status: MemberStatus
    invite_link: str | None = None
    via_join_request: bool = False

    @property
    def joined(self) -> bool:
        active = (MemberStatus.MEMBER, MemberStatus.ADMINISTRATOR, MemberStatus.RESTRICTED)
        return self.new_status in active and self.old_status not in active

    @property
    def left(self) -> bool:
        active = (MemberStatus.MEMBER, MemberStatus.ADMINISTRATOR, MemberStatus.RESTRICTED)
        return self.old_status in active and self.new_status not in active


@dataclass(slots=True)
class JoinRequest:
    """A user asked to join a group through a link that needs approval. The bot may message
    them privately for a few minutes (Telegram: 5) even if they never started it."""

    chat: ChatRef
    user: UserRef
    invite_link: str | None = None
    date: datetime | None = None


@dataclass(frozen=True, slots=True)
class InviteLink:
    url: str
    member_limit: int | None = None
    expires_at: datetime | None = None
    creates_join_request: bool = False
