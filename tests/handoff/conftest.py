"""A handoff desk over a real (migrated) database and an in-memory platform."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.core.i18n import Translator
from bot.core.metrics import Metrics
from bot.core.outbound import Outbound, PlatformLimits
from bot.core.shared import in_memory_shared_state
from bot.core.types import ChatKind, ChatRef
from bot.handoff.accounts import AccountInput, Accounts
from bot.handoff.service import HandoffService
from config.settings import BusinessHoursSettings, HandoffSettings
from models import Database
from models.chat import ChatKind as ModelChatKind
from models.repositories import ChatRepository, ContactRepository, ConversationRepository
from tests.fakes import FakePlatform

ALWAYS_OPEN = BusinessHoursSettings(timezone="UTC",
                                    weekly={d: "00:00-24:00" for d in
                                            ("mon", "tue", "wed", "thu", "fri", "sat", "sun")})


class WallClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@dataclass
class Desk:
    db: Database
    desk: HandoffService
    accounts: Accounts
    platform: FakePlatform
    clock: WallClock
    events: list[dict[str, Any]]

    async def advisor(self, username: str, *, on_shift: bool = True, **kw: Any) -> int:
        aid = await self.accounts.create(AccountInput(username=username, password="password-123",
                                                      **kw))
        if on_shift:
            await self.desk.set_shift(aid, True)
        return aid

    async def customer(self, external_id: str, name: str = "Customer") -> tuple[int, int]:
        """(conversation id, contact id) of a private chat in the bot state."""
        async with self.db.session() as session:
            identity, _ = await ContactRepository(session).identify(
                "fake", external_id, display_name=name)
            chat = await ChatRepository(session).upsert("fake", external_id,
                                                        ModelChatKind.PRIVATE)
            conv = await ConversationRepository(session).current(chat, identity.contact_id)
            return conv.id, identity.contact_id

    def sent_to(self, external_id: str) -> list[str]:
        return self.platform.texts(external_id)


def chat(external_id: str) -> ChatRef:
    return ChatRef("fake", ChatKind.PRIVATE, external_id)


@pytest.fixture
async def desk(db: Database) -> Desk:
    platform = FakePlatform()
    shared = in_memory_shared_state()
    outbound = Outbound(db=db, platforms={"fake": platform}, rate_limiter=shared.rate_limiter,
                        metrics=Metrics(), limits={"fake": PlatformLimits.unlimited()})
    clock = WallClock()
    settings = HandoffSettings(business_hours=ALWAYS_OPEN, reassign_loop=False)
    service = HandoffService(db=db, outbound=outbound, translate=Translator(default="en"),
                             settings=settings, events=shared.events, locks=shared.locks,
                             now=clock)
    events: list[dict[str, Any]] = []

    async def listen(event: dict[str, Any]) -> None:
        events.append(event)

    service.listeners.append(listen)
    return Desk(db, service, Accounts(db), platform, clock, events)
