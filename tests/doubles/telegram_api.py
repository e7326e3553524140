"""A local, self-contained HTTP double of the Telegram Bot API.

Built on ``aiohttp.web`` only (no aiogram import), so the real aiogram bot can be pointed at it::

    async with BotAPIDouble() as tg:
        bot_user = tg.add_bot("123456:TEST-TOKEN")
        session = AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url))
        bot = Bot(bot_user.token, session=session)
        aiko = tg.add_user("Aiko")
        await tg.user_sends(aiko, "/start")          # -> update for the bot
        ...                                          # run the bot (polling or webhook)
        [reply] = await tg.wait_for_sent(1, chat_id=aiko.id)

What it models (see the module README in the report / docstrings below):

* URL form ``/bot<token>/<method>`` (GET/POST; JSON, urlencoded, multipart and query-string
  parameters; method names are case-insensitive like Telegram's) and ``/file/bot<token>/<path>``.
* Envelopes ``{"ok": true, "result": ...}`` / ``{"ok": false, "error_code": N, "description": ...}``
  with ``parameters.retry_after`` on 429.
* getUpdates long polling with offset confirmation, ``allowed_updates`` (applied to updates created
  after the call, as in Telegram), 409 conflicts; webhooks delivered by up to ``max_connections``
  concurrent workers with per-chat ordering (like the official server's per-chat queues), retries
  with backoff, the secret-token header, and methods returned in the webhook reply.
* Privacy mode, blocking, group membership, flood limits driven by an injectable clock,
  Telegram's error texts for the common failure cases.
* Forum supergroups (``create_group(..., forum=True)``, ``is_forum`` on the Chat): topics made by
  createForumTopic (or a user, :meth:`BotAPIDouble.user_creates_topic`), closeForumTopic,
  reopenForumTopic, ``message_thread_id`` on sendMessage/sendPhoto, users writing into a topic
  (``user_sends(..., thread_id=...)``, :meth:`BotAPIDouble.user_sends_photo`).  As in Telegram,
  a topic's thread id is the id of its ``forum_topic_created`` service message, and a topic
  message that replies to nothing carries that service message as ``reply_to_message``.

Things to know:

* Time: flood limits use the injected ``clock`` (``ManualClock().advance(s)`` in tests); message
  ``date`` fields use wall time.  ``FloodLimits.off()`` or ``tg.limits = FloodLimits(...)``.
* Private chats: the bot may only write to users who sent it something (``user_sends`` without
  ``chat``), or who have a pending join request; otherwise 403 "can't initiate conversation".
* Groups: the first member passed to ``create_group`` is the creator; bots join via
  ``add_bot_to_group`` (``admin=True`` -> administrator, sees all messages despite privacy mode).
* Webhooks: set by the bot with setWebhook (http:// URLs are accepted here); delivery retries use
  ``webhook_retry_delay``/``webhook_max_retries`` (constructor), failures land in
  ``webhook_failures`` and ``stats``; a method in the webhook response body is executed.
* Forums: a bot needs ``can_manage_topics`` (``add_bot_to_group(..., admin=True,
  rights={"can_manage_topics": True})``) to create topics and to close/reopen topics it did not
  create; sending into a closed topic fails with "TOPIC_CLOSED", into an unknown one with
  "message thread not found".  ``message_thread_id`` is ignored outside forums.
* ``sent_messages()`` lists each sent message once, in its current (edited) state; see ``edits()``
  and ``deleted_messages()``.  Bugs inside the double are caught (HTTP 500) and recorded in
  ``internal_errors`` -- assert it is empty at the end of a test.
* All helper methods must be called from the event loop the double runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import secrets
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web

__all__ = [
    "ApiError",
    "BotAPIDouble",
    "DoubleStats",
    "FakeBot",
    "FakeChat",
    "FakeUser",
    "FloodLimits",
    "ManualClock",
    "Upload",
]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_ANSWER_LENGTH = 200

ALL_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
# Delivered only when explicitly requested via allowed_updates (as documented by Telegram).
OPT_IN_UPDATE_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

COMMAND_SCOPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)

_ACTIVE_STATUSES = frozenset({"creator", "administrator", "member", "restricted"})
_ADMIN_STATUSES = frozenset({"creator", "administrator"})

_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_BUTTON_KEYS = frozenset(("text", "style", "icon_custom_emoji_id", *_BUTTON_ACTIONS))

_DEFAULT_ADMIN_RIGHTS: dict[str, bool] = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
    "can_send_welcome_messages": False,
    "can_pin_messages": True,
    "can_manage_topics": False,
}

_JSON_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _dumps(obj: Any) -> bytes:
    return _JSON_DUMPS(obj).encode()


def _now_ts() -> int:
    return int(time.time())


def _u16len(s: str) -> int:
    """Length in UTF-16 code units, the unit Telegram uses for offsets and limits."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------------------------
