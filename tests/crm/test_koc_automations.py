"""Referral attribution and rewards, leaderboard; sequences and birthday automations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from crm import CrmError, CrmService
from crm.automations import validate_sequence
from models import Database
from models.contact import ContactIdentity
from models.repositories import ContactRepository
from tests.crm.conftest import NOW, FakeIssuer, FakeSender, identity, write


async def _start(db: Database, platform: str, external_id: str, payload: str) -> int:
    async with db.session() as session:
        repo = ContactRepository(session)
        ident, _ = await repo.identify(platform, external_id)
        await repo.record_start(ident, payload)
        return ident.contact_id


async def test_referrals_rewards_and_leaderboard(db: Database, crm: CrmService,
                                                 issuer: FakeIssuer, tmp_path: Path) -> None:
    koc = await identity(db, "telegram", "1", "Koc")
    other = await identity(db, "telegram", "2", "Helper")
    payload = await crm.koc.invite_code(koc)
    assert payload.startswith("ref-") and await crm.koc.invite_code(koc) == payload
    assert (await crm.koc.invite_link(koc)).endswith(f"?start={payload}")
    friend = await _start(db, "telegram", "10", payload)  # first contact through the link
    await _start(db, "telegram", "1", payload)  # own link: ignored
    await _start(db, "telegram", "2", "campaign-x")
    late = await identity(db, "telegram", "11")
    async with db.session() as session:  # talked to the bot a month before using the link
        await session.execute(update(ContactIdentity).where(ContactIdentity.contact_id == late)
                              .values(created_at=NOW - timedelta(days=30)))
    await _start(db, "telegram", "11", payload)  # not a first contact: not a referral
    sync = await crm.koc.sync_referrals()
    assert (sync.joins, sync.first_orders, sync.rewards) == (1, 0, 2)
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()  # after the join
    await crm.import_file("orders", write(tmp_path, "o.csv", "order_id,telegram_id,ordered_at,"
                                          f"amount\nF1,10,{later},1000\n"
                                          f"L1,11,{later},1000\n"))
    rewards = await crm.koc.rewards()
    assert sorted((r.contact_id, r.side, r.reason) for r in rewards) == sorted([
        (koc, "referrer", "join"), (friend, "referee", "join"),
        (koc, "referrer", "first_order"), (friend, "referee", "first_order")])
    assert all(r.status == "issued" and r.coupon_code for r in rewards)
    again = await crm.koc.sync_referrals()
    assert (again.joins, again.first_orders, again.rewards) == (0, 0, 0)
    for _ in range(3):
        await crm.members.record_helpful_answer(other, chat_id=5)
    board = await crm.koc.leaderboard()
    assert [(r.contact_id, r.score) for r in board] == [(koc, 30.0), (other, 9.0)]
    assert late not in [r.contact_id for r in board]


async def test_sequence_quiet_hours_cap_stop_and_idempotency(db: Database, crm: CrmService,
                                                            sender: FakeSender) -> None:
    a = await identity(db, "telegram", "1", "Aki", language="ja")
    b = await identity(db, "telegram", "2", "Ben", language="en")
    await crm.members.update_profile(b, timezone="America/New_York")
    await crm.automations.create_sequence("welcome", {
        "trigger": "joined_group", "stop_on": ["purchase", "opt_out"],
        "steps": [{"after_days": 0, "text": {"ja": "ようこそ{name}さん", "en": "Welcome {name}"}},
                  {"after_days": 3, "text": "Tip for {name}"},
                  {"after_days": 7, "text": "Coupon {coupon}", "coupon": "welcome"}]})
    for cid in (a, b):
        assert await crm.automations.on_event(cid, "joined_group", at=NOW) == (1, 0)
    assert await crm.automations.on_event(a, "joined_group", at=NOW) == (0, 0)  # once
    # NOW is 12:00 in Tokyo (sent) and 23:00 in New York (quiet: deferred to 09:00 there).
    report = await crm.automations.run_due(NOW)
    assert (report.sent, report.deferred) == (1, 1)
    assert sender.sent == [(a, "ようこそAkiさん", f"seq:{(await crm.automations.enrolments(a))[0].id}:0")]
    again = await crm.automations.run_due(NOW)
    assert again.sent == 0  # idempotent per (enrolment, step)
    ny_morning = datetime(2025, 6, 1, 13, 5, tzinfo=UTC)  # 09:05 in New York
    assert (await crm.automations.run_due(ny_morning)).sent == 1
    # Day 3: the tip. A purchase on day 5 stops A's sequence; B gets day 7 with a coupon.
    day3 = NOW + timedelta(days=3, hours=2)
    assert (await crm.automations.run_due(day3)).sent == 1  # B is in quiet hours again
    assert (await crm.automations.run_due(day3 + timedelta(hours=10))).sent == 1
    assert await crm.automations.on_event(a, "purchase", at=NOW + timedelta(days=5)) == (0, 1)
    day7 = ny_morning + timedelta(days=7)
    assert (await crm.automations.run_due(day7)).sent == 1
    texts = [t for cid, t, _ in sender.sent if cid == b]
    assert texts == ["Welcome Ben", "Tip for Ben", "Coupon CPN-1"]
    assert [e.status for e in await crm.automations.enrolments(a)] == ["stopped"]
    assert [e.status for e in await crm.automations.enrolments(b)] == ["completed"]


async def test_frequency_cap_and_opt_out(db: Database, crm: CrmService,
                                         sender: FakeSender) -> None:
    a = await identity(db, "telegram", "1", "Aki")
    await crm.automations.create_sequence("s1", {"trigger": "first_order",
                                                 "steps": [{"text": "one"}]})
    await crm.automations.create_sequence("s2", {"trigger": "first_order",
                                                 "steps": [{"text": "two"}]})
    await crm.automations.create_sequence("s3", {"trigger": "first_order",
                                                 "steps": [{"text": "three"}]})
    assert await crm.automations.on_event(a, "first_order", at=NOW) == (3, 0)
    report = await crm.automations.run_due(NOW)
    assert (report.sent, report.deferred) == (1, 2)  # max one marketing message a day
    assert (await crm.automations.run_due(NOW + timedelta(days=1))).sent == 1
    await crm.opt_out(a)
    report = await crm.automations.run_due(NOW + timedelta(days=2))
    assert report.sent == 0
    assert [t for _, t, _ in sender.sent] == ["one", "two"]
    assert await crm.automations.on_event(a, "first_order", at=NOW) == (0, 0)


async def test_birthday_messages(db: Database, crm: CrmService, sender: FakeSender,
                                 issuer: FakeIssuer) -> None:
    a = await identity(db, "telegram", "1", "Aki", language="ja")
    b = await identity(db, "telegram", "2", "Ben", language="en")
    c = await identity(db, "telegram", "3", "Cy", language="en")
    await crm.members.update_profile(a, birth_month=6, birth_day=1)
    await crm.members.update_profile(b, birth_month=6, birth_day=1, timezone="America/New_York")
    await crm.members.update_profile(c, birth_month=6, birth_day=1)
    await crm.members.opt_out(c)
    report = await crm.automations.run_birthdays(NOW)  # Tokyo noon; New York still May 31
    assert report.sent == 1 and sender.sent[0][1].startswith("Akiさん、お誕生日")
    assert "CPN-1" in sender.sent[0][1]
    assert (await crm.automations.run_birthdays(NOW + timedelta(hours=1))).sent == 0
    ny = datetime(2025, 6, 1, 14, tzinfo=UTC)  # 10:00 on 1 June in New York
    assert (await crm.automations.run_birthdays(ny)).sent == 1
    assert [x[0] for x in sender.sent] == [a, b]
    assert [x[1] for x in issuer.issued] == ["birthday", "birthday"]


def test_sequence_validation() -> None:
    with pytest.raises(CrmError, match="steps\\[1\\].after_days"):
        validate_sequence({"trigger": "joined", "steps": [{"after_days": 3, "text": "a"},
                                                          {"after_days": 1, "text": "b"}]})
    with pytest.raises(CrmError, match="unknown key"):
        validate_sequence({"trigger": "joined", "steps": [{"text": "a", "delay": 1}]})
    with pytest.raises(CrmError, match="trigger"):
        validate_sequence({"trigger": "", "steps": [{"text": "a"}]})


async def test_imported_orders_fire_first_order_only_when_recent(
        db: Database, crm: CrmService, sender: FakeSender, tmp_path: Path) -> None:
    new = await identity(db, "telegram", "1", "New")
    old = await identity(db, "telegram", "2", "Old")
    await crm.automations.create_sequence("thanks", {
        "trigger": "first_order", "stop_on": ["purchase"],
        "steps": [{"text": "thanks"}, {"after_days": 30, "text": "come back"}]})
    rows = (f"order_id,telegram_id,ordered_at,amount\nN1,1,{(NOW - timedelta(days=1)).isoformat()}"
            f",100\nH1,2,{(NOW - timedelta(days=400)).isoformat()},100\n")
    await crm.import_file("orders", write(tmp_path, "o.csv", rows), now=NOW)
    assert [e.status for e in await crm.automations.enrolments(new)] == ["active"]
    assert await crm.automations.enrolments(old) == []  # history does not enrol anyone
    assert (await crm.run_automations(NOW)).sent == 1
    # A second purchase stops the sequence before "come back".
    later = NOW + timedelta(days=2)
    await crm.import_file("orders", write(tmp_path, "o2.csv", "order_id,telegram_id,ordered_at,"
                                          f"amount\nN2,1,{later.isoformat()},100\n"), now=later)
    assert [e.status for e in await crm.automations.enrolments(new)] == ["stopped"]
