"""Advisor report: per local day and total, timings from the desk's own timestamps."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from bot.handoff.reports import advisor_report, percentile
from tests.handoff.conftest import Desk

NOV30, DEC1 = date(2026, 11, 30), date(2026, 12, 1)


def rows_of(report: list[dict[str, Any]], advisor: str) -> dict[str, dict[str, Any]]:
    return {r["day"]: r for r in report if r["advisor"] == advisor}


async def handoff(d: Desk, external_id: str) -> int:
    conv, _ = await d.customer(external_id)
    await d.desk.request(conv, trigger="button", language="en")
    return conv


async def scenario(d: Desk) -> dict[str, int]:
    """The clock starts Monday 2026-11-30 10:00 UTC (19:00 in Tokyo)."""
    aiko = await d.advisor("aiko", display_name="Aiko")
    ben = await d.advisor("ben", display_name="Ben")
    await d.advisor("idle", display_name="Idle", on_shift=False)
    gone = await d.advisor("gone", display_name="Gone", on_shift=False)
    await d.accounts.deactivate("gone")

    c1 = await handoff(d, "1")  # -> Aiko at 10:00
    c2 = await handoff(d, "2")  # -> Ben (least loaded)
    assert (await d.desk.view(c1)).advisor_id == aiko
    assert (await d.desk.view(c2)).advisor_id == ben
    d.clock.advance(seconds=30)
    await d.desk.reply(c1, advisor_id=aiko, text="Hello")  # first response 30 s
    d.clock.advance(seconds=60)
    await d.desk.reply(c2, advisor_id=ben, text="Hi")  # first response 90 s
    await d.desk.reply(c1, advisor_id=aiko, text="More")  # not a first response
    d.clock.advance(seconds=510)
    view = await d.desk.resolve(c1, advisor_id=aiko)  # handled in 600 s
    assert await d.desk.record_csat(view.handoff_id, 4, contact_id=view.contact_id or 0)

    d.clock.advance(hours=5, minutes=20)  # 15:30 UTC = 00:30 on 1 December in Tokyo
    c3 = await handoff(d, "3")  # -> Aiko (no load)
    assert (await d.desk.view(c3)).advisor_id == aiko
    d.clock.advance(seconds=10)
    await d.desk.reply(c3, advisor_id=aiko, text="Hello again")  # first response 10 s
    d.clock.advance(seconds=50)
    view = await d.desk.resolve(c3, advisor_id=aiko)  # handled in 60 s
    assert await d.desk.record_csat(view.handoff_id, 5, contact_id=view.contact_id or 0)
    return {"aiko": aiko, "ben": ben, "gone": gone}


async def test_days_follow_the_time_zone_and_totals_cover_the_period(desk: Desk) -> None:
    ids = await scenario(desk)
    report = await advisor_report(desk.db, since=NOV30, until=DEC1, tz="Asia/Tokyo")
    aiko = rows_of(report, "Aiko")
    assert list(aiko) == ["2026-11-30", "2026-12-01", "total"]
    assert aiko["2026-11-30"] == {
        "advisor": "Aiko", "advisor_id": ids["aiko"], "day": "2026-11-30", "handled": 1,
        "resolved": 1, "first_response_p50_s": 30.0, "first_response_p95_s": 30.0,
        "handling_p50_s": 600.0, "csat_avg": 4.0, "csat_count": 1}
    assert aiko["2026-12-01"]["first_response_p50_s"] == 10.0
    assert aiko["2026-12-01"]["handling_p50_s"] == 60.0
    total = aiko["total"]
    assert (total["handled"], total["resolved"], total["csat_count"]) == (2, 2, 2)
    assert total["csat_avg"] == 4.5
    assert total["first_response_p50_s"] == 20.0  # interpolated between 10 and 30
    assert total["first_response_p95_s"] == 29.0
    assert total["handling_p50_s"] == 330.0

    ben = rows_of(report, "Ben")
    assert list(ben) == ["2026-11-30", "total"]
    assert ben["total"]["handled"] == 1 and ben["total"]["resolved"] == 0
    assert ben["total"]["first_response_p50_s"] == 90.0
    assert ben["total"]["handling_p50_s"] is None and ben["total"]["csat_avg"] is None

    # an active advisor who handled nothing gets a zero total; a deactivated one nothing
    assert rows_of(report, "Idle") == {"total": {
        "advisor": "Idle", "advisor_id": rows_of(report, "Idle")["total"]["advisor_id"],
        "day": "total", "handled": 0, "resolved": 0, "first_response_p50_s": None,
        "first_response_p95_s": None, "handling_p50_s": None, "csat_avg": None,
        "csat_count": 0}}
    assert all(r["advisor_id"] != ids["gone"] for r in report)
    assert [r["advisor"] for r in report] == ["Aiko"] * 3 + ["Ben"] * 2 + ["Idle"]


async def test_the_period_bounds_are_local_days(desk: Desk) -> None:
    await scenario(desk)
    in_utc = await advisor_report(desk.db, since=NOV30, until=NOV30, tz="UTC")
    aiko = rows_of(in_utc, "Aiko")  # in UTC everything happened on 30 November
    assert list(aiko) == ["2026-11-30", "total"] and aiko["total"]["handled"] == 2
    tokyo_first_day = await advisor_report(desk.db, since=NOV30, until=NOV30)
    assert rows_of(tokyo_first_day, "Aiko")["total"]["handled"] == 1
    tokyo_second_day = await advisor_report(desk.db, since=DEC1, until=DEC1)
    assert rows_of(tokyo_second_day, "Aiko")["total"]["handled"] == 1
    assert rows_of(tokyo_second_day, "Ben") == {"total": rows_of(tokyo_second_day, "Ben")[
        "total"]} and rows_of(tokyo_second_day, "Ben")["total"]["handled"] == 0


async def test_waiting_handoffs_count_for_nobody_and_reassignment_moves_the_day(
        desk: Desk) -> None:
    await handoff(desk, "1")  # nobody on shift: waits
    report = await advisor_report(desk.db, since=NOV30, until=NOV30)
    assert report == []
    aiko = await desk.advisor("aiko", display_name="Aiko")  # takes it at once
    ben = await desk.advisor("ben", display_name="Ben")
    desk.clock.advance(minutes=6)  # Aiko did not answer: the handoff goes to Ben
    assert await desk.desk.reassign_overdue() == 1
    report = await advisor_report(desk.db, since=NOV30, until=NOV30)
    assert rows_of(report, "Aiko")["total"]["handled"] == 0
    assert rows_of(report, "Ben")["total"]["handled"] == 1
    assert aiko != ben


async def test_bad_periods_and_zones_are_refused(desk: Desk) -> None:
    with pytest.raises(ValueError, match="before it starts"):
        await advisor_report(desk.db, since=DEC1, until=NOV30)
    with pytest.raises(ValueError, match="unknown time zone"):
        await advisor_report(desk.db, since=NOV30, until=DEC1, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="too long"):
        await advisor_report(desk.db, since=date(2020, 1, 1), until=DEC1)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([float(v) for v in range(101)], 0.95) == 95.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)
