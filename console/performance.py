"""Advisor performance: first-response and handling times, resolved count and CSAT per advisor
and per day (``bot.handoff.reports.advisor_report``). Managers and admins see everyone, an
advisor their own rows."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from bot.handoff.reports import advisor_report
from console.auth import Who
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError

DEFAULT_DAYS = 7


def duration(seconds: float | None) -> str:
    """``None`` -> "—", 65 -> "1m 05s", 7380 -> "2h 03m"."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def register(c: Console) -> None:
    def period(request: web.Request) -> tuple[date, date, str]:
        tz = request.query.get("tz") or c.timezone
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConsoleError(400, f"unknown time zone {tz!r}") from None
        today = c.desk.now().astimezone(zone).date()
        try:
            until = date.fromisoformat(request.query["until"]) if request.query.get(
                "until") else today
            since = date.fromisoformat(request.query["since"]) if request.query.get(
                "since") else until - timedelta(days=DEFAULT_DAYS - 1)
        except ValueError:
            raise ConsoleError(400, "dates are YYYY-MM-DD") from None
        return since, until, tz

    async def rows_for(who: Who, since: date, until: date, tz: str) -> list[dict[str, Any]]:
        try:
            rows = await advisor_report(c.db, since=since, until=until, tz=tz)
        except ValueError as exc:
            raise ConsoleError(400, str(exc)) from None
        if not who.sees_everything:
            rows = [r for r in rows if r.get("advisor_id") == who.advisor_id]
        return rows

    @c.page("/performance", nav="Performance")
    async def performance_page(request: web.Request, who: Who) -> web.StreamResponse:
        since, until, tz = period(request)
        rows = await rows_for(who, since, until, tz)
        body = render(
            "performance.html", since=since.isoformat(), until=until.isoformat(), tz=tz,
            rows=join(_row(r) for r in rows) if rows else Markup(
                '<tr><td colspan="8" class="muted">No advisors yet.</td></tr>'),
            scope="every advisor" if who.sees_everything else "your own conversations")
        return c.render(request, who, title="Performance", body=body, page="performance")

    @c.api("GET", "/api/performance")
    async def performance_api(request: web.Request, who: Who) -> web.StreamResponse:
        since, until, tz = period(request)
        return c.json({"since": since, "until": until, "tz": tz,
                       "rows": await rows_for(who, since, until, tz)})


def _row(r: dict[str, Any]) -> Markup:
    total = r["day"] == "total"
    csat = "—" if r["csat_avg"] is None else f"{r['csat_avg']:.2f} ({r['csat_count']})"
    return fmt('<tr{}><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td>'
               '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>'
               '<td class="num">{}</td></tr>',
               Markup(' class="total"') if total else Markup(""), r["advisor"],
               "Total" if total else r["day"], r["handled"], r["resolved"],
               duration(r["first_response_p50_s"]), duration(r["first_response_p95_s"]),
               duration(r["handling_p50_s"]), csat)
