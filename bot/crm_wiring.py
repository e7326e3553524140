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
    community = getattr(app, "community", None)
    if community is not None:  # CRM segments and opt-outs decide who gets drops
        resolver = SegmentAudienceResolver(
            crm=crm, fallback=community.resolver, db=app.db,
            default_language=app.settings.bot.default_language,
        )
        community.resolver = resolver
        community.drops.resolver = resolver
    return crm


def schedule(app: Any) -> None:
    """Register the CRM's periodic jobs (idempotent: fixed job ids)."""
    if app.scheduler is None:
        return
    app.scheduler.add_crontab("bot.jobs:crm_refresh", job_id="crm-refresh",
                              crontab="30 3 * * *", timezone=app.settings.scheduler.timezone)
    app.scheduler.add_interval("bot.jobs:crm_automations", job_id="crm-automations",
                               seconds=300)


class SegmentAudienceResolver:
    """The drops' private audience with the CRM behind it: a named CRM segment resolves to its
    members' private chats; every other audience goes to the community resolver; opted-out
    members are left out of all of them (no marketing drop, ever)."""

    def __init__(self, *, crm: CrmService, fallback: Any, db: Database,
                 default_language: str = "ja") -> None:
        self.crm = crm
        self.fallback = fallback
        self.db = db
        self.default_language = default_language

    async def resolve_private(self, audience: Any) -> Any:
        if not audience.segment:
            async for recipient in self.fallback.resolve_private(audience):
                if recipient.contact_id is None or await self.crm.is_marketable(
                        recipient.contact_id):
                    yield recipient
            return
        from bot.core.i18n import normalise_language
        from community.delivery import Recipient
        from models.contact import Contact

        batch: list[int] = []

        async def flush() -> list[Any]:
            async with self.db.session() as session:
                rows = (await session.execute(
                    select(ContactIdentity.contact_id, ContactIdentity.platform,
                           ContactIdentity.external_id, ContactIdentity.language_code,
                           ContactIdentity.unreachable_at, Contact.language)
                    .join(Contact, Contact.id == ContactIdentity.contact_id)
                    .where(ContactIdentity.contact_id.in_(batch))
                    .order_by(ContactIdentity.contact_id,
                              ContactIdentity.platform != "telegram", ContactIdentity.id)
                )).all()
            chosen: dict[int, Any] = {}
            for row in rows:
                chosen.setdefault(row.contact_id, row)
            wanted = set(audience.languages or [])
            out = []
            for contact_id in batch:
                row = chosen.get(contact_id)
                if row is None:
                    continue
                lang = row.language or normalise_language(row.language_code) \
                    or self.default_language
                if wanted and lang not in wanted:
                    continue
                out.append(Recipient(
                    chat=ChatRef(row.platform, ChatKind.PRIVATE, row.external_id),
                    contact_id=contact_id, language=lang,
                    blocked=row.unreachable_at is not None,
                ))
            return out

        async for contact_id in self.crm.segments.resolve(audience.segment):
            batch.append(contact_id)
            if len(batch) >= 500:
                for recipient in await flush():
                    yield recipient
                batch = []
        if batch:
            for recipient in await flush():
                yield recipient
