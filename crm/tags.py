"""Rule-based automatic tags: a rule is a segment definition plus a tag; evaluating it adds
the tag to members who now match and removes it from those who no longer do (two set-based
statements per rule). Manual tags are never removed by rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, insert, literal, select

from crm.errors import CrmError, NotFound
from crm.members import clean_tag
from crm.rules import base_from, c, parse_rule, rule_fields
from crm.segments import SegmentService, load_definition
from models.base import UTCDateTime, utcnow
from models.crm import ContactTag, TagRule
from models.db import Database

#: Ready-made rules (``crm rules add-preset NAME``).
PRESETS: dict[str, dict[str, Any]] = {
    "repeat-buyer": {
        "tag": "repeat-buyer",
        "description": "2+ orders in 90 days",
        "definition": {"field": "orders", "op": "gte", "value": 2, "within_days": 90},
    },
    "sensitive-skin": {
        "tag": "sensitive-skin",
        "description": "asked about sensitive skin",
        "definition": {"any": [
            {"field": "message", "op": "contains_any",
             "value": ["sensitive skin", "敏感肌", "敏感性肌", "皮肤敏感", "敏感皮肤"]},
            {"field": "intent", "op": "has", "value": "sensitive_skin"},
        ]},
    },
    "complaint": {
        "tag": "complaint",
        "description": "complained in the last 90 days",
        "definition": {"field": "event", "op": "has", "value": "complaint", "within_days": 90},
    },
    "big-spender": {
        "tag": "big-spender",
        "description": "spent 50,000+ in the last year",
        "definition": {"field": "spend", "op": "gte", "value": 50000, "within_days": 365},
    },
}


@dataclass(frozen=True)
class RuleRun:
    rule: str
    tag: str
    added: int
    removed: int


class TagRuleService:
    """Create, list and evaluate automatic tag rules (``evaluate_all`` is what the
    scheduler and imports call)."""

    def __init__(self, *, db: Database, segments: SegmentService | None = None) -> None:
        self.db = db
        self.segments = segments or SegmentService(db=db)

    async def create(self, name: str, tag: str, definition: str | dict[str, Any], *,
                     description: str | None = None, replace: bool = False) -> TagRule:
        """Save a validated rule (it runs on the next ``evaluate_all``)."""
        name = name.strip()
        if not name or len(name) > 64:
            raise CrmError("rule name must be 1-64 characters")
        tag = clean_tag(tag)
        data = load_definition(definition)
        if "group" in rule_fields(parse_rule(data)):
            (await self.segments.compiler()).compile(parse_rule(data))
        async with self.db.session() as session:
            rule = (await session.execute(select(TagRule).where(TagRule.name == name))
                    ).scalar_one_or_none()
            if rule is not None:
                if not replace:
                    raise CrmError(f"rule {name!r} already exists (choose another name, or replace it)")
                rule.tag, rule.definition, rule.description = tag, data, description
                return rule
            rule = TagRule(name=name, tag=tag, definition=data, description=description,
                           enabled=True)
            session.add(rule)
            await session.flush()
            return rule

    async def add_preset(self, preset: str) -> TagRule:
        if preset not in PRESETS:
            raise NotFound(f"no preset {preset!r} (known: {', '.join(PRESETS)})")
        spec = PRESETS[preset]
        return await self.create(preset, spec["tag"], spec["definition"],
                                 description=spec["description"])

    async def list_rules(self) -> list[TagRule]:
        async with self.db.session() as session:
            return list((await session.execute(select(TagRule).order_by(TagRule.name))
                         ).scalars())

    async def set_enabled(self, name: str, enabled: bool) -> None:
        async with self.db.session() as session:
            rule = (await session.execute(select(TagRule).where(TagRule.name == name))
                    ).scalar_one_or_none()
            if rule is None:
                raise NotFound(f"no rule {name!r}")
            rule.enabled = enabled
            if not enabled:
                await session.execute(delete(ContactTag).where(
                    ContactTag.source == f"rule:{name}"))

    async def delete(self, name: str) -> None:
        """Delete a rule and the tags it added (manual tags stay)."""
        async with self.db.session() as session:
            rule = (await session.execute(select(TagRule).where(TagRule.name == name))
                    ).scalar_one_or_none()
            if rule is None:
                raise NotFound(f"no rule {name!r}")
            await session.execute(delete(ContactTag).where(ContactTag.source == f"rule:{name}"))
            await session.delete(rule)

    async def evaluate(self, rule: TagRule, *, now: datetime | None = None) -> RuleRun:
        """Apply one rule: two statements, in one transaction."""
        now = now or utcnow()
        cond = await self.segments.where(rule.definition, now)
        source = f"rule:{rule.name}"
        t = ContactTag.__table__
        async with self.db.session() as session:
            await self.segments.tune(session)
            matching = select(c.c.id).select_from(base_from()).where(cond)
            removed = await session.execute(
                delete(ContactTag).where(
                    t.c.source == source,
                    ~exists(matching.where(c.c.id == t.c.contact_id)),
                )
            )
            other = t.alias("existing")
            added = await session.execute(
                insert(ContactTag).from_select(
                    ["contact_id", "tag", "source", "created_at"],
                    select(c.c.id, literal(rule.tag), literal(source),
                           literal(now, UTCDateTime()))
                    .select_from(base_from())
                    .where(cond, ~exists().where(other.c.contact_id == c.c.id,
                                                 other.c.tag == rule.tag)),
                )
            )
            stored = await session.get(TagRule, rule.id)
            if stored is not None:
                stored.evaluated_at = now
        return RuleRun(rule.name, rule.tag, max(added.rowcount or 0, 0),  # type: ignore[attr-defined]
                       max(removed.rowcount or 0, 0))  # type: ignore[attr-defined]

    async def evaluate_all(self, *, now: datetime | None = None) -> list[RuleRun]:
        """Re-evaluate every enabled rule (after imports, recompute, or on a schedule)."""
        now = now or utcnow()
        return [await self.evaluate(rule, now=now) for rule in await self.list_rules()
                if rule.enabled]
