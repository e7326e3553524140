"""CSV import: encodings, matching, validation report, idempotent re-import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm import CrmService
from models import Database
from models.crm import MemberProfile, Order
from tests.crm.conftest import NOW, identity, write

CUSTOMERS = """customer_id,name,email,phone,birthday,member_level,favourite_products,home_store,consent,telegram_id
C001,山田 花子,Hanako@Example.com,090-1234-5678,1990-06-01,gold,化粧水|乳液,渋谷店,yes,
C002,Li Wei,li@example.cn,+86 138 0000 0000,06-15,silver,,上海店,no,
C003,Tom,tom@example.com,,,,,,,555
"""
ORDERS = """order_id,customer_id,email,phone,ordered_at,amount,currency,store,items
O-1,C001,,,2025-05-01 10:00,"3,300",JPY,渋谷店,化粧水
O-2,,hanako@example.com,,2025/05/20,"¥5,500",JPY,,
O-3,,,+81 90 1234 5678,2025-05-30,1200,JPY,,
O-4,C002,,,2024-01-10,800.50,CNY,,
"""


async def _count_orders(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def test_import_customers_then_orders_is_idempotent(db: Database, crm: CrmService,
                                                          tmp_path: Path) -> None:
    tg = await identity(db, "telegram", "555", "tom-tg")
    report = await crm.import_file("customers", write(tmp_path, "c.csv", CUSTOMERS), now=NOW)
    assert report.ok, report.errors
    assert (report.created, report.updated) == (2, 1)  # Tom matched by his telegram id
    async with db.session() as session:
        tom = await session.get(MemberProfile, tg)
        assert tom is not None and tom.shop_customer_id == "C003"
        hanako = (await session.execute(select(MemberProfile).where(
            MemberProfile.shop_customer_id == "C001"))).scalar_one()
        assert hanako.email == "hanako@example.com" and hanako.phone == "+819012345678"
        assert (hanako.birth_month, hanako.birth_day) == (6, 1)
        assert hanako.favourite_products == ["化粧水", "乳液"]
    again = await crm.import_file("customers", write(tmp_path, "c.csv", CUSTOMERS), now=NOW)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)

    orders = write(tmp_path, "o.csv", ORDERS)
    first = await crm.import_file("orders", orders, now=NOW)
    assert first.ok, first.errors
    assert first.created == 4 and await _count_orders(db) == 4
    second = await crm.import_file("orders", orders, now=NOW)
    assert (second.created, second.unchanged) == (0, 4)
    assert await _count_orders(db) == 4  # the same order twice counts once
    async with db.session() as session:
        amounts = dict((await session.execute(select(Order.external_id, Order.amount))).all())
    assert float(amounts["O-2"]) == 5500 and float(amounts["O-4"]) == 800.5


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932", "gb18030"])
async def test_encodings(sqlite_db: Database, tmp_path: Path, encoding: str) -> None:
    crm = CrmService(db=sqlite_db)
    name = "山田 花子" if encoding != "gb18030" else "李伟 张三"
    text = f"顧客ID,氏名,メールアドレス\nC9,{name},x@example.com\n"
    if encoding == "gb18030":
        text = f"客户ID,姓名,邮箱\nC9,{name},x@example.com\n"
    report = await crm.import_file("customers", write(tmp_path, "e.csv", text, encoding))
    assert report.ok, report.errors
    profile = await crm.members.profile(await crm.members.find("shop:C9"))
    assert profile.display_name == name


async def test_bad_file_reports_lines_and_imports_nothing(db: Database, crm: CrmService,
                                                          tmp_path: Path) -> None:
    await crm.import_file("customers", write(tmp_path, "c.csv", CUSTOMERS))
    bad = """order_id,customer_id,ordered_at,amount
A1,C001,2025-02-30,100
A2,C001,2025-03-01,-5
A3,C404,2025-03-01,100
A4,C001,2025-03-01,100
A4,C001,2025-03-01,999
A5,C001,2025-03-02,100
"""
    report = await crm.import_file("orders", write(tmp_path, "bad.csv", bad))
    assert not report.ok
    messages = [str(e) for e in report.errors]
    assert any(m.startswith("line 2: order date: impossible date") for m in messages)
    assert any(m.startswith("line 3: amount: negative amount") for m in messages)
    assert any(m.startswith("line 6: order A4 also on line 5") for m in messages)
    assert "nothing was imported" in report.summary()
    assert await _count_orders(db) == 0
    # Unknown members are found in the second (database) pass: still nothing written.
    unknown = "order_id,customer_id,ordered_at,amount\nB1,C001,2025-03-01,100\nB2,C404,2025-03-01,1\n"
    report = await crm.import_file("orders", write(tmp_path, "u.csv", unknown))
    assert [str(e) for e in report.errors] == [
        "line 3: unknown member customer id 'C404': import customers first"]
    assert await _count_orders(db) == 0


async def test_identical_duplicate_rows_count_once_and_dry_run(db: Database, crm: CrmService,
                                                              tmp_path: Path) -> None:
    await crm.import_file("customers", write(tmp_path, "c.csv", CUSTOMERS))
    dup = "order_id,customer_id,ordered_at,amount\nD1,C001,2025-03-01,100\nD1,C001,2025-03-01,100\n"
    dry = await crm.import_file("orders", write(tmp_path, "d.csv", dup), dry_run=True)
    assert dry.ok and dry.created == 1 and dry.duplicates == 1
    assert await _count_orders(db) == 0
    real = await crm.import_file("orders", write(tmp_path, "d.csv", dup))
    assert real.created == 1 and await _count_orders(db) == 1
    assert "line 3: order D1 repeats line 2; counted once" in [str(w) for w in real.warnings]


async def test_undecodable_and_missing_columns(sqlite_db: Database, tmp_path: Path) -> None:
    crm = CrmService(db=sqlite_db)
    path = tmp_path / "bin.csv"
    path.write_bytes(b"order_id,amount\n\xff\xfe\x00\x81\n")
    report = await crm.import_file("orders", path)
    assert not report.ok and "encoding" in str(report.errors[0])
    report = await crm.import_file("orders", write(tmp_path, "m.csv", "order_id,x\n1,2\n"))
    assert str(report.errors[0]) == "line 1: missing column(s): ordered_at, amount"
