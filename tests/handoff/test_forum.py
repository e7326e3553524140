"""The advisors' forum workspace over the real desk, with an in-memory platform that has
topics (a FakePlatform plus the ForumAdmin methods)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from bot.core.i18n import Translator
from bot.core.metrics import Metrics
from bot.core.outbound import Outbound, PlatformLimits
from bot.core.ports import ForumAdmin
from bot.core.shared import in_memory_shared_state
from bot.core.types import (
    ChatKind,
    ChatRef,
    Image,
    IncomingMessage,
    OutgoingMessage,
    PermanentSendError,
    SentPart,
    UserRef,
)
from bot.handoff.accounts import Accounts
from bot.handoff.forum import TEXTS, ForumWorkspace, install, topic_name
from bot.handoff.service import HandoffService
from config.settings import HandoffSettings
from models import Database
from models.repositories import ChatRepository, MessageRepository
from tests.fakes import FakePlatform
from tests.handoff.conftest import ALWAYS_OPEN, Desk, WallClock, chat

FORUM = ChatRef("fake", ChatKind.GROUP, "-1001234567")


@dataclass
class ForumPlatform(FakePlatform):
    """FakePlatform with forum topics: closed topics refuse messages like Telegram."""

    topics: dict[str, dict[str, Any]] = field(default_factory=dict)
    create_error: PermanentSendError | None = None
    _next_thread: int = 100

    async def create_forum_topic(self, chat: ChatRef, name: str) -> str:
        if self.create_error is not None:
            raise self.create_error
        self._next_thread += 1
        thread = str(self._next_thread)
        self.topics[thread] = {"name": name, "closed": False, "reopened": 0}
        return thread

    def _topic(self, thread_id: str) -> dict[str, Any]:
        if thread_id not in self.topics:
            raise PermanentSendError("Bad Request: TOPIC_ID_INVALID")
        return self.topics[thread_id]

    async def close_forum_topic(self, chat: ChatRef, thread_id: str) -> None:
        self._topic(thread_id)["closed"] = True

    async def reopen_forum_topic(self, chat: ChatRef, thread_id: str) -> None:
        topic = self._topic(thread_id)
        topic["reopened"] += topic["closed"]
        topic["closed"] = False

    async def send_part(self, chat: ChatRef, text: str, message: OutgoingMessage, *,
                        with_extras: bool) -> SentPart:
        if message.thread_id is not None:
            topic = self.topics.get(message.thread_id)
            if topic is None:
                raise PermanentSendError("Bad Request: message thread not found")
            if topic["closed"]:
                raise PermanentSendError("Bad Request: TOPIC_CLOSED")
        return await super().send_part(chat, text, message, with_extras=with_extras)

    def posts(self, thread_id: str | None) -> list[str]:
        return [r.text for r in self.sent
                if r.chat.id == FORUM.id and r.message.thread_id == thread_id]


class Knowledge:
    """The two calls agent assist makes."""

    async def answer(self, question: str, language: str | None = None) -> Any:
        entry = SimpleNamespace(key="shipping-fee", question="How much is shipping?",
                                answer="Shipping is 550 yen; free from 5,000 yen.")
        return SimpleNamespace(entry=entry, confidence=0.82, hits=[], suggestions=[])

    async def get_entry(self, key: str, language: str | None = None) -> Any:
        return None


class Crm:
    def __init__(self) -> None:
        profile = {"tier": "loyal", "member_level": "gold", "order_count": 3,
                   "tags": [{"tag": "vip", "source": "manual"},
                            {"tag": "sensitive-skin", "source": "rule"}]}
        self.members = SimpleNamespace(profile=self._profile)
        self._data = profile

    async def _profile(self, contact_id: int) -> Any:
        return SimpleNamespace(to_dict=lambda: dict(self._data))

    async def needs_senior(self, contact_id: int) -> bool:
        return False


@dataclass
class World:
    d: Desk
    platform: ForumPlatform
    ws: ForumWorkspace

    @property
    def desk(self) -> HandoffService:
        return self.d.desk

    async def advisor(self, username: str, tg: str | None = None, *, on_shift: bool = True,
                      **kw: Any) -> int:
        return await self.d.advisor(username, on_shift=on_shift,
                                    display_name=username.capitalize(), telegram_username=tg,
                                    **kw)

    async def customer(self, external_id: str, name: str, *said: str) -> tuple[int, int]:
        conv, contact = await self.d.customer(external_id, name)
        async with self.d.db.session() as session:
            row = await ChatRepository(session).get("fake", external_id)
            assert row is not None
            for text in said:
                await MessageRepository(session).add_incoming(
                    chat=row, conversation_id=conv, contact_id=contact, text=text)
        return conv, contact

    async def hand_over(self, conv: int, question: str = "Can you fix my car?",
                        trigger: str = "failures") -> str:
        await self.desk.request(conv, trigger=trigger, question=question, language="ja")
        await self.ws.idle()
        thread = (await self.desk.view(conv)).forum_thread_id
        assert thread is not None
        return thread

    async def write(self, text: str, thread: str | None, *, user: str = "555",
                    username: str | None = "aiko_tg", image: Image | None = None) -> bool:
        command, args = None, ""
        if text.startswith("/"):
            head, _, args = text.partition(" ")
            command = head[1:]
        consumed = await self.ws.intercept(IncomingMessage(
            chat=FORUM, sender=UserRef("fake", user, display_name="Aiko", username=username),
            text=text, message_id="9", command=command, command_args=args, thread_id=thread,
            image=image))
        await self.ws.idle()
        return consumed

    def to_customer(self, external_id: str) -> list[OutgoingMessage]:
        return [r.message for r in self.platform.sent if r.chat.id == external_id]


@pytest.fixture
async def w(db: Database) -> World:
    platform = ForumPlatform()
    shared = in_memory_shared_state()
    outbound = Outbound(db=db, platforms={"fake": platform}, rate_limiter=shared.rate_limiter,
                        metrics=Metrics(), limits={"fake": PlatformLimits.unlimited()})
    clock = WallClock()
    service = HandoffService(
        db=db, outbound=outbound, translate=Translator(default="en"),
        settings=HandoffSettings(business_hours=ALWAYS_OPEN, reassign_loop=False),
        events=shared.events, locks=shared.locks, knowledge=Knowledge(), crm=Crm(), now=clock)
    ws = ForumWorkspace(desk=service, outbound=outbound, chat=FORUM)
    service.listeners.append(ws.on_event)
    return World(Desk(db, service, Accounts(db), platform, clock, []), platform, ws)


async def test_a_handoff_opens_a_topic_with_a_summary_card(w: World) -> None:
    assert isinstance(w.platform, ForumAdmin)
    await w.advisor("aiko", "aiko_tg", languages=["ja"])
    conv, contact = await w.customer("100", "Aiko Tanaka", "送料はいくらですか",
                                     "Can you fix my car?")
    thread = await w.hand_over(conv)
    assert w.platform.topics[thread]["name"] == f"Aiko Tanaka · ja · #{contact}"
    card, assigned = w.platform.posts(thread)
    for part in ("Aiko Tanaka", "The bot could not answer", "Can you fix my car?",
                 "Tier: loyal", "vip, sensitive-skin", "👤 送料はいくらですか",
                 "Suggested answers", "How much is shipping? (82%)", "550 yen", "/resolve"):
        assert part in card, part
    assert assigned == "👤 Assigned to Aiko (@aiko_tg)"
    # nothing went to the customer from the workspace (the desk's own ack aside)
    assert w.platform.posts(None) == []


def test_topic_names_fit_telegram() -> None:
    view = SimpleNamespace(customer="x" * 300, language="en", contact_id=7)
    name = topic_name(view)  # type: ignore[arg-type]
    assert len(name) == 128 and name.endswith("… · en · #7")


async def test_advisor_text_and_photo_reach_the_customer_and_are_not_echoed(w: World) -> None:
    aid = await w.advisor("aiko", "aiko_tg", on_shift=False)
    conv, _ = await w.customer("100", "Tom")
    thread = await w.hand_over(conv)
    assert (await w.desk.view(conv)).status == "waiting"
    before = w.platform.posts(thread)
    assert await w.write("Hello Tom, I can help.", thread)
    assert await w.write("the receipt", thread, image=Image(file_id="AgAC-photo"))
    sent = w.to_customer("100")
    assert [m.text for m in sent][-2:] == ["Hello Tom, I can help.", "the receipt"]
    assert sent[-1].image == Image(file_id="AgAC-photo")
    assert sent[-1].sender == f"advisor:{aid}"
    view = await w.desk.view(conv)
    assert view.status == "assigned" and view.advisor_id == aid  # the reply claimed it
    assert w.platform.posts(thread) == before  # nothing echoed into the topic


async def test_customer_and_console_activity_is_mirrored(w: World) -> None:
    aid = await w.advisor("ken", "ken_tg")
    conv, _ = await w.customer("100", "Tom")
    thread = await w.hand_over(conv)
    await w.desk.customer_message(conv, text="Are you there?", sender_name="Tom")
    await w.desk.customer_message(conv, text="", image=Image(file_id="AgAC-cust"),
                                  sender_name="Tom")
    await w.desk.reply(conv, advisor_id=aid, text="Yes, checking now.", origin="console")
    await w.desk.note(conv, advisor_id=aid, text="VIP, be quick", origin="console")
    await w.desk.reply(conv, advisor_id=aid, text="from the forum", origin="forum")
    await w.desk.note(conv, advisor_id=aid, text="forum note", origin="forum")
    await w.ws.idle()
    lines = w.platform.posts(thread)[2:]
    assert lines == ["👤 Tom: Are you there?", "👤 Tom sent a photo",
                     "💬 Ken (console): Yes, checking now.", "📝 Note by Ken: VIP, be quick"]
    photo = [r.message for r in w.platform.sent if r.message.thread_id == thread][3]
    assert photo.image == Image(file_id="AgAC-cust")
    # a console reply that could not be delivered says so in the topic
    w.platform.failures.append(PermanentSendError("Forbidden: bot was blocked by the user",
                                                  recipient_unreachable=True))
    await w.desk.reply(conv, advisor_id=aid, text="Still there?", origin="console")
    await w.ws.idle()
    assert w.platform.posts(thread)[-1] == (
        "💬 Ken (console): Still there?\n"
        "⚠ Not delivered to the customer: Forbidden: bot was blocked by the user")


async def test_topic_commands(w: World) -> None:
    aiko = await w.advisor("aiko", "aiko_tg")
    ken = await w.advisor("ken", "ken_tg", on_shift=False)
    conv, contact = await w.customer("100", "Tom", "Where is my parcel?")
    thread = await w.hand_over(conv, "Where is my parcel?")
    assert (await w.desk.view(conv)).advisor_id == aiko
    to_customer = len(w.to_customer("100"))

    await w.write("/note customer is a reseller", thread)
    assert w.platform.posts(thread)[-1] == TEXTS["note_saved"]
    [note] = [i for i in await w.desk.transcript(conv) if i.kind == "note"]
    assert note.text == "customer is a reseller" and note.sender == "Aiko"

    await w.write("/transfer @ken_tg", thread)
    assert (await w.desk.view(conv)).advisor_id == ken
    assert w.platform.posts(thread)[-1] == "↪ Passed to Ken (@ken_tg)"
    await w.write("/claim", thread, user="556", username="ken_tg")
    assert w.platform.posts(thread)[-1] == "✋ Ken took the conversation"
    await w.write("/transfer", thread, user="556", username="ken_tg")
    assert w.platform.posts(thread)[-1] == "↩ Back in the queue"
    view = await w.desk.view(conv)
    assert view.status == "assigned" and view.advisor_id == aiko  # routed again
    await w.write("/suggest", thread)
    assert "How much is shipping?" in w.platform.posts(thread)[-1]
    assert len(w.to_customer("100")) == to_customer  # none of this reached the customer

    await w.write("/resolve", thread)
    assert (await w.desk.view(conv)).status == "resolved"
    assert w.platform.posts(thread)[-1] == (
        "✅ Resolved by Aiko. The customer was asked to rate the help.")
    assert w.platform.topics[thread]["closed"]
    csat = w.to_customer("100")[-1]
    assert [b.callback_data for b in csat.buttons[0]][-1].endswith(":5")
    handoff_id = (await w.desk.view(conv)).handoff_id
    assert await w.desk.record_csat(handoff_id, 5, contact_id=contact)
    await w.ws.idle()
    assert w.platform.posts(None) == [
        f"⭐ Tom rated the help 5/5 → https://t.me/c/1234567/{thread}"]


async def test_a_returning_customer_gets_their_topic_back(w: World) -> None:
    aid = await w.advisor("aiko", "aiko_tg")
    conv, _ = await w.customer("100", "Tom")
    thread = await w.hand_over(conv)
    await w.desk.resolve(conv, advisor_id=aid, origin="console")
    await w.ws.idle()
    assert w.platform.posts(thread)[-1] == "✅ Resolved by Aiko (console)"
    assert w.platform.topics[thread]["closed"]
    again, _ = await w.customer("100", "Tom")
    assert again != conv
    assert await w.hand_over(again) == thread
    assert w.platform.topics[thread] == {"name": w.platform.topics[thread]["name"],
                                         "closed": False, "reopened": 1}
    card = w.platform.posts(thread)[-2]
    assert "Returning customer: 1 earlier handoff(s), own advisor Aiko" in card
    # a topic someone deleted is replaced by a new one
    await w.desk.resolve(again, advisor_id=aid, origin="console")
    await w.ws.idle()
    del w.platform.topics[thread]
    third, _ = await w.customer("100", "Tom")
    new_thread = await w.hand_over(third)
    assert new_thread != thread and new_thread in w.platform.topics


async def test_who_may_act_and_what_is_refused(w: World) -> None:
    aid = await w.advisor("aiko", "aiko_tg")
    conv, _ = await w.customer("100", "Tom")
    thread = await w.hand_over(conv)
    sent = len(w.to_customer("100"))
    assert await w.write("hi, I'm new here", thread, user="999", username="stranger")
    assert w.platform.posts(thread)[-1].startswith(
        "Aiko is not linked to an advisor account, so nothing was sent.")
    assert "--telegram @stranger" in w.platform.posts(thread)[-1]
    await w.write("/transfer @nobody", thread)
    assert w.platform.posts(thread)[-1] == "⚠ no advisor 'nobody'"
    await w.write("/note", thread)
    assert w.platform.posts(thread)[-1] == "⚠ an empty note cannot be saved"
    await w.write("/resolve@other_bot", thread)  # another bot's command: not for the customer
    await w.write("/unknown", thread)
    assert w.platform.posts(thread)[-1] == TEXTS["card_help"]
    assert len(w.to_customer("100")) == sent
    w.platform.failures.append(PermanentSendError("Forbidden: bot was blocked by the user",
                                                  recipient_unreachable=True))
    await w.write("Are you still there?", thread)
    assert w.platform.posts(thread)[-1] == (
        "⚠ Not delivered to the customer: Forbidden: bot was blocked by the user")
    await w.desk.resolve(conv, advisor_id=aid, origin="console")
    await w.ws.idle()
    w.platform.topics[thread]["closed"] = False  # an admin reopened it by hand
    await w.write("one more thing", thread)
    assert w.platform.posts(thread)[-1] == (
        "This conversation is resolved; nothing was sent to the customer.")
    # a topic that is not a customer's, and talk in the General topic, are left alone
    other = await w.platform.create_forum_topic(FORUM, "Team chat")
    assert await w.write("lunch?", other)
    assert await w.write("morning all", None)
    await w.write("/resolve", other)
    assert w.platform.posts(other) == [TEXTS["not_customer_topic"]]
    assert w.platform.posts(None) == []


async def test_general_topic_queue_and_shift(w: World) -> None:
    aid = await w.advisor("aiko", "aiko_tg", on_shift=False)
    conv, _ = await w.customer("100", "Tom")
    thread = await w.hand_over(conv, trigger="button")
    w.d.clock.advance(minutes=7)
    await w.write("/queue", None)
    assert w.platform.posts(None)[-1] == (
        "Waiting (1):\n• Tom · ja · 7 min · Tapped “Talk to a person” "
        f"→ https://t.me/c/1234567/{thread}")
    await w.write("/shift", None)
    assert w.platform.posts(None)[-1] == "Aiko is off shift. Use /shift on or /shift off."
    await w.write("/shift on", None)
    assert w.platform.posts(None)[-1] == "🟢 Aiko is on shift."
    assert (await w.desk.advisor(aid)).on_shift
    assert (await w.desk.view(conv)).advisor_id == aid  # routing ran
    await w.write("/queue", None)
    assert w.platform.posts(None)[-1] == "Nobody is waiting."
    await w.write("/shift off", None)
    assert not (await w.desk.advisor(aid)).on_shift


async def test_a_topic_that_cannot_be_created_is_reported(w: World) -> None:
    w.platform.create_error = PermanentSendError(
        "Bad Request: not enough rights to create a topic")
    conv, _ = await w.customer("100", "Tom")
    await w.desk.request(conv, trigger="button", language="en")
    await w.ws.idle()
    assert w.platform.posts(None) == [
        "⚠ Could not open a topic for Tom: Bad Request: not enough rights to create a topic"]
    assert (await w.desk.view(conv)).forum_thread_id is None


async def test_the_customer_never_waits_for_the_forum(w: World) -> None:
    await w.advisor("aiko", "aiko_tg")
    conv, _ = await w.customer("100", "Tom")
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    w.ws._enqueue(blocked)  # the forum is stuck (e.g. rate limited)
    replies = await asyncio.wait_for(
        w.desk.request(conv, trigger="button", language="en"), 5)
    assert "Aiko" in replies[0].text
    assert w.platform.topics == {}
    gate.set()
    await w.ws.idle()
    assert len(w.platform.topics) == 1


async def test_install_wires_the_workspace_into_the_app(w: World) -> None:
    conversations = SimpleNamespace(interceptors=[])
    settings = SimpleNamespace(handoff=SimpleNamespace(forum_chat_id=FORUM.id,
                                                       forum_platform="fake"))
    app = SimpleNamespace(settings=settings, outbound=w.ws.outbound, conversations=conversations,
                          platforms={"fake": w.platform}, background=[], forum=None)
    ws = install(app, w.desk)
    assert ws.chat == FORUM
    assert ws.on_event in w.desk.listeners
    assert conversations.interceptors == [ws.intercept]
    assert app.background == [ws] and app.forum is ws
    elsewhere = IncomingMessage(chat=chat("100"), sender=UserRef("fake", "100"), text="hi")
    assert not await ws.intercept(elsewhere)
    await ws.stop()


def test_the_workspace_remembers_a_bounded_number_of_conversations(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.handoff import forum

    monkeypatch.setattr(forum, "REMEMBER", 3)
    memory: dict[int, str] = {}
    for n in range(5):
        forum._put(memory, n, str(n))
    forum._put(memory, 2, "again")
    assert memory == {3: "3", 4: "4", 2: "again"}
