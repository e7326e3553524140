"""Answers from the knowledge base in chats: answer, "did you mean…?", or an honest
"I don't know" with the offer of a person; feedback buttons; group de-duplication."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from bot.core.conversation import CallbackContext, ConversationService, TurnContext
from bot.core.i18n import Translator
from bot.core.types import Button, ChatKind, Image, OutgoingMessage
from models.conversation import ConversationStatus
from models.repositories import ConversationRepository, MessageRepository

SMALL_TALK = {"greet": "greet", "thanks": "thanks", "goodbye": "goodbye",
              "bot_challenge": "bot_challenge"}
GROUP_REPEAT_WINDOW = 600.0  # seconds: the same question in a group is answered once


class Escalation(Protocol):
    """Hands a private conversation to people (implemented by the handoff desk)."""

    async def escalate(self, conversation_id: int, *, trigger: str, question: str | None,
                       language: str, contact_id: int) -> list[OutgoingMessage]: ...

    async def bot_turn(self, conversation_id: int, *, answered: bool) -> bool:
        """Record one bot turn; True when unanswered turns in a row reached the limit."""
        ...


def _norm(text: str) -> str:
    import unicodedata

    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if ch.isalnum())


class KnowledgeResponder:
    """The bot's default :class:`bot.core.conversation.Responder`."""

    def __init__(self, *, knowledge: Any, translate: Translator,
                 clock: Callable[[], float] = time.monotonic,
                 group_window: float = GROUP_REPEAT_WINDOW, intent_threshold: float = 0.6) -> None:
        self.knowledge = knowledge
        self.t = translate
        self.clock = clock
        self.group_window = group_window
        self.intent_threshold = intent_threshold
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.bot_name = "Kizuna"  # shown when a customer asks whether they talk to a bot
        self.escalation: Escalation | None = None

    def _seen_recently(self, chat_key: str, text: str) -> bool:
        now = self.clock()
        while self._recent:
            key, at = next(iter(self._recent.items()))
            if now - at <= self.group_window and len(self._recent) < 100_000:
                break
            self._recent.popitem(last=False)
        key = (chat_key, _norm(text))
        if key in self._recent:
            return True
        self._recent[key] = now
        return False

    async def respond(self, ctx: TurnContext) -> list[OutgoingMessage]:
        if ctx.conversation_status in (ConversationStatus.WAITING,
                                       ConversationStatus.WITH_ADVISOR):
            return []  # a person has (or is about to have) this conversation: step aside
        msg = ctx.message
        question = msg.text.strip()
        if msg.chat.kind is ChatKind.GROUP:
            question = _strip_mention(question)
            if not question:
                return []
            if self._seen_recently(f"{msg.chat.platform}:{msg.chat.id}", question):
                return []
        answer = await self.knowledge.answer(question, language=ctx.language)
        lang = answer.language or ctx.language
        intent = getattr(answer, "intent", None)
        kind = str(answer.kind)
        private = msg.chat.kind is ChatKind.PRIVATE
        escalation = self.escalation if private else None
        if intent is not None and intent.intent and intent.confidence >= self.intent_threshold:
            if intent.intent in SMALL_TALK and kind != "answer":
                return [OutgoingMessage(text=self.t(SMALL_TALK[intent.intent], lang,
                                                    bot=_bot_name(self)))]
            if intent.intent in ("request_human", "complaint") and escalation is not None:
                return await escalation.escalate(
                    ctx.conversation_id, trigger=intent.intent, question=question,
                    language=lang, contact_id=ctx.contact_id)
            if intent.intent == "request_human":
                return await self._handoff_offer(ctx, question, lang, answer)
        if kind == "answer" and answer.entry is not None:
            if escalation is not None:
                await escalation.bot_turn(ctx.conversation_id, answered=True)
            return [self._answer_message(answer.entry, lang)]
        if kind == "suggest" and answer.suggestions:
            rows = [[Button(s.question[:60], callback_data=_cb("kb", s.key))]
                    for s in answer.suggestions[:3] if _cb("kb", s.key)]
            rows.append([Button(self.t("none_of_these", lang), callback_data="kb:-")])
            return [OutgoingMessage(text=self.t("did_you_mean", lang), buttons=rows)]
        await self.knowledge.record_unanswered(
            question=question, language=lang, contact_id=ctx.contact_id,
            confidence=float(answer.confidence), kind=kind,
        )
        if escalation is not None and await escalation.bot_turn(ctx.conversation_id,
                                                                answered=False):
            return await escalation.escalate(
                ctx.conversation_id, trigger="failures", question=question, language=lang,
                contact_id=ctx.contact_id)
        return [self._fallback(lang)]

    async def _handoff_offer(self, ctx: TurnContext, question: str, lang: str,
                             answer: Any) -> list[OutgoingMessage]:
        return [OutgoingMessage(text=self.t("fallback", lang), buttons=[
            [Button(self.t("talk_to_person", lang), callback_data="handoff:request")]])]

    def _fallback(self, lang: str) -> OutgoingMessage:
        return OutgoingMessage(text=self.t("fallback", lang), buttons=[
            [Button(self.t("talk_to_person", lang), callback_data="handoff:request")]])

    def _answer_message(self, entry: Any, lang: str) -> OutgoingMessage:
        rows: list[list[Button]] = []
        for b in list(getattr(entry, "buttons", None) or []) + list(
                getattr(entry, "links", None) or []):
            text = b.get("text") or b.get("title")
            if not text:
                continue
            if b.get("url"):
                rows.append([Button(text[:64], url=b["url"])])
            elif b.get("callback_data") or b.get("callback"):
                data = b.get("callback_data") or b.get("callback")
                if len(data.encode()) <= 64:
                    rows.append([Button(text[:64], callback_data=data)])
        up, down = _cb("fb", entry.key, "1"), _cb("fb", entry.key, "0")
        if up and down:
            rows.append([Button("👍", callback_data=up), Button("👎", callback_data=down)])
        image_url = getattr(entry, "image_url", None)
        return OutgoingMessage(
            text=entry.answer,
            buttons=rows,
            image=Image(url=image_url) if image_url else None,
        )


