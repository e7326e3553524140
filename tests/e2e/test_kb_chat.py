"""Knowledge-base answers in Telegram chats, end to end (real embedder, bundled sample KB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from models import Conversation, ConversationStatus
from tests.doubles.telegram_api import FloodLimits
from tests.e2e.conftest import Harness, start_harness


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("kb-shared")  # index and intent model built once


@pytest.fixture
async def kb_harness(tmp_path, kb_dir) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    def configure(o: dict[str, Any]) -> None:
        o["knowledge_base"] = {"data_dir": str(kb_dir)}

    h, stop = await start_harness(tmp_path, mode="polling", limits=FloodLimits.off(),
                                  with_kb=True, configure=configure)
    try:
        yield h
    finally:
        await stop()


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b for row in rows for b in row]


async def test_answer_feedback_and_languages(kb_harness: Harness):
    h = kb_harness
    en = h.api.add_user("Tom", language_code="en")
    await h.api.user_sends(en, "How much does shipping cost?")
    answer = (await h.api.wait_for_sent(1, chat_id=en.id))[0]
    assert "550" in answer["text"]
    fb = [b["callback_data"] for b in buttons(answer) if b.get("callback_data", "").startswith(
        "fb:")]
    assert fb == ["fb:shipping-fee:1", "fb:shipping-fee:0"]
    await h.api.user_presses(en, answer, "fb:shipping-fee:0")
    sorry = (await h.api.wait_for_sent(2, chat_id=en.id))[1]
    assert "improve" in sorry["text"]
    from models.knowledge import KbFeedback

    async with h.app.db.session() as s:
        row = (await s.execute(select(KbFeedback))).scalar_one()
    assert row.entry_key == "shipping-fee" and not row.helpful
    assert "shipping" in row.question

    ja = h.api.add_user("Aiko", language_code="ja")
    await h.api.user_sends(ja, "送料はいくらですか")
    reply = (await h.api.wait_for_sent(1, chat_id=ja.id))[0]
    assert "550円" in reply["text"]
    zh = h.api.add_user("Li", language_code="zh-hans")
    await h.api.user_sends(zh, "运费多少钱？")
    reply = (await h.api.wait_for_sent(1, chat_id=zh.id))[0]
    assert "550日元" in reply["text"]


async def test_unknown_question_offers_a_person_and_the_bot_steps_aside(kb_harness: Harness):
    h = kb_harness
    user = h.api.add_user("Ken", language_code="en")
    await h.api.user_sends(user, "Can you fix my car's brakes before Friday?")
    reply = (await h.api.wait_for_sent(1, chat_id=user.id))[0]
    offer = [b for b in buttons(reply) if b.get("callback_data") == "handoff:request"]
    assert offer, reply
    await h.api.user_presses(user, reply, "handoff:request")
    ack = (await h.api.wait_for_sent(2, chat_id=user.id))[1]
    assert "advisor" in ack["text"]
    async with h.app.db.session() as s:
        conv = (await s.execute(select(Conversation))).scalars().all()
    assert [c.status for c in conv] == [ConversationStatus.WAITING]
    # While waiting for a person, the bot does not answer (and nothing is lost).
    await h.api.user_sends(user, "How much does shipping cost?")
    await h.api.user_sends(user, "/help")
    await h.api.wait_for_sent(3, chat_id=user.id)  # /help still works
    texts = [m["text"] for m in h.api.sent_messages(user.id)]
    assert not any("550" in t for t in texts)


async def test_group_answers_as_reply_once_per_question(kb_harness: Harness):
    h = kb_harness
    owner = h.api.add_user("Owner")
    member = h.api.add_user("Hana", language_code="en")
    group = h.api.create_group("Hanami lovers", [owner, member])
    h.api.add_bot_to_group(h.bot, group, by=owner)
    q1 = await h.api.user_sends(member, "@kizuna_test_bot is there free shipping?", chat=group)
    first = (await h.api.wait_for_sent(1, chat_id=group.id))[0]
    assert first["reply_to_message"]["message_id"] == q1["message_id"]
    assert "5,000" in first["text"]
    await h.api.user_sends(member, "@kizuna_test_bot is there free shipping?", chat=group)
    await h.api.user_sends(member, "/help", chat=group)
    sent = await h.api.wait_for_sent(2, chat_id=group.id)
    assert "/language" in sent[1]["text"]  # the repeat was not answered a second time
    assert len([m for m in sent if "5,000" in m["text"]]) == 1
