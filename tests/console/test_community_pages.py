"""Community managers' console pages: groups with fill levels, entry links and QR codes, the
drops calendar, creating and previewing drops, pause/resume/cancel and delivery reports. Data
is seeded through the community services of the real app (``app.community``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot.core.types import ChatKind, ChatRef, MemberStatus, PermanentSendError
from models.advisors import Advisor
from models.chat import ChatKind as ModelChatKind
from models.community import Drop
from models.contact import ContactIdentity
from models.repositories import ChatRepository, ContactRepository
from tests.console.conftest import Browser, World
from tests.fakes import FakePlatform

BOT = "kizuna_test_bot"


class Community:
    """The world's community runtime on the world's clock, with helpers to seed it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rt: Any = world.app.community
        rt = self.rt
        for service in (rt.drops, rt.groups, rt.entry, rt.engine, rt.coupons, rt.membership):
            service.now = world.now
        rt.clock = world.now
        rt.settings.bot_username = BOT

    async def group(self, chat_id: str, title: str, members: int, capacity: int,
                    tags: tuple[str, ...] = (), pool: str | None = None) -> int:
        g = await self.rt.groups.adopt(ChatRef("fake", ChatKind.GROUP, chat_id, title),
                                       MemberStatus.ADMINISTRATOR, members)
        if pool:
            await self.rt.groups.move(g.id, pool)
        await self.rt.groups.set_capacity(g.id, capacity)
        if tags:
            await self.rt.groups.tag(g.id, add=list(tags))
        return int(g.id)

    async def contact(self, user_id: str, language: str, *, blocked: bool = False) -> int:
        """A member with a private Telegram chat with the bot."""
        async with self.world.app.db.session() as s:
            identity, _ = await ContactRepository(s).identify(
                "telegram", user_id, display_name=f"User {user_id}", language_code=language)
            await ChatRepository(s).upsert("telegram", user_id, ModelChatKind.PRIVATE)
            if blocked:
                await s.execute(update(ContactIdentity).where(
                    ContactIdentity.id == identity.id).values(unreachable_at=self.world.now.t))
            return int(identity.contact_id)

    async def drops(self) -> int:
        async with self.world.app.db.session() as s:
            return int((await s.execute(select(func.count()).select_from(Drop))).scalar_one())


@pytest.fixture
async def community(world: World) -> Community:
    return Community(world)


async def manager(world: World, name: str = "mika") -> Browser:
    b, _ = await world.signed_in(name, role="manager")
    return b


async def form(b: Browser, path: str, data: dict[str, Any]) -> Any:
    body: Any = {"csrf_token": b.csrf, **data}
    if any(isinstance(v, list) for v in body.values()):  # repeated fields
        body = [(k, x) for k, v in body.items() for x in (v if isinstance(v, list) else [v])]
    return await b.client.post("/console" + path, data=body, allow_redirects=False)


def cell(page: str, day: str) -> str:
    found = re.search(rf'<td class="[^"]*" data-day="{day}">(.*?)</td>', page, re.S)
    assert found, day
    return found.group(1)


DROP = {"name": "December news", "kind": "content", "format": "plain",
        "text": "Winter <sale> starts!", "target": "all_groups", "schedule": "once",
        "run_at": "2026-12-05T09:00", "timezone": "Asia/Tokyo"}
FORM = {**DROP, "respect_cap": "1"}  # the checkbox


# ----------------------------------------------------------------------------- roles
async def test_pages_are_for_managers_and_admins(world: World, community: Community) -> None:
    await community.group("-1001", "Shibuya fans", 8, 10)
    await community.rt.entry.create_link("shibuya", pool="default")
    advisor, _ = await world.signed_in("aiko")
    boss = await manager(world)
    admin, _ = await world.signed_in("root", role="admin")
    pages = ["/community/groups", "/community/groups/1", "/community/links",
             "/community/drops", "/community/calendar", "/community/drops/new"]
    for path in pages:
        assert (await advisor.client.get("/console" + path)).status == 403, path
        for b in (boss, admin):
            resp = await b.client.get("/console" + path)
            assert resp.status == 200, (path, await resp.text())
            assert "community.css" in await resp.text()
    for path in ("/api/community/groups", "/api/community/links", "/api/community/drops",
                 "/api/community/calendar", "/api/community/alerts"):
        assert (await advisor.api("GET", path)).status == 403, path
        await boss.ok("GET", path)
    assert (await advisor.client.get("/console/community/links/shibuya/qr.png")).status == 403
    assert (await advisor.api("POST", "/api/community/drops", {})).status == 403
    home = await (await advisor.client.get("/console/")).text()
    assert "/console/community/groups" not in home  # no link to a page they cannot open
    assert "/console/community/groups" in await (await boss.client.get("/console/")).text()


