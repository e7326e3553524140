"""``kizuna groups ...``, ``kizuna drops ...`` and ``kizuna coupons ...`` for community managers.

Commands work on the database; the running bot picks changes up (new drops are scheduled
within ``community.job_sync_seconds``, a paused drop stops within one claim batch). Bad input
exits with status 2 and a message; nothing is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.cli.common import settings_from


# ----------------------------------------------------------------------------- plumbing
@asynccontextmanager
async def _community(args: argparse.Namespace) -> AsyncIterator[Any]:
    """The app's community services without starting the bot (no polling, no web server)."""
    from bot.app import KizunaApp
    from community.wiring import install

    app = KizunaApp(settings_from(args), with_knowledge_base=False)
    await app.db.upgrade()
    runtime = install(app)
    runtime._refresh_admins()
    try:
        yield runtime
    finally:
        for platform in app.platforms.values():
            if getattr(platform, "bot", None) is not None:  # Telegram: close its HTTP sessions
                await platform.stop()
        await app.db.dispose()


def _run(fn: Callable[[Any, argparse.Namespace], Awaitable[int | None]]) -> Callable[..., int]:
    def command(args: argparse.Namespace) -> int:
        from community.errors import CommunityError

        async def go() -> int | None:
            async with _community(args) as rt:
                return await fn(rt, args)

        try:
            return int(asyncio.run(go()) or 0)
        except CommunityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return command


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _dt(value: datetime | None, tz: str | None = None) -> str:
    if value is None:
        return "-"
    if tz:
        from zoneinfo import ZoneInfo

        return value.astimezone(ZoneInfo(tz)).strftime(f"%Y-%m-%d %H:%M {tz}")
    return value.strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- groups
async def groups_list(rt: Any, a: argparse.Namespace) -> int:
    rows = await rt.groups.list(pool=a.pool, tag=a.tag, include_removed=a.all)
    _table([[g.group.id, g.group.external_id, g.group.title, g.pool, g.group.member_count,
             g.group.capacity, g.group.status, ",".join(g.tags)] for g in rows],
           ["id", "chat", "title", "pool", "members", "capacity", "status", "tags"])
    pools = await rt.groups.pools()
    if pools:
        print()
        _table([[p.pool.name, p.groups, p.members, p.capacity, p.free, p.pool.alert_threshold,
                 p.pool.join_rule] for p in pools],
               ["pool", "groups", "members", "capacity", "free", "alert<", "join rule"])
    return 0


async def groups_show(rt: Any, a: argparse.Namespace) -> int:
    info = await rt.groups.info(a.group)
    g = info.group
    print(json.dumps({
        "id": g.id, "platform": g.platform, "chat": g.external_id, "title": g.title,
        "pool": info.pool, "tags": info.tags, "members": g.member_count,
        "capacity": g.capacity, "free": g.free, "status": g.status,
        "adopted_at": g.adopted_at.isoformat(),
    }, ensure_ascii=False, indent=2))
    return 0


async def groups_tag(rt: Any, a: argparse.Namespace) -> int:
    info = await rt.groups.tag(a.group, add=a.add or [], remove=a.remove or [])
    print(f"group {info.group.id} tags: {', '.join(info.tags) or '(none)'}")
    return 0


async def groups_pool(rt: Any, a: argparse.Namespace) -> int:
    pool = await rt.groups.configure_pool(
        a.name, capacity=a.capacity, alert_threshold=a.threshold,
        managers_chat=a.managers_chat, join_rule=a.join_rule, welcome_coupon=a.welcome_coupon)
    for ref in a.move or []:
        info = await rt.groups.move(ref, pool.name, capacity=a.capacity)
        print(f"group {info.group.id} ({info.group.title}) -> pool {pool.name}")
    info = await rt.groups.pool_info(pool.id)
    print(f"pool {pool.name}: {info.groups} group(s), {info.members}/{info.capacity} members, "
          f"{info.free} free, alert below {pool.alert_threshold}, join rule {pool.join_rule}, "
          f"welcome coupon {pool.welcome_coupon or '-'}, managers chat "
          f"{pool.managers_chat or '-'}")
    return 0


async def _start_url(rt: Any, code: str) -> str:
    telegram = rt.admins.get("telegram")
    if telegram is not None and not rt.settings.bot_username:
        await telegram.fetch_username()
    return str(rt.entry.start_url(code))


