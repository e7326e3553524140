"""Tier distribution and LTV histogram (aggregated in SQL, drawn as inline SVG on the
server), and the KOC leaderboard."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import case, func, select

from console.auth import Who
from console.crm_pages import (
    bar_chart,
    crm_of,
    crm_off_page,
    crm_page,
    money,
    need_crm,
    number,
    short_number,
)
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError
from crm import CrmService
from crm.rules import TIERS
from models.advisors import Role
from models.contact import Contact
from models.crm import MemberStats

MAX_BUCKETS = 12
LEADERBOARD = 50


async def tier_distribution(crm: CrmService) -> dict[str, Any]:
    """Members per tier with their average LTV factors: one GROUP BY over the computed stats
    (plus a count of members; those never scored count as dormant, like in segments)."""
    st = MemberStats.__table__
    buyer = st.c.order_count > 0
    stmt = (select(st.c.tier, func.count(), func.coalesce(func.sum(st.c.ltv), 0.0),
                   func.avg(case((buyer, st.c.avg_order_value))),
                   func.avg(case((buyer, st.c.purchases_per_year))),
                   func.avg(case((buyer, st.c.expected_years))),
                   func.count(case((buyer, 1))), func.max(st.c.computed_at))
            .group_by(st.c.tier))
    async with crm.db.session() as session:
        await crm.segments.tune(session)
        members = int(await session.scalar(select(func.count()).select_from(Contact)) or 0)
        rows = (await session.execute(stmt)).all()
    found = {r[0]: r for r in rows}
    scored = sum(int(r[1]) for r in rows)
    computed: list[datetime] = [r[7] for r in rows if r[7] is not None]
    tiers = []
    for tier in TIERS:
        r = found.get(tier)
        count = int(r[1]) if r else 0
        if tier == "dormant":
            count += max(members - scored, 0)
        total_ltv = float(r[2]) if r else 0.0
        tiers.append({
            "tier": tier, "members": count, "buyers": int(r[6]) if r else 0,
            "total_ltv": round(total_ltv, 2),
            "avg_ltv": round(total_ltv / count, 2) if count else 0.0,
            "avg_order_value": None if not r or r[3] is None else round(float(r[3]), 2),
            "purchases_per_year": None if not r or r[4] is None else round(float(r[4]), 3),
            "expected_years": None if not r or r[5] is None else round(float(r[5]), 2),
        })
    return {"members": members, "not_scored": max(members - scored, 0), "tiers": tiers,
            "computed_at": max(computed) if computed else None}


def ltv_edges(low: float, high: float, *, max_buckets: int = MAX_BUCKETS) -> list[float]:
    """Bucket edges for LTVs in [low, high] (both > 0): 1-2-5 steps (¥1k, 2k, 5k, 10k…),
    decades when that makes too many buckets."""
    def series(steps: tuple[int, ...]) -> list[float]:
        exp = math.floor(math.log10(low))
        out: list[float] = []
        while True:
            for step in steps:
                edge = step * 10.0 ** exp
                if edge <= low:
                    out = [edge]
                elif out:
                    out.append(edge)
                    if edge > high:
                        return out
            exp += 1

    edges = series((1, 2, 5))
    if len(edges) - 1 > max_buckets:
        edges = series((1,))
    return edges


async def ltv_histogram(crm: CrmService) -> dict[str, Any]:
    """Members per LTV bucket: the range in one query, then one GROUP BY over a CASE."""
    st = MemberStats.__table__
    async with crm.db.session() as session:
        await crm.segments.tune(session)
        total, positive, low, high = (await session.execute(select(
            func.count(), func.count(case((st.c.ltv > 0, 1))),
            func.min(case((st.c.ltv > 0, st.c.ltv))), func.max(st.c.ltv)))).one()
        edges = ltv_edges(float(low), float(high)) if positive else []
        whens: list[Any] = [(st.c.ltv <= 0, 0)]
        whens += [(st.c.ltv < edge, i) for i, edge in enumerate(edges[1:-1], start=1)]
        bucket = case(*whens, else_=max(len(edges) - 1, 0)).label("bucket")
        inner = select(bucket, st.c.ltv).subquery()
        rows = (await session.execute(
            select(inner.c.bucket, func.count(), func.sum(inner.c.ltv))
            .group_by(inner.c.bucket))).all()
    counts = {int(b): (int(n), float(v or 0)) for b, n, v in rows}
    buckets = [{"low": 0.0, "high": 0.0, "label": "¥0", "members": counts.get(0, (0, 0))[0],
                "total_ltv": 0.0}]
    for i in range(1, len(edges)):
        n, v = counts.get(i, (0, 0.0))
        buckets.append({"low": edges[i - 1], "high": edges[i],
                        "label": f"¥{short_number(edges[i - 1])}–{short_number(edges[i])}",
                        "members": n, "total_ltv": round(v, 2)})
    return {"scored": int(total), "with_ltv": int(positive), "buckets": buckets}


async def koc_rows(crm: CrmService, limit: int) -> list[dict[str, Any]]:
    """The live KOC leaderboard with each member's tier."""
    board = await crm.koc.leaderboard(limit=limit)
    ids = [r.contact_id for r in board]
    tiers: dict[int, str] = {}
    if ids:
        async with crm.db.session() as session:
            tiers = {int(cid): str(t) for cid, t in await session.execute(
                select(MemberStats.contact_id, MemberStats.tier)
                .where(MemberStats.contact_id.in_(ids)))}
    return [{"rank": i, "contact_id": r.contact_id, "display_name": r.display_name,
             "score": r.score, "referrals": r.joins, "first_orders": r.first_orders,
             "helpful_answers": r.helpful_answers, "positive_feedback": r.positive_feedback,
             "tier": tiers.get(r.contact_id, "dormant")}
            for i, r in enumerate(board, start=1)]


