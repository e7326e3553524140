"""Live "spend / orders within N days" from the order-month rollup (crm_order_months plus
the raw orders of the cutoff's partial month) must equal a brute-force count over the
orders, to the cent, for cutoffs early, late and exactly on a month start; after imports,
a merge, a contact deletion and a rebuild. Runs on SQLite and (when reachable) PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import delete, func, select

from crm import CrmService, rollup
from crm.members import merge_contacts
from models import Database
from models.contact import Contact
from models.crm import Order, OrderMonth
from tests.crm.conftest import NOW, identity, write

# Windows whose cutoff (NOW - days; NOW is 2025-06-01 03:00 UTC) falls just after a month
# start (subtract the month's first hours), late in a month (add its last days), exactly
# on a month start (no edge), in the middle, and fractional days.
WINDOWS = [0.5, 1, 1 + 3 / 24, 7, 16, 17, 29.6, 30, 31 + 3 / 24, 45.7, 90, 120, 200, 400]

RULES = [
    ("spend", "gte", 200.0),
    # One member spent 0.10 + 0.19 (a float sum says 0.29000000000000004, and 0.29 * 100 is
    # 28.999999999999996): exactly 0.29 must match all three.
    ("spend", "gte", 0.29),
    ("spend", "lte", 0.29),
    ("spend", "eq", 0.29),
    ("spend", "lt", 1000.0),  # zero matches: members without orders in the window count
    ("spend", "eq", 0.0),
    ("spend", "between", [100.0, 5000.0]),
    ("spend", "gt", 1234.56),
    ("orders", "gte", 2),
    ("orders", "eq", 0),
    ("orders", "lt", 3),
    ("orders", "between", [1, 4]),
]

OPS = {
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}


def _orders(members: list[str]) -> list[tuple[str, str, datetime, Decimal]]:
    """(order id, member key, ordered_at, amount): random plus hand-picked edge cases."""
    rng = random.Random(20250601)
    out: list[tuple[str, str, datetime, Decimal]] = []
    start = datetime(2024, 3, 1, tzinfo=UTC)
    span = (NOW + timedelta(days=3) - start).total_seconds()  # a few future orders too
    for i in range(160):
        who = rng.choice(members[:-2])  # the last never buys, the one before only below
        when = start + timedelta(seconds=int(rng.random() * span))
        amount = Decimal(rng.randrange(1, 300_000)) / 100
        out.append((f"R{i}", who, when, amount))
    m = members[0]
    for days in WINDOWS:  # orders exactly on each cutoff (inside: ordered_at >= cutoff)
        out.append((f"CUT{days}", m, NOW - timedelta(days=days), Decimal("12.34")))
        out.append((f"PRE{days}", m, NOW - timedelta(days=days, microseconds=1),
                    Decimal("0.01")))
    for month in (3, 4, 5, 6):  # on and just before month starts
        first = datetime(2025, month, 1, tzinfo=UTC)
        out.append((f"M{month}", members[1], first, Decimal("100.00")))
        out.append((f"M{month}-", members[1], first - timedelta(microseconds=1),
                    Decimal("0.99")))
    out.append(("F1", members[-2], NOW - timedelta(days=5), Decimal("0.10")))
    out.append(("F2", members[-2], NOW - timedelta(days=4), Decimal("0.19")))
    return out


def _expected(orders: list[tuple[str, int, datetime, Decimal]], contacts: list[int],
              field: str, op: str, value: object, days: float) -> list[int]:
    cutoff = NOW - timedelta(days=days)
    spend = dict.fromkeys(contacts, Decimal(0))
    count = dict.fromkeys(contacts, 0)
    for _, cid, when, amount in orders:
        if when >= cutoff:
            spend[cid] += amount
            count[cid] += 1
    out = []
    for cid in contacts:
        actual = spend[cid] if field == "spend" else count[cid]
        if op == "between":
            low, high = (Decimal(repr(v)) for v in value)  # type: ignore[attr-defined]
            hit = low <= actual <= high
        else:
            hit = OPS[op](actual, Decimal(repr(value)))
        if hit:
            out.append(cid)
    return out


async def _check(crm: CrmService, orders: list[tuple[str, int, datetime, Decimal]],
                 contacts: list[int]) -> None:
    for days in WINDOWS:
        for field, op, value in RULES:
            rule = {"field": field, "op": op, "value": value, "within_days": days}
            want = _expected(orders, contacts, field, op, value, days)
            got = [x async for x in crm.segments.resolve(rule, now=NOW, batch=1000)]
            assert got == want, (rule, sorted(set(got) ^ set(want)))
            count = await crm.segments.count(rule, now=NOW)
            assert count.matching == len(want), rule


async def _rollup_matches_orders(db: Database) -> None:
    """The rollup holds exactly what a GROUP BY over the orders gives."""
    async with db.session() as session:
        rows = (await session.execute(select(Order.contact_id, Order.ordered_at,
                                             Order.amount))).all()
        stored = {(r.contact_id, r.month): (r.orders, r.spend_cents) for r in
                  (await session.execute(select(OrderMonth))).scalars()}
    want: dict[tuple[int, int], tuple[int, int]] = {}
    for cid, when, amount in rows:
        key = (cid, rollup.month_index(when))
        n, cents = want.get(key, (0, 0))
        want[key] = (n + 1, cents + int(Decimal(str(amount)) * 100))
    assert stored == want


async def test_window_counts_match_the_orders(db: Database, crm: CrmService,
                                              tmp_path: Path) -> None:
    keys = [f"u{i}" for i in range(9)]
    ids = {k: await identity(db, "telegram", k, k) for k in keys}
    planned = _orders(keys)
    # Two imports: the second adds to months the first created (the rollup's upsert).
    for n, part in enumerate((planned[::2], planned[1::2])):
        lines = ["order_id,platform,platform_id,ordered_at,amount"]
        lines += [f"{oid},telegram,{who},{when.isoformat()},{amount}"
                  for oid, who, when, amount in part]
        report = await crm.import_file("orders", write(tmp_path, f"o{n}.csv",
                                                       "\n".join(lines) + "\n"), now=NOW)
        assert report.ok and report.created == len(part), report.errors[:3]
    # Re-importing the same file adds nothing (the rollup must not double count).
    again = await crm.import_file("orders", tmp_path / "o0.csv", now=NOW)
    assert again.created == 0
    orders = [(oid, ids[who], when, amount) for oid, who, when, amount in planned]
    contacts = sorted(ids.values())
    await _rollup_matches_orders(db)
    await _check(crm, orders, contacts)

    # Merge u3 into u2: the survivor's months are recomputed (both had orders, often in
    # the same months), the loser's rows go.
    survivor, loser = ids["u2"], ids["u3"]
    async with db.session() as session:
        await merge_contacts(session, survivor, loser)
    orders = [(o, survivor if c == loser else c, w, a) for o, c, w, a in orders]
    contacts.remove(loser)
    await _rollup_matches_orders(db)
    await _check(crm, orders, contacts)

    # Deleting a member takes their months with them (cascade).
    gone = ids["u4"]
    async with db.session() as session:
        await session.execute(delete(Contact).where(Contact.id == gone))
    orders = [row for row in orders if row[1] != gone]
    contacts.remove(gone)
    await _rollup_matches_orders(db)

    # A rebuild (after a bulk load) gives the same table.
    await rollup.rebuild(db)
    await _rollup_matches_orders(db)
    await _check(crm, orders, contacts)


async def test_stale_rollup_is_what_a_bulk_load_must_rebuild(db: Database, crm: CrmService
                                                              ) -> None:
    """Orders written behind the importer's back are invisible to windows until
    ``rollup.rebuild`` (the documented bulk-load step) — then they count."""
    cid = await identity(db, "telegram", "bulk", "Bulk")
    async with db.session() as session:
        session.add(Order(external_id="B1", contact_id=cid, ordered_at=NOW - timedelta(days=2),
                          amount=Decimal("50.00")))
    rule = {"field": "orders", "op": "gte", "value": 1, "within_days": 30}
    assert (await crm.segments.count(rule, now=NOW)).matching == 0
    await rollup.rebuild(db)
    assert (await crm.segments.count(rule, now=NOW)).matching == 1
    async with db.session() as session:
        months = (await session.execute(select(func.count()).select_from(OrderMonth))
                  ).scalar_one()
    assert months == 1


def test_window_months_picks_the_shorter_edge() -> None:
    # Early in May: the whole of May on, minus its first hours.
    first, lo, hi, sign = rollup.window_months(datetime(2025, 5, 2, 3, tzinfo=UTC))
    assert (first, lo, hi, sign) == (2025 * 12 + 4, datetime(2025, 5, 1, tzinfo=UTC),
                                     datetime(2025, 5, 2, 3, tzinfo=UTC), -1)
    # Late in May: June on, plus May's last days.
    first, lo, hi, sign = rollup.window_months(datetime(2025, 5, 30, tzinfo=UTC))
    assert (first, lo, hi, sign) == (2025 * 12 + 5, datetime(2025, 5, 30, tzinfo=UTC),
                                     datetime(2025, 6, 1, tzinfo=UTC), 1)
    # On a month start: no edge at all; December rolls over the year.
    first, lo, hi, _ = rollup.window_months(datetime(2024, 12, 1, tzinfo=UTC))
    assert first == 2024 * 12 + 11 and lo == hi
    assert rollup.month_start(2024 * 12 + 12) == datetime(2025, 1, 1, tzinfo=UTC)
