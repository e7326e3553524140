"""The handoff desk: triggers, honest waiting messages, routing, replies, resolve, CSAT."""

from __future__ import annotations

import pytest

from bot.core.types import PermanentSendError, TransientSendError
from bot.handoff.service import HandoffError, NotAllowed
from config.settings import BusinessHoursSettings
from models.conversation import Conversation, ConversationStatus
from tests.handoff.conftest import Desk


async def status(d: Desk, conversation_id: int) -> ConversationStatus:
    async with d.db.session() as session:
        conv = await session.get(Conversation, conversation_id)
        assert conv is not None
        return conv.status


async def test_queue_then_assignment_when_an_advisor_starts_a_shift(desk: Desk) -> None:
    conv, _ = await desk.customer("100")
    replies = await desk.desk.request(conv, trigger="button", question="Where is my order?",
                                      language="en")
    assert "number 1 in the queue" in replies[0].text
    assert await status(desk, conv) is ConversationStatus.WAITING
    assert [v.conversation_id for v in await desk.desk.queue()] == [conv]
    aid = await desk.advisor("aiko", display_name="Aiko", languages=["en"])
    assert await status(desk, conv) is ConversationStatus.WITH_ADVISOR
    mine = await desk.desk.mine(aid)
    assert [v.conversation_id for v in mine] == [conv]
    assert mine[0].question == "Where is my order?"
    # asking again while a person has it does not open a second handoff
    again = await desk.desk.request(conv, trigger="intent", language="en")
    assert "already in touch" in again[0].text


async def test_assigned_at_once_when_someone_is_free(desk: Desk) -> None:
    await desk.advisor("aiko", display_name="Aiko")
    conv, _ = await desk.customer("100")
    replies = await desk.desk.request(conv, trigger="button", language="en")
    assert "Aiko" in replies[0].text


async def test_outside_business_hours_the_customer_is_told_when(desk: Desk) -> None:
    from bot.handoff.hours import BusinessHours

    desk.desk.hours = BusinessHours.from_settings(BusinessHoursSettings(
        timezone="Asia/Tokyo", weekly={"mon": "09:00-18:00", "tue": "09:00-18:00"}))
    desk.clock.t = desk.clock.t.replace(hour=12)  # Monday 21:00 in Tokyo
    conv, _ = await desk.customer("100")
    replies = await desk.desk.request(conv, trigger="button", language="en")
    assert "2026-12-01 09:00 (Asia/Tokyo)" in replies[0].text


async def test_routing_prefers_language_then_least_loaded_and_respects_capacity(
        desk: Desk) -> None:
    ja = await desk.advisor("ja1", languages=["ja"], capacity=1)
    en1 = await desk.advisor("en1", languages=["en"], capacity=2)
    en2 = await desk.advisor("en2", languages=["en"], capacity=2)
    got = []
    for i in range(5):
        conv, _ = await desk.customer(f"c{i}")
        await desk.desk.request(conv, trigger="button", language="en")
        got.append((await desk.desk.view(conv)).advisor_id)
    # four English customers spread over the two English advisors, the fifth goes to the
    # Japanese advisor (anyone with room beats waiting)
    assert sorted(got[:4]) == sorted([en1, en1, en2, en2])
    assert got[4] == ja
    conv, _ = await desk.customer("c6")
    await desk.desk.request(conv, trigger="button", language="en")
    assert (await desk.desk.view(conv)).status == "waiting"  # everybody is full


async def test_reply_resolve_csat_and_no_loop_back(desk: Desk) -> None:
    aid = await desk.advisor("aiko", display_name="Aiko")
    conv, contact = await desk.customer("100")
    await desk.desk.request(conv, trigger="button", language="en")
    result = await desk.desk.reply(conv, advisor_id=aid, text="Hello, I'm Aiko.")
    assert result.ok
    assert "Hello, I'm Aiko." in desk.sent_to("100")
    await desk.desk.note(conv, advisor_id=aid, text="VIP, be kind")
    assert all("VIP" not in t for t in desk.sent_to("100"))
    view = await desk.desk.resolve(conv, advisor_id=aid)
    assert view.status == "resolved" and view.first_response_at is not None
    assert await status(desk, conv) is ConversationStatus.RESOLVED
    csat = desk.platform.sent[-1]
    assert [b.callback_data for b in csat.message.buttons[0]] == [
        f"csat:{view.handoff_id}:{n}" for n in range(1, 6)]
    assert await desk.desk.record_csat(view.handoff_id, 5, contact_id=contact)
    assert not await desk.desk.record_csat(view.handoff_id, 1, contact_id=contact)
    assert (await desk.desk.view(conv)).csat == 5
    # the next message opens a new conversation with the bot, not the advisor
    new_conv, _ = await desk.customer("100")
    assert new_conv != conv and await status(desk, new_conv) is ConversationStatus.BOT
    kinds = [t.kind for t in await desk.desk.transcript(conv)]
    assert "note" in kinds and "out" in kinds


async def test_returning_customer_goes_to_their_own_advisor(desk: Desk) -> None:
    a = await desk.advisor("ana", display_name="A")
    conv, _ = await desk.customer("100")
    await desk.desk.request(conv, trigger="button", language="en")
    assert (await desk.desk.view(conv)).advisor_id == a
    await desk.desk.resolve(conv, advisor_id=a)
    b = await desk.advisor("ben", display_name="B")
    other, _ = await desk.customer("200")
    await desk.desk.request(other, trigger="button", language="en")  # -> b (a has one? no)
    conv2, _ = await desk.customer("100")
    await desk.desk.request(conv2, trigger="button", language="en")
    assert (await desk.desk.view(conv2)).advisor_id == a
    assert b


