"""The segment builder: a small form that writes the rule JSON ``crm.rules`` understands (and
a raw JSON editor), a live count with the time it took, a sample of members; saved segments
with their counts. Every count is the SegmentService's one SQL statement."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.core.i18n import LANGUAGES
from console.auth import Who
from console.crm_members_pages import known_platforms
from console.crm_pages import (
    crm_errors,
    crm_of,
    crm_off_page,
    crm_page,
    distinct_tags,
    need_crm,
)
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError, path_int
from crm import CrmService
from crm.rules import FIELDS, TIERS, Condition, Group, Rule, parse_rule
from crm.segments import load_definition
from models.advisors import Role
from models.community import CommunityGroup
from models.crm import Segment

SAMPLE_SIZE = 10
MAX_DEFINITION = 20_000  # characters of rule JSON

_OPS = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "in": "in",
        "not_in": "not in", "has": "has", "not_has": "has not", "has_any": "has any of",
        "has_all": "has all of", "member_of": "member of", "not_member_of": "not member of",
        "contains_any": "contains any of", "between": "between"}


def describe_rule(rule: Rule, *, top: bool = True) -> str:
    """A rule in words: ``tier in best, good AND spend ≥ 10000 within 90 days``."""
    if isinstance(rule, Group):
        if rule.kind == "not":
            return f"NOT ({describe_rule(rule.children[0])})"
        if not rule.children:
            return "every member" if rule.kind == "all" else "no member"
        glue = " AND " if rule.kind == "all" else " OR "
        text = glue.join(describe_rule(child, top=False) for child in rule.children)
        return text if top or len(rule.children) == 1 else f"({text})"
    return _describe_condition(rule)


def _describe_condition(cond: Condition) -> str:
    def show(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    if cond.op == "between":
        value = f"{show(cond.value[0])} and {show(cond.value[1])}"
    elif isinstance(cond.value, tuple):
        value = ", ".join(show(v) for v in cond.value)
    else:
        value = show(cond.value)
    out = f"{cond.field} {_OPS.get(cond.op, cond.op)} {value}"
    if cond.within_days:
        out += f" within {show(cond.within_days)} days"
    return out


def describe_definition(definition: Any) -> str:
    try:
        return describe_rule(parse_rule(definition))
    except ValueError as exc:  # a stored definition the parser no longer accepts
        return f"(invalid: {exc})"


def field_specs() -> dict[str, Any]:
    return {name: {"ops": list(spec.ops), "kind": spec.kind, "help": spec.help,
                   "within_days": spec.within_days} for name, spec in FIELDS.items()}


async def builder_options(c: Console, crm: CrmService) -> dict[str, Any]:
    """Suggestions for the builder's value boxes (each a small indexed query)."""
    async with crm.db.session() as session:
        groups = [{"id": int(g.id), "title": g.title or f"group {g.id}"}
                  for g in await session.execute(
                      select(CommunityGroup.id, CommunityGroup.title)
                      .order_by(CommunityGroup.id).limit(500))]
    return {"tags": await distinct_tags(crm), "tier": list(TIERS), "language": list(LANGUAGES),
            "platform": await known_platforms(c, crm), "group": groups,
            "birthday_month": list(range(1, 13))}


def _definition(data: dict[str, Any]) -> dict[str, Any]:
    """The rule from a request body: ``definition`` as a JSON object or JSON text."""
    raw = data.get("definition")
    if isinstance(raw, str) and len(raw) > MAX_DEFINITION:
        raise ConsoleError(400, f"the rule is limited to {MAX_DEFINITION} characters")
    if raw is None:
        raise ConsoleError(400, "definition is missing (a rule as JSON)")
    with crm_errors():
        return load_definition(raw)


def _segment_row(seg: Segment) -> dict[str, Any]:
    return {"id": seg.id, "name": seg.name, "description": seg.description,
            "definition": seg.definition, "describe": describe_definition(seg.definition),
            "updated_at": seg.updated_at}