async def test_pages_say_so_when_the_community_is_off(world: World) -> None:
    world.console.extras["community"] = None
    boss = await manager(world)
    for path in ("/community/groups", "/community/links", "/community/drops",
                 "/community/calendar", "/community/drops/new", "/community/drops/1"):
        page = await boss.client.get("/console" + path)
        assert page.status == 200 and "are not enabled" in await page.text(), path
    resp = await boss.api("GET", "/api/community/groups")
    assert resp.status == 404 and "not enabled" in (await resp.json())["error"]


# ----------------------------------------------------------------------------- groups
async def test_groups_page_shows_fill_levels_pools_and_alerts(world: World,
                                                              community: Community) -> None:
    rt = community.rt
    await rt.groups.configure_pool("default", alert_threshold=1)
    await rt.groups.configure_pool("tokyo", capacity=20, alert_threshold=5)
    g1 = await community.group("-1001", "Shibuya <fans>", 8, 10, tags=("store:shibuya",))
    g2 = await community.group("-1002", "Osaka", 19, 20, pool="tokyo")
    boss = await manager(world)
    page = await (await boss.client.get("/console/community/groups")).text()
    row = re.search(rf'<tr data-group="{g1}">(.*?)</tr>', page, re.S)
    assert row and "8/10" in row.group(1) and "80%" in row.group(1)
    assert "Shibuya &lt;fans&gt;" in row.group(1) and "store:shibuya" in row.group(1)
    assert '<meter class="fill"' in row.group(1)
    # the tokyo pool has 1 free seat, below its threshold of 5: warned, and an alert was raised
    tokyo = re.search(r'<div class="pool low" data-pool="tokyo">(.*?)</div>', page, re.S)
    assert tokyo and "Below the alert threshold" in tokyo.group(1)
    assert '<div class="pool" data-pool="default">' in page
    assert "pool &#x27;tokyo&#x27; has 1 free seat(s)" in page
    # filters
    tagged = await (await boss.client.get(
        "/console/community/groups?tag=store:shibuya")).text()
    assert f'data-group="{g1}"' in tagged and f'data-group="{g2}"' not in tagged
    pooled = await (await boss.client.get("/console/community/groups?pool=tokyo")).text()
    assert f'data-group="{g2}"' in pooled and f'data-group="{g1}"' not in pooled
    missing = await boss.client.get("/console/community/groups?pool=nowhere")
    assert missing.status == 404 and "no pool" in await missing.text()
    data = await boss.ok("GET", "/api/community/groups?pool=tokyo")
    assert [(g["id"], g["members"], g["capacity"], g["fill_percent"]) for g in data["groups"]] \
        == [(g2, 19, 20, 95)]
    assert {p["name"]: p["below_threshold"] for p in data["pools"]} == {"default": False,
                                                                         "tokyo": True}


