"""A brand's business hours: weekly opening ranges in one time zone, plus closed dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from config.settings import BusinessHoursSettings

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _parse(spec: str) -> list[tuple[time, time | None]]:
    out: list[tuple[time, time | None]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        start, _, end = part.partition("-")
        h1, m1 = (int(x) for x in start.split(":"))
        h2, m2 = (int(x) for x in end.split(":"))
        out.append((time(h1, m1), None if h2 == 24 else time(h2, m2)))  # None = midnight
    return out


@dataclass(frozen=True)
class BusinessHours:
    tz: ZoneInfo
    weekly: dict[int, list[tuple[time, time | None]]]
    closed: frozenset[date]

    @classmethod
    def from_settings(cls, s: BusinessHoursSettings) -> BusinessHours:
        weekly = {i: _parse(s.weekly.get(day, "")) for i, day in enumerate(_DAYS)}
        return cls(ZoneInfo(s.timezone), weekly,
                   frozenset(date.fromisoformat(d) for d in s.closed_dates))

    def _ranges(self, day: date) -> list[tuple[datetime, datetime]]:
        if day in self.closed:
            return []
        out = []
        for start, end in self.weekly.get(day.weekday(), []):
            a = datetime.combine(day, start, self.tz)
            b = (datetime.combine(day + timedelta(days=1), time(0), self.tz) if end is None
                 else datetime.combine(day, end, self.tz))
            out.append((a, b))
        return out

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        return any(a <= local < b for a, b in self._ranges(local.date()))

    def next_open(self, at: datetime) -> datetime | None:
        """The start of the next opening (``at`` itself when open); None if never within a
        year (all days closed)."""
        local = at.astimezone(self.tz)
        for offset in range(0, 367):
            day = local.date() + timedelta(days=offset)
            for a, b in self._ranges(day):
                if a <= local < b:
                    return at
                if a > local:
                    return a
        return None
