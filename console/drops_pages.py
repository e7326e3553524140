"""Community managers' pages for drops: the list, a month calendar of scheduled and recurring
drops, the new-drop form with a preview (rendered text and buttons per language, and the
audience size) before anything is saved, the drop page (pause / resume / cancel, test send to
yourself) and its delivery report, refreshed by polling the JSON API.

``community.drops.DropService`` does the work and has the last word on validation; the preview
of an unsaved drop checks the same rules here first (the service can only preview a stored
drop), then ``DropService.create`` checks them again when the drop is saved.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import func, select

from bot.core.i18n import LANGUAGES
from bot.core.types import ChatKind, ChatRef, OutgoingMessage
from community import audience as community_audience
from community import delivery as community_delivery
from community import drops as community_drops
from community import scheduler as sched
from community.errors import CommunityError
from console.auth import Who
from console.community_pages import (
    badge,
    checked,
    csv,
    done,
    local,
    message,
    need,
    off_page,
    options,
    page,
    refused,
    runtime,
    zone,
)
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError, path_int
from models.advisors import Advisor, Role
from models.community import Drop, DropRun, DropStatus, OutboxRow, OutboxStatus

TARGETS = (
    ("all_groups", "All groups"),
    ("group_tags", "Groups with a tag"),
    ("group_pools", "Groups in a pool"),
    ("private", "Private messages: contacts by tag and language"),
    ("segment", "Private messages: a CRM segment"),
)
SCHEDULES = (("once", "Once, at a date and time"), ("cron", "Recurring (cron)"))
STATUSES = ("scheduled", "paused", "running", "done", "cancelled", "missed", "draft")
TEXT_KEYS = ("name", "kind", "coupon", "format", "text", "image_url", "buttons", "target",
             "group_tags", "private_tags", "segment", "schedule", "run_at", "cron", "timezone")
MAX_BUTTONS = 12
PER_DAY = 4  # calendar entries shown per day before "+N more"
PER_DROP = 400  # recurring occurrences computed per drop and month at most
POLL_MS = 4000
ACTIONS = ("pause", "resume", "cancel", "schedule")
Audience = community_audience.Audience
GroupAudience = community_audience.GroupAudience
PrivateAudience = community_audience.PrivateAudience
resolve_groups = community_audience.resolve_groups
ClaimedRow = community_delivery.ClaimedRow
FINAL = community_drops.FINAL
parse_when = community_drops.parse_when


# ----------------------------------------------------------------------------- the form
def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConsoleError(400, f"{key} must be text")
    return str(value).strip()


def _list(data: Mapping[str, Any], key: str) -> list[str]:
    getall = getattr(data, "getall", None)
    if getall is not None:  # a form: repeated fields, each maybe "a, b"
        return csv([x for v in getall(key, []) if isinstance(v, str) for x in csv(v)])
    value = data.get(key)
    if value is None or isinstance(value, str):
        return csv(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return csv(value)
    raise ConsoleError(400, f"{key} must be a list of strings")


def read_values(data: Mapping[str, Any], *, form: bool) -> dict[str, Any]:
    """The drop form's fields from a form post or a JSON body, as text and lists (the form is
    filled again from these when something is wrong)."""
    values: dict[str, Any] = {k: _text(data, k) for k in TEXT_KEYS if k != "buttons"}
    for lang in LANGUAGES:
        values[f"text_{lang}"] = _text(data, f"text_{lang}")
    texts = data.get("texts")
    if texts is not None:
        if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
            raise ConsoleError(400, "texts must map a language to its text")
        for lang, text in texts.items():
            if lang not in LANGUAGES:
                raise ConsoleError(400, f"texts: unknown language {lang!r}; "
                                        f"use {', '.join(LANGUAGES)}")
            values[f"text_{lang}"] = text.strip()
    buttons = data.get("buttons")
    if isinstance(buttons, list):  # JSON: [[{"text": ..., "url": ...}, ...], ...]
        lines = []
        for row in buttons:
            if not isinstance(row, list) or not all(
                    isinstance(b, dict) and isinstance(b.get("text"), str)
                    and isinstance(b.get("url"), str) for b in row):
                raise ConsoleError(400, "buttons must be rows of {text, url}")
            lines.append(" || ".join(f"{b['text']} | {b['url']}" for b in row))
        values["buttons"] = "\n".join(lines)
    else:
        values["buttons"] = _text(data, "buttons")
    values["pools"] = _list(data, "pools")
    values["languages"] = _list(data, "languages")
    if form:
        values["respect_cap"] = data.get("respect_cap") == "1"
    else:
        cap = data.get("respect_cap", True)
        if not isinstance(cap, bool):
            raise ConsoleError(400, "respect_cap must be true or false")
        values["respect_cap"] = cap
    return values


def parse_buttons(text: str) -> list[list[dict[str, str]]]:
    """One row per line; ``Label | https://...``, several on a line separated by ``||``."""
    rows: list[list[dict[str, str]]] = []
    count = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = []
        for part in line.split("||"):
            label, bar, url = part.rpartition("|")
            label, url = label.strip(), url.strip()
            if not bar or not label or not url:
                raise ConsoleError(400, f"button line {n}: write 'Label | https://…'")
            if not url.startswith(("https://", "http://", "tg://")) or len(url) > 1024 \
                    or any(ch.isspace() for ch in url):
                raise ConsoleError(400, f"button line {n}: the link must be an http(s) URL")
            if len(label) > 64:
                raise ConsoleError(400, f"button line {n}: the label is too long (64 at most)")
            row.append({"text": label, "url": url})
            count += 1
        rows.append(row)
    if count > MAX_BUTTONS:
        raise ConsoleError(400, f"at most {MAX_BUTTONS} buttons")
    return rows


