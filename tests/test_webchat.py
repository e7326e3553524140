"""The web chat channel, driven over real HTTP and WebSockets (aiohttp's test server).

Each test opens the page and sockets as a browser would, feeds frames through the protocol and
checks what reaches the core's handler and what the sockets receive. Nothing waits for time to
pass: replies are awaited with timeouts, the rate limit runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestServer

from bot.core.ports import ChatPlatform, Event
from bot.core.shared import InMemoryEventBus
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
    TransientSendError,
)
from bot.webchat import COOKIE_NAME, VisitorSigner, WebChatPlatform
from bot.webchat.identity import is_visitor_id, new_visitor_id
from bot.webchat.platform import HISTORY_LIMIT, MAX_SOCKETS_PER_VISITOR, RATE_LIMIT, RATE_PERIOD

SECRET = b"test-secret-for-the-web-chat-0123"
TIMEOUT = 3.0
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """The core's handler: records every event in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def __call__(self, event: Event) -> None:
        await self.queue.put(event)

    async def next(self) -> Event:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def message(self) -> IncomingMessage:
        event = await self.next()
        assert isinstance(event, IncomingMessage), event
        return event


@dataclass
class Visitor:
    """One browser: its own cookie jar, any number of tabs (sockets)."""

    session: aiohttp.ClientSession
    server: TestServer

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def open_page(self) -> aiohttp.ClientResponse:
        response = await self.session.get(self.url("/chat"))
        assert response.status == 200
        await response.read()
        return response

    @property
    def visitor_id(self) -> str:
        morsel = self.session.cookie_jar.filter_cookies(self.server.make_url("/chat/ws"))
        value = morsel[COOKIE_NAME].value
        visitor_id = VisitorSigner(SECRET).verify(value)
        assert visitor_id is not None
        return visitor_id

    @property
    def chat(self) -> ChatRef:
        return ChatRef("webchat", ChatKind.PRIVATE, self.visitor_id)

    async def socket(
        self, *, hello: bool = True, **kwargs: Any
    ) -> aiohttp.ClientWebSocketResponse:
        ws = await self.session.ws_connect(self.url("/chat/ws"), **kwargs)
        if hello:
            await ws.send_json({"type": "hello", "language": "en"})
            frame = await receive(ws)
            assert frame["type"] == "history"
        return ws


@dataclass
class Harness:
    platform: WebChatPlatform
    server: TestServer
    recorder: Recorder
    bus: InMemoryEventBus
    clock: FakeClock
    history_calls: list[tuple[str, int]]
    stored: dict[str, list[Any]]
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    async def visitor(self, *, page: bool = True) -> Visitor:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sessions.append(session)
        visitor = Visitor(session, self.server)
        if page:
            await visitor.open_page()
        return visitor


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    harnesses: list[Harness] = []

    async def make(**kwargs: Any) -> Harness:
        bus = InMemoryEventBus()
        clock = FakeClock()
        calls: list[tuple[str, int]] = []
        stored: dict[str, list[Any]] = {}

        async def history(visitor_id: str, limit: int) -> list[dict[str, Any]]:
            calls.append((visitor_id, limit))
            return stored.get(visitor_id, [])

        options: dict[str, Any] = {"history": history, "clock": clock}
        options.update(kwargs)
        platform = WebChatPlatform(events=bus, secret=SECRET, **options)
        recorder = Recorder()
        platform.set_handler(recorder)
        app = web.Application()
        platform.register_routes(app)
        await platform.start()
        server = TestServer(app)
        await server.start_server()
        harness = Harness(platform, server, recorder, bus, clock, calls, stored)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        await harness.platform.stop()
        for session in harness.sessions:
            await session.close()
        await harness.server.close()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.TEXT, msg
    frame = json.loads(msg.data)
    assert isinstance(frame, dict)
    return frame


async def receive_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``, skipping the echoes of the visitor's own messages."""
    while True:
        frame = await receive(ws)
        if frame["type"] == "message" and frame["sender"] == "visitor" and kind != "message":
            continue
        assert frame["type"] == kind, frame
        return frame


