"""The web chat channel: a chat page, an embeddable widget and a WebSocket, as a ChatPlatform.

Inbound, each visitor frame becomes an :class:`IncomingMessage` or :class:`Callback` awaited on
the core's handler (one task per frame, chained per visitor so order is kept). Outbound,
:meth:`WebChatPlatform.send_part` publishes the message on the event bus topic
``webchat:{visitor_id}``; every open socket of that visitor (one per tab, in any worker process)
subscribes to that topic and forwards it. Nothing is stored here: the core stores every message
and hands it back through the ``history`` callable when a socket says hello.

WebSocket protocol (JSON text frames)::

    client -> server
      {"type": "hello", "language": "ja"}
      {"type": "message", "text": "...", "client_id": "..."}
      {"type": "callback", "data": "...", "message_id": "...", "sig": "...", "client_id": "..."}
    server -> client
      {"type": "history", "messages": [<message>...]}          answer to every hello
      {"type": "message", "id", "text", "format": "plain" | "html",
                          "buttons": [[{"text", "callback_data", "sig"} | {"text", "url"}]],
                          "image": {"url"} | null,
                          "sender": "bot" | "advisor:NAME" | "visitor" | ..., "reply_to", "ts",
                          "client_id" (visitor messages only)}
      {"type": "ack", "client_id", "id", "ts"}                  a message or callback accepted
      {"type": "callback_answer", "callback_id", "text"}
      {"type": "error", "code", "message", "client_id"?}

``sig`` on a callback button binds its data to the visitor and the message that carried it; a
callback frame must send it back, so a visitor can press only buttons it was shown (as Telegram
guarantees for its inline keyboards). ``format: "html"`` text uses Telegram's small HTML subset;
the page renders only whitelisted tags and safe links from it, everything else as text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from bot.core.ports import Event, EventHandler
from bot.core.shared import EventBus
from bot.core.types import (
    Button,
    Callback,
    ChatKind,
    ChatRef,
    Image,
    IncomingMessage,
    MarkupError,
    OutgoingMessage,
    PermanentSendError,
    PlatformCapabilities,
    SentPart,
    TransientSendError,
    UserRef,
)
from bot.web import same_origin
from bot.webchat.identity import COOKIE_MAX_AGE, COOKIE_NAME, VisitorSigner, is_visitor_id

log = logging.getLogger(__name__)

HistoryLoader = Callable[[str, int], Awaitable[list[dict[str, Any]]]]
Clock = Callable[[], float]

STATIC_DIR = Path(__file__).parent / "static"
HISTORY_LIMIT = 50  # messages sent on hello
RATE_LIMIT = 30  # frames a visitor may send ...
RATE_PERIOD = 10.0  # ... per this many seconds, over all its sockets
MAX_SOCKETS_PER_VISITOR = 10
HEARTBEAT = 30.0  # seconds between server pings; a silent peer is dropped
STOP_GRACE = 5.0  # seconds stop() lets running handlers finish before cancelling them
MAX_INLINE_IMAGE = 512 * 1024  # Image.data up to this size goes out as a data: URL
MAX_ID_LENGTH = 64  # client_id, message_id
UI_LANGUAGES = ("ja", "en", "zh")

_ASSETS = {"chat.js": "application/javascript", "chat.css": "text/css"}
_LANGUAGE_RE = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}")
_COMMAND_RE = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@\S*)?(?:\s+(.*))?", re.DOTALL)
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
_BUTTON_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_IMAGE_SCHEMES = frozenset({"http", "https"})
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class _FrameError(Exception):
    """A visitor frame we refuse; becomes an ``error`` frame, the socket stays open."""

    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id


@dataclass(eq=False, slots=True)
class _Connection:
    """One open socket (one browser tab) of one visitor."""

    ws: web.WebSocketResponse
    visitor_id: str
    language: str | None
    refused: int = 0  # frames refused by the rate limit since the last one allowed
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pump: asyncio.Task[None] | None = None

    async def send(self, frame: Mapping[str, Any]) -> None:
        if self.ws.closed:
            return
        data = json.dumps(frame, ensure_ascii=False)
        async with self.send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(data)


class WebChatPlatform:
    """The web chat channel as a :class:`bot.core.ports.ChatPlatform`.

    ``secret`` signs visitor cookies and button tokens (at least 16 bytes; keep it stable across
    restarts and identical in every worker, or visitors lose their conversation). ``history``
    returns a visitor's latest messages, oldest first, as dicts shaped like the ``message`` frame:
    ``{"id", "text", "sender": "bot" | "advisor:NAME" | ..., "direction"?: "in" | "out",
    "ts": float | datetime, "format"?: "plain" | "html", "buttons"?: [[{"text", "callback_data" |
    "url"}]], "image"?: {"url"} | None, "reply_to"?}``; ``direction "in"`` (or sender
    ``"contact"``/``"visitor"``) marks the visitor's own messages.
    """

    name = "webchat"
    capabilities = PlatformCapabilities(
        buttons=True, images=True, max_text_length=8000, max_caption_length=8000
    )

    def __init__(
        self,
        *,
        events: EventBus,
        secret: bytes,
        history: HistoryLoader | None = None,
        cookie_secure: bool = False,
        brand_name: str = "Kizuna",
        default_language: str = "ja",
        max_text: int = 4000,
        clock: Clock = time.time,
    ) -> None:
        if max_text < 1:
            raise ValueError("max_text must be positive")
        self._events = events
        self._signer = VisitorSigner(secret)
        self._history = history
        self._cookie_secure = cookie_secure
        self._brand_name = brand_name
        self._default_language = _language(default_language) or "ja"
        self._max_text = max_text
        # JSON may escape a character into 6 bytes; a frame larger than this closes with 1009.
        self._max_frame = max(16 * 1024, max_text * 6 + 2048)
        self._clock = clock
        self._handler: EventHandler | None = None
        self._running = False
        self._prefix = "/chat"
        self._connections: dict[str, set[_Connection]] = {}
        self._windows: dict[str, deque[float]] = {}
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pages: dict[str, str] = {}
        self._assets: dict[str, bytes] = {}

    # -- ChatPlatform -----------------------------------------------------------------------

    def set_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        if self._handler is None:
            log.warning("web chat started without a handler; visitor messages will be refused")
        self._running = True

    async def stop(self) -> None:
        """Refuse new sockets, close open ones (1001), let running handlers finish briefly."""
        self._running = False
        connections = [conn for conns in self._connections.values() for conn in conns]
        await asyncio.gather(
            *(
                conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for conn in connections
            ),
            return_exceptions=True,
        )
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("web chat stop cancelled %d unfinished handler(s)", len(pending))
                await asyncio.wait(pending)

    async def send_part(
        self, chat: ChatRef, text: str, message: OutgoingMessage, *, with_extras: bool
    ) -> SentPart:
        visitor_id = _visitor_of(chat)
        if len(text) > self.capabilities.max_text_length:
            raise PermanentSendError("message is too long")
        buttons = [row for row in message.buttons if row] if with_extras else []
        for row in buttons:
            for button in row:
                if button.url is not None and not _url_ok(button.url, _BUTTON_SCHEMES):
                    raise MarkupError(f"unsupported button url: {button.url[:100]!r}")
        image = _image_json(message.image) if with_extras and message.image else None
        if not text.strip() and not buttons and image is None:
            raise PermanentSendError("message is empty")
        message_id = _new_id()
        frame = self._message_frame(
            visitor_id,
            message_id=message_id,
            text=text,
            sender=message.sender,
            ts=self._clock(),
            buttons=buttons,
            image=image,
            reply_to=message.reply_to,  # Outbound keeps it on the first part only
            text_format=message.format,
        )
        await self._publish(visitor_id, frame)
        return SentPart(platform_message_id=message_id)

    async def answer_callback(self, callback: Callback, text: str | None = None) -> None:
        visitor_id = _visitor_of(callback.chat)
        frame = {"type": "callback_answer", "callback_id": callback.callback_id, "text": text}
        await self._publish(visitor_id, frame)

    # -- HTTP -------------------------------------------------------------------------------

    def register_routes(self, app: web.Application, prefix: str = "/chat") -> None:
        """Add the page (``prefix``), ``/widget.js``, ``/ws``, ``/demo`` and ``/static/*``."""
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._prefix = prefix
        self._load_static()
        app.router.add_get(prefix or "/", self._page)
        if prefix:
            app.router.add_get(prefix + "/", self._page)
        app.router.add_get(prefix + "/widget.js", self._widget)
        app.router.add_get(prefix + "/ws", self._websocket)
        app.router.add_get(prefix + "/demo", self._demo)
        app.router.add_get(prefix + "/static/{name}", self._asset)

    def _load_static(self) -> None:
        for name in (*_ASSETS, "widget.js"):
            self._assets[name] = (STATIC_DIR / name).read_bytes()
        version = {name: hashlib.sha256(self._assets[name]).hexdigest()[:12] for name in _ASSETS}
        config = {
            "prefix": self._prefix,
            "brand": self._brand_name,
            "defaultLanguage": self._default_language,
            "maxText": self._max_text,
        }
        values = {
            "lang": html.escape(self._default_language),
            "brand": html.escape(self._brand_name),
            "prefix": html.escape(self._prefix),
            "css": html.escape(f"{self._prefix}/static/chat.css?v={version['chat.css']}"),
            "js": html.escape(f"{self._prefix}/static/chat.js?v={version['chat.js']}"),
            "config": _script_json(config),
        }
        for page in ("chat.html", "demo.html"):
            template = (STATIC_DIR / page).read_text(encoding="utf-8")
            self._pages[page] = re.sub(
                r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], template
            )

    async def _page(self, request: web.Request) -> web.Response:
        visitor_id, _is_new = self._signer.resolve(request.cookies.get(COOKIE_NAME))
        response = web.Response(text=self._pages["chat.html"], content_type="text/html")
        self._set_cookie(response, visitor_id)  # always: refreshes the cookie's lifetime
        host = request.host if _HOST_RE.fullmatch(request.host) else None
        sockets = f" ws://{host} wss://{host}" if host else ""
        response.headers.update(
            {
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'self'; style-src 'self'; "
                    f"img-src 'self' https: http: data:; connect-src 'self'{sockets}; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors *"
                ),
                "Cache-Control": "no-store",
                "Referrer-Policy": "same-origin",
                "X-Content-Type-Options": "nosniff",
            }
        )
        return response

    async def _demo(self, request: web.Request) -> web.Response:
        return web.Response(text=self._pages["demo.html"], content_type="text/html")

    async def _widget(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._assets["widget.js"],
            content_type="application/javascript",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=self._assets[name],
            content_type=_ASSETS[name],
            charset="utf-8",
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",  # URLs carry ?v=hash
                "X-Content-Type-Options": "nosniff",
            },
        )

    def _set_cookie(self, response: web.StreamResponse, visitor_id: str) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self._signer.sign(visitor_id),
            max_age=COOKIE_MAX_AGE,
            path=self._prefix or "/",
            httponly=True,
            samesite="Lax",
            secure=self._cookie_secure,
        )

    # -- WebSocket --------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._running:
            raise web.HTTPServiceUnavailable(text="web chat is not running")
        if not same_origin(request):
            raise web.HTTPForbidden(text="cross-origin web chat socket refused")
        visitor_id, is_new = self._signer.resolve(request.cookies.get(COOKIE_NAME))
        if len(self._connections.get(visitor_id, ())) >= MAX_SOCKETS_PER_VISITOR:
            raise web.HTTPTooManyRequests(text="too many open chat windows")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=self._max_frame)
        if is_new:
            self._set_cookie(ws, visitor_id)
        await ws.prepare(request)
        conn = _Connection(
            ws=ws,
            visitor_id=visitor_id,
            language=_accept_language(request.headers.get("Accept-Language")),
        )
        self._add_connection(conn)
        conn.pump = asyncio.create_task(self._pump(conn))
        await asyncio.sleep(0)  # let the pump subscribe before this socket reads any history
        try:
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    log.debug("web chat socket error: %r", ws.exception())
                    break
                try:
                    await self._on_frame(conn, msg)
                except _FrameError as exc:
                    await conn.send(_error_frame(exc.code, exc.message, exc.client_id))
                except Exception:
                    log.exception("web chat failed on a visitor frame")
                    await conn.send(_error_frame("internal_error", "something went wrong"))
        finally:
            self._remove_connection(conn)
            conn.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.pump
        return ws

    def _add_connection(self, conn: _Connection) -> None:
        now = self._clock()
        stale = [  # forget rate windows of visitors who left and have been quiet long enough
            visitor_id
            for visitor_id, window in self._windows.items()
            if visitor_id not in self._connections
            and (not window or window[-1] <= now - RATE_PERIOD)
        ]
        for visitor_id in stale:
            del self._windows[visitor_id]
        self._connections.setdefault(conn.visitor_id, set()).add(conn)

    def _remove_connection(self, conn: _Connection) -> None:
        conns = self._connections.get(conn.visitor_id)
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self._connections[conn.visitor_id]

    async def _pump(self, conn: _Connection) -> None:
        """Forward the visitor's bus events to this socket until it closes."""
        try:
            async for event in self._events.subscribe(_topic(conn.visitor_id)):
                await conn.send(event)
        except Exception:
            # The bus failed (a lost Redis connection...): close so the page reconnects and
            # subscribes afresh rather than staying open and silently deaf.
            log.exception("web chat event subscription failed")
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"event bus failed")

    async def _on_frame(self, conn: _Connection, msg: WSMessage) -> None:
        if not self._allow(conn.visitor_id):
            conn.refused += 1
            if conn.refused > RATE_LIMIT:  # ignores the errors: a runaway client, not a person
                await conn.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"rate limited")
                return
            raise _FrameError("rate_limited", "too many messages; slow down", _peek_client_id(msg))
        conn.refused = 0
        if msg.type is WSMsgType.BINARY:
            raise _FrameError("binary_not_supported", "send JSON text frames")
        if msg.type is not WSMsgType.TEXT:
            return
        try:
            frame = json.loads(msg.data)
        except (ValueError, RecursionError):
            raise _FrameError("bad_json", "the frame is not valid JSON") from None
        if not isinstance(frame, dict):
            raise _FrameError("bad_frame", "a frame is a JSON object with a type")
        kind = frame.get("type")
        if kind == "hello":
            language = _language(frame.get("language"))
            if language is not None:
                conn.language = language
            await conn.send(await self._history_frame(conn.visitor_id))
        elif kind == "message":
            await self._on_message(conn, frame)
        elif kind == "callback":
            await self._on_callback(conn, frame)
        else:
            raise _FrameError("unknown_type", "unknown frame type")

    async def _on_message(self, conn: _Connection, frame: dict[str, Any]) -> None:
        client_id = _client_id(frame)
        text = frame.get("text")
        if not isinstance(text, str):
            raise _FrameError("missing_text", "a message needs a text", client_id)
        if not text.strip():
            raise _FrameError("empty_text", "the message is empty", client_id)
        if len(text) > self._max_text:
            raise _FrameError(
                "text_too_long", f"messages are limited to {self._max_text} characters", client_id
            )
        if not _text_ok(text):
            raise _FrameError("invalid_text", "the text contains invalid characters", client_id)
        self._require_handler(client_id)
        now = self._clock()
        message_id = _new_id()
        command = _COMMAND_RE.fullmatch(text)
        incoming = IncomingMessage(
            chat=_chat(conn.visitor_id),
            sender=self._user(conn),
            text=text,
            message_id=message_id,
            date=datetime.fromtimestamp(now, UTC),
            command=command.group(1).lower() if command else None,
            command_args=(command.group(2) or "").strip() if command else "",
        )
        await conn.send({"type": "ack", "client_id": client_id, "id": message_id, "ts": now})
        # The visitor's other tabs show it too; each tab drops ids it already has.
        echo = self._message_frame(
            conn.visitor_id,
            message_id=message_id,
            text=text,
            sender="visitor",
            ts=now,
            buttons=[],
            image=None,
            reply_to=None,
        )
        echo["client_id"] = client_id
        try:
            await self._events.publish(_topic(conn.visitor_id), echo)
        except Exception:
            log.warning("web chat could not echo a visitor message to other tabs", exc_info=True)
        self._dispatch(conn.visitor_id, incoming)

    async def _on_callback(self, conn: _Connection, frame: dict[str, Any]) -> None:
        client_id = _client_id(frame)
        data = frame.get("data")
        if not isinstance(data, str) or not data or not _text_ok(data):
            raise _FrameError("missing_data", "a callback needs its button's data", client_id)
        message_id = frame.get("message_id")
        if message_id is not None and (
            not isinstance(message_id, str) or len(message_id) > MAX_ID_LENGTH
        ):
            raise _FrameError("bad_frame", "message_id must be a short string", client_id)
        sig = frame.get("sig")
        if not isinstance(sig, str) or not self._signer.verify_token(
            conn.visitor_id, sig, "callback", message_id or "", data
        ):
            raise _FrameError("invalid_callback", "this button is not valid here", client_id)
        self._require_handler(client_id)
        callback_id = _new_id()
        callback = Callback(
            chat=_chat(conn.visitor_id),
            sender=self._user(conn),
            data=data,
            callback_id=callback_id,
            message_id=message_id,
        )
        now = self._clock()
        await conn.send({"type": "ack", "client_id": client_id, "id": callback_id, "ts": now})
        self._dispatch(conn.visitor_id, callback)

    def _require_handler(self, client_id: str | None) -> None:
        if self._handler is None or not self._running:
            raise _FrameError("unavailable", "the chat is not available right now", client_id)

    def _allow(self, visitor_id: str) -> bool:
        """Sliding window: at most RATE_LIMIT frames per RATE_PERIOD seconds per visitor."""
        now = self._clock()
        window = self._windows.setdefault(visitor_id, deque())
        while window and window[0] <= now - RATE_PERIOD:
            window.popleft()
        if len(window) >= RATE_LIMIT:
            return False
        window.append(now)
        return True

    def _dispatch(self, visitor_id: str, event: Event) -> None:
        """Run the handler in a task, after the visitor's previous event has been handled."""
        previous = self._tails.get(visitor_id)
        task = asyncio.create_task(self._handle(previous, event))
        self._tails[visitor_id] = task
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._tails.get(visitor_id) is finished:
                del self._tails[visitor_id]

        task.add_done_callback(done)

    async def _handle(self, previous: asyncio.Task[None] | None, event: Event) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        handler = self._handler
        if handler is None:
            return
        try:
            await handler(event)
        except Exception:
            log.exception("web chat handler failed on %s", type(event).__name__)

    def _user(self, conn: _Connection) -> UserRef:
        return UserRef(
            platform=self.name,
            id=conn.visitor_id,
            display_name=None,
            language_code=conn.language or self._default_language,
        )

    async def _history_frame(self, visitor_id: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if self._history is not None:
            try:
                stored = await self._history(visitor_id, HISTORY_LIMIT)
            except Exception:
                log.exception("web chat could not load history")
                stored = []
            for entry in stored:
                frame = self._history_entry(visitor_id, entry)
                if frame is not None:
                    messages.append(frame)
        return {"type": "history", "messages": messages}

    def _history_entry(self, visitor_id: str, entry: Any) -> dict[str, Any] | None:
        """A stored message as a ``message`` frame; whatever cannot be shown safely is dropped."""
        if not isinstance(entry, Mapping) or entry.get("id") is None:
            return None
        text = entry.get("text")
        sender = entry.get("sender")
        if entry.get("direction") == "in" or sender in ("contact", "visitor"):
            sender = "visitor"
        ts = entry.get("ts")
        if isinstance(ts, datetime):
            ts = ts.timestamp()
        image = entry.get("image")
        image_url = image.get("url") if isinstance(image, Mapping) else image
        reply_to = entry.get("reply_to")
        return self._message_frame(
            visitor_id,
            message_id=str(entry["id"]),
            text=text if isinstance(text, str) else "",
            sender=sender if isinstance(sender, str) else "bot",
            ts=float(ts) if isinstance(ts, int | float) else None,
            buttons=_stored_buttons(entry.get("buttons")),
            image=(
                {"url": image_url}
                if isinstance(image_url, str) and _url_ok(image_url, _IMAGE_SCHEMES)
                else None
            ),
            reply_to=str(reply_to) if reply_to is not None else None,
            text_format=entry.get("format"),
        )

    def _message_frame(
        self,
        visitor_id: str,
        *,
        message_id: str,
        text: str,
        sender: str,
        ts: float | None,
        buttons: list[list[Button]],
        image: dict[str, str] | None,
        reply_to: str | None,
        text_format: Any = "plain",
    ) -> dict[str, Any]:
        return {
            "type": "message",
            "id": message_id,
            "text": text,
            "format": "html" if text_format == "html" else "plain",
            "buttons": [
                [self._button_json(visitor_id, message_id, button) for button in row]
                for row in buttons
            ],
            "image": image,
            "sender": sender,
            "reply_to": reply_to,
            "ts": ts,
        }

    def _button_json(self, visitor_id: str, message_id: str, button: Button) -> dict[str, str]:
        if button.callback_data is not None:
            sig = self._signer.sign_token(visitor_id, "callback", message_id, button.callback_data)
            return {"text": button.text, "callback_data": button.callback_data, "sig": sig}
        assert button.url is not None
        return {"text": button.text, "url": button.url}

    async def _publish(self, visitor_id: str, frame: dict[str, Any]) -> None:
        try:
            await self._events.publish(_topic(visitor_id), frame)
        except Exception as exc:
            raise TransientSendError(f"web chat event bus failed: {exc}") from exc


# -- helpers ------------------------------------------------------------------------------------


def _topic(visitor_id: str) -> str:
    return f"webchat:{visitor_id}"


def _chat(visitor_id: str) -> ChatRef:
    return ChatRef(WebChatPlatform.name, ChatKind.PRIVATE, visitor_id)


def _visitor_of(chat: ChatRef) -> str:
    if (
        chat.platform != WebChatPlatform.name
        or chat.kind is not ChatKind.PRIVATE
        or not is_visitor_id(chat.id)
    ):
        raise PermanentSendError("chat not found")
    return chat.id


def _new_id() -> str:
    return uuid.uuid4().hex


def _error_frame(code: str, message: str, client_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    return frame


def _client_id(frame: Mapping[str, Any]) -> str | None:
    client_id = frame.get("client_id")
    if client_id is None:
        return None
    if not isinstance(client_id, str) or len(client_id) > MAX_ID_LENGTH:
        raise _FrameError("bad_frame", "client_id must be a short string")
    return client_id


def _peek_client_id(msg: WSMessage) -> str | None:
    """The client_id of a frame we refuse anyway, so the page can mark that message failed."""
    if msg.type is not WSMsgType.TEXT:
        return None
    try:
        frame = json.loads(msg.data)
        return _client_id(frame) if isinstance(frame, dict) else None
    except (ValueError, RecursionError, _FrameError):
        return None


def _text_ok(text: str) -> bool:
    """No NUL (databases refuse it) and no lone surrogates (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _language(value: Any) -> str | None:
    """A BCP 47-ish language tag, lowercased (``"ja"``, ``"zh-tw"``), or ``None``."""
    if not isinstance(value, str) or len(value) > 35 or not _LANGUAGE_RE.fullmatch(value):
        return None
    return value.replace("_", "-").lower()


def _accept_language(header: str | None) -> str | None:
    """The preferred language of an ``Accept-Language`` header."""
    if not header:
        return None
    best: tuple[float, str] | None = None
    for item in header.split(",")[:20]:
        tag, _sep, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        language = _language(tag.strip())
        if language is not None and quality > 0 and (best is None or quality > best[0]):
            best = (quality, language)
    return best[1] if best else None




def _url_ok(url: str, schemes: frozenset[str]) -> bool:
    if len(url) > 2048 or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        return False
    return bool(parts.netloc) if parts.scheme.lower() in ("http", "https") else bool(parts.path)


def _image_json(image: Image) -> dict[str, str]:
    if image.url is not None:
        if not _url_ok(image.url, _IMAGE_SCHEMES):
            raise MarkupError(f"unsupported image url: {image.url[:100]!r}")
        return {"url": image.url}
    if image.data is not None:
        mime = next((m for magic, m in _IMAGE_MAGIC if image.data.startswith(magic)), None)
        if image.data[:4] == b"RIFF" and image.data[8:12] == b"WEBP":
            mime = "image/webp"
        if mime is None:
            raise MarkupError("image data is not a PNG, JPEG, GIF or WebP")
        if len(image.data) > MAX_INLINE_IMAGE:
            raise MarkupError("image data is too large to send inline; give the image a url")
        encoded = base64.b64encode(image.data).decode("ascii")
        return {"url": f"data:{mime};base64,{encoded}"}
    raise MarkupError("web chat needs an image url or data (file_id is Telegram's)")


def _stored_buttons(rows: Any) -> list[list[Button]]:
    """Buttons of a stored message, as dicts or :class:`Button`; unsafe ones are dropped."""
    result: list[list[Button]] = []
    if not isinstance(rows, list):
        return result
    for row in rows:
        if not isinstance(row, list):
            continue
        buttons: list[Button] = []
        for item in row:
            button = item
            if isinstance(item, Mapping):
                text, data, url = item.get("text"), item.get("callback_data"), item.get("url")
                if not isinstance(text, str) or not all(
                    value is None or isinstance(value, str) for value in (data, url)
                ):
                    continue
                try:
                    button = Button(text=text, callback_data=data, url=url)
                except ValueError:
                    continue
            if not isinstance(button, Button):
                continue
            if button.url is not None and not _url_ok(button.url, _BUTTON_SCHEMES):
                continue
            buttons.append(button)
        if buttons:
            result.append(buttons)
    return result


def _script_json(value: Any) -> str:
    """JSON safe to place inside a ``<script type="application/json">`` element."""
    return (
        json.dumps(value, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