async def test_editing_a_group_through_forms_and_the_api(world: World,
                                                         community: Community) -> None:
    rt = community.rt
    await rt.groups.configure_pool("tokyo")
    gid = await community.group("-1001", "Shibuya", 8, 10, tags=("old",))
    boss = await manager(world)
    assert (await form(boss, f"/community/groups/{gid}/tags",
                       {"tags": "store:shibuya, Region:Kanto"})).status == 303
    assert (await form(boss, f"/community/groups/{gid}/capacity", {"capacity": "40"})).status \
        == 303
    moved = await form(boss, f"/community/groups/{gid}/move", {"pool": "tokyo", "capacity": ""})
    assert moved.status == 303 and moved.headers["Location"].endswith("?done=move")
    info = await rt.groups.info(gid)
    assert (info.tags, info.group.capacity, info.pool) == (
        ["region:kanto", "store:shibuya"], 40, "tokyo")
    page = await (await boss.client.get(moved.headers["Location"])).text()
    assert "Group moved." in page and "8/40" in page
    # bad input: a clear message, nothing changed
    for path, data, says in (
        ("capacity", {"capacity": "0"}, "between 1 and 200000"),
        ("capacity", {"capacity": "lots"}, "whole number"),
        ("tags", {"tags": "good, bad tag!"}, "is not valid"),
        ("move", {"pool": "nowhere"}, "no pool"),
    ):
        resp = await form(boss, f"/community/groups/{gid}/{path}", data)
        assert resp.status == 400 and says in await resp.text(), path
    info = await rt.groups.info(gid)
    assert (info.tags, info.group.capacity, info.pool) == (
        ["region:kanto", "store:shibuya"], 40, "tokyo")
    assert (await form(boss, f"/community/groups/{gid}/capacity", {"capacity": "5"},
                       )).status == 303
    no_csrf = await boss.client.post(f"/console/community/groups/{gid}/capacity",
                                     data={"capacity": "7"}, allow_redirects=False)
    assert no_csrf.status == 403
    # the JSON API
    out = await boss.ok("POST", f"/api/community/groups/{gid}",
                        {"tags": ["vip"], "capacity": 12, "pool": "default"})
    assert (out["group"]["tags"], out["group"]["capacity"], out["group"]["pool"]) == (
        ["vip"], 12, "default")
    bad = await boss.api("POST", f"/api/community/groups/{gid}", {"capacity": -1})
    assert bad.status == 400
    assert (await boss.api("POST", "/api/community/groups/999", {"capacity": 3})).status == 404
    # a pool
    assert (await form(boss, "/community/pools", {"name": "osaka", "capacity": "300",
                                                  "alert_threshold": "10"})).status == 303
    osaka = {p.pool.name: p.pool for p in await rt.groups.pools()}["osaka"]
    assert (osaka.default_capacity, osaka.alert_threshold) == (300, 10)
    bad_pool = await form(boss, "/community/pools", {"name": "bad name", "capacity": ""})
    assert bad_pool.status == 400 and "pool name" in await bad_pool.text()


# ----------------------------------------------------------------------------- entry links
async def test_entry_links_with_join_counts_and_qr_codes(world: World,
                                                         community: Community) -> None:
    rt = community.rt
    await community.group("-1001", "Shibuya", 8, 10)
    await rt.entry.create_link("shibuya", pool="default", campaign="xmas", store="shibuya",
                               label="Store poster")
    boss = await manager(world)
    page = await (await boss.client.get("/console/community/links")).text()
    row = re.search(r'<tr data-code="shibuya">(.*?)</tr>', page, re.S)
    assert row and f"https://t.me/{BOT}?start=shibuya" in row.group(1)
    assert "campaign xmas" in row.group(1) and "Store poster" in row.group(1)
    assert '<img class="qr" src="/console/community/links/shibuya/qr.png?scale=4"' in row.group(1)
    # create one through the form; a bad one is refused with a message and not stored
    made = await form(boss, "/community/links", {"code": "osaka-1", "pool": "default",
                                                 "campaign": "", "join_mode": "request"})
    assert made.status == 303
    bad = await form(boss, "/community/links", {"code": "no spaces", "pool": "default"})
    assert bad.status == 400 and "entry code" in await bad.text()
    dup = await form(boss, "/community/links", {"code": "osaka-1", "pool": "default"})
    assert dup.status == 400 and "already exists" in await dup.text()
    links = await boss.ok("GET", "/api/community/links")
    assert [(x["code"], x["join_mode"], x["visits"], x["joins"]) for x in links["links"]] == [
        ("shibuya", "link", 0, 0), ("osaka-1", "request", 0, 0)]
    api_made = await boss.ok("POST", "/api/community/links", {"code": "web", "pool": "default"})
    assert api_made["link"]["url"] == f"https://t.me/{BOT}?start=web"
    # close a link from its row, reopen it through the API
    closed = await form(boss, "/community/links/shibuya/state", {"action": "close"})
    assert closed.status == 303 and closed.headers["Location"].endswith("done=closed")
    assert (await rt.entry.get_link("shibuya")).active is False
    page = await (await boss.client.get("/console/community/links?done=closed")).text()
    row = re.search(r'<tr data-code="shibuya" class="closed">(.*?)</tr>', page, re.S)
    assert row and "closed" in row.group(1) and 'value="reopen"' in row.group(1)
    assert "Entry link closed" in page
    nocsrf = await boss.client.post("/console/community/links/shibuya/state",
                                    data={"action": "reopen"}, allow_redirects=False)
    assert nocsrf.status in (400, 403) and (await rt.entry.get_link("shibuya")).active is False
    assert (await form(boss, "/community/links/shibuya/state", {"action": "x"})).status == 400
    assert (await form(boss, "/community/links/nope/state", {"action": "close"})).status == 404
    reopened = await boss.ok("POST", "/api/community/links/shibuya", {"active": True})
    assert reopened["link"]["active"] is True and reopened["link"]["code"] == "shibuya"
    bad_state = await boss.api("POST", "/api/community/links/shibuya", {"active": "no"})
    assert bad_state.status == 400
    # the QR code: a PNG of the deep link, for a signed-in manager only
    qr = await boss.client.get("/console/community/links/shibuya/qr.png")
    assert qr.status == 200 and qr.content_type == "image/png"
    png = await qr.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png == rt.entry.qr_png(f"https://t.me/{BOT}?start=shibuya", scale=8)
    download = await boss.client.get("/console/community/links/shibuya/qr.png?download=1")
    assert "attachment" in download.headers["Content-Disposition"]
    assert (await boss.client.get("/console/community/links/nope/qr.png")).status == 404
    assert (await boss.client.get("/console/community/links/shibuya/qr.png?scale=99")).status \
        == 400
    stranger = await world.browser()
    anon = await stranger.client.get("/console/community/links/shibuya/qr.png",
                                     allow_redirects=False)
    assert anon.status == 303 and anon.headers["Location"].startswith("/console/login")


