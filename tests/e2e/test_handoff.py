"""The advisors' forum workspace end to end: the real bot against the Telegram double, a
customer in a private chat, advisors in a forum supergroup with one topic per customer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.core.types import (
    ChatKind,
    ChatRef,
    Image,
    IncomingMessage,
    OutgoingMessage,
    SendError,
)
from bot.handoff.accounts import AccountInput
from bot.handoff.forum import ForumWorkspace
from tests.doubles.telegram_api import FakeChat, FakeUser, FloodLimits
from tests.e2e.conftest import Harness, start_harness
from tests.e2e.test_community import eventually

ALWAYS = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
FORUM_ID = -1001987654321


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("kb-forum")  # index and intent model built once


@pytest.fixture
async def h(tmp_path, kb_dir) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    def configure(o: dict[str, Any]) -> None:
        o["knowledge_base"] = {"data_dir": str(kb_dir)}
        o["handoff"] = {"forum_chat_id": str(FORUM_ID), "reassign_loop": False,
                        "business_hours": {"timezone": "UTC", "weekly": ALWAYS}}

    harness, stop = await start_harness(tmp_path, limits=FloodLimits.off(), with_kb=True,
                                        configure=configure)
    try:
        yield harness
    finally:
        await stop()


async def desk_staff(h: Harness) -> tuple[FakeChat, FakeUser, int]:
    """The advisors' forum (the bot may manage topics) and Aiko, an advisor on shift."""
    aiko = h.api.add_user("Aiko", username="aiko_adv", language_code="en")
    owner = h.api.add_user("Manager", username="the_manager", language_code="en")
    forum = h.api.create_group("Kizuna advisors", [owner, aiko], chat_id=FORUM_ID, forum=True)
    h.api.add_bot_to_group(h.bot, forum, by=owner, admin=True,
                           rights={"can_manage_topics": True})
    aid = await h.app.accounts.create(AccountInput(
        username="aiko", display_name="Aiko", languages=["en"], telegram_username="aiko_adv"))
    await h.app.handoff.set_shift(aid, True)
    return forum, aiko, aid


def workspace(h: Harness) -> ForumWorkspace:
    ws = h.app.forum
    assert isinstance(ws, ForumWorkspace)
    return ws


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in messages]


def buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b.get("callback_data", "") for row in rows for b in row]


async def topic_shows(h: Harness, thread: int, check: Callable[[str], bool]) -> str:
    async def find() -> str | None:
        await workspace(h).idle()
        return next((t for t in texts(h.api.sent_in_topic(FORUM_ID, thread)) if check(t)),
                    None)

    found: str = await eventually(find)
    return found


async def sent_to(h: Harness, user: FakeUser, count: int) -> list[dict[str, Any]]:
    return await h.api.wait_for_sent(count, chat_id=user.id)


