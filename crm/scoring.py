"""Tiers (RFM), LTV factors, "needs care" and KOC scores for every member, recomputed by
set-based SQL (one DELETE + one INSERT ... SELECT; no per-member Python)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
)

from crm.policy import CrmPolicy
from models.base import UTCDateTime, utcnow
from models.contact import Contact
from models.crm import ContactTag, MemberEvent, MemberStats, Order, Referral
from models.db import Database


@dataclass(frozen=True)
class RecomputeResult:
    members: int
    tiers: dict[str, int]
    needs_care: int
    seconds: float


def _days_between(now: Any, then: Any, sqlite: bool) -> Any:
    """(now - then) in days as a float, on SQLite and PostgreSQL."""
    if sqlite:
        return func.julianday(now) - func.julianday(then)
    return func.extract("epoch", now - then) / 86400.0


def _bucket(cd: Any) -> Any:
    """A cume_dist in (0, 1] as a 1-5 score (ties get the same score)."""
    return case((cd <= 0.2, 1), (cd <= 0.4, 2), (cd <= 0.6, 3), (cd <= 0.8, 4), else_=5)


class ScoringService:
    """Recomputes ``crm_member_stats`` for all members (see :class:`CrmPolicy` for the
    tier and LTV rules)."""

    def __init__(self, *, db: Database, policy: CrmPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or CrmPolicy()

    def _koc_and_care(self, cid: Any, care_cutoff: Any) -> tuple[Any, Any]:
        """KOC score and needs-care flag of member ``cid`` (correlated, index-backed)."""
        pol = self.policy
        r = Referral.__table__.alias("r")
        e = MemberEvent.__table__.alias("e")
        e2 = MemberEvent.__table__.alias("e2")
        t2 = ContactTag.__table__.alias("t2")
        joins = select(func.count()).where(r.c.referrer_id == cid).scalar_subquery()
        orders = select(func.count(r.c.first_order_at)).where(
            r.c.referrer_id == cid).scalar_subquery()
        helpful = select(func.count()).where(e.c.contact_id == cid,
                                             e.c.kind == "helpful_answer").scalar_subquery()
        positive = select(func.count()).where(e.c.contact_id == cid,
                                              e.c.kind == "positive_feedback").scalar_subquery()
        koc = (joins * pol.koc_join + orders * pol.koc_first_order
               + helpful * pol.koc_helpful_answer + positive * pol.koc_positive_feedback)
        care = or_(
            exists().where(e2.c.contact_id == cid, e2.c.kind == "complaint",
                           e2.c.created_at >= care_cutoff),
            exists().where(t2.c.contact_id == cid, t2.c.tag.in_(pol.care_tags)),
        )
        return koc, care

    def statements(self, now: datetime) -> list[Any]:
        """The two INSERT ... SELECTs that fill ``crm_member_stats``: buyers (RFM by
        ``cume_dist`` windows over one GROUP BY of the orders) and members without orders
        (dormant). Exposed for EXPLAIN."""
        pol = self.policy
        sqlite = self.db.is_sqlite
        now_p = bindparam("now", now, type_=UTCDateTime())
        care_cutoff = bindparam("care_cutoff", now - timedelta(days=pol.needs_care_days),
                                type_=UTCDateTime())
        dormant_cutoff = bindparam("dormant_cutoff", now - timedelta(days=pol.dormant_after_days),
                                   type_=UTCDateTime())
        o = Order.__table__
        since_90 = o.c.ordered_at >= bindparam("since_90", now - timedelta(days=90),
                                               type_=UTCDateTime())
        since_365 = o.c.ordered_at >= bindparam("since_365", now - timedelta(days=365),
                                                type_=UTCDateTime())
        agg = (select(o.c.contact_id.label("cid"), func.count().label("n"),
                      cast(func.sum(o.c.amount), Float).label("spend"),
                      func.min(o.c.ordered_at).label("first_at"),
                      func.max(o.c.ordered_at).label("last_at"),
                      cast(func.sum(case((since_90, o.c.amount), else_=0)), Float)
                      .label("spend_90d"),
                      cast(func.sum(case((since_365, o.c.amount), else_=0)), Float)
                      .label("spend_365d"),
                      func.count(case((since_90, 1))).label("orders_90d"),
                      func.count(case((since_365, 1))).label("orders_365d"))
               .group_by(o.c.contact_id).subquery("agg"))
        ranked = select(
            agg,
            func.cume_dist().over(order_by=agg.c.last_at).label("r_cd"),
            func.cume_dist().over(order_by=agg.c.n).label("f_cd"),
            func.cume_dist().over(order_by=agg.c.spend).label("m_cd"),
        ).subquery("ranked")
        koc, care = self._koc_and_care(ranked.c.cid, care_cutoff)
        tenure = _days_between(now_p, ranked.c.first_at, sqlite)
        stage = (
            select(
                ranked.c.cid.label("contact_id"),
                ranked.c.n.label("order_count"),
                ranked.c.spend.label("total_spend"),
                ranked.c.first_at.label("first_order_at"),
                ranked.c.last_at.label("last_order_at"),
                ranked.c.spend_90d, ranked.c.spend_365d, ranked.c.orders_90d,
                ranked.c.orders_365d,
                _days_between(now_p, ranked.c.last_at, sqlite).label("recency_days"),
                _bucket(ranked.c.r_cd).label("r_score"),
                _bucket(ranked.c.f_cd).label("f_score"),
                _bucket(ranked.c.m_cd).label("m_score"),
                care.label("needs_care"),
                (ranked.c.spend / ranked.c.n).label("avg_order_value"),
                (ranked.c.n * 365.25 / case((tenure < pol.min_tenure_days,
                                             float(pol.min_tenure_days)), else_=tenure)
                 ).label("purchases_per_year"),
                (ranked.c.last_at < dormant_cutoff).label("dormant"),
                koc.label("koc_score"),
            )
            .subquery("stage")
        )
        rfm = stage.c.r_score + stage.c.f_score + stage.c.m_score
        years = pol.expected_years
        tier = case(
            (stage.c.dormant, "dormant"),
            (rfm >= pol.best_min_rfm, "best"),
            (rfm >= pol.good_min_rfm, "good"),
            else_="regular",
        )
        expected = case(
            (stage.c.dormant, years.get("dormant", 0.5)),
            (rfm >= pol.best_min_rfm, years.get("best", 5.0)),
            (rfm >= pol.good_min_rfm, years.get("good", 3.0)),
            else_=years.get("regular", 2.0),
        )
        computed = literal(now, UTCDateTime())
        buyers = select(
            stage.c.contact_id, stage.c.order_count, stage.c.total_spend,
            stage.c.first_order_at, stage.c.last_order_at, stage.c.spend_90d,
            stage.c.spend_365d, stage.c.orders_90d, stage.c.orders_365d, stage.c.recency_days,
            cast(stage.c.r_score, Integer), cast(stage.c.f_score, Integer),
            cast(stage.c.m_score, Integer), tier.label("tier"), stage.c.needs_care,
            stage.c.avg_order_value, stage.c.purchases_per_year,
            cast(expected, Float).label("expected_years"),
            (stage.c.avg_order_value * stage.c.purchases_per_year * expected).label("ltv"),
            cast(stage.c.koc_score, Float), computed.label("computed_at"),
        )
        c = Contact.__table__
        o2 = Order.__table__.alias("o2")
        koc0, care0 = self._koc_and_care(c.c.id, care_cutoff)
        zero: Any = literal_column("0")
        fzero: Any = literal_column("0.0")
        never = cast(null(), UTCDateTime())
        others = select(
            c.c.id, zero, fzero, never, never, fzero, fzero, zero, zero,
            cast(null(), Float), zero, zero, zero,
            literal_column("'dormant'"), care0, fzero, fzero,
            literal_column(repr(float(years.get("dormant", 0.5)))), fzero, cast(koc0, Float),
            computed,
        ).where(~exists().where(o2.c.contact_id == c.c.id))
        cols = ["contact_id", "order_count", "total_spend", "first_order_at", "last_order_at",
                "spend_90d", "spend_365d", "orders_90d", "orders_365d", "recency_days", "r_score", "f_score", "m_score", "tier", "needs_care",
                "avg_order_value", "purchases_per_year", "expected_years", "ltv", "koc_score",
                "computed_at"]
        return [insert(MemberStats).from_select(cols, buyers),
                insert(MemberStats).from_select(cols, others)]

    async def recompute(self, *, now: datetime | None = None) -> RecomputeResult:
        """Rebuild every member's tier, RFM, LTV factors, needs-care flag and KOC score in
        one transaction (readers see the old numbers until it commits)."""
        import time

        started = time.perf_counter()
        now = now or utcnow()
        async with self.db.session() as session:
            if self.db.is_sqlite:
                await session.execute(delete(MemberStats))
            else:
                await session.execute(text("TRUNCATE crm_member_stats"))
            for statement in self.statements(now):
                await session.execute(statement)
            rows = (await session.execute(
                select(MemberStats.tier, func.count(),
                       func.sum(case((MemberStats.needs_care, 1), else_=0)))
                .group_by(MemberStats.tier))).all()
        if not self.db.is_sqlite:
            async with self.db.engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE crm_member_stats"))
        tiers = {t: 0 for t in ("dormant", "regular", "good", "best")}
        care = 0
        for tier, count, needs in rows:
            tiers[tier] = int(count)
            care += int(needs or 0)
        return RecomputeResult(sum(tiers.values()), tiers, care,
                               time.perf_counter() - started)


__all__ = ["RecomputeResult", "ScoringService"]