# errors, clock, flood limits
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error envelope returned to the client (HTTP status == error_code)."""

    def __init__(self, status: int, description: str, *, retry_after: int | float | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def _forbidden(description: str) -> ApiError:
    return ApiError(403, f"Forbidden: {description}")


class ManualClock:
    """A monotonic clock for tests: ``clock()`` returns the time, ``clock.advance(s)`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


@dataclass(frozen=True)
class FloodLimits:
    """Token-bucket flood limits, per bot. ``None`` disables a limit.

    Defaults follow Telegram's published guidance: ~30 messages/s overall, ~1 message/s per private
    chat (a short burst of 3 is tolerated) and 20 messages/minute per group.  Only message-sending
    methods (sendMessage, sendPhoto, copyMessage, forwardMessage) are counted.
    """

    global_per_second: float | None = 30.0
    global_burst: int | None = None  # default: ceil(global_per_second)
    private_per_second: float | None = 1.0
    private_burst: int = 3
    group_per_minute: float | None = 20.0
    group_burst: int | None = None  # default: ceil(group_per_minute)

    @classmethod
    def off(cls) -> FloodLimits:
        return cls(global_per_second=None, private_per_second=None, group_per_minute=None)


class _Bucket:
    __slots__ = ("rate", "cap", "tokens", "last")

    def __init__(self, rate: float, cap: float, now: float) -> None:
        self.rate = rate
        self.cap = max(1.0, float(cap))
        self.tokens = self.cap
        self.last = now

    def wait(self, now: float) -> float:
        if now > self.last:
            self.tokens = min(self.cap, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= 1.0 - 1e-9:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


# --------------------------------------------------------------------------------------------
# model objects
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeUser:
    """A Telegram user. ``as_dict()`` is the Bot API ``User`` object."""

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    is_premium: bool = False
    # bots this user started (sent something in private) / blocked; join requests (bot -> time)
    started_bots: set[int] = field(default_factory=set, repr=False)
    blocked_bots: set[int] = field(default_factory=set, repr=False)
    _private_chat: FakeChat | None = field(default=None, repr=False)

    @property
    def mention(self) -> str:
        return f"@{self.username}" if self.username else self.first_name

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            d["last_name"] = self.last_name
        if self.username:
            d["username"] = self.username
        if self.language_code and not self.is_bot:
            d["language_code"] = self.language_code
        if self.is_premium:
            d["is_premium"] = True
        return d

    @property
    def private_chat(self) -> FakeChat:
        if self._private_chat is None:
            self._private_chat = FakeChat(id=self.id, type="private", user=self)
        return self._private_chat


@dataclass(eq=False)
class _Webhook:
    double: BotAPIDouble
    bot: FakeBot
    url: str
    secret_token: str | None
    max_connections: int
    ip_address: str | None
    allowed_updates: list[str] | None
    has_custom_certificate: bool = False
    queues: dict[Any, deque[_Update]] = field(default_factory=dict)
    ready: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False
    last_error_date: int | None = None
    last_error_message: str | None = None

    def __post_init__(self) -> None:
        self.headers = {"Content-Type": "application/json"}
        if self.secret_token:
            self.headers[SECRET_HEADER] = self.secret_token

    def same_config(self, other: _Webhook) -> bool:
        return (self.url, self.secret_token, self.max_connections, self.ip_address) == (
            other.url,
            other.secret_token,
            other.max_connections,
            other.ip_address,
        )

    def start(self) -> None:
        for upd in self.bot._pending.values():
            self.push(upd)
        self.tasks = [
            asyncio.create_task(self._worker(), name=f"tg-webhook-{self.bot.id}-{i}")
            for i in range(self.max_connections)
        ]

    def push(self, upd: _Update) -> None:
        q = self.queues.get(upd.queue_id)
        if q is None:
            self.queues[upd.queue_id] = deque((upd,))
            self.ready.put_nowait(upd.queue_id)
        else:
            q.append(upd)

    async def _worker(self) -> None:
        while not self.closed:
            qid = await self.ready.get()
            q = self.queues.get(qid)
            if not q:
                self.queues.pop(qid, None)
                continue
            try:
                await self._deliver(q[0])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in the double: record it, drop the update
                self.double.internal_errors.append(exc)
                self.bot._pending.pop(q[0].update_id, None)
            if self.closed:
                return
            q.popleft()
            if q:
                self.ready.put_nowait(qid)
            else:
                del self.queues[qid]

    async def _deliver(self, upd: _Update) -> None:
        d = self.double
        body = upd.json_bytes()
        attempt = 0
        while True:
            error: str | None = None
            try:
                assert d._http is not None
                async with d._http.post(self.url, data=body, headers=self.headers) as resp:
                    if 200 <= resp.status < 300:
                        await d._handle_webhook_reply(self.bot, resp)
                    else:
                        error = f"Wrong response from the webhook: {resp.status} {resp.reason}"
            except asyncio.CancelledError:
                raise
            except aiohttp.ClientConnectorError:
                error = "Connection refused"
            except TimeoutError:
                error = "Read timeout expired"
            except (aiohttp.ClientError, OSError) as exc:
                error = f"Connection error: {exc.__class__.__name__}: {exc}"
            if error is None:
                self.bot._pending.pop(upd.update_id, None)
                d.stats.webhook_deliveries += 1
                return
            attempt += 1
            self.last_error_date = _now_ts()
            self.last_error_message = error
            d.stats.webhook_failures += 1
            d.webhook_failures.append(
                {
                    "bot_id": self.bot.id,
                    "update_id": upd.update_id,
                    "attempt": attempt,
                    "error": error,
                }
            )
            if attempt > d.webhook_max_retries:
                self.bot._pending.pop(upd.update_id, None)
                d.stats.webhook_dropped += 1
                return
            delay = min(d.webhook_retry_delay * (2 ** (attempt - 1)), d.webhook_max_retry_delay)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self.closed = True
        current = asyncio.current_task()
        tasks = [t for t in self.tasks if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(eq=False)
class FakeBot(FakeUser):
    """A bot account served by the double. ``token`` authenticates API calls."""

    token: str = ""
    can_join_groups: bool = True
    can_read_all_group_messages: bool = False
    supports_inline_queries: bool = False
    logged_out: bool = False
    _pending: OrderedDict[int, _Update] = field(default_factory=OrderedDict, repr=False)
    _update_seq: int = field(default=100_000, repr=False)
    _allowed: frozenset[str] | None = field(default=None, repr=False)
    _allowed_list: list[str] | None = field(default=None, repr=False)
    _poller: asyncio.Future[None] | None = field(default=None, repr=False)
    _webhook: _Webhook | None = field(default=None, repr=False)
    _commands: dict[tuple[Any, str], list[dict[str, str]]] = field(
        default_factory=dict, repr=False
    )
    _global_bucket: _Bucket | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "is_bot": True, "first_name": self.first_name}
        if self.username:
            d["username"] = self.username
        return d

    def me(self) -> dict[str, Any]:
        d = self.as_dict()
        d.update(
            can_join_groups=self.can_join_groups,
            can_read_all_group_messages=self.can_read_all_group_messages,
            supports_inline_queries=self.supports_inline_queries,
            can_connect_to_business=False,
            has_main_web_app=False,
        )
        return d

    @property
    def pending_update_count(self) -> int:
        return len(self._pending)

    @property
    def webhook_url(self) -> str:
        return self._webhook.url if self._webhook else ""

    def _allows(self, kind: str) -> bool:
        if self._allowed is None:
            return kind not in OPT_IN_UPDATE_TYPES
        return kind in self._allowed

    def _set_allowed(self, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _bad("can't parse allowed updates JSON object") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad("can't parse allowed updates JSON object")
        if not value:
            self._allowed = None
            self._allowed_list = None
        else:
            self._allowed = frozenset(value)
            self._allowed_list = list(value)


@dataclass(eq=False)
class FakeChat:
    """A chat. ``type`` is "private", "group" or "supergroup"; ``as_dict()`` is the ``Chat``."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    user: FakeUser | None = None  # the other party of a private chat
    members: dict[int, str] = field(default_factory=dict, repr=False)  # user id -> status
    users: dict[int, FakeUser] = field(default_factory=dict, repr=False)
    admin_rights: dict[int, dict[str, bool]] = field(default_factory=dict, repr=False)
    invite_links: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    join_requests: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    is_forum: bool = False  # a supergroup with topics
    # thread id -> {"name", "icon_color", "closed", "creator" (user id), "root" (service message)}
    topics: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    _bots: dict[int, FakeBot] = field(default_factory=dict, repr=False)

    @property
    def is_group(self) -> bool:
        return self.type in ("group", "supergroup")

    def can_manage_topics(self, user: FakeUser | int) -> bool:
        uid = user if isinstance(user, int) else user.id
        status = self.members.get(uid)
        if status == "creator":
            return True
        return status == "administrator" and bool(
            self.admin_rights.get(uid, {}).get("can_manage_topics")
        )

    def as_dict(self) -> dict[str, Any]:
        if self.type == "private" and self.user is not None:
            u = self.user
            d: dict[str, Any] = {"id": u.id, "type": "private", "first_name": u.first_name}
            if u.last_name:
                d["last_name"] = u.last_name
            if u.username:
                d["username"] = u.username
            return d
        d = {"id": self.id, "type": self.type, "title": self.title or ""}
        if self.username:
            d["username"] = self.username
        if self.is_forum:
            d["is_forum"] = True
        return d

    def status_of(self, user: FakeUser | int) -> str:
        if self.type == "private":
            return "member"
        uid = user if isinstance(user, int) else user.id
        return self.members.get(uid, "left")

    def member_count(self) -> int:
        if self.type == "private":
            return 2
        return sum(1 for s in self.members.values() if s in _ACTIVE_STATUSES)


@dataclass
class Upload:
    """A file received in a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes

    def __repr__(self) -> str:
        return f"Upload({self.filename!r}, {len(self.data)} bytes)"


class _Update:
    __slots__ = ("update_id", "kind", "data", "queue_id", "_json")

    def __init__(self, update_id: int, kind: str, data: dict[str, Any], queue_id: Any) -> None:
        self.update_id = update_id
        self.kind = kind
        self.data = data
        self.queue_id = queue_id
        self._json: bytes | None = None

    def json_bytes(self) -> bytes:
        if self._json is None:
            self._json = _dumps(self.data)
        return self._json


@dataclass
class DoubleStats:
    """Counters; ``calls`` is per canonical method name."""

    calls: Counter[str] = field(default_factory=Counter)
    too_many_requests: int = 0
    errors_returned: int = 0
    messages_sent: int = 0
    updates_created: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0
    webhook_dropped: int = 0

    @property
    def calls_per_method(self) -> Counter[str]:
        return self.calls


# --------------------------------------------------------------------------------------------
# text: automatic entities, HTML / MarkdownV2 / Markdown parsing
# --------------------------------------------------------------------------------------------

_AUTO_ENTITY_RE = re.compile(
    r"(?P<bot_command>(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/@]))"
    r"|(?P<mention>(?<![\w@/])@[A-Za-z0-9_]{3,32}(?![\w@]))"
    r"|(?P<url>(?<![\w@/])https?://[^\s<>\"]+)"
    r"|(?P<hashtag>(?<![\w#&])#(?=\w*[^\W\d_])\w{1,256})"
)
_URL_TRAILING = ".,;:!?)]}'\""
_MENTION_RE = re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{3,32}(?![\w@])")
_LEADING_COMMAND_RE = re.compile(r"/[A-Za-z0-9_]{1,64}(?:@([A-Za-z0-9_]{3,32}))?(?![\w/@])")
_NON_NESTABLE = frozenset({"code", "pre", "text_link", "url", "text_mention", "email"})


def _offset_map(text: str) -> Callable[[int], int]:
    if text.isascii():
        return lambda i: i
    return lambda i: _u16len(text[:i])


def auto_entities(text: str) -> list[dict[str, Any]]:
    """Entities Telegram detects by itself: bot_command, mention, url, hashtag (UTF-16 offsets)."""
    if not any(c in text for c in "/@#:"):
        return []
    to16 = _offset_map(text)
    out: list[dict[str, Any]] = []
    for m in _AUTO_ENTITY_RE.finditer(text):
        kind = m.lastgroup
        assert kind is not None
        start, end = m.span()
        if kind == "url":
            while end > start and text[end - 1] in _URL_TRAILING:
                end -= 1
        s16 = to16(start)
        out.append({"type": kind, "offset": s16, "length": _u16len(text[start:end])})
    return out


def _merge_entities(explicit: list[dict[str, Any]], auto: list[dict[str, Any]]) -> list[dict]:
    if not auto:
        return explicit
    if not explicit:
        return auto
    blocking = [
        (e["offset"], e["offset"] + e["length"]) for e in explicit if e["type"] in _NON_NESTABLE
    ]
    merged = list(explicit)
    for a in auto:
        a0, a1 = a["offset"], a["offset"] + a["length"]
        if any(a0 < b1 and b0 < a1 for b0, b1 in blocking):
            continue
        merged.append(a)
    merged.sort(key=lambda e: (e["offset"], -e["length"]))
    return merged


def _strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram trims leading/trailing whitespace; entities are shifted/clipped accordingly."""
    stripped = text.strip()
    if len(stripped) == len(text):
        return text, entities
    if not entities:
        return stripped, entities
    lead16 = _u16len(text[: len(text) - len(text.lstrip())])
    total16 = _u16len(stripped)
    out = []
    for e in entities:
        start = max(e["offset"] - lead16, 0)
        end = min(e["offset"] + e["length"] - lead16, total16)
        if end > start:
            out.append({**e, "offset": start, "length": end - start})
    return stripped, out


class _TextBuilder:
    __slots__ = ("parts", "pos", "entities", "source")

    def __init__(self, source: str) -> None:
        self.parts: list[str] = []
        self.pos = 0  # UTF-16 position in the output
        self.entities: list[dict[str, Any]] = []
        self.source = source

    def add(self, chunk: str) -> None:
        if chunk:
            self.parts.append(chunk)
            self.pos += _u16len(chunk)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.pos > start:
            self.entities.append(
                {"type": kind, "offset": start, "length": self.pos - start, **extra}
            )

    def byte_offset(self, index: int) -> int:
        return len(self.source[:index].encode())

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), self.entities


def _cant_parse(msg: str) -> ApiError:
    return _bad(f"can't parse entities: {msg}")


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_SPECIAL_RE = re.compile(r"[<&]")
_HTML_TAG_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_HTML_ATTR_RE = re.compile(
    r"\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+)))?"
)
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]{2,8});")


def _html_unescape(s: str) -> str:
    if "&" not in s:
        return s
    return _HTML_ENTITY_RE.sub(lambda m: _html_entity(m) or m.group(0), s)


def _html_entity(m: re.Match[str]) -> str | None:
    name = m.group(1)
    if name.startswith("#"):
        try:
            code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
            return chr(code) if 0 < code <= 0x10FFFF else None
        except ValueError:
            return None
    return _HTML_NAMED.get(name)


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram-flavoured HTML (parse_mode=HTML) into (plain text, entities)."""
    b = _TextBuilder(text)
    stack: list[tuple[str, int, dict[str, str], int]] = []  # name, start16, attrs, index
    i, n = 0, len(text)
    while i < n:
        m = _HTML_SPECIAL_RE.search(text, i)
        if m is None:
            b.add(text[i:])
            break
        b.add(text[i : m.start()])
        i = m.start()
        if text[i] == "&":
            em = _HTML_ENTITY_RE.match(text, i)
            decoded = _html_entity(em) if em else None
            if em and decoded is not None:
                b.add(decoded)
                i = em.end()
            else:
                b.add("&")
                i += 1
            continue
        # a tag
        if text.startswith("</", i):
            j = text.find(">", i + 2)
            if j < 0:
                raise _cant_parse(f"Unclosed end tag at byte offset {b.byte_offset(i)}")
            name = text[i + 2 : j].strip().lower()
            if not stack:
                raise _cant_parse(f"Unexpected end tag at byte offset {b.byte_offset(i)}")
            open_name, start, attrs, _ = stack[-1]
            if name != open_name:
                raise _cant_parse(
                    f'Unmatched end tag at byte offset {b.byte_offset(i)}, expected "</{open_name}>",'
                    f' found "</{name}>"'
                )
            stack.pop()
            kind = _HTML_TAGS[open_name]
            if open_name == "a":
                href = attrs.get("href")
                if href:
                    b.entity("text_link", start, url=href)
            elif open_name == "code" and stack and stack[-1][0] == "pre":
                lang = attrs.get("class", "")
                if lang.startswith("language-") and len(lang) > 9:
                    stack[-1][2]["__language"] = lang[9:]
                else:
                    b.entity("code", start)
            elif open_name == "pre":
                if "__language" in attrs:
                    b.entity("pre", start, language=attrs["__language"])
                else:
                    b.entity("pre", start)
            elif open_name == "blockquote":
                b.entity("expandable_blockquote" if "expandable" in attrs else "blockquote", start)
            elif open_name == "tg-emoji":
                b.entity("custom_emoji", start, custom_emoji_id=attrs.get("emoji-id", ""))
            else:
                b.entity(kind, start)
            i = j + 1
            continue
        nm = _HTML_TAG_NAME_RE.match(text, i + 1)
        if nm is None:
            raise _cant_parse(f'Unsupported start tag "" at byte offset {b.byte_offset(i)}')
        name = nm.group(0).lower()
        k = nm.end()
        attrs: dict[str, str] = {}
        while True:
            while k < n and text[k].isspace():
                k += 1
            if k >= n:
                raise _cant_parse(f"Unclosed start tag at byte offset {b.byte_offset(i)}")
            if text[k] == ">":
                break
            am = _HTML_ATTR_RE.match(text, k)
            if am is None or am.end() == k:
                raise _cant_parse(
                    f'Expected equal sign in declaration of an attribute of the tag "{name}"'
                    f" at byte offset {b.byte_offset(i)}"
                )
            value = next((v for v in am.group(2, 3, 4) if v is not None), "")
            attrs[am.group(1).lower()] = _html_unescape(value)
            k = am.end()
        if name not in _HTML_TAGS:
            raise _cant_parse(f'Unsupported start tag "{name}" at byte offset {b.byte_offset(i)}')
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise _cant_parse(
                f'Tag "span" must have class "tg-spoiler" at byte offset {b.byte_offset(i)}'
            )
        stack.append((name, b.pos, attrs, i))
        i = k + 1
    if stack:
        raise _cant_parse(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return b.result()


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_SPECIAL_RE = re.compile(r"[\\_*\[\]()~`>#+\-=|{}.!\n]")
_MDV2_NAMES = {
    "*": "Bold",
    "_": "Italic",
    "__": "Underline",
    "~": "Strikethrough",
    "||": "Spoiler",
    "[": "TextUrl",
}
_MDV2_TYPES = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
}