def _rows_html(segments: list[Segment]) -> Markup:
    if not segments:
        return Markup('<tr class="empty"><td colspan="5" class="muted">No saved segments yet.'
                      '</td></tr>')
    return join(fmt(
        '<tr data-id="{}" data-name="{}" data-description="{}" data-definition="{}">'
        '<td><strong>{}</strong>'
        '<br><small>{}</small></td><td class="rule">{}</td>'
        '<td class="num count">…</td><td class="num marketable">…</td>'
        '<td class="actions"><button type="button" class="small edit">Edit</button> '
        '<button type="button" class="small danger delete">Delete</button></td></tr>',
        seg.id, seg.name, seg.description or "", json.dumps(seg.definition, ensure_ascii=False),
        seg.name, seg.description or "", describe_definition(seg.definition))
        for seg in segments)


def register(c: Console) -> None:
    @c.page("/crm/segments", role=Role.MANAGER)
    async def segments_page(request: web.Request, who: Who) -> web.StreamResponse:
        crm = crm_of(c)
        if crm is None:
            return crm_off_page(c, request, who, title="Segments", section="/crm/segments")
        segments = await crm.segments.list_segments()
        body = render("crm_segments.html", rows=_rows_html(segments),
                      fields=join(fmt('<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>',
                                      name, " ".join(spec.ops),
                                      spec.help + (" (within_days)" if spec.within_days
                                                   else ""))
                                  for name, spec in FIELDS.items()))
        return crm_page(c, request, who, title="Segments", section="/crm/segments", body=body,
                        page="crm-segments", scripts=("crm_segments.js",),
                        data={"fields": json.dumps(field_specs()),
                              "options": json.dumps(await builder_options(c, crm),
                                                    ensure_ascii=False)})

    @c.api("GET", "/api/crm/segments", role=Role.MANAGER)
    async def segments_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        return c.json({"segments": [_segment_row(s) for s in
                                    await crm.segments.list_segments()]})

    @c.api("GET", "/api/crm/segments/fields", role=Role.MANAGER)
    async def fields_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        return c.json({"fields": field_specs(), "options": await builder_options(c, crm)})

    @c.api("POST", "/api/crm/segments/count", role=Role.MANAGER)
    async def count_api(request: web.Request, who: Who) -> web.StreamResponse:
        """Live count of a rule being edited: 400 with the parser's message when invalid."""
        crm = need_crm(c)
        data = await c.json_body(request)
        definition = _definition(data)
        with crm_errors():
            started = time.perf_counter()
            count = await crm.segments.count(definition)
            count_ms = (time.perf_counter() - started) * 1000
            sample: list[Any] = []
            sample_ms = 0.0
            if data.get("sample", True) and count.marketable:
                started = time.perf_counter()
                sample = await crm.segments.sample(definition, limit=SAMPLE_SIZE)
                sample_ms = (time.perf_counter() - started) * 1000
        return c.json({"matching": count.matching, "marketable": count.marketable,
                       "ms": round(count_ms, 1), "sample": sample,
                       "sample_ms": round(sample_ms, 1),
                       "describe": describe_definition(definition)})

    @c.api("GET", "/api/crm/segments/{segment_id}/count", role=Role.MANAGER)
    async def saved_count_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        with crm_errors():
            seg = await crm.segments.get(path_int(request, "segment_id"))
            started = time.perf_counter()
            count = await crm.segments.count(seg)
        return c.json({"id": seg.id, "name": seg.name, "matching": count.matching,
                       "marketable": count.marketable,
                       "ms": round((time.perf_counter() - started) * 1000, 1)})

    @c.api("POST", "/api/crm/segments", role=Role.MANAGER)
    async def save_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        data = await c.json_body(request)
        name, description = data.get("name"), data.get("description")
        if not isinstance(name, str):
            raise ConsoleError(400, "name must be a text")
        if description is not None and not isinstance(description, str):
            raise ConsoleError(400, "description must be a text")
        description = (description or "").strip()[:512] or None
        definition = _definition(data)
        with crm_errors():
            seg = await crm.segments.create(name, definition, description=description,
                                            replace=data.get("replace") is True)
        return c.json({"segment": _segment_row(await crm.segments.get(seg.id))})

    @c.api("DELETE", "/api/crm/segments/{segment_id}", role=Role.MANAGER)
    async def delete_api(request: web.Request, who: Who) -> web.StreamResponse:
        crm = need_crm(c)
        with crm_errors():
            seg = await crm.segments.get(path_int(request, "segment_id"))
            await crm.segments.delete(seg.name)
        return c.json({"ok": True})