def _tier_table(tiers: list[dict[str, Any]]) -> Markup:
    return join(fmt('<tr><td><span class="tier tier-{}">{}</span></td><td class="num">{}</td>'
                    '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>'
                    '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>',
                    t["tier"], t["tier"], number(t["members"]), number(t["buyers"]),
                    money(t["avg_order_value"]), number(t["purchases_per_year"], 2),
                    number(t["expected_years"], 1), money(t["avg_ltv"]), money(t["total_ltv"]))
                for t in tiers)


def register(c: Console) -> None:
    @c.page("/crm/insights", role=Role.MANAGER)
    async def insights_page(request: web.Request, who: Who) -> web.StreamResponse:
        crm = crm_of(c)
        if crm is None:
            return crm_off_page(c, request, who, title="Tiers & LTV", section="/crm/insights")
        started = time.perf_counter()
        dist = await tier_distribution(crm)
        hist = await ltv_histogram(crm)
        ms = (time.perf_counter() - started) * 1000
        tier_chart = bar_chart(
            [(t["tier"], float(t["members"]),
              f"{t['tier']}: {t['members']:,} members"
              + (f" ({dist['not_scored']:,} not scored yet)"
                 if t["tier"] == "dormant" and dist["not_scored"] else ""))
             for t in dist["tiers"]], label="Members per tier", css="tiers")
        ltv_chart = bar_chart(
            [(b["label"].partition("–")[0], float(b["members"]),
              f"LTV {b['label']}: {b['members']:,} members") for b in hist["buckets"]],
            label="Members per lifetime value", css="ltv", height=280)
        computed = dist["computed_at"]
        body = render(
            "crm_insights.html", tier_chart=tier_chart, ltv_chart=ltv_chart,
            tier_rows=_tier_table(dist["tiers"]), members=number(dist["members"]),
            not_scored=number(dist["not_scored"]), with_ltv=number(hist["with_ltv"]),
            computed=computed.strftime("%Y-%m-%d %H:%M UTC") if computed else "never",
            ms=f"{ms:,.0f}")
        return crm_page(c, request, who, title="Tiers & LTV", section="/crm/insights",
                        body=body, page="crm-insights")

    @c.api("GET", "/api/crm/insights", role=Role.MANAGER)
    async def insights_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        return c.json({"tiers": await tier_distribution(crm),
                       "ltv": await ltv_histogram(crm)})

    def limit_of(request: web.Request) -> int:
        raw = request.query.get("limit", str(LEADERBOARD))
        if not raw.isdigit() or not 1 <= int(raw) <= 500:
            raise ConsoleError(400, "limit: a number from 1 to 500")
        return int(raw)

    @c.page("/crm/koc", role=Role.MANAGER)
    async def koc_page(request: web.Request, who: Who) -> web.StreamResponse:
        crm = crm_of(c)
        if crm is None:
            return crm_off_page(c, request, who, title="KOC leaderboard", section="/crm/koc")
        rows = await koc_rows(crm, limit_of(request))
        pol = crm.policy
        body = render(
            "crm_koc.html",
            rows=join(fmt(
                '<tr><td class="num">{}</td><td><a href="{}">{}</a></td>'
                '<td><span class="tier tier-{}">{}</span></td><td class="num"><strong>{}'
                '</strong></td><td class="num">{}</td><td class="num">{}</td>'
                '<td class="num">{}</td><td class="num">{}</td></tr>',
                r["rank"], c.url(f"/crm/members/{r['contact_id']}"),
                r["display_name"] or f"Member #{r['contact_id']}", r["tier"], r["tier"],
                number(r["score"]), r["referrals"], r["first_orders"], r["helpful_answers"],
                r["positive_feedback"]) for r in rows) if rows else Markup(
                '<tr><td colspan="8" class="muted">No KOC activity yet: invites, helpful '
                'answers and positive feedback score here.</td></tr>'),
            join_w=number(pol.koc_join), order_w=number(pol.koc_first_order),
            helpful_w=number(pol.koc_helpful_answer),
            positive_w=number(pol.koc_positive_feedback))
        return crm_page(c, request, who, title="KOC leaderboard", section="/crm/koc",
                        body=body, page="crm-koc")

    @c.api("GET", "/api/crm/koc", role=Role.MANAGER)
    async def koc_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        return c.json({"leaderboard": await koc_rows(crm, limit_of(request))})
