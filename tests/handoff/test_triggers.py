"""Triggers through the conversation core with a scripted knowledge base: declining the bot's
guesses, the button, groups never hand over, the bot steps aside and relays, CSAT buttons."""

from __future__ import annotations

from typing import Any

from bot.core.answering import KnowledgeResponder, register_callbacks
from bot.core.conversation import ConversationService
from bot.core.i18n import Translator
from bot.core.metrics import Metrics
from bot.core.types import Callback, ChatKind, ChatRef, IncomingMessage, UserRef
from bot.handoff.wiring import DeskEscalation
from config.settings import BotSettings
from knowledge_base.decision import DecisionKind
from knowledge_base.service import Answer, AnswerEntry
from models.advisors import Handoff
from tests.handoff.conftest import Desk

ENTRY = AnswerEntry("shipping-fee", "en", "How much is shipping?", "550 yen.")
OTHER = AnswerEntry("returns", "en", "Can I return it?", "Within 30 days.")


class ScriptedKnowledge:
    def __init__(self) -> None:
        self.kind = DecisionKind.SUGGEST
        self.unanswered: list[str] = []

    async def answer(self, question: str, *, language: str | None = None) -> Answer:
        if self.kind is DecisionKind.SUGGEST:
            return Answer(self.kind, 0.4, None, [ENTRY, OTHER], "en")
        return Answer(self.kind, 0.1, None, [], "en")

    async def record_unanswered(self, **kw: Any) -> None:
        self.unanswered.append(kw["question"])

    async def get_entry(self, key: str, *, language: str | None = None) -> AnswerEntry:
        return ENTRY


def build(desk: Desk) -> tuple[ConversationService, ScriptedKnowledge, list[dict[str, Any]]]:
    t = Translator(default="en")
    kb = ScriptedKnowledge()
    responder = KnowledgeResponder(knowledge=kb, translate=t)
    escalation = DeskEscalation(desk.desk)
    responder.escalation = escalation
    service = ConversationService(db=desk.db, outbound=desk.desk.outbound, translate=t,
                                  settings=BotSettings(default_language="en"), metrics=Metrics(),
                                  responder=responder)
    register_callbacks(service, kb, t, escalation)
    relayed: list[dict[str, Any]] = []

    async def relay(ctx: Any) -> None:
        relayed.append({"conversation_id": ctx.conversation_id, "text": ctx.message.text})

    service.relay = relay
    return service, kb, relayed


USER = UserRef("fake", "100", display_name="Tom", language_code="en")
PRIVATE = ChatRef("fake", ChatKind.PRIVATE, "100")


def said(text: str, chat: ChatRef = PRIVATE, **kw: Any) -> IncomingMessage:
    return IncomingMessage(chat=chat, sender=USER, text=text, message_id=str(hash(text) % 1000),
                           **kw)


async def handoffs(desk: Desk) -> list[Handoff]:
    from sqlalchemy import select

    async with desk.db.session() as s:
        return list((await s.execute(select(Handoff))).scalars())


async def test_declining_the_suggestions_hands_over(desk: Desk) -> None:
    service, kb, _ = build(desk)
    await service.handle(said("shiping price??"))
    offer = desk.platform.sent[-1].message
    datas = [b.callback_data for row in offer.buttons for b in row]
    assert datas == ["kb:shipping-fee", "kb:returns", "kb:-"]
    await service.handle(Callback(PRIVATE, USER, "kb:-", "cb1", message_id="1"))
    [h] = await handoffs(desk)
    assert h.trigger == "declined" and h.question == "shiping price??"
    assert "queue" in desk.platform.sent[-1].text


async def test_the_button_hands_over_and_the_bot_then_relays(desk: Desk) -> None:
    service, kb, relayed = build(desk)
    kb.kind = DecisionKind.HANDOFF
    await service.handle(said("my parcel is wet"))
    fallback = desk.platform.sent[-1].message
    assert [b.callback_data for row in fallback.buttons for b in row] == ["handoff:request"]
    await service.handle(Callback(PRIVATE, USER, "handoff:request", "cb1", message_id="2"))
    [h] = await handoffs(desk)
    assert h.trigger == "button" and h.question == "my parcel is wet"
    sent_before = len(desk.platform.sent)
    await service.handle(said("hello? anyone?"))
    assert len(desk.platform.sent) == sent_before  # the bot steps aside
    assert relayed == [{"conversation_id": h.conversation_id, "text": "hello? anyone?"}]


async def test_groups_never_hand_over(desk: Desk) -> None:
    service, kb, _ = build(desk)
    kb.kind = DecisionKind.HANDOFF
    group = ChatRef("fake", ChatKind.GROUP, "-500", "Fans")
    for text in ("@bot what is this?", "@bot and this?", "@bot and that?"):
        await service.handle(said(text, chat=group, mentions_bot=True))
    assert await handoffs(desk) == []


async def test_csat_buttons_store_the_rating_once(desk: Desk) -> None:
    from bot.handoff import wiring

    service, kb, _ = build(desk)

    class App:  # what wiring.install needs
        pass

    aid = await desk.advisor("aiko")
    conv, contact = await desk.customer("100", "Tom")
    await desk.desk.request(conv, trigger="button", language="en")
    await desk.desk.resolve(conv, advisor_id=aid)
    h = (await handoffs(desk))[0]
    app: Any = App()
    app.settings = type("S", (), {"handoff": desk.desk.settings})()
    app.db, app.outbound, app.translate = desk.db, desk.desk.outbound, service.translate
    app.shared = type("Sh", (), {"events": desk.desk.events, "locks": desk.desk.locks})()
    app.knowledge, app.crm, app.conversations = kb, None, service
    wiring.install(app)
    await service.handle(Callback(PRIVATE, USER, f"csat:{h.id}:4", "cb9", message_id="3"))
    assert "Thank you for your rating" in desk.platform.sent[-1].text
    await service.handle(Callback(PRIVATE, USER, f"csat:{h.id}:1", "cb10", message_id="3"))
    assert "already" in desk.platform.sent[-1].text
    assert (await desk.desk.view(conv)).csat == 4
