"""Community end to end: the real app (aiogram adapter, outbound path, rate limiter, database)
against the Bot API double with its flood limits, a manual clock and no sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.app import KizunaApp
from community.audience import Audience, GroupAudience, PrivateAudience
from community.wiring import CommunityRuntime, install
from config import load_settings
from models.community import CommunityGroup, EntryVisit, Member, OutboxRow
from tests.doubles.telegram_api import BotAPIDouble, FakeBot, FakeChat, FakeUser, FloodLimits
from tests.e2e.conftest import TOKEN, DoubleSleep, ManualClock, free_port

T0 = datetime.now(UTC).replace(microsecond=0)  # the double checks invite expiry on wall time


@dataclass
class World:
    app: KizunaApp
    api: BotAPIDouble
    bot: FakeBot
    clock: ManualClock
    sleep: DoubleSleep
    port: int
    tmp: Any

    @property
    def community(self) -> CommunityRuntime:
        return self.app.community  # type: ignore[attr-defined,no-any-return]


async def start_app(tmp_path: Any, api: BotAPIDouble, clock: ManualClock,
                    community: dict[str, Any] | None = None) -> tuple[KizunaApp, DoubleSleep, int]:
    port = free_port()
    settings = load_settings(
        data_dir=str(tmp_path / "data"),
        database={"url": f"sqlite:///{tmp_path}/community.db"},
        web={"host": "127.0.0.1", "port": port},
        telegram={"token": TOKEN, "mode": "polling", "api_base_url": api.base_url,
                  "polling_timeout": 1},
        scheduler={"enabled": False},
        knowledge_base={"data_dir": str(tmp_path / "kb")},
        bot={"default_language": "en"},
    )
    sleep = DoubleSleep(clock)
    app = KizunaApp(settings, clock=clock, sleep=sleep, with_knowledge_base=False)
    runtime = install(app)
    for key, value in (community or {}).items():
        setattr(runtime.settings, key, value)
    runtime.clock.set(T0)  # type: ignore[attr-defined]
    await app.start()
    await runtime.ready()
    return app, sleep, port


async def stop_app(app: KizunaApp) -> None:
    await app.community.stop()  # type: ignore[attr-defined]
    await app.stop()


@pytest.fixture
async def world(tmp_path: Any) -> AsyncIterator[World]:
    clock = ManualClock()
    api = BotAPIDouble(clock=clock, limits=FloodLimits())
    await api.start()
    bot = api.add_bot(TOKEN, username="kizuna_test_bot")
    app, sleep, port = await start_app(tmp_path, api, clock,
                                       {"welcome_batch_seconds": 2.0, "alert_threshold": 1})
    try:
        yield World(app, api, bot, clock, sleep, port, tmp_path)
    finally:
        await stop_app(app)
        await api.close()
        assert api.internal_errors == []


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 8.0) -> Any:
    async def loop() -> Any:
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(loop(), timeout)


async def make_group(w: World, title: str, members: int = 0, *, capacity: int | None = None,
                     pool: str | None = None) -> FakeChat:
    owner = w.api.add_user(f"Owner of {title}")
    others = [w.api.add_user(f"{title} m{i}") for i in range(members)]
    group = w.api.create_group(title, [owner, *others])
    w.api.add_bot_to_group(w.bot, group, by=owner, admin=True)

    async def adopted() -> CommunityGroup | None:
        async with w.app.db.session() as s:
            return (await s.execute(select(CommunityGroup).where(
                CommunityGroup.external_id == str(group.id)))).scalar_one_or_none()

    row = await eventually(adopted)
    assert row.member_count == members + 2  # owner + bot + members (getChatMemberCount)
    if pool is not None:
        await w.community.groups.configure_pool(pool)
        await w.community.groups.move(row.id, pool, capacity=capacity)
    elif capacity is not None:
        await w.community.groups.set_capacity(row.id, capacity)
    return group


def join_url(message: dict[str, Any]) -> str:
    return str(message["reply_markup"]["inline_keyboard"][0][0]["url"])


async def start_with_code(w: World, user: FakeUser, code: str) -> dict[str, Any]:
    before = len(w.api.sent_messages(user.id))
    await w.api.user_sends(user, f"/start {code}")
    sent = await w.api.wait_for_sent(before + 2, chat_id=user.id)  # welcome + join prompt
    return sent[-1]


async def test_entry_link_fills_first_group_then_second(world: World):
    w = world
    g1 = await make_group(w, "Shibuya fans 1", members=0, capacity=3, pool="shibuya")
    g2 = await make_group(w, "Shibuya fans 2", members=0, capacity=3, pool="shibuya")
    await w.community.entry.create_link("shibuya-qr", pool="shibuya", store="shibuya")
    assert w.community.entry.start_url("shibuya-qr") == \
        "https://t.me/kizuna_test_bot?start=shibuya-qr"
    assert w.community.entry.qr_png("https://t.me/x").startswith(b"\x89PNG")

    aiko, ben = w.api.add_user("Aiko", language_code="en"), w.api.add_user("Ben")
    prompt = await start_with_code(w, aiko, "shibuya-qr")
    url = join_url(prompt)
    assert url in g1.invite_links and g1.invite_links[url]["member_limit"] == 1
    await w.api.user_joins(aiko, g1, invite_link=url)

    async def full() -> bool:
        async with w.app.db.session() as s:
            return (await s.get(CommunityGroup, 1)).member_count == 3  # type: ignore[union-attr]

    await eventually(full)
    prompt = await start_with_code(w, ben, "shibuya-qr")  # group 1 is full now
    url2 = join_url(prompt)
    assert url2 in g2.invite_links
    await w.api.user_joins(ben, g2, invite_link=url2)

    async def attributed() -> list[Any]:
        async with w.app.db.session() as s:
            rows = (await s.execute(select(Member.user_external_id, Member.entry_link_id,
                                           Member.group_id))).all()
            return rows if len(rows) == 2 and all(r[1] for r in rows) else []

    rows = await eventually(attributed)
    assert {(r[0], r[2]) for r in rows} == {(str(aiko.id), 1), (str(ben.id), 2)}
    async with w.app.db.session() as s:
        joined = (await s.execute(select(func.count()).select_from(EntryVisit).where(
            EntryVisit.joined_at.is_not(None)))).scalar_one()
    assert joined == 2
    # A welcome in each group.
    await w.community.membership.drain()
    assert any("Aiko" in m.get("text", "") for m in w.api.sent_messages(g1.id)), (w.api.sent_messages(g1.id), w.api.calls("sendMessage")[-3:])
    # Pool "shibuya" has 1 free seat left (< threshold 1 is false; 0 would alert).


async def test_a_closed_entry_link_says_so_and_a_reopened_one_routes_again(world: World):
    w = world
    g1 = await make_group(w, "Umeda fans", members=0, capacity=10, pool="umeda")
    await w.community.entry.create_link("umeda-2025", pool="umeda", campaign="xmas-2025")
    closed = await w.community.entry.set_active("umeda-2025", False)
    assert closed.active is False
    aiko = w.api.add_user("Aiko", language_code="en")
    last = await start_with_code(w, aiko, "umeda-2025")
    assert "no longer active" in last["text"]
    assert not g1.invite_links  # nobody was routed
    await w.community.entry.set_active("umeda-2025", True)
    ben = w.api.add_user("Ben", language_code="en")
    url = join_url(await start_with_code(w, ben, "umeda-2025"))
    assert url in g1.invite_links


async def test_pool_low_alert_and_full_pool(world: World):
    w = world
    g1 = await make_group(w, "Ginza 1", capacity=3, pool="ginza")
    await w.community.groups.configure_pool("ginza", alert_threshold=1)
    await w.community.entry.create_link("ginza", pool="ginza")
    user = w.api.add_user("Chika")
    await w.api.user_joins(user, g1, invite_link=None)

    async def alerted() -> list[Any]:
        return [a for a in await w.community.alerts.recent() if a.kind == "pool_low"]

    alerts = await eventually(alerted)
    assert "ginza" in alerts[0].message
    late = w.api.add_user("Dai", language_code="en")
    prompt = await start_with_code(w, late, "ginza")
    assert "full" in prompt["text"]


async def test_join_request_approved_with_welcome_dm(world: World):
    w = world
    group = await make_group(w, "Members only", capacity=10, pool="vip")
    await w.community.entry.create_link("vip", pool="vip", join_mode="request")
    eri = w.api.add_user("Eri", language_code="en")
    prompt = await start_with_code(w, eri, "vip")
    url = join_url(prompt)
    assert group.invite_links[url]["creates_join_request"]
    stranger = w.api.add_user("Stranger", language_code="en")  # never opened the bot
    await w.community.groups.configure_pool("vip", join_rule="known")
    await w.api.user_requests_join(eri, group, invite_link=url)
    await w.api.user_requests_join(stranger, group, invite_link=url)

    async def settled() -> bool:
        return group.status_of(eri) == "member" and stranger.id not in group.join_requests

    await eventually(settled)
    assert group.status_of(stranger) == "left"
    assert "approved" in w.api.sent_messages(eri.id)[-1]["text"]
    assert "couldn't approve" in w.api.sent_messages(stranger.id)[-1]["text"]


async def test_members_tracked_welcomed_in_batch_and_onboarding_coupon(world: World):
    w = world
    await w.community.coupons.create_campaign("welcome", kind="unique", code_prefix="HI")
    await w.community.groups.configure_pool("default", welcome_coupon="welcome")
    group = await make_group(w, "Skincare talk", capacity=100)
    window = asyncio.Event()  # the batch window closes when the test says so (no sleeping)

    async def batch_window(_seconds: float) -> None:
        await window.wait()

    w.community.membership.sleep = batch_window
    users = [w.api.add_user(f"Fan{i}", language_code="en") for i in range(5)]
    for u in users:
        await w.api.user_sends(u, "hi")  # they opened the bot, so it may DM them
    for u in users:
        await w.api.user_joins(u, group)
    await w.api.user_leaves(users[0], group)

    async def tracked() -> bool:
        async with w.app.db.session() as s:
            statuses = dict((await s.execute(select(Member.user_external_id, Member.status)))
                            .all())
        return len(statuses) == 5 and statuses[str(users[0].id)] == "left"

    await eventually(tracked)
    window.set()
    await w.community.membership.drain()
    welcomes = [m["text"] for m in w.api.sent_messages(group.id) if "Welcome" in m["text"]]
    assert len(welcomes) == 1  # one welcome for the five who joined together
    assert all(f"Fan{i}" in welcomes[0] for i in range(5))

    async def coupons_sent() -> bool:
        return all(any("HI-" in m.get("text", "") for m in w.api.sent_messages(u.id))
                   for u in users)

    await eventually(coupons_sent)
    # Leaving and joining again does not give a second welcome coupon.
    await w.api.user_joins(users[0], group)
    await eventually(tracked)
    await asyncio.sleep(0.2)
    assert sum("HI-" in m.get("text", "") for m in w.api.sent_messages(users[0].id)) == 1
    async with w.app.db.session() as s:
        count = (await s.get(CommunityGroup, 1)).member_count  # type: ignore[union-attr]
    assert count == 2 + 5


async def test_drop_to_groups_and_private_with_429_waited_out(world: World):
    w = world
    groups = [await make_group(w, f"G{i}") for i in range(3)]
    fans = [w.api.add_user(f"P{i}", language_code=("ja" if i % 2 else "en")) for i in range(6)]
    for u in fans:
        await w.api.user_sends(u, "hello")
    await eventually(lambda: _count_private_chats(w, 6))

    async def greeted() -> bool:  # the bot's replies to "hello" are out before the drop
        return all(w.api.sent_messages(u.id) for u in fans)

    await eventually(greeted)
    w.api.inject_error("sendMessage", status=429, description="Too Many Requests: retry after 4",
                       retry_after=4)
    drop = await w.community.drops.create(
        name="Spring launch", text="New serum is here!", texts={"ja": "新しい美容液が登場！"},
        audience=Audience(groups=GroupAudience(all=True),
                          private=PrivateAudience(all=True)),
        run_at=T0, buttons=[[{"text": "Shop", "url": "https://shop.example/serum"}]])
    before = {u.id: len(w.api.sent_messages(u.id)) for u in fans}
    report = await w.community.drops.fire(drop.id)
    assert report is not None and report.counts["sent"] == 9 and report.status == "done"
    assert 4 in w.sleep.calls  # the 429's retry_after was waited out (on the manual clock)
    for g in groups:
        [msg] = [m for m in w.api.sent_messages(g.id) if "serum" in m.get("text", "")]
        assert msg["reply_markup"]["inline_keyboard"][0][0]["url"].endswith("/serum")
    for u in fans:
        new = w.api.sent_messages(u.id)[before[u.id]:]
        assert len(new) == 1
        assert new[0]["text"] == ("新しい美容液が登場！" if u.language_code == "ja"
                                  else "New serum is here!")
    assert await w.community.drops.fire(drop.id) is None  # once


async def _count_private_chats(w: World, n: int) -> bool:
    from models.chat import Chat, ChatKind

    async with w.app.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(Chat).where(
            Chat.kind == ChatKind.PRIVATE))).scalar_one()) >= n


async def test_restart_in_the_middle_of_a_drop_resumes_without_duplicates(tmp_path: Any):
    clock = ManualClock()
    api = BotAPIDouble(clock=clock, limits=FloodLimits())
    await api.start()
    api.add_bot(TOKEN, username="kizuna_test_bot")
    app, _, _ = await start_app(tmp_path, api, clock, {"delivery_workers": 4,
                                                      "claim_batch": 10})
    try:
        fans = [api.add_user(f"R{i}", language_code="en") for i in range(40)]
        for u in fans:
            await api.user_sends(u, "hi")
        w = World(app, api, api._bot(None), clock, DoubleSleep(clock), 0, tmp_path)
        await eventually(lambda: _count_private_chats(w, 40))
        drop = await w.community.drops.create(
            name="Coupon week", text="Only for you!", audience=Audience(
                private=PrivateAudience(all=True)), run_at=T0)
        task = asyncio.create_task(w.community.drops.fire(drop.id))

        async def some_sent() -> bool:
            return len([m for m in api.sent_messages() if m.get("text") == "Only for you!"]) >= 12

        await eventually(some_sent)
        task.cancel()  # the process dies mid-drop (claimed and in-flight rows left behind)
        await asyncio.gather(task, return_exceptions=True)
        await app.stop()
        app, _, _ = await start_app(tmp_path, api, clock)  # restart on the same database
        runtime: CommunityRuntime = app.community  # type: ignore[attr-defined]
        assert runtime.recovery is not None and runtime.recovery.runs == [1]
        await runtime.engine.wait_idle()
        [report] = await runtime.drops.reports(drop.id)
        assert report.status == "done" and report.counts["sent"] == 40
        per_user = [sum(m.get("text") == "Only for you!" for m in api.sent_messages(u.id))
                    for u in fans]
        doubt = report.in_doubt
        assert per_user.count(0) == 0  # no losses
        assert sum(per_user) - 40 <= doubt  # duplicates only for sends in flight at the crash
    finally:
        await stop_app(app)
        await api.close()


async def test_coupon_redeem_http_endpoint(world: World):
    w = world
    c = w.community.coupons
    await c.create_campaign("summer", kind="unique")
    contact = await _a_contact(w)
    issued = await c.issue("summer", contact)
    key = await c.create_api_key("shop-pos")
    url = f"http://127.0.0.1:{w.port}/api/coupons/redeem"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"code": issued.code}) as r:
            assert r.status == 401
        async with http.post(url, json={"code": issued.code},
                             headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {key}"}
        async with http.post(url, json={"code": issued.code.lower()}, headers=auth) as r:
            assert r.status == 200 and (await r.json())["campaign"] == "summer"
        async with http.post(url, json={"code": issued.code}, headers=auth) as r:
            assert r.status == 409 and (await r.json())["error"] == "already_redeemed"
        async with http.post(url, json={"code": "NOPE"}, headers=auth) as r:
            assert r.status == 404
        async with http.post(url, data=b"{bad", headers=auth) as r:
            assert r.status == 422


async def _a_contact(w: World) -> int:
    from models.repositories import ContactRepository

    async with w.app.db.session() as s:
        identity, _ = await ContactRepository(s).identify("telegram", "555")
        return identity.contact_id


async def test_outbox_rows_unique_per_recipient(world: World):
    w = world
    async with w.app.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(OutboxRow))).scalar_one() == 0