async def test_a_customer_talks_to_an_advisor_through_a_forum_topic(h: Harness) -> None:
    forum, aiko, aid = await desk_staff(h)
    tom = h.api.add_user("Tom", username="tom_k", language_code="en")
    await h.api.user_sends(tom, "Can you fix my car's brakes before Friday?")
    [offer] = await sent_to(h, tom, 1)
    assert "handoff:request" in buttons(offer)
    await h.api.user_presses(tom, offer, "handoff:request")
    ack = (await sent_to(h, tom, 2))[1]
    assert "Aiko" in ack["text"]

    # a topic named after the customer opens with the summary card
    async def opened() -> list[int]:
        return list(forum.topics)

    [thread] = await eventually(opened)
    desk = h.app.handoff
    view = await desk.by_thread(str(thread))
    assert view is not None and view.status == "assigned" and view.advisor_id == aid
    assert forum.topics[thread]["name"] == f"Tom · en · #{view.contact_id}"
    card = await topic_shows(h, thread, lambda t: t.startswith("🆕"))
    for part in ("Tom · en", "Tapped “Talk to a person”", "Telegram @tom_k",
                 "Can you fix my car's brakes before Friday?", "Suggested answers",
                 "/resolve"):
        assert part in card, part
    await topic_shows(h, thread, lambda t: t == "👤 Assigned to Aiko (@aiko_adv)")

    # the advisor writes in the topic: the customer gets it in their private chat
    await h.api.user_sends(aiko, "Hi Tom, I'm Aiko. Which model is it?", chat=forum,
                           thread_id=thread)
    assert texts(await sent_to(h, tom, 3))[2] == "Hi Tom, I'm Aiko. Which model is it?"
    # the customer answers: it appears in the topic, and the bot stays quiet
    await h.api.user_sends(tom, "A 2015 Honda Civic")
    await topic_shows(h, thread, lambda t: t == "👤 Tom: A 2015 Honda Civic")
    # a photo from the advisor reaches the customer (same file)
    posted = await h.api.user_sends_photo(aiko, caption="The booking form", chat=forum,
                                          thread_id=thread)
    photo = (await sent_to(h, tom, 4))[3]
    assert photo["caption"] == "The booking form"
    assert photo["photo"][-1]["file_id"] == posted["photo"][-1]["file_id"]
    # an internal note never reaches the customer
    await h.api.user_sends(aiko, "/note asked twice about Friday", chat=forum, thread_id=thread)
    await topic_shows(h, thread, lambda t: t.startswith("📝 Note saved"))
    # a reply from the web console shows in the topic; one made from the forum is not echoed
    await desk.reply(view.conversation_id, advisor_id=aid, text="Friday 10:00 works.",
                     origin="console")
    await desk.reply(view.conversation_id, advisor_id=aid, text="See you then!",
                     origin="forum")
    assert texts(await sent_to(h, tom, 6))[4:] == ["Friday 10:00 works.", "See you then!"]
    await topic_shows(h, thread, lambda t: t == "💬 Aiko (console): Friday 10:00 works.")
    await workspace(h).idle()
    topic_texts = texts(h.api.sent_in_topic(FORUM_ID, thread))
    assert not any("See you then!" in t for t in topic_texts)
    assert not any("Which model" in t or "booking form" in t or "asked twice" in t
                   for t in topic_texts)  # the advisor's own messages are not echoed
    assert "asked twice about Friday" not in texts(h.api.sent_messages(tom.id))

    # /resolve: the customer is asked for a rating, the topic closes
    await h.api.user_sends(aiko, "/resolve", chat=forum, thread_id=thread)
    sent = await sent_to(h, tom, 8)
    assert "closed" in sent[6]["text"]
    assert buttons(sent[7]) == [f"csat:{view.handoff_id}:{n}" for n in range(1, 6)]
    await topic_shows(h, thread, lambda t: t.startswith("✅ Resolved by Aiko"))

    async def closed() -> bool:
        return bool(forum.topics[thread]["closed"])

    await eventually(closed)
    await h.api.user_presses(tom, sent[7], f"csat:{view.handoff_id}:5")
    assert "Thank you" in (await sent_to(h, tom, 9))[8]["text"]
    assert (await desk.view(view.conversation_id)).csat == 5

    async def rated() -> list[str]:
        await workspace(h).idle()
        return [t for t in texts(h.api.sent_in_topic(FORUM_ID, None)) if "rated" in t]

    assert await eventually(rated) == [
        f"⭐ Tom rated the help 5/5 → https://t.me/c/1987654321/{thread}"]

    # the bot answers the customer again, and nothing goes to the (closed) topic any more
    before = len(h.api.sent_in_topic(FORUM_ID, thread))
    await h.api.user_sends(tom, "How much does shipping cost?")
    assert "550" in (await sent_to(h, tom, 10))[9]["text"]
    await workspace(h).idle()
    assert len(h.api.sent_in_topic(FORUM_ID, thread)) == before
    assert h.api.internal_errors == []


async def test_a_returning_customer_asking_for_a_human_gets_their_topic_back(
        h: Harness) -> None:
    forum, aiko, aid = await desk_staff(h)
    await h.app.handoff.set_shift(aid, False)  # nobody on shift: the customer waits
    mia = h.api.add_user("Mia", language_code="en")
    await h.api.user_sends(mia, "I want to talk to a human")
    assert "queue" in (await sent_to(h, mia, 1))[0]["text"]

    async def opened() -> list[int]:
        return list(forum.topics)

    [thread] = await eventually(opened)
    card = await topic_shows(h, thread, lambda t: t.startswith("🆕"))
    assert "Asked for a person · waiting in the queue" in card
    # someone who is not an advisor writes in the topic: nothing reaches the customer
    stranger = h.api.add_user("Visitor", username="visitor", language_code="en")
    await h.api.user_joins(stranger, forum)
    await h.api.user_sends(stranger, "hello?", chat=forum, thread_id=thread)
    await topic_shows(h, thread, lambda t: "not linked to an advisor account" in t)
    # the advisor's first reply takes the waiting conversation
    await h.api.user_sends(aiko, "Hi Mia, Aiko here.", chat=forum, thread_id=thread)
    assert texts(await sent_to(h, mia, 2))[1] == "Hi Mia, Aiko here."
    view = await h.app.handoff.by_thread(str(thread))
    assert view is not None and view.advisor_id == aid
    await h.api.user_sends(aiko, "/resolve", chat=forum, thread_id=thread)
    await sent_to(h, mia, 4)

    async def closed() -> bool:
        return bool(forum.topics[thread]["closed"])

    await eventually(closed)
    # Mia comes back: the same topic reopens with a new card
    await h.api.user_sends(mia, "I want to talk to a human again")
    await sent_to(h, mia, 5)
    await topic_shows(h, thread, lambda t: "Returning customer" in t)
    assert list(forum.topics) == [thread] and not forum.topics[thread]["closed"]
    assert h.api.internal_errors == []


