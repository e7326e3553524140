"""Drops: validation, firing on time with an injected clock, grace and missed runs, the
persistent APScheduler job store, frequency cap, pause/cancel, blocked members."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.core.types import ChatKind, ChatRef, PermanentSendError
from community.audience import Audience, GroupAudience, PrivateAudience
from community.errors import CommunityError
from community.scheduler import Scheduler
from models.community import CommunityAlert, Drop, DropRun, OutboxRow
from tests.community.conftest import T0, Kit, make_kit

EVERYONE = Audience(private=PrivateAudience(all=True))


async def rows(kit: Kit, model: type) -> int:
    async with kit.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("kwargs, message", [
    ({"cron": "0 9 * *"}, "5 fields"),
    ({"cron": "61 9 * * *"}, "bad cron"),
    ({"run_at": "2026-05-01 09:00", "timezone": "Asia/Atlantis"}, "unknown time zone"),
    ({"run_at": "tomorrow-ish"}, "bad time"),
    ({"run_at": "2026-05-01 09:00", "text": ""}, "empty"),
    ({"run_at": "2026-05-01 09:00", "audience": Audience()}, "no audience"),
    ({"run_at": "2026-05-01 09:00", "audience": Audience(groups=GroupAudience(ids=[99]))},
     "unknown group"),
    ({"run_at": "2026-05-01 09:00", "audience": Audience(groups=GroupAudience(pools=["x"]))},
     "unknown pool"),
    ({"run_at": "2026-05-01 09:00", "kind": "coupon", "coupon": "nope"}, "no coupon campaign"),
    ({}, "give a time"),
    ({"run_at": "2026-05-01 09:00", "cron": "0 9 * * *"}, "not both"),
    ({"run_at": "2026-05-01 09:00", "buttons": [[{"text": "x", "url": "ftp://a"}]]}, "button"),
])
async def test_bad_input_is_refused_and_nothing_is_stored(kit: Kit, kwargs, message):
    args = {"name": "Bad", "text": "hello", "audience": EVERYONE, **kwargs}
    with pytest.raises(CommunityError, match=message):
        await kit.drops.create(**args)
    assert await rows(kit, Drop) == 0


async def test_coupon_drop_to_groups_needs_a_shared_code(kit: Kit):
    await kit.coupons.create_campaign("uniq")
    await kit.group("-1")
    with pytest.raises(CommunityError, match="shared-code"):
        await kit.drops.create(name="x", kind="coupon", coupon="uniq", run_at=T0,
                               audience=Audience(groups=GroupAudience(all=True)))
    assert await rows(kit, Drop) == 0


async def test_one_off_drop_fires_at_its_time_in_its_zone(kit: Kit):
    await kit.contact("1")
    drop = await kit.drops.create(name="Morning", text="おはよう", audience=EVERYONE,
                                  run_at="2026-05-01 09:00", timezone="Asia/Tokyo")
    assert drop.run_at == T0  # 09:00 JST = 00:00 UTC
    kit.clock.set(T0 - timedelta(minutes=1))
    assert await kit.drops.fire(drop.id) is None and kit.platform.sent == []  # not yet
    kit.clock.set(T0)
    report = await kit.drops.fire(drop.id)
    assert report is not None and report.counts["sent"] == 1 and report.status == "done"
    assert kit.platform.texts() == ["おはよう"]
    assert (await kit.drops.get(drop.id)).status == "done"
    assert await kit.drops.fire(drop.id) is None and len(kit.platform.sent) == 1


async def test_late_within_grace_is_delivered_beyond_grace_is_missed(kit: Kit):
    await kit.contact("1")
    ok = await kit.drops.create(name="A", text="a", audience=EVERYONE, run_at=T0,
                                grace_seconds=600)
    late = await kit.drops.create(name="B", text="b", audience=EVERYONE, run_at=T0,
                                  grace_seconds=600)
    kit.clock.set(T0 + timedelta(seconds=599))
    report = await kit.drops.fire(ok.id)
    assert report is not None and report.counts["sent"] == 1
    kit.clock.set(T0 + timedelta(seconds=601))
    assert await kit.drops.fire(late.id) is None
    assert (await kit.drops.get(late.id)).status == "missed"
    [run] = await kit.drops.reports(late.id)
    assert run.status == "missed" and "grace" in (run.note or "")
    async with kit.db.session() as s:
        alert = (await s.execute(select(CommunityAlert))).scalar_one()
    assert alert.kind == "drop_missed" and "B" in alert.message
    assert kit.platform.texts() == ["a"]


async def test_recurring_drop_in_shanghai_and_missed_occurrences(kit: Kit):
    await kit.contact("1")
    kit.clock.set(T0 - timedelta(hours=1))
    drop = await kit.drops.create(name="Daily", text="daily", audience=EVERYONE,
                                  cron="0 8 * * *", timezone="Asia/Shanghai",
                                  grace_seconds=300)
    assert kit.drops.next_run(drop) == T0  # 08:00 in Shanghai = 00:00 UTC
    kit.clock.set(T0 + timedelta(seconds=5))
    assert (await kit.drops.fire(drop.id)).counts["sent"] == 1  # type: ignore[union-attr]
    assert (await kit.drops.get(drop.id)).status == "scheduled"  # recurring stays scheduled
    # Down for two days: the day-2 occurrence is missed, day 3 is on time.
    kit.clock.set(T0 + timedelta(days=2, seconds=30))
    report = await kit.drops.fire(drop.id)
    assert report is not None and report.counts["sent"] == 1
    runs = await kit.drops.reports(drop.id)
    assert [r.status for r in runs] == ["done", "missed", "done"]
    assert kit.platform.texts() == ["daily", "daily"]


async def test_scheduler_job_survives_restart_and_calls_the_drop(tmp_path, kit: Kit):
    url = f"sqlite+aiosqlite:///{tmp_path}/jobs.db"
    first = Scheduler(database_url=url, timezone="Asia/Tokyo")
    first.start(paused=True)
    kit.drops.scheduler = first
    kit.clock.release()  # APScheduler works on wall time
    drop = await kit.drops.create(name="Sale", text="sale", audience=EVERYONE,
                                  cron="30 10 * * *", timezone="Asia/Shanghai")
    before = first.next_run(f"drop:{drop.id}")
    first.shutdown()
    second = Scheduler(database_url=url, timezone="Asia/Tokyo")  # a restarted process
    second.start(paused=True)
    try:
        assert second.next_run(f"drop:{drop.id}") == before
        assert before is not None and (before.hour, before.minute) == (10, 30)
        assert str(before.tzinfo) == "Asia/Shanghai"
        job = second._scheduler.get_job(f"drop:{drop.id}")
        assert job.func_ref == "community.jobs:fire_drop_job" and job.kwargs == {
            "drop_id": drop.id}
        # The job body, called directly at the scheduled time (no waiting):
        from community import jobs

        await kit.contact("9")
        kit.clock.set(before)
        jobs.set_runtime(type("R", (), {"drops": kit.drops})())
        await job.func(**job.kwargs)
        assert kit.platform.texts() == ["sale"]
        kit.drops.scheduler = second
        await kit.drops.pause(drop.id)
        assert second.next_run(f"drop:{drop.id}") is None
        await kit.drops.resume(drop.id)
        assert second.next_run(f"drop:{drop.id}") is not None
        await kit.drops.cancel(drop.id)
        assert second.next_run(f"drop:{drop.id}") is None
    finally:
        second.shutdown()
        jobs.set_runtime(None)


async def test_frequency_cap_across_groups_and_private(sqlite_db):
    kit = make_kit(sqlite_db, max_pushes_per_week=2)
    a = await kit.contact("10")
    await kit.contact("11")
    gid = await kit.group("-500", "Fans")
    from models.community import Member

    async with kit.db.session() as s:
        s.add(Member(group_id=gid, platform="fake", user_external_id="10", contact_id=a,
                     joined_at=T0 - timedelta(days=30)))
    both = Audience(groups=GroupAudience(all=True), private=PrivateAudience(all=True))
    for i in range(3):
        kit.clock.set(T0 + timedelta(days=i))
        drop = await kit.drops.create(name=f"d{i}", text=f"push {i}", audience=both,
                                      run_at=kit.clock())
        report = await kit.drops.fire(drop.id)
        assert report is not None
    # Member 10 got pushes 0 (group + private = 2 already) and is capped from then on;
    # member 11 (not in the group) gets 2 private pushes; the group gets 2.
    texts = {chat: kit.platform.texts(chat) for chat in ("10", "11", "-500")}
    assert texts["10"] == ["push 0"]
    assert texts["11"] == ["push 0", "push 1"]
    assert texts["-500"] == ["push 0", "push 1"]
    exempt = await kit.drops.create(name="service", text="order shipped", audience=both,
                                    run_at=kit.clock(), respect_cap=False)
    assert (await kit.drops.fire(exempt.id)).counts["sent"] == 3  # type: ignore[union-attr]
    async with kit.db.session() as s:
        skipped = (await s.execute(select(func.count()).select_from(OutboxRow).where(
            OutboxRow.status == "skipped"))).scalar_one()
    assert skipped == 4


async def test_blocked_members_are_marked_and_skipped(kit: Kit):
    await kit.contact("1")
    await kit.contact("2")
    kit.platform.failures.append(
        PermanentSendError("Forbidden: bot was blocked by the user", recipient_unreachable=True))
    d1 = await kit.drops.create(name="one", text="one", audience=EVERYONE, run_at=T0)
    r1 = await kit.drops.fire(d1.id)
    assert r1 is not None and r1.counts["blocked"] == 1 and r1.counts["sent"] == 1
    d2 = await kit.drops.create(name="two", text="two", audience=EVERYONE, run_at=T0)
    r2 = await kit.drops.fire(d2.id)
    assert r2 is not None and r2.counts["blocked"] == 1 and r2.counts["sent"] == 1
    assert len(kit.platform.sent) == 2  # the blocked member was not tried again


async def test_coupon_drop_gives_each_member_their_own_code_once(kit: Kit):
    for i in range(4):
        await kit.contact(str(i))
    await kit.coupons.create_campaign("may", code_prefix="MAY")
    drop = await kit.drops.create(name="c", kind="coupon", coupon="may", audience=EVERYONE,
                                  text="A gift: {code}", run_at=T0)
    report = await kit.drops.fire(drop.id)
    assert report is not None and report.counts["sent"] == 4
    codes = [t.split(": ")[1] for t in kit.platform.texts()]
    assert len(set(codes)) == 4 and all(c.startswith("MAY-") for c in codes)
    again = await kit.drops.create(name="c2", kind="coupon", coupon="may", audience=EVERYONE,
                                   text="again {code}", run_at=T0, respect_cap=False)
    report = await kit.drops.fire(again.id)
    assert report is not None and report.counts["skipped"] == 4  # per-member limit 1


async def test_preview_test_send_pause_resume_cancel(kit: Kit):
    for i in range(6):
        await kit.contact(str(i), language="ja" if i % 2 else "en")
    drop = await kit.drops.create(name="p", text="hi", texts={"ja": "やあ"},
                                  audience=Audience(private=PrivateAudience(
                                      all=True, languages=["ja"])), run_at=T0)
    preview = await kit.drops.preview(drop.id, "ja")
    assert preview.message.text == "やあ" and preview.private == 3
    await kit.drops.test_send(drop.id, ChatRef("fake", ChatKind.PRIVATE, "me"), "ja")
    assert kit.platform.texts("me") == ["【テスト】やあ"]
    await kit.drops.pause(drop.id)
    assert await kit.drops.fire(drop.id) is None  # paused drops do not fire
    await kit.drops.resume(drop.id)
    report = await kit.drops.fire(drop.id)
    assert report is not None and report.counts["sent"] == 3
    with pytest.raises(CommunityError):
        await kit.drops.cancel(drop.id)  # already done


async def test_pause_mid_run_then_resume_delivers_the_rest_once(kit: Kit):
    for i in range(20):
        await kit.contact(str(i))
    drop = await kit.drops.create(name="big", text="x", audience=EVERYONE, run_at=T0)
    sent_before_pause = 0
    original = kit.platform.send_part

    async def pausing_send(chat, text, message, *, with_extras):  # type: ignore[no-untyped-def]
        nonlocal sent_before_pause
        part = await original(chat, text, message, with_extras=with_extras)
        sent_before_pause += 1
        if sent_before_pause == 5:
            await kit.drops.pause(drop.id)
        return part

    kit.platform.send_part = pausing_send  # type: ignore[method-assign]
    report = await kit.drops.fire(drop.id)
    assert report is not None and report.status == "paused" and 5 <= report.counts["sent"] < 20
    await kit.drops.resume(drop.id, deliver=False)
    async with kit.db.session() as s:
        run_id = (await s.execute(select(DropRun.id))).scalar_one()
    final = await kit.engine.run(run_id)
    assert final.status == "done" and final.counts["sent"] == 20
    assert sorted(r.chat.id for r in kit.platform.sent) == sorted(str(i) for i in range(20))


async def test_rows_waiting_for_the_rate_limiter_are_never_left_in_doubt(kit: Kit):
    """What a kill -9 leaves in the outbox: only the row whose request is on its way is
    'sending'; rows queued behind the rate limiter are still 'claimed', so recovery puts them
    back as pending instead of re-sending them as in doubt (a possible duplicate)."""
    import asyncio

    from bot.core.outbound import PlatformLimits
    from bot.core.shared import Rate
    from models.community import OutboxStatus

    for i in range(8):
        await kit.contact(str(i))
    kit.outbound.limits["fake"] = PlatformLimits(overall=Rate(1, 1.0, burst=2))
    forever = asyncio.Event()

    async def hang(seconds: float) -> None:  # the process "dies" while rows wait their turn
        await forever.wait()

    kit.outbound.sleep = hang  # type: ignore[method-assign]
    in_flight = asyncio.Event()
    original = kit.platform.send_part

    async def slow_send(chat, text, message, *, with_extras):  # type: ignore[no-untyped-def]
        if kit.platform.sent:  # the second request hangs on the wire
            in_flight.set()
            await forever.wait()
        return await original(chat, text, message, with_extras=with_extras)

    kit.platform.send_part = slow_send  # type: ignore[method-assign]
    drop = await kit.drops.create(name="slow", text="x", audience=EVERYONE, run_at=T0)
    task = asyncio.create_task(kit.drops.fire(drop.id))
    await asyncio.wait_for(in_flight.wait(), 10)
    await asyncio.sleep(0.05)
    async with kit.db.session() as s:
        statuses = dict((await s.execute(
            select(OutboxRow.status, func.count()).group_by(OutboxRow.status))).all())
    assert statuses.get(OutboxStatus.SENT) == 1
    assert statuses.get(OutboxStatus.SENDING) == 1  # only the request on the wire
    assert statuses.get(OutboxStatus.CLAIMED, 0) >= 2  # waiting workers: still just claimed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kit.outbound.limits["fake"] = PlatformLimits()
    kit.platform.send_part = original  # type: ignore[method-assign]
    fresh = make_kit(kit.db)
    recovery = await fresh.engine.recover()
    assert recovery.in_doubt_resent == 1