# ----------------------------------------------------------------------------- drops
async def test_creating_a_drop_through_the_form_after_a_preview(world: World,
                                                                community: Community) -> None:
    await community.group("-1001", "Shibuya", 8, 10, tags=("store:shibuya",))
    await community.group("-1002", "Osaka", 5, 10)
    boss = await manager(world)
    # preview: the rendered text and buttons, the audience size; nothing stored
    data = {**FORM, "buttons": "Shop | https://example.com/shop || Map | https://example.com/m",
            "text_ja": "冬のセール！", "action": "preview"}
    preview = await form(boss, "/community/drops/new", data)
    page = await preview.text()
    assert preview.status == 200, page
    assert "Winter &lt;sale&gt; starts!" in page and "冬のセール！" in page
    assert re.search(r'<strong class="groups">2</strong> group\(s\) \(<span class="members">13'
                     r'</span> members\)', page)
    assert '<a class="tgbutton" href="https://example.com/shop"' in page
    assert 'value="December news"' in page  # the form is filled again
    assert await community.drops() == 0
    # saved
    saved = await form(boss, "/community/drops/new", {**data, "action": "save"})
    assert saved.status == 303, await saved.text()
    drop = (await community.rt.drops.list())[0]
    assert saved.headers["Location"] == f"/console/community/drops/{drop.id}?done=created"
    assert (drop.name, drop.status, drop.timezone, drop.created_by) == (
        "December news", "scheduled", "Asia/Tokyo", "console:mika")
    assert drop.run_at == datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
    assert drop.content["texts"] == {"ja": "冬のセール！"}
    assert drop.content["buttons"] == [[{"text": "Shop", "url": "https://example.com/shop"},
                                        {"text": "Map", "url": "https://example.com/m"}]]
    assert drop.audience == {"groups": {"all": True, "tags": [], "pools": [], "ids": []}}
    page = await (await boss.client.get(saved.headers["Location"])).text()
    assert "Drop saved and scheduled." in page and "2026-12-05 09:00 Asia/Tokyo" in page
    # by tag, recurring
    tagged = await form(boss, "/community/drops/new", {
        **FORM, "name": "Weekly", "target": "group_tags", "group_tags": "store:shibuya",
        "schedule": "cron", "cron": "0 9 * * mon", "run_at": "", "action": "save"})
    assert tagged.status == 303
    weekly = (await community.rt.drops.list())[1]
    assert (weekly.cron, weekly.run_at, weekly.audience["groups"]["tags"]) == (
        "0 9 * * mon", None, ["store:shibuya"])


