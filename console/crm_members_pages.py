"""Member search and the member profile (tags, opt-out/opt-in, invite link) for managers.

Search is built for a million members: the query's shape picks a few lookups, each with a
LIMIT, instead of one ``LIKE '%…%'`` over everything:

* digits: the member id (primary key), a platform id (``(platform, external_id)`` unique
  index), a phone number (``crm_profiles.phone`` index);
* ``platform:id``, ``shop:ID``, an e-mail (or its start), a phone number: their indexes only
  (never a scan of the names);
* other text: a prefix of a shop customer id (unique index) and of the name; ``@name``: a
  prefix of a username. Prefixes are written as a range, ``lower(display_name) >= 'han' AND
  < 'hao'`` (plus the exact LIKE), so a plain expression index on ``lower(display_name)`` /
  ``lower(username)`` serves them even in a generic prepared plan. The schema has no such
  index yet (a migration is wished for); until then a name prefix is a scan that stops at
  the LIMIT when the prefix is common, and on PostgreSQL a search is cut at 3 seconds.

The page's script waits for a pause in typing (debounce) and drops stale answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import and_, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from console.auth import Who
from console.crm_pages import (
    crm_errors,
    crm_of,
    crm_off_page,
    crm_page,
    distinct_tags,
    distinct_values,
    money,
    need_crm,
    number,
)
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError, path_int
from crm import CrmService
from crm.normalise import normalise_phone
from crm.rules import base_from
from crm.rules import c as ct
from crm.rules import p as pt
from crm.rules import s as st
from models.advisors import Role
from models.community import CommunityGroup
from models.community import Member as GroupMember
from models.contact import Contact, ContactIdentity
from models.conversation import Conversation
from models.crm import MemberEvent, Referral, ReferralCode

SEARCH_LIMIT = 20
MAX_QUERY = 128
PLATFORMS_TTL = 600.0  # seconds the list of platforms is reused for platform-id lookups
RECENT_ORDERS = 10
_MATCH_ORDER = ("member id", "platform id", "shop id", "e-mail", "phone", "username", "name")
_PHONE = re.compile(r"\+?[\d\-\s().]{6,24}")


# ---------------------------------------------------------------------- search
def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _next_prefix(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` ('han' -> 'hao')."""
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000
    if code > 0x10FFFF:
        return None
    return prefix[:-1] + chr(code)


def starts_with(expr: Any, prefix: str) -> Any:
    """``expr`` starts with ``prefix``: a range (index-friendly under any opclass) plus the
    LIKE that keeps it exact under any collation."""
    conds = [expr >= prefix, expr.like(_escape_like(prefix) + "%", escape="\\")]
    upper = _next_prefix(prefix)
    if upper is not None:
        conds.append(expr < upper)
    return and_(*conds)


async def known_platforms(c: Console, crm: CrmService) -> list[str]:
    """The platforms members have identities on (for ``platform IN (...) AND external_id
    = ?`` on the (platform, external_id) index; found by walking that index), looked up
    again every ``PLATFORMS_TTL`` seconds."""
    cached = c.extras.get("crm_platforms")
    now = time.monotonic()
    if isinstance(cached, tuple) and now - cached[0] < PLATFORMS_TTL:
        return list(cached[1])
    found = await distinct_values(crm, ContactIdentity.__table__.c.platform, 50)
    c.extras["crm_platforms"] = (now, tuple(found))
    return found


