"""Advisor performance: one row per advisor per local day, and a total per advisor.

How the numbers are counted (the console page and ``kizuna report advisors`` show these):

* **Day**: a handoff belongs to the local day (in ``tz``) on which it was *assigned* to the
  advisor it has now (``handoffs.assigned_at``; a transferred or reassigned handoff counts for
  its last advisor, from that assignment). Every number in a row describes that same set of
  handoffs, so a row never mixes cohorts: ``resolved``, the timings and CSAT are those of the
  handoffs assigned that day, however late they were resolved or rated. Handoffs still waiting
  (never assigned) belong to no advisor and are not counted.
* ``handled``: handoffs assigned that day; ``resolved``: how many of them are resolved.
* ``first_response_p50_s`` / ``_p95_s``: seconds from assignment to the advisor's first reply
  (``first_response_at``), over the handoffs that have one (a reply may precede the recorded
  assignment when a transfer re-assigned a conversation already answered: those count as 0).
* ``handling_p50_s``: seconds from assignment to resolve, over the resolved ones.
* ``csat_avg`` / ``csat_count``: the customers' 1-5 ratings of those handoffs.
* Percentiles are exact, computed here over every handoff fetched for the period, with linear
  interpolation between the closest ranks (PostgreSQL's ``percentile_cont``, numpy's default):
  for sorted values ``v[0..n-1]`` the q-percentile is at rank ``q * (n - 1)``. A number with no
  data is ``None``.
* The ``total`` row of an advisor covers the whole period (its percentiles are computed over
  all the period's handoffs, not averaged from days). Every active advisor gets a total row,
  with zeros when they handled nothing; day rows exist only for days with handoffs.

Rows are ordered by advisor name, then day, the total row last.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from models import Database
from models.advisors import Advisor, Handoff, HandoffStatus

MAX_DAYS = 366 * 2

COLUMNS = ("advisor", "advisor_id", "day", "handled", "resolved", "first_response_p50_s",
           "first_response_p95_s", "handling_p50_s", "csat_avg", "csat_count")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Exact q-percentile (0 <= q <= 1) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class _Bucket:
    __slots__ = ("csat", "first", "handled", "handling", "resolved")

    def __init__(self) -> None:
        self.handled = 0
        self.resolved = 0
        self.first: list[float] = []
        self.handling: list[float] = []
        self.csat: list[int] = []

    def add(self, h: Any) -> None:
        self.handled += 1
        first = _seconds(h.assigned_at, h.first_response_at)
        if first is not None:
            self.first.append(first)
        if h.status == HandoffStatus.RESOLVED:
            self.resolved += 1
            handling = _seconds(h.assigned_at, h.resolved_at)
            if handling is not None:
                self.handling.append(handling)
        if h.csat is not None:
            self.csat.append(int(h.csat))

    def row(self, advisor: str, advisor_id: int, day: str) -> dict[str, Any]:
        return {
            "advisor": advisor, "advisor_id": advisor_id, "day": day,
            "handled": self.handled, "resolved": self.resolved,
            "first_response_p50_s": _round(percentile(self.first, 0.5)),
            "first_response_p95_s": _round(percentile(self.first, 0.95)),
            "handling_p50_s": _round(percentile(self.handling, 0.5)),
            "csat_avg": _round(sum(self.csat) / len(self.csat), 2) if self.csat else None,
            "csat_count": len(self.csat),
        }


async def advisor_report(db: Database, *, since: date, until: date,
                         tz: str = "Asia/Tokyo") -> list[dict[str, Any]]:
    """Per advisor and local day from ``since`` to ``until`` (both included, days in ``tz``):
    handled, resolved, first-response and handling times, CSAT; plus a ``day="total"`` row per
    advisor. See the module docstring for how each number is counted."""
    if until < since:
        raise ValueError(f"the period ends ({until}) before it starts ({since})")
    if (until - since).days >= MAX_DAYS:
        raise ValueError(f"the period is too long (at most {MAX_DAYS} days)")
    zone = _zone(tz)
    start = datetime.combine(since, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(until + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    async with db.session() as session:
        rows = (await session.execute(
            select(Handoff.advisor_id, Handoff.status, Handoff.assigned_at,
                   Handoff.first_response_at, Handoff.resolved_at, Handoff.csat)
            .where(Handoff.advisor_id.is_not(None), Handoff.assigned_at.is_not(None),
                   Handoff.assigned_at >= start, Handoff.assigned_at < end))).all()
        ids = {r.advisor_id for r in rows}
        advisors = {a.id: a.display_name for a in (await session.execute(
            select(Advisor.id, Advisor.display_name, Advisor.active))).all()
            if a.active or a.id in ids}

    days: dict[tuple[int, date], _Bucket] = defaultdict(_Bucket)
    totals: dict[int, _Bucket] = {aid: _Bucket() for aid in advisors}
    for r in rows:
        if r.advisor_id not in advisors:  # deleted meanwhile
            continue
        local_day = r.assigned_at.astimezone(zone).date()
        days[(r.advisor_id, local_day)].add(r)
        totals[r.advisor_id].add(r)

    out: list[dict[str, Any]] = []
    for aid in sorted(advisors, key=lambda a: (advisors[a].lower(), a)):
        name = advisors[aid]
        for day in sorted(d for a, d in days if a == aid):
            out.append(days[(aid, day)].row(name, aid, day.isoformat()))
        out.append(totals[aid].row(name, aid, "total"))
    return out


__all__ = ["COLUMNS", "advisor_report", "percentile"]
