"""KOCs (key opinion customers): personal invite codes, referral attribution from
``/start ref-<code>`` deep links, rewards for both sides, and a leaderboard."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import and_, case, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from crm.errors import NotFound
from crm.policy import CrmPolicy
from models.contact import Contact, ContactIdentity, DeepLinkStart
from models.crm import MemberEvent, Order, Referral, ReferralCode, Reward
from models.db import Database

REF_PREFIX = "ref-"
JOIN_WINDOW = timedelta(minutes=10)
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class RewardIssuer(Protocol):
    """Issues a reward (e.g. a coupon) to a member; returns the coupon code, or None when
    it only records. The community coupons module provides the real one."""

    async def issue(self, contact_id: int, *, reason: str, key: str) -> str | None: ...


class RecordingIssuer:
    """The default issuer: rewards are recorded (status 'recorded'), nothing is sent."""

    async def issue(self, contact_id: int, *, reason: str, key: str) -> str | None:
        del contact_id, reason, key
        return None


async def record_reward(db: Database, issuer: RewardIssuer, contact_id: int, *, key: str,
                        reason: str, referral_id: int | None = None,
                        side: str | None = None) -> Reward | None:
    """Record a reward row (unique ``key``), then ask ``issuer`` for a coupon; returns None
    when ``key`` was already rewarded."""
    async with db.session() as session:
        try:
            async with session.begin_nested():
                row = Reward(key=key, contact_id=contact_id, referral_id=referral_id,
                             side=side, reason=reason, status="recorded")
                session.add(row)
                await session.flush()
        except IntegrityError:
            return None
    code = await issuer.issue(contact_id, reason=reason, key=key)
    if code:
        async with db.session() as session:
            await session.execute(update(Reward).where(Reward.id == row.id)
                                  .values(status="issued", coupon_code=code))
        row.status, row.coupon_code = "issued", code
    return row


@dataclass(frozen=True)
class ReferralSync:
    joins: int
    first_orders: int
    rewards: int


@dataclass(frozen=True)
class LeaderboardRow:
    contact_id: int
    display_name: str | None
    score: float
    joins: int
    first_orders: int
    helpful_answers: int
    positive_feedback: int


class KocService:
    """Invite codes, referral attribution and rewards, KOC leaderboard."""

    def __init__(self, *, db: Database, policy: CrmPolicy | None = None,
                 issuer: RewardIssuer | None = None, bot_username: str | None = None) -> None:
        self.db = db
        self.policy = policy or CrmPolicy()
        self.issuer: RewardIssuer = issuer or RecordingIssuer()
        self.bot_username = bot_username

    async def invite_code(self, contact_id: int) -> str:
        """The member's deep-link payload ``ref-<code>`` (created on first use)."""
        async with self.db.session() as session:
            if await session.get(Contact, contact_id) is None:
                raise NotFound(f"no member with contact id {contact_id}")
            row = await session.get(ReferralCode, contact_id)
            while row is None:
                code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
                try:
                    async with session.begin_nested():
                        row = ReferralCode(contact_id=contact_id, code=code)
                        session.add(row)
                        await session.flush()
                except IntegrityError:
                    row = await session.get(ReferralCode, contact_id)
            return REF_PREFIX + row.code

    async def invite_link(self, contact_id: int) -> str:
        """``https://t.me/<bot>?start=ref-<code>`` (the payload alone without a bot name)."""
        payload = await self.invite_code(contact_id)
        if not self.bot_username:
            return payload
        return f"https://t.me/{self.bot_username.lstrip('@')}?start={payload}"

    async def sync_referrals(self) -> ReferralSync:
        """Attribute joins (first-contact ``/start ref-...``) and referees' first orders,
        then record both sides' rewards. Idempotent; run it after imports and on a schedule."""
        d = DeepLinkStart.__table__
        rc = ReferralCode.__table__
        r = Referral.__table__
        first_start = (select(d.c.contact_id, func.min(d.c.id).label("start_id"))
                       .where(d.c.first_contact.is_(True), d.c.payload.like(REF_PREFIX + "%"))
                       .group_by(d.c.contact_id).subquery())
        d2 = d.alias("d2")
        existing = r.alias("existing")
        ci = ContactIdentity.__table__
        candidates = (
            select(rc.c.contact_id, d2.c.contact_id, rc.c.code, d2.c.created_at,
                   ci.c.created_at)
            .select_from(first_start.join(d2, d2.c.id == first_start.c.start_id)
                         .join(rc, func.lower(d2.c.payload) == literal(REF_PREFIX)
                               + rc.c.code)
                         .join(ci, and_(ci.c.contact_id == d2.c.contact_id,
                                        ci.c.platform == d2.c.platform)))
            .where(rc.c.contact_id != d2.c.contact_id,
                   ~select(existing.c.id).where(existing.c.referee_id == d2.c.contact_id)
                   .exists())
        )
        o = Order.__table__
        async with self.db.session() as session:
            # A join is a member whose account appeared with the /start ref-... (not someone
            # who had talked to the bot before and tapped a friend's link later).
            new: dict[int, dict[str, object]] = {}
            for referrer, referee, code, started, created in await session.execute(candidates):
                if started - created <= JOIN_WINDOW and referee not in new:
                    new[referee] = {"referrer_id": referrer, "referee_id": referee,
                                    "code": code, "joined_at": started}
            if new:
                await session.execute(insert(Referral), list(new.values()))
            after_join = (o.c.contact_id == r.c.referee_id, o.c.ordered_at >= r.c.joined_at)
            first = (select(o.c.id).where(*after_join)
                     .order_by(o.c.ordered_at, o.c.id).limit(1).scalar_subquery())
            orders = await session.execute(
                update(Referral).where(r.c.first_order_id.is_(None), exists().where(*after_join))
                .values(first_order_id=first))
            await session.execute(
                update(Referral).where(r.c.first_order_id.is_not(None),
                                       r.c.first_order_at.is_(None))
                .values(first_order_at=select(o.c.ordered_at).where(
                    o.c.id == r.c.first_order_id).scalar_subquery()))
            owed: list[tuple[int, int, str, str]] = []
            for ref in (await session.execute(select(Referral))).scalars():
                owed.append((ref.id, ref.referrer_id, "referrer", "join"))
                owed.append((ref.id, ref.referee_id, "referee", "join"))
                if ref.first_order_id is not None:
                    owed.append((ref.id, ref.referrer_id, "referrer", "first_order"))
                    owed.append((ref.id, ref.referee_id, "referee", "first_order"))
            done = set((await session.execute(select(Reward.key).where(
                Reward.referral_id.is_not(None)))).scalars())
        rewards = 0
        for referral_id, contact_id, side, reason in owed:
            key = f"referral:{referral_id}:{side}:{reason}"
            if key in done:
                continue
            await self.reward(contact_id, key=key, reason=reason, referral_id=referral_id,
                              side=side)
            rewards += 1
        updated = orders.rowcount or 0  # type: ignore[attr-defined]
        return ReferralSync(len(new), max(updated, 0), rewards)

    async def reward(self, contact_id: int, *, key: str, reason: str,
                     referral_id: int | None = None, side: str | None = None) -> Reward | None:
        """Record (and issue, through the issuer) one reward; a ``key`` is rewarded once."""
        return await record_reward(self.db, self.issuer, contact_id, key=key, reason=reason,
                                   referral_id=referral_id, side=side)

    async def rewards(self, contact_id: int | None = None) -> list[Reward]:
        async with self.db.session() as session:
            stmt = select(Reward).order_by(Reward.id)
            if contact_id is not None:
                stmt = stmt.where(Reward.contact_id == contact_id)
            return list((await session.execute(stmt)).scalars())

    async def leaderboard(self, *, limit: int = 20) -> list[LeaderboardRow]:
        """Top members by KOC score, computed live (no recompute needed)."""
        pol = self.policy
        r = Referral.__table__
        e = MemberEvent.__table__
        refs = (select(r.c.referrer_id.label("cid"), func.count().label("joins"),
                       func.count(r.c.first_order_at).label("orders"))
                .group_by(r.c.referrer_id).subquery())
        evs = (select(e.c.contact_id.label("cid"),
                      func.sum(case((e.c.kind == "helpful_answer", 1), else_=0)).label("helpful"),
                      func.sum(case((e.c.kind == "positive_feedback", 1), else_=0)).label("pos"))
               .where(e.c.kind.in_(("helpful_answer", "positive_feedback")))
               .group_by(e.c.contact_id).subquery())
        ids = select(refs.c.cid).union(select(evs.c.cid)).subquery()
        joins = func.coalesce(refs.c.joins, 0)
        orders = func.coalesce(refs.c.orders, 0)
        helpful = func.coalesce(evs.c.helpful, 0)
        pos = func.coalesce(evs.c.pos, 0)
        score = (joins * pol.koc_join + orders * pol.koc_first_order
                 + helpful * pol.koc_helpful_answer + pos * pol.koc_positive_feedback)
        c = Contact.__table__
        stmt = (select(ids.c.cid, c.c.display_name, score, joins, orders, helpful, pos)
                .select_from(ids.join(c, c.c.id == ids.c.cid)
                             .outerjoin(refs, refs.c.cid == ids.c.cid)
                             .outerjoin(evs, evs.c.cid == ids.c.cid))
                .order_by(score.desc(), ids.c.cid).limit(limit))
        async with self.db.session() as session:
            rows = (await session.execute(stmt)).all()
        return [LeaderboardRow(int(x[0]), x[1], float(x[2]), int(x[3]), int(x[4]), int(x[5]),
                               int(x[6])) for x in rows]


__all__ = ["KocService", "LeaderboardRow", "RecordingIssuer", "ReferralSync", "RewardIssuer"]
