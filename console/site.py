"""The console's frame: how a page or API route is declared, guarded and answered.

Every console route is added through :class:`Console` (``page``, ``api``, ``socket`` or
``public``), which wraps the handler so that it

* requires a live session (pages redirect to the login, API and socket routes answer 401),
* requires the route's minimum role (403 otherwise),
* requires the session's CSRF token on every state-changing request (``X-CSRF-Token`` header
  or a ``csrf_token`` form field) and a same-site ``Origin``,
* turns desk errors into 400/403/404 (JSON for API routes, a page for pages),
* carries the security headers (CSP without inline scripts, ``X-Frame-Options: DENY``,
  ``no-store``),
* never lets a configured secret through (:meth:`Console.redact` on every page and JSON).

See ``console/README.md`` for adding a page.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bot.core.shared import EventBus, RateLimiter
from bot.handoff.accounts import AccountError, Accounts
from bot.handoff.service import HandoffError, HandoffService, NotAllowed, NotFound
from bot.web import same_origin
from config.settings import ConsoleSettings
from console.auth import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SAFE_METHODS,
    LoginLimiter,
    Sessions,
    Who,
    same_secret,
    security_headers,
)
from console.html import Markup, escape, fmt, join, render
from models import Database
from models.advisors import Role

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_STATIC_TYPES = {".js": "application/javascript", ".css": "text/css",
                 ".svg": "image/svg+xml", ".png": "image/png"}
_DATA_KEY = re.compile(r"[a-z][a-z0-9-]{0,40}")
Handler = Callable[[web.Request, Who], Awaitable[web.StreamResponse]]
PublicHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConsoleError(Exception):
    """A request refused with ``status`` and a message the advisor may read."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RouteInfo:
    method: str
    path: str  # full path, e.g. /console/api/inbox
    kind: str  # page / api / socket / public
    role: Role | None  # minimum role; None for public routes


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    path: str  # below the prefix, e.g. "/performance"
    role: Role