def _bot_name(responder: KnowledgeResponder) -> str:
    return responder.bot_name


def _strip_mention(text: str) -> str:
    import re

    return re.sub(r"(^|\s)@\w+", " ", text).strip()


def _cb(*parts: str) -> str | None:
    data = ":".join(parts)
    return data if len(data.encode()) <= 64 else None


def register_callbacks(service: ConversationService, knowledge: Any,
                       translate: Translator, escalation: Escalation | None = None) -> None:
    """Wire the knowledge base's buttons into the conversation service."""

    async def last_question(ctx: CallbackContext) -> str:
        async with service.db.session() as session:
            rows = await MessageRepository(session).history(ctx.chat_id, 30)
        for row in reversed(rows):
            if row.direction.value == "in" and row.kind == "text" and row.text:
                return row.text
        return ""

    async def on_feedback(ctx: CallbackContext) -> list[OutgoingMessage]:
        _, key, value = (ctx.callback.data.split(":", 2) + ["", ""])[:3]
        helpful = value == "1"
        await knowledge.record_feedback(entry_key=key, question=await last_question(ctx),
                                        helpful=helpful, contact_id=ctx.contact_id)
        return [OutgoingMessage(text=translate(
            "feedback_thanks" if helpful else "feedback_sorry", ctx.language))]

    async def on_suggestion(ctx: CallbackContext) -> list[OutgoingMessage]:
        key = ctx.callback.data.partition(":")[2]
        if key == "-":  # the customer declined the bot's best guesses
            question = await last_question(ctx)
            await knowledge.record_unanswered(question=question, language=ctx.language,
                                              contact_id=ctx.contact_id, confidence=0.0,
                                              kind="declined")
            if escalation is not None and ctx.conversation_id is not None and \
                    ctx.callback.chat.kind is ChatKind.PRIVATE:
                return await escalation.escalate(
                    ctx.conversation_id, trigger="declined", question=question or None,
                    language=ctx.language, contact_id=ctx.contact_id)
            return [OutgoingMessage(text=translate("fallback", ctx.language), buttons=[
                [Button(translate("talk_to_person", ctx.language),
                        callback_data="handoff:request")]])]
        entry = await knowledge.get_entry(key, language=ctx.language)
        if entry is None:
            return [OutgoingMessage(text=translate("fallback", ctx.language))]
        responder = KnowledgeResponder(knowledge=knowledge, translate=translate)
        return [responder._answer_message(entry, ctx.language)]

    async def on_handoff(ctx: CallbackContext) -> list[OutgoingMessage]:
        if ctx.conversation_id is None:
            return []
        if escalation is not None and ctx.callback.chat.kind is ChatKind.PRIVATE:
            return await escalation.escalate(
                ctx.conversation_id, trigger="button", question=await last_question(ctx)
                or None, language=ctx.language, contact_id=ctx.contact_id)
        async with service.db.session() as session:
            conversations = ConversationRepository(session)
            from models.conversation import Conversation

            conv = await session.get(Conversation, ctx.conversation_id)
            if conv is None:
                return []
            if conv.status is ConversationStatus.BOT:
                await conversations.change_status(
                    conv, ConversationStatus.WAITING, actor="contact",
                    data={"trigger": "button"},
                )
        return [OutgoingMessage(text=translate("waiting_ack", ctx.language))]

    service.callback_handlers["fb"] = on_feedback
    service.callback_handlers["kb"] = on_suggestion
    service.callback_handlers["handoff"] = on_handoff