async def send_text(
    ws: aiohttp.ClientWebSocketResponse, text: str, client_id: str = "c1"
) -> dict[str, Any]:
    await ws.send_json({"type": "message", "text": text, "client_id": client_id})
    return await receive_type(ws, "ack")


def set_cookie_header(response: aiohttp.ClientResponse) -> SimpleCookie:
    cookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie


# -- identity ---------------------------------------------------------------------------------


def test_signed_visitor_ids_verify_and_forgeries_do_not() -> None:
    signer = VisitorSigner(SECRET)
    visitor_id = new_visitor_id()
    value = signer.sign(visitor_id)
    assert signer.verify(value) == visitor_id
    assert signer.resolve(value) == (visitor_id, False)

    other = new_visitor_id()
    signature = value.split(".", 1)[1]
    forged = [
        None,
        "",
        visitor_id,
        f"{other}.{signature}",  # someone else's id under my signature
        value[:-2] + ("AA" if not value.endswith("AA") else "BB"),
        VisitorSigner(b"another-secret-entirely-0123").sign(visitor_id),
        "../../etc.passwd",
        f"{visitor_id}.{signature}\u00e9",
    ]
    for cookie in forged:
        assert signer.verify(cookie) is None, cookie
        fresh, is_new = signer.resolve(cookie)
        assert is_new and is_visitor_id(fresh) and fresh != visitor_id


def test_button_tokens_are_bound_to_visitor_and_parts() -> None:
    signer = VisitorSigner(SECRET)
    token = signer.sign_token("v1", "callback", "m1", "yes")
    assert signer.verify_token("v1", token, "callback", "m1", "yes")
    assert not signer.verify_token("v2", token, "callback", "m1", "yes")
    assert not signer.verify_token("v1", token, "callback", "m2", "yes")
    assert not signer.verify_token("v1", token, "callback", "m1", "no")
    assert not signer.verify_token("v1", "\u00e9" + token, "callback", "m1", "yes")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        VisitorSigner(b"short")


def test_platform_satisfies_the_port() -> None:
    platform = WebChatPlatform(events=InMemoryEventBus(), secret=SECRET)
    assert isinstance(platform, ChatPlatform)
    assert platform.name == "webchat"
    assert platform.capabilities.max_text_length == 8000


# -- pages ------------------------------------------------------------------------------------


async def test_chat_page_is_served_and_issues_a_signed_cookie(harness: Harness) -> None:
    visitor = await harness.visitor(page=False)
    response = await visitor.open_page()
    assert response.content_type == "text/html"
    page = await response.text()
    assert "<title>Kizuna</title>" in page
    assert "/chat/static/chat.js?v=" in page and "/chat/static/chat.css?v=" in page
    # No inline script: everything executable comes from 'self' under the page's CSP.
    for tag in re.findall(r"<script[^>]*>", page):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors" in csp

    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/chat" in header
    assert "Secure" not in header
    morsel = set_cookie_header(response)[COOKIE_NAME]
    assert VisitorSigner(SECRET).verify(morsel.value) == visitor.visitor_id


async def test_a_valid_cookie_keeps_its_visitor_id(harness: Harness) -> None:
    visitor = await harness.visitor()
    first = visitor.visitor_id
    await visitor.open_page()
    assert visitor.visitor_id == first


async def test_a_tampered_cookie_is_replaced_by_a_fresh_id(harness: Harness) -> None:
    victim = new_visitor_id()
    signature = VisitorSigner(SECRET).sign(new_visitor_id()).split(".", 1)[1]
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            harness.server.make_url("/chat"),
            headers={"Cookie": f"{COOKIE_NAME}={victim}.{signature}"},
        )
        assert response.status == 200
        issued = VisitorSigner(SECRET).verify(set_cookie_header(response)[COOKIE_NAME].value)
    assert issued is not None and issued != victim