@dataclass
class Spec:
    """A drop as the manager described it (not validated against the data yet)."""

    name: str
    kind: str
    coupon: str | None
    format: str
    text: str
    texts: dict[str, str]
    image_url: str | None
    buttons: list[list[dict[str, str]]]
    audience: Any  # community.audience.Audience
    schedule: str
    run_at: str | None
    cron: str | None
    timezone: str
    respect_cap: bool


def parse_spec(values: Mapping[str, Any], default_tz: str) -> Spec:
    target = values["target"]
    langs = list(values["languages"])
    if target == "all_groups":
        audience = Audience(groups=GroupAudience(all=True))
    elif target == "group_tags":
        tags = [t.lower() for t in csv(values["group_tags"])]
        if not tags:
            raise ConsoleError(400, "give at least one group tag")
        audience = Audience(groups=GroupAudience(tags=tags))
    elif target == "group_pools":
        if not values["pools"]:
            raise ConsoleError(400, "choose at least one pool")
        audience = Audience(groups=GroupAudience(pools=list(values["pools"])))
    elif target == "private":
        tags = [t.lower() for t in csv(values["private_tags"])]
        audience = Audience(private=PrivateAudience(all=not tags, tags=tags, languages=langs))
    elif target == "segment":
        if not values["segment"]:
            raise ConsoleError(400, "give the CRM segment's name")
        audience = Audience(private=PrivateAudience(segment=values["segment"], languages=langs))
    else:
        raise ConsoleError(400, "choose who gets the drop (target)")
    schedule = values["schedule"]
    if schedule == "once" and not values["run_at"]:
        raise ConsoleError(400, "give the date and time of the drop")
    if schedule == "cron" and not values["cron"]:
        raise ConsoleError(400, "give a cron expression, e.g. '0 9 * * mon' (09:00 on Mondays)")
    if schedule not in ("once", "cron"):
        raise ConsoleError(400, "choose a schedule: once or recurring")
    kind = values["kind"] or "content"
    return Spec(
        name=values["name"], kind=kind, coupon=values["coupon"] or None,
        format=values["format"] or "plain", text=values["text"],
        texts={lang: values[f"text_{lang}"] for lang in LANGUAGES if values[f"text_{lang}"]},
        image_url=values["image_url"] or None, buttons=parse_buttons(values["buttons"]),
        audience=audience, schedule=schedule,
        run_at=values["run_at"] if schedule == "once" else None,
        cron=re.sub(r"\s+", " ", values["cron"]) if schedule == "cron" else None,
        timezone=values["timezone"] or default_tz, respect_cap=bool(values["respect_cap"]),
    )


async def check(c: Console, rt: Any, spec: Spec) -> tuple[Drop, datetime | None]:
    """``DropService.build`` (the rules of ``create``) plus what only a form can get wrong -
    a time in the past, a cron that never fires, an unknown CRM segment - without storing:
    an unsaved :class:`Drop` for the preview, and the UTC time of a one-off drop."""
    with refused(missing=400):
        audience = spec.audience
        if audience.private is not None and audience.private.segment:
            await check_segment(c, audience.private.segment)
        drop: Drop = await rt.drops.build(
            name=spec.name, kind=spec.kind, format=spec.format, text=spec.text,
            texts=spec.texts or None, image_url=spec.image_url, buttons=spec.buttons,
            coupon=spec.coupon, audience=audience, run_at=spec.run_at if spec.schedule == "once"
            else None, cron=spec.cron if spec.schedule == "cron" else None,
            timezone=spec.timezone, respect_cap=spec.respect_cap)
        now = rt.drops.now()
        when = drop.run_at
        if when is not None and when <= now:
            raise CommunityError(f"{local(when, zone(spec.timezone))} ({spec.timezone}) is in "
                                 "the past")
        if drop.cron and sched.next_cron_time(drop.cron, drop.timezone, now) is None:
            raise CommunityError(f"the cron {drop.cron!r} never fires")
    return drop, when


async def check_segment(c: Console, name: str) -> None:
    crm = c.extras.get("crm")
    if crm is None or getattr(crm, "segments", None) is None:
        raise CommunityError("CRM segments are not available here (the CRM is off)")
    try:
        await crm.segments.get(name)
    except ValueError:
        raise CommunityError(f"no CRM segment {name!r}") from None


