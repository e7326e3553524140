"""Plugs the handoff desk into the app: triggers from the bot, the customer's messages while
a person has the conversation, CSAT buttons, and the reassignment loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bot.core.conversation import CallbackContext, TurnContext
from bot.core.types import OutgoingMessage
from bot.handoff.accounts import Accounts
from bot.handoff.service import HandoffError, HandoffService

log = logging.getLogger(__name__)


class DeskEscalation:
    """:class:`bot.core.answering.Escalation` over the handoff desk."""

    def __init__(self, desk: HandoffService) -> None:
        self.desk = desk

    async def escalate(self, conversation_id: int, *, trigger: str, question: str | None,
                       language: str, contact_id: int) -> list[OutgoingMessage]:
        if trigger == "complaint" and self.desk.crm is not None:
            try:  # complaints flag the member "needs care" (senior advisors)
                await self.desk.crm.members.record_complaint(contact_id, question)
            except Exception:
                log.exception("recording the complaint failed")
        try:
            return await self.desk.request(conversation_id, trigger=trigger, question=question,
                                           language=language)
        except HandoffError as exc:
            log.warning("handoff refused", extra={"error": str(exc)})
            return []

    async def bot_turn(self, conversation_id: int, *, answered: bool) -> bool:
        return await self.desk.bot_turn(conversation_id, answered=answered)


def install(app: Any) -> HandoffService | None:
    s = app.settings
    app.accounts = Accounts(app.db, default_capacity=s.handoff.default_capacity)
    if not s.handoff.enabled:
        return None
    desk = HandoffService(
        db=app.db, outbound=app.outbound, translate=app.translate, settings=s.handoff,
        events=app.shared.events, locks=app.shared.locks, knowledge=app.knowledge,
        crm=getattr(app, "crm", None),
    )
    app.handoff = desk
    conversations = app.conversations
    escalation = DeskEscalation(desk)
    responder = conversations.responder
    if hasattr(responder, "escalation"):
        responder.escalation = escalation
    if app.knowledge is not None:
        from bot.core.answering import register_callbacks

        register_callbacks(conversations, app.knowledge, app.translate, escalation)
    else:
        async def on_handoff(ctx: CallbackContext) -> list[OutgoingMessage]:
            if ctx.conversation_id is None:
                return []
            return await escalation.escalate(ctx.conversation_id, trigger="button",
                                             question=None, language=ctx.language,
                                             contact_id=ctx.contact_id)

        conversations.callback_handlers["handoff"] = on_handoff

    async def relay(ctx: TurnContext) -> None:
        msg = ctx.message
        await desk.customer_message(ctx.conversation_id, text=msg.text, image=msg.image,
                                    message_id=msg.message_id,
                                    sender_name=msg.sender.display_name)

    conversations.relay = relay

    async def on_csat(ctx: CallbackContext) -> list[OutgoingMessage]:
        parts = ctx.callback.data.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return []
        ok = await desk.record_csat(int(parts[1]), int(parts[2]), contact_id=ctx.contact_id)
        return [OutgoingMessage(text=app.translate("csat_thanks" if ok else "csat_expired",
                                                   ctx.language))]

    conversations.callback_handlers["csat"] = on_csat
    if s.handoff.forum_chat_id:
        from bot.handoff.forum import install as install_forum

        install_forum(app, desk)
    return desk


class ReassignLoop:
    """Every ``interval`` seconds: take conversations back from advisors who did not answer
    in time and route the queue. One worker at a time (a shared lock)."""

    def __init__(self, desk: HandoffService, *, interval: float = 15.0) -> None:
        self.desk = desk
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.desk.reassign_overdue()
                await self.desk.route_waiting()
            except Exception:
                log.exception("handoff reassignment pass failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
