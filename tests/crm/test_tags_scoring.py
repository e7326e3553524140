"""Automatic tag rules and the RFM tier / LTV / KOC recompute."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from crm import CrmError, CrmService
from models import Database
from tests.crm.conftest import NOW, identity, say, write


def _orders(rows: list[tuple[str, str, int, int]]) -> str:
    """rows: (order id, telegram id, days before NOW, amount)."""
    lines = ["order_id,telegram_id,ordered_at,amount"]
    for oid, tg, days, amount in rows:
        lines.append(f"{oid},{tg},{(NOW - timedelta(days=days)).isoformat()},{amount}")
    return "\n".join(lines) + "\n"


async def test_rules_add_and_remove_tags(db: Database, crm: CrmService, tmp_path: Path) -> None:
    a = await identity(db, "telegram", "1", "A")
    b = await identity(db, "telegram", "2", "B")
    c = await identity(db, "telegram", "3", "C")
    await say(db, "telegram", "3", "Do you have anything for SENSITIVE skin?")
    await say(db, "telegram", "2", "敏感肌でも使えますか")
    await say(db, "telegram", "1", "what about 100%_off?")
    await crm.rules.add_preset("repeat-buyer")
    await crm.rules.add_preset("sensitive-skin")
    await crm.rules.create("percent", "percent", {"field": "message", "op": "contains_any",
                                                  "value": ["100%_"]})
    await crm.members.add_tag(b, "Repeat-Buyer")  # manual: rules never remove it
    await crm.import_file("orders", write(tmp_path, "o.csv", _orders([
        ("1", "1", 10, 1000), ("2", "1", 40, 2000), ("3", "2", 5, 500),
        ("4", "3", 200, 100), ("5", "3", 5, 100)])), now=NOW)
    tags = {cid: {t["tag"] for t in await crm.members.tags(cid)} for cid in (a, b, c)}
    assert tags == {a: {"repeat-buyer", "percent"}, b: {"repeat-buyer", "sensitive-skin"},
                    c: {"sensitive-skin"}}
    # 60 days later A's two orders are no longer within 90 days: the rule removes its tag.
    runs = await crm.rules.evaluate_all(now=NOW + timedelta(days=60))
    assert {r.rule: (r.added, r.removed) for r in runs}["repeat-buyer"] == (0, 1)
    assert "repeat-buyer" not in {t["tag"] for t in await crm.members.tags(a)}
    assert "repeat-buyer" in {t["tag"] for t in await crm.members.tags(b)}  # manual
    await crm.rules.delete("sensitive-skin")
    assert {t["tag"] for t in await crm.members.tags(c)} == set()
    with pytest.raises(CrmError, match="unknown field 'nope'"):
        await crm.rules.create("x", "x", {"field": "nope", "op": "eq", "value": 1})


async def test_recompute_tiers_ltv_and_koc(db: Database, crm: CrmService, tmp_path: Path) -> None:
    ids = {}
    for n in range(1, 11):
        ids[n] = await identity(db, "telegram", str(n), f"M{n}")
    never = await identity(db, "telegram", "99", "never")
    rows = []
    for n in range(1, 10):  # member n: n orders of n*1000, the last n days... ago
        for k in range(n):
            rows.append((f"{n}-{k}", str(n), 100 - n * 10 + k, n * 1000))
    rows.append(("old", "10", 500, 99999))  # member 10: one order, 500 days ago
    await crm.import_file("orders", write(tmp_path, "o.csv", _orders(rows)), now=NOW)
    await crm.members.record_helpful_answer(ids[9])
    await crm.members.record_feedback(ids[9], positive=True)
    result = await crm.scoring.recompute(now=NOW)
    assert result.members == 11
    assert result.tiers["dormant"] == 2  # member 10 (500 days) and the never-buyer
    top = await crm.members.profile(ids[9])
    assert top.tier == "best" and top.rfm["r"] == 5 and top.rfm["f"] == 5
    assert top.koc_score == pytest.approx(3 + 2)
    aov = 9000.0
    assert top.ltv["avg_order_value"] == pytest.approx(aov)
    # 9 orders; first order 18 days ago -> tenure floored at 90 days.
    assert top.ltv["purchases_per_year"] == pytest.approx(9 * 365.25 / 90, rel=1e-3)
    assert top.ltv["expected_years"] == 5.0
    assert top.ltv["ltv"] == pytest.approx(aov * 9 * 365.25 / 90 * 5, rel=1e-3)
    low = await crm.members.profile(ids[1])
    assert low.tier == "regular" and low.rfm == {"r": 1, "f": 1, "m": 1, "recency_days": 90}
    assert (await crm.members.profile(never)).tier == "dormant"
    assert (await crm.members.profile(ids[10])).ltv["expected_years"] == 0.5
    assert await crm.needs_senior(ids[9])  # best tier goes to a senior advisor