async def test_a_tampered_cookie_on_the_socket_gets_a_fresh_id(harness: Harness) -> None:
    victim = new_visitor_id()
    forged = f"{victim}.{'A' * 43}"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            harness.server.make_url("/chat/ws"), headers={"Cookie": f"{COOKIE_NAME}={forged}"}
        )
        await send_text(ws, "hello")
        event = await harness.recorder.next()
        await ws.close()
    assert isinstance(event, IncomingMessage)
    assert event.chat.id != victim and is_visitor_id(event.chat.id)


async def test_secure_cookie_when_configured(make_harness: HarnessFactory) -> None:
    harness = await make_harness(cookie_secure=True)
    async with aiohttp.ClientSession() as session:
        response = await session.get(harness.server.make_url("/chat"))
        assert "Secure" in response.headers["Set-Cookie"]


async def test_brand_name_is_escaped_in_pages(make_harness: HarnessFactory) -> None:
    harness = await make_harness(brand_name="</script><img src=x onerror=alert(1)>&")
    async with aiohttp.ClientSession() as session:
        chat = await (await session.get(harness.server.make_url("/chat"))).text()
        demo = await (await session.get(harness.server.make_url("/chat/demo"))).text()
    for page in (chat, demo):
        assert "<img src=x" not in page
        assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;" in page
    config = re.search(r'id="kizuna-config">(.*?)</script>', chat, re.DOTALL)
    assert config is not None and "<" not in config.group(1)
    assert json.loads(config.group(1))["brand"].startswith("</script>")


async def test_widget_demo_and_assets_are_served(harness: Harness) -> None:
    async with aiohttp.ClientSession() as session:
        widget = await session.get(harness.server.make_url("/chat/widget.js"))
        assert widget.status == 200
        assert widget.content_type == "application/javascript"
        body = await widget.text()
        assert "iframe" in body

        demo = await session.get(harness.server.make_url("/chat/demo"))
        assert demo.status == 200
        assert '<script src="/chat/widget.js" async></script>' in await demo.text()

        for name, kind in (("chat.js", "application/javascript"), ("chat.css", "text/css")):
            asset = await session.get(harness.server.make_url(f"/chat/static/{name}"))
            assert asset.status == 200 and asset.content_type == kind

        for path in (
            "/chat/static/chat.html",
            "/chat/static/..%2Fplatform.py",
            "/chat/static/nope.js",
        ):
            assert (await session.get(harness.server.make_url(path))).status == 404


async def test_scripts_never_inject_html(harness: Harness) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/chat/static/chat.js", "/chat/widget.js"):
            source = await (await session.get(harness.server.make_url(path))).text()
            sinks = re.findall(
                r"\.(?:inner|outer)HTML\b|insertAdjacentHTML|document\.write", source
            )
            assert sinks == [], path
            if path.endswith("chat.js"):
                assert source.count('rel = "noopener noreferrer"') >= 2  # links and url buttons


# -- connecting -------------------------------------------------------------------------------


async def test_hello_gets_the_history(harness: Harness) -> None:
    visitor = await harness.visitor()
    harness.stored[visitor.visitor_id] = [
        {"id": 1, "direction": "in", "sender": "contact", "text": "こんにちは 👋", "ts": 100.0},
        {
            "id": "2",
            "direction": "out",
            "sender": "bot",
            "text": "<b>Hi</b>",
            "format": "html",
            "ts": datetime(2026, 1, 1, tzinfo=UTC),
            "buttons": [
                [{"text": "Yes", "callback_data": "yes"}, {"text": "Bad", "url": "javascript:x"}],
                [{"text": "Shop", "url": "https://shop.example/a"}],
                "not a row",
            ],
        },
        {"id": "3", "sender": "advisor:Aiko", "text": "I can help", "image": {"url": "ftp://x"}},
        "garbage",
        {"text": "no id"},
    ]
    ws = await visitor.session.ws_connect(visitor.url("/chat/ws"))
    await ws.send_json({"type": "hello", "language": "ja"})
    frame = await receive(ws)
    assert frame["type"] == "history"
    assert harness.history_calls == [(visitor.visitor_id, HISTORY_LIMIT)]
    first, second, third = frame["messages"]
    assert first["sender"] == "visitor" and first["text"] == "こんにちは 👋"
    assert first["id"] == "1" and first["ts"] == 100.0
    assert second["format"] == "html"
    assert second["ts"] == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    yes, shop = second["buttons"][0][0], second["buttons"][1][0]
    assert len(second["buttons"]) == 2 and len(second["buttons"][0]) == 1  # javascript: dropped
    assert yes["callback_data"] == "yes" and yes["sig"]
    assert shop == {"text": "Shop", "url": "https://shop.example/a"}
    assert third["sender"] == "advisor:Aiko" and third["image"] is None
    await ws.close()