BAD = [
    ({"schedule": "cron", "cron": "61 9 * * mon"}, "bad cron expression"),
    ({"schedule": "cron", "cron": "0 9 * *"}, "need 5 fields"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"text": ""}, "the drop is empty"),
    ({"name": ""}, "needs a name"),
    ({"run_at": "2026-11-01T09:00"}, "is in the past"),
    ({"run_at": "soon"}, "bad time"),
    ({"target": "group_pools", "pools": ["nowhere"]}, "unknown pool"),
    ({"target": "group_tags", "group_tags": ""}, "at least one group tag"),
    ({"buttons": "Shop https://example.com"}, "button line 1"),
    ({"buttons": "Shop | javascript:alert(1)"}, "http(s) URL"),
    ({"kind": "coupon", "coupon": "nope"}, "no coupon campaign"),
    ({"target": "segment", "segment": "vip"}, "no CRM segment"),
    ({"target": "private", "languages": ["fr"]}, "unknown language"),
]


async def test_bad_drops_are_refused_and_nothing_is_stored(world: World,
                                                           community: Community) -> None:
    await community.group("-1001", "Shibuya", 8, 10)
    boss = await manager(world)
    for change, says in BAD:
        for action in ("preview", "save"):
            resp = await form(boss, "/community/drops/new", {**FORM, **change, "action": action})
            page = await resp.text()
            assert resp.status == 400, (change, action, page[-500:])
            alert = re.search(r'<p class="alert" role="alert">(.*?)</p>', page, re.S)
            assert alert and says in alert.group(1).replace("&#x27;", "'"), (change, alert)
            if "name" not in change:
                assert 'value="December news"' in page  # the form is filled again
        api = await boss.api("POST", "/api/community/drops", {**DROP, **change})
        assert api.status == 400 and says in (await api.json())["error"], change
    assert await community.drops() == 0


async def test_api_preview_per_language_with_the_audience_size(world: World,
                                                               community: Community) -> None:
    rt = community.rt
    for uid, lang in (("501", "ja"), ("502", "ja"), ("503", "en")):
        await community.contact(uid, lang)
    await community.contact("504", "ja", blocked=True)
    await rt.coupons.create_campaign("winter", kind="shared", shared_code="WINTER10")
    boss = await manager(world)
    body = {**DROP, "kind": "coupon", "coupon": "winter", "text": "Your code: {code}",
            "texts": {"ja": "クーポン: {code}"}, "target": "private",
            "buttons": [[{"text": "Shop", "url": "https://example.com"}]]}
    out = await boss.ok("POST", "/api/community/drops/preview", body)
    assert out["reach"] == {"groups": 0, "group_members": 0, "private": 3, "blocked": 1,
                            "languages": {"en": 1, "ja": 2}, "total": 3}
    texts = {m["language"]: m["text"] for m in out["messages"]}
    assert texts == {"en": "Your code: SAMPLE-CODE", "ja": "クーポン: SAMPLE-CODE"}
    assert out["messages"][0]["buttons"] == [[{"text": "Shop", "url": "https://example.com"}]]
    only_ja = await boss.ok("POST", "/api/community/drops/preview",
                            {**body, "languages": ["ja"]})
    assert only_ja["reach"]["private"] == 2
    assert await community.drops() == 0
    made = await boss.ok("POST", "/api/community/drops", body)
    assert made["drop"]["kind"] == "coupon" and made["drop"]["status"] == "scheduled"
    stored = await boss.ok("GET", f"/api/community/drops/{made['drop']['id']}/preview")
    assert stored["reach"] == out["reach"]
    page = await (await boss.client.get(f"/console/community/drops/{made['drop']['id']}")).text()
    assert "クーポン: SAMPLE-CODE" in page
    assert '<strong class="private">3</strong>' in page and "1 blocked contact(s)" in page


