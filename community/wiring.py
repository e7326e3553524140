"""Plugs the community features into the app: ``install(app)`` at the end of
``KizunaApp.__post_init__``.

It builds the services (``app.community``), routes community events from every platform
(member joins/leaves, join requests, the bot's own group membership, ``/start <entry code>``),
mounts ``POST /api/coupons/redeem`` on ``app.web``, and on start-up - as the leader, through
the shared Lock port - recovers the outbox, resumes interrupted drops and arms the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.core.ports import GroupAdmin
from bot.core.types import (
    BotMembershipChanged,
    ChatKind,
    IncomingMessage,
    JoinRequest,
    MemberChanged,
    MemberStatus,
    SendError,
)
from community import jobs
from community.audience import AudienceResolver, CommunityAudienceResolver
from community.clock import WallClock
from community.coupons import CouponService
from community.delivery import DeliveryEngine, OutboundPublisher, Recovery
from community.drops import DropService
from community.entry import EntryService
from community.groups import Alerts, GroupService
from community.membership import MembershipService
from community.settings import CommunitySettings

log = logging.getLogger(__name__)

LEADER_LOCK = "community:leader"


@dataclass
class CommunityRuntime:
    """The community services of one app, plus their lifecycle."""

    app: Any
    settings: CommunitySettings
    coupons: CouponService
    engine: DeliveryEngine
    drops: DropService
    groups: GroupService
    entry: EntryService
    membership: MembershipService
    alerts: Alerts
    resolver: AudienceResolver
    admins: dict[str, GroupAdmin]
    clock: Callable[[], datetime]
    leader: bool = False
    recovery: Recovery | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _leader_task: asyncio.Task[None] | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    # ------------------------------------------------------------------ events
    async def handle(self, event: Any) -> None:
        """The platforms' event handler: community events here, the rest to the conversation
        core first (it stores messages and answers), then community follow-ups."""
        try:
            if isinstance(event, MemberChanged):
                await self.membership.on_member_changed(event)
                return
            if isinstance(event, JoinRequest):
                await self.entry.handle_join_request(event)
                return
        except Exception:
            log.exception("community event failed", extra={"event": type(event).__name__})
            return
        await self.app.conversations.handle(event)
        try:
            if isinstance(event, BotMembershipChanged) and event.chat.kind is ChatKind.GROUP:
                await self._bot_membership(event)
            elif isinstance(event, IncomingMessage) and event.command == "start" \
                    and event.command_args:
                await self.entry.handle_start(event)
        except Exception:
            log.exception("community follow-up failed", extra={"event": type(event).__name__})

    async def _bot_membership(self, ev: BotMembershipChanged) -> None:
        count = None
        admin = self.admins.get(ev.chat.platform)
        if admin is not None and ev.new_status not in (MemberStatus.LEFT, MemberStatus.KICKED):
            try:
                count = await admin.member_count(ev.chat)
            except SendError as exc:
                log.info("member count unavailable", extra={"error": exc.description})
        await self.groups.adopt(ev.chat, ev.new_status, count)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._refresh_admins()
        self.drops.scheduler = getattr(self.app, "scheduler", None)
        if self.drops.scheduler is not None:
            self.drops.scheduler.pause()  # until this process leads
        self._leader_task = asyncio.create_task(self._lead(), name="community-leader")

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until this process leads and has recovered (tests)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _lead(self) -> None:
        async with self.app.shared.locks.hold(LEADER_LOCK, ttl=60.0):
            self.leader = True
            try:
                self.recovery = await self.engine.recover()
                for run_id in self.recovery.runs:
                    self.engine.start_run(run_id)
                sched = self.drops.scheduler
                if sched is not None:
                    await self.drops.sync_jobs()
                    sched.add_interval("community.jobs:sync_drops_job", job_id="community:sync",
                                       seconds=self.settings.job_sync_seconds)
                    sched.resume()
            except Exception:
                log.exception("community start-up failed")
            finally:
                self._ready.set()
            await self._stop.wait()
            self.leader = False

    async def stop(self) -> None:
        """Stop delivering (in-flight sends finish, claimed rows go back to pending).
        Idempotent; call it before the platforms stop."""
        self._stop.set()
        await self.engine.stop()
        await self.membership.stop()
        if self._leader_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._leader_task, 5)

    def _refresh_admins(self) -> None:
        self.admins.clear()
        for name, platform in self.app.platforms.items():
            if isinstance(platform, GroupAdmin):
                self.admins[name] = platform


def build(app: Any, *, now: Callable[[], datetime] | None = None,
          resolver: AudienceResolver | None = None) -> CommunityRuntime:
    now = now or WallClock()
    settings = getattr(app.settings, "community", None) or CommunitySettings()
    default_language = app.settings.bot.default_language
    db = app.db
    drop_publisher = OutboundPublisher(app.outbound)
    dm_publisher = OutboundPublisher(app.outbound, record=True)
    alerts = Alerts(db=db, publisher=dm_publisher, settings=settings)
    coupons = CouponService(db=db, now=now)
    groups = GroupService(db=db, settings=settings, alerts=alerts, now=now)
    resolver = resolver or CommunityAudienceResolver(db=db, default_language=default_language)
    admins: dict[str, GroupAdmin] = {}
    holder: dict[str, DropService] = {}

    def render(drop: Any, row: Any, code: str | None) -> Any:
        return holder["drops"].render(drop, row, code)

    engine = DeliveryEngine(db=db, publisher=drop_publisher, settings=settings,
                            coupons=coupons, renderer=render, now=now)
    drops = DropService(
        db=db, engine=engine, coupons=coupons, resolver=resolver, settings=settings,
        translate=app.translate, test_publisher=dm_publisher, scheduler=None, now=now,
        default_timezone=app.settings.scheduler.timezone, alert=alerts,
    )
    holder["drops"] = drops
    entry = EntryService(db=db, groups=groups, admins=admins, publisher=dm_publisher,
                         translate=app.translate, settings=settings, locks=app.shared.locks,
                         now=now, default_language=default_language)
    membership = MembershipService(
        db=db, groups=groups, coupons=coupons, publisher=dm_publisher,
        translate=app.translate, settings=settings, sleep=app.sleep, now=now,
        default_language=default_language,
    )
    return CommunityRuntime(
        app=app, settings=settings, coupons=coupons, engine=engine, drops=drops,
        groups=groups, entry=entry, membership=membership, alerts=alerts, resolver=resolver,
        admins=admins, clock=now,
    )


def install(app: Any, *, now: Callable[[], datetime] | None = None,
            resolver: AudienceResolver | None = None) -> CommunityRuntime:
    """Build the community runtime into ``app.community`` and hook it into the app.

    Call once, after the platforms are added (end of ``KizunaApp.__post_init__``). The
    CRM can pass its segment engine as ``resolver`` (or set ``app.community.resolver`` and
    ``app.community.drops.resolver`` later).
    """
    from community.http import register_routes

    existing = getattr(app, "community", None)
    if isinstance(existing, CommunityRuntime):
        return existing
    runtime = build(app, now=now, resolver=resolver)
    app.community = runtime
    jobs.set_runtime(runtime)
    for platform in app.platforms.values():
        platform.set_handler(runtime.handle)
    register_routes(app.web, runtime.coupons)

    async def on_startup(_web: Any) -> None:
        await runtime.start()

    async def on_cleanup(_web: Any) -> None:
        await runtime.stop()

    app.web.on_startup.append(on_startup)
    app.web.on_cleanup.append(on_cleanup)
    return runtime