async def save(c: Console, rt: Any, spec: Spec, who: Who) -> Drop:
    _drop, when = await check(c, rt, spec)
    with refused(missing=400):
        drop: Drop = await rt.drops.create(
            name=spec.name, kind=spec.kind, format=spec.format, text=spec.text,
            texts=spec.texts or None, image_url=spec.image_url, buttons=spec.buttons,
            coupon=spec.coupon, audience=spec.audience, run_at=when, cron=spec.cron,
            timezone=spec.timezone, respect_cap=spec.respect_cap,
            created_by=f"console:{who.username}"[:64])
    return drop


# ----------------------------------------------------------------------------- preview
@dataclass
class Reach:
    groups: int = 0
    members: int = 0  # members of those groups
    private: int = 0  # private chats a message goes to
    blocked: int = 0  # known unreachable: recorded as blocked, not sent
    languages: dict[str, int] = field(default_factory=dict)  # private chats per language

    def as_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "group_members": self.members,
                "private": self.private, "blocked": self.blocked,
                "languages": self.languages, "total": self.groups + self.private}


async def reach(rt: Any, audience: Any) -> Reach:
    out = Reach()
    with refused(missing=400):
        if audience.groups is not None and not audience.groups.empty:
            found = await resolve_groups(rt.drops.db, audience.groups)
            sizes = {i.group.id: i.group.member_count
                     for i in await rt.groups.list(include_removed=True)}
            out.groups = len(found)
            out.members = sum(sizes.get(r.group_id, 0) for r in found)
        if audience.private is not None and not audience.private.empty:
            async for r in rt.drops.resolver.resolve_private(audience.private):
                if r.blocked:
                    out.blocked += 1
                    continue
                out.private += 1
                lang = r.language or rt.drops.t.default
                out.languages[lang] = out.languages.get(lang, 0) + 1
    return out


def rendered(rt: Any, drop: Drop, who_reads: Reach) -> list[tuple[str, OutgoingMessage]]:
    """The message as each language gets it: the default language (groups get it), every
    language with its own text, and the languages of the private recipients."""
    default = rt.drops.t.default
    texts = (drop.content or {}).get("texts") or {}
    langs = [default, *texts, *sorted(who_reads.languages)]
    code = "SAMPLE-CODE" if drop.kind == "coupon" else None
    out = []
    for lang in dict.fromkeys(x for x in langs if x in LANGUAGES):
        row = ClaimedRow(0, ChatRef("preview", ChatKind.PRIVATE, "0"), None, None, lang, None)
        out.append((lang, rt.drops.render(drop, row, code)))
    return out


def message_json(lang: str, msg: OutgoingMessage) -> dict[str, Any]:
    return {"language": lang, "text": msg.text, "format": msg.format,
            "image_url": msg.image.url if msg.image else None,
            "buttons": [[{"text": b.text, "url": b.url} for b in row] for row in msg.buttons]}


def preview_markup(rt: Any, messages: list[tuple[str, OutgoingMessage]], r: Reach) -> Markup:
    default = rt.drops.t.default
    bubbles = []
    for lang, msg in messages:
        buttons = join(fmt('<div class="btnrow">{}</div>', join(
            fmt('<a class="tgbutton" href="{}" rel="noopener noreferrer" target="_blank">{}</a>',
                b.url, b.text) if (b.url or "").startswith(("https://", "http://"))
            else fmt('<span class="tgbutton">{}</span>', b.text) for b in row))
            for row in msg.buttons)
        image = fmt('<img class="photo" src="{}" alt="the drop\'s photo" '
                    'referrerpolicy="no-referrer">', msg.image.url) \
            if msg.image and msg.image.url else Markup("")
        bubbles.append(fmt(
            '<article class="bubble" data-language="{}"><header>{}{}{}</header>{}'
            '<div class="pre text">{}</div>{}</article>',
            lang, lang, " · default, groups" if lang == default else "",
            " · HTML shown as written" if msg.format == "html" else "",
            image, msg.text or "—", buttons))
    langs = ", ".join(f"{k} {v}" for k, v in sorted(r.languages.items()))
    audience = fmt(
        '<p class="reach">Audience: <strong class="groups">{}</strong> group(s) '
        '(<span class="members">{}</span> members) and <strong class="private">{}</strong> '
        'private chat(s){}{}. <strong class="total">{}</strong> message(s) in all.</p>',
        r.groups, r.members, r.private,
        f" ({langs})" if langs else "",
        f"; {r.blocked} blocked contact(s) are left out" if r.blocked else "",
        r.groups + r.private)
    return fmt('{}<div class="bubbles">{}</div>', audience, join(bubbles))


# ----------------------------------------------------------------------------- describing
def describe_audience(data: dict[str, Any] | None) -> str:
    aud = data or {}
    parts = []
    g = aud.get("groups") or {}
    if g.get("all"):
        parts.append("all groups")
    if g.get("tags"):
        parts.append("groups tagged " + ", ".join(g["tags"]))
    if g.get("pools"):
        parts.append("groups in pool " + ", ".join(g["pools"]))
    if g.get("ids"):
        parts.append("groups #" + ", #".join(str(i) for i in g["ids"]))
    p = aud.get("private") or {}
    langs = f" ({', '.join(p['languages'])})" if p.get("languages") else ""
    if p.get("segment"):
        parts.append(f"CRM segment {p['segment']}{langs}")
    elif p.get("all"):
        parts.append(f"every private contact{langs}")
    elif p.get("tags"):
        parts.append("private contacts tagged " + ", ".join(p["tags"]) + langs)
    if p.get("contact_ids"):
        parts.append(f"{len(p['contact_ids'])} chosen contact(s)")
    return "; ".join(parts) or "nobody"


