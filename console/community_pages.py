"""Shared pieces of the community managers' pages (``groups_pages``, ``drops_pages``): the
community runtime, its errors as console errors, the sub-navigation, dates and badges.

The community runtime (``community.wiring.CommunityRuntime``) is ``c.extras["community"]``;
``None`` when the community features are off, and then every page says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from community import scheduler as sched
from community.errors import CommunityError, NotFound
from console.auth import Who
from console.html import Markup, fmt, join
from console.site import Console, ConsoleError

OFF = "the community features (groups, entry links, drops) are not enabled in this Kizuna"

# (label, path below the prefix) of the community sub-navigation
TABS = (
    ("Groups", "/community/groups"),
    ("Entry links", "/community/links"),
    ("Drops", "/community/drops"),
    ("Calendar", "/community/calendar"),
    ("New drop", "/community/drops/new"),
)

# ?done=... after a form post (post/redirect/get): fixed messages only, never echoed input
DONE = {
    "tags": "Tags saved.",
    "capacity": "Capacity saved.",
    "move": "Group moved.",
    "pool": "Pool saved.",
    "link": "Entry link created.",
    "closed": "Entry link closed: whoever opens it is told it is no longer active.",
    "reopened": "Entry link reopened.",
    "created": "Drop saved and scheduled.",
    "pause": "Drop paused.",
    "resume": "Drop resumed.",
    "cancel": "Drop cancelled.",
    "schedule": "Draft scheduled.",
    "test": "Test message sent to you.",
}


def runtime(c: Console) -> Any | None:
    return c.extras.get("community")


def need(c: Console) -> Any:
    """The community runtime, or a 404 saying the features are off (API routes)."""
    rt = runtime(c)
    if rt is None:
        raise ConsoleError(404, OFF)
    return rt


@contextlib.contextmanager
def refused(*, missing: int = 404) -> Iterator[None]:
    """Community errors as console errors: unknown things ``missing`` (404; 400 when a form
    named them), bad input 400."""
    try:
        yield
    except NotFound as exc:
        raise ConsoleError(missing, str(exc)) from None
    except CommunityError as exc:
        raise ConsoleError(400, str(exc)) from None


def zone(name: str) -> ZoneInfo:
    try:
        return sched.check_timezone(name)
    except ValueError as exc:
        raise ConsoleError(400, str(exc)) from None


def local(when: datetime | None, tz: ZoneInfo | str, *, seconds: bool = False) -> str:
    """'2026-12-05 09:00' in ``tz`` ('—' for none)."""
    if when is None:
        return "—"
    zone_ = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    return when.astimezone(zone_).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def csv(value: Any) -> list[str]:
    """'a, b ,c' or ['a', 'b'] -> ['a', 'b', 'c'] (stripped, no empties, order kept)."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def badge(status: str) -> Markup:
    return fmt('<span class="badge s-{}">{}</span>', status, status)


def message(text: str | None, *, ok: bool = False) -> Markup:
    if not text:
        return Markup("")
    if ok:
        return fmt('<p class="notice" role="status">{}</p>', text)
    return fmt('<p class="alert" role="alert">{}</p>', text)


def done(request: web.Request) -> Markup:
    return message(DONE.get(request.query.get("done", "")), ok=True)


def options(values: Any, selected: Any = None, *, blank: str | None = None) -> Markup:
    """``<option>`` list; ``values`` are strings or (value, label) pairs; ``selected`` one value
    or a collection of them."""
    chosen = {selected} if isinstance(selected, str) or selected is None else set(selected)
    parts = [fmt('<option value="">{}</option>', blank)] if blank is not None else []
    for v in values:
        value, label = v if isinstance(v, tuple) else (v, v)
        parts.append(fmt('<option value="{}"{}>{}</option>', value,
                         Markup(" selected") if value in chosen else Markup(""), label))
    return join(parts)


def checked(on: bool) -> Markup:
    return Markup(" checked") if on else Markup("")


def field(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def page(c: Console, request: web.Request, who: Who, *, title: str, body: Markup, page: str,
         scripts: tuple[str, ...] = (), data: dict[str, Any] | None = None,
         status: int = 200) -> web.Response:
    """A community page: its stylesheet, the sub-navigation, then ``body``."""
    here = request.path
    current = max((p for _label, p in TABS
                   if here == c.url(p) or here.startswith(c.url(p) + "/")), key=len, default="")
    tabs = join(fmt('<a href="{}"{}>{}</a>', c.url(path),
                    Markup(' aria-current="page"') if path == current else Markup(""),
                    label) for label, path in TABS)
    head = fmt('<link rel="stylesheet" href="{}"><nav class="subnav" aria-label="Community">'
               '{}</nav>', c.asset("community.css"), tabs)
    return c.render(request, who, title=title, body=Markup(head + body), page=page,
                    scripts=scripts, data=data, status=status)


def off_page(c: Console, request: web.Request, who: Who, title: str) -> web.Response:
    body = fmt('<section class="panel"><h1>{}</h1><p class="muted">{}.</p></section>',
               title, OFF[0].upper() + OFF[1:])
    return c.render(request, who, title=title, body=body, page="community-off")
