"""Signing in and out: the login form (rate-limited, CSRF-protected), sessions, logout."""

from __future__ import annotations

import math
import re
import secrets

from aiohttp import web

from console.auth import COOKIE, LOGIN_COOKIE, Who, same_secret
from console.html import Markup, fmt, render
from console.site import Console

_NEXT_RE = re.compile(r"/[A-Za-z0-9/_\-.~%?=&]*")


def register(c: Console) -> None:
    def safe_next(value: str | None) -> str:
        """Only a console page of this site (no open redirect, no login loop)."""
        home = c.url("/")
        if not value or not _NEXT_RE.fullmatch(value) or "//" in value:
            return home
        if not value.startswith(c.url("/")) or value.startswith(
                (c.url("/login"), c.url("/logout"), c.url("/api/"), c.url("/ws"))):
            return home
        return value

    def login_page(request: web.Request, *, message: str = "", username: str = "",
                   next_url: str = "", status: int = 200) -> web.Response:
        token = secrets.token_urlsafe(24)
        body = render(
            "login.html", action=c.url("/login"), login_token=token,
            next=safe_next(next_url), username=username,
            message=fmt('<p class="alert" role="alert">{}</p>', message) if message
            else Markup(""))
        response = c.render(request, None, title="Sign in", body=body, page="login",
                            status=status)
        response.set_cookie(LOGIN_COOKIE, token, path=c.url("/login"), httponly=True,
                            samesite="Strict", secure=c.cookie_secure, max_age=3600)
        return response

    @c.public("GET", "/login")
    async def show_login(request: web.Request) -> web.StreamResponse:
        if await c.sessions.lookup(request.cookies.get(COOKIE)) is not None:
            raise web.HTTPSeeOther(safe_next(request.query.get("next")))
        return login_page(request, next_url=request.query.get("next", ""))

    @c.public("POST", "/login")
    async def do_login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        username = str(form.get("username") or "").strip()[:64]
        password = str(form.get("password") or "")
        next_url = str(form.get("next") or "")
        if not same_secret(request.cookies.get(LOGIN_COOKIE), str(form.get("login_token") or "")):
            return login_page(request, username=username, next_url=next_url, status=403,
                              message="The sign-in form expired. Please try again.")
        wait = await c.login_limiter.attempt(username, request.remote)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            response = login_page(
                request, username=username, next_url=next_url, status=429,
                message=f"Too many sign-in attempts. Please wait {seconds} seconds and try "
                        "again.")
            response.headers["Retry-After"] = str(seconds)
            return response
        advisor_id = await c.accounts.authenticate(username, password)
        if advisor_id is None:
            return login_page(request, username=username, next_url=next_url, status=401,
                              message="Wrong username or password.")
        token = await c.sessions.create(advisor_id,
                                        user_agent=request.headers.get("User-Agent"))
        response = web.HTTPSeeOther(safe_next(next_url))
        response.set_cookie(COOKIE, token, path=c.url("/"), httponly=True, samesite="Strict",
                            secure=c.cookie_secure)
        response.del_cookie(LOGIN_COOKIE, path=c.url("/login"))
        raise response

    @c.public("GET", "")
    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(c.url("/"))

    @c.page("/logout", method="POST")
    async def logout(request: web.Request, who: Who) -> web.StreamResponse:
        await c.sessions.end(who.session_key)
        for hook in c.logout_hooks:
            await hook(who.session_key)
        response = web.HTTPSeeOther(c.url("/login"))
        response.del_cookie(COOKIE, path=c.url("/"))
        raise response

    @c.api("POST", "/api/logout")
    async def api_logout(request: web.Request, who: Who) -> web.StreamResponse:
        await c.sessions.end(who.session_key)
        for hook in c.logout_hooks:
            await hook(who.session_key)
        response = c.json({"ok": True})
        response.del_cookie(COOKIE, path=c.url("/"))
        return response