def describe_schedule(drop: Drop) -> str:
    if drop.cron:
        return f"recurring: cron '{drop.cron}' in {drop.timezone}"
    if drop.run_at is not None:
        return f"once: {local(drop.run_at, drop.timezone)} {drop.timezone}"
    return "not scheduled (draft)"


def drop_json(rt: Any, drop: Drop) -> dict[str, Any]:
    nxt = rt.drops.next_run(drop)
    return {"id": drop.id, "name": drop.name, "kind": drop.kind, "status": drop.status,
            "content": drop.content, "audience": drop.audience,
            "audience_text": describe_audience(drop.audience), "run_at": drop.run_at,
            "cron": drop.cron, "timezone": drop.timezone, "next_run": nxt,
            "next_run_local": local(nxt, drop.timezone) if nxt else None,
            "schedule_text": describe_schedule(drop), "respect_cap": drop.respect_cap,
            "created_by": drop.created_by, "created_at": drop.created_at}


# ----------------------------------------------------------------------------- reports
REPORT_COLUMNS = ("sent", "failed", "blocked", "skipped", "pending")
TIME_COLUMNS = ("started_at", "first_sent_at", "last_sent_at", "finished_at")


def report_json(report: Any, tz: str) -> dict[str, Any]:
    out = report.as_dict()
    counts = dict(report.counts)
    counts["pending"] = sum(counts.get(k, 0) for k in (OutboxStatus.PENDING,
                                                        OutboxStatus.CLAIMED,
                                                        OutboxStatus.SENDING))
    out["counts"] = counts
    out["local"] = {k: local(getattr(report, k), tz, seconds=True)
                    for k in ("scheduled_for", *TIME_COLUMNS)}
    return out


async def run_errors(rt: Any, drop_id: int) -> list[dict[str, Any]]:
    """The most frequent failure reasons of the drop's deliveries."""
    async with rt.drops.db.session() as s:
        rows = (await s.execute(
            select(OutboxRow.status, OutboxRow.error, func.count().label("n"))
            .where(OutboxRow.drop_id == drop_id,
                   OutboxRow.status.in_((OutboxStatus.FAILED, OutboxStatus.BLOCKED,
                                         OutboxStatus.SKIPPED)))
            .group_by(OutboxRow.status, OutboxRow.error)
            .order_by(func.count().desc()).limit(10))).all()
    return [{"status": st, "error": err or "—", "count": int(n)} for st, err, n in rows]


def report_row(r: dict[str, Any]) -> Markup:
    counts = r["counts"]
    cells = join(fmt('<td class="num" data-key="{}">{}</td>', k, counts.get(k, 0))
                 for k in REPORT_COLUMNS)
    times = join(fmt('<td data-key="{}">{}</td>', k, r["local"][k]) for k in TIME_COLUMNS)
    return fmt('<tr data-run="{}"><td>#{}</td><td>{}</td><td data-key="status">{}</td>{}'
               '<td class="num" data-key="total">{}</td>{}<td data-key="note">{}</td></tr>',
               r["run_id"], r["run_id"], r["local"]["scheduled_for"], badge(r["status"]),
               cells, r["total"], times,
               (r["note"] or "") + (f" ({r['in_doubt']} in doubt)" if r["in_doubt"] else ""))


# ----------------------------------------------------------------------------- calendar
@dataclass
class Entry:
    at: datetime
    drop: Drop
    status: str
    recurring: bool


def parse_month(value: str | None, today: date) -> date:
    if not value:
        return today.replace(day=1)
    m = re.fullmatch(r"(\d{4})-(\d{2})", value)
    if not m or not 1 <= int(m.group(2)) <= 12 or not 2000 <= int(m.group(1)) <= 2200:
        raise ConsoleError(400, "the month is YYYY-MM")
    return date(int(m.group(1)), int(m.group(2)), 1)


def next_month(first: date) -> date:
    return (first + timedelta(days=32)).replace(day=1)


