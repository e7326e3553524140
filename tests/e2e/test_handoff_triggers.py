"""What hands a customer to a person, end to end through Telegram (real KB and intents)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.handoff.accounts import AccountInput
from models.advisors import Handoff
from models.conversation import Message
from tests.doubles.telegram_api import FloodLimits
from tests.e2e.conftest import Harness, start_harness
from tests.e2e.test_community import eventually

ALWAYS = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("kb-handoff")


@pytest.fixture
async def h(tmp_path, kb_dir) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    def configure(o: dict[str, Any]) -> None:
        o["knowledge_base"] = {"data_dir": str(kb_dir)}
        o["handoff"] = {"reassign_loop": False, "failures_before_handoff": 2,
                        "business_hours": {"timezone": "UTC", "weekly": ALWAYS}}

    harness, stop = await start_harness(tmp_path, limits=FloodLimits.off(), with_kb=True,
                                        configure=configure)
    try:
        yield harness
    finally:
        await stop()


async def handoffs(h: Harness) -> list[Handoff]:
    async with h.app.db.session() as s:
        return list((await s.execute(select(Handoff).order_by(Handoff.id))).scalars())


async def test_asking_for_a_person_reaches_the_advisor_on_shift(h: Harness) -> None:
    desk = h.app.handoff
    aid = await h.app.accounts.create(AccountInput(username="aiko", display_name="Aiko",
                                                   languages=["en"]))
    await desk.set_shift(aid, True)
    seen: list[dict[str, Any]] = []

    async def listen(event: dict[str, Any]) -> None:
        seen.append(event)

    desk.listeners.append(listen)
    user = h.api.add_user("Tom", language_code="en")
    await h.api.user_sends(user, "I want to talk to a human please")
    ack = (await h.api.wait_for_sent(1, chat_id=user.id))[0]
    assert "Aiko" in ack["text"]
    [handoff] = await handoffs(h)
    assert handoff.trigger == "request_human" and handoff.advisor_id == aid
    # everything the customer writes now goes to the advisor, the bot stays quiet
    await h.api.user_sends(user, "How much does shipping cost?")

    async def relayed() -> list[str]:
        return [e["text"] for e in seen if e["type"] == "message" and e["direction"] == "in"]

    assert await eventually(relayed) == ["How much does shipping cost?"]
    assert len(h.api.sent_messages(user.id)) == 1
    async with h.app.db.session() as s:
        stored = (await s.execute(select(Message.text).where(
            Message.conversation_id == handoff.conversation_id))).scalars().all()
    assert "How much does shipping cost?" in stored


async def test_unanswered_questions_in_a_row_hand_over_with_an_honest_wait(h: Harness) -> None:
    user = h.api.add_user("Ken", language_code="en")
    await h.api.user_sends(user, "Can you fix my car's brakes before Friday?")
    first = (await h.api.wait_for_sent(1, chat_id=user.id))[0]
    assert "don't know" in first["text"]
    await h.api.user_sends(user, "What is the airspeed velocity of an unladen swallow?")
    second = (await h.api.wait_for_sent(2, chat_id=user.id))[1]
    assert "number 1 in the queue" in second["text"]  # nobody is on shift yet
    [handoff] = await handoffs(h)
    assert handoff.trigger == "failures"
    assert handoff.question == "What is the airspeed velocity of an unladen swallow?"


async def test_a_complaint_goes_to_a_senior_advisor(h: Harness) -> None:
    desk = h.app.handoff
    junior = await h.app.accounts.create(AccountInput(username="junior", languages=["en"]))
    await desk.set_shift(junior, True)
    user = h.api.add_user("Mia", language_code="en")
    await h.api.user_sends(user, "I am extremely disappointed, your cream ruined my skin")
    ack = (await h.api.wait_for_sent(1, chat_id=user.id))[0]
    assert "queue" in ack["text"]  # the junior advisor is free but this member needs care
    [handoff] = await handoffs(h)
    assert handoff.trigger == "complaint" and handoff.needs_senior
    senior = await h.app.accounts.create(AccountInput(username="senior", senior=True))
    await desk.set_shift(senior, True)
    assert (await desk.view(handoff.conversation_id)).advisor_id == senior
