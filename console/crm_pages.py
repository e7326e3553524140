"""What the CRM pages share: the CRM service from ``c.extras``, CRM errors as console errors,
the sub-navigation, money and number formatting, and a server-side SVG bar chart.

The pages themselves are in ``crm_members_pages`` (search, profile, tags, opt-out),
``crm_segments_pages`` (segment builder, live count) and ``crm_insights_pages`` (tier and LTV
charts, KOC leaderboard); ``manage_crm.register`` registers them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from console.auth import Who
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError
from crm import CrmError, CrmService
from crm import NotFound as CrmNotFound
from models.crm import ContactTag

OFF_MESSAGE = "The CRM is not enabled on this Kizuna."
SECTIONS = (("/crm", "Members"), ("/crm/segments", "Segments"),
            ("/crm/insights", "Tiers & LTV"), ("/crm/koc", "KOC leaderboard"))


def crm_of(c: Console) -> CrmService | None:
    crm = c.extras.get("crm")
    return crm if isinstance(crm, CrmService) else None


def need_crm(c: Console) -> CrmService:
    """The CRM for an API route (404 with a clear message when it is off)."""
    crm = crm_of(c)
    if crm is None:
        raise ConsoleError(404, OFF_MESSAGE)
    return crm


@contextmanager
def crm_errors() -> Iterator[None]:
    """CRM errors as console errors: unknown member/segment 404, bad input 400 (the CRM's
    own one-line message, e.g. the rule parser's ``rule all[1].op: ...``)."""
    try:
        yield
    except CrmNotFound as exc:
        raise ConsoleError(404, str(exc)) from None
    except CrmError as exc:
        raise ConsoleError(400, str(exc)) from None


def subnav(c: Console, current: str) -> Markup:
    links = join(fmt('<a href="{}"{}>{}</a>', c.url(path),
                     Markup(' aria-current="page"') if path == current else Markup(""), label)
                 for path, label in SECTIONS)
    return fmt('<nav class="crm-subnav" aria-label="CRM">{}</nav>', links)


def crm_page(c: Console, request: web.Request, who: Who, *, title: str, section: str,
             body: Markup, page: str, scripts: Sequence[str] = (),
             data: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    """A CRM page: its stylesheet (the layout links only console.css), the sub-navigation,
    then the page's own body."""
    framed = render("crm_frame.html", css=c.asset("crm.css"), subnav=subnav(c, section),
                    body=body)
    return c.render(request, who, title=title, body=framed, page=page, scripts=scripts,
                    data=data, status=status)


def crm_off_page(c: Console, request: web.Request, who: Who, *, title: str,
                 section: str) -> web.Response:
    body = fmt('<section class="panel"><h1>{}</h1><p class="muted">{}</p></section>',
               title, OFF_MESSAGE)
    return crm_page(c, request, who, title=title, section=section, body=body, page="crm-off")


def money(value: float | int | None) -> str:
    if value is None:
        return "—"
    return f"¥{value:,.0f}"


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


# ---------------------------------------------------------------------- charts
def axis_step(peak: float, *, integer: bool = False) -> float:
    """A round grid step so that four steps reach ``peak`` (1, 2, 2.5 or 5 x 10^k; whole
    numbers only for counts)."""
    raw = peak / 4
    if raw <= 0:
        return 1.0 if integer else 0.25
    exp = math.floor(math.log10(raw))
    while True:
        for m in (1.0, 2.0, 2.5, 5.0):
            step = m * 10.0 ** exp
            if integer and (step < 1 or step != int(step)):
                continue
            if step >= raw:
                return step
        exp += 1


def bar_chart(bars: Sequence[tuple[str, float, str]], *, label: str, css: str = "",
              width: int = 640, height: int = 260, integer: bool = True) -> Markup:
    """An inline SVG bar chart (no script, no inline style: classes from crm.css).

    ``bars`` are (axis label, value, tooltip). The y axis goes from 0 in four round steps
    (whole numbers when ``integer``); each bar carries a ``<title>`` tooltip and its value
    above it."""
    left, right, top, bottom = 56, 12, 18, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = 4 * axis_step(max((v for _, v, _ in bars), default=0.0), integer=integer)
    parts: list[Markup] = []
    for i in range(5):
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(fmt('<line class="grid" x1="{}" y1="{}" x2="{}" y2="{}"/>'
                         '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                         left, _px(y), width - right, _px(y), left - 6, _px(y + 4),
                         short_number(value)))
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = max(min(slot * 0.7, 90.0), 2.0)
    for i, (name, value, tip) in enumerate(bars):
        h = 0.0 if peak <= 0 else plot_h * max(value, 0.0) / peak
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h - h
        cx = x + bar_w / 2
        parts.append(fmt(
            '<g class="bar bar-{}"><rect x="{}" y="{}" width="{}" height="{}">'
            '<title>{}</title></rect>'
            '<text class="value" x="{}" y="{}" text-anchor="middle">{}</text>'
            '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text></g>',
            i, _px(x), _px(y), _px(bar_w), _px(h), tip, _px(cx), _px(y - 4),
            short_number(value), _px(cx), top + plot_h + 16, name))
    parts.append(fmt('<line class="base" x1="{}" y1="{}" x2="{}" y2="{}"/>',
                     left, top + plot_h, width - right, top + plot_h))
    return fmt('<svg class="chart {}" viewBox="0 0 {} {}" role="img" aria-label="{}" '
               'xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}</svg>',
               css, width, height, label, label, join(parts))


def _px(value: float) -> str:
    return f"{value:.1f}"


def short_number(value: float) -> str:
    """Axis numbers: 950, 1.2k, 35k, 1.5M."""
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 1e3:
        return f"{value / 1e3:.3g}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.2g}"


async def distinct_values(crm: CrmService, column: Any, limit: int = 300) -> list[str]:
    """The distinct values of an indexed column, in order, by a recursive "next value after
    this one" walk: one index probe per distinct value instead of reading every row (a
    million members' tags or identities)."""
    inner = column.table.alias("walk_next")
    seed = select(func.min(column).label("value")).cte("walk", recursive=True)
    step = select(select(func.min(inner.c[column.name])).where(inner.c[column.name]
                                                                > seed.c.value)
                  .scalar_subquery()).where(seed.c.value.is_not(None))
    walk = seed.union_all(step)
    async with crm.db.session() as session:
        rows = await session.execute(select(walk.c.value).where(walk.c.value.is_not(None))
                                     .limit(limit))
        return [str(x) for x in rows.scalars()]


async def distinct_tags(crm: CrmService, limit: int = 300) -> list[str]:
    """Tags in use, alphabetically (suggestions), over the (tag, contact_id) index."""
    return await distinct_values(crm, ContactTag.__table__.c.tag, limit)
