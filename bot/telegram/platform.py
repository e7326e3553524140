"""Telegram as a :class:`bot.core.ports.ChatPlatform`: long polling or webhook, on aiogram 3.

The adapter *holds* an aiogram ``Bot`` and ``Dispatcher``; it translates updates into neutral
events and neutral sends into Bot API calls, and maps aiogram errors to neutral send errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeDefault,
    BufferedInputFile,
    CallbackQuery,
    ChatJoinRequest,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from pydantic import ValidationError

from bot.core.i18n import LANGUAGES, Translator
from bot.core.metrics import Metrics
from bot.core.ports import EventHandler
from bot.core.textsplit import utf16_len
from bot.core.types import (
    Callback,
    ChatRef,
    InviteLink,
    MarkupError,
    OutgoingMessage,
    PermanentSendError,
    PlatformCapabilities,
    RetryAfter,
    SentPart,
    TransientSendError,
)
from bot.telegram import mapping
from config.settings import TelegramSettings

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member", "chat_member",
                   "chat_join_request"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
COMMANDS = ("start", "help", "language")


class TelegramStartError(RuntimeError):
    """Telegram could not be reached or refused the token at start-up."""


class TelegramPlatform:
    """Also a :class:`bot.core.ports.GroupAdmin` and a :class:`bot.core.ports.ForumAdmin`."""

    name = mapping.PLATFORM
    capabilities = PlatformCapabilities(
        buttons=True, images=True, max_text_length=4096, max_caption_length=1024
    )

    def __init__(
        self,
        *,
        settings: TelegramSettings,
        translate: Translator,
        metrics: Metrics,
        max_concurrent_updates: int = 256,
        fast_text: bool = True,
    ) -> None:
        if settings.token is None:
            raise ValueError("telegram.token is not set")
        self.settings = settings
        self.translate = translate
        self.metrics = metrics
        session_kwargs: dict[str, Any] = {"timeout": settings.request_timeout}
        if settings.api_base_url:
            session_kwargs["api"] = TelegramAPIServer.from_base(settings.api_base_url)
        self.bot = Bot(settings.token.get_secret_value(), session=AiohttpSession(**session_kwargs))
        self.dispatcher = Dispatcher()
        self.dispatcher.include_router(self._router())
        self._handler: EventHandler | None = None
        self._polling: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(max_concurrent_updates)
        self.bot_id = 0
        self.username = ""
        self.fast_text = fast_text
        self._http: ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle
    def set_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        try:
            me = await self.bot.get_me()
        except TelegramUnauthorizedError as exc:
            raise TelegramStartError("Telegram refused telegram.token (Unauthorized)") from exc
        except (TelegramNetworkError, ClientError, OSError) as exc:
            raise TelegramStartError(f"cannot reach the Telegram Bot API: {exc}") from exc
        self.bot_id = me.id
        self.username = me.username or ""
        await self._set_commands()
        if self.settings.mode == "webhook":
            assert self.settings.webhook_url and self.settings.webhook_secret
            await self.bot.set_webhook(
                url=self.settings.webhook_url,
                secret_token=self.settings.webhook_secret.get_secret_value(),
                allowed_updates=ALLOWED_UPDATES,
            )
            log.info("telegram webhook set", extra={"bot": self.username})
        else:
            await self.bot.delete_webhook(drop_pending_updates=False)
            self._polling = asyncio.create_task(self._poll(), name="telegram-polling")
            log.info("telegram polling started", extra={"bot": self.username})

    async def _poll(self) -> None:
        """Long polling that validates each update on its own.

        aiogram's built-in polling parses a whole batch at once, so one malformed update would
        stall it forever; here a bad update is skipped and the offset moves on.
        """
        api = self.bot.session.api
        url = api.api_url(self.bot.token, "getUpdates")
        offset: int | None = None
        backoff = 1.0
        timeout = self.settings.polling_timeout
        async with ClientSession() as http:
            while not self._stopping.is_set():
                params: dict[str, Any] = {"timeout": timeout,
                                          "allowed_updates": json.dumps(ALLOWED_UPDATES)}
                if offset is not None:
                    params["offset"] = offset
                try:
                    async with http.post(url, data=params,
                                         timeout=ClientTimeout(total=timeout + 15)) as resp:
                        body = await resp.json(content_type=None)
                except (ClientError, TimeoutError, ValueError) as exc:
                    log.warning("getUpdates failed", extra={"error": repr(exc)[:200]})
                    await self._pause(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not isinstance(body, dict) or not body.get("ok"):
                    description = body.get("description") if isinstance(body, dict) else body
                    log.warning("getUpdates refused", extra={"error": str(description)[:200]})
                    if isinstance(body, dict) and body.get("error_code") == 401:
                        log.error("telegram token refused; polling stopped")
                        return
                    retry = (body.get("parameters") or {}).get("retry_after") \
                        if isinstance(body, dict) else None
                    await self._pause(float(retry) if retry else backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 1.0
                updates = body.get("result") or []
                if not isinstance(updates, list):
                    continue
                ids = [u["update_id"] for u in updates
                       if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
                await self._process_batch(updates)
                if ids:
                    offset = max(ids) + 1

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _process_batch(self, updates: list[Any]) -> None:
        """Updates of one chat in order; different chats concurrently."""
        by_chat: dict[Any, list[Any]] = {}
        for update in updates:
            by_chat.setdefault(_chat_key(update), []).append(update)

        async def run(chain: list[Any]) -> None:
            for update in chain:
                await self.feed_raw_update(update)

        await asyncio.gather(*(run(chain) for chain in by_chat.values()))

    async def stop(self) -> None:
        self._stopping.set()
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._polling
            self._polling = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        await self.bot.session.close()

    async def _set_commands(self) -> None:
        t = self.translate
        for lang in (None, *LANGUAGES):
            commands = [BotCommand(command=c, description=t(f"cmd_{c}", lang)) for c in COMMANDS]
            await self.bot.set_my_commands(
                commands, scope=BotCommandScopeDefault(), language_code=lang
            )

    # ------------------------------------------------------------------ inbound
    def _router(self) -> Router:
        router = Router(name="kizuna")

        @router.message()
        async def on_message(message: Message) -> None:
            if message.from_user is not None and message.from_user.id == self.bot_id:
                return
            event = mapping.incoming_message(
                message, bot_id=self.bot_id, bot_username=self.username
            )
            await self._emit(event)

        @router.callback_query()
        async def on_callback(query: CallbackQuery) -> None:
            event = mapping.callback(query)
            if event is None:
                with contextlib.suppress(TelegramAPIError):
                    await query.answer()
                return
            await self._emit(event)

        @router.my_chat_member()
        async def on_my_chat_member(update: ChatMemberUpdated) -> None:
            await self._emit(mapping.membership(update))

        @router.chat_member()
        async def on_chat_member(update: ChatMemberUpdated) -> None:
            await self._emit(mapping.member_changed(update))

        @router.chat_join_request()
        async def on_join_request(request: ChatJoinRequest) -> None:
            await self._emit(mapping.join_request(request))

        return router

    async def _emit(self, event: Any) -> None:
        if self._handler is None:
            log.warning("telegram event dropped: no handler set")
            return
        await self._handler(event)

    async def feed_raw_update(self, data: Any) -> bool:
        """Validate and process one update; malformed or unknown updates are skipped."""
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            self.metrics.updates_skipped.labels(self.name, "malformed").inc()
            log.warning("skipped malformed telegram update")
            return False
        try:
            update = Update.model_validate(data, context={"bot": self.bot})
        except ValidationError as exc:
            self.metrics.updates_skipped.labels(self.name, "invalid").inc()
            log.warning("skipped invalid telegram update",
                        extra={"update_id": data.get("update_id"), "error": str(exc)[:300]})
            return False
        try:
            await self.dispatcher.feed_update(self.bot, update)
        except Exception:
            self.metrics.updates_skipped.labels(self.name, "error").inc()
            log.exception("telegram update failed", extra={"update_id": update.update_id})
            return False
        return True

    def register_routes(self, app: web.Application) -> None:
        if self.settings.mode == "webhook":
            app.router.add_post(self.settings.webhook_path, self._webhook)

    async def _webhook(self, request: web.Request) -> web.Response:
        assert self.settings.webhook_secret is not None
        expected = self.settings.webhook_secret.get_secret_value()
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("telegram webhook call with a wrong secret refused",
                        extra={"remote": request.remote})
            return web.json_response({"ok": False, "error": "unauthorized"}, status=401)
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            self.metrics.updates_skipped.labels(self.name, "malformed").inc()
            return web.json_response({"ok": False, "error": "invalid JSON"}, status=400)
        await self._slots.acquire()  # back-pressure: Telegram waits, memory stays bounded
        task = asyncio.create_task(self._feed_and_release(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"ok": True})

    async def _feed_and_release(self, data: Any) -> None:
        try:
            await self.feed_raw_update(data)
        finally:
            self._slots.release()

    # ------------------------------------------------------------------ outbound
    async def send_part(
        self, chat: ChatRef, text: str, message: OutgoingMessage, *, with_extras: bool
    ) -> SentPart:
        chat_id = _chat_id(chat)
        common: dict[str, Any] = {}
        if message.reply_to and message.reply_to.isdigit():
            common["reply_parameters"] = ReplyParameters(
                message_id=int(message.reply_to), allow_sending_without_reply=True
            )
        if message.format == "html":
            common["parse_mode"] = "HTML"
        if message.thread_id is not None:
            common["message_thread_id"] = _thread(message.thread_id)
        markup = None
        if with_extras and message.buttons:
            markup = InlineKeyboardMarkup(
                inline_keyboard=[
                    [
                        InlineKeyboardButton(text=b.text, callback_data=b.callback_data, url=b.url)
                        for b in row
                    ]
                    for row in message.buttons
                ]
            )
        image = message.image if with_extras else None
        if image is not None:
            photo: Any = image.file_id or image.url
            if image.data is not None:
                photo = BufferedInputFile(image.data, filename=image.filename)
            fits = utf16_len(text) <= self.capabilities.max_caption_length
            sent = await self._call(self.bot.send_photo(
                chat_id, photo, caption=(text or None) if fits else None,
                reply_markup=markup if fits else None, **common,
            ))
            if fits or not text:
                return SentPart(str(sent.message_id))
            common.pop("reply_parameters", None)
        if self.fast_text:
            return await self._send_text_fast(chat_id, text, message, markup, common)
        sent = await self._call(
            self.bot.send_message(chat_id, text, reply_markup=markup, **common)
        )
        return SentPart(str(sent.message_id))

    async def _send_text_fast(self, chat_id: int, text: str, message: OutgoingMessage,
                              markup: InlineKeyboardMarkup | None,
                              common: dict[str, Any]) -> SentPart:
        """``sendMessage`` as one JSON POST, reading only ``message_id`` back.

        aiogram builds and validates full pydantic models for every call and answer; for the
        hottest call of a broadcast (thousands per second) that is most of the CPU. Same
        endpoint, same errors (mapped like :meth:`_call`)."""
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if "parse_mode" in common:
            payload["parse_mode"] = common["parse_mode"]
        if "message_thread_id" in common:
            payload["message_thread_id"] = common["message_thread_id"]
        if "reply_parameters" in common:
            payload["reply_parameters"] = {"message_id": int(message.reply_to or 0),
                                           "allow_sending_without_reply": True}
        if markup is not None:
            payload["reply_markup"] = {"inline_keyboard": [
                [{k: v for k, v in (("text", b.text), ("callback_data", b.callback_data),
                                    ("url", b.url)) if v is not None} for b in row]
                for row in message.buttons
            ]}
        if self._http is None or self._http.closed:
            self._http = ClientSession(timeout=ClientTimeout(total=self.settings.request_timeout))
        url = self.bot.session.api.api_url(self.bot.token, "sendMessage")
        try:
            async with self._http.post(url, json=payload) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (ClientError, TimeoutError, OSError, ValueError) as exc:
            raise TransientSendError(f"network error: {exc!r}") from exc
        if isinstance(body, dict) and body.get("ok"):
            return SentPart(str(body["result"]["message_id"]))
        raise _envelope_error(status, body if isinstance(body, dict) else {})

    async def _call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except TelegramRetryAfter as exc:
            raise RetryAfter(float(exc.retry_after), exc.message) from exc
        except TelegramForbiddenError as exc:
            raise PermanentSendError(exc.message, recipient_unreachable=True) from exc
        except TelegramBadRequest as exc:
            text = exc.message.lower()
            if "can't parse entities" in text or "unsupported start tag" in text:
                raise MarkupError(exc.message) from exc
            unreachable = "chat not found" in text or "user is deactivated" in text
            raise PermanentSendError(exc.message, recipient_unreachable=unreachable) from exc
        except (TelegramNotFound, TelegramUnauthorizedError, TelegramConflictError,
                TelegramEntityTooLarge) as exc:
            raise PermanentSendError(exc.message) from exc
        except (TelegramServerError, TelegramNetworkError) as exc:
            raise TransientSendError(exc.message) from exc
        except (ClientError, TimeoutError, OSError) as exc:
            raise TransientSendError(f"network error: {exc!r}") from exc
        except TelegramAPIError as exc:
            raise TransientSendError(exc.message) from exc

    # ------------------------------------------------------------------ forum topics
    async def create_forum_topic(self, chat: ChatRef, name: str) -> str:
        """A new topic in a forum supergroup (the bot needs can_manage_topics); its thread id."""
        topic = await self._call(self.bot.create_forum_topic(_chat_id(chat), name[:128]))
        return str(topic.message_thread_id)

    async def close_forum_topic(self, chat: ChatRef, thread_id: str) -> None:
        """Close a topic; closing a closed topic is not an error (TOPIC_NOT_MODIFIED)."""
        await self._unchanged_is_fine(
            self.bot.close_forum_topic(_chat_id(chat), _thread(thread_id)))

    async def reopen_forum_topic(self, chat: ChatRef, thread_id: str) -> None:
        """Reopen a topic; reopening an open topic is not an error. A deleted topic raises
        :class:`PermanentSendError` ("TOPIC_ID_INVALID")."""
        await self._unchanged_is_fine(
            self.bot.reopen_forum_topic(_chat_id(chat), _thread(thread_id)))

    async def _unchanged_is_fine(self, call: Awaitable[Any]) -> None:
        try:
            await self._call(call)
        except PermanentSendError as exc:
            if "TOPIC_NOT_MODIFIED" not in exc.description.upper():
                raise

    # ------------------------------------------------------------------ group admin
    async def create_invite_link(
        self,
        chat: ChatRef,
        *,
        name: str | None = None,
        member_limit: int | None = None,
        expires_at: datetime | None = None,
        creates_join_request: bool = False,
    ) -> InviteLink:
        link = await self._call(self.bot.create_chat_invite_link(
            int(chat.id), name=name[:32] if name else None, expire_date=expires_at,
            member_limit=member_limit, creates_join_request=creates_join_request or None,
        ))
        return mapping.invite_link(link)

    async def revoke_invite_link(self, chat: ChatRef, url: str) -> None:
        await self._call(self.bot.revoke_chat_invite_link(int(chat.id), url))

    async def approve_join_request(self, chat: ChatRef, user_id: str) -> None:
        await self._call(self.bot.approve_chat_join_request(int(chat.id), int(user_id)))

    async def decline_join_request(self, chat: ChatRef, user_id: str) -> None:
        await self._call(self.bot.decline_chat_join_request(int(chat.id), int(user_id)))

    async def member_count(self, chat: ChatRef) -> int:
        return int(await self._call(self.bot.get_chat_member_count(int(chat.id))))

    def warm_up(self) -> None:
        """Build aiogram's lazily-built pydantic models now (seconds of CPU) so the first
        burst of a broadcast does not pay for it."""
        Message.model_validate({"message_id": 1, "date": 0,
                                "chat": {"id": 1, "type": "private"}, "text": "x"},
                               context={"bot": self.bot})
        from aiogram.methods import SendMessage

        SendMessage(chat_id=1, text="x").model_dump()

    async def fetch_username(self) -> str:
        """The bot's username from getMe (for tools that do not start the platform)."""
        if not self.username:
            me = await self._call(self.bot.get_me())
            self.username = me.username or ""
        return self.username

    def start_link(self, payload: str) -> str | None:
        return f"https://t.me/{self.username}?start={payload}" if self.username else None

    async def answer_callback(self, callback: Callback, text: str | None = None) -> None:
        try:
            await self.bot.answer_callback_query(callback.callback_id, text=text)
        except (TelegramAPIError, ClientError, TimeoutError, OSError) as exc:
            log.info("answerCallbackQuery failed", extra={"error": str(exc)[:200]})


