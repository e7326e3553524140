"""Composition root: builds settings, database, shared state, services, platforms, the web
server and the scheduler, and runs them in one process. Nothing imports this module except
the CLI and tests."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import text

from bot.core.conversation import ConversationService, Responder
from bot.core.i18n import Translator
from bot.core.metrics import Metrics
from bot.core.outbound import Outbound, PlatformLimits
from bot.core.ports import ChatPlatform
from bot.core.shared import Rate, SharedState, in_memory_shared_state
from bot.web import build_web_app
from config import Settings
from models import Database
from models.repositories import MessageRepository

log = logging.getLogger(__name__)


def load_web_secret(settings: Settings) -> bytes:
    """The configured secret, else one generated once and kept in the data folder."""
    if settings.web.secret_key is not None:
        return settings.web.secret_key.get_secret_value().encode()
    path = Path(settings.data_dir) / "web_secret"
    if path.is_file():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    return value


def build_shared_state(settings: Settings, clock: Callable[[], float]) -> SharedState:
    if settings.redis.url:
        from bot.core.redis_shared import redis_shared_state

        return redis_shared_state(settings.redis.url)
    return in_memory_shared_state(clock)


def platform_limits(settings: Settings) -> PlatformLimits:
    r = settings.rate_limits
    return PlatformLimits(
        overall=Rate(r.global_per_second, 1.0),
        private_chat=Rate(r.private_per_second, 1.0, burst=1),
        group_chat=Rate(r.group_per_minute, 60.0, burst=min(3.0, r.group_per_minute)),
    )


@dataclass
class KizunaApp:
    settings: Settings
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    with_knowledge_base: bool = True
    db: Database = field(init=False)
    metrics: Metrics = field(init=False)
    translate: Translator = field(init=False)
    shared: SharedState = field(init=False)
    platforms: dict[str, ChatPlatform] = field(init=False, default_factory=dict)
    outbound: Outbound = field(init=False)
    conversations: ConversationService = field(init=False)
    web: web.Application = field(init=False)
    knowledge: Any = field(init=False, default=None)
    community: Any = field(init=False, default=None)
    crm: Any = field(init=False, default=None)
    handoff: Any = field(init=False, default=None)  # bot.handoff.service.HandoffService
    accounts: Any = field(init=False, default=None)  # bot.handoff.accounts.Accounts
    # Background workers with ``async stop()``, stopped (and drained) first by ``stop()``.
    background: list[Any] = field(init=False, default_factory=list)
    forum: Any = field(init=False, default=None)  # bot.handoff.forum.ForumWorkspace
    initial_admin_password: str | None = field(init=False, default=None, repr=False)
    scheduler: Any = field(init=False, default=None)
    _runner: web.AppRunner | None = field(init=False, default=None)
    bound_port: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s = self.settings
        self.db = Database(s.database.url, echo=s.database.echo, pool_size=s.database.pool_size)
        self.metrics = Metrics()
        self.translate = Translator(default=s.bot.default_language)
        self.shared = build_shared_state(s, self.clock)
        limits = platform_limits(s)
        self.outbound = Outbound(
            db=self.db,
            platforms=self.platforms,
            rate_limiter=self.shared.rate_limiter,
            metrics=self.metrics,
            limits={"telegram": limits},
            max_attempts=s.telegram.max_send_attempts,
            sleep=self.sleep,
        )
        responder = self._build_responder()
        self.conversations = ConversationService(
            db=self.db,
            outbound=self.outbound,
            translate=self.translate,
            settings=s.bot,
            metrics=self.metrics,
            responder=responder,
        )
        if self.knowledge is not None:
            from bot.core.answering import register_callbacks

            register_callbacks(self.conversations, self.knowledge, self.translate)
        self.web = build_web_app(metrics=self.metrics, health=self.health)
        self._add_platforms()
        from bot import crm_wiring
        from bot.handoff import wiring as handoff_wiring
        from community.wiring import install

        install(self)
        crm_wiring.install(self)
        handoff_wiring.install(self)
        import console

        console.install(self)

    def _build_responder(self) -> Responder | None:
        if not self.with_knowledge_base:
            return None
        from bot.core.answering import KnowledgeResponder
        from knowledge_base.service import KnowledgeService

        self.knowledge = KnowledgeService(
            db=self.db, settings=self.settings.knowledge_base,
            default_language=self.settings.bot.default_language,
        )
        responder = KnowledgeResponder(
            knowledge=self.knowledge, translate=self.translate, clock=self.clock
        )
        responder.bot_name = self.settings.bot.name
        return responder

    def _add_platforms(self) -> None:
        from bot.webchat import WebChatPlatform

        async def history(visitor_id: str, limit: int) -> list[dict[str, Any]]:
            return await self.webchat_history(visitor_id, limit)

        webchat = WebChatPlatform(
            events=self.shared.events,
            secret=load_web_secret(self.settings),
            history=history,
            cookie_secure=self.settings.web.cookie_secure,
            brand_name=self.settings.bot.name,
            default_language=self.settings.bot.default_language,
        )
        webchat.register_routes(self.web)
        self.add_platform(webchat)
        if self.settings.telegram.enabled:
            from bot.telegram import TelegramPlatform

            telegram = TelegramPlatform(
                settings=self.settings.telegram, translate=self.translate, metrics=self.metrics
            )
            telegram.register_routes(self.web)
            self.add_platform(telegram)

    def add_platform(self, platform: ChatPlatform) -> None:
        platform.set_handler(self.conversations.handle)
        self.platforms[platform.name] = platform

    async def webchat_history(self, visitor_id: str, limit: int) -> list[dict[str, Any]]:
        from models.repositories import ChatRepository

        async with self.db.session() as session:
            chat = await ChatRepository(session).get("webchat", visitor_id)
            if chat is None:
                return []
            rows = await MessageRepository(session).history(chat.id, limit)
        out = []
        for m in rows:
            if m.kind == "callback":
                continue
            out.append({
                "id": str(m.id),
                "direction": m.direction.value,
                "text": m.text or "",
                "sender": m.sender,
                "buttons": (m.payload or {}).get("buttons", []) if m.direction.value == "out"
                else [],
                "ts": m.created_at.timestamp(),
            })
        return out

    async def health(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # pragma: no cover - depends on the server going away
            checks["database"] = f"error: {type(exc).__name__}"
        checks["platforms"] = "ok" if self.platforms else "none"
        return checks

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.db.upgrade()
        if self.accounts is not None and self.settings.console.create_initial_admin:
            from bot.handoff.accounts import ensure_initial_admin

            self.initial_admin_password = await ensure_initial_admin(
                self.accounts, self.settings.data_dir)
        if self.knowledge is not None:
            await self.knowledge.ensure_ready()
        if self.settings.scheduler.enabled:
            from community.scheduler import Scheduler

            self.scheduler = Scheduler(
                database_url=self.settings.database.url,
                timezone=self.settings.scheduler.timezone,
            )
            self.scheduler.start()
            from bot import crm_wiring

            crm_wiring.schedule(self)
        self._runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.web.host, self.settings.web.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.settings.web.port
        for platform in self.platforms.values():
            await platform.start()
        if self.handoff is not None and self.settings.handoff.reassign_loop:
            from bot.handoff.wiring import ReassignLoop

            loop = ReassignLoop(self.handoff)
            loop.start()
            self.background.append(loop)

    @property
    def base_url(self) -> str:
        host = self.settings.web.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.bound_port}"

    async def stop(self) -> None:
        for worker in self.background:
            await worker.stop()
        self.background.clear()
        if self.community is not None:
            await self.community.stop()
        for platform in self.platforms.values():
            try:
                await platform.stop()
            except Exception:
                log.exception("platform stop failed", extra={"platform": platform.name})
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.db.dispose()

    async def run_forever(self, ready: Callable[[KizunaApp], None] | None = None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            if ready is not None:
                ready(self)
            await stop.wait()
        finally:
            await self.stop()