async def groups_link(rt: Any, a: argparse.Namespace) -> int:
    if a.code is None and (a.close or a.reopen or a.pool):
        from community.errors import CommunityError

        raise CommunityError("give the entry link's code (kizuna groups link CODE ...)")
    if a.code is None:
        links = await rt.entry.links()
        _table([[link.code, pool, link.campaign, link.store, link.group_tag, link.join_mode,
                 "active" if link.active else "closed", visits, joins]
                for link, pool, visits, joins in links],
               ["code", "pool", "campaign", "store", "group tag", "mode", "state", "visits",
                "joins"])
        return 0
    from community.errors import NotFound

    if a.close or a.reopen:
        await rt.entry.set_active(a.code, a.reopen)
        print(f"entry link {a.code!r} {'reopened' if a.reopen else 'closed'}")
        return 0

    try:
        await rt.entry.get_link(a.code)
    except NotFound:
        if not a.pool:
            raise NotFound(f"no entry link {a.code!r}; create it with --pool") from None
        await rt.entry.create_link(a.code, pool=a.pool, campaign=a.campaign, store=a.store,
                                   label=a.label, group_tag=a.tag,
                                   join_mode="request" if a.request else "link")
        print(f"entry link {a.code!r} created")
    print(await _start_url(rt, a.code))
    return 0


async def groups_qr(rt: Any, a: argparse.Namespace) -> int:
    await rt.entry.get_link(a.code)
    url = await _start_url(rt, a.code)
    out = Path(a.output or f"{a.code}.png")
    out.write_bytes(rt.entry.qr_png(url, scale=a.scale))
    print(f"{out}  ({url})")
    return 0


# ----------------------------------------------------------------------------- drops
def _buttons(values: list[str] | None) -> list[list[dict[str, str]]]:
    from community.errors import CommunityError

    rows = []
    for v in values or []:
        text, sep, url = v.partition("|")
        if not sep:
            raise CommunityError(f"button {v!r}: use 'Text|https://...'")
        rows.append([{"text": text.strip(), "url": url.strip()}])
    return rows


async def drops_create(rt: Any, a: argparse.Namespace) -> int:
    from community.audience import Audience, GroupAudience, PrivateAudience

    text = a.text or ""
    if a.text_file:
        text = Path(a.text_file).read_text(encoding="utf-8")
    texts = {lang: value for lang, value in (("ja", a.text_ja), ("en", a.text_en),
                                             ("zh", a.text_zh)) if value}
    groups = GroupAudience(all=a.groups_all, tags=a.group_tag or [], pools=a.group_pool or [],
                           ids=[int(i) for i in a.group or []])
    private = PrivateAudience(all=a.private_all, tags=a.private_tag or [],
                              languages=a.lang or [], segment=a.segment)
    drop = await rt.drops.create(
        name=a.name, text=text, texts=texts, kind="coupon" if a.coupon else "content",
        coupon=a.coupon, format=a.format, image_url=a.image, buttons=_buttons(a.button),
        audience=Audience(groups=groups, private=private), run_at=a.at, cron=a.cron,
        timezone=a.tz, grace_seconds=a.grace, respect_cap=not a.no_cap, draft=a.draft,
        created_by="cli",
    )
    when = rt.drops.next_run(drop)
    print(f"drop {drop.id} {drop.status}: next run {_dt(when, drop.timezone)}")
    return 0


async def drops_list(rt: Any, a: argparse.Namespace) -> int:
    drops = await rt.drops.list(status=a.status)
    _table([[d.id, d.name, d.kind, d.status, d.cron or _dt(d.run_at, d.timezone),
             _dt(rt.drops.next_run(d), d.timezone)] for d in drops],
           ["id", "name", "kind", "status", "schedule", "next run"])
    return 0


async def drops_show(rt: Any, a: argparse.Namespace) -> int:
    d = await rt.drops.get(a.drop)
    print(json.dumps({
        "id": d.id, "name": d.name, "kind": d.kind, "status": d.status, "content": d.content,
        "audience": d.audience, "run_at": d.run_at.isoformat() if d.run_at else None,
        "cron": d.cron, "timezone": d.timezone, "grace_seconds": d.grace_seconds,
        "respect_cap": d.respect_cap,
        "next_run": (n.isoformat() if (n := rt.drops.next_run(d)) else None),
    }, ensure_ascii=False, indent=2))
    return 0