async def test_the_telegram_adapter_as_forum_admin(tmp_path: Any) -> None:
    h, stop = await start_harness(tmp_path, limits=FloodLimits.off())
    try:
        owner = h.api.add_user("Owner", language_code="en")
        forum = h.api.create_group("Desk", [owner], forum=True)
        h.api.add_bot_to_group(h.bot, forum, by=owner, admin=True,
                               rights={"can_manage_topics": True})
        telegram = h.app.platforms["telegram"]
        ref = ChatRef("telegram", ChatKind.GROUP, str(forum.id))
        thread = await telegram.create_forum_topic(ref, "Tom · en · #1")  # type: ignore[attr-defined]
        assert forum.topics[int(thread)]["name"] == "Tom · en · #1"
        send: Callable[[OutgoingMessage], Awaitable[Any]] = \
            lambda m: h.app.outbound.send(ref, m)  # noqa: E731
        assert (await send(OutgoingMessage(text="fast path", thread_id=thread))).ok
        telegram.fast_text = False  # type: ignore[attr-defined]
        assert (await send(OutgoingMessage(text="aiogram path", thread_id=thread))).ok
        photo = await send(OutgoingMessage(text="a photo", thread_id=thread,
                                           image=Image(url="https://e.jp/form.png")))
        assert photo.ok
        assert texts(h.api.sent_in_topic(forum.id, int(thread))) == [
            "fast path", "aiogram path", "a photo"]
        # closing twice is fine; a closed topic refuses messages with Telegram's words
        await telegram.close_forum_topic(ref, thread)  # type: ignore[attr-defined]
        await telegram.close_forum_topic(ref, thread)  # type: ignore[attr-defined]
        for fast in (True, False):
            telegram.fast_text = fast  # type: ignore[attr-defined]
            refused = await send(OutgoingMessage(text="late", thread_id=thread))
            assert not refused.ok and refused.error == "Bad Request: TOPIC_CLOSED"
        await telegram.reopen_forum_topic(ref, thread)  # type: ignore[attr-defined]
        await telegram.reopen_forum_topic(ref, thread)  # type: ignore[attr-defined]
        # what users write in a topic arrives with its thread id
        seen: list[IncomingMessage] = []

        async def capture(msg: IncomingMessage) -> bool:
            seen.append(msg)
            return True

        h.app.conversations.interceptors.insert(0, capture)
        await h.api.user_sends(owner, "in the topic", chat=forum, thread_id=int(thread))
        await h.api.user_sends(owner, "in General", chat=forum)
        await h.api.user_sends_photo(owner, caption="/note a photo", chat=forum,
                                     thread_id=int(thread))

        async def arrived() -> bool:
            return len(seen) >= 3

        await eventually(arrived)
        first, general, with_photo = seen
        assert first.thread_id == thread and first.reply_to_message_id is None
        assert not first.reply_to_bot  # the topic's creation message is not a reply
        assert general.thread_id is None
        assert with_photo.thread_id == thread and with_photo.image is not None
        assert with_photo.command == "note" and with_photo.command_args == "a photo"
        # the file id of a user's photo can be sent on
        sent = await send(OutgoingMessage(text="again", thread_id=thread,
                                          image=with_photo.image))
        assert sent.ok
        h.api.delete_topic(forum, int(thread))
        with pytest.raises(SendError, match="TOPIC_ID_INVALID"):
            await telegram.reopen_forum_topic(ref, thread)  # type: ignore[attr-defined]
        plain = h.api.create_group("Plain", [owner])
        h.api.add_bot_to_group(h.bot, plain, by=owner, admin=True)
        with pytest.raises(SendError, match="the chat is not a forum"):
            await telegram.create_forum_topic(  # type: ignore[attr-defined]
                ChatRef("telegram", ChatKind.GROUP, str(plain.id)), "x")
        assert h.api.internal_errors == []
    finally:
        await stop()