async def search_members(crm: CrmService, query: str, *, platforms: Sequence[str] = (),
                         limit: int = SEARCH_LIMIT) -> tuple[list[dict[str, Any]], bool]:
    """Members matching ``query`` (see the module docstring), at most ``limit``; the flag
    says there were more."""
    q = " ".join(query.split())[:MAX_QUERY]
    if not q:
        return [], False
    hits: dict[int, str] = {}
    lowered = q.lower()
    single = " " not in q
    async with crm.db.session() as session:
        if not crm.db.is_sqlite:  # a runaway name scan must not pile up behind keystrokes
            await session.execute(text("SET LOCAL statement_timeout = '3s'"))

        async def add(stmt: Any, why: str) -> None:
            if len(hits) > limit:
                return
            for cid in (await session.execute(stmt.limit(limit + 1))).scalars():
                hits.setdefault(int(cid), why)

        # Ids, e-mails, phone numbers and platform ids are looked up on their indexes and
        # never start a scan of the names.
        key = False
        if q.isdigit() and len(q) <= 18:
            key = True
            await add(select(Contact.id).where(Contact.id == int(q)), "member id")
        if lowered.startswith("shop:"):
            key = True
            await add(select(pt.c.contact_id).where(pt.c.shop_customer_id == q[5:].strip()),
                      "shop id")
        elif single and "@" not in q:
            for variant in dict.fromkeys((q, q.upper())):
                await add(select(pt.c.contact_id).where(
                    starts_with(pt.c.shop_customer_id, variant)), "shop id")
        platform, colon, ext = q.partition(":")
        if colon and ext and single and "@" not in q and platform.lower() != "shop":
            key = True
            await add(select(ContactIdentity.contact_id).where(
                ContactIdentity.platform == platform.lower(),
                ContactIdentity.external_id == ext), "platform id")
        elif single and platforms and "@" not in q:
            await add(select(ContactIdentity.contact_id).where(
                ContactIdentity.platform.in_(list(platforms)),
                ContactIdentity.external_id == q), "platform id")
        if "@" in q[1:] and single:
            key = True
            await add(select(pt.c.contact_id).where(starts_with(pt.c.email, lowered)),
                      "e-mail")
        if _PHONE.fullmatch(q) and sum(ch.isdigit() for ch in q) >= 6:
            key = True
            try:
                phone = normalise_phone(q, crm.policy.default_country_code)
            except ValueError:
                phone = None
            if phone:
                await add(select(pt.c.contact_id).where(pt.c.phone == phone), "phone")
        # Names and usernames by their start. No ORDER BY: without an index on
        # lower(display_name) it would read every match; the few found are sorted below.
        if q.startswith("@") and len(q) > 1 and single:
            await add(select(ContactIdentity.contact_id).where(
                starts_with(func.lower(ContactIdentity.username), lowered[1:])), "username")
        elif not key and not q.startswith("@"):
            await add(select(ct.c.id).where(starts_with(func.lower(ct.c.display_name),
                                                        lowered)), "name")
            if crm.db.is_sqlite and not q.isascii():  # SQLite's lower() is ASCII-only
                await add(select(ct.c.id).where(starts_with(ct.c.display_name, q)), "name")
        ids = list(hits)[:limit]
        rows = await _summaries(session, ids)
    for row in rows:
        row["matched"] = hits[row["contact_id"]]
    rows.sort(key=lambda r: (_MATCH_ORDER.index(r["matched"]),
                             (r["display_name"] or "").lower(), r["contact_id"]))
    return rows, len(hits) > limit


async def _summaries(session: AsyncSession, ids: list[int]) -> list[dict[str, Any]]:
    """One row per member id (in the given order): name, tier, spend, platforms."""
    if not ids:
        return []
    stmt = (select(ct.c.id, ct.c.display_name, ct.c.language, st.c.tier, st.c.total_spend,
                   st.c.order_count, st.c.ltv, st.c.koc_score, st.c.needs_care,
                   pt.c.shop_customer_id, pt.c.email, pt.c.opted_out_at, pt.c.marketing_consent)
            .select_from(base_from()).where(ct.c.id.in_(ids)))
    found: dict[int, dict[str, Any]] = {}
    for r in await session.execute(stmt):
        found[int(r.id)] = {
            "contact_id": int(r.id), "display_name": r.display_name, "language": r.language,
            "tier": r.tier or "dormant", "total_spend": float(r.total_spend or 0),
            "order_count": int(r.order_count or 0), "ltv": float(r.ltv or 0),
            "koc_score": float(r.koc_score or 0), "needs_care": bool(r.needs_care),
            "shop_customer_id": r.shop_customer_id, "email": r.email,
            "marketable": r.opted_out_at is None and r.marketing_consent is not False,
            "identities": []}
    idents = await session.execute(
        select(ContactIdentity.contact_id, ContactIdentity.platform, ContactIdentity.username)
        .where(ContactIdentity.contact_id.in_(ids)).order_by(ContactIdentity.id))
    for cid, platform, username in idents:
        if int(cid) in found:
            found[int(cid)]["identities"].append({"platform": platform, "username": username})
    return [found[i] for i in ids if i in found]


