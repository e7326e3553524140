"""A community world without the Telegram adapter: the real Outbound path over a FakePlatform."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.core.i18n import Translator
from bot.core.metrics import Metrics
from bot.core.outbound import Outbound, PlatformLimits
from bot.core.shared import InMemoryRateLimiter
from bot.core.types import ChatKind, ChatRef
from community.audience import CommunityAudienceResolver
from community.clock import WallClock
from community.coupons import CouponService
from community.delivery import DeliveryEngine, OutboundPublisher
from community.drops import DropService
from community.groups import Alerts, GroupService
from community.settings import CommunitySettings
from models import Database
from models.chat import ChatKind as ModelChatKind
from models.repositories import ChatRepository, ContactRepository
from tests.fakes import FakePlatform, FakeSleep, ManualClock

T0 = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)  # 09:00 Asia/Tokyo


@dataclass
class Kit:
    db: Database
    platform: FakePlatform
    outbound: Outbound
    clock: WallClock
    settings: CommunitySettings
    coupons: CouponService
    engine: DeliveryEngine
    drops: DropService
    groups: GroupService
    sleep: FakeSleep

    async def contact(self, external_id: str, language: str = "en") -> int:
        """A member with a private chat with the bot."""
        async with self.db.session() as s:
            identity, _ = await ContactRepository(s).identify(
                "fake", external_id, language_code=language)
            await ChatRepository(s).upsert("fake", external_id, ModelChatKind.PRIVATE)
            return identity.contact_id

    async def group(self, external_id: str, title: str = "G") -> int:
        from bot.core.types import MemberStatus

        g = await self.groups.adopt(ChatRef("fake", ChatKind.GROUP, external_id, title),
                                    MemberStatus.ADMINISTRATOR, 10)
        assert g is not None
        return g.id


def make_kit(db: Database, **settings: Any) -> Kit:
    mono = ManualClock()
    sleep = FakeSleep(mono)
    platform = FakePlatform()
    outbound = Outbound(db=db, platforms={"fake": platform},
                        rate_limiter=InMemoryRateLimiter(mono), metrics=Metrics(),
                        limits={"fake": PlatformLimits()}, sleep=sleep)
    clock = WallClock()
    clock.set(T0)
    cfg = CommunitySettings(**{"delivery_workers": 4, "claim_batch": 5, **settings})
    translate = Translator(default="en")
    coupons = CouponService(db=db, now=clock)
    alerts = Alerts(db=db, publisher=None, settings=cfg)
    groups = GroupService(db=db, settings=cfg, alerts=alerts, now=clock)
    holder: dict[str, DropService] = {}
    engine = DeliveryEngine(db=db, publisher=OutboundPublisher(outbound), settings=cfg,
                            coupons=coupons, renderer=lambda d, r, c: holder["d"].render(d, r, c),
                            now=clock)
    drops = DropService(db=db, engine=engine, coupons=coupons,
                        resolver=CommunityAudienceResolver(db=db, platform="fake",
                                                           default_language="en"),
                        settings=cfg, translate=translate,
                        test_publisher=OutboundPublisher(outbound, record=True), now=clock,
                        alert=alerts)
    holder["d"] = drops
    return Kit(db, platform, outbound, clock, cfg, coupons, engine, drops, groups, sleep)


@pytest.fixture
async def kit(sqlite_db: Database) -> Kit:
    return make_kit(sqlite_db)