def _chat_id(chat: ChatRef) -> int:
    try:
        return int(chat.id)
    except ValueError:
        raise PermanentSendError("Bad Request: chat not found",
                                 recipient_unreachable=True) from None


def _thread(thread_id: str) -> int:
    try:
        return int(thread_id)
    except ValueError:
        raise PermanentSendError("Bad Request: message thread not found") from None


def _envelope_error(status: int, body: dict[str, Any]) -> Exception:
    """A Bot API error envelope as a neutral send error (the mapping of ``_call``)."""
    description = str(body.get("description") or f"HTTP {status}")
    code = int(body.get("error_code") or status)
    if code == 429:
        retry = (body.get("parameters") or {}).get("retry_after") or 1
        return RetryAfter(float(retry), description)
    if code == 403:
        return PermanentSendError(description, recipient_unreachable=True)
    if code == 400:
        text = description.lower()
        if "can't parse entities" in text or "unsupported start tag" in text:
            return MarkupError(description)
        unreachable = "chat not found" in text or "user is deactivated" in text
        return PermanentSendError(description, recipient_unreachable=unreachable)
    if code in (401, 404, 409, 413):
        return PermanentSendError(description)
    return TransientSendError(description)


def _chat_key(update: Any) -> Any:
    if not isinstance(update, dict):
        return None
    for kind in ("message", "edited_message", "my_chat_member", "chat_member",
                 "chat_join_request"):
        chat = (update.get(kind) or {}).get("chat") if isinstance(update.get(kind), dict) \
            else None
        if isinstance(chat, dict):
            return chat.get("id")
    query = update.get("callback_query")
    if isinstance(query, dict) and isinstance(query.get("message"), dict):
        return (query["message"].get("chat") or {}).get("id")
    return update.get("update_id")
