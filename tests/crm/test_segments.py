"""Segment rules: validation, one-query counts, samples, streamed resolve, group_members."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from crm import CrmError, CrmService
from crm.rules import parse_rule
from models import Database
from tests.crm.conftest import NOW, identity, write


@pytest.mark.parametrize(("rule", "message"), [
    ({"field": "tierr", "op": "eq", "value": "best"}, "rule (top): unknown field 'tierr'"),
    ({"field": "tier", "op": "like", "value": "best"}, "rule op: unknown operator 'like' for tier"),
    ({"field": "tier", "op": "eq", "value": "gold"}, "rule value: unknown tier 'gold'"),
    ({"all": [{"field": "spend", "op": ">=", "value": "lots"}]},
     "rule all[0].value: expected a number"),
    ({"field": "spend", "op": "gte", "value": 1, "colour": "red"}, "unknown key(s) ['colour']"),
    ({"field": "tier", "op": "eq", "value": "best", "within_days": 3},
     "tier does not take within_days"),
    ({"any": [{"not": {"field": "birthday_month", "op": "in", "value": [13]}}]},
     "rule any[0].not.value[0]: expected a month 1-12"),
    ({"field": "spend", "op": "between", "value": [5, 1]}, "low 5.0 is above high 1.0"),
    ([1], "expected an object"),
])
def test_validation_errors_name_the_place(rule: object, message: str) -> None:
    with pytest.raises(CrmError) as err:
        parse_rule(rule)
    assert message in str(err.value)


async def test_segment_predicates_count_sample_resolve(db: Database, crm: CrmService,
                                                      tmp_path: Path) -> None:
    a = await identity(db, "telegram", "1", "A", language="ja")
    b = await identity(db, "telegram", "2", "B", language="en")
    c = await identity(db, "webchat", "w3", "C", language="ja")
    d = await identity(db, "telegram", "4", "D", language="zh")
    await crm.members.update_profile(a, birth_month=6, birth_day=1, member_level="gold")
    await crm.members.update_profile(c, birth_month=6, birth_day=9, home_store="Shibuya")
    await crm.members.add_tag(a, "vip")
    await crm.members.add_tag(c, "vip")
    rows = ["order_id,platform,platform_id,ordered_at,amount",
            f"1,telegram,1,{(NOW - timedelta(days=3)).isoformat()},30000",
            f"2,telegram,1,{(NOW - timedelta(days=40)).isoformat()},20000",
            f"3,telegram,2,{(NOW - timedelta(days=200)).isoformat()},500",
            f"4,webchat,w3,{(NOW - timedelta(days=10)).isoformat()},8000"]
    await crm.import_file("orders", write(tmp_path, "o.csv", "\n".join(rows) + "\n"), now=NOW)
    await crm.scoring.recompute(now=NOW)

    async def ids(rule: dict) -> list[int]:
        return [x async for x in crm.segments.resolve(rule, now=NOW, batch=2)]

    assert await ids({"field": "tag", "op": "has", "value": "vip"}) == [a, c]
    assert await ids({"field": "tag", "op": "not_has", "value": "vip"}) == [b, d]
    assert await ids({"field": "language", "op": "in", "value": ["ja", "zh"]}) == [a, c, d]
    assert await ids({"field": "platform", "op": "eq", "value": "webchat"}) == [c]
    assert await ids({"field": "birthday_month", "op": "eq", "value": 6}) == [a, c]
    assert await ids({"field": "last_purchase_days", "op": "lte", "value": 30}) == [a, c]
    assert await ids({"field": "last_purchase_days", "op": "gt", "value": 30}) == [b]
    assert await ids({"field": "spend", "op": "gte", "value": 50000}) == [a]
    assert await ids({"field": "spend", "op": "gte", "value": 20000, "within_days": 30}) == [a]
    # zero matches "< 1000 within 30 days": non-buyers included
    assert await ids({"field": "spend", "op": "lt", "value": 1000, "within_days": 30}) == [b, d]
    assert await ids({"field": "orders", "op": "eq", "value": 0}) == [d]
    assert await ids({"field": "spend_90d", "op": "gte", "value": 50000}) == [a]
    assert await ids({"field": "orders_365d", "op": "eq", "value": 1}) == [b, c]
    assert await ids({"field": "orders_90d", "op": "lt", "value": 1}) == [b, d]
    assert await ids({"field": "tier", "op": "eq", "value": "dormant"}) == [d]
    assert await ids({"field": "member_level", "op": "ne", "value": "gold"}) == [b, c, d]
    assert await ids({"all": [{"field": "tag", "op": "has", "value": "vip"},
                              {"not": {"field": "platform", "op": "eq", "value": "webchat"}}]}
                     ) == [a]
    seg = await crm.segments.create("june-vips", '{"all": [{"field": "tag", "op": "has", '
                                    '"value": "vip"}, {"field": "birthday_month", "op": "eq", '
                                    '"value": 6}]}')
    assert seg.name == "june-vips"
    await crm.members.opt_out(c)
    count = await crm.segments.count("june-vips", now=NOW)
    assert (count.matching, count.marketable) == (2, 1)
    assert [m.contact_id for m in await crm.segments.sample("june-vips")] == [a]
    assert await ids({"field": "tag", "op": "has", "value": "vip"}) == [a]
    with pytest.raises(CrmError, match="exists"):
        await crm.segments.create("june-vips", {"all": []})
    with pytest.raises(CrmError, match="not valid JSON"):
        await crm.segments.create("broken", "{nope")
    await crm.segments.delete("june-vips")
    assert await crm.segments.list_segments() == []


async def test_group_field_uses_the_membership_table(tmp_path: Path) -> None:
    # A database without the community module's tables (migrated only up to 0003_crm).
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/groups.db")
    await db.upgrade("0003_crm")
    crm = CrmService(db=db)
    try:
        a = await identity(db, "telegram", "1", "A")
        b = await identity(db, "telegram", "2", "B")
        rule = {"field": "group", "op": "member_of", "value": [7]}
        with pytest.raises(CrmError, match="needs a group membership table"):
            await crm.segments.create("in-group", rule)
        async with db.session() as session:
            await session.execute(text("CREATE TABLE group_members (chat_id INTEGER, "
                                       "contact_id INTEGER, status VARCHAR(16))"))
            await session.execute(text(f"INSERT INTO group_members VALUES (7, {a}, 'member'), "
                                       f"(7, {b}, 'left')"))
        crm.segments.forget_schema()  # the table appeared: look again
        await crm.segments.create("in-group", rule)
        assert [x async for x in crm.segments.resolve("in-group")] == [a]
        async with db.session() as session:  # the community module's table wins
            await session.execute(text("CREATE TABLE community_members (group_id INTEGER, "
                                       "contact_id INTEGER, status VARCHAR(16))"))
            await session.execute(text(f"INSERT INTO community_members VALUES (7, {b}, "
                                       "'member')"))
        crm.segments.forget_schema()
        assert [x async for x in crm.segments.resolve("in-group")] == [b]
        not_in = {"field": "group", "op": "not_member_of", "value": 7}
        assert [x async for x in crm.segments.resolve(not_in)] == [a]
    finally:
        await db.dispose()
