"""Signing in and the guards every console route has: sessions, CSRF, roles, rate limits,
security headers, and no secret in what the browser gets."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import select
from yarl import URL

from console.auth import COOKIE
from models.advisors import ConsoleSession
from tests.console.conftest import PASSWORD, TOKEN, WEB_SECRET, World


async def test_login_with_the_right_password_opens_a_server_side_session(world: World) -> None:
    await world.advisor("aiko")
    b = await world.browser()
    resp = await b.login("aiko", next_url="/console/")
    assert resp.status == 303 and resp.headers["Location"] == "/console/"
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console/"
    token = cookie.value
    async with world.app.db.session() as s:
        rows = (await s.execute(select(ConsoleSession))).scalars().all()
    assert [r.token_hash for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert rows[0].expires_at == world.now.t.replace(hour=22)  # 12 hours (the default)
    page = await b.client.get("/console/")
    assert page.status == 200 and "Aiko" in await page.text()


async def test_wrong_password_and_unknown_user_get_the_same_answer(world: World) -> None:
    await world.advisor("aiko")
    b = await world.browser()
    wrong = await b.login("aiko", "not the password")
    unknown = await b.login("nobody", PASSWORD)
    assert wrong.status == unknown.status == 401
    assert "Wrong username or password" in await wrong.text()
    assert "Wrong username or password" in await unknown.text()
    assert COOKIE not in wrong.cookies
    assert (await b.client.get("/console/api/inbox")).status == 401


async def test_login_attempts_are_rate_limited_per_username_and_address(world: World) -> None:
    await world.advisor("aiko")
    b = await world.browser()
    for _ in range(5):  # login_attempts_per_minute = 5
        assert (await b.login("aiko", "guess")).status == 401
    limited = await b.login("aiko", PASSWORD)  # even the right password waits
    assert limited.status == 429
    assert "Too many sign-in attempts" in await limited.text()
    assert int(limited.headers["Retry-After"]) >= 1
    other = await b.login("someone-else", "guess")  # another name from the same address
    assert other.status == 401
    world.clock.advance(60)
    assert (await b.login("aiko", PASSWORD)).status == 303
    # one address trying many names is stopped too (4x the per-name allowance)
    world.clock.advance(60)
    b = await world.browser()
    for i in range(20):
        assert (await b.login(f"user{i}", "guess")).status == 401
    assert (await b.login("aiko", PASSWORD)).status == 429


async def test_the_login_form_needs_its_own_token(world: World) -> None:
    await world.advisor("aiko")
    b = await world.browser()
    resp = await b.client.post("/console/login", data={"username": "aiko",
                                                       "password": PASSWORD})
    assert resp.status == 403 and COOKIE not in resp.cookies
    cross = await b.client.post("/console/login", data={"username": "aiko"},
                                headers={"Origin": "https://evil.example"})
    assert cross.status == 403


async def test_every_route_needs_a_session(world: World) -> None:
    b = await world.browser()
    guarded = [r for r in world.console.routes if r.kind != "public"]
    assert len(guarded) >= 3
    for route in guarded:
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        resp = await b.client.request(route.method, path, allow_redirects=False)
        if route.kind == "page" and route.method == "GET":
            assert resp.status == 303, route
            assert resp.headers["Location"].startswith("/console/login?next=")
        else:
            assert resp.status == 401, route
        assert resp.headers["X-Frame-Options"] == "DENY"


async def test_state_changes_need_the_csrf_token(world: World) -> None:
    b, _ = await world.signed_in("aiko")
    missing = await b.api("POST", "/api/shift", {"on_shift": True}, csrf=False)
    assert missing.status == 403 and "security token" in (await missing.json())["error"]
    wrong = await b.api("POST", "/api/shift", {"on_shift": True},
                        headers={"X-CSRF-Token": "x" * 43}, csrf=False)
    assert wrong.status == 403
    cross = await b.api("POST", "/api/shift", {"on_shift": True},
                        headers={"Origin": "https://evil.example"})
    assert cross.status == 403
    assert (await b.ok("POST", "/api/shift", {"on_shift": True})) == {"on_shift": True}
    # a plain form post carries it as a field (the sign-out button)
    out = await b.client.post("/console/logout", data={}, allow_redirects=False)
    assert out.status == 403
    out = await b.client.post("/console/logout", data={"csrf_token": b.csrf},
                              allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/console/login"
    assert (await b.client.get("/console/api/inbox")).status == 401


async def test_sessions_slide_and_expire(world: World) -> None:
    b, _ = await world.signed_in("aiko")
    world.now.advance(hours=11)
    assert (await b.client.get("/console/api/inbox")).status == 200  # extends to +12h
    world.now.advance(hours=11)
    assert (await b.client.get("/console/api/inbox")).status == 200
    world.now.advance(hours=12, seconds=1)
    assert (await b.client.get("/console/api/inbox")).status == 401
    async with world.app.db.session() as s:
        assert (await s.execute(select(ConsoleSession))).scalars().all() == []


async def test_a_deactivated_advisor_is_signed_out(world: World) -> None:
    b, _ = await world.signed_in("aiko")
    await world.app.accounts.deactivate("aiko")
    assert (await b.client.get("/console/api/inbox")).status == 401


async def test_pages_carry_security_headers_and_no_inline_script(world: World) -> None:
    b, _ = await world.signed_in("aiko")
    for path in ("/console/", "/console/login"):
        resp = await b.client.get(path, allow_redirects=False)
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    page = await (await b.client.get("/console/")).text()
    assert "no-store" in (await b.client.get("/console/")).headers["Cache-Control"]
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None  # every script is a file
    assert re.search(r"<[^>]+\son[a-z]+=", page) is None  # no inline handlers
    static = await b.client.get("/console/static/console.js")
    assert static.status == 200 and "immutable" in static.headers["Cache-Control"]
    assert (await b.client.get("/console/static/../auth.py")).status == 404


async def test_no_secret_reaches_a_page_or_json(world: World) -> None:
    b, aid = await world.signed_in("aiko", role="admin")
    token = b.client.session.cookie_jar.filter_cookies(
        world.server.make_url("/console/"))[COOKIE].value
    async with world.app.db.session() as s:
        from models.advisors import Advisor

        password_hash = (await s.get(Advisor, aid)).password_hash
    bodies = []
    for route in world.console.routes:
        if route.method != "GET" or "{" in route.path or route.kind == "socket":
            continue
        bodies.append(await (await b.client.get(route.path)).text())
    assert len(bodies) >= 3
    for text in bodies:
        for secret in (token, TOKEN, TOKEN.split(":")[1], WEB_SECRET, password_hash, PASSWORD):
            assert secret not in text


async def test_redaction_catches_a_secret_in_an_error_text(world: World) -> None:
    resp = world.console.json({"error": f"POST https://api.telegram.org/bot{TOKEN}/send"})
    assert TOKEN not in resp.text and "[redacted]" in resp.text


async def test_sign_in_returns_to_the_page_asked_for_and_nowhere_else(world: World) -> None:
    await world.advisor("aiko")
    conv = await world.waiting("100", "Tom")
    b = await world.browser()
    first = await b.client.get(f"/console/conversations/{conv}", allow_redirects=False)
    assert first.status == 303
    location = URL(first.headers["Location"])
    assert location.path == "/console/login"
    assert location.query["next"] == f"/console/conversations/{conv}"
    resp = await b.login("aiko", next_url=f"/console/conversations/{conv}")
    assert resp.headers["Location"] == f"/console/conversations/{conv}"
    for bad in ("//evil.example/x", "https://evil.example/", "/chat/demo", "/console/api/inbox",
                "/console/\\\\evil"):
        world.clock.advance(60)  # (the login rate limit)
        other = await world.browser()
        resp = await other.login("aiko", next_url=bad)
        assert resp.headers["Location"] == "/console/", bad
    # signed in, the login page sends you on
    again = await b.client.get("/console/login", allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/console/"


def test_templates_escape_everything_but_markup() -> None:
    from console.html import Markup, fmt, join

    assert fmt("<b>{}</b>", "<i>&'\"") == "<b>&lt;i&gt;&amp;&#x27;&quot;</b>"
    assert fmt("<b>{}</b>", Markup("<i>ok</i>")) == "<b><i>ok</i></b>"
    assert join(["<a>", Markup("<br>")]) == "&lt;a&gt;<br>"


def test_no_console_without_the_handoff_desk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bot.app import KizunaApp
    from config import load_settings
    from console import CONSOLE_KEY

    app = KizunaApp(load_settings(
        data_dir=str(tmp_path / "data"), database={"url": f"sqlite:///{tmp_path}/x.db"},
        scheduler={"enabled": False}, handoff={"enabled": False}), with_knowledge_base=False)
    assert app.handoff is None and CONSOLE_KEY not in app.web
    assert not any(r.resource and r.resource.canonical.startswith("/console")
                   for r in app.web.router.routes())
