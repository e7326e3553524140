"""Coupons: validation, limits, windows, and 'once' under concurrent requests (SQLite + PG)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from community.coupons import CouponService
from community.errors import CommunityError, CouponError
from models import Database
from models.community import CouponCampaign, CouponCode, CouponIssue, CouponRedemption
from models.repositories import ContactRepository
from tests.community.conftest import T0


async def contacts(db: Database, n: int) -> list[int]:
    out = []
    async with db.session() as s:
        for i in range(n):
            ident, _ = await ContactRepository(s).identify("telegram", f"c{i}")
            out.append(ident.contact_id)
    return out


async def count(db: Database, model: type) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_bad_campaigns_are_refused_and_nothing_stored(sqlite_db: Database):
    c = CouponService(db=sqlite_db)
    for kwargs in (
        {"name": "bad name!"}, {"name": "x", "kind": "lottery"},
        {"name": "x", "kind": "shared"}, {"name": "x", "kind": "unique", "shared_code": "A"},
        {"name": "x", "per_member_limit": 0},
        {"name": "x", "valid_from": T0, "valid_until": T0 - timedelta(days=1)},
    ):
        with pytest.raises(CommunityError):
            await c.create_campaign(**kwargs)
    assert await count(sqlite_db, CouponCampaign) == 0
    await c.create_campaign("spring", kind="shared", shared_code="spring10")
    with pytest.raises(CommunityError, match="already exists"):
        await c.create_campaign("spring", kind="unique")
    with pytest.raises(CommunityError, match="already in use"):
        await c.create_campaign("spring2", kind="shared", shared_code="SPRING10")
    assert await count(sqlite_db, CouponCampaign) == 1


async def test_issue_limits_windows_and_idempotent_keys(sqlite_db: Database):
    now = [T0]
    c = CouponService(db=sqlite_db, now=lambda: now[0])
    [a, b] = await contacts(sqlite_db, 2)
    await c.create_campaign("vip", per_member_limit=2, total_limit=3, code_prefix="vip",
                            valid_until=T0 + timedelta(days=7))
    first = await c.issue("vip", a, issue_key="drop-row:1")
    again = await c.issue("vip", a, issue_key="drop-row:1")
    assert first.code == again.code and first.new and not again.new
    assert first.code.startswith("VIP-")
    await c.issue("vip", a)
    with pytest.raises(CouponError) as e:
        await c.issue("vip", a)
    assert e.value.reason == "limit"
    await c.issue("vip", b)
    with pytest.raises(CouponError) as e:
        await c.issue("vip", b)
    assert e.value.reason == "sold_out"
    now[0] = T0 + timedelta(days=8)
    with pytest.raises(CouponError) as e:
        await c.issue("vip", b, issue_key="late")
    assert e.value.reason == "expired"
    with pytest.raises(CouponError) as e:
        await c.redeem(first.code)
    assert e.value.reason == "expired"


async def test_shared_code_redeemed_once_per_reference(sqlite_db: Database):
    c = CouponService(db=sqlite_db)
    [a] = await contacts(sqlite_db, 1)
    await c.create_campaign("summer", kind="shared", shared_code="SUMMER", per_member_limit=1)
    assert (await c.issue("summer", a)).code == "SUMMER"
    with pytest.raises(CouponError, match="reference"):
        await c.redeem("summer")
    await c.redeem("summer", reference="order-1")
    await c.redeem("summer", reference="order-2")
    with pytest.raises(CouponError) as e:
        await c.redeem("SUMMER", reference="order-1")
    assert e.value.reason == "already_redeemed"
    with pytest.raises(CouponError) as e:
        await c.redeem("NOSUCH")
    assert e.value.reason == "unknown"


async def test_concurrent_issue_and_redeem_never_double(db: Database):
    """Many tasks on separate connections race; constraints decide (SQLite and PostgreSQL)."""
    c = CouponService(db=db)
    members = await contacts(db, 5)
    await c.create_campaign("race", per_member_limit=2)

    async def issue(contact: int) -> str | None:
        try:
            return (await c.issue("race", contact)).code
        except CouponError:
            return None

    results = await asyncio.gather(*(issue(m) for m in members for _ in range(8)))
    codes = [r for r in results if r]
    assert len(codes) == 10 and len(set(codes)) == 10  # 2 per member, all distinct
    async with db.session() as s:
        per_member = dict((await s.execute(
            select(CouponIssue.contact_id, func.count()).group_by(CouponIssue.contact_id)
        )).all())
    assert set(per_member.values()) == {2}
    assert await count(db, CouponCode) == 10

    async def redeem(code: str) -> bool:
        try:
            await c.redeem(code, by="test")
            return True
        except CouponError as exc:
            assert exc.reason == "already_redeemed"
            return False

    outcomes = await asyncio.gather(*(redeem(codes[0]) for _ in range(12)),
                                    *(redeem(codes[1]) for _ in range(12)))
    assert sum(outcomes) == 2
    assert await count(db, CouponRedemption) == 2


async def test_concurrent_same_issue_key_gives_one_code(db: Database):
    c = CouponService(db=db)
    [a] = await contacts(db, 1)
    await c.create_campaign("key", per_member_limit=5)
    results = await asyncio.gather(*(c.issue("key", a, issue_key="outbox:7") for _ in range(10)))
    assert len({r.code for r in results}) == 1 and sum(r.new for r in results) == 1


async def test_api_keys_are_hashed(sqlite_db: Database):
    c = CouponService(db=sqlite_db)
    key = await c.create_api_key("pos")
    assert await c.check_api_key(key, "coupons:redeem") == "pos"
    assert await c.check_api_key(key, "admin") is None
    assert await c.check_api_key(key + "x", "coupons:redeem") is None
    from models.community import ApiKey

    async with sqlite_db.session() as s:
        row = (await s.execute(select(ApiKey))).scalar_one()
    assert key not in (row.key_hash, row.prefix + "…") and len(row.key_hash) == 64
    await c.revoke_api_key("pos")
    assert await c.check_api_key(key, "coupons:redeem") is None