@dataclass
class Console:
    """The web console: its services, settings and route table (one per app)."""

    web_app: web.Application
    desk: HandoffService
    accounts: Accounts
    db: Database
    settings: ConsoleSettings
    rate_limiter: RateLimiter
    events: EventBus
    cookie_secure: bool = False
    timezone: str = "UTC"
    secrets: Sequence[str] = ()  # values that must never reach a page (tokens, keys)
    prefix: str = "/console"
    sessions: Sessions = field(init=False)
    login_limiter: LoginLimiter = field(init=False)
    routes: list[RouteInfo] = field(init=False, default_factory=list)
    nav: list[NavItem] = field(init=False, default_factory=list)
    extras: dict[str, Any] = field(init=False, default_factory=dict)  # per-module state
    # called with the session key when a session ends (live sockets close)
    logout_hooks: list[Callable[[str], Awaitable[None]]] = field(init=False,
                                                                 default_factory=list)
    _assets: dict[str, tuple[bytes, str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.db, hours=self.settings.session_hours)
        self.login_limiter = LoginLimiter(
            self.rate_limiter, per_minute=self.settings.login_attempts_per_minute)
        self.secrets = tuple(s for s in self.secrets if s and len(s) >= 8)
        for path in sorted(STATIC_DIR.iterdir()):
            if path.suffix in _STATIC_TYPES:
                body = path.read_bytes()
                self._assets[path.name] = (body, hashlib.sha256(body).hexdigest()[:12])
        self.public("GET", "/static/{name}")(self._static)

    # ------------------------------------------------------------------ declaring routes
    def url(self, path: str = "/") -> str:
        return self.prefix + path

    def page(self, path: str, *, role: Role = Role.ADVISOR, method: str = "GET",
             nav: str | None = None) -> Callable[[Handler], Handler]:
        """An HTML page (or a form post answered with a redirect) for ``role`` and above;
        ``nav`` adds a link to the top bar for those who may open it."""
        if nav is not None:
            self.nav.append(NavItem(nav, path, role))
        return self._route(method, path, kind="page", role=role)

    def api(self, method: str, path: str, *,
            role: Role = Role.ADVISOR) -> Callable[[Handler], Handler]:
        """A JSON route (``path`` below the prefix, conventionally ``/api/...``)."""
        return self._route(method, path, kind="api", role=role)

    def socket(self, path: str, *, role: Role = Role.ADVISOR) -> Callable[[Handler], Handler]:
        """A WebSocket endpoint: session and ``Origin`` checked before the upgrade."""
        return self._route("GET", path, kind="socket", role=role)

    def public(self, method: str, path: str) -> Callable[[PublicHandler], PublicHandler]:
        """A route that needs no session (the login page, static files)."""

        def decorator(handler: PublicHandler) -> PublicHandler:
            full = self.url(path)

            async def wrapped(request: web.Request) -> web.StreamResponse:
                try:
                    if request.method not in SAFE_METHODS and not same_origin(request):
                        raise ConsoleError(403, "cross-site request refused")
                    response = await handler(request)
                    static = request.path.startswith(self.url("/static/"))
                except ConsoleError as exc:
                    response, static = self.error_page(request, None, exc.status,
                                                       exc.message), False
                except web.HTTPException as exc:
                    security_headers(request, exc)
                    raise
                security_headers(request, response, cacheable=static)
                return response

            self.web_app.router.add_route(method, full, wrapped)
            self.routes.append(RouteInfo(method, full, "public", None))
            return handler

        return decorator

    def _route(self, method: str, path: str, *, kind: str,
               role: Role) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            full = self.url(path)

            async def wrapped(request: web.Request) -> web.StreamResponse:
                return await self._guarded(request, handler, kind=kind, role=role)

            self.web_app.router.add_route(method, full, wrapped)
            self.routes.append(RouteInfo(method.upper(), full, kind, role))
            return handler

        return decorator

    async def _guarded(self, request: web.Request, handler: Handler, *, kind: str,
                       role: Role) -> web.StreamResponse:
        who: Who | None = None
        try:
            unsafe = request.method not in SAFE_METHODS
            if (unsafe or kind == "socket") and not same_origin(request):
                raise ConsoleError(403, "cross-site request refused")
            who = await self.sessions.lookup(request.cookies.get(COOKIE))
            if who is None:
                if kind == "page" and not unsafe:
                    target = request.path_qs
                    raise web.HTTPSeeOther(self.url("/login") + "?next=" + quote(target, safe=""))
                raise ConsoleError(401, "please sign in")
            if not who.can(role):
                raise ConsoleError(403, "your role does not allow this page")
            if unsafe:
                await self._check_csrf(request, who)
            response = await handler(request, who)
        except ConsoleError as exc:
            response = self._error(request, who, kind, exc.status, exc.message)
        except NotAllowed as exc:
            response = self._error(request, who, kind, 403, str(exc))
        except NotFound as exc:
            response = self._error(request, who, kind, 404, str(exc))
        except (HandoffError, AccountError) as exc:
            response = self._error(request, who, kind, 400, str(exc))
        except web.HTTPException as exc:
            security_headers(request, exc)
            raise
        if not (kind == "socket" and response.prepared):
            security_headers(request, response)
        return response

    async def _check_csrf(self, request: web.Request, who: Who) -> None:
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
        if not same_secret(who.csrf_token, given):
            raise ConsoleError(403, "the form's security token is missing or out of date; "
                                    "reload the page and try again")

    def _error(self, request: web.Request, who: Who | None, kind: str, status: int,
               message: str) -> web.Response:
        if kind == "page":
            return self.error_page(request, who, status, message)
        return self.json({"error": message}, status=status)

    # ------------------------------------------------------------------ answering
    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def json(self, data: Any, *, status: int = 200) -> web.Response:
        body = json.dumps(data, ensure_ascii=False, default=_json_default)
        return web.Response(text=self.redact(body), status=status,
                            content_type="application/json")

    def dumps(self, data: Any) -> str:
        """JSON text for a socket frame (redacted like every response)."""
        return self.redact(json.dumps(data, ensure_ascii=False, default=_json_default))

    async def json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ConsoleError(400, "the request body must be JSON") from None
        if not isinstance(data, dict):
            raise ConsoleError(400, "the request body must be a JSON object")
        return data

    def asset(self, name: str) -> str:
        """The versioned URL of a file in ``console/static`` (cached for a year)."""
        _body, version = self._assets[name]
        return f"{self.url('/static/')}{name}?v={version}"

    def render(self, request: web.Request, who: Who | None, *, title: str, body: Markup,
               page: str, scripts: Iterable[str] = (), data: dict[str, Any] | None = None,
               status: int = 200) -> web.Response:
        """A full page in the console layout. ``data`` becomes ``data-*`` attributes on
        ``<body>`` (for the page's script); ``scripts`` are file names in ``static/``."""
        attrs = []
        data = dict(data or {})
        if who is not None:
            data.setdefault("advisor-id", who.advisor_id)
            data.setdefault("role", who.role.value)
        for key, value in data.items():
            if not _DATA_KEY.fullmatch(key):
                raise ValueError(f"bad data attribute name {key!r}")
            attrs.append(fmt(' data-{}="{}"', key, value))
        script_tags = join(fmt('<script src="{}" defer></script>', self.asset(s))
                           for s in scripts)
        if who is None:
            header = Markup("")
        else:
            links = join(fmt('<a href="{}"{}>{}</a>', self.url(n.path),
                             Markup(' aria-current="page"') if request.path == self.url(n.path)
                             else Markup(""), n.label)
                         for n in self.nav if who.can(n.role))
            header = render(
                "header.html", prefix=self.prefix, nav=links, name=who.display_name,
                role=who.role.value, csrf=who.csrf_token,
                shift_state="on" if who.on_shift else "off",
                shift_label="On shift" if who.on_shift else "Off shift")
        html = render("layout.html", title=title, csrf=who.csrf_token if who else "",
                      css=self.asset("console.css"), common_js=self.asset("console.js"),
                      scripts=script_tags, page=page, prefix=self.prefix, data=join(attrs),
                      header=header, body=body)
        return web.Response(text=self.redact(html), status=status, content_type="text/html",
                            charset="utf-8")

    def error_page(self, request: web.Request, who: Who | None, status: int,
                   message: str) -> web.Response:
        titles = {400: "Cannot do that", 401: "Please sign in", 403: "Not allowed",
                  404: "Not found", 413: "Too large", 415: "Unsupported file",
                  429: "Too many attempts"}
        title = titles.get(status, "Error")
        body = fmt('<section class="panel error"><h1>{}</h1><p>{}</p>'
                   '<p><a href="{}">Back to the inbox</a></p></section>',
                   title, message, self.url("/"))
        return self.render(request, who, title=title, body=body, page="error", status=status)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = self._assets.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, _version = found
        return web.Response(body=body, content_type=_STATIC_TYPES[Path(name).suffix],
                            charset="utf-8" if name.endswith((".js", ".css")) else None,
                            headers={"Cache-Control": "public, max-age=31536000, immutable"})


def path_int(request: web.Request, key: str) -> int:
    """An id from the URL path (``/conversations/{conversation_id}``); 404 unless digits."""
    value = request.match_info[key]
    if not value.isdigit() or len(value) > 18:
        raise ConsoleError(404, "not found")
    return int(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


__all__ = ["Console", "ConsoleError", "Markup", "NavItem", "RouteInfo", "Who", "escape",
           "fmt", "join", "path_int", "render"]
