"""The real bot, polling and webhook, against the Bot API double, used as customers would."""

from __future__ import annotations

import asyncio

import aiohttp
from sqlalchemy import select

from models import Message, MessageDirection
from models.contact import ContactIdentity, DeepLinkStart
from models.repositories import ChatRepository, ContactRepository
from tests.doubles.telegram_api import FloodLimits
from tests.e2e.conftest import SECRET, Harness, start_harness


async def stored_messages(h: Harness) -> list[Message]:
    async with h.app.db.session() as s:
        return list((await s.execute(select(Message).order_by(Message.id))).scalars())


async def wait_stored(h: Harness, count: int, timeout: float = 5.0) -> list[Message]:
    async def poll() -> list[Message]:
        while True:
            rows = await stored_messages(h)
            if len(rows) >= count and all(r.status.value != "pending" for r in rows):
                return rows
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def test_private_chat_start_with_deep_link(harness: Harness):
    h = harness
    user = h.api.add_user("Aiko", username="aiko", language_code="ja")
    await h.api.user_sends(user, "/start store-shibuya")
    sent = await h.api.wait_for_sent(1, chat_id=user.id)
    assert "Aiko" in sent[0]["text"] and "Kizuna" in sent[0]["text"]
    assert "こんにちは" in sent[0]["text"]  # the customer's platform language
    rows = await wait_stored(h, 2)
    assert [r.direction for r in rows] == [MessageDirection.IN, MessageDirection.OUT]
    assert rows[0].text == "/start store-shibuya" and rows[1].status.value == "sent"
    async with h.app.db.session() as s:
        start = (await s.execute(select(DeepLinkStart))).scalar_one()
        assert start.payload == "store-shibuya" and start.first_contact


async def test_help_and_command_menu_per_language(harness: Harness):
    h = harness
    user = h.api.add_user("Tom", language_code="en")
    await h.api.user_sends(user, "/help")
    sent = await h.api.wait_for_sent(1, chat_id=user.id)
    assert "/language" in sent[0]["text"]
    for lang, word in (("ja", "言語"), ("zh", "语言"), ("en", "language")):
        commands = h.api.commands(h.bot, language_code=lang)
        assert [c["command"] for c in commands] == ["start", "help", "language"]
        assert word in commands[2]["description"].lower()


