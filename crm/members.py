"""Member profiles: one contact across platforms, consent and opt-out, manual tags, events,
link codes that merge a Telegram account and a web-chat visitor, and the advisor panel."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, delete, exists, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import CrmError, NotFound
from crm.normalise import check_timezone, normalise_email, normalise_phone
from crm.policy import CrmPolicy
from crm.rollup import refresh_contacts as refresh_order_months
from models.base import Base, utcnow
from models.contact import Contact, ContactIdentity
from models.crm import (
    ContactTag,
    Enrolment,
    LinkCode,
    MemberEvent,
    MemberProfile,
    MemberStats,
    Order,
    OrderMonth,
    Referral,
)
from models.db import Database
from models.repositories import ContactRepository

LINK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
PROFILE_FIELDS = ("shop_customer_id", "email", "phone", "birth_year", "birth_month",
                  "birth_day", "member_level", "favourite_products", "home_store", "timezone",
                  "marketing_consent")


def clean_tag(tag: str) -> str:
    """Tags are trimmed, lower-case, at most 64 characters, without commas."""
    out = " ".join(tag.split()).lower()
    if not out or len(out) > 64 or "," in out:
        raise CrmError(f"invalid tag {tag!r}: 1-64 characters, no commas")
    return out


@dataclass
class OrderView:
    external_id: str
    ordered_at: datetime
    amount: float
    store: str | None
    items: list[str] | None


@dataclass
class ProfileView:
    """Everything the advisor inbox panel shows about one member."""

    contact_id: int
    display_name: str | None
    language: str | None
    identities: list[dict[str, Any]]
    shop_customer_id: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: str | None = None
    member_level: str | None = None
    favourite_products: list[str] = field(default_factory=list)
    home_store: str | None = None
    timezone: str | None = None
    marketable: bool = True
    opted_out_at: datetime | None = None
    tier: str = "dormant"
    needs_care: bool = False
    rfm: dict[str, int] = field(default_factory=dict)
    order_count: int = 0
    total_spend: float = 0.0
    last_order_at: datetime | None = None
    ltv: dict[str, float] = field(default_factory=dict)
    koc_score: float = 0.0
    tags: list[dict[str, str]] = field(default_factory=list)
    recent_orders: list[OrderView] = field(default_factory=list)
    computed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MergeResult:
    contact_id: int  # the surviving contact
    merged_contact_id: int | None  # the contact folded into it (None: already one)
    moved_rows: int = 0


class MemberService:
    """Profiles, consent, manual tags, events and identity linking for CRM members."""

    def __init__(self, *, db: Database, policy: CrmPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or CrmPolicy()

    # ------------------------------------------------------------------ lookup
    async def find(self, ref: str) -> int:
        """Resolve a member reference: '42' (contact id), 'telegram:123' (platform:id),
        'shop:C001' (shop customer id), an e-mail address or a phone number."""
        ref = ref.strip()
        try:
            return await self._find(ref)
        except ValueError as exc:
            if isinstance(exc, CrmError):
                raise
            raise NotFound(f"no member {ref!r}: {exc}") from None

    async def _find(self, ref: str) -> int:
        async with self.db.session() as session:
            found: int | None = None
            if ref.isdigit():
                found = await session.scalar(select(Contact.id).where(Contact.id == int(ref)))
            elif ref.startswith("shop:"):
                found = await session.scalar(select(MemberProfile.contact_id).where(
                    MemberProfile.shop_customer_id == ref[5:]))
            elif "@" in ref:
                found = await session.scalar(select(MemberProfile.contact_id).where(
                    MemberProfile.email == normalise_email(ref)).limit(1))
            elif ":" in ref:
                platform, _, ext = ref.partition(":")
                found = await session.scalar(select(ContactIdentity.contact_id).where(
                    ContactIdentity.platform == platform, ContactIdentity.external_id == ext))
            elif ref.startswith("+") or ref.replace("-", "").isdigit():
                found = await session.scalar(select(MemberProfile.contact_id).where(
                    MemberProfile.phone == normalise_phone(
                        ref, self.policy.default_country_code)).limit(1))
            if found is None:
                raise NotFound(f"no member {ref!r} (use a contact id, platform:id, "
                               "shop:CUSTOMER_ID, an e-mail or a phone number)")
            return int(found)

    async def _require(self, session: AsyncSession, contact_id: int) -> Contact:
        contact = await session.get(Contact, contact_id)
        if contact is None:
            raise NotFound(f"no member with contact id {contact_id}")
        return contact

    @staticmethod
    async def profile_row(session: AsyncSession, contact_id: int) -> MemberProfile:
        row = await session.get(MemberProfile, contact_id)
        if row is None:
            row = MemberProfile(contact_id=contact_id, favourite_products=[])
            session.add(row)
            await session.flush()
        return row

    # ------------------------------------------------------------------ profile
    async def update_profile(self, contact_id: int, **values: Any) -> None:
        """Set profile fields (see ``PROFILE_FIELDS``); e-mail, phone, time zone are checked."""
        unknown = set(values) - set(PROFILE_FIELDS)
        if unknown:
            raise CrmError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
        try:
            if values.get("email") is not None:
                values["email"] = normalise_email(values["email"])
            if values.get("phone") is not None:
                values["phone"] = normalise_phone(values["phone"],
                                                  self.policy.default_country_code)
            if values.get("timezone") is not None:
                values["timezone"] = check_timezone(values["timezone"])
        except ValueError as exc:
            raise CrmError(str(exc)) from None
        async with self.db.session() as session:
            await self._require(session, contact_id)
            row = await self.profile_row(session, contact_id)
            for key, value in values.items():
                setattr(row, key, value)

    async def is_marketable(self, contact_id: int) -> bool:
        """False for a member who opted out or declined marketing: no drops, ever."""
        async with self.db.session() as session:
            row = (await session.execute(
                select(MemberProfile.opted_out_at, MemberProfile.marketing_consent).where(
                    MemberProfile.contact_id == contact_id))).first()
        if row is None:
            return True
        return row.opted_out_at is None and row.marketing_consent is not False

    async def opt_out(self, contact_id: int, *, reason: str | None = None,
                      at: datetime | None = None) -> None:
        """Stop all marketing to this member and stop their active sequences."""
        at = at or utcnow()
        async with self.db.session() as session:
            await self._require(session, contact_id)
            row = await self.profile_row(session, contact_id)
            row.opted_out_at = row.opted_out_at or at
            row.marketing_consent = False
            session.add(MemberEvent(contact_id=contact_id, kind="opt_out",
                                    data={"reason": reason} if reason else None, created_at=at))
            await session.execute(
                update(Enrolment)
                .where(Enrolment.contact_id == contact_id, Enrolment.status == "active")
                .values(status="stopped", stopped_reason="opt_out", next_step_at=None)
            )

    async def opt_in(self, contact_id: int, *, at: datetime | None = None) -> None:
        """Record explicit consent (clears an earlier opt-out)."""
        async with self.db.session() as session:
            await self._require(session, contact_id)
            row = await self.profile_row(session, contact_id)
            row.opted_out_at = None
            row.marketing_consent = True
            session.add(MemberEvent(contact_id=contact_id, kind="opt_in",
                                    created_at=at or utcnow()))

    # ------------------------------------------------------------------ tags
    async def add_tag(self, contact_id: int, tag: str, *, actor: str | None = None) -> bool:
        """Add a manual tag; returns False when the member already had it (a rule's tag
        becomes manual, so it stays when the rule stops matching)."""
        tag = clean_tag(tag)
        async with self.db.session() as session:
            await self._require(session, contact_id)
            row = await session.get(ContactTag, (contact_id, tag))
            if row is not None:
                if row.source == "manual":
                    return False
                row.source, row.actor = "manual", actor
                return True
            session.add(ContactTag(contact_id=contact_id, tag=tag, source="manual", actor=actor))
            return True

    async def remove_tag(self, contact_id: int, tag: str) -> bool:
        """Remove a tag (manual or automatic; a matching rule adds it back on its next run)."""
        async with self.db.session() as session:
            result = await session.execute(delete(ContactTag).where(
                ContactTag.contact_id == contact_id, ContactTag.tag == clean_tag(tag)))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def tags(self, contact_id: int) -> list[dict[str, str]]:
        async with self.db.session() as session:
            rows = await session.execute(select(ContactTag.tag, ContactTag.source).where(
                ContactTag.contact_id == contact_id).order_by(ContactTag.tag))
            return [{"tag": r.tag, "source": r.source} for r in rows]

    async def tag_counts(self) -> list[tuple[str, int]]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(ContactTag.tag, func.count()).group_by(ContactTag.tag)
                .order_by(func.count().desc(), ContactTag.tag))
            return [(r[0], int(r[1])) for r in rows]

    # ------------------------------------------------------------------ events
    async def record_event(self, contact_id: int, kind: str, data: dict[str, Any] | None = None,
                           *, actor: str | None = None, at: datetime | None = None) -> int:
        """Record something the member did (complaint, positive_feedback, helpful_answer,
        intent with data={'intent': ...}); returns the event id."""
        if not kind or len(kind) > 64:
            raise CrmError("event kind must be 1-64 characters")
        async with self.db.session() as session:
            await self._require(session, contact_id)
            event = MemberEvent(contact_id=contact_id, kind=kind, data=data, actor=actor,
                                created_at=at or utcnow())
            session.add(event)
            await session.flush()
            return int(event.id)

    async def record_complaint(self, contact_id: int, note: str | None = None, *,
                               actor: str | None = None, at: datetime | None = None) -> int:
        """A complaint: sets "needs care" (live for routing, stored on recompute)."""
        return await self.record_event(contact_id, "complaint", {"note": note} if note else None,
                                       actor=actor, at=at)

    async def record_feedback(self, contact_id: int, *, positive: bool, note: str | None = None,
                              at: datetime | None = None) -> int:
        """Feedback on an answer or purchase; positive feedback adds to the KOC score."""
        return await self.record_event(
            contact_id, "positive_feedback" if positive else "negative_feedback",
            {"note": note} if note else None, at=at)

    async def record_helpful_answer(self, contact_id: int, *, chat_id: int | None = None,
                                    message_id: str | None = None, actor: str | None = None,
                                    at: datetime | None = None) -> int:
        """A member answered someone helpfully in a group (marked by an advisor or a
        reaction); adds to the KOC score."""
        return await self.record_event(contact_id, "helpful_answer",
                                       {"chat_id": chat_id, "message_id": message_id},
                                       actor=actor, at=at)

    async def needs_senior(self, contact_id: int, *, now: datetime | None = None) -> bool:
        """Route to a senior advisor: a recent complaint or care tag (checked live), a
        stored "needs care" flag, or a *best*-tier member."""
        now = now or utcnow()
        cutoff = now - timedelta(days=self.policy.needs_care_days)
        async with self.db.session() as session:
            complaint = await session.scalar(select(exists().where(
                MemberEvent.contact_id == contact_id, MemberEvent.kind == "complaint",
                MemberEvent.created_at >= cutoff)))
            tagged = await session.scalar(select(exists().where(
                ContactTag.contact_id == contact_id, ContactTag.tag.in_(self.policy.care_tags))))
            stats = (await session.execute(select(MemberStats.tier, MemberStats.needs_care).where(
                MemberStats.contact_id == contact_id))).first()
        return bool(complaint or tagged or (stats is not None and (
            stats.needs_care or stats.tier == "best")))

    # ------------------------------------------------------------------ panel
    async def profile(self, contact_id: int, *, recent: int = 5) -> ProfileView:
        """Tier, LTV with its factors, tags, recent orders and KOC score of one member."""
        async with self.db.session() as session:
            contact = await self._require(session, contact_id)
            prof = await session.get(MemberProfile, contact_id)
            stats = await session.get(MemberStats, contact_id)
            tags = await session.execute(select(ContactTag.tag, ContactTag.source).where(
                ContactTag.contact_id == contact_id).order_by(ContactTag.tag))
            orders = (await session.execute(
                select(Order).where(Order.contact_id == contact_id)
                .order_by(Order.ordered_at.desc()).limit(recent))).scalars().all()
            view = ProfileView(
                contact_id=contact.id,
                display_name=contact.display_name,
                language=contact.language,
                identities=[{"platform": i.platform, "external_id": i.external_id,
                             "username": i.username, "reachable": i.reachable}
                            for i in contact.identities],
                tags=[{"tag": t.tag, "source": t.source} for t in tags],
                recent_orders=[OrderView(o.external_id, o.ordered_at, float(o.amount), o.store,
                                         o.items) for o in orders],
            )
            if prof is not None:
                view.shop_customer_id = prof.shop_customer_id
                view.email, view.phone = prof.email, prof.phone
                if prof.birth_month:
                    year = f"{prof.birth_year:04d}-" if prof.birth_year else ""
                    view.birthday = f"{year}{prof.birth_month:02d}-{prof.birth_day:02d}"
                view.member_level = prof.member_level
                view.favourite_products = list(prof.favourite_products or [])
                view.home_store, view.timezone = prof.home_store, prof.timezone
                view.opted_out_at = prof.opted_out_at
                view.marketable = prof.opted_out_at is None and prof.marketing_consent is not False
            if stats is not None:
                view.tier, view.needs_care = stats.tier, stats.needs_care
                view.rfm = {"r": stats.r_score, "f": stats.f_score, "m": stats.m_score,
                            "recency_days": round(stats.recency_days or 0)}
                view.order_count, view.total_spend = stats.order_count, stats.total_spend
                view.last_order_at = stats.last_order_at
                view.ltv = {"avg_order_value": round(stats.avg_order_value, 2),
                            "purchases_per_year": round(stats.purchases_per_year, 3),
                            "expected_years": stats.expected_years,
                            "ltv": round(stats.ltv, 2)}
                view.koc_score = stats.koc_score
                view.computed_at = stats.computed_at
        return view

    # ------------------------------------------------------------------ linking
    async def issue_link_code(self, platform: str, external_id: str, *,
                              now: datetime | None = None) -> str:
        """A one-time code for this identity; redeemed from another identity within
        ``policy.link_code_minutes`` it merges both onto this identity's contact."""
        now = now or utcnow()
        async with self.db.session() as session:
            identity, _ = await ContactRepository(session).identify(platform, external_id)
            code = "".join(secrets.choice(LINK_ALPHABET) for _ in range(8))
            session.add(LinkCode(code=code, contact_id=identity.contact_id, platform=platform,
                                 external_id=external_id,
                                 expires_at=now + timedelta(minutes=self.policy.link_code_minutes)))
            return code

    async def redeem_link_code(self, code: str, platform: str, external_id: str, *,
                               now: datetime | None = None) -> MergeResult:
        """Merge the redeeming identity's contact into the issuer's; history is kept."""
        now = now or utcnow()
        code = code.strip().upper().replace("-", "").replace(" ", "")
        async with self.db.session() as session:
            link = await session.get(LinkCode, code, with_for_update=True)
            if link is None:
                raise CrmError("unknown link code")
            if link.used_at is not None:
                raise CrmError("this link code was already used")
            if link.expires_at < now:
                raise CrmError("this link code has expired; ask for a new one")
            if (link.platform, link.external_id) == (platform, external_id):
                raise CrmError("redeem the code from your other account, not the one that "
                               "asked for it")
            repo = ContactRepository(session)
            issuer = await repo.get_identity(link.platform, link.external_id)
            if issuer is None:
                raise CrmError("the account that asked for this code no longer exists")
            other, _ = await repo.identify(platform, external_id)
            link.used_at = now
            survivor, loser = issuer.contact_id, other.contact_id
            if survivor == loser:
                return MergeResult(survivor, None)
            moved = await merge_contacts(session, survivor, loser)
            return MergeResult(survivor, loser, moved)