async def test_no_history_callable_still_answers_hello(make_harness: HarnessFactory) -> None:
    harness = await make_harness(history=None)
    visitor = await harness.visitor()
    ws = await visitor.session.ws_connect(visitor.url("/chat/ws"))
    await ws.send_json({"type": "hello"})
    assert await receive(ws) == {"type": "history", "messages": []}
    await ws.close()


async def test_a_failing_history_gives_an_empty_history(make_harness: HarnessFactory) -> None:
    async def broken(visitor_id: str, limit: int) -> list[dict[str, Any]]:
        raise RuntimeError("database down")

    harness = await make_harness(history=broken)
    visitor = await harness.visitor()
    ws = await visitor.session.ws_connect(visitor.url("/chat/ws"))
    await ws.send_json({"type": "hello"})
    assert await receive(ws) == {"type": "history", "messages": []}
    await send_text(ws, "still here")
    await ws.close()


async def test_cross_site_sockets_are_refused(harness: Harness) -> None:
    visitor = await harness.visitor()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await visitor.session.ws_connect(
            visitor.url("/chat/ws"), headers={"Origin": "https://evil.example"}
        )
    assert refused.value.status == 403
    own = f"http://{harness.server.host}:{harness.server.port}"
    ws = await visitor.socket(headers={"Origin": own})
    await ws.close()