def prev_month(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


async def month_entries(rt: Any, first: date, tz: ZoneInfo) -> dict[date, list[Entry]]:
    """Every drop occurrence of the month (local days in ``tz``): one-off drops with their
    status, recurring drops' past runs with theirs and their next occurrences."""
    start = datetime.combine(first, time(0), tz).astimezone(UTC)
    end = datetime.combine(next_month(first), time(0), tz).astimezone(UTC)
    now = rt.drops.now()
    drops = await rt.drops.list()
    async with rt.drops.db.session() as s:
        runs = list((await s.execute(select(DropRun).where(
            DropRun.scheduled_for >= start, DropRun.scheduled_for < end)
            .order_by(DropRun.scheduled_for))).scalars())
    by_drop: dict[int, list[DropRun]] = {}
    for run in runs:
        by_drop.setdefault(run.drop_id, []).append(run)
    entries: list[Entry] = []
    for drop in drops:
        if not drop.cron:
            if drop.run_at is not None and start <= drop.run_at < end:
                entries.append(Entry(drop.run_at, drop, drop.status, False))
            continue
        seen = set()
        for run in by_drop.get(drop.id, []):
            seen.add(run.scheduled_for)
            entries.append(Entry(run.scheduled_for, drop, run.status, True))
        if drop.status not in (DropStatus.SCHEDULED, DropStatus.PAUSED):
            continue
        try:
            trigger = sched.cron_trigger(drop.cron, drop.timezone)
        except ValueError:
            continue
        t = trigger.get_next_fire_time(None, max(start, now))
        n = 0
        while t is not None and t < end and n < PER_DROP:
            if t.astimezone(UTC) not in seen:
                entries.append(Entry(t.astimezone(UTC), drop, drop.status, True))
            n += 1
            t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    days: dict[date, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: (e.at, e.drop.id)):
        days.setdefault(e.at.astimezone(tz).date(), []).append(e)
    return days


def entry_json(e: Entry, tz: ZoneInfo) -> dict[str, Any]:
    return {"drop_id": e.drop.id, "name": e.drop.name, "status": e.status,
            "recurring": e.recurring, "at": e.at, "time": e.at.astimezone(tz).strftime("%H:%M"),
            "drop_time": f"{local(e.at, e.drop.timezone)} {e.drop.timezone}",
            "kind": e.drop.kind}


def calendar_grid(c: Console, first: date, days: dict[date, list[Entry]], tz: ZoneInfo,
                  today: date) -> Markup:
    _weekday, ndays = monthrange(first.year, first.month)
    start = first - timedelta(days=first.weekday())
    last = first.replace(day=ndays)
    end = last + timedelta(days=6 - last.weekday())
    weeks = []
    day = start
    while day <= end:
        cells = []
        for _ in range(7):
            cells.append(_day_cell(c, day, days.get(day, []) if day.month == first.month
                                   else [], tz, out=day.month != first.month,
                                   today=day == today))
            day += timedelta(days=1)
        weeks.append(fmt("<tr>{}</tr>", join(cells)))
    head = join(fmt("<th>{}</th>", d) for d in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
    return fmt('<table class="calendar"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
               head, join(weeks))


def _day_cell(c: Console, day: date, entries: list[Entry], tz: ZoneInfo, *, out: bool,
              today: bool) -> Markup:
    classes = " ".join(x for x, on in (("day", True), ("out", out), ("today", today)) if on)
    items = []
    for e in entries[:PER_DAY]:
        own = "" if e.drop.timezone == tz.key else \
            f" ({local(e.at, e.drop.timezone)[11:]} {e.drop.timezone})"
        items.append(fmt(
            '<li class="cal s-{}" data-drop="{}" title="{} · {} · {}{}"><a href="{}">'
            '<time>{}</time> {}{}</a></li>',
            e.status, e.drop.id, e.drop.name, e.status,
            "recurring" if e.recurring else "once", own,
            c.url(f"/community/drops/{e.drop.id}"), e.at.astimezone(tz).strftime("%H:%M"),
            e.drop.name, Markup(' <span class="rec" aria-label="recurring">↻</span>')
            if e.recurring else ""))
    if len(entries) > PER_DAY:
        hidden = entries[PER_DAY:]
        items.append(fmt('<li class="more" title="{}">+{} more</li>',
                         ", ".join(f"{e.at.astimezone(tz):%H:%M} {e.drop.name}"
                                   for e in hidden), len(hidden)))
    return fmt('<td class="{}" data-day="{}"><span class="dnum">{}</span>{}</td>', classes,
               day.isoformat(), day.day,
               fmt("<ul>{}</ul>", join(items)) if items else Markup(""))


# ----------------------------------------------------------------------------- routes
def register(c: Console) -> None:
    def default_tz() -> str:
        return str(c.extras.get("scheduler_timezone") or c.timezone)

    # ------------------------------------------------------------------ list
    @c.page("/community/drops", role=Role.MANAGER, nav="Drops")
    async def drops_page(request: web.Request, who: Who) -> web.StreamResponse:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "Drops")
        status = request.query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ConsoleError(400, f"status: one of {', '.join(STATUSES)}")
        drops = await rt.drops.list(status=status)
        drops.reverse()
        tz = default_tz()
        alerts = [a for a in await rt.alerts.recent(50) if a.kind == "drop_missed"][:10]
        rows = join(fmt(
            '<tr data-drop="{}"><td>#{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
            '<td>{}</td><td>{}</td><td>{}</td></tr>',
            d.id, d.id, c.url(f"/community/drops/{d.id}"), d.name, d.kind, badge(d.status),
            describe_schedule(d), local(rt.drops.next_run(d), d.timezone),
            describe_audience(d.audience)) for d in drops)
        body = render(
            "community_drops.html", message=done(request),
            status_options=options(STATUSES, status, blank="any status"),
            rows=rows or Markup('<tr><td colspan="7" class="muted">No drops.</td></tr>'),
            new=c.url("/community/drops/new"), calendar=c.url("/community/calendar"),
            alerts=join(fmt('<li><time>{}</time> {}</li>', local(a.created_at, tz), a.message)
                        for a in alerts) or Markup('<li class="muted">No missed drops.</li>'),
            tz=tz)
        return page(c, request, who, title="Drops", body=body, page="community-drops")

    @c.api("GET", "/api/community/drops", role=Role.MANAGER)
    async def drops_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        status = request.query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ConsoleError(400, f"status: one of {', '.join(STATUSES)}")
        return c.json({"drops": [drop_json(rt, d) for d in await rt.drops.list(status=status)]})

    # ------------------------------------------------------------------ calendar
    def calendar_args(request: web.Request, rt: Any) -> tuple[date, ZoneInfo, date]:
        tz_name = request.query.get("tz") or default_tz()
        tz = zone(tz_name)
        today = rt.drops.now().astimezone(tz).date()
        return parse_month(request.query.get("month"), today), tz, today

    @c.page("/community/calendar", role=Role.MANAGER)
    async def calendar_page(request: web.Request, who: Who) -> web.StreamResponse:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "Drops calendar")
        first, tz, today = calendar_args(request, rt)
        days = await month_entries(rt, first, tz)

        def link(month: date) -> str:
            return c.url(f"/community/calendar?month={month:%Y-%m}&tz={tz.key}")

        body = render(
            "community_calendar.html", month=f"{first:%B %Y}", tz=tz.key,
            prev=link(prev_month(first)), next=link(next_month(first)),
            today=link(today.replace(day=1)), month_value=f"{first:%Y-%m}",
            grid=calendar_grid(c, first, days, tz, today),
            legend=join(badge(s) for s in STATUSES),
            count=sum(len(v) for v in days.values()), new=c.url("/community/drops/new"))
        return page(c, request, who, title="Drops calendar", body=body,
                    page="community-calendar")

    @c.api("GET", "/api/community/calendar", role=Role.MANAGER)
    async def calendar_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        first, tz, _today = calendar_args(request, rt)
        days = await month_entries(rt, first, tz)
        return c.json({"month": f"{first:%Y-%m}", "tz": tz.key,
                       "days": {d.isoformat(): [entry_json(e, tz) for e in v]
                                for d, v in sorted(days.items())}})

    # ------------------------------------------------------------------ new drop
    async def new_page(request: web.Request, who: Who, values: Mapping[str, Any] | None,
                       *, error: str = "", preview: Markup | None = None,
                       status: int = 200) -> web.Response:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "New drop")
        v: Mapping[str, Any] = values or {
            **{k: "" for k in TEXT_KEYS}, **{f"text_{lang}": "" for lang in LANGUAGES},
            "pools": [], "languages": [], "respect_cap": True, "kind": "content",
            "target": "all_groups", "schedule": "once", "timezone": default_tz()}
        pools = [p.pool.name for p in await rt.groups.pools()]
        tags = sorted({t for i in await rt.groups.list() for t in i.tags})
        campaigns = [(s.campaign.name, f"{s.campaign.name} ({s.campaign.kind})")
                     for s in await rt.coupons.list() if s.campaign.active]
        segments: list[str] = []
        crm = c.extras.get("crm")
        if crm is not None and getattr(crm, "segments", None) is not None:
            segments = [s.name for s in await crm.segments.list_segments()]
        default = rt.drops.t.default
        translations = join(fmt(
            '<label>Text in {} (optional) <textarea name="text_{}" rows="3" maxlength="4000">{}'
            '</textarea></label>', lang, lang, v[f"text_{lang}"])
            for lang in LANGUAGES)
        body = render(
            "community_drop_new.html", message=message(error), preview=preview or Markup(""),
            action=c.url("/community/drops/new"), csrf=who.csrf_token, name=v["name"],
            kind_options=options([("content", "content"), ("coupon", "coupon")],
                                 v["kind"] or "content"),
            coupon_options=options(campaigns, v["coupon"], blank="—"),
            format_options=options([("plain", "plain text"), ("html", "HTML")],
                                   v["format"] or "plain"),
            text=v["text"], default_language=default, translations=translations,
            image_url=v["image_url"], buttons=v["buttons"],
            target_options=options(TARGETS, v["target"]),
            group_tags=v["group_tags"], tag_list=options(tags), private_tags=v["private_tags"],
            pool_options=options(pools, v["pools"]),
            language_checks=join(fmt(
                '<label class="inline"><input type="checkbox" name="languages" value="{}"{}> {}'
                '</label>', lang, checked(lang in v["languages"]), lang) for lang in LANGUAGES),
            segment=v["segment"], segment_list=options(segments),
            segments_note="" if segments else "No CRM segments are defined.",
            schedule_options=options(SCHEDULES, v["schedule"]), run_at=v["run_at"],
            cron=v["cron"], timezone=v["timezone"] or default_tz(),
            respect_cap=checked(bool(v["respect_cap"])), default_tz=default_tz(),
        )
        return page(c, request, who, title="New drop", body=body, page="community-drop-new",
                    scripts=("community_drop_new.js",), status=status)

    @c.page("/community/drops/new", role=Role.MANAGER)
    async def new_view(request: web.Request, who: Who) -> web.StreamResponse:
        return await new_page(request, who, None)

    @c.page("/community/drops/new", role=Role.MANAGER, method="POST")
    async def new_post(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        form = await request.post()
        values: dict[str, Any] | None = None
        try:
            values = read_values(form, form=True)
            spec = parse_spec(values, default_tz())
            if form.get("action") == "save":
                drop = await save(c, rt, spec, who)
                raise web.HTTPSeeOther(c.url(f"/community/drops/{drop.id}?done=created"))
            unsaved, _when = await check(c, rt, spec)
            r = await reach(rt, spec.audience)
            preview = fmt('<section class="panel preview" id="preview"><h2>Preview</h2>{}'
                          '<p class="muted">Nothing is saved yet: check the preview, then '
                          '<strong>Save and schedule</strong> below.</p></section>',
                          preview_markup(rt, rendered(rt, unsaved, r), r))
            return await new_page(request, who, values, preview=preview)
        except ConsoleError as exc:
            return await new_page(request, who, values, error=exc.message, status=exc.status)

    @c.api("POST", "/api/community/drops/preview", role=Role.MANAGER)
    async def preview_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        spec = parse_spec(read_values(await c.json_body(request), form=False), default_tz())
        unsaved, when = await check(c, rt, spec)
        r = await reach(rt, spec.audience)
        return c.json({"reach": r.as_dict(), "run_at": when,
                       "messages": [message_json(lang, m) for lang, m in
                                    rendered(rt, unsaved, r)]})

    @c.api("POST", "/api/community/drops", role=Role.MANAGER)
    async def create_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        spec = parse_spec(read_values(await c.json_body(request), form=False), default_tz())
        drop = await save(c, rt, spec, who)
        return c.json({"drop": drop_json(rt, drop)})

    # ------------------------------------------------------------------ one drop
    async def drop_page(request: web.Request, who: Who, drop_id: int, *, error: str = "",
                        status: int = 200) -> web.Response:
        rt = runtime(c)
        if rt is None:
            return off_page(c, request, who, "Drop")
        with refused():
            drop = await rt.drops.get(drop_id)
            reports = await rt.drops.reports(drop_id)
        try:
            r = await reach(rt, Audience.from_dict(drop.audience))
            preview = preview_markup(rt, rendered(rt, drop, r), r)
        except ConsoleError as exc:
            preview = message(f"No preview: {exc.message}")
        base = c.url(f"/community/drops/{drop.id}")
        forms = []
        for action, label, allowed in (
            ("pause", "Pause", drop.status in (DropStatus.SCHEDULED, DropStatus.RUNNING)),
            ("resume", "Resume", drop.status == DropStatus.PAUSED),
            ("schedule", "Schedule", drop.status == DropStatus.DRAFT),
            ("cancel", "Cancel drop", drop.status not in FINAL),
        ):
            if allowed:
                forms.append(fmt(
                    '<form method="post" action="{}/{}"><input type="hidden" name="csrf_token" '
                    'value="{}"><button type="submit" class="{}"{}>{}</button></form>',
                    base, action, who.csrf_token,
                    "danger" if action == "cancel" else "primary" if action == "resume" else "",
                    fmt(' data-confirm="Cancel the drop {}? This cannot be undone."', drop.name)
                    if action == "cancel" else Markup(""), label))
        async with c.db.session() as s:
            telegram_id = (await s.execute(select(Advisor.telegram_user_id).where(
                Advisor.id == who.advisor_id))).scalar_one_or_none()
        if telegram_id:
            test = fmt(
                '<form method="post" action="{}/test" class="row">'
                '<input type="hidden" name="csrf_token" value="{}">'
                '<label>Language <select name="language">{}</select></label>'
                '<button type="submit">Send a test to me</button></form>',
                base, who.csrf_token, options(LANGUAGES, rt.drops.t.default))
        else:
            test = Markup('<p class="muted">A test goes to your own Telegram chat with the bot: '
                          'your console account is not linked to Telegram yet (an admin sets '
                          'your Telegram username, then you write to the bot once).</p>')
        runs = [report_json(x, drop.timezone) for x in reports]
        errors = await run_errors(rt, drop.id)
        nxt = rt.drops.next_run(drop)
        body = render(
            "community_drop.html", name=drop.name, id=drop.id, status=badge(drop.status),
            message=join([done(request), message(error)]), kind=drop.kind,
            coupon=fmt(" (campaign #{})", drop.coupon_campaign_id)
            if drop.coupon_campaign_id else "",
            schedule=describe_schedule(drop),
            next_run=f"{local(nxt, drop.timezone)} {drop.timezone}" if nxt else "—",
            audience=describe_audience(drop.audience),
            cap="respects" if drop.respect_cap else "ignores",
            created=f"{local(drop.created_at, drop.timezone)} by {drop.created_by or '—'}",
            actions=join(forms) or Markup('<span class="muted">No actions: the drop is '
                                          'finished.</span>'),
            preview=preview, test=test, tz=drop.timezone,
            runs=join(report_row(x) for x in runs) or Markup(
                '<tr class="empty"><td colspan="14" class="muted">Not sent yet.</td></tr>'),
            errors=join(fmt('<li>{} × {} <span class="muted">{}</span></li>',
                            e["count"], e["status"], e["error"]) for e in errors)
            or Markup('<li class="muted">None.</li>'),
            back=c.url("/community/drops"))
        return page(c, request, who, title=f"Drop {drop.name}", body=body,
                    page="community-drop", scripts=("community_drop.js",),
                    data={"drop": drop.id, "poll": POLL_MS}, status=status)

    @c.page("/community/drops/{drop_id}", role=Role.MANAGER)
    async def drop_view(request: web.Request, who: Who) -> web.StreamResponse:
        return await drop_page(request, who, path_int(request, "drop_id"))

    async def act(rt: Any, drop_id: int, action: str) -> Drop:
        with refused():
            if action == "pause":
                return await rt.drops.pause(drop_id)
            if action == "resume":
                return await rt.drops.resume(drop_id)
            if action == "schedule":
                return await rt.drops.schedule_draft(drop_id)
            return await rt.drops.cancel(drop_id)

    def action_routes(action: str) -> None:
        @c.page(f"/community/drops/{{drop_id}}/{action}", role=Role.MANAGER, method="POST")
        async def action_form(request: web.Request, who: Who) -> web.StreamResponse:
            rt = need(c)
            drop_id = path_int(request, "drop_id")
            try:
                await act(rt, drop_id, action)
            except ConsoleError as exc:
                return await drop_page(request, who, drop_id, error=exc.message,
                                       status=exc.status)
            raise web.HTTPSeeOther(c.url(f"/community/drops/{drop_id}?done={action}"))

        @c.api("POST", f"/api/community/drops/{{drop_id}}/{action}", role=Role.MANAGER)
        async def action_api(request: web.Request, who: Who) -> web.StreamResponse:
            rt = need(c)
            return c.json({"drop": drop_json(rt, await act(rt, path_int(request, "drop_id"),
                                                           action))})

    for action in ACTIONS:
        action_routes(action)

    @c.page("/community/drops/{drop_id}/test", role=Role.MANAGER, method="POST")
    async def test_form(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        drop_id = path_int(request, "drop_id")
        form = await request.post()
        language = form.get("language")
        try:
            if language not in LANGUAGES:
                raise ConsoleError(400, f"language: one of {', '.join(LANGUAGES)}")
            async with c.db.session() as s:
                telegram_id = (await s.execute(select(Advisor.telegram_user_id).where(
                    Advisor.id == who.advisor_id))).scalar_one_or_none()
            if not telegram_id:
                raise ConsoleError(400, "your console account is not linked to Telegram: "
                                        "there is nowhere to send the test")
            with refused():
                await rt.drops.test_send(
                    drop_id, ChatRef("telegram", ChatKind.PRIVATE, str(telegram_id)),
                    language=str(language))
        except ConsoleError as exc:
            return await drop_page(request, who, drop_id, error=exc.message, status=exc.status)
        raise web.HTTPSeeOther(c.url(f"/community/drops/{drop_id}?done=test"))

    @c.api("GET", "/api/community/drops/{drop_id}", role=Role.MANAGER)
    async def drop_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        with refused():
            drop = await rt.drops.get(path_int(request, "drop_id"))
        return c.json({"drop": drop_json(rt, drop)})

    @c.api("GET", "/api/community/drops/{drop_id}/preview", role=Role.MANAGER)
    async def drop_preview_api(request: web.Request, who: Who) -> web.StreamResponse:
        rt = need(c)
        with refused():
            drop = await rt.drops.get(path_int(request, "drop_id"))
        r = await reach(rt, Audience.from_dict(drop.audience))
        return c.json({"reach": r.as_dict(),
                       "messages": [message_json(lang, m) for lang, m in rendered(rt, drop, r)]})

    @c.api("GET", "/api/community/drops/{drop_id}/report", role=Role.MANAGER)
    async def report_api(request: web.Request, who: Who) -> web.StreamResponse:
        """The delivery report of every run of the drop (polled by the drop page)."""
        rt = need(c)
        drop_id = path_int(request, "drop_id")
        with refused():
            drop = await rt.drops.get(drop_id)
            reports = await rt.drops.reports(drop_id)
        runs = [report_json(x, drop.timezone) for x in reports]
        totals = {k: sum(r["counts"].get(k, 0) for r in runs) for k in REPORT_COLUMNS}
        return c.json({"drop": {"id": drop.id, "status": drop.status,
                                "next_run": rt.drops.next_run(drop)},
                       "runs": runs, "totals": totals, "errors": await run_errors(rt, drop_id),
                       "refreshed_at": rt.drops.now()})