async def test_the_calendar_shows_one_off_and_recurring_drops_on_their_days(
        world: World, community: Community) -> None:
    await community.group("-1001", "Shibuya", 8, 10)
    boss = await manager(world)
    once = await boss.ok("POST", "/api/community/drops", DROP)  # Sat 5 Dec 09:00 Tokyo
    weekly = await boss.ok("POST", "/api/community/drops", {
        **DROP, "name": "Monday tips", "schedule": "cron", "cron": "30 8 * * mon"})
    paused = await boss.ok("POST", "/api/community/drops", {
        **DROP, "name": "Later", "run_at": "2026-12-24T18:00"})
    await boss.ok("POST", f"/api/community/drops/{paused['drop']['id']}/pause")
    page = await (await boss.client.get(
        "/console/community/calendar?month=2026-12&tz=Asia/Tokyo")).text()
    assert "Drops in December 2026" in page
    assert "December news" in cell(page, "2026-12-05")
    assert "Monday tips" not in cell(page, "2026-12-05")
    for day in ("07", "14", "21", "28"):
        entry = cell(page, f"2026-12-{day}")
        assert "Monday tips" in entry and "<time>08:30</time>" in entry and "s-scheduled" in entry
    assert "Monday tips" not in cell(page, "2026-12-08")
    assert 's-paused' in cell(page, "2026-12-24") and "Later" in cell(page, "2026-12-24")
    assert re.search(r'class="day out[^"]*" data-day="2026-11-30"', page)  # Monday before
    # in UTC, 08:30 Tokyo on Monday is 23:30 on Sunday, shown with the drop's own time
    utc = await (await boss.client.get("/console/community/calendar?month=2026-12&tz=UTC"))\
        .text()
    assert "Monday tips" in cell(utc, "2026-12-06") and "<time>23:30</time>" in \
        cell(utc, "2026-12-06")
    assert "08:30 Asia/Tokyo" in cell(utc, "2026-12-06")
    assert "Monday tips" not in cell(utc, "2026-12-07")
    assert "December news" in cell(utc, "2026-12-05")  # 00:00 UTC
    api = await boss.ok("GET", "/api/community/calendar?month=2026-12&tz=Asia/Tokyo")
    assert [e["name"] for e in api["days"]["2026-12-07"]] == ["Monday tips"]
    assert api["days"]["2026-12-05"][0]["drop_id"] == once["drop"]["id"]
    assert sum(len(v) for v in api["days"].values()) == 6
    # navigation; January has the recurring drop only
    assert 'href="/console/community/calendar?month=2027-01&amp;tz=Asia/Tokyo"' in page
    jan = await boss.ok("GET", "/api/community/calendar?month=2027-01&tz=Asia/Tokyo")
    assert {e["drop_id"] for v in jan["days"].values() for e in v} == {weekly["drop"]["id"]}
    # cancelled recurring drops have no future occurrences
    await boss.ok("POST", f"/api/community/drops/{weekly['drop']['id']}/cancel")
    jan = await boss.ok("GET", "/api/community/calendar?month=2027-01&tz=Asia/Tokyo")
    assert jan["days"] == {}
    assert (await boss.api("GET", "/api/community/calendar?month=2026-13")).status == 400
    assert (await boss.api("GET", "/api/community/calendar?tz=Nowhere/Land")).status == 400
    default = await boss.ok("GET", "/api/community/calendar")  # this month, default zone
    assert default["month"] == "2026-11"


async def test_pause_resume_and_cancel_from_the_drop_page(world: World,
                                                          community: Community) -> None:
    await community.group("-1001", "Shibuya", 8, 10)
    boss = await manager(world)
    drop_id = (await boss.ok("POST", "/api/community/drops", DROP))["drop"]["id"]
    page = await (await boss.client.get(f"/console/community/drops/{drop_id}")).text()
    assert f'action="/console/community/drops/{drop_id}/pause"' in page
    assert f'action="/console/community/drops/{drop_id}/resume"' not in page
    paused = await form(boss, f"/community/drops/{drop_id}/pause", {})
    assert paused.status == 303
    assert (await community.rt.drops.get(drop_id)).status == "paused"
    page = await (await boss.client.get(paused.headers["Location"])).text()
    assert "Drop paused." in page and f"/community/drops/{drop_id}/resume" in page
    again = await form(boss, f"/community/drops/{drop_id}/pause", {})
    assert again.status == 400 and "cannot pause" in await again.text()
    assert (await form(boss, f"/community/drops/{drop_id}/resume", {})).status == 303
    assert (await community.rt.drops.get(drop_id)).status == "scheduled"
    assert (await form(boss, f"/community/drops/{drop_id}/cancel", {})).status == 303
    assert (await community.rt.drops.get(drop_id)).status == "cancelled"
    page = await (await boss.client.get(f"/console/community/drops/{drop_id}")).text()
    assert "No actions: the drop is finished." in page
    late = await boss.api("POST", f"/api/community/drops/{drop_id}/resume")
    assert late.status == 400 and "not paused" in (await late.json())["error"]
    assert (await boss.api("POST", "/api/community/drops/999/pause")).status == 404
    assert (await boss.client.get("/console/community/drops/999")).status == 404
    listing = await (await boss.client.get("/console/community/drops?status=cancelled")).text()
    assert f'<tr data-drop="{drop_id}">' in listing


