"""Business hours: open/closed in the brand's time zone, holidays, bad config."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.handoff.hours import BusinessHours
from bot.handoff.routing import Candidate, Request, choose
from config import ConfigError, load_settings
from config.settings import BusinessHoursSettings


def hours(**kw: object) -> BusinessHours:
    return BusinessHours.from_settings(BusinessHoursSettings(**kw))  # type: ignore[arg-type]


def test_open_and_next_open_in_the_brand_time_zone() -> None:
    h = hours(timezone="Asia/Tokyo", weekly={"mon": "09:00-12:00,13:00-18:00"},
              closed_dates=["2026-12-07"])
    monday_10_tokyo = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    assert h.is_open(monday_10_tokyo)
    lunch = datetime(2026, 11, 30, 3, 30, tzinfo=UTC)  # 12:30 in Tokyo
    assert not h.is_open(lunch)
    assert h.next_open(lunch) == datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    evening = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # 19:00 Monday
    # next Monday is a closed date, so the Monday after
    assert h.next_open(evening) == datetime(2026, 12, 14, 0, 0, tzinfo=UTC)


def test_midnight_end_and_never_open() -> None:
    h = hours(timezone="UTC", weekly={"sun": "20:00-24:00"})
    assert h.is_open(datetime(2026, 11, 29, 23, 59, tzinfo=UTC))
    assert not h.is_open(datetime(2026, 11, 30, 0, 0, tzinfo=UTC))
    assert hours(timezone="UTC", weekly={}).next_open(datetime.now(UTC)) is None


@pytest.mark.parametrize("section, message", [
    ({"timezone": "Mars/Base"}, "unknown time zone"),
    ({"weekly": {"monday": "09:00-18:00"}}, "unknown weekday"),
    ({"weekly": {"mon": "18:00-09:00"}}, "not a valid range"),
    ({"weekly": {"mon": "9-18"}}, "HH:MM-HH:MM"),
    ({"closed_dates": ["2026-02-30"]}, "YYYY-MM-DD"),
])
def test_bad_business_hours_are_refused_with_the_key(section: dict[str, object],
                                                     message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(handoff={"business_hours": section})
    assert "handoff.business_hours" in str(info.value) and message in str(info.value)


def test_routing_order() -> None:
    a = Candidate(1, load=0, capacity=2, languages=frozenset({"ja"}))
    b = Candidate(2, load=1, capacity=2, languages=frozenset({"en"}),
                  skills=frozenset({"orders"}))
    c = Candidate(3, load=0, capacity=2, languages=frozenset({"en"}))
    full = Candidate(4, load=2, capacity=2, languages=frozenset({"en"}), senior=True)
    assert choose([a, b, c], Request("en")) is c  # least loaded among English speakers
    assert choose([a, b, c], Request("en", frozenset({"orders"}))) is b  # skill match first
    assert choose([a, b, c], Request("en", sticky_advisor_id=1)) is a  # own advisor first
    assert choose([a, b, c, full], Request("en", needs_senior=True)) is None  # senior is full
    assert choose([a, c], Request("en", exclude=frozenset({3}))) is a  # timed out: someone else