async def test_too_many_sockets_for_one_visitor(harness: Harness) -> None:
    visitor = await harness.visitor()
    sockets = [await visitor.socket(hello=False) for _ in range(MAX_SOCKETS_PER_VISITOR)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await visitor.socket(hello=False)
    assert refused.value.status == 429
    for ws in sockets:
        await ws.close()


# -- inbound ----------------------------------------------------------------------------------


async def test_visitor_message_reaches_the_handler(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    text = "こんにちは 🎉👨‍👩‍👧 مرحبا بالعالم שלום"
    ack = await send_text(ws, text, client_id="abc")
    event = await harness.recorder.next()
    assert isinstance(event, IncomingMessage)
    assert event.chat == ChatRef("webchat", ChatKind.PRIVATE, visitor.visitor_id)
    assert event.sender.platform == "webchat" and event.sender.id == visitor.visitor_id
    assert event.sender.display_name is None
    assert event.sender.language_code == "en"  # from the hello
    assert event.text == text  # emoji, ZWJ sequences and right-to-left script intact
    assert event.message_id == ack["id"] and ack["client_id"] == "abc"
    assert event.date == datetime.fromtimestamp(harness.clock.now, UTC)
    assert event.addressed_to_bot and event.command is None
    await ws.close()


async def test_language_falls_back_to_accept_language(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket(
        hello=False, headers={"Accept-Language": "fr;q=0.2, zh-TW,zh;q=0.9,en;q=0.5"}
    )
    await send_text(ws, "你好")
    event = await harness.recorder.message()
    assert event.sender.language_code == "zh-tw"
    await ws.close()

    ws = await visitor.socket(hello=False)  # neither: the configured default
    await send_text(ws, "hi")
    assert (await harness.recorder.message()).sender.language_code == "ja"
    await ws.close()


async def test_commands_are_parsed_like_telegram(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    await send_text(ws, "/start campaign_42")
    event = await harness.recorder.next()
    assert isinstance(event, IncomingMessage)
    assert event.command == "start" and event.command_args == "campaign_42"
    await ws.close()


async def test_visitor_message_is_echoed_to_its_other_tabs(harness: Harness) -> None:
    visitor = await harness.visitor()
    tab1, tab2 = await visitor.socket(), await visitor.socket()
    ack = await send_text(tab1, "from tab one", client_id="t1")
    echo = await receive(tab2)
    assert echo["type"] == "message" and echo["sender"] == "visitor"
    assert echo["id"] == ack["id"] and echo["text"] == "from tab one"
    await tab1.close()
    await tab2.close()


async def test_a_slow_handler_does_not_block_the_socket_and_order_is_kept(
    harness: Harness,
) -> None:
    release = asyncio.Event()
    handled: list[str] = []
    done = asyncio.Event()

    async def slow(event: Event) -> None:
        assert isinstance(event, IncomingMessage)
        if event.text == "first":
            await release.wait()
        handled.append(event.text)
        if len(handled) == 2:
            done.set()

    harness.platform.set_handler(slow)
    visitor = await harness.visitor()
    ws = await visitor.socket()
    await send_text(ws, "first", client_id="1")
    await send_text(ws, "second", client_id="2")  # acked while "first" is still being handled
    assert handled == []
    release.set()
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert handled == ["first", "second"]
    await ws.close()


async def test_a_failing_handler_does_not_break_the_socket(harness: Harness) -> None:
    seen: list[str] = []

    async def flaky(event: Event) -> None:
        assert isinstance(event, IncomingMessage)
        seen.append(event.text)
        if event.text == "boom":
            raise RuntimeError("handler bug")
        await harness.recorder(event)

    harness.platform.set_handler(flaky)
    visitor = await harness.visitor()
    ws = await visitor.socket()
    await send_text(ws, "boom", client_id="1")
    await send_text(ws, "fine", client_id="2")
    event = await harness.recorder.next()
    assert isinstance(event, IncomingMessage) and event.text == "fine"
    assert seen == ["boom", "fine"]
    await ws.close()


# -- outbound ---------------------------------------------------------------------------------


async def test_send_part_reaches_every_tab_of_that_visitor_only(harness: Harness) -> None:
    alice, bob = await harness.visitor(), await harness.visitor()
    assert alice.visitor_id != bob.visitor_id
    alice_tabs = [await alice.socket(), await alice.socket()]
    bob_tab = await bob.socket()

    message = OutgoingMessage(text="Hello 🌸 مرحبا", sender="advisor:Aiko", reply_to="m0")
    sent = await harness.platform.send_part(alice.chat, message.text, message, with_extras=True)
    for tab in alice_tabs:
        frame = await receive(tab)
        assert frame == {
            "type": "message",
            "id": sent.platform_message_id,
            "text": "Hello 🌸 مرحبا",
            "format": "plain",
            "buttons": [],
            "image": None,
            "sender": "advisor:Aiko",
            "reply_to": "m0",
            "ts": harness.clock.now,
        }
    # Bob's socket's next frame is his own message: Alice's never reached him.
    bobs = OutgoingMessage(text="for bob")
    await harness.platform.send_part(bob.chat, bobs.text, bobs, with_extras=True)
    assert (await receive(bob_tab))["text"] == "for bob"
    for ws in (*alice_tabs, bob_tab):
        await ws.close()


async def test_send_part_without_extras_sends_text_only(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    message = OutgoingMessage(
        text="part one",
        buttons=[[Button("Yes", callback_data="yes")]],
        image=Image(url="https://cdn.example/p.png"),
        reply_to="m1",
        format="html",
    )
    await harness.platform.send_part(visitor.chat, "part one", message, with_extras=False)
    frame = await receive(ws)
    assert frame["text"] == "part one" and frame["format"] == "html"
    assert frame["buttons"] == [] and frame["image"] is None
    assert frame["reply_to"] == "m1"  # the first part of a split text still replies

    await harness.platform.send_part(visitor.chat, "part two", message, with_extras=True)
    frame = await receive(ws)
    assert frame["image"] == {"url": "https://cdn.example/p.png"}
    assert frame["buttons"][0][0]["callback_data"] == "yes"
    await ws.close()


async def test_send_part_to_a_visitor_without_sockets_succeeds(harness: Harness) -> None:
    chat = ChatRef("webchat", ChatKind.PRIVATE, new_visitor_id())
    sent = await harness.platform.send_part(
        chat, "later", OutgoingMessage("later"), with_extras=True
    )
    assert sent.platform_message_id


@pytest.mark.parametrize(
    "chat",
    [
        ChatRef("webchat", ChatKind.PRIVATE, "not-a-visitor"),
        ChatRef("webchat", ChatKind.PRIVATE, "ABCDEF" * 6),
        ChatRef("webchat", ChatKind.GROUP, "0" * 32),
        ChatRef("telegram", ChatKind.PRIVATE, "0" * 32),
    ],
)
async def test_send_part_to_an_unknown_chat_fails_permanently(
    harness: Harness, chat: ChatRef
) -> None:
    with pytest.raises(PermanentSendError, match="chat not found"):
        await harness.platform.send_part(chat, "hi", OutgoingMessage("hi"), with_extras=True)


async def test_send_part_refuses_what_a_browser_must_not_get(harness: Harness) -> None:
    chat = ChatRef("webchat", ChatKind.PRIVATE, new_visitor_id())
    send = harness.platform.send_part
    bad_button = OutgoingMessage("x", buttons=[[Button("Go", url="javascript:alert(1)")]])
    with pytest.raises(MarkupError):
        await send(chat, "x", bad_button, with_extras=True)
    with pytest.raises(MarkupError):
        await send(
            chat, "x", OutgoingMessage("x", image=Image(file_id="tg-only")), with_extras=True
        )
    with pytest.raises(MarkupError):
        await send(chat, "x", OutgoingMessage("x", image=Image(data=b"GIF? no")), with_extras=True)
    with pytest.raises(PermanentSendError, match="too long"):
        await send(chat, "x" * 8001, OutgoingMessage("x" * 8001), with_extras=True)
    with pytest.raises(PermanentSendError, match="empty"):
        await send(chat, " ", OutgoingMessage(" "), with_extras=True)


async def test_image_bytes_go_out_as_a_data_url(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    message = OutgoingMessage("", image=Image(data=PNG))
    await harness.platform.send_part(visitor.chat, "", message, with_extras=True)
    frame = await receive(ws)
    assert frame["image"]["url"].startswith("data:image/png;base64,")
    await ws.close()


async def test_a_failing_bus_is_a_transient_send_error(harness: Harness) -> None:
    class BrokenBus(InMemoryEventBus):
        async def publish(self, topic: str, event: dict[str, Any]) -> None:
            raise ConnectionError("redis went away")

    platform = WebChatPlatform(events=BrokenBus(), secret=SECRET)
    chat = ChatRef("webchat", ChatKind.PRIVATE, new_visitor_id())
    with pytest.raises(TransientSendError):
        await platform.send_part(chat, "hi", OutgoingMessage("hi"), with_extras=True)


# -- callbacks --------------------------------------------------------------------------------


async def test_callback_round_trip(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    message = OutgoingMessage(
        "Was this helpful?",
        buttons=[[Button("👍", callback_data="kb:yes"), Button("👎", callback_data="kb:no")]],
    )
    sent = await harness.platform.send_part(visitor.chat, message.text, message, with_extras=True)
    frame = await receive(ws)
    button = frame["buttons"][0][1]
    assert button["text"] == "👎" and button["callback_data"] == "kb:no"

    await ws.send_json(
        {
            "type": "callback",
            "data": button["callback_data"],
            "message_id": frame["id"],
            "sig": button["sig"],
            "client_id": "press-1",
        }
    )
    ack = await receive_type(ws, "ack")
    event = await harness.recorder.next()
    assert isinstance(event, Callback)
    assert event.chat == visitor.chat and event.sender.id == visitor.visitor_id
    assert event.data == "kb:no" and event.message_id == sent.platform_message_id
    assert ack == {
        "type": "ack",
        "client_id": "press-1",
        "id": event.callback_id,
        "ts": harness.clock.now,
    }

    await harness.platform.answer_callback(event, "Thanks!")
    answer = await receive(ws)
    assert answer == {
        "type": "callback_answer",
        "callback_id": event.callback_id,
        "text": "Thanks!",
    }
    await ws.close()


async def test_forged_callbacks_are_refused(harness: Harness) -> None:
    alice, mallory = await harness.visitor(), await harness.visitor()
    alice_ws, mallory_ws = await alice.socket(), await mallory.socket()
    message = OutgoingMessage("Admin", buttons=[[Button("Approve", callback_data="approve:1")]])
    await harness.platform.send_part(alice.chat, "Admin", message, with_extras=True)
    frame = await receive(alice_ws)
    sig = frame["buttons"][0][0]["sig"]

    forgeries = [
        {"data": "approve:2", "message_id": frame["id"], "sig": sig},  # other data
        {"data": "approve:1", "message_id": "other", "sig": sig},  # other message
        {"data": "approve:1", "message_id": frame["id"]},  # no signature
        {"data": "approve:1", "message_id": frame["id"], "sig": 42},
    ]
    for forged in forgeries:
        await alice_ws.send_json({"type": "callback", **forged})
        assert (await receive(alice_ws))["code"] == "invalid_callback"
    # Alice's genuine button, replayed from Mallory's browser.
    await mallory_ws.send_json(
        {"type": "callback", "data": "approve:1", "message_id": frame["id"], "sig": sig}
    )
    assert (await receive(mallory_ws))["code"] == "invalid_callback"
    assert harness.recorder.queue.empty()
    await alice_ws.close()
    await mallory_ws.close()


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "bad_json"),
        ('{"type": "message", ', "bad_json"),
        ("[" * 5000 + "]" * 5000, "bad_json"),  # nested deeper than the JSON parser goes
        ("[1, 2]", "bad_frame"),
        ('"message"', "bad_frame"),
        ('{"text": "no type"}', "unknown_type"),
        ('{"type": "typing"}', "unknown_type"),
        ('{"type": "message"}', "missing_text"),
        ('{"type": "message", "text": 42}', "missing_text"),
        ('{"type": "message", "text": null}', "missing_text"),
        ('{"type": "message", "text": ""}', "empty_text"),
        ('{"type": "message", "text": " \\n\\t\\u3000 "}', "empty_text"),
        ('{"type": "message", "text": "a\\u0000b"}', "invalid_text"),
        ('{"type": "message", "text": "lone \\ud83d surrogate"}', "invalid_text"),
        ('{"type": "message", "text": "x", "client_id": {"a": 1}}', "bad_frame"),
        ('{"type": "callback"}', "missing_data"),
        ('{"type": "callback", "data": ""}', "missing_data"),
        ('{"type": "callback", "data": "x", "message_id": 5}', "bad_frame"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_lives_on(
    harness: Harness, frame: str, code: str
) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    await ws.send_str(frame)
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await send_text(ws, "still fine")
    event = await harness.recorder.next()
    assert isinstance(event, IncomingMessage) and event.text == "still fine"
    await ws.close()


async def test_binary_frames_are_refused(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    await ws.send_bytes(b"\x00\x01binary")
    assert (await receive(ws))["code"] == "binary_not_supported"
    await send_text(ws, "text works")
    await ws.close()


async def test_text_over_max_text_is_rejected_not_truncated(make_harness: HarnessFactory) -> None:
    harness = await make_harness(max_text=100)
    visitor = await harness.visitor()
    ws = await visitor.socket()
    await ws.send_json({"type": "message", "text": "あ" * 101, "client_id": "long"})
    error = await receive(ws)
    assert error["code"] == "text_too_long" and error["client_id"] == "long"
    await send_text(ws, "🎉" * 100)  # exactly the limit, in characters
    assert (await harness.recorder.message()).text == "🎉" * 100
    await ws.close()


async def test_huge_frames_close_that_socket_only(harness: Harness) -> None:
    alice, bob = await harness.visitor(), await harness.visitor()
    alice_ws, bob_ws = await alice.socket(), await bob.socket()
    await alice_ws.send_json({"type": "message", "text": "x" * 200_000})
    msg = await alice_ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.CLOSE and msg.data == WSCloseCode.MESSAGE_TOO_BIG
    await send_text(bob_ws, "bob is unaffected")
    assert (await harness.recorder.message()).text == "bob is unaffected"
    again = await alice.socket()  # and alice may reconnect
    await again.close()
    await bob_ws.close()


async def test_flooding_is_rate_limited_per_visitor(harness: Harness) -> None:
    alice, bob = await harness.visitor(), await harness.visitor()
    alice_ws, bob_ws = await alice.socket(), await bob.socket()  # each hello used one frame
    for n in range(RATE_LIMIT - 1):
        await send_text(alice_ws, f"msg {n}", client_id=str(n))
    await alice_ws.send_json({"type": "message", "text": "one too many", "client_id": "x"})
    error = await receive_type(alice_ws, "error")
    assert error["code"] == "rate_limited" and error["client_id"] == "x"

    await send_text(bob_ws, "bob is unaffected")  # another visitor has his own window
    harness.clock.advance(RATE_PERIOD)
    await send_text(alice_ws, "after the window")
    for n in range(RATE_LIMIT - 1):
        assert (await harness.recorder.message()).text == f"msg {n}"
    assert (await harness.recorder.message()).text == "bob is unaffected"
    assert (await harness.recorder.message()).text == "after the window"
    await alice_ws.close()
    await bob_ws.close()


async def test_the_rate_limit_spans_all_tabs_of_a_visitor(harness: Harness) -> None:
    visitor = await harness.visitor()
    tab1, tab2 = await visitor.socket(), await visitor.socket()  # 2 frames used
    for n in range(RATE_LIMIT - 2):
        await send_text(tab1 if n % 2 else tab2, f"m{n}", client_id=str(n))
    await tab1.send_json({"type": "message", "text": "over", "client_id": "over"})
    assert (await receive_type(tab1, "error"))["code"] == "rate_limited"
    await tab1.close()
    await tab2.close()


async def test_a_client_ignoring_rate_limit_errors_is_disconnected(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    for _ in range(RATE_LIMIT - 1):
        await ws.send_json({"type": "ping"})
        assert (await receive(ws))["code"] == "unknown_type"
    for _ in range(RATE_LIMIT):
        await ws.send_json({"type": "ping"})
        assert (await receive(ws))["code"] == "rate_limited"
    await ws.send_json({"type": "ping"})
    msg = await ws.receive(timeout=TIMEOUT)
    assert msg.type is WSMsgType.CLOSE and msg.data == WSCloseCode.POLICY_VIOLATION


# -- lifecycle --------------------------------------------------------------------------------


async def test_stop_closes_sockets_and_refuses_new_ones(harness: Harness) -> None:
    alice, bob = await harness.visitor(), await harness.visitor()
    sockets = [await alice.socket(), await alice.socket(), await bob.socket()]
    await harness.platform.stop()
    for ws in sockets:
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type is WSMsgType.CLOSE and msg.data == WSCloseCode.GOING_AWAY
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await alice.socket(hello=False)
    assert refused.value.status == 503
    assert harness.bus.subscriber_count(f"webchat:{alice.visitor_id}") == 0


async def test_closing_a_socket_unsubscribes_it(harness: Harness) -> None:
    visitor = await harness.visitor()
    ws = await visitor.socket()
    topic = f"webchat:{visitor.visitor_id}"
    assert harness.bus.subscriber_count(topic) == 1
    await ws.close()
    await send_text(await visitor.socket(), "reconnected")  # the old socket is gone...
    assert harness.bus.subscriber_count(topic) == 1  # ...and so is its subscription