async def test_unanswered_assignment_is_reassigned(desk: Desk) -> None:
    a = await desk.advisor("ana")
    conv, _ = await desk.customer("100")
    await desk.desk.request(conv, trigger="button", language="en")
    b = await desk.advisor("ben")
    assert (await desk.desk.view(conv)).advisor_id == a
    desk.clock.advance(minutes=6)
    assert await desk.desk.reassign_overdue() == 1
    view = await desk.desk.view(conv)
    assert view.advisor_id == b and view.status == "assigned"


async def test_advisors_see_only_what_their_role_allows(desk: Desk) -> None:
    a = await desk.advisor("ana", capacity=1)
    b = await desk.advisor("ben", capacity=1)
    boss = await desk.advisor("boss", role="manager", on_shift=False)
    conv, _ = await desk.customer("100")
    await desk.desk.request(conv, trigger="button", language="en")
    owner = (await desk.desk.view(conv)).advisor_id
    other = b if owner == a else a
    assert await desk.desk.can_view(owner, conv)
    assert not await desk.desk.can_view(other, conv)
    assert await desk.desk.can_view(boss, conv)
    with pytest.raises(NotAllowed):
        await desk.desk.reply(conv, advisor_id=other, text="hi")
    with pytest.raises(NotAllowed):
        await desk.desk.transcript(conv, advisor_id=other)
    with pytest.raises(HandoffError):
        await desk.desk.reply(conv, advisor_id=owner, text="   ")


async def test_failed_reply_is_visible_and_can_be_retried(desk: Desk) -> None:
    aid = await desk.advisor("aiko")
    conv, _ = await desk.customer("100")
    await desk.desk.request(conv, trigger="button", language="en")
    desk.platform.failures.extend([PermanentSendError("Bad Request: message is too long")])
    result = await desk.desk.reply(conv, advisor_id=aid, text="Here you go")
    assert not result.ok and result.message_id is not None
    failed = [t for t in await desk.desk.transcript(conv) if t.kind == "out"]
    assert failed[-1].status == "failed" and failed[-1].error
    desk.platform.failures.extend([TransientSendError("boom")])
    retried = await desk.desk.retry(result.message_id, advisor_id=aid)
    assert retried.ok
    out = [t for t in await desk.desk.transcript(conv) if t.kind == "out"]
    assert out[-1].status == "sent" and out[-1].id == result.message_id
    assert desk.sent_to("100").count("Here you go") == 1


async def test_failures_in_a_row_trigger(desk: Desk) -> None:
    conv, _ = await desk.customer("100")
    assert not await desk.desk.bot_turn(conv, answered=False)
    assert not await desk.desk.bot_turn(conv, answered=True)
    assert not await desk.desk.bot_turn(conv, answered=False)
    assert await desk.desk.bot_turn(conv, answered=False)


async def test_needs_care_members_wait_for_a_senior(desk: Desk) -> None:
    class Crm:
        async def needs_senior(self, contact_id: int) -> bool:
            return True

    desk.desk.crm = Crm()
    await desk.advisor("junior")
    conv, _ = await desk.customer("100")
    await desk.desk.request(conv, trigger="complaint", language="en")
    assert (await desk.desk.view(conv)).status == "waiting"
    senior = await desk.advisor("senior", senior=True)
    assert (await desk.desk.view(conv)).advisor_id == senior


async def test_initial_admin_on_a_fresh_install(desk: Desk, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bot.handoff.accounts import ensure_initial_admin

    password = await ensure_initial_admin(desk.accounts, str(tmp_path))
    assert password and (tmp_path / "initial_admin_password").read_text().strip() == password
    assert (tmp_path / "initial_admin_password").stat().st_mode & 0o077 == 0
    assert await desk.accounts.authenticate("admin", password) is not None
    assert await ensure_initial_admin(desk.accounts, str(tmp_path)) == password  # still valid
    await desk.accounts.set_password("admin", "a-new-long-password")
    assert await ensure_initial_admin(desk.accounts, str(tmp_path)) is None
    assert not (tmp_path / "initial_admin_password").exists()
    assert await desk.accounts.authenticate("admin", password) is None
    assert await desk.accounts.authenticate("nobody", "whatever-password") is None


async def test_a_burst_of_handoffs_is_routed_in_a_few_passes_and_acknowledged_truly(
        desk: Desk) -> None:
    import asyncio

    for name in ("ana", "ben", "cho"):
        await desk.advisor(name, capacity=10)
    convs = [(await desk.customer(f"b{i}"))[0] for i in range(30)]
    passes = 0
    original = desk.desk._route_once

    async def counting() -> dict[int, str]:
        nonlocal passes
        passes += 1
        return await original()

    desk.desk._route_once = counting  # type: ignore[method-assign]
    acks = await asyncio.gather(*(desk.desk.request(c, trigger="button", language="en")
                                  for c in convs))
    assert all("will reply to you here shortly" in a[0].text for a in acks)
    views = [await desk.desk.view(c) for c in convs]
    assert all(v.status == "assigned" for v in views)
    loads = sorted(sum(v.advisor_id == a for v in views) for a in {v.advisor_id for v in views})
    assert loads == [10, 10, 10]
    assert passes < len(convs)  # requests that arrive during a pass share the next one
