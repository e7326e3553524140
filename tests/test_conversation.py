"""Core conversation logic with an in-memory platform (no network)."""

from __future__ import annotations

from sqlalchemy import select

from bot.core.conversation import ConversationService, TurnContext
from bot.core.i18n import Translator
from bot.core.metrics import Metrics
from bot.core.outbound import Outbound, PlatformLimits
from bot.core.shared import InMemoryRateLimiter
from bot.core.types import (
    BotMembershipChanged,
    Callback,
    ChatKind,
    ChatRef,
    IncomingMessage,
    MemberStatus,
    OutgoingMessage,
    UserRef,
)
from config.settings import BotSettings
from models import Message, MessageDirection
from models.repositories import ChatRepository, ContactRepository
from tests.fakes import FakePlatform, FakeSleep, ManualClock

USER = UserRef("fake", "u1", display_name="Aiko", language_code="en")
PRIVATE = ChatRef("fake", ChatKind.PRIVATE, "u1")
GROUP = ChatRef("fake", ChatKind.GROUP, "g1", "Hanami fans")


class EchoResponder:
    def __init__(self) -> None:
        self.seen: list[TurnContext] = []

    async def respond(self, ctx: TurnContext) -> list[OutgoingMessage]:
        self.seen.append(ctx)
        return [OutgoingMessage(f"echo: {ctx.message.text}")]


def build(db, responder=None):  # type: ignore[no-untyped-def]
    clock = ManualClock()
    platform = FakePlatform()
    metrics = Metrics()
    outbound = Outbound(db=db, platforms={"fake": platform},
                        rate_limiter=InMemoryRateLimiter(clock), metrics=metrics,
                        limits={"fake": PlatformLimits.unlimited()}, sleep=FakeSleep(clock))
    service = ConversationService(db=db, outbound=outbound, translate=Translator(default="ja"),
                                  settings=BotSettings(), metrics=metrics, responder=responder)
    platform.set_handler(service.handle)
    return service, platform


def msg(text, chat=PRIVATE, **kw):  # type: ignore[no-untyped-def]
    return IncomingMessage(chat=chat, sender=USER, text=text, message_id="10", **kw)


async def test_every_message_in_and_out_is_stored(db):
    responder = EchoResponder()
    _, platform = build(db, responder)
    await platform.deliver(msg("hello"))
    assert platform.texts() == ["echo: hello"]
    async with db.session() as s:
        rows = list((await s.execute(select(Message).order_by(Message.id))).scalars())
    assert [(r.direction, r.text) for r in rows] == [
        (MessageDirection.IN, "hello"), (MessageDirection.OUT, "echo: hello")]
    assert rows[0].conversation_id == rows[1].conversation_id is not None
    assert responder.seen[0].language == "en" and responder.seen[0].first_contact


async def test_group_messages_not_addressed_are_stored_but_not_answered(db):
    responder = EchoResponder()
    _, platform = build(db, responder)
    await platform.deliver(msg("chatting", chat=GROUP))
    await platform.deliver(msg("@bot question", chat=GROUP, mentions_bot=True))
    assert platform.texts() == ["echo: @bot question"]
    assert platform.sent[0].message.reply_to == "10"  # answers in a group reply to the question
    async with db.session() as s:
        assert len(list((await s.execute(select(Message))).scalars())) == 3


async def test_commands_start_help_language(db):
    _, platform = build(db)
    await platform.deliver(msg("/start qr-store-7", command="start", command_args="qr-store-7"))
    await platform.deliver(msg("/help", command="help"))
    await platform.deliver(msg("/language", command="language"))
    texts = platform.texts()
    assert "Aiko" in texts[0] and "/language" in texts[1]
    assert [b.callback_data for b in platform.sent[2].message.buttons[0]] == [
        "lang:ja", "lang:en", "lang:zh"]
    await platform.deliver(Callback(chat=PRIVATE, sender=USER, data="lang:ja", callback_id="c1"))
    assert platform.texts()[-1] == Translator()("language_set", "ja")
    assert platform.answered == [("c1", None)]
    await platform.deliver(msg("/help", command="help"))
    assert "できること" in platform.texts()[-1]


async def test_unknown_commands_and_callbacks_stay_quiet(db):
    _, platform = build(db, EchoResponder())
    await platform.deliver(msg("/weird", command="weird"))
    await platform.deliver(Callback(chat=PRIVATE, sender=USER, data="zzz:1", callback_id="c2"))
    assert platform.texts() == [] and platform.answered == [("c2", None)]


async def test_empty_and_too_long_text(db):
    service, platform = build(db, EchoResponder())
    await platform.deliver(msg("   "))
    await platform.deliver(msg("x" * (service.settings.max_incoming_text + 1)))
    t = Translator()
    assert platform.texts() == [t("empty_message", "en"), t("too_long", "en")]


async def test_membership_changes(db):
    _, platform = build(db)
    await platform.deliver(BotMembershipChanged(GROUP, USER, MemberStatus.MEMBER,
                                                MemberStatus.KICKED))
    await platform.deliver(BotMembershipChanged(PRIVATE, USER, MemberStatus.MEMBER,
                                                MemberStatus.KICKED))
    async with db.session() as s:
        chat = await ChatRepository(s).get("fake", "g1")
        ident = await ContactRepository(s).get_identity("fake", "u1")
    assert chat is not None and not chat.bot_present
    assert ident is not None and not ident.reachable
    # Writing again means they unblocked the bot.
    await platform.deliver(msg("hi again"))
    async with db.session() as s:
        ident = await ContactRepository(s).get_identity("fake", "u1")
    assert ident is not None and ident.reachable


async def test_a_failing_responder_does_not_crash_the_service(db):
    class Broken:
        async def respond(self, ctx: TurnContext) -> list[OutgoingMessage]:
            raise RuntimeError("boom")

    _, platform = build(db, Broken())
    await platform.deliver(msg("hello"))  # logged, not raised
    async with db.session() as s:
        assert len(list((await s.execute(select(Message))).scalars())) == 1