async def test_the_delivery_report_counts_sent_failed_and_blocked(world: World,
                                                                  community: Community) -> None:
    rt = community.rt
    await community.group("-1001", "Shibuya", 8, 10)
    await community.group("-1002", "Osaka", 5, 10)
    await community.contact("501", "ja")
    await community.contact("504", "ja", blocked=True)
    world.app.platforms["telegram"] = telegram = FakePlatform(name="telegram")
    boss = await manager(world)
    made = await boss.ok("POST", "/api/community/drops", DROP)
    drop_id = made["drop"]["id"]
    also_private = await boss.ok("POST", "/api/community/drops", {
        **DROP, "name": "Private", "target": "private"})
    before = await boss.ok("GET", f"/api/community/drops/{drop_id}/report")
    assert before["runs"] == [] and before["drop"]["status"] == "scheduled"
    page = await (await boss.client.get(f"/console/community/drops/{drop_id}")).text()
    assert "Not sent yet." in page and 'data-drop="' in page and "community_drop.js" in page
    # the drop falls due; one group send fails for good
    world.now.t = datetime(2026, 12, 5, 0, 0, 5, tzinfo=UTC)
    world.platform.failures.append(PermanentSendError("Bad Request: chat not found"))
    boss = await manager(world, "mika2")  # the first session expired meanwhile
    report = await rt.drops.fire(drop_id)
    assert report is not None and report.counts["sent"] == 1 and report.counts["failed"] == 1
    await rt.drops.fire(also_private["drop"]["id"])
    assert telegram.texts() == ["Winter <sale> starts!"]
    data = await boss.ok("GET", f"/api/community/drops/{drop_id}/report")
    run = data["runs"][0]
    assert (run["status"], run["counts"]["sent"], run["counts"]["failed"],
            run["counts"]["pending"], run["total"]) == ("done", 1, 1, 0, 2)
    assert run["local"]["scheduled_for"] == "2026-12-05 09:00:00"
    assert run["local"]["first_sent_at"] == "2026-12-05 09:00:05"
    assert data["errors"] == [{"status": "failed", "error": "Bad Request: chat not found",
                               "count": 1}]
    assert data["drop"]["status"] == "done" and data["totals"]["sent"] == 1
    private = await boss.ok("GET", f"/api/community/drops/{also_private['drop']['id']}/report")
    assert (private["runs"][0]["counts"]["sent"], private["runs"][0]["counts"]["blocked"]) == (
        1, 1)
    page = await (await boss.client.get(f"/console/community/drops/{drop_id}")).text()
    row = re.search(r'<tr data-run="\d+">(.*?)</tr>', page, re.S)
    assert row
    counts = dict(re.findall(r'<td class="num" data-key="(\w+)">(\d+)</td>', row.group(1)))
    assert counts == {"sent": "1", "failed": "1", "blocked": "0", "skipped": "0",
                      "pending": "0", "total": "2"}
    assert "chat not found" in page


async def test_a_test_send_goes_to_the_managers_own_chat(world: World,
                                                         community: Community) -> None:
    await community.group("-1001", "Shibuya", 8, 10)
    world.app.platforms["telegram"] = telegram = FakePlatform(name="telegram")
    boss, boss_id = await world.signed_in("mika", role="manager")
    drop_id = (await boss.ok("POST", "/api/community/drops", {
        **DROP, "text_ja": "冬のセール"}))["drop"]["id"]
    page = await (await boss.client.get(f"/console/community/drops/{drop_id}")).text()
    assert "not linked to Telegram yet" in page
    refused = await form(boss, f"/community/drops/{drop_id}/test", {"language": "en"})
    assert refused.status == 400 and "not linked to Telegram" in await refused.text()
    async with world.app.db.session() as s:
        await s.execute(update(Advisor).where(Advisor.id == boss_id)
                        .values(telegram_user_id="777"))
    page = await (await boss.client.get(f"/console/community/drops/{drop_id}")).text()
    assert "Send a test to me" in page
    sent = await form(boss, f"/community/drops/{drop_id}/test", {"language": "ja"})
    assert sent.status == 303 and sent.headers["Location"].endswith("?done=test")
    prefix = community.rt.drops.t("community_test_prefix", "ja")
    assert telegram.texts("777") == [prefix + "冬のセール"]
    assert (await community.rt.drops.reports(drop_id)) == []  # not a delivery
