"""The console over the real composition root (SQLite, a fake chat platform), driven through
aiohttp's test client: each signed-in advisor is a client with its own cookie jar."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from bot.app import KizunaApp
from bot.handoff.accounts import AccountInput
from config import load_settings
from console import CONSOLE_KEY
from console.site import Console
from models.chat import ChatKind
from models.repositories import ChatRepository, ContactRepository, ConversationRepository
from tests.fakes import FakePlatform, FakeSleep, ManualClock

ALWAYS = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
PASSWORD = "correct horse battery"
TOKEN = "987654:SECRET-bot-token-never-shown"
WEB_SECRET = "web-secret-key-that-signs-cookies-0123456789"
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)"')
_LOGIN = re.compile(r'name="login_token" value="([^"]*)"')


class WallClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@dataclass
class Browser:
    """One advisor's client: cookies, the CSRF token of their session."""

    client: TestClient[Any, Any]
    csrf: str = ""

    async def login(self, username: str, password: str = PASSWORD, *,
                    next_url: str = "") -> ClientResponse:
        page = await self.client.get("/console/login")
        token = _LOGIN.search(await page.text())
        assert token, "no login token on the login page"
        resp = await self.client.post("/console/login", data={
            "username": username, "password": password, "login_token": token.group(1),
            "next": next_url}, allow_redirects=False)
        if resp.status == 303:
            home = await self.client.get("/console/")
            found = _CSRF.search(await home.text())
            assert found
            self.csrf = found.group(1)
        return resp

    async def api(self, method: str, path: str, json: Any = None, *, csrf: bool = True,
                  **kw: Any) -> ClientResponse:
        headers = dict(kw.pop("headers", {}))
        if csrf and method != "GET":
            headers["X-CSRF-Token"] = self.csrf
        return await self.client.request(method, "/console" + path, json=json,
                                         headers=headers, **kw)

    async def ok(self, method: str, path: str, json: Any = None, **kw: Any) -> Any:
        resp = await self.api(method, path, json, **kw)
        body = await resp.json()
        assert resp.status == 200, (resp.status, body)
        return body


@dataclass
class World:
    app: KizunaApp
    server: TestServer
    platform: FakePlatform
    clock: ManualClock
    now: WallClock
    browsers: list[Browser] = field(default_factory=list)

    @property
    def console(self) -> Console:
        return self.app.web[CONSOLE_KEY]

    @property
    def desk(self) -> Any:
        return self.app.handoff

    async def browser(self) -> Browser:
        client: TestClient[Any, Any] = TestClient(self.server)
        await client.start_server()
        b = Browser(client)
        self.browsers.append(b)
        return b

    async def advisor(self, username: str, *, role: str = "advisor", on_shift: bool = False,
                      **kw: Any) -> int:
        aid = await self.app.accounts.create(AccountInput(
            username=username, display_name=kw.pop("display_name", username.title()),
            password=PASSWORD, role=role, **kw))
        if on_shift:
            await self.desk.set_shift(aid, True)
        return aid

    async def signed_in(self, username: str, **kw: Any) -> tuple[Browser, int]:
        aid = await self.advisor(username, **kw)
        b = await self.browser()
        resp = await b.login(username)
        assert resp.status == 303, await resp.text()
        return b, aid

    async def customer(self, external_id: str, name: str = "Customer") -> tuple[int, int]:
        """(conversation id, contact id) of a private chat on the fake platform."""
        async with self.app.db.session() as session:
            identity, _ = await ContactRepository(session).identify(
                "fake", external_id, display_name=name)
            chat = await ChatRepository(session).upsert("fake", external_id, ChatKind.PRIVATE)
            conv = await ConversationRepository(session).current(chat, identity.contact_id)
            return conv.id, identity.contact_id

    async def waiting(self, external_id: str, name: str = "Customer",
                      question: str = "Where is my order?") -> int:
        conv, _ = await self.customer(external_id, name)
        await self.desk.request(conv, trigger="button", question=question, language="en")
        return conv


@pytest.fixture
async def world(tmp_path: Any) -> AsyncIterator[World]:
    settings = load_settings(
        data_dir=str(tmp_path / "data"),
        database={"url": f"sqlite:///{tmp_path}/console.db"},
        web={"host": "127.0.0.1", "port": 0, "secret_key": WEB_SECRET},
        scheduler={"enabled": False},
        knowledge_base={"data_dir": str(tmp_path / "kb")},
        bot={"default_language": "en"},
        telegram={"token": TOKEN},
        console={"create_initial_admin": False, "max_upload_bytes": 4096},
        handoff={"reassign_loop": False,
                 "business_hours": {"timezone": "UTC", "weekly": ALWAYS}},
    )
    clock = ManualClock()
    app = KizunaApp(settings, clock=clock, sleep=FakeSleep(clock), with_knowledge_base=False)
    platform = FakePlatform()
    app.add_platform(platform)
    await app.db.upgrade()
    now = WallClock()
    app.handoff.now = now
    app.web[CONSOLE_KEY].sessions.now = now
    server = TestServer(app.web)
    await server.start_server()
    w = World(app, server, platform, clock, now)
    try:
        yield w
    finally:
        for b in w.browsers:
            await b.client.close()
        await server.close()
        await app.db.dispose()
