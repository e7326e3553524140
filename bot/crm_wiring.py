"""Plugs the CRM (``crm`` package) into the app: automations send through the one outbound
path, and its periodic work runs on the scheduler (jobs stored by reference in ``bot.jobs``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.core.outbound import Outbound
from bot.core.types import ChatKind, ChatRef, OutgoingMessage
from crm import CrmPolicy, CrmService
from models import Database
from models.contact import ContactIdentity


class OutboundSender:
    """``crm.automations.Sender`` over the one outbound path: a member's reachable private
    chat, Telegram first."""

    def __init__(self, db: Database, outbound: Outbound) -> None:
        self.db = db
        self.outbound = outbound

    async def send(self, contact_id: int, text: str, *, key: str) -> bool:
        async with self.db.session() as session:
            identities = (await session.execute(
                select(ContactIdentity)
                .where(ContactIdentity.contact_id == contact_id,
                       ContactIdentity.unreachable_at.is_(None))
                .order_by(ContactIdentity.platform != "telegram", ContactIdentity.id)
            )).scalars().all()
        for identity in identities:
            if identity.platform not in self.outbound.platforms:
                continue
            result = await self.outbound.send(
                ChatRef(identity.platform, ChatKind.PRIVATE, identity.external_id),
                OutgoingMessage(text=text, sender=f"crm:{key}"[:64]),
                contact_id=contact_id,
            )
            return result.ok
        return False


def install(app: Any) -> CrmService:
    from bot import jobs

    crm = CrmService(
        db=app.db,
        policy=CrmPolicy(default_timezone=app.settings.scheduler.timezone),
        sender=OutboundSender(app.db, app.outbound),
    )
    app.crm = crm
    jobs.set_app(app)
    return crm


def schedule(app: Any) -> None:
    """Register the CRM's periodic jobs (idempotent: fixed job ids)."""
    if app.scheduler is None:
        return
    app.scheduler.add_crontab("bot.jobs:crm_refresh", job_id="crm-refresh",
                              crontab="30 3 * * *", timezone=app.settings.scheduler.timezone)
    app.scheduler.add_interval("bot.jobs:crm_automations", job_id="crm-automations",
                               seconds=300)