# ---------------------------------------------------------------------- profile
async def member_details(crm: CrmService, contact_id: int) -> dict[str, Any]:
    """The profile (``ProfileView``) plus consent, groups, KOC numbers, referrals, invite
    code and the latest conversations: a handful of indexed queries on one member."""
    with crm_errors():
        view = await crm.members.profile(contact_id, recent=RECENT_ORDERS)
    needs_senior = await crm.members.needs_senior(contact_id)
    pol = crm.policy
    async with crm.db.session() as session:
        consent = (await session.execute(select(pt.c.marketing_consent, pt.c.opted_out_at).where(
            pt.c.contact_id == contact_id))).first()
        since = await session.scalar(select(Contact.created_at).where(Contact.id == contact_id))
        groups = [
            {"group_id": int(r.id), "title": r.title, "platform": r.platform,
             "status": r.status, "joined_at": r.joined_at}
            for r in await session.execute(
                select(CommunityGroup.id, CommunityGroup.title, CommunityGroup.platform,
                       GroupMember.status, GroupMember.joined_at)
                .join(GroupMember, GroupMember.group_id == CommunityGroup.id)
                .where(GroupMember.contact_id == contact_id)
                .order_by(GroupMember.joined_at.desc()).limit(20))]
        joins, first_orders = (await session.execute(
            select(func.count(), func.count(Referral.first_order_at))
            .where(Referral.referrer_id == contact_id))).one()
        events = dict((str(k), int(n)) for k, n in await session.execute(
            select(MemberEvent.kind, func.count())
            .where(MemberEvent.contact_id == contact_id,
                   MemberEvent.kind.in_(("helpful_answer", "positive_feedback")))
            .group_by(MemberEvent.kind)))
        referee = Contact.__table__.alias("referee")
        referrals = [
            {"contact_id": int(r.referee_id), "display_name": r.display_name,
             "joined_at": r.joined_at, "first_order_at": r.first_order_at}
            for r in await session.execute(
                select(Referral.referee_id, referee.c.display_name, Referral.joined_at,
                       Referral.first_order_at)
                .join(referee, referee.c.id == Referral.referee_id)
                .where(Referral.referrer_id == contact_id)
                .order_by(Referral.joined_at.desc()).limit(20))]
        by = (await session.execute(
            select(Referral.referrer_id, Contact.display_name, Referral.joined_at)
            .join(Contact, Contact.id == Referral.referrer_id)
            .where(Referral.referee_id == contact_id))).first()
        code = await session.scalar(select(ReferralCode.code).where(
            ReferralCode.contact_id == contact_id))
        conversations = [
            {"id": int(r.id), "status": str(getattr(r.status, "value", r.status)),
             "created_at": r.created_at, "resolved_at": r.resolved_at}
            for r in await session.execute(
                select(Conversation.id, Conversation.status, Conversation.created_at,
                       Conversation.resolved_at)
                .where(Conversation.contact_id == contact_id)
                .order_by(Conversation.id.desc()).limit(5))]
    helpful = events.get("helpful_answer", 0)
    positive = events.get("positive_feedback", 0)
    live_score = (joins * pol.koc_join + first_orders * pol.koc_first_order
                  + helpful * pol.koc_helpful_answer + positive * pol.koc_positive_feedback)
    invite = None
    if code:
        invite = "ref-" + code
        if crm.koc.bot_username:
            invite = f"https://t.me/{crm.koc.bot_username.lstrip('@')}?start={invite}"
    return {
        "profile": view.to_dict(),
        "member_since": since,
        "consent": {"marketing_consent": consent[0] if consent else None,
                    "opted_out_at": consent[1] if consent else None,
                    "marketable": view.marketable},
        "needs_senior": needs_senior,
        "groups": groups,
        "koc": {"stored_score": view.koc_score, "live_score": float(live_score),
                "joins": int(joins), "first_orders": int(first_orders),
                "helpful_answers": helpful, "positive_feedback": positive,
                "weights": {"join": pol.koc_join, "first_order": pol.koc_first_order,
                            "helpful_answer": pol.koc_helpful_answer,
                            "positive_feedback": pol.koc_positive_feedback},
                "referrals": referrals,
                "referred_by": None if by is None else {
                    "contact_id": int(by[0]), "display_name": by[1], "joined_at": by[2]},
                "invite": invite},
        "conversations": conversations,
    }


