"""The rule language shared by segments and automatic tags, compiled to ONE SQL query.

A rule is JSON::

    {"all": [RULE, ...]}   {"any": [RULE, ...]}   {"not": RULE}
    {"field": "tier", "op": "in", "value": ["best", "good"]}
    {"field": "orders", "op": "gte", "value": 2, "within_days": 90}
    {"field": "message", "op": "contains_any", "value": ["sensitive skin", "敏感肌"]}

``FIELDS`` lists every field with its operators; :func:`parse_rule` rejects anything else
with a message naming the place (``all[1].op``). :class:`RuleCompiler` turns a parsed rule
into a SQLAlchemy Core boolean over ``contacts`` (alias ``c``) left-joined to
``crm_profiles`` (``p``) and ``crm_member_stats`` (``s``); related tables are reached
through (NOT) EXISTS / IN sub-queries, so a count is one statement.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    and_,
    cast,
    column,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    table,
    true,
    union_all,
)
from sqlalchemy.sql import FromClause

from crm.errors import CrmError
from crm.rollup import cents as order_cents
from crm.rollup import window_months
from models.contact import Contact, ContactIdentity
from models.conversation import Message, MessageDirection
from models.crm import ContactTag, MemberEvent, MemberProfile, MemberStats, Order, OrderMonth

TIERS = ("dormant", "regular", "good", "best")
#: Group membership tables the community module may provide, with their group-id column
#: (checked in this order; the first that exists is used).
GROUP_TABLES = (("community_members", "group_id"), ("group_members", "chat_id"))
GROUP_MEMBER_GONE = ("left", "kicked", "banned", "removed")

c = Contact.__table__
p = MemberProfile.__table__
s = MemberStats.__table__

OPS_ALIASES = {"=": "eq", "==": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt",
               "<=": "lte"}
NUMERIC_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
CHOICE_OPS = ("eq", "ne", "in", "not_in")
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
}


@dataclass(frozen=True)
class FieldSpec:
    ops: tuple[str, ...]
    kind: str  # number | int | text | bool | tier | month | list
    help: str
    within_days: bool = False


FIELDS: dict[str, FieldSpec] = {
    "tag": FieldSpec(("has", "not_has", "has_any", "has_all"), "text", "member's tags"),
    "tier": FieldSpec(CHOICE_OPS, "tier", "dormant|regular|good|best"),
    "needs_care": FieldSpec(("eq",), "bool", "complaint flag (true/false)"),
    "language": FieldSpec(CHOICE_OPS, "text", "contact language (ja, en, zh)"),
    "platform": FieldSpec(("eq", "in", "not_in"), "text", "has an identity on the platform"),
    "group": FieldSpec(("member_of", "not_member_of"), "int",
                       "member of community group id(s) (needs the community module's "
                       "membership table)"),
    "birthday_month": FieldSpec(CHOICE_OPS, "month", "birth month 1-12"),
    "last_purchase_days": FieldSpec(NUMERIC_OPS, "number",
                                    "days since the last purchase (buyers only)"),
    "spend": FieldSpec(NUMERIC_OPS, "number", "total spend (or within_days)", True),
    "orders": FieldSpec(NUMERIC_OPS, "number", "number of orders (or within_days)", True),
    "spend_90d": FieldSpec(NUMERIC_OPS, "number", "spend in the 90 days before the last "
                           "recompute (fast; 'spend' with within_days is live)"),
    "spend_365d": FieldSpec(NUMERIC_OPS, "number", "spend in the 365 days before the last "
                            "recompute"),
    "orders_90d": FieldSpec(NUMERIC_OPS, "number", "orders in the 90 days before the last "
                            "recompute"),
    "orders_365d": FieldSpec(NUMERIC_OPS, "number", "orders in the 365 days before the last "
                             "recompute"),
    "koc_score": FieldSpec(NUMERIC_OPS, "number", "KOC score (after recompute)"),
    "ltv": FieldSpec(NUMERIC_OPS, "number", "lifetime value (after recompute)"),
    "member_level": FieldSpec(CHOICE_OPS, "text", "shop member level"),
    "home_store": FieldSpec(CHOICE_OPS, "text", "home store"),
    "consent": FieldSpec(("eq",), "bool", "marketing consent given (true/false)"),
    "member_days": FieldSpec(NUMERIC_OPS, "number", "days since the contact first appeared"),
    "message": FieldSpec(("contains_any",), "list",
                         "an inbound chat message contains a keyword", True),
    "event": FieldSpec(("has", "not_has"), "text", "has an event of this kind", True),
    "intent": FieldSpec(("has", "not_has"), "text",
                        "an 'intent' event with data.intent = value", True),
    "contact_id": FieldSpec(("in", "not_in"), "int", "explicit member ids"),
}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any
    within_days: float | None = None


@dataclass(frozen=True)
class Group:
    kind: str  # all | any | not
    children: tuple[Rule, ...]


Rule = Condition | Group


def _fail(path: str, message: str) -> CrmError:
    return CrmError(f"rule {path or '(top)'}: {message}")


def _number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"expected a number, got {value!r}")
    return float(value)


def _scalar(path: str, spec: FieldSpec, value: Any) -> Any:
    if spec.kind in ("number",):
        return _number(path, value)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected a whole number, got {value!r}")
        return value
    if spec.kind == "month":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
            raise _fail(path, f"expected a month 1-12, got {value!r}")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise _fail(path, f"expected true or false, got {value!r}")
        return value
    if spec.kind == "tier":
        if value not in TIERS:
            raise _fail(path, f"unknown tier {value!r} (known: {', '.join(TIERS)})")
        return value
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"expected a non-empty text, got {value!r}")
    return value.strip()


def parse_rule(raw: Any, path: str = "") -> Rule:
    """Validate a rule (JSON value); raise :class:`CrmError` naming the bad place."""
    if not isinstance(raw, dict):
        raise _fail(path, f"expected an object, got {type(raw).__name__}")
    groups = [k for k in ("all", "any", "not") if k in raw]
    if groups:
        if len(raw) != 1:
            extra = sorted(set(raw) - {groups[0]})
            raise _fail(path, f"'{groups[0]}' must be alone in its object (also: {extra})")
        key = groups[0]
        if key == "not":
            return Group("not", (parse_rule(raw["not"], f"{path}.not".lstrip(".")),))
        items = raw[key]
        if not isinstance(items, list):
            raise _fail(path, f"'{key}' needs a list of rules")
        return Group(key, tuple(
            parse_rule(item, f"{path}.{key}[{i}]".lstrip(".")) for i, item in enumerate(items)
        ))
    unknown = sorted(set(raw) - {"field", "op", "value", "within_days"})
    if unknown:
        raise _fail(path, f"unknown key(s) {unknown} (a rule has field, op, value, "
                    "within_days; or all/any/not)")
    name = raw.get("field")
    if name not in FIELDS:
        raise _fail(path, f"unknown field {name!r} (known: {', '.join(FIELDS)})")
    spec = FIELDS[name]
    raw_op = raw.get("op")
    op = OPS_ALIASES.get(raw_op, raw_op) if isinstance(raw_op, str) else raw_op
    if op not in spec.ops:
        raise _fail(f"{path}.op".lstrip("."),
                    f"unknown operator {raw.get('op')!r} for {name} (known: {', '.join(spec.ops)})")
    if "value" not in raw:
        raise _fail(path, f"{name} {op} needs a 'value'")
    value = raw["value"]
    vpath = f"{path}.value".lstrip(".")
    if op in ("in", "not_in", "has_any", "has_all", "contains_any") or (
        op in ("member_of", "not_member_of") and isinstance(value, list)
    ):
        if not isinstance(value, list) or not value:
            raise _fail(vpath, f"{op} needs a non-empty list")
        value = tuple(_scalar(f"{vpath}[{i}]", spec, v) for i, v in enumerate(value))
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _fail(vpath, "between needs [low, high]")
        low, high = (_number(vpath, v) for v in value)
        if low > high:
            raise _fail(vpath, f"between: low {low} is above high {high}")
        value = (low, high)
    elif op in ("member_of", "not_member_of"):
        value = (_scalar(vpath, spec, value),)
    else:
        value = _scalar(vpath, spec, value)
    within = raw.get("within_days")
    if within is not None:
        if not spec.within_days:
            raise _fail(path, f"{name} does not take within_days")
        within = _number(f"{path}.within_days".lstrip("."), within)
        if within <= 0:
            raise _fail(path, "within_days must be positive")
    return Condition(name, op, value, within)


def rule_fields(rule: Rule) -> set[str]:
    if isinstance(rule, Condition):
        return {rule.field}
    out: set[str] = set()
    for child in rule.children:
        out |= rule_fields(child)
    return out


def uses_order_window(rule: Rule) -> bool:
    """Whether the rule has a live "spend/orders within N days" condition."""
    if isinstance(rule, Condition):
        return rule.field in ("spend", "orders") and bool(rule.within_days)
    return any(uses_order_window(child) for child in rule.children)


def _in_cents(cond: Condition) -> Condition:
    """The condition with its amount(s) in cents (exact decimal scaling of the float)."""
    def scale(v: float) -> float:
        return float(Decimal(repr(v)) * 100)

    value = tuple(scale(v) for v in cond.value) if cond.op == "between" else scale(cond.value)
    return Condition(cond.field, cond.op, value, cond.within_days)


def marketable_clause() -> ColumnElement[bool]:
    """Not opted out and not declined (members never asked count as marketable: they
    started the chat themselves)."""
    return and_(p.c.opted_out_at.is_(None), func.coalesce(p.c.marketing_consent, true()))


def base_from() -> FromClause:
    """contacts LEFT JOIN crm_profiles LEFT JOIN crm_member_stats."""
    return c.outerjoin(p, p.c.contact_id == c.c.id).outerjoin(s, s.c.contact_id == c.c.id)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class RuleCompiler:
    """Compiles parsed rules for one moment ``now`` (day windows are bound parameters)."""

    def __init__(self, now: datetime, *, group_table: tuple[str, str] | None = None) -> None:
        self.now = now
        self.group_table = group_table

    def compile(self, rule: Rule) -> ColumnElement[bool]:
        if isinstance(rule, Group):
            parts = [self.compile(child) for child in rule.children]
            if rule.kind == "not":
                return not_(parts[0])
            if not parts:
                return true() if rule.kind == "all" else false()
            return and_(*parts) if rule.kind == "all" else or_(*parts)
        return getattr(self, f"_f_{rule.field}")(rule)

    # ---------------------------------------------------------------- helpers
    def _cutoff(self, days: float) -> datetime:
        return self.now - timedelta(days=days)

    @staticmethod
    def _numeric(expr: Any, cond: Condition) -> ColumnElement[bool]:
        if cond.op == "between":
            return expr.between(cond.value[0], cond.value[1])
        return _CMP[cond.op](expr, cond.value)  # type: ignore[no-any-return]

    @staticmethod
    def _holds_at_zero(cond: Condition) -> bool:
        if cond.op == "between":
            return bool(cond.value[0] <= 0 <= cond.value[1])
        return bool(_CMP[cond.op](0, cond.value))

    @staticmethod
    def _choice(expr: Any, cond: Condition) -> ColumnElement[bool]:
        if cond.op == "eq":
            return expr == cond.value  # type: ignore[no-any-return]
        if cond.op == "ne":
            return or_(expr.is_(None), expr != cond.value)
        if cond.op == "in":
            return expr.in_(cond.value)  # type: ignore[no-any-return]
        return or_(expr.is_(None), expr.not_in(cond.value))

    def _aggregate_window(self, cond: Condition, kind: str) -> ColumnElement[bool]:
        """spend/orders within N days: IN (buyers whose aggregate matches), or NOT EXISTS
        (buyers whose aggregate does not) when zero itself matches, so non-buyers count.

        The window is answered from ``crm_order_months`` (whole UTC months, see
        :mod:`crm.rollup`) plus or minus the raw orders of the cutoff's partial month, so a
        90-day window reads ~3 month rows per buyer instead of every order. Spend is summed
        in whole cents (exact) and compared with the threshold in cents."""
        first, edge_from, edge_to, sign = window_months(
            self._cutoff(cond.within_days or 0))
        mo = OrderMonth.__table__.alias()
        o = Order.__table__.alias()
        edge_cents = order_cents(o.c.amount)
        rows = union_all(
            select(mo.c.contact_id.label("cid"), mo.c.orders.label("n"),
                   mo.c.spend_cents.label("cents")).where(mo.c.month >= first),
            select(o.c.contact_id, literal(sign, Integer),
                   edge_cents if sign > 0 else -edge_cents)
            .where(o.c.ordered_at >= edge_from, o.c.ordered_at < edge_to),
        ).subquery()
        n = func.sum(rows.c.n)
        if kind == "spend":
            # Float sums of whole cents are exact (below 2**53) and far lighter than numeric.
            match = self._numeric(func.sum(cast(rows.c.cents, Float)), _in_cents(cond))
        else:
            match = self._numeric(n, cond)
        sub = select(rows.c.cid).group_by(rows.c.cid)
        if self._holds_at_zero(cond):
            # NOT EXISTS over the aggregate (an anti-join), never NOT IN (NULL-unsafe, and
            # PostgreSQL falls back to a per-row scan when the list outgrows work_mem).
            failing = sub.having(and_(n > 0, not_(match))).subquery()
            return ~exists().where(failing.c.cid == c.c.id)
        return c.c.id.in_(sub.having(and_(n > 0, match)))

    # ---------------------------------------------------------------- fields
    def _f_tag(self, cond: Condition) -> ColumnElement[bool]:
        t = ContactTag.__table__.alias()  # aliases never auto-correlate to outer queries

        def has(tags: tuple[str, ...]) -> ColumnElement[bool]:
            return exists().where(t.c.contact_id == c.c.id, t.c.tag.in_(tags))

        if cond.op == "has":
            return has((cond.value,))
        if cond.op == "not_has":
            return not_(has((cond.value,)))
        if cond.op == "has_any":
            return has(cond.value)
        return and_(*(has((tag,)) for tag in cond.value))

    def _f_tier(self, cond: Condition) -> ColumnElement[bool]:
        # Plain IN on the column (no COALESCE) so the planner sees its statistics; members
        # without stats (never recomputed) are dormant.
        values = (cond.value,) if cond.op in ("eq", "ne") else tuple(cond.value)
        if cond.op in ("ne", "not_in"):
            values = tuple(t for t in TIERS if t not in values)
        if not values:
            return false()
        match = s.c.tier.in_(values)
        return or_(s.c.tier.is_(None), match) if "dormant" in values else match

    def _f_needs_care(self, cond: Condition) -> ColumnElement[bool]:
        col = s.c.needs_care
        return col.is_(True) if cond.value else or_(col.is_(None), col.is_(False))

    def _f_language(self, cond: Condition) -> ColumnElement[bool]:
        return self._choice(c.c.language, cond)

    def _f_platform(self, cond: Condition) -> ColumnElement[bool]:
        i = ContactIdentity.__table__.alias()
        values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
        found = exists().where(i.c.contact_id == c.c.id, i.c.platform.in_(values))
        return not_(found) if cond.op == "not_in" else found

    def _f_group(self, cond: Condition) -> ColumnElement[bool]:
        if self.group_table is None:
            raise CrmError(
                "rule field 'group' needs a group membership table (community_members or "
                "group_members, created by the community module), which this database does "
                "not have yet"
            )
        name, group_col = self.group_table
        gm = table(name, column(group_col), column("contact_id"), column("status"))
        found = exists().where(
            gm.c.contact_id == c.c.id,
            gm.c[group_col].in_(cond.value),
            or_(gm.c.status.is_(None), gm.c.status.not_in(GROUP_MEMBER_GONE)),
        )
        return not_(found) if cond.op == "not_member_of" else found

    def _f_birthday_month(self, cond: Condition) -> ColumnElement[bool]:
        return self._choice(p.c.birth_month, cond)

    def _f_last_purchase_days(self, cond: Condition) -> ColumnElement[bool]:
        # days since >= N  <=>  last_order_at <= now - N (comparisons flip).
        col = s.c.last_order_at
        if cond.op == "between":
            return and_(col <= self._cutoff(cond.value[0]), col >= self._cutoff(cond.value[1]))
        flipped = {"gt": "lt", "gte": "lte", "lt": "gt", "lte": "gte", "eq": "eq", "ne": "ne"}
        if cond.op in ("eq", "ne"):
            day_start = self._cutoff(cond.value + 1)
            day_end = self._cutoff(cond.value)
            inside = and_(col > day_start, col <= day_end)
            return inside if cond.op == "eq" else and_(col.is_not(None), not_(inside))
        return _CMP[flipped[cond.op]](col, self._cutoff(cond.value))  # type: ignore[no-any-return]

    def _stat(self, col: Any, cond: Condition) -> ColumnElement[bool]:
        """A stats column where a missing row means 0 (no COALESCE: keeps estimates)."""
        match = self._numeric(col, cond)
        return or_(col.is_(None), match) if self._holds_at_zero(cond) else match

    def _f_spend(self, cond: Condition) -> ColumnElement[bool]:
        if cond.within_days:
            return self._aggregate_window(cond, "spend")
        return self._stat(s.c.total_spend, cond)

    def _f_orders(self, cond: Condition) -> ColumnElement[bool]:
        if cond.within_days:
            return self._aggregate_window(cond, "orders")
        return self._stat(s.c.order_count, cond)

    def _f_spend_90d(self, cond: Condition) -> ColumnElement[bool]:
        return self._stat(s.c.spend_90d, cond)

    def _f_spend_365d(self, cond: Condition) -> ColumnElement[bool]:
        return self._stat(s.c.spend_365d, cond)

    def _f_orders_90d(self, cond: Condition) -> ColumnElement[bool]:
        return self._stat(s.c.orders_90d, cond)

    def _f_orders_365d(self, cond: Condition) -> ColumnElement[bool]:
        return self._stat(s.c.orders_365d, cond)

    def _f_koc_score(self, cond: Condition) -> ColumnElement[bool]:
        return self._stat(s.c.koc_score, cond)

    def _f_ltv(self, cond: Condition) -> ColumnElement[bool]:
        return self._stat(s.c.ltv, cond)

    def _f_member_level(self, cond: Condition) -> ColumnElement[bool]:
        return self._choice(p.c.member_level, cond)

    def _f_home_store(self, cond: Condition) -> ColumnElement[bool]:
        return self._choice(p.c.home_store, cond)

    def _f_consent(self, cond: Condition) -> ColumnElement[bool]:
        expr = p.c.marketing_consent
        return expr.is_(True) if cond.value else or_(expr.is_(None), expr.is_(False))

    def _f_member_days(self, cond: Condition) -> ColumnElement[bool]:
        col = c.c.created_at
        if cond.op == "between":
            return and_(col <= self._cutoff(cond.value[0]), col >= self._cutoff(cond.value[1]))
        flipped = {"gt": "lt", "gte": "lte", "lt": "gt", "lte": "gte"}
        if cond.op in ("eq", "ne"):
            inside = and_(col > self._cutoff(cond.value + 1), col <= self._cutoff(cond.value))
            return inside if cond.op == "eq" else not_(inside)
        return _CMP[flipped[cond.op]](col, self._cutoff(cond.value))  # type: ignore[no-any-return]

    def _f_message(self, cond: Condition) -> ColumnElement[bool]:
        m = Message.__table__.alias()
        text = func.lower(m.c.text)
        likes = [text.like(f"%{_escape_like(k.lower())}%", escape="\\") for k in cond.value]
        where = [m.c.contact_id == c.c.id, m.c.direction == MessageDirection.IN.value,
                 or_(*likes)]
        if cond.within_days:
            where.append(m.c.created_at >= self._cutoff(cond.within_days))
        return exists().where(*where)

    def _event(self, cond: Condition, e: Any, *where: Any) -> ColumnElement[bool]:
        clauses = [e.c.contact_id == c.c.id, *where]
        if cond.within_days:
            clauses.append(e.c.created_at >= self._cutoff(cond.within_days))
        found = exists().where(*clauses)
        return not_(found) if cond.op == "not_has" else found

    def _f_event(self, cond: Condition) -> ColumnElement[bool]:
        e = MemberEvent.__table__.alias()
        return self._event(cond, e, e.c.kind == cond.value)

    def _f_intent(self, cond: Condition) -> ColumnElement[bool]:
        e = MemberEvent.__table__.alias()
        return self._event(cond, e, e.c.kind == "intent",
                           e.c.data["intent"].as_string() == cond.value)

    def _f_contact_id(self, cond: Condition) -> ColumnElement[bool]:
        return c.c.id.in_(cond.value) if cond.op == "in" else c.c.id.not_in(cond.value)


def describe_fields() -> str:
    """One line per field: name, operators, meaning (for --help and errors)."""
    return "\n".join(
        f"  {name:<19} {'|'.join(spec.ops):<32} {spec.help}"
        + (" [within_days]" if spec.within_days else "")
        for name, spec in FIELDS.items()
    )
