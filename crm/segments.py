"""Saved rule-based segments: live count, a sample of members, and ``resolve`` for drops
(streamed member ids, opted-out members never included)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crm.errors import CrmError, NotFound
from crm.rules import (
    GROUP_TABLES,
    Rule,
    RuleCompiler,
    base_from,
    c,
    marketable_clause,
    parse_rule,
    rule_fields,
    s,
    uses_order_window,
)
from models.base import utcnow
from models.crm import Segment
from models.db import Database

SegmentRef = str | int | Segment | dict[str, Any]


@dataclass(frozen=True)
class SegmentCount:
    matching: int  # members matching the rules
    marketable: int  # of those, members a drop may reach (not opted out / declined)


@dataclass(frozen=True)
class SampleMember:
    contact_id: int
    display_name: str | None
    language: str | None
    tier: str
    total_spend: float
    koc_score: float


def load_definition(raw: str | dict[str, Any]) -> dict[str, Any]:
    """A definition from JSON text (or a dict); validated, with errors naming the place."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CrmError(f"segment definition is not valid JSON: {exc.msg} at line "
                           f"{exc.lineno} column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise CrmError("segment definition must be a JSON object")
    parse_rule(raw)
    return raw


class SegmentService:
    """Create, list, count, sample and resolve segments; all queries are single SQL
    statements built by :class:`crm.rules.RuleCompiler`."""

    def __init__(self, *, db: Database, work_mem: str = "64MB") -> None:
        self.db = db
        if not re.fullmatch(r"\d+(kB|MB|GB)", work_mem):
            raise CrmError(f"work_mem must look like 64MB, got {work_mem!r}")
        self.work_mem = work_mem
        self._group_table: tuple[str, str] | None | bool = False  # False: not looked yet

    async def group_table(self) -> tuple[str, str] | None:
        """The community module's membership table and its group column, if it exists
        (looked up once)."""
        if self._group_table is False:
            def find(sync: Any) -> tuple[str, str] | None:
                inspector = inspect(sync)
                for name, col in GROUP_TABLES:
                    if inspector.has_table(name):
                        return name, col
                return None

            async with self.db.engine.connect() as conn:
                self._group_table = await conn.run_sync(find)
        return self._group_table  # type: ignore[return-value]

    def forget_schema(self) -> None:
        """Look for the membership table again on the next query (after a migration)."""
        self._group_table = False

    async def compiler(self, now: datetime | None = None) -> RuleCompiler:
        return RuleCompiler(now or utcnow(), group_table=await self.group_table())

    async def _rule(self, ref: SegmentRef) -> Rule:
        if isinstance(ref, dict):
            return parse_rule(ref)
        if isinstance(ref, Segment):
            return parse_rule(ref.definition)
        return parse_rule((await self.get(ref)).definition)

    async def where(self, ref: SegmentRef, now: datetime | None = None) -> Any:
        """The segment's SQL condition over contacts/profiles/stats (for other queries)."""
        rule = await self._rule(ref)
        return (await self.compiler(now)).compile(rule)

    # ------------------------------------------------------------------ CRUD
    async def create(self, name: str, definition: str | dict[str, Any], *,
                     description: str | None = None, replace: bool = False) -> Segment:
        """Save a validated segment; ``replace`` overwrites one with the same name."""
        name = name.strip()
        if not name or len(name) > 64:
            raise CrmError("segment name must be 1-64 characters")
        data = load_definition(definition)
        rule = parse_rule(data)
        if "group" in rule_fields(rule):
            (await self.compiler()).compile(rule)  # a clear error without group_members
        async with self.db.session() as session:
            found = (await session.execute(select(Segment).where(Segment.name == name))
                     ).scalar_one_or_none()
            if found is not None:
                if not replace:
                    raise CrmError(f"segment {name!r} already exists (choose another name, or replace it)")
                found.definition, found.description = data, description
                return found
            seg = Segment(name=name, definition=data, description=description)
            session.add(seg)
            try:
                await session.flush()
            except IntegrityError:
                raise CrmError(f"segment {name!r} exists") from None
            return seg

    async def get(self, ref: str | int) -> Segment:
        async with self.db.session() as session:
            stmt = select(Segment).where(
                Segment.id == ref if isinstance(ref, int) else Segment.name == ref)
            seg = (await session.execute(stmt)).scalar_one_or_none()
        if seg is None:
            raise NotFound(f"no segment {ref!r}")
        return seg

    async def list_segments(self) -> list[Segment]:
        async with self.db.session() as session:
            return list((await session.execute(select(Segment).order_by(Segment.name))).scalars())

    async def delete(self, name: str) -> None:
        async with self.db.session() as session:
            seg = (await session.execute(select(Segment).where(Segment.name == name))
                   ).scalar_one_or_none()
            if seg is None:
                raise NotFound(f"no segment {name!r}")
            await session.delete(seg)

    # ------------------------------------------------------------------ queries
    async def members_query(self, ref: SegmentRef, *, marketable_only: bool = True,
                            now: datetime | None = None) -> Select[Any]:
        """SELECT contacts.id of the segment's members (one statement)."""
        cond = await self.where(ref, now)
        stmt = select(c.c.id).select_from(base_from()).where(cond)
        if marketable_only:
            stmt = stmt.where(marketable_clause())
        return stmt

    async def tune(self, session: AsyncSession) -> None:
        """PostgreSQL: enough memory for one aggregate over a million members without
        spilling, and no JIT (its compile time costs more than it saves here)."""
        if not self.db.is_sqlite:
            await session.execute(text(f"SET LOCAL work_mem = '{self.work_mem}'"))
            await session.execute(text("SET LOCAL jit = off"))

    async def count(self, ref: SegmentRef, *, now: datetime | None = None) -> SegmentCount:
        """Live count of matching and marketable members: one SQL query."""
        rule = await self._rule(ref)
        cond = (await self.compiler(now)).compile(rule)
        stmt = select(func.count(), func.coalesce(func.sum(case((marketable_clause(), 1),
                                                                 else_=0)), 0)
                      ).select_from(base_from()).where(cond)
        async with self.db.session() as session:
            await self.tune(session)
            if not self.db.is_sqlite and uses_order_window(rule):
                # The planner cannot estimate how many members a grouped window aggregate
                # keeps (it guesses a few dozen), so it would probe contacts and profiles
                # once per matching member (~1 s per 150k at 1M members). A count reads
                # every member anyway: hash joins, and a serial plan (the parallel plans
                # it picks instead had every worker rebuild the aggregate: 1.4-2x slower).
                await session.execute(text("SET LOCAL enable_nestloop = off"))
                await session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            row = (await session.execute(stmt)).one()
        return SegmentCount(int(row[0]), int(row[1]))

    async def sample(self, ref: SegmentRef, *, limit: int = 10,
                     now: datetime | None = None) -> list[SampleMember]:
        """A few marketable members of the segment (highest spend first)."""
        cond = await self.where(ref, now)
        stmt = (select(c.c.id, c.c.display_name, c.c.language,
                       func.coalesce(s.c.tier, "dormant"), func.coalesce(s.c.total_spend, 0),
                       func.coalesce(s.c.koc_score, 0))
                .select_from(base_from()).where(cond, marketable_clause())
                .order_by(func.coalesce(s.c.total_spend, 0).desc(), c.c.id).limit(limit))
        async with self.db.session() as session:
            await self.tune(session)
            rows = (await session.execute(stmt)).all()
        return [SampleMember(int(r[0]), r[1], r[2], r[3], float(r[4]), float(r[5]))
                for r in rows]

    async def resolve(self, ref: SegmentRef, *, batch: int = 1000,
                      now: datetime | None = None) -> AsyncIterator[int]:
        """Stream the contact ids a drop may reach (opted-out members excluded), in id
        order, one short query per ``batch`` (no transaction held while the caller sends)."""
        base = await self.members_query(ref, marketable_only=True, now=now)
        last = 0
        while True:
            async with self.db.session() as session:
                await self.tune(session)
                ids = list((await session.execute(
                    base.where(c.c.id > last).order_by(c.c.id).limit(batch))).scalars())
            for contact_id in ids:
                yield int(contact_id)
            if len(ids) < batch:
                return
            last = ids[-1]