async def test_inline_button_round_trip_changes_language(harness: Harness):
    h = harness
    user = h.api.add_user("Mei", language_code="ja")
    await h.api.user_sends(user, "/language")
    picker = (await h.api.wait_for_sent(1, chat_id=user.id))[0]
    buttons = picker["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == ["lang:ja", "lang:en", "lang:zh"]
    await h.api.user_presses(user, picker, "lang:zh")
    reply = (await h.api.wait_for_sent(2, chat_id=user.id))[1]
    assert "中文" in reply["text"]
    assert h.api.answered_callbacks()
    await h.api.user_sends(user, "/help")  # from now on in Chinese
    assert "切换语言" in (await h.api.wait_for_sent(3, chat_id=user.id))[2]["text"]


async def test_group_privacy_mode_mentions_and_replies(harness: Harness):
    h = harness
    owner = h.api.add_user("Owner")
    member = h.api.add_user("Hana", language_code="en")
    group = h.api.create_group("Hanami moms", [owner, member])
    h.api.add_bot_to_group(h.bot, group, by=owner)
    await h.api.user_sends(member, "just chatting with friends", chat=group)
    mention = await h.api.user_sends(member, "@kizuna_test_bot /help please", chat=group)
    sent = await h.api.wait_for_sent(1, chat_id=group.id)
    # Privacy mode: the bot never saw the plain chat line, and answers the mention as a reply.
    assert sent[0]["reply_to_message"]["message_id"] == mention["message_id"]
    await h.api.user_sends(member, "thanks!", chat=group, reply_to=sent[0]["message_id"])
    await h.api.wait_for_sent(2, chat_id=group.id)
    await h.api.user_sends(member, "/help@some_other_bot", chat=group)
    await h.api.user_sends(member, "/help", chat=group)
    sent = await h.api.wait_for_sent(3, chat_id=group.id)
    rows = await wait_stored(h, 6)
    texts = [r.text for r in rows if r.direction is MessageDirection.IN]
    assert "just chatting with friends" not in texts
    assert "/help@some_other_bot" not in [s["text"] for s in sent]
    async with h.app.db.session() as s:
        chat = await ChatRepository(s).get("telegram", str(group.id))
        assert chat is not None and chat.kind.value == "group" and chat.title == "Hanami moms"


async def test_bot_removed_from_group_is_recorded(harness: Harness):
    h = harness
    owner = h.api.add_user("Owner")
    group = h.api.create_group("Store Ginza", [owner])
    h.api.add_bot_to_group(h.bot, group, by=owner, admin=True)
    await h.api.user_sends(owner, "/help", chat=group)
    await h.api.wait_for_sent(1, chat_id=group.id)
    h.api.remove_bot_from_group(h.bot, group, by=owner)

    async def removed() -> None:
        while True:
            async with h.app.db.session() as s:
                chat = await ChatRepository(s).get("telegram", str(group.id))
                if chat is not None and not chat.bot_present:
                    return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(removed(), 15)


async def test_blocked_user_is_marked_and_not_sent_to(harness: Harness):
    h = harness
    user = h.api.add_user("Ken", language_code="en")
    await h.api.user_sends(user, "/help")
    await h.api.wait_for_sent(1, chat_id=user.id)
    h.api.user_blocks_bot(user)

    async def unreachable() -> None:
        while True:
            async with h.app.db.session() as s:
                ident = await ContactRepository(s).get_identity("telegram", str(user.id))
                if ident is not None and not ident.reachable:
                    return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(unreachable(), 15)
    from bot.core.types import ChatKind, ChatRef, OutgoingMessage

    calls_before = len(h.api.calls("sendMessage"))
    result = await h.app.outbound.send(
        ChatRef("telegram", ChatKind.PRIVATE, str(user.id)), OutgoingMessage("coupon!")
    )
    assert not result.ok and result.unreachable
    assert len(h.api.calls("sendMessage")) == calls_before  # not even tried


async def test_blocked_discovered_on_send(harness: Harness):
    """A block we were not told about is learnt from the 403 and recorded."""
    h = harness
    user = h.api.add_user("Rin", language_code="en")
    await h.api.user_sends(user, "/help")
    await h.api.wait_for_sent(1, chat_id=user.id)
    h.api.inject_error("sendMessage", status=403,
                       description="Forbidden: bot was blocked by the user")
    from bot.core.types import ChatKind, ChatRef, OutgoingMessage

    result = await h.app.outbound.send(
        ChatRef("telegram", ChatKind.PRIVATE, str(user.id)), OutgoingMessage("hi")
    )
    assert not result.ok and "blocked" in (result.error or "")
    async with h.app.db.session() as s:
        ident = (await s.execute(select(ContactIdentity).where(
            ContactIdentity.external_id == str(user.id)))).scalar_one()
        assert ident.unreachable_at is not None


async def test_429_is_waited_out_then_sent(harness: Harness):
    h = harness
    user = h.api.add_user("Yui", language_code="en")
    h.api.inject_error("sendMessage", status=429, description="Too Many Requests: retry after 7",
                       retry_after=7)
    await h.api.user_sends(user, "/help")
    sent = await h.api.wait_for_sent(1, chat_id=user.id)
    assert "/language" in sent[0]["text"]
    assert 7 in h.sleep.calls
    metrics = h.app.metrics.render().decode()
    assert 'kizuna_rate_limited_total{platform="telegram"} 1.0' in metrics


async def test_long_reply_is_split(harness: Harness):
    from bot.core.types import ChatKind, ChatRef, OutgoingMessage

    h = harness
    user = h.api.add_user("Sora", language_code="en")
    await h.api.user_sends(user, "/help")
    await h.api.wait_for_sent(1, chat_id=user.id)
    long_text = "\n\n".join(f"Paragraph {i}. " + "word " * 300 for i in range(8))
    result = await h.app.outbound.send(
        ChatRef("telegram", ChatKind.PRIVATE, str(user.id)), OutgoingMessage(long_text)
    )
    assert result.ok
    parts = h.api.sent_messages(user.id)[1:]
    assert len(parts) >= 3 and all(len(p["text"]) <= 4096 for p in parts)
    assert " ".join(p["text"] for p in parts).split() == long_text.split()


async def test_malformed_and_unknown_updates_are_skipped(harness: Harness):
    h = harness
    user = h.api.add_user("Nao", language_code="en")
    await h.api.send_raw_update(h.bot, {"update_id": 999_001, "message": {"text": "no chat"}})
    await h.api.send_raw_update(h.bot, {"update_id": 999_002, "brand_new_kind": {"x": 1}})
    await h.api.user_sends(user, "/help")  # still alive and answering
    await h.api.wait_for_sent(1, chat_id=user.id)
    rows = await wait_stored(h, 2)
    assert len(rows) == 2


async def test_empty_emoji_and_rtl_texts(harness: Harness):
    h = harness
    user = h.api.add_user("Lea", language_code="en")
    for text in ("🙂🙂🙂", "مرحبا، كيف حالك؟"):
        await h.api.user_sends(user, text)
    await h.api.wait_for_sent(2, chat_id=user.id)
    rows = await wait_stored(h, 4)
    assert {r.text for r in rows if r.direction is MessageDirection.IN} == {
        "🙂🙂🙂", "مرحبا، كيف حالك؟"}


async def test_webhook_refuses_wrong_or_missing_secret(tmp_path):
    h, stop = await start_harness(tmp_path, mode="webhook", limits=FloodLimits.off())
    try:
        url = f"http://127.0.0.1:{h.port}/telegram/webhook"
        update = {"update_id": 5, "message": {
            "message_id": 1, "date": 0, "chat": {"id": 77, "type": "private"},
            "from": {"id": 77, "is_bot": False, "first_name": "Eve"}, "text": "/help"}}
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
                async with session.post(url, json=update, headers=headers) as resp:
                    assert resp.status == 401
            async with session.post(url, data=b"{not json",
                                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
                assert r.status == 400
        assert await stored_messages(h) == []
        assert h.api.calls("sendMessage") == []
    finally:
        await stop()


async def test_health_and_metrics_endpoints(harness: Harness):
    h = harness
    user = h.api.add_user("Kai", language_code="en")
    await h.api.user_sends(user, "/help")
    await h.api.wait_for_sent(1, chat_id=user.id)
    await wait_stored(h, 2)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{h.port}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with session.get(f"http://127.0.0.1:{h.port}/metrics") as resp:
            body = await resp.text()
    assert 'kizuna_messages_in_total{chat_kind="private",platform="telegram"} 1.0' in body
    assert 'kizuna_messages_out_total{platform="telegram"} 1.0' in body
    assert "TEST-TOKEN" not in body


async def test_invalid_markup_is_sent_as_plain_text(harness: Harness):
    from bot.core.types import ChatKind, ChatRef, OutgoingMessage

    h = harness
    user = h.api.add_user("Emi", language_code="en")
    await h.api.user_sends(user, "/help")
    await h.api.wait_for_sent(1, chat_id=user.id)
    result = await h.app.outbound.send(
        ChatRef("telegram", ChatKind.PRIVATE, str(user.id)),
        OutgoingMessage("<b>Spring sale <i>starts</b> today &amp; tomorrow", format="html"),
    )
    assert result.ok
    assert h.api.sent_messages(user.id)[-1]["text"] == "Spring sale starts today & tomorrow"


async def test_burst_of_updates_is_all_stored(tmp_path):
    h, stop = await start_harness(tmp_path, mode="webhook", limits=FloodLimits.off())
    try:
        owner = h.api.add_user("Owner")
        members = [h.api.add_user(f"M{i}") for i in range(50)]
        group = h.api.create_group("Big community", [owner, *members])
        h.api.add_bot_to_group(h.bot, group, by=owner, admin=True)
        for i in range(1000):
            await h.api.user_sends(members[i % 50], f"burst {i} 🌸", chat=group)
        await wait_stored(h, 1000, timeout=60)

        async def all_stored() -> list[int]:
            while True:
                rows = await stored_messages(h)
                got = sorted(int(r.text.split()[1]) for r in rows
                             if r.text and r.text.startswith("burst "))
                if len(got) >= 1000:
                    return got
                await asyncio.sleep(0.05)

        assert await asyncio.wait_for(all_stored(), 60) == list(range(1000))
    finally:
        await stop()