async def drops_preview(rt: Any, a: argparse.Namespace) -> int:
    p = await rt.drops.preview(a.drop, a.lang)
    print(p.message.text)
    for row in p.message.buttons:
        print("  " + "  ".join(f"[{b.text}]({b.url})" for b in row))
    if p.message.image:
        print(f"  image: {p.message.image.url}")
    print(f"\nrecipients: {p.groups} group(s), {p.private} private chat(s)"
          f" ({p.blocked} blocked, skipped)")
    return 0


async def drops_test(rt: Any, a: argparse.Namespace) -> int:
    from community.groups import parse_chat

    chat = parse_chat(a.chat)
    await rt.drops.test_send(a.drop, chat, a.lang)
    print(f"test sent to {a.chat}")
    return 0


async def drops_pause(rt: Any, a: argparse.Namespace) -> int:
    d = await rt.drops.pause(a.drop)
    print(f"drop {d.id} {d.status}")
    return 0


async def drops_resume(rt: Any, a: argparse.Namespace) -> int:
    d = await rt.drops.resume(a.drop, deliver=False)  # the running bot delivers
    print(f"drop {d.id} {d.status}")
    return 0


async def drops_cancel(rt: Any, a: argparse.Namespace) -> int:
    d = await rt.drops.cancel(a.drop)
    print(f"drop {d.id} {d.status}")
    return 0


async def drops_report(rt: Any, a: argparse.Namespace) -> int:
    reports = await rt.drops.reports(a.drop)
    if a.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
        return 0
    if not reports:
        print("no runs yet")
    _table([[r.run_id, _dt(r.scheduled_for), r.status, r.total, r.counts.get("sent"),
             r.counts.get("failed"), r.counts.get("blocked"), r.counts.get("skipped"),
             r.counts.get("pending", 0) + r.counts.get("claimed", 0)
             + r.counts.get("sending", 0), r.in_doubt, _dt(r.first_sent_at),
             _dt(r.last_sent_at)] for r in reports],
           ["run", "scheduled", "status", "total", "sent", "failed", "blocked", "skipped",
            "pending", "in doubt", "first sent", "last sent"])
    return 0


# ----------------------------------------------------------------------------- coupons
def _when(value: str | None, tz: str) -> datetime | None:
    if value is None:
        return None
    from community.drops import parse_when
    from community.scheduler import check_timezone

    return parse_when(value, check_timezone(tz))


async def coupons_create(rt: Any, a: argparse.Namespace) -> int:
    c = await rt.coupons.create_campaign(
        a.name, kind="shared" if a.shared else "unique", shared_code=a.shared,
        per_member_limit=a.limit, total_limit=a.total, valid_from=_when(a.valid_from, a.tz),
        valid_until=_when(a.valid_until, a.tz), title=a.title, code_prefix=a.prefix or "")
    print(f"coupon campaign {c.name!r} created ({c.kind})")
    return 0


async def coupons_issue(rt: Any, a: argparse.Namespace) -> int:
    contact = a.contact
    if contact is None:
        from models.repositories import ContactRepository

        async with rt.app.db.session() as s:
            ident = await ContactRepository(s).get_identity("telegram", a.telegram)
        if ident is None:
            from community.errors import NotFound

            raise NotFound(f"no Telegram user {a.telegram} has talked to the bot")
        contact = ident.contact_id
    issued = await rt.coupons.issue(a.name, contact)
    print(issued.code)
    return 0