def consent_text(consent: dict[str, Any]) -> str:
    if consent.get("opted_out_at"):
        return f"opted out on {_day(consent['opted_out_at'])}: no marketing, ever"
    value = consent.get("marketing_consent")
    if value is True:
        return "opted in"
    if value is False:
        return "declined marketing"
    return "not asked (started the chat themself): marketable"


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    return str(value or "")[:10] or "—"


def _name(value: Any, contact_id: int) -> str:
    return str(value) if value else f"Member #{contact_id}"


def _profile_body(c: Console, who: Who, d: dict[str, Any], tag_options: list[str]) -> Markup:
    v = d["profile"]
    cid = v["contact_id"]
    identities = join(fmt(
        '<li><span class="badge">{}</span> {} <small>{}</small>{}</li>', i["platform"],
        f"@{i['username']}" if i.get("username") else "", i["external_id"],
        Markup("") if i.get("reachable", True) else Markup(
            ' <span class="badge senior">unreachable</span>')) for i in v["identities"])
    groups = join(fmt('<li>{} <small>{} · {} · since {}</small></li>',
                      g["title"] or f"group {g['group_id']}", g["platform"], g["status"],
                      _day(g["joined_at"])) for g in d["groups"])
    facts: list[tuple[str, Any]] = [
        ("Member id", cid),
        ("Shop customer id", v["shop_customer_id"] or "—"),
        ("Platforms", fmt('<ul class="plain">{}</ul>', identities) if v["identities"]
         else "—"),
        ("Language", v["language"] or "—"),
        ("Birthday", v["birthday"] or "—"),
        ("Member level", v["member_level"] or "—"),
        ("Home store", v["home_store"] or "—"),
        ("Favourite products", ", ".join(v["favourite_products"]) or "—"),
        ("E-mail", v["email"] or "—"),
        ("Phone", v["phone"] or "—"),
        ("Time zone", v["timezone"] or "—"),
        ("Member since", _day(d["member_since"])),
        ("Groups", fmt('<ul class="plain">{}</ul>', groups) if d["groups"] else "—"),
    ]
    ltv = v["ltv"]
    scored = v["computed_at"] is not None
    rfm = v["rfm"] or {}
    if scored:
        ltv_html = render(
            "crm_ltv.html", aov=money(ltv.get("avg_order_value")),
            ppy=number(ltv.get("purchases_per_year"), 2),
            years=number(ltv.get("expected_years"), 1), ltv=money(ltv.get("ltv")),
            tier=v["tier"])
    else:
        ltv_html = Markup('<p class="muted">Not scored yet: tiers, RFM and LTV appear after '
                          'the nightly recompute (or <code>kizuna crm recompute</code>).</p>')
    value_rows: list[tuple[str, Any]] = [
        ("Tier", fmt('<span class="tier tier-{}">{}</span>', v["tier"], v["tier"])),
        ("RFM", f"R {rfm.get('r', 0)} · F {rfm.get('f', 0)} · M {rfm.get('m', 0)}"
         f" (last order {rfm.get('recency_days', '—')} days ago)" if scored and
         v["order_count"] else "—"),
        ("Needs care", Markup('<span class="badge senior">yes</span>') if v["needs_care"]
         else "no"),
        ("Senior advisor", "yes (complaint, care tag, needs care or best tier)"
         if d["needs_senior"] else "no"),
        ("Orders", v["order_count"]),
        ("Total spend", money(v["total_spend"])),
        ("Last order", _day(v["last_order_at"]) if v["last_order_at"] else "—"),
        ("Scored", _day(v["computed_at"]) if scored else "not yet"),
    ]
    koc = d["koc"]
    referrals = join(fmt('<li><a href="{}">{}</a> <small>joined {}{}</small></li>',
                         c.url(f"/crm/members/{r['contact_id']}"),
                         _name(r["display_name"], r["contact_id"]), _day(r["joined_at"]),
                         f", first order {_day(r['first_order_at'])}"
                         if r["first_order_at"] else "")
                     for r in koc["referrals"])
    by = koc["referred_by"]
    koc_rows: list[tuple[str, Any]] = [
        ("KOC score", f"{koc['live_score']:,.0f} now"
         + (f" ({koc['stored_score']:,.0f} at the last recompute)" if scored else "")),
        ("Friends invited", f"{koc['joins']} joined · {koc['first_orders']} ordered"),
        ("Helpful answers", koc["helpful_answers"]),
        ("Positive feedback", koc["positive_feedback"]),
        ("Referred by", fmt('<a href="{}">{}</a>', c.url(f"/crm/members/{by['contact_id']}"),
                            _name(by["display_name"], by["contact_id"])) if by else "—"),
    ]
    orders = join(fmt('<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
                      '<td class="num">{}</td></tr>', _day(o["ordered_at"]), o["external_id"],
                      o["store"] or "", ", ".join(o["items"] or []), money(o["amount"]))
                  for o in v["recent_orders"])
    conversations = join(fmt('<li><a href="{}">Conversation #{}</a> <small>{} · {}</small>'
                             '</li>', c.url(f"/conversations/{x['id']}"), x["id"],
                             x["status"], _day(x["created_at"])) for x in d["conversations"])
    badges = [fmt('<span class="tier tier-{}">{}</span>', v["tier"], v["tier"])]
    if v["needs_care"]:
        badges.append(Markup('<span class="badge senior">needs care</span>'))
    if not v["marketable"]:
        badges.append(Markup('<span class="badge">no marketing</span>'))
    return render(
        "crm_member.html",
        name=_name(v["display_name"], cid), cid=cid, badges=join(badges, " "),
        back=c.url("/crm"), facts=_dl(facts), value=_dl(value_rows), ltv=ltv_html,
        tags=_tag_chips(v["tags"]),
        tag_options=join(fmt('<option value="{}"></option>', t) for t in tag_options),
        consent=consent_text(d["consent"]),
        opt_out_hidden=Markup("") if v["marketable"] else Markup(" hidden"),
        opt_in_hidden=Markup(" hidden") if v["marketable"] else Markup(""),
        orders=orders if v["recent_orders"] else Markup(
            '<tr><td colspan="5" class="muted">No orders.</td></tr>'),
        koc=_dl(koc_rows),
        referrals=fmt('<ul class="plain">{}</ul>', referrals) if koc["referrals"] else Markup(
            '<p class="muted">No invited friends yet.</p>'),
        invite=koc["invite"] or "",
        conversations=fmt('<ul class="plain">{}</ul>', conversations) if d["conversations"]
        else Markup('<p class="muted">No conversations.</p>'),
    )


