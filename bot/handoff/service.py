"""The handoff desk: one service behind both advisor workspaces (Telegram forum, web console).

Triggers put a conversation in the queue (status ``waiting``) and tell the customer honestly
what happens next; routing gives it to an advisor; advisors reply, add notes, transfer and
resolve; the customer rates the help (CSAT). Every change is recorded (conversation events,
the ``handoffs`` row) and announced as an inbox event: on the shared :class:`EventBus`
(topic ``inbox``, for live consoles in every worker) and to in-process listeners (the forum
workspace of the worker that made the change, so nothing is mirrored twice).

An event carries ``origin`` (``"forum"``, ``"console"``, ``"customer"``, ``"system"``): a
workspace never shows a message back where it came from.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from bot.core.i18n import Translator
from bot.core.outbound import DeliveryResult, Outbound
from bot.core.shared import EventBus, Lock
from bot.core.types import Button, ChatKind, ChatRef, Image, OutgoingMessage
from bot.handoff.hours import BusinessHours
from bot.handoff.routing import Candidate, Request, choose
from config.settings import HandoffSettings
from models import Database
from models.advisors import (
    Advisor,
    AdvisorCustomer,
    CannedResponse,
    ConversationNote,
    Handoff,
    HandoffStatus,
    Role,
)
from models.base import utcnow
from models.chat import Chat
from models.contact import Contact, ContactIdentity
from models.conversation import (
    Conversation,
    ConversationStatus,
    Message,
    MessageDirection,
    MessageStatus,
)
from models.repositories import ConversationRepository, InvalidTransition, MessageRepository

log = logging.getLogger(__name__)

INBOX_TOPIC = "inbox"
OPEN = (HandoffStatus.WAITING, HandoffStatus.ASSIGNED)
Listener = Callable[[dict[str, Any]], Awaitable[None]]


class HandoffError(Exception):
    """A request the desk refuses (not found, not allowed, wrong state): the text says why."""


class NotAllowed(HandoffError):
    pass


class NotFound(HandoffError):
    pass


@dataclass(slots=True)
class ReplyResult:
    ok: bool
    message_id: int | None
    error: str | None = None


@dataclass(slots=True)
class AdvisorView:
    id: int
    username: str
    display_name: str
    role: str
    languages: list[str]
    skills: list[str]
    capacity: int
    senior: bool
    on_shift: bool
    telegram_username: str | None
    load: int = 0


@dataclass(slots=True)
class HandoffView:
    """One handed-off conversation, as a queue or inbox row."""

    handoff_id: int
    conversation_id: int
    contact_id: int | None
    customer: str
    platform: str
    language: str | None
    status: str  # waiting / assigned / resolved / cancelled
    trigger: str
    question: str | None
    advisor_id: int | None
    advisor: str | None
    requested_at: datetime
    assigned_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    needs_senior: bool
    last_message: str | None = None
    forum_thread_id: str | None = None
    csat: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]
        for k, v in out.items():
            if isinstance(v, datetime):
                out[k] = v.isoformat()
        return out


@dataclass(slots=True)
class TranscriptItem:
    id: int
    kind: str  # "in", "out", "note", "event"
    text: str
    sender: str | None
    status: str | None  # for "out": pending / sent / failed
    error: str | None
    at: datetime
    image: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "text": self.text, "sender": self.sender,
                "status": self.status, "error": self.error, "at": self.at.isoformat(),
                "image": self.image}


@dataclass(slots=True)
class Suggestion:
    key: str
    question: str
    answer: str
    confidence: float


@dataclass
class HandoffService:
    db: Database
    outbound: Outbound
    translate: Translator
    settings: HandoffSettings
    events: EventBus
    locks: Lock
    knowledge: Any = None  # KnowledgeService (agent assist), optional
    crm: Any = None  # CrmService (profile, "needs care" routing), optional
    now: Callable[[], datetime] = utcnow
    listeners: list[Listener] = field(default_factory=list)
    hours: BusinessHours = field(init=False)
    _routing_task: asyncio.Task[dict[int, str]] | None = field(init=False, default=None)
    _routing_dirty: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.hours = BusinessHours.from_settings(self.settings.business_hours)

    # ================================================================ events
    async def emit(self, event: dict[str, Any]) -> None:
        event.setdefault("at", self.now().isoformat())
        try:
            await self.events.publish(INBOX_TOPIC, event)
        except Exception:  # a console push must never break the customer path
            log.exception("inbox event publish failed")
        for listener in list(self.listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("inbox listener failed", extra={"type": event.get("type")})

    # ================================================================ triggers
    async def request(self, conversation_id: int, *, trigger: str, question: str | None = None,
                      language: str | None = None, actor: str = "contact",
                      skills: Sequence[str] = ()) -> list[OutgoingMessage]:
        """Hand the conversation to people. Returns what to tell the customer."""
        lang = language
        needs_senior = await self._needs_senior(conversation_id)
        async with self.db.session() as session:
            conv = await session.get(Conversation, conversation_id, with_for_update=True)
            if conv is None:
                raise NotFound(f"conversation {conversation_id} not found")
            if conv.status in (ConversationStatus.WAITING, ConversationStatus.WITH_ADVISOR):
                return [OutgoingMessage(text=self.translate("handoff_already", lang))]
            chat = await session.get(Chat, conv.chat_id)
            if chat is None or chat.kind.value != "private":
                raise HandoffError("only private conversations can be handed to an advisor")
            if conv.status is ConversationStatus.RESOLVED:
                raise HandoffError("this conversation is already resolved")
            await ConversationRepository(session).change_status(
                conv, ConversationStatus.WAITING, actor=actor, data={"trigger": trigger})
            conv.bot_failures = 0
            handoff = Handoff(
                conversation_id=conv.id, contact_id=conv.contact_id, trigger=trigger[:32],
                question=(question or None) and question[:4000], language=lang,
                skills=list(skills), needs_senior=needs_senior, status=HandoffStatus.WAITING,
                requested_at=self.now(),
            )
            session.add(handoff)
            await session.flush()
            handoff_id = handoff.id
        await self.emit({"type": "handoff", "handoff_id": handoff_id,
                         "conversation_id": conversation_id, "trigger": trigger,
                         "origin": "customer" if actor == "contact" else "system"})
        await self.route_waiting()
        async with self.db.session() as session:  # whoever's pass assigned it
            advisor = (await session.execute(
                select(Advisor.display_name).join(Handoff, Handoff.advisor_id == Advisor.id)
                .where(Handoff.id == handoff_id, Handoff.status == HandoffStatus.ASSIGNED))
            ).scalar_one_or_none()
        if advisor is not None:
            return [OutgoingMessage(text=self.translate("handoff_assigned", lang,
                                                        advisor=advisor))]
        return [OutgoingMessage(text=await self._waiting_text(handoff_id, lang))]

    async def _needs_senior(self, conversation_id: int) -> bool:
        """Asked with no session held: the CRM opens its own (holding one connection while
        waiting for another exhausts the pool under load)."""
        if self.crm is None:
            return False
        async with self.db.session() as session:
            contact_id = (await session.execute(select(Conversation.contact_id).where(
                Conversation.id == conversation_id))).scalar_one_or_none()
        if contact_id is None:
            return False
        try:
            return bool(await self.crm.needs_senior(contact_id))
        except Exception:
            log.exception("crm needs_senior failed")
            return False

    async def _waiting_text(self, handoff_id: int, lang: str | None) -> str:
        now = self.now()
        if not self.hours.is_open(now):
            nxt = self.hours.next_open(now)
            if nxt is None:
                return self.translate("handoff_closed_unknown", lang)
            local = nxt.astimezone(self.hours.tz)
            when = local.strftime("%Y-%m-%d %H:%M") + f" ({self.hours.tz.key})"
            return self.translate("handoff_closed", lang, when=when)
        position, minutes = await self.queue_estimate(handoff_id)
        return self.translate("handoff_queued", lang, position=position, minutes=minutes)

    async def queue_estimate(self, handoff_id: int) -> tuple[int, int]:
        """(position in the queue, expected wait in minutes) from recent handling times."""
        async with self.db.session() as session:
            h = await session.get(Handoff, handoff_id)
            if h is None:
                raise NotFound(f"handoff {handoff_id} not found")
            ahead = (await session.execute(
                select(func.count()).select_from(Handoff).where(
                    Handoff.status == HandoffStatus.WAITING,
                    Handoff.requested_at <= h.requested_at, Handoff.id < h.id))).scalar_one()
            recent = (await session.execute(
                select(Handoff.assigned_at, Handoff.resolved_at)
                .where(Handoff.status == HandoffStatus.RESOLVED,
                       Handoff.assigned_at.is_not(None))
                .order_by(Handoff.id.desc()).limit(50))).all()
            advisors = (await session.execute(
                select(func.count()).select_from(Advisor).where(
                    Advisor.active.is_(True), Advisor.on_shift.is_(True)))).scalar_one()
        durations = [(b - a).total_seconds() / 60 for a, b in recent if a and b and b > a]
        handle = statistics.median(durations) if durations else 10.0
        position = int(ahead) + 1
        minutes = max(1, round(position * handle / max(1, int(advisors))))
        return position, minutes

    async def bot_turn(self, conversation_id: int, *, answered: bool) -> bool:
        """Count bot turns without an answer; True when the configured limit is reached
        (the caller then hands the conversation over)."""
        limit = self.settings.failures_before_handoff
        async with self.db.session() as session:
            conv = await session.get(Conversation, conversation_id)
            if conv is None:
                return False
            if answered:
                if conv.bot_failures:
                    conv.bot_failures = 0
                return False
            conv.bot_failures = (conv.bot_failures or 0) + 1
            return bool(limit) and conv.bot_failures >= limit

    async def customer_message(self, conversation_id: int, *, text: str,
                               image: Image | None = None, message_id: str | None = None,
                               sender_name: str | None = None) -> None:
        """A customer wrote while waiting or with an advisor: show it in the workspaces."""
        await self.emit({"type": "message", "direction": "in", "origin": "customer",
                         "conversation_id": conversation_id, "text": text,
                         "image": {"file_id": image.file_id, "url": image.url} if image else None,
                         "sender": sender_name})

    # ================================================================ routing
    async def _candidates(self, session: Any) -> list[Candidate]:
        loads = dict((await session.execute(
            select(Handoff.advisor_id, func.count()).where(
                Handoff.status == HandoffStatus.ASSIGNED).group_by(Handoff.advisor_id))).all())
        last = dict((await session.execute(
            select(Handoff.advisor_id, func.max(Handoff.assigned_at))
            .where(Handoff.advisor_id.is_not(None)).group_by(Handoff.advisor_id))).all())
        rows = (await session.execute(select(Advisor).where(
            Advisor.active.is_(True), Advisor.on_shift.is_(True)))).scalars().all()
        return [Candidate(a.id, int(loads.get(a.id, 0)), a.capacity,
                          frozenset(a.languages or ()), frozenset(a.skills or ()), a.senior,
                          last.get(a.id)) for a in rows]

    async def route_waiting(self) -> dict[int, str]:
        """Assign every waiting handoff that an eligible advisor with room can take, oldest
        first. Returns {handoff_id: advisor display name} for those assigned.

        Single flight: while a pass runs, callers do not start passes of their own; they
        mark the queue changed and wait for the running loop, which makes one more pass
        when something changed during the last one (a burst of 2,000 handoffs costs a few
        passes, not 2,000 one after another)."""
        self._routing_dirty = True
        if self._routing_task is None or self._routing_task.done():
            self._routing_task = asyncio.create_task(self._routing_loop())
        return dict(await asyncio.shield(self._routing_task))

    async def _routing_loop(self) -> dict[int, str]:
        assigned: dict[int, str] = {}
        while self._routing_dirty:
            self._routing_dirty = False
            assigned.update(await self._route_once())
        return assigned

    async def _route_once(self) -> dict[int, str]:
        assigned: dict[int, str] = {}
        announcements: list[dict[str, Any]] = []
        async with self.locks.hold("handoff:routing", ttl=30.0):
            async with self.db.session() as session:
                waiting = (await session.execute(
                    select(Handoff).where(Handoff.status == HandoffStatus.WAITING)
                    .order_by(Handoff.requested_at, Handoff.id).limit(500))).scalars().all()
                if not waiting:
                    return assigned
                candidates = await self._candidates(session)
                if not candidates:
                    return assigned
                sticky = await self._sticky(session, [h.contact_id for h in waiting])
                for h in waiting:
                    if not any(c.has_room for c in candidates):
                        break
                    exclude = frozenset((h.data or {}).get("timed_out", []))
                    pick = choose(candidates, Request(
                        h.language, frozenset(h.skills or ()), h.needs_senior,
                        sticky.get(h.contact_id) if h.contact_id else None, exclude))
                    if pick is None:
                        continue
                    advisor = await session.get(Advisor, pick.advisor_id)
                    assert advisor is not None
                    await self._assign(session, h, advisor, actor="routing")
                    assigned[h.id] = advisor.display_name
                    announcements.append(self._assigned_event(h, advisor, "system"))
                    candidates = [
                        Candidate(c.advisor_id, c.load + 1, c.capacity, c.languages, c.skills,
                                  c.senior, self.now()) if c.advisor_id == pick.advisor_id else c
                        for c in candidates]
        for event in announcements:
            await self.emit(event)
        return assigned

    async def _sticky(self, session: Any, contact_ids: list[int | None]) -> dict[int, int]:
        ids = [c for c in contact_ids if c is not None]
        if not ids or self.settings.sticky_days <= 0:
            return {}
        since = self.now() - timedelta(days=self.settings.sticky_days)
        rows = (await session.execute(select(AdvisorCustomer.contact_id,
                                             AdvisorCustomer.advisor_id)
                                      .where(AdvisorCustomer.contact_id.in_(ids),
                                             AdvisorCustomer.since >= since))).all()
        return {c: a for c, a in rows}

    async def _assign(self, session: Any, h: Handoff, advisor: Advisor, *, actor: str) -> None:
        conv = await session.get(Conversation, h.conversation_id)
        assert conv is not None
        repo = ConversationRepository(session)
        await repo.change_status(conv, ConversationStatus.WITH_ADVISOR, actor=actor,
                                 assignee=advisor.username, data={"advisor_id": advisor.id})
        h.status = HandoffStatus.ASSIGNED
        h.advisor_id = advisor.id
        h.assigned_at = self.now()
        await session.flush()

    def _assigned_event(self, h: Handoff, advisor: Advisor, origin: str) -> dict[str, Any]:
        return {"type": "assigned", "handoff_id": h.id, "conversation_id": h.conversation_id,
                "advisor_id": advisor.id, "advisor": advisor.display_name,
                "advisor_username": advisor.username, "origin": origin}

    async def reassign_overdue(self) -> int:
        """Give conversations whose advisor has not answered within the configured minutes
        to someone else. Returns how many were taken back."""
        limit = self.now() - timedelta(minutes=self.settings.reassign_after_minutes)
        events: list[dict[str, Any]] = []
        async with self.locks.hold("handoff:routing", ttl=30.0):
            async with self.db.session() as session:
                overdue = (await session.execute(select(Handoff).where(
                    Handoff.status == HandoffStatus.ASSIGNED,
                    Handoff.first_response_at.is_(None),
                    Handoff.assigned_at < limit))).scalars().all()
                for h in overdue:
                    conv = await session.get(Conversation, h.conversation_id)
                    if conv is None:
                        continue
                    data = dict(h.data or {})
                    data["timed_out"] = sorted(set(data.get("timed_out", [])) | {h.advisor_id})
                    h.data = data
                    previous = h.advisor_id
                    h.status, h.advisor_id, h.assigned_at = HandoffStatus.WAITING, None, None
                    h.reassignments += 1
                    await ConversationRepository(session).change_status(
                        conv, ConversationStatus.WAITING, actor="routing",
                        data={"reason": "no answer in time", "advisor_id": previous})
                    events.append({"type": "unassigned", "handoff_id": h.id,
                                   "conversation_id": h.conversation_id, "advisor_id": previous,
                                   "reason": "timeout", "origin": "system"})
        for event in events:
            await self.emit(event)
        if events:
            await self.route_waiting()
        return len(events)

    # ================================================================ advisors
    async def advisor(self, advisor_id: int) -> AdvisorView:
        async with self.db.session() as session:
            a = await session.get(Advisor, advisor_id)
            if a is None or not a.active:
                raise NotFound(f"advisor {advisor_id} not found")
            load = (await session.execute(select(func.count()).select_from(Handoff).where(
                Handoff.advisor_id == a.id, Handoff.status == HandoffStatus.ASSIGNED)))
            return _advisor_view(a, int(load.scalar_one()))

    async def advisors(self) -> list[AdvisorView]:
        async with self.db.session() as session:
            loads = dict((await session.execute(
                select(Handoff.advisor_id, func.count()).where(
                    Handoff.status == HandoffStatus.ASSIGNED).group_by(Handoff.advisor_id))).all())
            rows = (await session.execute(select(Advisor).where(Advisor.active.is_(True))
                                          .order_by(Advisor.display_name))).scalars().all()
            return [_advisor_view(a, int(loads.get(a.id, 0))) for a in rows]

    async def find_advisor(self, ref: str) -> AdvisorView:
        """By id, console username or Telegram @username."""
        ref = ref.strip().lstrip("@")
        async with self.db.session() as session:
            cond = [func.lower(Advisor.username) == ref.lower(),
                    func.lower(Advisor.telegram_username) == ref.lower()]
            if ref.isdigit():
                cond.append(Advisor.id == int(ref))
            a = (await session.execute(select(Advisor).where(
                Advisor.active.is_(True), or_(*cond)).limit(1))).scalar_one_or_none()
        if a is None:
            raise NotFound(f"no advisor {ref!r}")
        return await self.advisor(a.id)

    async def advisor_for_telegram(self, user_id: str, username: str | None) -> AdvisorView | None:
        """The advisor behind a Telegram account (linked by id, else by @username, which
        links the id on first use)."""
        async with self.db.session() as session:
            a = (await session.execute(select(Advisor).where(
                Advisor.active.is_(True), Advisor.telegram_user_id == user_id))).scalar_one_or_none()
            if a is None and username:
                a = (await session.execute(select(Advisor).where(
                    Advisor.active.is_(True), Advisor.telegram_user_id.is_(None),
                    func.lower(Advisor.telegram_username) == username.lower()))
                ).scalar_one_or_none()
                if a is not None:
                    a.telegram_user_id = user_id
            if a is None:
                return None
            advisor_id = a.id
        return await self.advisor(advisor_id)

    async def set_shift(self, advisor_id: int, on_shift: bool) -> None:
        async with self.db.session() as session:
            a = await session.get(Advisor, advisor_id)
            if a is None:
                raise NotFound(f"advisor {advisor_id} not found")
            a.on_shift = on_shift
        await self.emit({"type": "shift", "advisor_id": advisor_id, "on_shift": on_shift,
                         "origin": "system"})
        if on_shift:
            await self.route_waiting()

    # ================================================================ permissions
    async def _load(self, session: Any, conversation_id: int) -> tuple[Conversation, Handoff]:
        conv = await session.get(Conversation, conversation_id)
        if conv is None:
            raise NotFound(f"conversation {conversation_id} not found")
        h = (await session.execute(select(Handoff).where(
            Handoff.conversation_id == conversation_id).order_by(Handoff.id.desc()).limit(1))
        ).scalar_one_or_none()
        if h is None:
            raise NotFound(f"conversation {conversation_id} was never handed to an advisor")
        return conv, h

    @staticmethod
    def _may_view(advisor: Advisor, h: Handoff) -> bool:
        if advisor.role in (Role.ADMIN, Role.MANAGER):
            return True
        if h.status is HandoffStatus.WAITING:
            return not h.needs_senior or advisor.senior
        return h.advisor_id == advisor.id

    async def _actor(self, session: Any, advisor_id: int, *, touch: bool = True) -> Advisor:
        a = await session.get(Advisor, advisor_id)
        if a is None or not a.active:
            raise NotAllowed("unknown or inactive advisor")
        if touch:
            a.last_seen_at = self.now()
        return a

    async def can_view(self, advisor_id: int, conversation_id: int) -> bool:
        """Read-only: may this advisor see the conversation (role and assignment)?"""
        async with self.db.session() as session:
            a = await self._actor(session, advisor_id, touch=False)
            try:
                _conv, h = await self._load(session, conversation_id)
            except NotFound:
                return False
            return self._may_view(a, h)

    # ================================================================ advisor actions
    async def claim(self, conversation_id: int, advisor_id: int, *,
                    origin: str = "console") -> HandoffView:
        """Take a waiting conversation (managers and admins may also take an assigned one)."""
        async with self.locks.hold("handoff:routing", ttl=30.0):
            async with self.db.session() as session:
                a = await self._actor(session, advisor_id)
                conv, h = await self._load(session, conversation_id)
                if h.status is HandoffStatus.ASSIGNED and h.advisor_id == a.id:
                    pass
                elif h.status is HandoffStatus.WAITING:
                    if h.needs_senior and not a.senior and a.role is Role.ADVISOR:
                        raise NotAllowed("this member needs a senior advisor")
                    await self._assign(session, h, a, actor=f"advisor:{a.id}")
                elif h.status is HandoffStatus.ASSIGNED and a.role is not Role.ADVISOR:
                    h.reassignments += 1
                    await self._assign(session, h, a, actor=f"advisor:{a.id}")
                else:
                    raise NotAllowed("this conversation is not waiting")
                event = self._assigned_event(h, a, origin)
        await self.emit(event)
        return await self.view(conversation_id)

    async def transfer(self, conversation_id: int, *, by_advisor_id: int,
                       to_advisor_id: int | None, origin: str = "console") -> HandoffView:
        """Give the conversation to another advisor, or back to the queue (``None``)."""
        async with self.locks.hold("handoff:routing", ttl=30.0):
            async with self.db.session() as session:
                a = await self._actor(session, by_advisor_id)
                conv, h = await self._load(session, conversation_id)
                if h.status not in OPEN or not self._may_view(a, h):
                    raise NotAllowed("you cannot transfer this conversation")
                if to_advisor_id is None:
                    if h.status is HandoffStatus.ASSIGNED:
                        await ConversationRepository(session).change_status(
                            conv, ConversationStatus.WAITING, actor=f"advisor:{a.id}",
                            data={"transfer": "queue"})
                    h.status, h.advisor_id, h.assigned_at = HandoffStatus.WAITING, None, None
                    h.reassignments += 1
                    event = {"type": "unassigned", "handoff_id": h.id,
                             "conversation_id": conversation_id, "advisor_id": a.id,
                             "reason": "transfer", "origin": origin}
                else:
                    target = await session.get(Advisor, to_advisor_id)
                    if target is None or not target.active:
                        raise NotFound("no such advisor")
                    if h.needs_senior and not target.senior:
                        raise NotAllowed("this member needs a senior advisor")
                    h.reassignments += 1
                    await self._assign(session, h, target, actor=f"advisor:{a.id}")
                    event = self._assigned_event(h, target, origin)
                    event["transferred_by"] = a.display_name
        await self.emit(event)
        if to_advisor_id is None:
            await self.route_waiting()
        return await self.view(conversation_id)

    async def reply(self, conversation_id: int, *, advisor_id: int, text: str = "",
                    image: Image | None = None, origin: str = "console") -> ReplyResult:
        """Send an advisor's message to the customer through the platform interface."""
        text = (text or "").strip()
        if not text and image is None:
            raise HandoffError("an empty reply cannot be sent")
        if len(text) > 4000 * 4:
            raise HandoffError("the reply is too long (16,000 characters at most)")
        async with self.db.session() as session:
            a = await self._actor(session, advisor_id)
            conv, h = await self._load(session, conversation_id)
            if h.status is HandoffStatus.WAITING and self._may_view(a, h):
                await self._assign(session, h, a, actor=f"advisor:{a.id}")
                claimed = self._assigned_event(h, a, origin)
            else:
                claimed = None
            if h.status is not HandoffStatus.ASSIGNED or (
                    h.advisor_id != a.id and a.role is Role.ADVISOR):
                raise NotAllowed("this conversation is not assigned to you")
            if h.first_response_at is None:
                h.first_response_at = self.now()
            chat = await session.get(Chat, conv.chat_id)
            assert chat is not None
            ref = ChatRef(chat.platform, ChatKind.PRIVATE, chat.external_id)
            sender = f"advisor:{a.id}"
            name = a.display_name
        if claimed:
            await self.emit(claimed)
        result = await self.outbound.send(
            ref, OutgoingMessage(text=text, image=image, sender=sender),
            conversation_id=conversation_id, contact_id=conv.contact_id)
        await self.emit(self._out_event(conversation_id, result, text, name, advisor_id, origin,
                                        image))
        return ReplyResult(result.ok, result.message_id, result.error)

    def _out_event(self, conversation_id: int, result: DeliveryResult, text: str, name: str,
                   advisor_id: int, origin: str, image: Image | None) -> dict[str, Any]:
        return {"type": "message", "direction": "out", "origin": origin,
                "conversation_id": conversation_id, "message_id": result.message_id,
                "text": text, "sender": name, "advisor_id": advisor_id,
                "status": "sent" if result.ok else "failed", "error": result.error,
                "image": {"file_id": image.file_id, "url": image.url} if image else None}

    async def retry(self, message_id: int, *, advisor_id: int,
                    origin: str = "console") -> ReplyResult:
        """Send a failed advisor message again (same stored row)."""
        async with self.db.session() as session:
            a = await self._actor(session, advisor_id)
            msg = await session.get(Message, message_id)
            if msg is None or msg.direction is not MessageDirection.OUT or \
                    not (msg.sender or "").startswith("advisor:"):
                raise NotFound("no such advisor message")
            if msg.conversation_id is None:
                raise NotFound("the message has no conversation")
            _conv, h = await self._load(session, msg.conversation_id)
            if not self._may_view(a, h):
                raise NotAllowed("not your conversation")
            if msg.status is not MessageStatus.FAILED:
                raise HandoffError("only a failed message can be retried")
            chat = await session.get(Chat, msg.chat_id)
            assert chat is not None
            ref = ChatRef(chat.platform, ChatKind.PRIVATE, chat.external_id)
            payload = msg.payload or {}
            img = payload.get("image")
            out = OutgoingMessage(text=msg.text or "", sender=msg.sender or "advisor",
                                  image=Image(url=img.get("url"), file_id=img.get("file_id"))
                                  if img else None)
            conversation_id = msg.conversation_id
            name = a.display_name
            msg.status = MessageStatus.PENDING
            msg.error = None
        platform = self.outbound.platforms.get(ref.platform)
        if platform is None:
            result = DeliveryResult(False, message_id, error=f"platform {ref.platform} is off")
        else:
            result = await self.outbound.deliver(platform, ref, out)
        result.message_id = message_id
        async with self.db.session() as session:
            messages = MessageRepository(session)
            if result.ok:
                await messages.mark_sent(message_id, result.platform_message_ids,
                                         result.attempts)
            else:
                await messages.mark_failed(message_id, result.error or "failed", result.attempts)
        event = self._out_event(conversation_id, result, out.text, name, advisor_id, origin,
                                out.image)
        event["type"], event["retry"] = "message_status", True
        await self.emit(event)
        return ReplyResult(result.ok, message_id, result.error)

    async def note(self, conversation_id: int, *, advisor_id: int, text: str,
                   origin: str = "console") -> int:
        """An internal note: shown to advisors, never sent to the customer."""
        text = (text or "").strip()
        if not text:
            raise HandoffError("an empty note cannot be saved")
        async with self.db.session() as session:
            a = await self._actor(session, advisor_id)
            _conv, h = await self._load(session, conversation_id)
            if not self._may_view(a, h):
                raise NotAllowed("not your conversation")
            row = ConversationNote(conversation_id=conversation_id, advisor_id=a.id,
                                   text=text[:8000], created_at=self.now())
            session.add(row)
            await session.flush()
            note_id, name = row.id, a.display_name
        await self.emit({"type": "note", "conversation_id": conversation_id, "note_id": note_id,
                         "text": text[:8000], "sender": name, "advisor_id": advisor_id,
                         "origin": origin})
        return note_id

    async def resolve(self, conversation_id: int, *, advisor_id: int,
                      origin: str = "console") -> HandoffView:
        """Close the handoff: the bot takes over again, the customer is asked for a rating."""
        async with self.db.session() as session:
            a = await self._actor(session, advisor_id)
            conv, h = await self._load(session, conversation_id)
            if h.status not in OPEN:
                raise NotAllowed("this conversation is already closed")
            if not self._may_view(a, h):
                raise NotAllowed("not your conversation")
            if h.status is HandoffStatus.WAITING:  # resolved straight from the queue
                h.advisor_id = a.id
                h.assigned_at = h.assigned_at or self.now()
            try:
                await ConversationRepository(session).change_status(
                    conv, ConversationStatus.RESOLVED, actor=f"advisor:{a.id}")
            except InvalidTransition as exc:
                raise NotAllowed(str(exc)) from exc
            h.status = HandoffStatus.RESOLVED
            h.resolved_at = self.now()
            if h.contact_id is not None:
                owner = await session.get(AdvisorCustomer, h.contact_id)
                if owner is None:
                    session.add(AdvisorCustomer(contact_id=h.contact_id, advisor_id=a.id,
                                                since=self.now()))
                elif owner.advisor_id == a.id:
                    owner.since = self.now()
            chat = await session.get(Chat, conv.chat_id)
            assert chat is not None
            ref = ChatRef(chat.platform, ChatKind.PRIVATE, chat.external_id)
            contact = await session.get(Contact, conv.contact_id) if conv.contact_id else None
            lang = h.language or (contact.language if contact else None)
            handoff_id, contact_id = h.id, conv.contact_id
        await self.emit({"type": "resolved", "handoff_id": handoff_id,
                         "conversation_id": conversation_id, "advisor_id": advisor_id,
                         "origin": origin})
        rows = [[Button(str(n), callback_data=f"csat:{handoff_id}:{n}") for n in range(1, 6)]]
        await self.outbound.send(ref, OutgoingMessage(
            text=self.translate("handoff_resolved", lang)), conversation_id=conversation_id,
            contact_id=contact_id)
        if self.settings.csat:
            await self.outbound.send(ref, OutgoingMessage(
                text=self.translate("csat_question", lang), buttons=rows),
                conversation_id=conversation_id, contact_id=contact_id)
        await self.route_waiting()
        return await self.view(conversation_id)

    async def record_csat(self, handoff_id: int, score: int, *, contact_id: int) -> bool:
        """Store the customer's 1-5 rating once. False if it was not theirs or already rated."""
        if not 1 <= score <= 5:
            return False
        async with self.db.session() as session:
            result = await session.execute(
                update(Handoff).where(Handoff.id == handoff_id, Handoff.contact_id == contact_id,
                                      Handoff.status == HandoffStatus.RESOLVED,
                                      Handoff.csat.is_(None))
                .values(csat=score, csat_at=self.now()))
            ok = bool(getattr(result, "rowcount", 0))
            conversation_id = (await session.execute(select(Handoff.conversation_id).where(
                Handoff.id == handoff_id))).scalar_one_or_none()
        if ok:
            await self.emit({"type": "csat", "handoff_id": handoff_id, "score": score,
                             "conversation_id": conversation_id, "origin": "customer"})
        return ok

    # ================================================================ reading
    async def view(self, conversation_id: int) -> HandoffView:
        views = await self._views(Handoff.conversation_id == conversation_id, limit=1)
        if not views:
            raise NotFound(f"conversation {conversation_id} was never handed to an advisor")
        return views[0]

    async def queue(self, advisor_id: int | None = None) -> list[HandoffView]:
        """Waiting conversations, oldest first (for an advisor: those they may take)."""
        views = await self._views(Handoff.status == HandoffStatus.WAITING, oldest_first=True)
        if advisor_id is None:
            return views
        async with self.db.session() as session:
            a = await self._actor(session, advisor_id)
            senior = a.senior or a.role is not Role.ADVISOR
        return [v for v in views if senior or not v.needs_senior]

    async def mine(self, advisor_id: int) -> list[HandoffView]:
        return await self._views(and_(Handoff.status == HandoffStatus.ASSIGNED,
                                      Handoff.advisor_id == advisor_id), oldest_first=True)

    async def open_conversations(self) -> list[HandoffView]:
        return await self._views(Handoff.status.in_(OPEN), oldest_first=True)

    async def recent(self, limit: int = 50, advisor_id: int | None = None) -> list[HandoffView]:
        cond: Any = Handoff.status.in_((HandoffStatus.RESOLVED, HandoffStatus.CANCELLED))
        if advisor_id is not None:
            cond = and_(cond, Handoff.advisor_id == advisor_id)
        return await self._views(cond, limit=limit)

    async def by_thread(self, thread_id: str) -> HandoffView | None:
        views = await self._views(Handoff.forum_thread_id == thread_id, limit=1)
        return views[0] if views else None

    async def set_thread(self, handoff_id: int, thread_id: str) -> None:
        async with self.db.session() as session:
            await session.execute(update(Handoff).where(Handoff.id == handoff_id)
                                  .values(forum_thread_id=thread_id))

    async def thread_for_contact(self, contact_id: int) -> str | None:
        """The forum topic this customer had last (a returning customer keeps one topic)."""
        async with self.db.session() as session:
            return (await session.execute(
                select(Handoff.forum_thread_id).where(Handoff.contact_id == contact_id,
                                                      Handoff.forum_thread_id.is_not(None))
                .order_by(Handoff.id.desc()).limit(1))).scalar_one_or_none()

    async def _views(self, cond: Any, *, limit: int = 500,
                     oldest_first: bool = False) -> list[HandoffView]:
        order = (Handoff.requested_at, Handoff.id) if oldest_first else (Handoff.id.desc(),)
        async with self.db.session() as session:
            latest = (select(func.max(Handoff.id)).group_by(Handoff.conversation_id)
                      .scalar_subquery())
            rows = (await session.execute(
                select(Handoff, Contact.display_name, Chat.platform, Advisor.display_name)
                .join(Conversation, Conversation.id == Handoff.conversation_id)
                .join(Chat, Chat.id == Conversation.chat_id)
                .outerjoin(Contact, Contact.id == Handoff.contact_id)
                .outerjoin(Advisor, Advisor.id == Handoff.advisor_id)
                .where(cond, Handoff.id.in_(latest)).order_by(*order).limit(limit))).all()
            ids = [h.conversation_id for h, *_ in rows]
            last: dict[int, str] = {}
            if ids:
                sub = (select(func.max(Message.id)).where(
                    Message.conversation_id.in_(ids), Message.direction == MessageDirection.IN,
                    Message.kind.in_(("text", "photo"))).group_by(Message.conversation_id)
                    .scalar_subquery())
                for cid, text in (await session.execute(
                        select(Message.conversation_id, Message.text).where(
                            Message.id.in_(sub)))).all():
                    if cid is not None:
                        last[cid] = text or ""
        return [HandoffView(
            handoff_id=h.id, conversation_id=h.conversation_id, contact_id=h.contact_id,
            customer=name or f"#{h.contact_id}", platform=platform, language=h.language,
            status=h.status.value, trigger=h.trigger, question=h.question,
            advisor_id=h.advisor_id, advisor=adv, requested_at=h.requested_at,
            assigned_at=h.assigned_at, first_response_at=h.first_response_at,
            resolved_at=h.resolved_at, needs_senior=h.needs_senior,
            last_message=last.get(h.conversation_id), forum_thread_id=h.forum_thread_id,
            csat=h.csat) for h, name, platform, adv in rows]

    async def transcript(self, conversation_id: int, *, advisor_id: int | None = None,
                         limit: int = 200) -> list[TranscriptItem]:
        """The customer's recent messages across their conversations in this chat, the
        advisors' replies (with delivery status) and internal notes, oldest first."""
        async with self.db.session() as session:
            conv = await session.get(Conversation, conversation_id)
            if conv is None:
                raise NotFound(f"conversation {conversation_id} not found")
            if advisor_id is not None:
                a = await self._actor(session, advisor_id)
                _c, h = await self._load(session, conversation_id)
                if not self._may_view(a, h):
                    raise NotAllowed("not your conversation")
            msgs = (await session.execute(
                select(Message).where(Message.chat_id == conv.chat_id,
                                      Message.kind != "callback")
                .order_by(Message.id.desc()).limit(limit))).scalars().all()
            notes = (await session.execute(
                select(ConversationNote, Advisor.display_name)
                .outerjoin(Advisor, Advisor.id == ConversationNote.advisor_id)
                .where(ConversationNote.conversation_id == conversation_id))).all()
            names = dict((await session.execute(select(Advisor.id, Advisor.display_name)))
                         .all())
        items = [TranscriptItem(
            id=m.id, kind=m.direction.value, text=m.text or "",
            sender=_sender_name(m.sender, names),
            status=m.status.value if m.direction is MessageDirection.OUT else None,
            error=m.error, at=m.created_at, image=(m.payload or {}).get("image"))
            for m in msgs]
        items += [TranscriptItem(id=n.id, kind="note", text=n.text, sender=name, status=None,
                                 error=None, at=n.created_at) for n, name in notes]
        items.sort(key=lambda i: (i.at, i.kind == "note", i.id))
        return items

    async def latest_question(self, conversation_id: int) -> str | None:
        async with self.db.session() as session:
            conv = await session.get(Conversation, conversation_id)
            if conv is None:
                return None
            text = (await session.execute(
                select(Message.text).where(Message.chat_id == conv.chat_id,
                                           Message.direction == MessageDirection.IN,
                                           Message.kind == "text")
                .order_by(Message.id.desc()).limit(1))).scalar_one_or_none()
            if text:
                return text
            h = (await session.execute(select(Handoff.question).where(
                Handoff.conversation_id == conversation_id).order_by(Handoff.id.desc())
                .limit(1))).scalar_one_or_none()
            return h

    async def suggestions(self, conversation_id: int, *, question: str | None = None,
                          limit: int = 3) -> list[Suggestion]:
        """Agent assist: the knowledge base's best answers to the customer's latest question."""
        if self.knowledge is None:
            return []
        question = question or await self.latest_question(conversation_id)
        if not question:
            return []
        view = await self.view(conversation_id)
        try:
            answer = await self.knowledge.answer(question, language=view.language)
        except Exception:
            log.exception("agent assist failed")
            return []
        out: list[Suggestion] = []
        seen: set[str] = set()
        for entry, conf in _ranked(answer):
            if entry.key in seen:
                continue
            seen.add(entry.key)
            out.append(Suggestion(entry.key, entry.question, entry.answer, round(conf, 3)))
            if len(out) >= limit:
                break
        if len(out) < limit and answer.hits:
            for hit in answer.hits:
                if hit.key in seen:
                    continue
                entry = await self.knowledge.get_entry(hit.key, language=view.language)
                if entry is None:
                    continue
                seen.add(hit.key)
                out.append(Suggestion(entry.key, entry.question, entry.answer,
                                      round(float(hit.score), 3)))
                if len(out) >= limit:
                    break
        return out

    async def profile(self, contact_id: int) -> dict[str, Any]:
        """What an advisor sees about the customer: identities, language, CRM profile."""
        async with self.db.session() as session:
            contact = await session.get(Contact, contact_id)
            if contact is None:
                raise NotFound(f"contact {contact_id} not found")
            identities = (await session.execute(select(ContactIdentity).where(
                ContactIdentity.contact_id == contact_id))).scalars().all()
            past = (await session.execute(select(func.count()).select_from(Handoff).where(
                Handoff.contact_id == contact_id))).scalar_one()
            owner = await session.get(AdvisorCustomer, contact_id)
            owner_name = None
            if owner is not None:
                adv = await session.get(Advisor, owner.advisor_id)
                owner_name = adv.display_name if adv else None
            out: dict[str, Any] = {
                "contact_id": contact_id, "name": contact.display_name,
                "language": contact.language,
                "identities": [{"platform": i.platform, "username": i.username,
                                "language_code": i.language_code,
                                "reachable": i.reachable} for i in identities],
                "handoffs": int(past), "own_advisor": owner_name,
                "since": contact.created_at.isoformat(),
            }
        if self.crm is not None:
            try:
                view = await self.crm.members.profile(contact_id)
                out["crm"] = view.to_dict()
            except Exception as exc:
                log.info("no crm profile", extra={"contact": contact_id, "error": str(exc)})
        return out

    # ================================================================ canned responses
    async def canned(self, language: str | None = None) -> list[dict[str, Any]]:
        async with self.db.session() as session:
            stmt = select(CannedResponse).order_by(CannedResponse.shortcut)
            if language:
                stmt = stmt.where(CannedResponse.language == language)
            return [{"id": c.id, "shortcut": c.shortcut, "language": c.language,
                     "text": c.text} for c in (await session.execute(stmt)).scalars()]

    async def add_canned(self, shortcut: str, language: str, text: str) -> int:
        shortcut, text = shortcut.strip().lstrip("/"), text.strip()
        if not shortcut or not text or len(shortcut) > 32:
            raise HandoffError("a canned response needs a shortcut (1-32 characters) and text")
        async with self.db.session() as session:
            row = (await session.execute(select(CannedResponse).where(
                CannedResponse.shortcut == shortcut, CannedResponse.language == language))
            ).scalar_one_or_none()
            if row is None:
                row = CannedResponse(shortcut=shortcut, language=language, text=text)
                session.add(row)
            else:
                row.text = text
            await session.flush()
            return row.id

    async def delete_canned(self, canned_id: int) -> bool:
        async with self.db.session() as session:
            row = await session.get(CannedResponse, canned_id)
            if row is None:
                return False
            await session.delete(row)
            return True


def _ranked(answer: Any) -> list[tuple[Any, float]]:
    out: list[tuple[Any, float]] = []
    if getattr(answer, "entry", None) is not None:
        out.append((answer.entry, float(answer.confidence)))
    scores = {h.key: float(h.score) for h in getattr(answer, "hits", []) or []}
    for s in getattr(answer, "suggestions", []) or []:
        out.append((s, scores.get(s.key, float(answer.confidence))))
    return out


def _sender_name(sender: str | None, names: dict[int, str]) -> str | None:
    if sender and sender.startswith("advisor:"):
        ident = sender.partition(":")[2]
        if ident.isdigit() and int(ident) in names:
            return names[int(ident)]
    return sender


def _advisor_view(a: Advisor, load: int) -> AdvisorView:
    return AdvisorView(a.id, a.username, a.display_name, a.role.value, list(a.languages or []),
                       list(a.skills or []), a.capacity, a.senior, a.on_shift,
                       a.telegram_username, load)