async def coupons_redeem(rt: Any, a: argparse.Namespace) -> int:
    from community.errors import CouponError

    try:
        done = await rt.coupons.redeem(a.code, reference=a.ref, by="cli")
    except CouponError as exc:
        print(f"not redeemed ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    print(f"redeemed {done.code} ({done.campaign}) at {_dt(done.redeemed_at)}")
    return 0


async def coupons_list(rt: Any, a: argparse.Namespace) -> int:
    rows = await rt.coupons.list()
    _table([[s.campaign.name, s.campaign.kind, s.campaign.per_member_limit,
             s.campaign.total_limit, _dt(s.campaign.valid_until), s.issued, s.redeemed]
            for s in rows],
           ["campaign", "kind", "per member", "total", "valid until", "issued", "redeemed"])
    return 0


async def coupons_show(rt: Any, a: argparse.Namespace) -> int:
    s = await rt.coupons.stats(a.name)
    c = s.campaign
    print(json.dumps({
        "name": c.name, "title": c.title, "kind": c.kind, "shared_code": c.shared_code,
        "per_member_limit": c.per_member_limit, "total_limit": c.total_limit,
        "valid_from": c.valid_from.isoformat() if c.valid_from else None,
        "valid_until": c.valid_until.isoformat() if c.valid_until else None,
        "issued": s.issued, "members": s.members, "redeemed": s.redeemed,
    }, ensure_ascii=False, indent=2))
    return 0


async def coupons_apikey(rt: Any, a: argparse.Namespace) -> int:
    if a.action == "create":
        key = await rt.coupons.create_api_key(a.name)
        print(key)
        print("Store it now: only its hash is kept. Use it as 'Authorization: Bearer <key>' "
              "for POST /api/coupons/redeem.", file=sys.stderr)
    else:
        await rt.coupons.revoke_api_key(a.name)
        print(f"API key {a.name!r} revoked")
    return 0


# ----------------------------------------------------------------------------- parser
def register(sub: Any) -> None:
    g = sub.add_parser("groups", help="community groups, pools and entry links",
                       description="Groups the bot administers, their pools, tags and the "
                       "entry links (deep links / QR codes) that route new members into them.")
    gs = g.add_subparsers(dest="groups_command", metavar="COMMAND")
    gs.required = True
    p = gs.add_parser("list", help="list groups and pools")
    p.add_argument("--pool")
    p.add_argument("--tag")
    p.add_argument("--all", action="store_true", help="include groups the bot left")
    p.set_defaults(func=_run(groups_list))
    p = gs.add_parser("show", help="one group")
    p.add_argument("group", help="group id (see 'groups list') or chat id")
    p.set_defaults(func=_run(groups_show))
    p = gs.add_parser("tag", help="add or remove tags (store:shibuya, region:kanto...)")
    p.add_argument("group")
    p.add_argument("--add", nargs="+", metavar="TAG")
    p.add_argument("--remove", nargs="+", metavar="TAG")
    p.set_defaults(func=_run(groups_tag))
    p = gs.add_parser("pool", help="create/configure a pool and move groups into it")
    p.add_argument("name")
    p.add_argument("--capacity", type=int, help="seats per group (default 500)")
    p.add_argument("--threshold", type=int, help="alert when fewer free seats remain")
    p.add_argument("--managers-chat", help="where alerts go, e.g. telegram:-100123")
    p.add_argument("--join-rule", choices=("room", "known", "manual"),
                   help="join requests: approve when there is room / only people who came "
                   "through an entry link / leave to humans")
    p.add_argument("--welcome-coupon", help="coupon campaign sent on a member's first join")
    p.add_argument("--move", nargs="+", metavar="GROUP", help="groups to put in this pool")
    p.set_defaults(func=_run(groups_pool))
    p = gs.add_parser("link", help="create or show an entry link (no code: list them)")
    p.add_argument("code", nargs="?")
    p.add_argument("--pool")
    p.add_argument("--campaign")
    p.add_argument("--store")
    p.add_argument("--label")
    p.add_argument("--tag", help="only groups with this tag (e.g. store:shibuya)")
    p.add_argument("--request", action="store_true",
                   help="members ask to join and are approved by the pool's rule")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--close", action="store_true",
                       help="close the link: whoever opens it is told it is no longer active")
    state.add_argument("--reopen", action="store_true", help="reopen a closed link")
    p.set_defaults(func=_run(groups_link))
    p = gs.add_parser("qr", help="write an entry link's QR code as PNG")
    p.add_argument("code")
    p.add_argument("-o", "--output", help="PNG file (default CODE.png)")
    p.add_argument("--scale", type=int, default=10)
    p.set_defaults(func=_run(groups_qr))

    d = sub.add_parser("drops", help="scheduled content and coupon drops",
                       description="Create and manage drops to groups and private chats.")
    ds = d.add_subparsers(dest="drops_command", metavar="COMMAND")
    ds.required = True
    p = ds.add_parser("create", help="create a drop")
    p.add_argument("--name", required=True)
    p.add_argument("--text", help="message text ({code} = the member's coupon code)")
    p.add_argument("--text-file")
    p.add_argument("--text-ja")
    p.add_argument("--text-en")
    p.add_argument("--text-zh")
    p.add_argument("--format", choices=("plain", "html"), default="plain")
    p.add_argument("--image", help="image URL")
    p.add_argument("--button", action="append", metavar="'TEXT|URL'")
    p.add_argument("--coupon", help="coupon campaign: makes it a coupon drop")
    p.add_argument("--groups-all", action="store_true", help="every active group")
    p.add_argument("--group-tag", action="append", metavar="TAG")
    p.add_argument("--group-pool", action="append", metavar="POOL")
    p.add_argument("--group", action="append", metavar="ID")
    p.add_argument("--private-all", action="store_true",
                   help="every member with a private chat with the bot")
    p.add_argument("--private-tag", action="append", metavar="TAG")
    p.add_argument("--lang", action="append", choices=("ja", "en", "zh"))
    p.add_argument("--segment", help="a CRM segment (needs the CRM's resolver)")
    p.add_argument("--at", help="'YYYY-MM-DD HH:MM' in --tz (one-off)")
    p.add_argument("--cron", help="'MIN HOUR DAY MONTH WEEKDAY' in --tz (recurring)")
    p.add_argument("--tz", help="time zone (default scheduler.timezone)")
    p.add_argument("--grace", type=int, help="seconds a late drop is still delivered")
    p.add_argument("--no-cap", action="store_true", help="not subject to the frequency cap")
    p.add_argument("--draft", action="store_true")
    p.set_defaults(func=_run(drops_create))
    p = ds.add_parser("list", help="list drops")
    p.add_argument("--status")
    p.set_defaults(func=_run(drops_list))
    for name, fn, helptext in (
        ("show", drops_show, "one drop"), ("pause", drops_pause, "pause (mid-run too)"),
        ("resume", drops_resume, "resume a paused drop"), ("cancel", drops_cancel, "cancel"),
    ):
        p = ds.add_parser(name, help=helptext)
        p.add_argument("drop", type=int)
        p.set_defaults(func=_run(fn))
    p = ds.add_parser("preview", help="render the message and count recipients")
    p.add_argument("drop", type=int)
    p.add_argument("--lang", choices=("ja", "en", "zh"))
    p.set_defaults(func=_run(drops_preview))
    p = ds.add_parser("test", help="send the drop to yourself")
    p.add_argument("drop", type=int)
    p.add_argument("--chat", required=True, help="telegram:<your user id>")
    p.add_argument("--lang", choices=("ja", "en", "zh"))
    p.set_defaults(func=_run(drops_test))
    p = ds.add_parser("report", help="delivery report per run")
    p.add_argument("drop", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(drops_report))

    c = sub.add_parser("coupons", help="coupon campaigns, codes and redemptions",
                       description="Coupon campaigns with unique or shared codes.")
    cs = c.add_subparsers(dest="coupons_command", metavar="COMMAND")
    cs.required = True
    p = cs.add_parser("create", help="create a campaign")
    p.add_argument("name")
    p.add_argument("--shared", metavar="CODE", help="one shared code instead of unique codes")
    p.add_argument("--limit", type=int, default=1, help="codes per member (default 1)")
    p.add_argument("--total", type=int, help="codes in all")
    p.add_argument("--valid-from")
    p.add_argument("--valid-until")
    p.add_argument("--tz", default="Asia/Tokyo")
    p.add_argument("--title")
    p.add_argument("--prefix", help="code prefix, e.g. SPRING")
    p.set_defaults(func=_run(coupons_create))
    p = cs.add_parser("issue", help="issue a code to a member")
    p.add_argument("name")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--contact", type=int)
    who.add_argument("--telegram", metavar="USER_ID")
    p.set_defaults(func=_run(coupons_issue))
    p = cs.add_parser("redeem", help="mark a code used")
    p.add_argument("code")
    p.add_argument("--ref", help="order or member reference (required for shared codes)")
    p.set_defaults(func=_run(coupons_redeem))
    p = cs.add_parser("list", help="campaigns with issued/redeemed counts")
    p.set_defaults(func=_run(coupons_list))
    p = cs.add_parser("show", help="one campaign")
    p.add_argument("name")
    p.set_defaults(func=_run(coupons_show))
    p = cs.add_parser("apikey", help="API keys for the shop's redeem endpoint")
    p.add_argument("action", choices=("create", "revoke"))
    p.add_argument("name")
    p.set_defaults(func=_run(coupons_apikey))
