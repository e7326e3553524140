"""Community managers' pages for the group pool: groups with their fill levels, pools (free
seats, alert threshold), recent capacity alerts; entry links with their deep links, join counts
and QR codes. The work is done by ``community.groups.GroupService`` and
``community.entry.EntryService``; this module only reads forms and renders."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from community.dbutil import check_name
from community.errors import CommunityError
from console.auth import Who
from console.community_pages import (
    checked,
    csv,
    done,
    field,
    local,
    message,
    need,
    off_page,
    options,
    page,
    refused,
    runtime,
)
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError, path_int
from models.advisors import Role

CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
ALERT_KINDS = ("pool_low", "group_not_admin")  # the groups page's alerts (drops show theirs)


# ----------------------------------------------------------------------------- data
def pct(members: int, capacity: int) -> int:
    return round(100 * members / capacity) if capacity > 0 else 0


def meter(members: int, capacity: int) -> Markup:
    """A native <meter>: green below 80 %, amber to 95 %, red above (no inline style: CSP)."""
    cap = max(capacity, 1)
    return fmt('<meter class="fill" min="0" max="{}" low="{}" high="{}" optimum="0" value="{}" '
               'title="{} of {} seats taken">{}%</meter>',
               cap, round(cap * 0.8), round(cap * 0.95), min(members, cap), members, capacity,
               pct(members, capacity))


def group_json(info: Any) -> dict[str, Any]:
    g = info.group
    return {"id": g.id, "platform": g.platform, "chat_id": g.external_id, "title": g.title,
            "pool": info.pool, "tags": info.tags, "status": g.status,
            "members": g.member_count, "capacity": g.capacity, "free": g.free,
            "fill_percent": pct(g.member_count, g.capacity)}


def pool_json(p: Any) -> dict[str, Any]:
    return {"id": p.pool.id, "name": p.pool.name, "groups": p.groups, "members": p.members,
            "capacity": p.capacity, "free": p.free, "alert_threshold": p.pool.alert_threshold,
            "below_threshold": p.free < p.pool.alert_threshold,
            "default_capacity": p.pool.default_capacity, "join_rule": p.pool.join_rule,
            "fill_percent": pct(p.members, p.capacity)}


def positive(value: Any, what: str) -> int:
    """An int >= 1 from a form field or JSON (400 otherwise)."""
    if isinstance(value, bool):
        raise ConsoleError(400, f"{what} must be a whole number of at least 1")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConsoleError(400, f"{what} must be a whole number of at least 1") from None
    if number < 1 or number > 200_000:
        raise ConsoleError(400, f"{what} must be between 1 and 200000")
    return number


def tag_list(value: Any) -> list[str]:
    tags = [t.lower() for t in csv(value)]
    with refused():
        for t in tags:
            check_name(t, "tag")
    return tags


async def update_group(rt: Any, group_id: int, *, tags: list[str] | None = None,
                       capacity: int | None = None, pool: str | None = None) -> Any:
    """Apply the changes that were given; everything is checked before anything is stored."""
    with refused():
        info = await rt.groups.info(group_id)
        if pool is not None and pool not in {p.pool.name for p in await rt.groups.pools()}:
            raise CommunityError(f"no pool {pool!r}")
        if pool is not None and pool != info.pool:
            info = await rt.groups.move(group_id, pool, capacity=capacity)
        elif capacity is not None:
            info = await rt.groups.set_capacity(group_id, capacity)
        if tags is not None:
            have = set(info.tags)
            info = await rt.groups.tag(group_id, add=[t for t in tags if t not in have],
                                       remove=[t for t in have if t not in tags])
    return info


def start_url(rt: Any, code: str) -> str | None:
    try:
        return str(rt.entry.start_url(code))
    except CommunityError:
        return None


def link_json(rt: Any, link: Any, pool: str, visits: int, joins: int) -> dict[str, Any]:
    return {"code": link.code, "pool": pool, "campaign": link.campaign, "store": link.store,
            "label": link.label, "group_tag": link.group_tag, "join_mode": link.join_mode,
            "active": link.active, "visits": visits, "joins": joins,
            "url": start_url(rt, link.code)}


async def create_link(rt: Any, data: Mapping[str, Any]) -> Any:
    def opt(key: str) -> str | None:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConsoleError(400, f"{key} must be text")
        value = (value or "").strip()
        if len(value) > 64 or (key == "label" and len(value) > 128):
            raise ConsoleError(400, f"{key} is too long")
        return value or None

    code, pool = opt("code"), opt("pool")
    if not code:
        raise ConsoleError(400, "an entry link needs a code (letters, digits, '_' and '-')")
    if not pool:
        raise ConsoleError(400, "choose the pool the entry link routes into")
    mode = opt("join_mode") or "link"
    with refused():
        return await rt.entry.create_link(
            code, pool=pool, campaign=opt("campaign"), store=opt("store"), label=opt("label"),
            group_tag=opt("group_tag"), join_mode=mode)


# ----------------------------------------------------------------------------- pages
def register(c: Console) -> None:
    # ------------------------------------------------------------------ groups
    async def groups_page(request: web.Request, who: Who, *, error: str = "",
                          status: int = 200, pool_form: Mapping[str, str] | None = None
                          ) -> web.Response:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "Groups")
        pool_name = request.query.get("pool") or None
        tag = (request.query.get("tag") or "").strip().lower() or None
        removed = request.query.get("removed") == "1"
        pools = await rt.groups.pools()
        everything = await rt.groups.list(include_removed=True)
        all_tags = sorted({t for info in everything for t in info.tags})
        try:
            with refused():
                groups = await rt.groups.list(pool=pool_name, tag=tag, include_removed=removed)
        except ConsoleError as exc:
            groups, error, status = [], exc.message, 404
        alerts = [a for a in await rt.alerts.recent(50) if a.kind in ALERT_KINDS][:15]
        tz = c.extras.get("scheduler_timezone") or c.timezone
        pool_form = pool_form or {}
        body = render(
            "community_groups.html",
            message=join([done(request), message(error)]),
            pools=join(_pool_card(p) for p in pools) if pools else Markup(
                '<p class="muted">No pools yet: a group the bot is made an administrator of '
                'joins the default pool.</p>'),
            pool_options=options([p.pool.name for p in pools], pool_name, blank="every pool"),
            tag_options=options(all_tags, tag, blank="any tag"),
            removed=checked(removed),
            rows=join(_group_row(c, info) for info in groups) if groups else Markup(
                '<tr><td colspan="7" class="muted">No groups match.</td></tr>'),
            count=len(groups),
            alerts=join(fmt('<li><span class="badge">{}</span> <time>{}</time> {}</li>',
                            a.kind, local(a.created_at, tz), a.message) for a in alerts)
            if alerts else Markup('<li class="muted">No capacity alerts.</li>'),
            tz=tz, csrf=who.csrf_token, pool_action=c.url("/community/pools"),
            pool_name=pool_form.get("name", ""), pool_capacity=pool_form.get("capacity", ""),
            pool_threshold=pool_form.get("alert_threshold", ""),
        )
        return page(c, request, who, title="Groups", body=body, page="community-groups",
                    status=status)

    @c.page("/community/groups", role=Role.MANAGER, nav="Groups")
    async def groups_view(request: web.Request, who: Who) -> web.StreamResponse:
        return await groups_page(request, who)

    @c.page("/community/pools", role=Role.MANAGER, method="POST")
    async def pool_save(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        form = await request.post()
        values = {k: field(form, k) for k in ("name", "capacity", "alert_threshold")}
        try:
            capacity = positive(values["capacity"], "default capacity") \
                if values["capacity"] else None
            threshold = None
            if values["alert_threshold"]:
                if not values["alert_threshold"].isdigit():
                    raise ConsoleError(400, "the alert threshold is a number of free seats")
                threshold = int(values["alert_threshold"])
            with refused():
                await rt.groups.configure_pool(values["name"], capacity=capacity,
                                               alert_threshold=threshold)
        except ConsoleError as exc:
            return await groups_page(request, who, error=exc.message, status=exc.status,
                                     pool_form=values)
        raise web.HTTPSeeOther(c.url("/community/groups?done=pool"))

    async def group_page(request: web.Request, who: Who, group_id: int, *, error: str = "",
                         status: int = 200) -> web.Response:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "Group")
        with refused():
            info = await rt.groups.info(group_id)
        g = info.group
        pools = [p.pool.name for p in await rt.groups.pools()]
        base = c.url(f"/community/groups/{g.id}")
        body = render(
            "community_group.html",
            title=g.title or g.external_id, chat=f"{g.platform}:{g.external_id}",
            status=g.status, pool=info.pool or "—", members=g.member_count,
            capacity=g.capacity, free=g.free, fill=meter(g.member_count, g.capacity),
            percent=pct(g.member_count, g.capacity),
            message=join([done(request), message(error)]), csrf=who.csrf_token,
            tags=", ".join(info.tags), tags_action=base + "/tags",
            capacity_action=base + "/capacity", move_action=base + "/move",
            pool_options=options(pools, info.pool), back=c.url("/community/groups"),
        )
        return page(c, request, who, title=f"Group {g.title or g.id}", body=body,
                    page="community-group", status=status)

    @c.page("/community/groups/{group_id}", role=Role.MANAGER)
    async def group_view(request: web.Request, who: Who) -> web.StreamResponse:
        return await group_page(request, who, path_int(request, "group_id"))

    def group_form(what: str) -> None:
        @c.page(f"/community/groups/{{group_id}}/{what}", role=Role.MANAGER, method="POST")
        async def group_post(request: web.Request, who: Who) -> web.StreamResponse:
            rt = need(c)
            group_id = path_int(request, "group_id")
            form = await request.post()
            try:
                if what == "tags":
                    await update_group(rt, group_id, tags=tag_list(field(form, "tags")))
                elif what == "capacity":
                    await update_group(rt, group_id,
                                       capacity=positive(field(form, "capacity"), "capacity"))
                else:
                    cap = field(form, "capacity")
                    await update_group(rt, group_id, pool=field(form, "pool"),
                                       capacity=positive(cap, "capacity") if cap else None)
            except ConsoleError as exc:
                return await group_page(request, who, group_id, error=exc.message,
                                        status=exc.status)
            raise web.HTTPSeeOther(c.url(f"/community/groups/{group_id}?done={what}"))

    for what in ("tags", "capacity", "move"):
        group_form(what)

    @c.api("GET", "/api/community/groups", role=Role.MANAGER)
    async def groups_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        with refused():
            groups = await rt.groups.list(
                pool=request.query.get("pool") or None, tag=request.query.get("tag") or None,
                include_removed=request.query.get("removed") == "1")
        return c.json({"pools": [pool_json(p) for p in await rt.groups.pools()],
                       "groups": [group_json(g) for g in groups]})

    @c.api("POST", "/api/community/groups/{group_id}", role=Role.MANAGER)
    async def group_api(request: web.Request, who: Who) -> web.StreamResponse:
        """``{"tags": [...], "capacity": 300, "pool": "tokyo"}``: any of them (tags replace
        the group's tags)."""
        rt = need(c)
        group_id = path_int(request, "group_id")
        data = await c.json_body(request)
        unknown = set(data) - {"tags", "capacity", "pool"}
        if unknown:
            raise ConsoleError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        pool = data.get("pool")
        if pool is not None and not isinstance(pool, str):
            raise ConsoleError(400, "pool must be a pool name")
        tags = data.get("tags")
        if tags is not None and not (isinstance(tags, list)
                                     and all(isinstance(t, str) for t in tags)):
            raise ConsoleError(400, "tags must be a list of strings")
        info = await update_group(
            rt, group_id, tags=tag_list(tags) if tags is not None else None,
            capacity=positive(data["capacity"], "capacity") if "capacity" in data else None,
            pool=pool)
        return c.json({"group": group_json(info)})

    @c.api("GET", "/api/community/alerts", role=Role.MANAGER)
    async def alerts_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        return c.json({"alerts": [
            {"id": a.id, "kind": a.kind, "pool_id": a.pool_id, "drop_id": a.drop_id,
             "message": a.message, "created_at": a.created_at}
            for a in await rt.alerts.recent(50)]})

    # ------------------------------------------------------------------ entry links
    async def links_page(request: web.Request, who: Who, *, error: str = "",
                         status: int = 200, form: Mapping[str, str] | None = None
                         ) -> web.Response:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "Entry links")
        pool_name = request.query.get("pool") or None
        links = [x for x in await rt.entry.links() if pool_name is None or x[1] == pool_name]
        pools = [p.pool.name for p in await rt.groups.pools()]
        form = form or {}
        no_url = False
        rows = []
        for link, pool, visits, joins in links:
            url = start_url(rt, link.code)
            no_url = no_url or url is None
            rows.append(_link_row(c, link, pool, visits, joins, url, who.csrf_token))
        body = render(
            "community_links.html",
            message=join([done(request), message(error), message(
                "Deep links and QR codes need the bot's username: set community.bot_username "
                "(or run the Telegram bot)." if no_url else None)]),
            filter_options=options(pools, pool_name, blank="every pool"),
            rows=join(rows) if rows else Markup(
                '<tr><td colspan="8" class="muted">No entry links yet.</td></tr>'),
            csrf=who.csrf_token, action=c.url("/community/links"),
            pool_options=options(pools, form.get("pool") or pool_name
                                 or rt.settings.default_pool),
            code=form.get("code", ""), campaign=form.get("campaign", ""),
            store=form.get("store", ""), label=form.get("label", ""),
            group_tag=form.get("group_tag", ""),
            mode_options=options([("link", "invite link"), ("request", "join request")],
                                 form.get("join_mode") or "link"),
        )
        return page(c, request, who, title="Entry links", body=body, page="community-links",
                    status=status)

    @c.page("/community/links", role=Role.MANAGER)
    async def links_view(request: web.Request, who: Who) -> web.StreamResponse:
        return await links_page(request, who)

    @c.page("/community/links", role=Role.MANAGER, method="POST")
    async def links_create(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        form = await request.post()
        values = {k: field(form, k) for k in ("code", "pool", "campaign", "store", "label",
                                              "group_tag", "join_mode")}
        try:
            await create_link(rt, values)
        except ConsoleError as exc:
            return await links_page(request, who, error=exc.message, status=exc.status,
                                    form=values)
        raise web.HTTPSeeOther(c.url("/community/links?done=link"))

    @c.page("/community/links/{code}/state", role=Role.MANAGER, method="POST")
    async def link_state(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        code = request.match_info["code"]
        if not CODE_RE.fullmatch(code):
            raise ConsoleError(404, "no such entry link")
        action = field(await request.post(), "action")
        if action not in ("close", "reopen"):
            raise ConsoleError(400, "action is 'close' or 'reopen'")
        with refused():
            await rt.entry.set_active(code, action == "reopen")
        done_key = "reopened" if action == "reopen" else "closed"
        raise web.HTTPSeeOther(c.url(f"/community/links?done={done_key}"))

    @c.api("POST", "/api/community/links/{code}", role=Role.MANAGER)
    async def link_state_api(request: web.Request, who: Who) -> web.StreamResponse:
        """``{"active": false}`` closes the link, ``{"active": true}`` reopens it."""
        rt = need(c)
        data = await c.json_body(request)
        if not isinstance(data.get("active"), bool):
            raise ConsoleError(400, "give active: true or false")
        code = request.match_info["code"]
        with refused():
            link = await rt.entry.set_active(code, data["active"])
        pool = (await rt.groups.pool_info(link.pool_id)).pool.name
        visits, joins = next(((v, j) for x, _p, v, j in await rt.entry.links()
                              if x.code == code), (0, 0))
        return c.json({"link": link_json(rt, link, pool, visits, joins)})

    @c.page("/community/links/{code}/qr.png", role=Role.MANAGER)
    async def link_qr(request: web.Request, who: Who) -> web.StreamResponse:
        """The entry link's QR code (PNG, rendered like ``kizuna groups qr``)."""
        rt = need(c)
        code = request.match_info["code"]
        if not CODE_RE.fullmatch(code):
            raise ConsoleError(404, "no such entry link")
        scale = request.query.get("scale", "8")
        if not scale.isdigit() or not 1 <= int(scale) <= 20:
            raise ConsoleError(400, "scale is 1-20")
        with refused():
            await rt.entry.get_link(code)
            url = rt.entry.start_url(code)
        png = rt.entry.qr_png(url, scale=int(scale))
        headers = {}
        if request.query.get("download") == "1":
            headers["Content-Disposition"] = f'attachment; filename="{code}.png"'
        return web.Response(body=png, content_type="image/png", headers=headers)

    @c.api("GET", "/api/community/links", role=Role.MANAGER)
    async def links_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        return c.json({"links": [link_json(rt, *x) for x in await rt.entry.links()]})

    @c.api("POST", "/api/community/links", role=Role.MANAGER)
    async def links_api_create(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        link = await create_link(rt, await c.json_body(request))
        pool = (await rt.groups.pool_info(link.pool_id)).pool.name
        return c.json({"link": link_json(rt, link, pool, 0, 0)})


def _pool_card(p: Any) -> Markup:
    low = p.free < p.pool.alert_threshold
    return fmt(
        '<div class="pool{}" data-pool="{}"><h3>{}</h3>'
        '<p><strong class="free">{}</strong> free seats · {}/{} members in {} group(s)</p>'
        '{}<p class="muted">alert below {} free · new groups get {} seats · join rule {}</p>'
        '{}</div>',
        Markup(" low") if low else Markup(""), p.pool.name, p.pool.name, p.free, p.members,
        p.capacity, p.groups, meter(p.members, p.capacity), p.pool.alert_threshold,
        p.pool.default_capacity, p.pool.join_rule,
        Markup('<p class="warn-text" role="alert">Below the alert threshold: add a group and '
               'make the bot an administrator.</p>') if low else Markup(""))


def _group_row(c: Console, info: Any) -> Markup:
    g = info.group
    return fmt(
        '<tr data-group="{}"{}><td><a href="{}">{}</a><br><small>{}:{}</small></td>'
        '<td>{}</td><td class="taglist">{}</td><td>{}</td>'
        '<td class="num members">{}/{}</td><td class="fillcell">{} <span class="pct">{}%</span>'
        '</td><td><a href="{}">Edit</a></td></tr>',
        g.id, Markup(' class="full"') if g.free == 0 else Markup(""),
        c.url(f"/community/groups/{g.id}"), g.title or g.external_id, g.platform,
        g.external_id, info.pool or "—",
        join(fmt('<span class="badge">{}</span>', t) for t in info.tags),
        g.status, g.member_count, g.capacity, meter(g.member_count, g.capacity),
        pct(g.member_count, g.capacity), c.url(f"/community/groups/{g.id}"))


def _link_row(c: Console, link: Any, pool: str, visits: int, joins: int,
              url: str | None, csrf: str) -> Markup:
    qr = c.url(f"/community/links/{link.code}/qr.png")
    state = fmt(
        '<form method="post" action="{}" class="inline"><input type="hidden" '
        'name="csrf_token" value="{}"><button type="submit" name="action" value="{}">{}'
        '</button></form>', c.url(f"/community/links/{link.code}/state"), csrf,
        "close" if link.active else "reopen", "Close" if link.active else "Reopen")
    where = join((fmt("<span>{} {}</span>", what, value) for what, value in (
        ("campaign", link.campaign), ("store", link.store), ("groups tagged", link.group_tag))
        if value), sep=" ")
    return fmt(
        '<tr data-code="{}"{}><td><strong>{}</strong>{}<br><small>{}</small> {}</td>'
        '<td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td>'
        '<td class="deeplink">{}</td><td>{}</td></tr>',
        link.code, Markup("") if link.active else Markup(' class="closed"'), link.code,
        fmt(" <small>({})</small>", link.label) if link.label else "",
        "active" if link.active else "closed", state, pool, where or "—",
        "join request" if link.join_mode == "request" else "invite link", visits, joins,
        fmt('<a href="{}" rel="noopener noreferrer">{}</a>', url, url) if url else "—",
        fmt('<a href="{}?scale=10&amp;download=1" title="Download the QR code">'
            '<img class="qr" src="{}?scale=4" alt="QR code of {}" loading="lazy"></a>',
            qr, qr, link.code) if url else "—")