def _scan_until(text: str, start: int, end_token: str, escapable: str) -> tuple[str, int] | None:
    """Read raw text until an unescaped end_token; returns (content, index after token)."""
    out: list[str] = []
    k, n = start, len(text)
    while k < n:
        c = text[k]
        if c == "\\" and k + 1 < n and text[k + 1] in escapable:
            out.append(text[k + 1])
            k += 2
            continue
        if text.startswith(end_token, k):
            return "".join(out), k + len(end_token)
        out.append(c)
        k += 1
    return None


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse parse_mode=MarkdownV2 text into (plain text, entities), with Telegram's errors."""
    b = _TextBuilder(text)
    stack: list[tuple[str, int, int]] = []  # token, start16, index
    quote_start: int | None = None
    i, n = 0, len(text)
    while i < n:
        m = _MDV2_SPECIAL_RE.search(text, i)
        if m is None:
            b.add(text[i:])
            break
        b.add(text[i : m.start()])
        i = m.start()
        c = text[i]
        if c == "\\":
            if i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                b.add(text[i + 1])
                i += 2
            else:
                b.add("\\")
                i += 1
            continue
        if c == "\n":
            if quote_start is not None and not text.startswith(">", i + 1):
                b.entity("blockquote", quote_start)
                quote_start = None
            b.add("\n")
            i += 1
            continue
        if c == ">" and (i == 0 or text[i - 1] == "\n"):
            if quote_start is None:
                quote_start = b.pos
            i += 1
            continue
        if c == "`":
            if text.startswith("```", i):
                found = _scan_until(text, i + 3, "```", "`\\")
                if found is None:
                    raise _cant_parse(
                        f"Can't find end of Pre entity at byte offset {b.byte_offset(i)}"
                    )
                content, after = found
                language = None
                first, sep, rest = content.partition("\n")
                if sep and first and not any(ch.isspace() for ch in first):
                    language, content = first, rest
                elif content.startswith("\n"):
                    content = content[1:]
                start = b.pos
                b.add(content)
                if language:
                    b.entity("pre", start, language=language)
                else:
                    b.entity("pre", start)
                i = after
                continue
            found = _scan_until(text, i + 1, "`", "`\\")
            if found is None:
                raise _cant_parse(
                    f"Can't find end of Code entity at byte offset {b.byte_offset(i)}"
                )
            start = b.pos
            b.add(found[0])
            b.entity("code", start)
            i = found[1]
            continue
        if c == "[":
            stack.append(("[", b.pos, i))
            i += 1
            continue
        if c == "]" and stack and stack[-1][0] == "[":
            _, start, _ = stack.pop()
            if text.startswith("(", i + 1):
                found = _scan_until(text, i + 2, ")", ")\\")
                if found is None:
                    raise _cant_parse(
                        f"Can't find end of a URL at byte offset {b.byte_offset(i + 1)}"
                    )
                url, after = found
                b.entity("text_link", start, url=url)
                i = after
            else:
                i += 1
            continue
        token = None
        if c == "_":
            token = "__" if text.startswith("__", i) else "_"
        elif c == "|" and text.startswith("||", i):
            token = "||"
        elif c in "*~":
            token = c
        if token is None:
            raise _cant_parse(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        if stack and stack[-1][0] == token:
            _, start, _ = stack.pop()
            b.entity(_MDV2_TYPES[token], start)
        else:
            stack.append((token, b.pos, i))
        i += len(token)
    if quote_start is not None:
        b.entity("blockquote", quote_start)
    if stack:
        token, _, index = stack[-1]
        raise _cant_parse(
            f"Can't find end of {_MDV2_NAMES[token]} entity at byte offset {b.byte_offset(index)}"
        )
    return b.result()


_MD_SPECIAL_RE = re.compile(r"[\\_*`\[]")


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse legacy parse_mode=Markdown (no nesting)."""
    b = _TextBuilder(text)
    i, n = 0, len(text)
    while i < n:
        m = _MD_SPECIAL_RE.search(text, i)
        if m is None:
            b.add(text[i:])
            break
        b.add(text[i : m.start()])
        i = m.start()
        c = text[i]
        if c == "\\":
            if i + 1 < n and text[i + 1] in "_*`[":
                b.add(text[i + 1])
                i += 2
            else:
                b.add("\\")
                i += 1
            continue
        err = _cant_parse(
            f"Can't find end of the entity starting at byte offset {b.byte_offset(i)}"
        )
        if c == "[":
            j = text.find("]", i + 1)
            if j < 0:
                raise err
            start = b.pos
            b.add(text[i + 1 : j])
            if text.startswith("(", j + 1):
                k = text.find(")", j + 2)
                if k < 0:
                    raise err
                b.entity("text_link", start, url=text[j + 2 : k])
                i = k + 1
            else:
                i = j + 1
            continue
        token = "```" if text.startswith("```", i) else c
        j = text.find(token, i + len(token))
        if j < 0:
            raise err
        content = text[i + len(token) : j]
        start = b.pos
        if token == "```":
            first, sep, rest = content.partition("\n")
            if sep and first and " " not in first:
                b.add(rest)
                b.entity("pre", start, language=first)
            else:
                b.add(content)
                b.entity("pre", start)
        else:
            b.add(content)
            b.entity({"*": "bold", "_": "italic", "`": "code"}[c], start)
        i = j + len(token)
    return b.result()


def format_text(
    text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None
) -> tuple[str, list[dict[str, Any]]]:
    """Apply parse_mode/entities like Telegram, add automatic entities, trim whitespace."""
    if entities is not None:
        plain, ents = text, entities
    elif parse_mode:
        mode = parse_mode.lower()
        if mode == "html":
            plain, ents = parse_html(text)
        elif mode == "markdownv2":
            plain, ents = parse_markdown_v2(text)
        elif mode == "markdown":
            plain, ents = parse_markdown(text)
        else:
            raise _bad(f'unsupported parse_mode "{parse_mode}"')
    else:
        plain, ents = text, []
    ents = _merge_entities(ents, auto_entities(plain))
    return _strip_text(plain, ents)


# --------------------------------------------------------------------------------------------
# parameter helpers
# --------------------------------------------------------------------------------------------


def _present(p: dict[str, Any], name: str) -> bool:
    v = p.get(name)
    return v is not None and v != ""


def _int(p: dict[str, Any], name: str, default: int | None = None) -> int | None:
    v = p.get(name)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise _bad(f'field "{name}" must be a valid Number')


def _bool(p: dict[str, Any], name: str) -> bool:
    v = p.get(name)
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _str(p: dict[str, Any], name: str) -> str | None:
    v = p.get(name)
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    raise _bad(f'field "{name}" must be of type String')


def _json_param(p: dict[str, Any], name: str, error: str) -> Any:
    v = p.get(name)
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            raise _bad(error) from None
    return v


# --------------------------------------------------------------------------------------------
# the double
# --------------------------------------------------------------------------------------------

_Handler = Callable[["FakeBot", dict[str, Any]], Any]

_SENDING_METHODS = frozenset({"sendmessage", "sendphoto", "copymessage", "forwardmessage"})


class BotAPIDouble:
    """In-process fake of api.telegram.org; see the module docstring.

    Parameters:
        clock: monotonic time source for flood limits (use :class:`ManualClock` in tests).
        limits: :class:`FloodLimits` (defaults like Telegram's); ``FloodLimits.off()`` disables.
        host: interface to bind (a free port is chosen).
        record_calls: keep every call for :meth:`calls` (disable for very long benchmarks).
        webhook_timeout: seconds to wait for the webhook endpoint's response.
        webhook_max_retries / webhook_retry_delay / webhook_max_retry_delay: after a failed
            delivery the same update is retried (the chat's queue waits) with exponential backoff;
            after ``webhook_max_retries`` retries it is dropped (``stats.webhook_dropped``).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: FloodLimits | None = None,
        host: str = "127.0.0.1",
        record_calls: bool = True,
        webhook_timeout: float = 15.0,
        webhook_max_retries: int = 5,
        webhook_retry_delay: float = 0.05,
        webhook_max_retry_delay: float = 1.0,
    ) -> None:
        self._clock = clock
        self._limits = limits if limits is not None else FloodLimits()
        self.host = host
        self.record_calls = record_calls
        self.webhook_timeout = webhook_timeout
        self.webhook_max_retries = webhook_max_retries
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_max_retry_delay = webhook_max_retry_delay
        self.base_url = ""
        self.port = 0
        self.stats = DoubleStats()
        self.webhook_failures: list[dict[str, Any]] = []
        self.internal_errors: list[BaseException] = []

        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._bots_by_token: dict[str, FakeBot] = {}
        self._bots: dict[int, FakeBot] = {}
        self._default_bot: FakeBot | None = None
        self._users: dict[int, FakeUser] = {}
        self._groups: dict[int, FakeChat] = {}
        self._groups_by_username: dict[str, FakeChat] = {}
        self._user_ids = itertools.count(1_000_001)
        self._group_ids = itertools.count(1)
        self._callback_ids = itertools.count(4_382_000_000_000_000_001)
        self._file_seq = itertools.count(1)
        # chat key -> {message_id: Message}; chat key is ("g", chat_id) or ("p", bot_id, user_id)
        self._messages: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = defaultdict(dict)
        self._message_seq: dict[tuple[Any, ...], int] = defaultdict(int)
        self._sent: list[dict[str, Any]] = []
        self._sent_by_chat: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._sent_counts: Counter[tuple[int | None, int | None]] = Counter()
        self._sent_waiters: list[tuple[int, int | None, int | None, asyncio.Future[None]]] = []
        self._edits: list[dict[str, Any]] = []
        self._deleted: list[tuple[int, int]] = []
        self._calls: list[tuple[str, dict[str, Any], int]] = []
        self._injected: dict[str, deque[ApiError]] = {}
        self._callbacks: dict[str, dict[str, Any]] = {}
        self._answered: list[dict[str, Any]] = []
        self._files: dict[str, dict[str, Any]] = {}
        self._files_by_path: dict[str, dict[str, Any]] = {}
        self._chat_buckets: dict[tuple[int, int], _Bucket] = {}
        self._handlers: dict[str, tuple[str, _Handler, bool]] = {}
        self._register_handlers()

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle_http)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
        )

    async def close(self) -> None:
        for bot in self._bots.values():
            if bot._webhook is not None:
                wh, bot._webhook = bot._webhook, None
                await wh.stop()
            if bot._poller is not None and not bot._poller.done():
                bot._poller.set_result(None)
        for _, _, _, fut in self._sent_waiters:
            if not fut.done():
                fut.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BotAPIDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def limits(self) -> FloodLimits:
        return self._limits

    @limits.setter
    def limits(self, value: FloodLimits) -> None:
        self._limits = value
        self._chat_buckets.clear()
        for bot in self._bots.values():
            bot._global_bucket = None

    def api_url(self, token: str, method: str) -> str:
        return f"{self.base_url}/bot{token}/{method}"

    # ---- world setup ------------------------------------------------------------------------

    def add_bot(
        self,
        token: str = "123456:TEST-TOKEN",
        username: str = "kizuna_test_bot",
        first_name: str = "Kizuna",
        can_read_all_group_messages: bool = False,
    ) -> FakeBot:
        head, sep, tail = token.partition(":")
        if not (sep and head.isdigit() and tail):
            raise ValueError(f"bad bot token {token!r}; expected '<digits>:<secret>'")
        bot_id = int(head)
        if token in self._bots_by_token or bot_id in self._bots or bot_id in self._users:
            raise ValueError(f"bot {bot_id} already exists")
        bot = FakeBot(
            id=bot_id,
            first_name=first_name,
            username=username,
            is_bot=True,
            token=token,
            can_read_all_group_messages=can_read_all_group_messages,
        )
        self._bots_by_token[token] = bot
        self._bots[bot_id] = bot
        self._users[bot_id] = bot
        if self._default_bot is None:
            self._default_bot = bot
        return bot

    def add_user(
        self,
        first_name: str = "Aiko",
        *,
        username: str | None = None,
        language_code: str | None = "ja",
        user_id: int | None = None,
        last_name: str | None = None,
    ) -> FakeUser:
        uid = user_id if user_id is not None else next(self._user_ids)
        while user_id is None and uid in self._users:
            uid = next(self._user_ids)
        if uid in self._users:
            raise ValueError(f"user {uid} already exists")
        user = FakeUser(
            id=uid,
            first_name=first_name,
            username=username,
            last_name=last_name,
            language_code=language_code,
        )
        self._users[uid] = user
        return user

    def create_group(
        self,
        title: str,
        members: Iterable[FakeUser] = (),
        *,
        supergroup: bool = True,
        chat_id: int | None = None,
        username: str | None = None,
        admins: Iterable[FakeUser] = (),
        forum: bool = False,
    ) -> FakeChat:
        """Create a group; the first member becomes its creator, ``admins`` administrators.

        Bots are added with :meth:`add_bot_to_group` (which produces the membership updates).
        ``forum=True`` makes a supergroup with topics.
        """
        if forum and not supergroup:
            raise ValueError("only supergroups can have topics")
        if chat_id is None:
            n = next(self._group_ids)
            chat_id = -(1_000_000_000_000 + 4_000_000 + n) if supergroup else -(4_000_000 + n)
            while chat_id in self._groups:
                n = next(self._group_ids)
                chat_id = -(1_000_000_000_000 + 4_000_000 + n) if supergroup else -(4_000_000 + n)
        if chat_id in self._groups or chat_id >= 0:
            raise ValueError(f"bad or duplicate group id {chat_id}")
        chat = FakeChat(
            id=chat_id,
            type="supergroup" if supergroup else "group",
            title=title,
            username=username,
            is_forum=forum,
        )
        for i, user in enumerate(members):
            if isinstance(user, FakeBot):
                raise ValueError("add bots with add_bot_to_group()")
            chat.members[user.id] = "creator" if i == 0 else "member"
            chat.users[user.id] = user
        for user in admins:
            chat.users[user.id] = user
            if chat.members.get(user.id) != "creator":
                chat.members[user.id] = "administrator"
                chat.admin_rights[user.id] = dict(_DEFAULT_ADMIN_RIGHTS)
        self._groups[chat_id] = chat
        if username:
            self._groups_by_username[username.lower()] = chat
        return chat

    def set_member_status(self, group: FakeChat, user: FakeUser, status: str) -> None:
        """Silently set a membership status (no updates), e.g. to make a user an admin."""
        if status not in ("creator", "administrator", "member", "left", "kicked", "restricted"):
            raise ValueError(status)
        group.users[user.id] = user
        group.members[user.id] = status
        if isinstance(user, FakeBot):
            group._bots[user.id] = user
        if status == "administrator":
            group.admin_rights.setdefault(user.id, dict(_DEFAULT_ADMIN_RIGHTS))

    def add_bot_to_group(
        self,
        bot: FakeBot,
        group: FakeChat,
        *,
        by: FakeUser,
        admin: bool = False,
        rights: dict[str, bool] | None = None,
    ) -> None:
        """Add (or promote) a bot: my_chat_member to it, new_chat_members service message.

        ``rights`` (with ``admin=True``) override the default administrator rights, e.g.
        ``{"can_manage_topics": True}`` for a forum workspace bot.
        """
        if rights and not admin:
            raise ValueError("rights are for administrators (admin=True)")
        old_status = group.members.get(bot.id, "left")
        new_status = "administrator" if admin else "member"
        if old_status == new_status and group.admin_rights.get(bot.id) == (
            {**_DEFAULT_ADMIN_RIGHTS, **(rights or {})} if admin else None
        ):
            return
        old = self._chat_member(group, bot)
        group._bots[bot.id] = bot
        group.users[bot.id] = bot
        group.members[bot.id] = new_status
        if admin:
            group.admin_rights[bot.id] = {**_DEFAULT_ADMIN_RIGHTS, **(rights or {})}
        else:
            group.admin_rights.pop(bot.id, None)
        new = self._chat_member(group, bot)
        self._membership_changed(group, bot, by, old, new)
        if old_status not in _ACTIVE_STATUSES:
            self._service_message(group, by, new_chat_members=[bot.as_dict()])

    def remove_bot_from_group(
        self, bot: FakeBot, group: FakeChat, *, by: FakeUser, ban: bool = True
    ) -> None:
        """Remove a bot (status "kicked", or "left" with ban=False): my_chat_member + 403s."""
        if group.members.get(bot.id) not in _ACTIVE_STATUSES:
            raise ValueError("bot is not a member of this group")
        old = self._chat_member(group, bot)
        group.members[bot.id] = "kicked" if ban else "left"
        group.admin_rights.pop(bot.id, None)
        new = self._chat_member(group, bot)
        self._membership_changed(group, bot, by, old, new)
        self._service_message(group, by, left_chat_member=bot.as_dict())

    def user_blocks_bot(self, user: FakeUser, bot: FakeBot | None = None) -> None:
        bot = self._bot(bot)
        if bot.id in user.blocked_bots:
            return
        old = {"status": "member", "user": bot.as_dict()}
        user.blocked_bots.add(bot.id)
        new = {"status": "kicked", "user": bot.as_dict(), "until_date": 0}
        self._enqueue(
            bot, "my_chat_member", self._member_update(user.private_chat, user, old, new)
        )

    def user_unblocks_bot(self, user: FakeUser, bot: FakeBot | None = None) -> None:
        bot = self._bot(bot)
        if bot.id not in user.blocked_bots:
            return
        user.blocked_bots.discard(bot.id)
        user.started_bots.add(bot.id)
        old = {"status": "kicked", "user": bot.as_dict(), "until_date": 0}
        new = {"status": "member", "user": bot.as_dict()}
        self._enqueue(
            bot, "my_chat_member", self._member_update(user.private_chat, user, old, new)
        )

    async def user_joins(
        self, user: FakeUser, group: FakeChat, *, invite_link: str | None = None
    ) -> None:
        """User joins (optionally via an invite link): chat_member + new_chat_members message."""
        link = None
        if invite_link is not None:
            link = group.invite_links.get(invite_link)
            if link is None or link["is_revoked"]:
                raise ValueError("invite link is invalid or revoked")
            if link["creates_join_request"]:
                raise ValueError("this link requires approval; use user_requests_join()")
            if link.get("expire_date") and link["expire_date"] < _now_ts():
                raise ValueError("invite link expired")
            limit = link.get("member_limit")
            if limit and link["_uses"] >= limit:
                raise ValueError("invite link usage limit reached")
            link["_uses"] += 1
        self._join(group, user, user, link=link)

    async def user_requests_join(
        self,
        user: FakeUser,
        group: FakeChat,
        *,
        invite_link: str | None = None,
        bio: str | None = None,
    ) -> None:
        """chat_join_request to admin bots (can_invite_users); they may message the user 5 min."""
        if group.members.get(user.id) in _ACTIVE_STATUSES:
            raise ValueError("user is already a member")
        link = group.invite_links.get(invite_link) if invite_link else None
        if invite_link and link is None:
            raise ValueError("unknown invite link")
        group.users[user.id] = user
        group.join_requests[user.id] = {"time": self._clock(), "link": link}
        if link is not None:
            link["pending_join_request_count"] = link.get("pending_join_request_count", 0) + 1
        req: dict[str, Any] = {
            "chat": group.as_dict(),
            "from": user.as_dict(),
            "user_chat_id": user.id,
            "date": _now_ts(),
        }
        if bio:
            req["bio"] = bio
        if link is not None:
            req["invite_link"] = self._public_link(link)
        for bot in self._bots_in(group):
            rights = group.admin_rights.get(bot.id, {})
            if group.members.get(bot.id) == "creator" or rights.get("can_invite_users"):
                self._enqueue(bot, "chat_join_request", req, queue_id=group.id)

    async def user_leaves(self, user: FakeUser, group: FakeChat) -> None:
        if group.members.get(user.id) not in _ACTIVE_STATUSES:
            raise ValueError("user is not a member")
        old = self._chat_member(group, user)
        group.members[user.id] = "left"
        new = self._chat_member(group, user)
        self._membership_changed(group, user, user, old, new)
        self._service_message(group, user, left_chat_member=user.as_dict())

    # ---- user actions -----------------------------------------------------------------------

    async def user_sends(
        self,
        user: FakeUser,
        text: str,
        *,
        chat: FakeChat | None = None,
        reply_to: int | None = None,
        bot: FakeBot | None = None,
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A user message; returns the Message. ``chat=None`` = the private chat with ``bot``.

        ``thread_id``: the forum topic it is written in (a reply to a topic message lands in
        that topic too); without it a message in a forum goes to the General topic.
        """
        content: dict[str, Any] = {"text": text}
        entities = auto_entities(text)
        if entities:
            content["entities"] = entities
        return self._user_message(user, content, text, chat=chat, reply_to=reply_to, bot=bot,
                                  thread_id=thread_id)

    async def user_sends_photo(
        self,
        user: FakeUser,
        *,
        caption: str = "",
        chat: FakeChat | None = None,
        reply_to: int | None = None,
        bot: FakeBot | None = None,
        thread_id: int | None = None,
        data: bytes = b"\xff\xd8\xff\xe0fake-jpeg",
    ) -> dict[str, Any]:
        """A user sends a photo (with an optional caption); the bot can re-send its file_id."""
        if not data:
            raise ValueError("a photo needs data")
        info = self._new_file(data)
        sizes = info.setdefault("_photo_sizes", self._make_sizes(info))
        content: dict[str, Any] = {"photo": [dict(x) for x in sizes]}
        if caption:
            content["caption"] = caption
            entities = auto_entities(caption)
            if entities:
                content["caption_entities"] = entities
        return self._user_message(user, content, caption, chat=chat, reply_to=reply_to,
                                  bot=bot, thread_id=thread_id)

    def _user_message(
        self,
        user: FakeUser,
        content: dict[str, Any],
        text: str,
        *,
        chat: FakeChat | None,
        reply_to: int | None,
        bot: FakeBot | None,
        thread_id: int | None,
    ) -> dict[str, Any]:
        target = self._bot(bot) if chat is None or chat.type == "private" else None
        if target is not None:
            if thread_id is not None:
                raise ValueError("topics exist only in forum supergroups")
            if target.id in user.blocked_bots:
                raise RuntimeError("the user blocked this bot; call user_unblocks_bot() first")
            user.started_bots.add(target.id)
            key: tuple[Any, ...] = ("p", target.id, user.id)
            chat_obj = user.private_chat
        else:
            assert chat is not None
            if chat.members.get(user.id) not in _ACTIVE_STATUSES:
                raise ValueError(f"{user.first_name} is not a member of {chat.title!r}")
            key = ("g", chat.id)
            chat_obj = chat
        replied = None
        if reply_to is not None:
            replied = self._messages[key].get(reply_to)
            if replied is None:
                raise ValueError(f"message {reply_to} not found in this chat")
        topic = None
        if chat_obj.is_forum:
            if thread_id is None and replied is not None and replied.get("is_topic_message"):
                thread_id = replied["message_thread_id"]
            if thread_id is not None:
                topic = chat_obj.topics.get(thread_id)
                if topic is None:
                    raise ValueError(f"no topic {thread_id} in {chat_obj.title!r}")
                if topic["closed"] and not chat_obj.can_manage_topics(user):
                    raise ValueError(f"topic {topic['name']!r} is closed")
        elif thread_id is not None:
            raise ValueError("topics exist only in forum supergroups")
        msg: dict[str, Any] = {
            "message_id": self._next_message_id(key),
            "from": user.as_dict(),
            "chat": chat_obj.as_dict(),
            "date": _now_ts(),
        }
        if topic is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        msg.update(content)
        if replied is None and topic is not None:
            replied = topic["root"]  # Telegram: a topic message "replies" to the topic's start
        if replied is not None:
            msg["reply_to_message"] = self._reply_snapshot(replied)
        self._messages[key][msg["message_id"]] = msg
        if target is not None:
            self._enqueue(target, "message", msg, queue_id=user.id)
        else:
            for b in self._bots_in(chat_obj):
                if self._bot_sees(b, chat_obj, msg, text):
                    self._enqueue(b, "message", msg, queue_id=chat_obj.id)
        return msg

    async def user_creates_topic(
        self, user: FakeUser, group: FakeChat, name: str, *, icon_color: int = 7322096
    ) -> int:
        """A member with ``can_manage_topics`` (or the creator) opens a topic; its thread id."""
        if not group.is_forum:
            raise ValueError(f"{group.title!r} is not a forum")
        if not group.can_manage_topics(user):
            raise ValueError(f"{user.first_name} may not create topics in {group.title!r}")
        return self._new_topic(group, user, name, icon_color, None)["message_thread_id"]

    def delete_topic(self, group: FakeChat, thread_id: int) -> None:
        """An administrator deletes a topic with all its messages (no updates, like Telegram)."""
        if group.topics.pop(thread_id, None) is None:
            raise ValueError(f"no topic {thread_id}")
        stored = self._messages.get(("g", group.id), {})
        for mid in [m for m, v in stored.items() if v.get("message_thread_id") == thread_id]:
            del stored[mid]

    async def user_presses(
        self,
        user: FakeUser,
        message: dict[str, Any],
        callback_data: str,
        *,
        bot: FakeBot | None = None,
        check: bool = True,
    ) -> str:
        """Press an inline button; returns the callback query id.

        With ``check`` (default) the button must exist on the message's *current* keyboard.
        """
        chat_id = message["chat"]["id"]
        sender = message.get("from", {})
        if bot is None and sender.get("id") in self._bots:
            bot = self._bots[sender["id"]]
        bot = self._bot(bot)
        key = self._chat_key(bot, chat_id)
        current = self._messages.get(key, {}).get(message["message_id"])
        if current is None:
            raise ValueError("message not found (deleted?)")
        if check:
            rows = current.get("reply_markup", {}).get("inline_keyboard", [])
            if not any(btn.get("callback_data") == callback_data for row in rows for btn in row):
                raise ValueError(f"no button with callback_data {callback_data!r} on the message")
        cq_id = str(next(self._callback_ids))
        cq = {
            "id": cq_id,
            "from": user.as_dict(),
            "message": dict(current),
            "chat_instance": str((chat_id * 1_000_003 + bot.id) & ((1 << 62) - 1)),
            "data": callback_data,
        }
        self._callbacks[cq_id] = {"bot_id": bot.id, "user_id": user.id, "answered": False}
        self._enqueue(bot, "callback_query", cq, queue_id=user.id)
        return cq_id

    async def send_raw_update(self, bot: FakeBot, update: dict[str, Any]) -> int:
        """Inject any update dict (allowed_updates is bypassed); returns its update_id."""
        if not isinstance(update, dict):
            raise TypeError("update must be a dict")
        data = dict(update)
        uid = data.get("update_id")
        if isinstance(uid, int) and not isinstance(uid, bool):
            bot._update_seq = max(bot._update_seq, uid)
        else:
            bot._update_seq += 1
            uid = bot._update_seq
            data = {"update_id": uid, **data}
        kind = next((k for k in data if k != "update_id"), "unknown")
        payload = data.get(kind)
        qid: Any = ("raw", uid)
        if isinstance(payload, dict):
            chat = payload.get("chat") or (payload.get("message") or {}).get("chat")
            if isinstance(chat, dict) and "id" in chat:
                qid = chat["id"]
        upd = _Update(uid, kind, data, qid)
        upd.json_bytes()  # fail early on non-JSON-serializable input
        self._push_update(bot, upd)
        return uid

    # ---- inspection -------------------------------------------------------------------------

    def sent_messages(
        self, chat_id: int | None = None, *, bot: FakeBot | None = None
    ) -> list[dict[str, Any]]:
        """Messages sent by bots (send*/copy/forward), in order, in their current (edited) state.

        Deleted messages stay in the list (see :meth:`deleted_messages`).
        """
        source = self._sent if chat_id is None else self._sent_by_chat.get(chat_id, [])
        if bot is None:
            return list(source)
        return [m for m in source if m["from"]["id"] == bot.id]

    def sent_in_topic(self, chat_id: int, thread_id: int | None) -> list[dict[str, Any]]:
        """Messages bots sent into one topic of a forum (``None``: the General topic)."""
        return [m for m in self._sent_by_chat.get(chat_id, [])
                if m.get("message_thread_id") == thread_id]

    def edits(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Snapshots of messages after each successful edit*, in order."""
        return [e for e in self._edits if chat_id is None or e["chat"]["id"] == chat_id]

    def deleted_messages(self, chat_id: int | None = None) -> list[tuple[int, int]]:
        return [d for d in self._deleted if chat_id is None or d[0] == chat_id]

    def calls(self, method: str | None = None, *, bot: FakeBot | None = None) -> list[tuple]:
        """Every API call received as (method, params); method names are matched case-insensitively.

        Params are as received (form values are strings, JSON-typed fields JSON strings for
        aiogram); uploaded files are :class:`Upload` objects.
        """
        want = method.lower() if method else None
        return [
            (name, params)
            for name, params, bot_id in self._calls
            if (want is None or name.lower() == want) and (bot is None or bot_id == bot.id)
        ]

    def clear_history(self) -> None:
        """Forget recorded calls, sent/edited/deleted messages, answers and webhook failures.

        World state (users, chats, stored messages, pending updates, limits) is kept.
        """
        self._calls.clear()
        self._sent.clear()
        self._sent_by_chat.clear()
        self._sent_counts.clear()
        self._edits.clear()
        self._deleted.clear()
        self._answered.clear()
        self.webhook_failures.clear()

    def answered_callbacks(self) -> list[dict[str, Any]]:
        return list(self._answered)

    def commands(
        self,
        bot: FakeBot,
        *,
        language_code: str | None = None,
        scope_type: str = "default",
        chat_id: int | None = None,
        user_id: int | None = None,
    ) -> list[dict[str, str]]:
        key = self._scope_key({"type": scope_type, "chat_id": chat_id, "user_id": user_id})
        return [dict(c) for c in bot._commands.get((key, language_code or ""), [])]

    def pending_updates(self, bot: FakeBot | None = None) -> list[dict[str, Any]]:
        """Updates not yet confirmed (polling) or delivered (webhook)."""
        return [u.data for u in self._bot(bot)._pending.values()]

    def message(self, chat_id: int, message_id: int, *, bot: FakeBot | None = None) -> dict | None:
        """Current state of any stored message (bot's or user's)."""
        return self._messages.get(self._chat_key(self._bot(bot), chat_id), {}).get(message_id)

    def inject_error(
        self,
        method: str,
        *,
        status: int,
        description: str,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail with this envelope (retry_after -> ceil)."""
        ra = None if retry_after is None else math.ceil(retry_after)
        q = self._injected.setdefault(method.lower(), deque())
        for _ in range(times):
            q.append(ApiError(status, description, retry_after=ra))

    async def wait_for_sent(
        self,
        count: int,
        *,
        chat_id: int | None = None,
        bot: FakeBot | None = None,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Wait (event-driven) until at least ``count`` messages were sent; returns them."""
        bot_id = bot.id if bot is not None else None
        if self._sent_counts[(chat_id, bot_id)] < count:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiter = (count, chat_id, bot_id, fut)
            self._sent_waiters.append(waiter)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                got = self.sent_messages(chat_id, bot=bot)
                texts = [m.get("text", m.get("caption")) for m in got]
                raise TimeoutError(
                    f"expected {count} sent message(s) (chat_id={chat_id}) within {timeout}s, "
                    f"got {len(got)}: {texts!r}"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    self._sent_waiters.remove(waiter)
        return self.sent_messages(chat_id, bot=bot)

    # ---- internals: world -------------------------------------------------------------------

    def _bot(self, bot: FakeBot | None) -> FakeBot:
        if bot is not None:
            return bot
        if self._default_bot is None:
            raise RuntimeError("no bot: call add_bot() first")
        return self._default_bot

    def _bots_in(self, chat: FakeChat) -> list[FakeBot]:
        return [b for b in chat._bots.values() if chat.members.get(b.id) in _ACTIVE_STATUSES]

    @staticmethod
    def _chat_key_for(bot: FakeBot, chat: FakeChat) -> tuple[Any, ...]:
        if chat.type == "private":
            return ("p", bot.id, chat.id)
        return ("g", chat.id)

    def _chat_key(self, bot: FakeBot, chat_id: int) -> tuple[Any, ...]:
        return ("g", chat_id) if chat_id < 0 else ("p", bot.id, chat_id)

    def _next_message_id(self, key: tuple[Any, ...]) -> int:
        self._message_seq[key] += 1
        return self._message_seq[key]

    @staticmethod
    def _reply_snapshot(msg: dict[str, Any]) -> dict[str, Any]:
        snap = dict(msg)
        snap.pop("reply_to_message", None)
        return snap

    def _bot_sees(self, bot: FakeBot, chat: FakeChat, msg: dict[str, Any], text: str) -> bool:
        """Privacy mode: what a group bot receives."""
        if bot.can_read_all_group_messages or chat.members.get(bot.id) in _ADMIN_STATUSES:
            return True
        m = _LEADING_COMMAND_RE.match(text)
        if m is not None:
            target = m.group(1)
            if target is None or (bot.username and target.lower() == bot.username.lower()):
                return True
        if bot.username and "@" in text:
            needle = "@" + bot.username.lower()
            if any(m.group(0).lower() == needle for m in _MENTION_RE.finditer(text)):
                return True
        reply = msg.get("reply_to_message")
        return bool(reply and reply.get("from", {}).get("id") == bot.id)

    def _member_update(
        self, chat: FakeChat, actor: FakeUser, old: dict, new: dict, **extra: Any
    ) -> dict[str, Any]:
        return {
            "chat": chat.as_dict(),
            "from": actor.as_dict(),
            "date": _now_ts(),
            "old_chat_member": old,
            "new_chat_member": new,
            **extra,
        }

    def _chat_member(self, chat: FakeChat, user: FakeUser) -> dict[str, Any]:
        status = chat.status_of(user)
        u = user.as_dict()
        if status == "creator":
            return {"status": "creator", "user": u, "is_anonymous": False}
        if status == "administrator":
            rights = chat.admin_rights.get(user.id) or _DEFAULT_ADMIN_RIGHTS
            return {"status": "administrator", "user": u, **rights}
        if status == "kicked":
            return {"status": "kicked", "user": u, "until_date": 0}
        if status == "restricted":
            flags = dict.fromkeys(
                (
                    "can_send_messages",
                    "can_send_audios",
                    "can_send_documents",
                    "can_send_photos",
                    "can_send_videos",
                    "can_send_video_notes",
                    "can_send_voice_notes",
                    "can_send_polls",
                    "can_send_other_messages",
                    "can_add_web_page_previews",
                    "can_react_to_messages",
                    "can_edit_tag",
                    "can_change_info",
                    "can_invite_users",
                    "can_pin_messages",
                    "can_manage_topics",
                ),
                False,
            )
            return {"status": "restricted", "user": u, "is_member": True, **flags, "until_date": 0}
        return {"status": status, "user": u}

    def _membership_changed(
        self,
        chat: FakeChat,
        subject: FakeUser,
        actor: FakeUser,
        old: dict,
        new: dict,
        **extra: Any,
    ) -> None:
        upd = self._member_update(chat, actor, old, new, **extra)
        if isinstance(subject, FakeBot):
            self._enqueue(subject, "my_chat_member", upd, queue_id=chat.id)
        for b in self._bots_in(chat):
            if b is not subject and chat.members.get(b.id) in _ADMIN_STATUSES:
                self._enqueue(b, "chat_member", upd, queue_id=chat.id)

    def _service_message(self, chat: FakeChat, actor: FakeUser, **content: Any) -> dict[str, Any]:
        key = ("g", chat.id)
        msg = {
            "message_id": self._next_message_id(key),
            "from": actor.as_dict(),
            "chat": chat.as_dict(),
            "date": _now_ts(),
            **content,
        }
        if "new_chat_members" in content:
            msg["new_chat_member"] = content["new_chat_members"][0]
            msg["new_chat_participant"] = content["new_chat_members"][0]
        if "left_chat_member" in content:
            msg["left_chat_participant"] = content["left_chat_member"]
        self._messages[key][msg["message_id"]] = msg
        for b in self._bots_in(chat):
            self._enqueue(b, "message", msg, queue_id=chat.id)
        return msg

    def _join(
        self,
        group: FakeChat,
        user: FakeUser,
        actor: FakeUser,
        *,
        link: dict | None = None,
        via_join_request: bool = False,
    ) -> None:
        if group.members.get(user.id) in _ACTIVE_STATUSES:
            raise ValueError("user is already a member")
        old = self._chat_member(group, user)
        group.users[user.id] = user
        group.members[user.id] = "member"
        new = self._chat_member(group, user)
        extra: dict[str, Any] = {}
        if link is not None:
            extra["invite_link"] = self._public_link(link)
        if via_join_request:
            extra["via_join_request"] = True
        self._membership_changed(group, user, actor, old, new, **extra)
        self._service_message(group, user, new_chat_members=[user.as_dict()])

    @staticmethod
    def _public_link(link: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in link.items() if not k.startswith("_")}

    # ---- internals: updates -----------------------------------------------------------------

    def _enqueue(
        self, bot: FakeBot, kind: str, payload: dict[str, Any], *, queue_id: Any = None
    ) -> _Update | None:
        if not bot._allows(kind):
            return None
        bot._update_seq += 1
        uid = bot._update_seq
        if queue_id is None:
            queue_id = payload.get("chat", {}).get("id", ("u", uid))
        upd = _Update(uid, kind, {"update_id": uid, kind: payload}, queue_id)
        self._push_update(bot, upd)
        return upd

    def _push_update(self, bot: FakeBot, upd: _Update) -> None:
        bot._pending[upd.update_id] = upd
        self.stats.updates_created += 1
        if bot._webhook is not None:
            bot._webhook.push(upd)
        elif bot._poller is not None and not bot._poller.done():
            bot._poller.set_result(None)

    # ---- internals: HTTP --------------------------------------------------------------------

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            if path.startswith("/bot"):
                token, _, method = path[4:].partition("/")
                bot = self._bots_by_token.get(token)
                if bot is None or bot.logged_out:
                    raise ApiError(401, "Unauthorized")
                if not method or "/" in method:
                    raise ApiError(404, "Not Found")
                params = await self._read_params(request)
                result = await self._dispatch(bot, method, params)
                return self._ok_response(result)
            if path.startswith("/file/bot"):
                return self._serve_file(path[9:])
            raise ApiError(404, "Not Found")
        except ApiError as exc:
            return self._error_response(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the double: report it, never crash the server
            self.internal_errors.append(exc)
            return self._error_response(ApiError(500, "Internal Server Error"))

    def _ok_response(self, result: Any) -> web.Response:
        if isinstance(result, _Described):
            body = _dumps({"ok": True, "result": result.value, "description": result.description})
        elif isinstance(result, _RawResult):
            body = b'{"ok":true,"result":' + result.raw + b"}"
        else:
            body = _dumps({"ok": True, "result": result})
        return web.Response(body=body, content_type="application/json")

    def _error_response(self, exc: ApiError) -> web.Response:
        self.stats.errors_returned += 1
        if exc.status == 429:
            self.stats.too_many_requests += 1
        return web.Response(
            status=exc.status, body=_dumps(exc.envelope()), content_type="application/json"
        )

    def _serve_file(self, rest: str) -> web.StreamResponse:
        token, _, file_path = rest.partition("/")
        bot = self._bots_by_token.get(token)
        if bot is None:
            raise ApiError(401, "Unauthorized")
        info = self._files_by_path.get(file_path)
        if info is None or info.get("data") is None:
            raise ApiError(404, "Not Found")
        return web.Response(body=info["data"], content_type="application/octet-stream")

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query) if request.query_string else {}
        if not request.body_exists:
            return params
        ctype = request.content_type
        try:
            if ctype == "application/json":
                raw = await request.read()
                if raw.strip():
                    data = json.loads(raw)
                    if not isinstance(data, dict):
                        raise _bad("JSON object expected as request body")
                    params.update(data)
            elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
                form = await request.post()
                for k, v in form.items():
                    if isinstance(v, web.FileField):
                        params[k] = Upload(v.filename, v.content_type, v.file.read())
                    else:
                        params[k] = v
            else:
                await request.read()
        except ApiError:
            raise
        except (ValueError, UnicodeDecodeError):
            raise _bad("can't parse JSON object") from None
        except web.HTTPException as exc:
            if exc.status == 413:
                raise ApiError(413, "Request Entity Too Large") from None
            raise _bad(f"can't parse request: {exc.reason}") from None
        except aiohttp.ClientPayloadError:
            raise _bad("can't parse request") from None
        for k in [k for k, v in params.items() if v is None]:
            del params[k]
        return params

    async def _dispatch(self, bot: FakeBot, method: str, params: dict[str, Any]) -> Any:
        key = method.lower()
        entry = self._handlers.get(key)
        name = entry[0] if entry else method
        self.stats.calls[name] += 1
        if self.record_calls:
            self._calls.append((name, params, bot.id))
        if entry is None:
            raise ApiError(404, "Not Found")
        injected = self._injected.get(key)
        if injected:
            raise injected.popleft()
        _, handler, is_async = entry
        if is_async:
            return await handler(bot, params)
        return handler(bot, params)

    async def _handle_webhook_reply(self, bot: FakeBot, resp: aiohttp.ClientResponse) -> None:
        """Telegram executes a method returned in the webhook response body (result unseen)."""
        ctype = resp.content_type
        params: dict[str, Any] | None = None
        try:
            if ctype == "application/json":
                raw = await resp.read()
                if raw.strip():
                    data = json.loads(raw)
                    if isinstance(data, dict) and data.get("method"):
                        params = data
            elif ctype == "multipart/form-data":
                params = {}
                reader = aiohttp.MultipartReader.from_response(resp)
                while True:
                    part = await reader.next()
                    if part is None:
                        break
                    if not isinstance(part, aiohttp.BodyPartReader) or not part.name:
                        continue
                    data_bytes = await part.read(decode=False)
                    if part.filename:
                        params[part.name] = Upload(
                            part.filename, part.headers.get("Content-Type"), bytes(data_bytes)
                        )
                    else:
                        params[part.name] = bytes(data_bytes).decode()
            elif ctype == "application/x-www-form-urlencoded":
                params = dict(parse_qsl((await resp.read()).decode()))
            else:
                await resp.read()
        except (ValueError, aiohttp.ClientError):
            return
        if not params or not params.get("method"):
            return
        method = str(params.pop("method"))
        try:
            await self._dispatch(bot, method, params)
        except ApiError:
            pass
        except Exception as exc:
            self.internal_errors.append(exc)

    # ---- internals: chats, access, limits ---------------------------------------------------

    def _resolve_chat(self, p: dict[str, Any], name: str = "chat_id") -> FakeChat:
        v = p.get(name)
        if v is None or v == "":
            raise _bad(f"{name} is empty")
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("@"):
                chat = self._groups_by_username.get(s[1:].lower())
                if chat is None:
                    raise _bad("chat not found")
                return chat
            try:
                cid = int(s)
            except ValueError:
                raise _bad("chat not found") from None
        elif isinstance(v, int) and not isinstance(v, bool):
            cid = v
        else:
            raise _bad("chat not found")
        group = self._groups.get(cid)
        if group is not None:
            return group
        user = self._users.get(cid)
        if user is not None:
            return user.private_chat
        raise _bad("chat not found")

    def _check_access(self, bot: FakeBot, chat: FakeChat, *, sending: bool = True) -> None:
        if chat.type == "private":
            user = chat.user
            assert user is not None
            if user.id == bot.id:
                if sending:
                    raise _forbidden("bot can't send messages to bots")
                return
            if user.is_bot:
                raise _forbidden("bot can't send messages to bots")
            if bot.id in user.blocked_bots:
                raise _forbidden("bot was blocked by the user")
            if bot.id not in user.started_bots and not self._has_join_request(bot, user):
                raise _forbidden("bot can't initiate conversation with a user")
            return
        status = chat.members.get(bot.id)
        if status is None:
            raise _bad("chat not found")
        if status in _ACTIVE_STATUSES:
            return
        kind = "supergroup" if chat.type == "supergroup" else "group"
        if status == "kicked":
            raise _forbidden(f"bot was kicked from the {kind} chat")
        raise _forbidden(f"bot is not a member of the {kind} chat")

    def _has_join_request(self, bot: FakeBot, user: FakeUser) -> bool:
        now = self._clock()
        for group in self._groups.values():
            req = group.join_requests.get(user.id)
            if req is not None and now - req["time"] <= 300 and bot.id in group._bots:
                return True
        return False

    def _flood_check(self, bot: FakeBot, chat: FakeChat) -> None:
        lim = self._limits
        now = self._clock()
        buckets: list[_Bucket] = []
        if lim.global_per_second:
            if bot._global_bucket is None:
                burst = lim.global_burst or math.ceil(lim.global_per_second)
                bot._global_bucket = _Bucket(lim.global_per_second, burst, now)
            buckets.append(bot._global_bucket)
        if chat.type == "private":
            rate, burst = lim.private_per_second, lim.private_burst
        else:
            rate = lim.group_per_minute / 60.0 if lim.group_per_minute else None
            burst = lim.group_burst or math.ceil(lim.group_per_minute or 1)
        if rate:
            key = (bot.id, chat.id)
            bucket = self._chat_buckets.get(key)
            if bucket is None:
                bucket = self._chat_buckets[key] = _Bucket(rate, burst, now)
            buckets.append(bucket)
        wait = 0.0
        for bucket in buckets:
            wait = max(wait, bucket.wait(now))
        if wait > 0:
            retry = max(1, math.ceil(wait - 1e-9))
            raise ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry)
        for bucket in buckets:
            bucket.take()

    # ---- internals: message building --------------------------------------------------------

    def _text_and_entities(
        self, p: dict[str, Any], text_key: str, entities_key: str
    ) -> tuple[str, list[dict[str, Any]]]:
        text = _str(p, text_key) or ""
        entities = _json_param(p, entities_key, "can't parse entities JSON object")
        if entities is not None:
            if not isinstance(entities, list) or not all(
                isinstance(e, dict)
                and isinstance(e.get("type"), str)
                and isinstance(e.get("offset"), int)
                and isinstance(e.get("length"), int)
                for e in entities
            ):
                raise _bad("can't parse entities JSON object")
        return format_text(text, _str(p, "parse_mode"), entities)

    def _reply_markup(self, p: dict[str, Any]) -> dict[str, Any] | None:
        markup = _json_param(p, "reply_markup", "can't parse reply keyboard markup JSON object")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("object expected as reply markup")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise _bad(
                    'can\'t parse inline keyboard markup: Field "inline_keyboard" of the '
                    "InlineKeyboardMarkup should be an Array of Arrays"
                )
            norm_rows = []
            for row in rows:
                norm_row = []
                for btn in row:
                    if not isinstance(btn, dict):
                        raise _bad("can't parse inline keyboard button: Object expected")
                    if "text" not in btn:
                        raise _bad("can't parse inline keyboard button: Can't find field \"text\"")
                    if not isinstance(btn["text"], str):
                        raise _bad(
                            'can\'t parse inline keyboard button: Field "text" must be of type '
                            "String"
                        )
                    actions = [
                        a for a in _BUTTON_ACTIONS if btn.get(a) is not None and btn.get(a) != ""
                    ]
                    if not actions:
                        raise _bad(
                            "can't parse inline keyboard button: Text buttons are unallowed in "
                            "the inline keyboard"
                        )
                    if len(actions) > 1:
                        raise _bad("BUTTON_DATA_INVALID")
                    if "callback_data" in actions:
                        data = btn["callback_data"]
                        if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                            raise _bad("BUTTON_DATA_INVALID")
                    if "url" in actions:
                        url = btn["url"]
                        if not isinstance(url, str) or not re.match(
                            r"^(https?|tg)://\S+$", url, re.IGNORECASE
                        ):
                            raise _bad("BUTTON_URL_INVALID")
                    norm_row.append({k: v for k, v in btn.items() if k in _BUTTON_KEYS})
                norm_rows.append(norm_row)
            return {"inline_keyboard": norm_rows}
        if "keyboard" in markup:
            if not isinstance(markup["keyboard"], list):
                raise _bad(
                    'can\'t parse keyboard markup: Field "keyboard" of the ReplyKeyboardMarkup '
                    "should be an Array of Arrays"
                )
            return None
        if "remove_keyboard" in markup or "force_reply" in markup:
            return None
        raise _bad("can't parse reply keyboard markup JSON object")

    def _reply_to(
        self, bot: FakeBot, chat: FakeChat, p: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        rp = _json_param(p, "reply_parameters", "can't parse reply parameters JSON object")
        if rp is None:
            mid = _int(p, "reply_to_message_id")
            if not mid:
                return None
            rp = {
                "message_id": mid,
                "allow_sending_without_reply": _bool(p, "allow_sending_without_reply"),
            }
        if not isinstance(rp, dict):
            raise _bad("can't parse reply parameters JSON object")
        mid = _int(rp, "message_id")
        if not mid:
            raise _bad("message to be replied not found")
        target_chat = chat
        if _present(rp, "chat_id"):
            target_chat = self._resolve_chat(rp, "chat_id")
        key = self._chat_key_for(bot, target_chat)
        replied = self._messages.get(key, {}).get(mid)
        if replied is None:
            if _bool(rp, "allow_sending_without_reply"):
                return None
            raise _bad("message to be replied not found")
        if target_chat is chat:
            return "reply_to_message", self._reply_snapshot(replied)
        origin = {"type": "user", "sender_user": replied["from"], "date": replied["date"]}
        return "external_reply", {
            "origin": origin,
            "chat": target_chat.as_dict(),
            "message_id": mid,
        }

    def _record_sent(self, msg: dict[str, Any]) -> None:
        self._sent.append(msg)
        chat_id = msg["chat"]["id"]
        self._sent_by_chat[chat_id].append(msg)
        self.stats.messages_sent += 1
        bot_id = msg["from"]["id"]
        counts = self._sent_counts
        counts[(None, None)] += 1
        counts[(chat_id, None)] += 1
        counts[(None, bot_id)] += 1
        counts[(chat_id, bot_id)] += 1
        if self._sent_waiters:
            for count, w_chat, w_bot, fut in self._sent_waiters:
                if not fut.done() and counts[(w_chat, w_bot)] >= count:
                    fut.set_result(None)

    def _new_bot_message(
        self, bot: FakeBot, chat: FakeChat, content: dict[str, Any], p: dict[str, Any]
    ) -> dict[str, Any]:
        """Validation of reply/markup is done by the caller; this stores and records."""
        key = self._chat_key_for(bot, chat)
        msg: dict[str, Any] = {
            "message_id": self._next_message_id(key),
            "from": bot.as_dict(),
            "chat": chat.as_dict(),
            "date": _now_ts(),
        }
        msg.update(content)
        self._messages[key][msg["message_id"]] = msg
        self._record_sent(msg)
        return msg

    # ---- internals: forum topics ------------------------------------------------------------

    def _topic_service_message(
        self, chat: FakeChat, actor: FakeUser, thread_id: int | None, **content: Any
    ) -> dict[str, Any]:
        """A service message in a topic (created/closed/reopened), seen by the other bots."""
        key = ("g", chat.id)
        msg: dict[str, Any] = {
            "message_id": self._next_message_id(key),
            "from": actor.as_dict(),
            "chat": chat.as_dict(),
            "date": _now_ts(),
        }
        msg["message_thread_id"] = msg["message_id"] if thread_id is None else thread_id
        msg["is_topic_message"] = True
        msg.update(content)
        if thread_id is not None and thread_id in chat.topics:
            msg["reply_to_message"] = self._reply_snapshot(chat.topics[thread_id]["root"])
        self._messages[key][msg["message_id"]] = msg
        for b in self._bots_in(chat):
            if b.id != actor.id:  # Telegram does not send a bot its own actions
                self._enqueue(b, "message", msg, queue_id=chat.id)
        return msg

    def _new_topic(
        self,
        chat: FakeChat,
        creator: FakeUser,
        name: str,
        icon_color: int,
        icon_custom_emoji_id: str | None,
    ) -> dict[str, Any]:
        created: dict[str, Any] = {"name": name, "icon_color": icon_color}
        if icon_custom_emoji_id:
            created["icon_custom_emoji_id"] = icon_custom_emoji_id
        root = self._topic_service_message(chat, creator, None, forum_topic_created=created)
        thread_id = root["message_id"]
        chat.topics[thread_id] = {
            "name": name,
            "icon_color": icon_color,
            "closed": False,
            "creator": creator.id,
            "root": root,
        }
        return {"message_thread_id": thread_id, **created}

    def _send_thread(self, chat: FakeChat, p: dict[str, Any]) -> dict[str, Any] | None:
        """The topic a send goes to (``message_thread_id``); None for General or non-forums."""
        if not chat.is_forum or not _present(p, "message_thread_id"):
            return None
        thread_id = _int(p, "message_thread_id")
        topic = chat.topics.get(thread_id or 0)
        if topic is None:
            raise _bad("message thread not found")
        if topic["closed"]:
            raise _bad("TOPIC_CLOSED")
        return topic

    @staticmethod
    def _in_topic(content: dict[str, Any], topic: dict[str, Any] | None) -> dict[str, Any]:
        if topic is None:
            return content
        root = topic["root"]
        placed: dict[str, Any] = {
            "message_thread_id": root["message_id"],
            "is_topic_message": True,
        }
        placed.update(content)
        placed.setdefault("reply_to_message", BotAPIDouble._reply_snapshot(root))
        return placed

    def _forum_topic(self, bot: FakeBot, p: dict[str, Any]) -> tuple[FakeChat, dict[str, Any]]:
        """Chat and topic for closeForumTopic/reopenForumTopic, with Telegram's checks."""
        chat = self._resolve_chat(p)
        if chat.type != "private":
            self._check_access(bot, chat, sending=False)
        if not chat.is_forum:
            raise _bad("the chat is not a forum")
        thread_id = _int(p, "message_thread_id")
        topic = chat.topics.get(thread_id or 0)
        if topic is None:
            raise _bad("TOPIC_ID_INVALID")
        if topic["creator"] != bot.id and not chat.can_manage_topics(bot):
            raise _bad("not enough rights to manage forum topics")
        return chat, topic

    def _new_file(self, data: bytes | None, *, kind: str = "photos", ext: str = "jpg") -> dict:
        n = next(self._file_seq)
        file_id = f"AgACAgIAAxkBAAI{n:08d}{secrets.token_hex(8)}"
        info = {
            "file_id": file_id,
            "file_unique_id": f"AQAD{n:08d}",
            "file_size": len(data) if data is not None else 51_234,
            "file_path": f"{kind}/file_{n}.{ext}",
            "data": data,
        }
        self._files[file_id] = info
        self._files_by_path[info["file_path"]] = info
        return info

    def _photo_sizes(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        v = p.get("photo")
        if v is None or v == "":
            raise _bad("there is no photo in the request")
        upload: Upload | None = None
        if isinstance(v, Upload):
            upload = v
        elif isinstance(v, str):
            if v.startswith("attach://"):
                att = p.get(v[9:])
                if not isinstance(att, Upload):
                    raise _bad("wrong HTTP URL specified")
                upload = att
            elif v in self._files:
                info = self._files[v]
                return info.setdefault("_photo_sizes", self._make_sizes(info))
            elif re.match(r"^https?://\S+$", v):
                info = self._new_file(None)
                return info.setdefault("_photo_sizes", self._make_sizes(info))
            else:
                raise _bad("wrong file identifier/HTTP URL specified")
        else:
            raise _bad("wrong file identifier/HTTP URL specified")
        if not upload.data:
            raise _bad("file must be non-empty")
        info = self._new_file(upload.data)
        return info.setdefault("_photo_sizes", self._make_sizes(info))

    def _make_sizes(self, big: dict[str, Any]) -> list[dict[str, Any]]:
        thumb = self._new_file(None)
        thumb["file_size"] = 1_234
        sizes = [
            {
                "file_id": thumb["file_id"],
                "file_unique_id": thumb["file_unique_id"],
                "file_size": thumb["file_size"],
                "width": 90,
                "height": 68,
            },
            {
                "file_id": big["file_id"],
                "file_unique_id": big["file_unique_id"],
                "file_size": big["file_size"],
                "width": 800,
                "height": 600,
            },
        ]
        thumb["_photo_sizes"] = sizes
        return sizes

    # ---- method handlers --------------------------------------------------------------------

    def _register_handlers(self) -> None:
        for attr in dir(self):
            if not attr.startswith("_m_"):
                continue
            name = attr[3:]
            handler = getattr(self, attr)
            self._handlers[name.lower()] = (name, handler, asyncio.iscoroutinefunction(handler))

    def _m_getMe(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        return bot.me()

    def _m_logOut(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        bot.logged_out = True
        return True

    def _m_close(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        return True

    async def _m_getUpdates(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        conflict = ApiError(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
            "delete the webhook first",
        )
        if bot._webhook is not None:
            raise conflict
        offset = _int(p, "offset", 0) or 0
        limit = min(max(_int(p, "limit", 100) or 100, 1), 100)
        timeout = max(_int(p, "timeout", 0) or 0, 0)
        if "allowed_updates" in p:
            bot._set_allowed(p["allowed_updates"])
        old = bot._poller
        if old is not None and not old.done():
            old.set_exception(
                ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
            )
        bot._poller = None
        pending = bot._pending
        if offset > 0:
            while pending:
                first = next(iter(pending))
                if first >= offset:
                    break
                pending.popitem(last=False)
        elif offset < 0:
            while len(pending) > -offset:
                pending.popitem(last=False)
        if not pending and timeout > 0:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            bot._poller = fut
            try:
                await asyncio.wait((fut,), timeout=timeout)
            finally:
                if bot._poller is fut:
                    bot._poller = None
            if fut.done() and not fut.cancelled() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
            if bot._webhook is not None:
                raise conflict
        if not pending:
            return []
        chunk = [u.json_bytes() for u in itertools.islice(pending.values(), limit)]
        return _RawResult(b"[" + b",".join(chunk) + b"]")

    async def _m_setWebhook(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        url = (_str(p, "url") or "").strip()
        if not url:
            return await self._m_deleteWebhook(bot, p)
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if not parts.hostname:
            raise _bad("bad webhook: Failed to resolve host: Name or service not known")
        secret = _str(p, "secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad("secret token contains unallowed characters")
        max_conn = min(max(_int(p, "max_connections", 40) or 40, 1), 100)
        if "allowed_updates" in p:
            bot._set_allowed(p["allowed_updates"])
        if _bool(p, "drop_pending_updates"):
            bot._pending.clear()
        new = _Webhook(
            double=self,
            bot=bot,
            url=url,
            secret_token=secret or None,
            max_connections=max_conn,
            ip_address=_str(p, "ip_address"),
            allowed_updates=bot._allowed_list,
            has_custom_certificate=isinstance(p.get("certificate"), Upload),
        )
        old = bot._webhook
        if old is not None and old.same_config(new) and not _bool(p, "drop_pending_updates"):
            return _Described(True, "Webhook is already set")
        if old is not None:
            bot._webhook = None
            await old.stop()
        if bot._poller is not None and not bot._poller.done():
            bot._poller.set_result(None)
        bot._webhook = new
        new.start()
        return _Described(True, "Webhook was set")

    async def _m_deleteWebhook(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        if _bool(p, "drop_pending_updates"):
            bot._pending.clear()
        wh = bot._webhook
        if wh is None:
            return _Described(True, "Webhook is already deleted")
        bot._webhook = None
        await wh.stop()
        return _Described(True, "Webhook was deleted")

    def _m_getWebhookInfo(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        wh = bot._webhook
        info: dict[str, Any] = {
            "url": wh.url if wh else "",
            "has_custom_certificate": bool(wh and wh.has_custom_certificate),
            "pending_update_count": len(bot._pending),
        }
        if wh is not None:
            info["max_connections"] = wh.max_connections
            if wh.ip_address:
                info["ip_address"] = wh.ip_address
            if wh.last_error_date is not None:
                info["last_error_date"] = wh.last_error_date
                info["last_error_message"] = wh.last_error_message
            if wh.allowed_updates:
                info["allowed_updates"] = list(wh.allowed_updates)
        return info

    def _m_sendMessage(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        if not _present(p, "text"):
            raise _bad("message text is empty")
        text, entities = self._text_and_entities(p, "text", "entities")
        if not text:
            raise _bad("message text is empty")
        if _u16len(text) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        markup = self._reply_markup(p)
        reply = self._reply_to(bot, chat, p)
        topic = self._send_thread(chat, p)
        self._flood_check(bot, chat)
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        if reply is not None:
            content[reply[0]] = reply[1]
        if markup is not None:
            content["reply_markup"] = markup
        lpo = _json_param(p, "link_preview_options", "can't parse link preview options")
        if isinstance(lpo, dict) and lpo:
            content["link_preview_options"] = lpo
        return self._new_bot_message(bot, chat, self._in_topic(content, topic), p)

    def _m_sendPhoto(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        caption, cap_entities = self._text_and_entities(p, "caption", "caption_entities")
        if _u16len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        markup = self._reply_markup(p)
        reply = self._reply_to(bot, chat, p)
        topic = self._send_thread(chat, p)
        sizes = self._photo_sizes(p)
        self._flood_check(bot, chat)
        content: dict[str, Any] = {"photo": [dict(s) for s in sizes]}
        if caption:
            content["caption"] = caption
            if cap_entities:
                content["caption_entities"] = cap_entities
        if reply is not None:
            content[reply[0]] = reply[1]
        if markup is not None:
            content["reply_markup"] = markup
        return self._new_bot_message(bot, chat, self._in_topic(content, topic), p)

    def _editable(self, bot: FakeBot, p: dict[str, Any], *, what: str = "edit") -> dict:
        if _present(p, "inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        mid = _int(p, "message_id")
        if not mid:
            raise _bad("message identifier is not specified")
        msg = self._messages.get(self._chat_key_for(bot, chat), {}).get(mid)
        if msg is None:
            raise _bad(f"message to {what} not found")
        if msg.get("from", {}).get("id") != bot.id:
            raise _bad("message can't be edited")
        return msg

    def _apply_edit(self, msg: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        unchanged = all(msg.get(k) == v for k, v in changes.items() if v is not None) and all(
            k not in msg for k, v in changes.items() if v is None
        )
        if unchanged:
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        for k, v in changes.items():
            if v is None:
                msg.pop(k, None)
            else:
                msg[k] = v
        msg["edit_date"] = _now_ts()
        self._edits.append(dict(msg))
        return msg

    def _m_editMessageText(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        msg = self._editable(bot, p)
        if "text" not in msg:
            raise _bad("there is no text in the message to edit")
        if not _present(p, "text"):
            raise _bad("message text is empty")
        text, entities = self._text_and_entities(p, "text", "entities")
        if not text:
            raise _bad("message text is empty")
        if _u16len(text) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        markup = self._reply_markup(p)
        return self._apply_edit(
            msg, {"text": text, "entities": entities or None, "reply_markup": markup}
        )

    def _m_editMessageCaption(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        msg = self._editable(bot, p)
        if "text" in msg:
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._text_and_entities(p, "caption", "caption_entities")
        if _u16len(caption) > MAX_CAPTION_LENGTH:
            raise _bad("message caption is too long")
        markup = self._reply_markup(p)
        return self._apply_edit(
            msg,
            {
                "caption": caption or None,
                "caption_entities": entities or None,
                "reply_markup": markup,
            },
        )

    def _m_editMessageReplyMarkup(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        msg = self._editable(bot, p)
        return self._apply_edit(msg, {"reply_markup": self._reply_markup(p)})

    def _m_deleteMessage(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        mid = _int(p, "message_id")
        if not mid:
            raise _bad("message identifier is not specified")
        store = self._messages.get(self._chat_key_for(bot, chat), {})
        msg = store.get(mid)
        if msg is None:
            raise _bad("message to delete not found")
        if (
            chat.type != "private"
            and msg.get("from", {}).get("id") != bot.id
            and not (
                chat.members.get(bot.id) == "creator"
                or chat.admin_rights.get(bot.id, {}).get("can_delete_messages")
            )
        ):
            raise _bad("message can't be deleted")
        del store[mid]
        self._deleted.append((chat.id, mid))
        return True

    def _m_answerCallbackQuery(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        qid = _str(p, "callback_query_id") or ""
        info = self._callbacks.get(qid)
        if info is None or info["answered"] or info["bot_id"] != bot.id:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        text = _str(p, "text")
        if text is not None and _u16len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise _bad("MESSAGE_TOO_LONG")
        info["answered"] = True
        self._answered.append(
            {
                "callback_query_id": qid,
                "user_id": info["user_id"],
                "text": text,
                "show_alert": _bool(p, "show_alert"),
                "url": _str(p, "url"),
                "cache_time": _int(p, "cache_time", 0),
            }
        )
        return True

    def _scope_key(self, scope: dict[str, Any]) -> tuple[Any, ...]:
        stype = scope.get("type") or "default"
        if stype not in COMMAND_SCOPES:
            raise _bad("unsupported bot command scope type")
        if stype in ("chat", "chat_administrators", "chat_member"):
            chat_id = scope.get("chat_id")
            if chat_id is None or chat_id == "":
                raise _bad("chat_id is empty")
            if isinstance(chat_id, str) and chat_id.startswith("@"):
                chat_id = self._resolve_chat(scope).id
            cid = _int(scope, "chat_id")
            if stype == "chat_member":
                uid = _int(scope, "user_id")
                if not uid:
                    raise _bad("invalid user_id specified")
                return (stype, cid, uid)
            return (stype, cid)
        return (stype,)

    def _command_target(self, p: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
        scope = _json_param(p, "scope", "can't parse BotCommandScope JSON object")
        if scope is None:
            scope = {"type": "default"}
        if not isinstance(scope, dict):
            raise _bad("can't parse BotCommandScope JSON object")
        lang = _str(p, "language_code") or ""
        if lang and not re.fullmatch(r"[a-z]{2}", lang):
            raise _bad("invalid language code specified")
        return self._scope_key(scope), lang

    def _m_setMyCommands(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        commands = _json_param(p, "commands", "can't parse commands JSON object")
        if commands is None:
            raise _bad('parameter "commands" is required')
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        norm = []
        for c in commands:
            if not isinstance(c, dict):
                raise _bad("can't parse BotCommand JSON object")
            cmd, desc = c.get("command"), c.get("description")
            if not isinstance(cmd, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", cmd):
                raise _bad("BOT_COMMAND_INVALID")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            norm.append({"command": cmd, "description": desc})
        key = self._command_target(p)
        if norm:
            bot._commands[key] = norm
        else:
            bot._commands.pop(key, None)
        return True

    def _m_getMyCommands(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        return [dict(c) for c in bot._commands.get(self._command_target(p), [])]

    def _m_deleteMyCommands(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        bot._commands.pop(self._command_target(p), None)
        return True

    def _m_getChat(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        if chat.type != "private":
            self._check_access(bot, chat, sending=False)
        info = chat.as_dict()
        info.update(
            accent_color_id=0,
            max_reaction_count=11,
            accepted_gift_types={
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        )
        return info

    def _m_getChatMember(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        if chat.type != "private":
            self._check_access(bot, chat, sending=False)
        uid = _int(p, "user_id")
        if not uid:
            raise _bad("invalid user_id specified")
        user = self._users.get(uid)
        if user is None:
            raise _bad("user not found")
        if chat.type == "private":
            if uid not in (chat.id, bot.id):
                raise _bad("user not found")
            return {"status": "member", "user": user.as_dict()}
        return self._chat_member(chat, user)

    def _m_getChatMemberCount(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        if chat.type != "private":
            self._check_access(bot, chat, sending=False)
        return chat.member_count()

    def _m_sendChatAction(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        if (_str(p, "action") or "") not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    def _admin_group(self, bot: FakeBot, p: dict[str, Any], right: str) -> FakeChat:
        chat = self._resolve_chat(p)
        if chat.type == "private":
            raise _bad("method is available only for supergroups and groups")
        self._check_access(bot, chat, sending=False)
        status = chat.members.get(bot.id)
        if status != "creator" and not chat.admin_rights.get(bot.id, {}).get(right):
            raise _bad("not enough rights to manage chat invite link")
        return chat

    def _m_createChatInviteLink(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._admin_group(bot, p, "can_invite_users")
        name = _str(p, "name")
        if name is not None and len(name) > 32:
            raise _bad("invite link name is too long")
        expire = _int(p, "expire_date")
        if expire and expire <= _now_ts():
            raise _bad("EXPIRE_DATE_INVALID")
        limit = _int(p, "member_limit")
        if limit is not None and not 1 <= limit <= 99_999:
            raise _bad("USAGE_LIMIT_INVALID")
        join_req = _bool(p, "creates_join_request")
        if join_req and limit:
            raise _bad(
                "member limit can't be specified for links requiring administrator approval"
            )
        link: dict[str, Any] = {
            "invite_link": f"https://t.me/+{secrets.token_urlsafe(12)[:16]}",
            "creator": bot.as_dict(),
            "creates_join_request": join_req,
            "is_primary": False,
            "is_revoked": False,
            "_uses": 0,
        }
        if name:
            link["name"] = name
        if expire:
            link["expire_date"] = expire
        if limit:
            link["member_limit"] = limit
        if join_req:
            link["pending_join_request_count"] = 0
        chat.invite_links[link["invite_link"]] = link
        return self._public_link(link)

    def _m_revokeChatInviteLink(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._admin_group(bot, p, "can_invite_users")
        link = chat.invite_links.get(_str(p, "invite_link") or "")
        if link is None:
            raise _bad("INVITE_HASH_EXPIRED")
        link["is_revoked"] = True
        return self._public_link(link)

    def _join_request(self, bot: FakeBot, p: dict[str, Any]) -> tuple[FakeChat, FakeUser]:
        chat = self._admin_group(bot, p, "can_invite_users")
        uid = _int(p, "user_id")
        if not uid:
            raise _bad("invalid user_id specified")
        user = self._users.get(uid)
        if user is None:
            raise _bad("user not found")
        if chat.members.get(uid) in _ACTIVE_STATUSES:
            raise _bad("USER_ALREADY_PARTICIPANT")
        if uid not in chat.join_requests:
            raise _bad("HIDE_REQUESTER_MISSING")
        req = chat.join_requests.pop(uid)
        if req["link"] is not None:
            req["link"]["pending_join_request_count"] -= 1
        return chat, user

    def _m_approveChatJoinRequest(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat, user = self._join_request(bot, p)
        self._join(chat, user, bot, via_join_request=True)
        return True

    def _m_declineChatJoinRequest(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        self._join_request(bot, p)
        return True

    def _m_leaveChat(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        if chat.type == "private":
            raise _bad("chat member status can't be changed in private chats")
        self._check_access(bot, chat, sending=False)
        old = self._chat_member(chat, bot)
        chat.members[bot.id] = "left"
        chat.admin_rights.pop(bot.id, None)
        self._membership_changed(chat, bot, bot, old, self._chat_member(chat, bot))
        return True

    def _source_message(self, bot: FakeBot, p: dict[str, Any], what: str) -> dict[str, Any]:
        src_chat = self._resolve_chat(p, "from_chat_id")
        self._check_access(bot, src_chat, sending=False)
        mid = _int(p, "message_id")
        msg = self._messages.get(self._chat_key_for(bot, src_chat), {}).get(mid or 0)
        if msg is None:
            raise _bad(f"message to {what} not found")
        return msg

    def _m_copyMessage(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        src = self._source_message(bot, p, "copy")
        if "text" not in src and "photo" not in src:
            raise _bad("message can't be copied")
        markup = self._reply_markup(p)
        reply = self._reply_to(bot, chat, p)
        content: dict[str, Any] = {}
        if "text" in src:
            content["text"] = src["text"]
            if src.get("entities"):
                content["entities"] = src["entities"]
        else:
            content["photo"] = src["photo"]
            if "caption" in p:
                caption, ents = self._text_and_entities(p, "caption", "caption_entities")
                if _u16len(caption) > MAX_CAPTION_LENGTH:
                    raise _bad("message caption is too long")
            else:
                caption, ents = src.get("caption", ""), src.get("caption_entities") or []
            if caption:
                content["caption"] = caption
                if ents:
                    content["caption_entities"] = ents
        if reply is not None:
            content[reply[0]] = reply[1]
        if markup is not None:
            content["reply_markup"] = markup
        self._flood_check(bot, chat)
        msg = self._new_bot_message(bot, chat, content, p)
        return {"message_id": msg["message_id"]}

    def _m_forwardMessage(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        self._check_access(bot, chat)
        src = self._source_message(bot, p, "forward")
        if "text" not in src and "photo" not in src:
            raise _bad("message can't be forwarded")
        self._flood_check(bot, chat)
        content = {
            k: src[k]
            for k in ("text", "entities", "photo", "caption", "caption_entities")
            if k in src
        }
        content["forward_origin"] = src.get("forward_origin") or {
            "type": "user",
            "sender_user": src["from"],
            "date": src["date"],
        }
        return self._new_bot_message(bot, chat, content, p)

    def _m_getFile(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        info = self._files.get(_str(p, "file_id") or "")
        if info is None:
            raise _bad("invalid file_id")
        return {k: info[k] for k in ("file_id", "file_unique_id", "file_size", "file_path")}

    def _m_createForumTopic(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat = self._resolve_chat(p)
        if chat.type != "private":
            self._check_access(bot, chat, sending=False)
        if not chat.is_forum:
            raise _bad("the chat is not a forum")
        if not chat.can_manage_topics(bot):
            raise _bad("not enough rights to create a topic")
        name = " ".join((_str(p, "name") or "").split())
        if not name:
            raise _bad("title must be non-empty")
        color = _int(p, "icon_color") or 7322096
        # Telegram cuts a longer name to 128 characters rather than refusing it.
        return self._new_topic(chat, bot, name[:128], color, _str(p, "icon_custom_emoji_id"))

    def _m_closeForumTopic(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat, topic = self._forum_topic(bot, p)
        if topic["closed"]:
            raise _bad("TOPIC_NOT_MODIFIED")
        topic["closed"] = True
        self._topic_service_message(chat, bot, topic["root"]["message_id"],
                                    forum_topic_closed={})
        return True

    def _m_reopenForumTopic(self, bot: FakeBot, p: dict[str, Any]) -> Any:
        chat, topic = self._forum_topic(bot, p)
        if not topic["closed"]:
            raise _bad("TOPIC_NOT_MODIFIED")
        topic["closed"] = False
        self._topic_service_message(chat, bot, topic["root"]["message_id"],
                                    forum_topic_reopened={})
        return True


class _Described:
    """A successful result that carries Telegram's ``description`` (setWebhook & co.)."""

    __slots__ = ("value", "description")

    def __init__(self, value: Any, description: str) -> None:
        self.value = value
        self.description = description


class _RawResult:
    """A result already serialized to JSON bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