async def _existing_tables(session: AsyncSession) -> set[str]:
    conn = await session.connection()
    return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


def _contact_references() -> list[tuple[Table, str]]:
    out: list[tuple[Table, str]] = []
    for tbl in Base.metadata.sorted_tables:
        for fk in tbl.foreign_keys:
            if fk.column.table.name == "contacts" and fk.column.name == "id":
                out.append((tbl, fk.parent.name))
    return out


async def merge_contacts(session: AsyncSession, survivor: int, loser: int) -> int:
    """Move every row that references contact ``loser`` to ``survivor`` (identities,
    conversations, messages, orders, tags, events...) and delete ``loser``.

    Works over every table on ``Base.metadata`` with a foreign key to ``contacts.id``, so
    tables added by other modules are moved too. Where a unique key would clash (both had
    the same tag, a profile each), the survivor's row wins; profile and contact fields the
    survivor lacks are filled from the loser's.
    """
    keep = await session.get(Contact, survivor)
    gone = await session.get(Contact, loser)
    if keep is None or gone is None:
        raise NotFound("cannot merge: contact not found")
    keep.display_name = keep.display_name or gone.display_name
    keep.language = keep.language or gone.language
    p_keep = await session.get(MemberProfile, survivor)
    p_gone = await session.get(MemberProfile, loser)
    if p_gone is not None:
        if p_keep is None:
            p_keep = MemberProfile(contact_id=survivor, favourite_products=[])
            session.add(p_keep)
        for name in PROFILE_FIELDS:
            if name == "favourite_products":
                merged = list(dict.fromkeys([*(p_keep.favourite_products or []),
                                             *(p_gone.favourite_products or [])]))
                p_keep.favourite_products = merged
            elif getattr(p_keep, name) is None and name != "shop_customer_id":
                setattr(p_keep, name, getattr(p_gone, name))
        if p_gone.opted_out_at is not None:  # an opt-out on either account is honoured
            p_keep.opted_out_at = p_keep.opted_out_at or p_gone.opted_out_at
            p_keep.marketing_consent = False
        shop_id = p_gone.shop_customer_id
        await session.delete(p_gone)
        await session.flush()
        if p_keep.shop_customer_id is None:
            p_keep.shop_customer_id = shop_id
    await session.execute(delete(MemberStats).where(MemberStats.contact_id == loser))
    await session.flush()
    existing = await _existing_tables(session)
    moved = 0
    for tbl, col_name in _contact_references():
        if tbl.name not in existing or tbl.name in ("crm_profiles", "crm_member_stats",
                                                     "crm_order_months"):
            continue
        col = tbl.c[col_name]
        # Unique keys containing the column: drop the loser's rows that would clash.
        uniques: list[list[str]] = []
        for cons in tbl.constraints:
            cols = [x.name for x in getattr(cons, "columns", [])]
            if col_name in cols and cons.__class__.__name__ in (
                    "UniqueConstraint", "PrimaryKeyConstraint"):
                uniques.append(cols)
        for idx in tbl.indexes:
            cols = [x.name for x in idx.columns]
            if idx.unique and col_name in cols:
                uniques.append(cols)
        for cols in uniques:
            other = tbl.alias("other")
            match = [other.c[col_name] == survivor]
            match += [other.c[n] == tbl.c[n] for n in cols if n != col_name]
            await session.execute(delete(tbl).where(col == loser, exists().where(and_(*match))))
        result = await session.execute(update(tbl).where(col == loser).values({col_name: survivor}))
        moved += result.rowcount or 0  # type: ignore[attr-defined]
    # A member cannot refer themself.
    await session.execute(delete(Referral).where(Referral.referrer_id == Referral.referee_id))
    # The month rollup is derived from orders: recompute the survivor's (both sets of
    # orders are the survivor's now); the loser's rows go with the loser.
    if "crm_order_months" in existing:
        await session.execute(delete(OrderMonth).where(OrderMonth.contact_id == loser))
        await refresh_order_months(session, [survivor])
    await session.execute(delete(Contact).where(Contact.id == loser))
    session.expire_all()
    return moved


__all__ = ["MemberService", "MergeResult", "ProfileView", "clean_tag", "merge_contacts"]
