"""Profiles, link codes (merge), opt-out, needs_senior and the advisor panel."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm import CrmError, CrmService
from models import Database
from models.contact import Contact, ContactIdentity
from models.conversation import Message
from models.crm import MemberProfile
from tests.crm.conftest import NOW, identity, say, write


async def test_link_code_merges_identities_and_keeps_history(db: Database, crm: CrmService,
                                                             tmp_path: Path) -> None:
    tg = await identity(db, "telegram", "100", "Hanako")
    web = await identity(db, "webchat", "visitor-1")
    await say(db, "telegram", "100", "hello from telegram")
    await say(db, "webchat", "visitor-1", "hello from the web")
    await crm.members.add_tag(web, "vip")
    await crm.members.add_tag(tg, "vip")
    await crm.members.update_profile(web, email="h@example.com", birth_month=6, birth_day=1)
    await crm.members.opt_out(web, reason="too many messages")
    await crm.import_file("orders", write(tmp_path, "o.csv",
                                          "order_id,webchat_id,ordered_at,amount\n"
                                          "W1,visitor-1,2025-05-01,1000\n"), now=NOW)

    code = await crm.members.issue_link_code("telegram", "100")
    result = await crm.members.redeem_link_code(code.lower(), "webchat", "visitor-1")
    assert (result.contact_id, result.merged_contact_id) == (tg, web)

    async with db.session() as session:
        assert await session.get(Contact, web) is None
        platforms = set((await session.execute(select(ContactIdentity.platform).where(
            ContactIdentity.contact_id == tg))).scalars())
        assert platforms == {"telegram", "webchat"}
        assert await session.scalar(select(func.count()).select_from(Message).where(
            Message.contact_id == tg)) == 2
        profile = await session.get(MemberProfile, tg)
        assert profile is not None and profile.email == "h@example.com"
    view = await crm.members.profile(tg)
    assert [t["tag"] for t in view.tags] == ["vip"]
    assert [o.external_id for o in view.recent_orders] == ["W1"]
    assert not view.marketable  # an opt-out on either account is honoured

    with pytest.raises(CrmError, match="already used"):
        await crm.members.redeem_link_code(code, "webchat", "visitor-1")


async def test_link_code_errors(db: Database, crm: CrmService) -> None:
    code = await crm.members.issue_link_code("telegram", "1", now=NOW)
    with pytest.raises(CrmError, match="other account"):
        await crm.members.redeem_link_code(code, "telegram", "1", now=NOW)
    with pytest.raises(CrmError, match="expired"):
        await crm.members.redeem_link_code(code, "webchat", "2", now=NOW + timedelta(hours=1))
    with pytest.raises(CrmError, match="unknown link code"):
        await crm.members.redeem_link_code("NOPE1234", "webchat", "2")
    same = await identity(db, "telegram", "1")
    result = await crm.members.redeem_link_code(code, "webchat", "2", now=NOW)
    assert result.contact_id == same and result.merged_contact_id is not None


async def test_opt_out_and_opt_in(db: Database, crm: CrmService) -> None:
    cid = await identity(db, "telegram", "7", "A")
    assert await crm.is_marketable(cid)
    await crm.opt_out(cid, reason="stop")
    assert not await crm.is_marketable(cid)
    count = await crm.segments.count({"all": []})
    assert (count.matching, count.marketable) == (1, 0)
    assert [x async for x in crm.segments.resolve({"all": []})] == []
    await crm.members.opt_in(cid)
    assert await crm.is_marketable(cid)
    assert [x async for x in crm.segments.resolve({"all": []})] == [cid]


async def test_find_profile_and_needs_senior(db: Database, crm: CrmService) -> None:
    cid = await identity(db, "telegram", "8", "B")
    await crm.members.update_profile(cid, phone="090-1111-2222", email="B@Example.com",
                                     shop_customer_id="S8", timezone="Asia/Shanghai")
    for ref in (str(cid), "telegram:8", "shop:S8", "b@example.com", "+81 90 1111 2222"):
        assert await crm.members.find(ref) == cid
    with pytest.raises(CrmError, match="no member"):
        await crm.members.find("telegram:nobody")
    with pytest.raises(CrmError, match="time zone"):
        await crm.members.update_profile(cid, timezone="Mars/Base")
    assert not await crm.needs_senior(cid)
    await crm.members.record_complaint(cid, "late delivery")
    assert await crm.needs_senior(cid)
    result = await crm.scoring.recompute()
    assert result.needs_care == 1
    assert (await crm.members.profile(cid)).needs_care
