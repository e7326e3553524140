"""Console security mechanisms: server-side sessions, CSRF tokens, roles, the login rate limit
and the response headers every console response carries.

Sessions: the browser holds a random token in an HttpOnly, SameSite=Strict cookie; the database
(``console_sessions``) holds only its SHA-256, the advisor, a per-session CSRF token and a
sliding expiry. Nothing here ever renders a token or a hash into a page.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import delete, select, update

from bot.core.shared import Rate, RateLimiter
from models import Database
from models.advisors import Advisor, ConsoleSession, Role
from models.base import utcnow

COOKIE = "kizuna_console"  # the session token
LOGIN_COOKIE = "kizuna_console_login"  # pre-login CSRF value (double submit on the login form)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOUCH_EVERY = timedelta(seconds=30)  # sliding expiry: write last_seen_at at most this often
IP_FACTOR = 4  # one address (an office) may try this many times the per-username attempts

_RANK = {Role.ADVISOR: 0, Role.MANAGER: 1, Role.ADMIN: 2}
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


def allows(role: Role, minimum: Role) -> bool:
    """Whether ``role`` may use a route open to ``minimum`` and above
    (advisor < manager < admin)."""
    return _RANK[role] >= _RANK[minimum]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Who:
    """The signed-in advisor of one request (what handlers see of the session)."""

    advisor_id: int
    username: str
    display_name: str
    role: Role
    senior: bool
    on_shift: bool
    csrf_token: str  # rendered into pages (meta tag, form fields): not a credential alone
    session_key: str  # sha256 of the session token: identifies the session server-side only

    def can(self, minimum: Role) -> bool:
        return allows(self.role, minimum)

    @property
    def sees_everything(self) -> bool:
        """Managers and admins see every open conversation, advisors only theirs and the
        queue."""
        return self.role is not Role.ADVISOR


class Sessions:
    """Server-side console sessions with a sliding expiry of ``hours``."""

    def __init__(self, db: Database, *, hours: float,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.lifetime = timedelta(hours=hours)
        self.now = now

    async def create(self, advisor_id: int, *, user_agent: str | None = None) -> str:
        """A new session; returns the token for the cookie (never stored)."""
        token = secrets.token_urlsafe(32)
        now = self.now()
        async with self.db.session() as session:
            await session.execute(delete(ConsoleSession).where(
                ConsoleSession.expires_at < now))
            session.add(ConsoleSession(
                token_hash=token_hash(token), advisor_id=advisor_id,
                csrf_token=secrets.token_urlsafe(32), created_at=now, last_seen_at=now,
                expires_at=now + self.lifetime, user_agent=(user_agent or "")[:256] or None))
        return token

    async def lookup(self, token: str | None) -> Who | None:
        """The advisor behind a cookie token, if the session is live and the advisor active;
        extends the session (sliding expiry)."""
        if not token or len(token) > 128:
            return None
        key = token_hash(token)
        now = self.now()
        async with self.db.session() as session:
            row = (await session.execute(
                select(ConsoleSession, Advisor).join(
                    Advisor, Advisor.id == ConsoleSession.advisor_id)
                .where(ConsoleSession.token_hash == key))).first()
            if row is None:
                return None
            sess, advisor = row
            if sess.expires_at <= now or not advisor.active:
                await session.delete(sess)
                return None
            if now - sess.last_seen_at >= TOUCH_EVERY:
                sess.last_seen_at = now
                sess.expires_at = now + self.lifetime
            return Who(advisor_id=advisor.id, username=advisor.username,
                       display_name=advisor.display_name, role=advisor.role,
                       senior=advisor.senior, on_shift=advisor.on_shift,
                       csrf_token=sess.csrf_token, session_key=key)

    async def alive(self, session_key: str) -> bool:
        """Whether the session is still live (for long-lived sockets; does not extend it)."""
        async with self.db.session() as session:
            expires = (await session.execute(select(ConsoleSession.expires_at).where(
                ConsoleSession.token_hash == session_key))).scalar_one_or_none()
        return expires is not None and expires > self.now()

    async def end(self, session_key: str) -> None:
        async with self.db.session() as session:
            await session.execute(delete(ConsoleSession).where(
                ConsoleSession.token_hash == session_key))

    async def end_all(self, advisor_id: int) -> None:
        """Sign the advisor out everywhere (after a password change, a deactivation)."""
        async with self.db.session() as session:
            await session.execute(delete(ConsoleSession).where(
                ConsoleSession.advisor_id == advisor_id))

    async def expire_now(self, session_key: str) -> None:
        """For tests and admin tools: make the session expire at once."""
        async with self.db.session() as session:
            await session.execute(update(ConsoleSession).where(
                ConsoleSession.token_hash == session_key).values(expires_at=self.now()))


class LoginLimiter:
    """Login attempts per username and per remote address, on the shared token buckets
    (so every worker counts the same attempts)."""

    def __init__(self, limiter: RateLimiter, *, per_minute: float) -> None:
        self.limiter = limiter
        self.per_user = Rate(per_minute, 60.0, burst=max(1.0, per_minute))
        self.per_ip = Rate(per_minute * IP_FACTOR, 60.0, burst=max(1.0, per_minute * IP_FACTOR))

    async def attempt(self, username: str, remote: str | None) -> float:
        """0.0 when the attempt may go ahead, else the seconds to wait."""
        user = hashlib.sha256(username.strip().lower().encode("utf-8")).hexdigest()[:24]
        return await self.limiter.reserve([
            (f"console-login:user:{user}", self.per_user),
            (f"console-login:ip:{remote or 'unknown'}", self.per_ip),
        ])




def csp(request: web.Request) -> str:
    host = request.host if _HOST_RE.fullmatch(request.host) else None
    sockets = f" ws://{host} wss://{host}" if host else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            "img-src 'self' data: blob: https:; "
            f"connect-src 'self'{sockets}; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")


def security_headers(request: web.Request, response: web.StreamResponse, *,
                     cacheable: bool = False) -> None:
    """Headers on every console response; pages and data are never cached."""
    response.headers.setdefault("Content-Security-Policy", csp(request))
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not cacheable:
        response.headers["Cache-Control"] = "no-store"