def _dl(rows: list[tuple[str, Any]]) -> Markup:
    return fmt('<dl class="profile">{}</dl>',
               join(fmt("<dt>{}</dt><dd>{}</dd>", k, val) for k, val in rows))


def _tag_chips(tags: list[dict[str, str]]) -> Markup:
    return join(fmt('<li class="chip{}" data-tag="{}" title="{}">{} '
                    '<button type="button" class="remove" aria-label="Remove tag {}">×</button>'
                    '</li>', "" if t["source"] == "manual" else " auto", t["tag"],
                    "added by hand" if t["source"] == "manual" else f"automatic ({t['source']})",
                    t["tag"], t["tag"]) for t in tags)


# ---------------------------------------------------------------------- routes
def register(c: Console) -> None:
    @c.page("/crm", role=Role.MANAGER, nav="CRM")
    async def members_page(request: web.Request, who: Who) -> web.StreamResponse:
        if crm_of(c) is None:
            return crm_off_page(c, request, who, title="Members", section="/crm")
        q = request.query.get("q", "")[:MAX_QUERY]
        body = render("crm_members.html", q=q, limit=SEARCH_LIMIT)
        return crm_page(c, request, who, title="Members", section="/crm", body=body,
                        page="crm-members", scripts=("crm_members.js",))

    @c.api("GET", "/api/crm/members", role=Role.MANAGER)
    async def search_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        q = request.query.get("q", "")
        if len(q) > MAX_QUERY:
            raise ConsoleError(400, f"the search is limited to {MAX_QUERY} characters")
        started = time.perf_counter()
        platforms = await known_platforms(c, crm)
        try:
            results, more = await search_members(crm, q, platforms=platforms)
        except DBAPIError as exc:
            if "statement timeout" not in str(exc):
                raise
            raise ConsoleError(503, "the search took too long: type more of the name, or "
                                    "search by id, e-mail or phone") from None
        return c.json({"query": q, "results": results, "more": more, "limit": SEARCH_LIMIT,
                        "ms": round((time.perf_counter() - started) * 1000, 1)})

    @c.page("/crm/members/{contact_id}", role=Role.MANAGER)
    async def member_page(request: web.Request, who: Who) -> web.StreamResponse:
        crm = crm_of(c)
        if crm is None:
            return crm_off_page(c, request, who, title="Member", section="/crm")
        details = await member_details(crm, path_int(request, "contact_id"))
        body = _profile_body(c, who, details, await distinct_tags(crm))
        name = _name(details["profile"]["display_name"], details["profile"]["contact_id"])
        return crm_page(c, request, who, title=name, section="/crm", body=body,
                        page="crm-member", scripts=("crm_member.js",),
                        data={"contact-id": details["profile"]["contact_id"]})

    @c.api("GET", "/api/crm/members/{contact_id}", role=Role.MANAGER)
    async def member_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        return c.json(await member_details(crm, path_int(request, "contact_id")))

    async def tag_body(request: web.Request) -> str:
        data = await c.json_body(request)
        tag = data.get("tag")
        if not isinstance(tag, str):
            raise ConsoleError(400, "tag must be a text")
        return tag

    @c.api("POST", "/api/crm/members/{contact_id}/tags", role=Role.MANAGER)
    async def tag_add(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        cid = path_int(request, "contact_id")
        tag = await tag_body(request)
        with crm_errors():
            added = await crm.members.add_tag(cid, tag, actor=f"console:{who.username}")
            tags = await crm.members.tags(cid)
        return c.json({"added": added, "tags": tags})

    @c.api("POST", "/api/crm/members/{contact_id}/tags/remove", role=Role.MANAGER)
    async def tag_remove(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        cid = path_int(request, "contact_id")
        tag = await tag_body(request)
        with crm_errors():
            removed = await crm.members.remove_tag(cid, tag)
            tags = await crm.members.tags(cid)
        return c.json({"removed": removed, "tags": tags})

    @c.api("POST", "/api/crm/members/{contact_id}/opt-out", role=Role.MANAGER)
    async def opt_out(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        cid = path_int(request, "contact_id")
        data = await c.json_body(request)
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ConsoleError(400, "reason must be a text")
        note = f"console:{who.username}" + (f": {reason.strip()[:200]}" if reason and
                                             reason.strip() else "")
        with crm_errors():
            await crm.opt_out(cid, reason=note)
        return c.json({"marketable": await crm.members.is_marketable(cid)})

    @c.api("POST", "/api/crm/members/{contact_id}/opt-in", role=Role.MANAGER)
    async def opt_in(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        cid = path_int(request, "contact_id")
        with crm_errors():
            await crm.members.opt_in(cid)
        return c.json({"marketable": await crm.members.is_marketable(cid)})

    @c.api("POST", "/api/crm/members/{contact_id}/invite", role=Role.MANAGER)
    async def invite(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        with crm_errors():
            link = await crm.koc.invite_link(path_int(request, "contact_id"))
        return c.json({"invite": link})
