"""The advisors' Telegram workspace: a forum supergroup with one topic per handed-off customer.

A handoff opens a topic named after the customer (a returning customer gets their old topic
back, reopened) that starts with a summary card: who they are, their CRM tags, the last
messages, the question the bot could not answer and the knowledge base's suggested answers.
What the customer writes appears in the topic; what an advisor writes there (text or photo)
goes to the customer through the desk, so through the one outbound path. Commands in a topic:
``/note`` (internal), ``/transfer @advisor`` (or alone: back to the queue), ``/claim``,
``/suggest``, ``/resolve`` (which closes the topic). In the General topic: ``/queue`` and
``/shift on|off``.

Changes made elsewhere (the web console, routing) are mirrored into the topic as short lines;
nothing is shown back where it came from (events with ``origin == "forum"`` are not mirrored).
Everything the workspace posts goes through :class:`bot.core.outbound.Outbound` from one
background queue, in order, so a slow or rate-limited forum never holds up a customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bot.core.outbound import DeliveryResult, Outbound
from bot.core.ports import ForumAdmin
from bot.core.types import (
    ChatKind,
    ChatRef,
    Image,
    IncomingMessage,
    OutgoingMessage,
    PermanentSendError,
    SendError,
)
from bot.handoff.service import (
    AdvisorView,
    HandoffError,
    HandoffService,
    HandoffView,
    NotFound,
)

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]

# Everything the workspace says, in one place. The forum is for staff: English.
TEXTS: dict[str, str] = {
    "topic_name": "{customer} · {language} · #{contact}",
    "card_title": "🆕 {customer} · {language} · #{contact}",
    "card_returning": "🔁 Returning customer: {count} earlier handoff(s){owner}",
    "card_owner": ", own advisor {name}",
    "card_status_waiting": "{trigger} · waiting in the queue",
    "card_status_assigned": "{trigger} · assigned to {advisor}",
    "card_contact": "{platform} {handle} · customer since {since}",
    "card_crm_tier": "Tier: {tier}",
    "card_crm_level": "level: {level}",
    "card_crm_tags": "tags: {tags}",
    "card_crm_orders": "orders: {orders}",
    "card_senior": "⚠ Needs a senior advisor",
    "card_question": "❓ The bot could not answer:\n{question}",
    "card_history": "Last messages:",
    "card_suggestions": "💡 Suggested answers (adapt, then send):",
    "card_suggestion": "{n}. {question} ({confidence:.0%})\n{answer}",
    "card_no_suggestions": "💡 No suggested answers from the knowledge base.",
    "card_help": "Write here to answer the customer (text or photo). /note TEXT is internal. "
                 "/transfer @advisor · /transfer (back to the queue) · /claim · /suggest · "
                 "/resolve",
    "history_in": "👤 {text}",
    "history_out_bot": "🤖 {text}",
    "history_out_advisor": "💬 {sender}: {text}",
    "customer": "👤 {customer}: {text}",
    "customer_photo": "👤 {customer} sent a photo{caption}",
    "console_reply": "💬 {sender} (console): {text}",
    "console_photo": "💬 {sender} (console) sent a photo{caption}",
    "not_delivered": "⚠ Not delivered to the customer: {error}",
    "retried": "↻ {sender} sent a failed message again: {status}",
    "note": "📝 Note by {sender}: {text}",
    "assigned": "👤 Assigned to {advisor}",
    "taken_console": "✋ {advisor} took the conversation (console)",
    "transferred": "↪ {by} passed the conversation to {advisor}",
    "unassigned_timeout": "⏱ No answer in time: back in the queue",
    "unassigned": "↩ Back in the queue",
    "resolved_console": "✅ Resolved by {advisor} (console)",
    "resolved_here": "✅ Resolved by {advisor}. The customer was asked to rate the help.",
    "claimed_here": "✋ {advisor} took the conversation",
    "transferred_here": "↪ Passed to {advisor}",
    "queued_here": "↩ Back in the queue",
    "note_saved": "📝 Note saved; it is not sent to the customer.",
    "csat": "⭐ {customer} rated the help {score}/5{link}",
    "unknown_advisor": "{who} is not linked to an advisor account, so nothing was sent. "
                       "A manager can link it: kizuna advisors update USERNAME --telegram "
                       "@{username}",
    "not_customer_topic": "This topic does not belong to a customer conversation.",
    "conversation_closed": "This conversation is {status}; nothing was sent to the customer.",
    "photo_elsewhere": "Photos can only be passed to customers on {platform}; nothing was sent.",
    "refused": "⚠ {reason}",
    "failed": "⚠ Something went wrong; nothing was changed. Try again or use the console.",
    "open_failed": "⚠ Could not open a topic for {customer}: {error}",
    "queue_empty": "Nobody is waiting.",
    "queue_title": "Waiting ({count}):",
    "queue_row": "• {customer} · {language} · {minutes} min · {trigger}{link}",
    "shift_on": "🟢 {advisor} is on shift.",
    "shift_off": "⚪ {advisor} is off shift.",
    "shift_usage": "{advisor} is {state}. Use /shift on or /shift off.",
    "general_help": "Commands here: /queue (who is waiting) · /shift on|off. "
                    "Customer conversations each have their own topic.",
}

TRIGGERS = {
    "button": "Tapped “Talk to a person”",
    "request_human": "Asked for a person",
    "complaint": "Complaint",
    "failures": "The bot could not answer",
}

HISTORY = 6  # transcript lines on the card
LINE = 300  # characters of one quoted message on the card
REMEMBER = 5000  # conversations (and unrated resolutions) kept in memory


def say(key: str, **values: Any) -> str:
    return TEXTS[key].format(**values)


def _clip(text: str | None, limit: int = LINE) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Topic:
    """What the workspace remembers about one conversation's topic."""

    __slots__ = ("thread_id", "customer", "platform", "contact_id")

    def __init__(self, thread_id: str, customer: str, platform: str,
                 contact_id: int | None) -> None:
        self.thread_id = thread_id
        self.customer = customer
        self.platform = platform
        self.contact_id = contact_id


class ForumWorkspace:
    """One forum group as the advisors' workspace over the handoff desk."""

    def __init__(self, *, desk: HandoffService, outbound: Outbound, chat: ChatRef,
                 history: int = HISTORY, suggestions: int = 3) -> None:
        self.desk = desk
        self.outbound = outbound
        self.chat = chat
        self.history = history
        self.suggestions = suggestions
        self._topics: dict[int, _Topic] = {}  # conversation id -> topic
        self._resolved: dict[int, int] = {}  # handoff id -> conversation id (for CSAT)
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # ================================================================ background queue
    def _enqueue(self, job: Job) -> None:
        self._jobs.put_nowait(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="forum-workspace")

    async def _run(self) -> None:
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            try:
                await job()
            except Exception:
                log.exception("forum workspace job failed")
            finally:
                self._jobs.task_done()

    async def idle(self) -> None:
        """Wait until everything queued so far was posted (tests, shutdown)."""
        await self._jobs.join()

    async def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), timeout)
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None

    def _say(self, thread_id: str | None, text: str) -> None:
        async def job() -> None:
            await self._post(thread_id, text)

        self._enqueue(job)

    async def _post(self, thread_id: str | None, text: str,
                    image: Image | None = None) -> DeliveryResult:
        result = await self.outbound.send(self.chat, OutgoingMessage(
            text=text, image=image, thread_id=thread_id))
        if not result.ok:
            log.warning("forum post failed", extra={"thread": thread_id, "error": result.error})
        return result

    def _admin(self) -> ForumAdmin | None:
        platform = self.outbound.platforms.get(self.chat.platform)
        if isinstance(platform, ForumAdmin):
            return platform
        log.error("the forum platform cannot manage topics", extra={
            "platform": self.chat.platform})
        return None

    def link(self, thread_id: str | None) -> str:
        """A link to the topic (Telegram supergroups), or an empty string."""
        if thread_id and self.chat.id.startswith("-100"):
            return f" → https://t.me/c/{self.chat.id[4:]}/{thread_id}"
        return ""

    # ================================================================ desk events
    async def on_event(self, event: dict[str, Any]) -> None:
        """A desk listener: queue the event for the forum (never blocks the caller)."""
        kind = event.get("type")
        if kind == "resolved" and isinstance(event.get("handoff_id"), int):
            _put(self._resolved, event["handoff_id"], int(event["conversation_id"]))
        if kind not in ("handoff", "assigned", "unassigned", "message", "message_status",
                        "note", "resolved", "csat"):
            return

        async def job() -> None:
            await self._handle(event)

        self._enqueue(job)

    async def _handle(self, e: dict[str, Any]) -> None:
        try:
            await self._mirror(e)
        finally:
            conversation_id = e.get("conversation_id")
            if e["type"] == "resolved" and isinstance(conversation_id, int):
                self._topics.pop(conversation_id, None)  # nothing more comes for it

    async def _mirror(self, e: dict[str, Any]) -> None:
        kind = e["type"]
        if kind == "handoff":
            await self._open_topic(int(e["conversation_id"]))
            return
        if kind == "csat":
            await self._csat(e)
            return
        if e.get("origin") == "forum":
            return  # never shown back where it came from
        topic = await self._topic(e.get("conversation_id"))
        if topic is None:
            return
        thread = topic.thread_id
        if kind == "message" and e.get("direction") == "in":
            await self._mirror_customer(topic, e)
        elif kind == "message":
            await self._post(thread, self._console_line(e))
        elif kind == "message_status":
            await self._post(thread, say("retried", sender=e.get("sender") or "?",
                                         status=_status(e)))
        elif kind == "note":
            await self._post(thread, say("note", sender=e.get("sender") or "?",
                                         text=e.get("text") or ""))
        elif kind == "assigned":
            await self._post(thread, await self._assigned_line(e))
        elif kind == "unassigned":
            reason = "unassigned_timeout" if e.get("reason") == "timeout" else "unassigned"
            await self._post(thread, say(reason))
        elif kind == "resolved":
            name = await self._advisor_name(e.get("advisor_id"))
            await self._post(thread, say("resolved_console", advisor=name))
            await self._close(thread)

    async def _topic(self, conversation_id: Any) -> _Topic | None:
        if not isinstance(conversation_id, int):
            return None
        topic = self._topics.get(conversation_id)
        if topic is not None:
            return topic
        try:
            view = await self.desk.view(conversation_id)
        except NotFound:
            return None
        if not view.forum_thread_id:
            return None
        return self._remember(view, view.forum_thread_id)

    def _remember(self, view: HandoffView, thread_id: str) -> _Topic:
        topic = _Topic(thread_id, view.customer, view.platform, view.contact_id)
        _put(self._topics, view.conversation_id, topic)
        return topic

    async def _mirror_customer(self, topic: _Topic, e: dict[str, Any]) -> None:
        name = e.get("sender") or topic.customer
        text = e.get("text") or ""
        image = e.get("image") or None
        if image:
            caption = f": {text}" if text else ""
            line = say("customer_photo", customer=name, caption=caption)
            file_id, url = image.get("file_id"), image.get("url")
            if file_id and topic.platform == self.chat.platform:
                await self._post(topic.thread_id, line, Image(file_id=file_id))
                return
            await self._post(topic.thread_id, f"{line}\n{url}" if url else line)
            return
        await self._post(topic.thread_id, say("customer", customer=name, text=text))

    def _console_line(self, e: dict[str, Any]) -> str:
        sender, text = e.get("sender") or "?", e.get("text") or ""
        if e.get("image"):
            line = say("console_photo", sender=sender, caption=f": {text}" if text else "")
        else:
            line = say("console_reply", sender=sender, text=text)
        if e.get("status") == "failed":
            line += "\n" + say("not_delivered", error=e.get("error") or "unknown error")
        return line

    async def _assigned_line(self, e: dict[str, Any]) -> str:
        advisor = await self._advisor_label(e.get("advisor_id"), e.get("advisor"))
        if e.get("transferred_by"):
            return say("transferred", by=e["transferred_by"], advisor=advisor)
        if e.get("origin") == "console":
            return say("taken_console", advisor=advisor)
        return say("assigned", advisor=advisor)

    async def _advisor_label(self, advisor_id: Any, fallback: str | None = None) -> str:
        """The advisor's name with their Telegram @username (so Telegram notifies them)."""
        if not isinstance(advisor_id, int):
            return fallback or "?"
        try:
            a = await self.desk.advisor(advisor_id)
        except HandoffError:
            return fallback or f"#{advisor_id}"
        return _label(a)

    async def _advisor_name(self, advisor_id: Any) -> str:
        if not isinstance(advisor_id, int):
            return "?"
        try:
            return (await self.desk.advisor(advisor_id)).display_name
        except HandoffError:
            return f"#{advisor_id}"

    async def _csat(self, e: dict[str, Any]) -> None:
        handoff_id = e.get("handoff_id")
        conversation_id = self._resolved.pop(handoff_id, None) \
            if isinstance(handoff_id, int) else None
        if conversation_id is None:
            for view in await self.desk.recent(limit=200):
                if view.handoff_id == handoff_id:
                    conversation_id = view.conversation_id
                    break
        if conversation_id is None:
            return
        topic = await self._topic(conversation_id)
        if topic is None:
            return
        # The topic was closed on resolve: the rating goes to the General topic, linked.
        await self._post(None, say("csat", customer=topic.customer, score=e.get("score"),
                                   link=self.link(topic.thread_id)))

    # ================================================================ topics
    async def _open_topic(self, conversation_id: int) -> None:
        try:
            view = await self.desk.view(conversation_id)
        except NotFound:
            return
        thread = view.forum_thread_id
        if thread is None:
            thread = await self._reuse_topic(view)
        if thread is None:
            admin = self._admin()
            if admin is None:
                return
            try:
                thread = await admin.create_forum_topic(self.chat, topic_name(view))
            except SendError as exc:
                log.error("forum topic not created", extra={"error": exc.description})
                await self._post(None, say("open_failed", customer=view.customer,
                                           error=exc.description))
                return
        if view.forum_thread_id != thread:
            await self.desk.set_thread(view.handoff_id, thread)
        topic = self._remember(view, thread)
        await self._post(topic.thread_id, await self.card(view))

    async def _reuse_topic(self, view: HandoffView) -> str | None:
        """The customer's previous topic, reopened; None when there is none or it is gone."""
        if view.contact_id is None:
            return None
        previous = await self.desk.thread_for_contact(view.contact_id)
        admin = self._admin()
        if previous is None or admin is None:
            return None
        try:
            await admin.reopen_forum_topic(self.chat, previous)
        except PermanentSendError as exc:  # deleted by someone: start a new one
            log.info("previous forum topic unusable", extra={"error": exc.description})
            return None
        except SendError as exc:
            log.warning("reopening a forum topic failed", extra={"error": exc.description})
        return previous

    async def _close(self, thread_id: str) -> None:
        admin = self._admin()
        if admin is None:
            return
        try:
            await admin.close_forum_topic(self.chat, thread_id)
        except SendError as exc:
            log.warning("closing a forum topic failed", extra={"error": exc.description})

    async def card(self, view: HandoffView) -> str:
        """The summary an advisor reads first: who, what they asked, what the bot knows."""
        language = view.language or "?"
        lines = [say("card_title", customer=view.customer, language=language,
                     contact=view.contact_id or "?")]
        trigger = TRIGGERS.get(view.trigger, view.trigger)
        if view.status == "assigned":
            lines.append(say("card_status_assigned", trigger=trigger,
                             advisor=await self._advisor_label(view.advisor_id, view.advisor)))
        else:
            lines.append(say("card_status_waiting", trigger=trigger))
        if view.needs_senior:
            lines.append(say("card_senior"))
        if view.contact_id is not None:
            lines += await self._profile_lines(view)
        if view.question:
            lines += ["", say("card_question", question=_clip(view.question, 1000))]
        history = await self._history(view.conversation_id)
        if history:
            lines += ["", say("card_history"), *history]
        lines += ["", *await self._suggestion_lines(view.conversation_id, view.question)]
        lines += ["", say("card_help")]
        return "\n".join(lines)

    async def _profile_lines(self, view: HandoffView) -> list[str]:
        assert view.contact_id is not None
        try:
            profile = await self.desk.profile(view.contact_id)
        except HandoffError:
            return []
        lines: list[str] = []
        earlier = int(profile.get("handoffs") or 0) - 1
        if earlier > 0:
            owner = profile.get("own_advisor")
            lines.append(say("card_returning", count=earlier,
                             owner=say("card_owner", name=owner) if owner else ""))
        for identity in profile.get("identities") or []:
            if identity.get("platform") == view.platform:
                handle = f"@{identity['username']}" if identity.get("username") else ""
                since = str(profile.get("since") or "")[:10]
                lines.append(say("card_contact", platform=view.platform.capitalize(),
                                 handle=handle, since=since).replace("  ", " "))
                break
        crm = profile.get("crm")
        if isinstance(crm, dict):
            tags = ", ".join(str(t.get("tag")) for t in crm.get("tags") or [] if t.get("tag"))
            parts = [say("card_crm_tier", tier=crm.get("tier") or "-")]
            if crm.get("member_level"):
                parts.append(say("card_crm_level", level=crm["member_level"]))
            if tags:
                parts.append(say("card_crm_tags", tags=tags))
            if crm.get("order_count"):
                parts.append(say("card_crm_orders", orders=crm["order_count"]))
            lines.append(" · ".join(parts))
        return lines

    async def _history(self, conversation_id: int) -> list[str]:
        try:
            items = await self.desk.transcript(conversation_id, limit=50)
        except HandoffError:
            return []
        out: list[str] = []
        for item in [i for i in items if i.kind in ("in", "out")][-self.history:]:
            text = _clip(item.text) or ("[photo]" if item.image else "")
            if item.kind == "in":
                out.append(say("history_in", text=text))
            elif item.sender and item.sender != "bot" and ":" not in item.sender:
                out.append(say("history_out_advisor", sender=item.sender, text=text))
            else:
                out.append(say("history_out_bot", text=text))
        return out

    async def _suggestion_lines(self, conversation_id: int, question: str | None) -> list[str]:
        try:
            found = await self.desk.suggestions(conversation_id, question=question,
                                                limit=self.suggestions)
        except HandoffError:
            found = []
        if not found:
            return [say("card_no_suggestions")]
        lines = [say("card_suggestions")]
        for n, s in enumerate(found, 1):
            lines.append(say("card_suggestion", n=n, question=_clip(s.question, 120),
                             confidence=s.confidence, answer=_clip(s.answer)))
        return lines

    # ================================================================ the forum's messages
    async def intercept(self, msg: IncomingMessage) -> bool:
        """A ConversationService interceptor: everything written in the forum is ours."""
        if msg.chat.platform != self.chat.platform or msg.chat.id != self.chat.id:
            return False
        if msg.sender.is_bot:
            return True
        try:
            await self._inbound(msg)
        except HandoffError as exc:
            self._say(msg.thread_id, say("refused", reason=str(exc)))
        except Exception:
            log.exception("forum message failed")
            self._say(msg.thread_id, say("failed"))
        return True

    async def _inbound(self, msg: IncomingMessage) -> None:
        command = msg.command
        text = msg.text.strip()
        if command is None and (not text and msg.image is None or text.startswith("/")):
            return  # service messages, and commands meant for another bot
        thread = msg.thread_id
        view = await self.desk.by_thread(thread) if thread is not None else None
        if command is None and view is None:
            return  # staff talking among themselves
        advisor = await self.desk.advisor_for_telegram(msg.sender.id, msg.sender.username)
        if advisor is None:
            who = msg.sender.display_name or msg.sender.id
            self._say(thread, say("unknown_advisor", who=who,
                                  username=msg.sender.username or "their_username"))
            return
        if thread is None:
            await self._general_command(command or "", msg.command_args, advisor)
        elif view is None:
            self._say(thread, say("not_customer_topic"))
        elif command is None:
            await self._reply(view, advisor, msg)
        else:
            await self._topic_command(command, msg.command_args.strip(), view, advisor)

    async def _reply(self, view: HandoffView, advisor: AdvisorView,
                     msg: IncomingMessage) -> None:
        thread = view.forum_thread_id
        if view.status not in ("waiting", "assigned"):
            self._say(thread, say("conversation_closed", status=view.status))
            return
        image = msg.image
        if image is not None and view.platform != self.chat.platform:
            self._say(thread, say("photo_elsewhere", platform=self.chat.platform.capitalize()))
            return
        result = await self.desk.reply(view.conversation_id, advisor_id=advisor.id,
                                       text=msg.text, image=image, origin="forum")
        if not result.ok:
            self._say(thread, say("not_delivered", error=result.error or "unknown error"))

    async def _topic_command(self, command: str, args: str, view: HandoffView,
                             advisor: AdvisorView) -> None:
        thread, conversation_id = view.forum_thread_id, view.conversation_id
        if command == "note":
            await self.desk.note(conversation_id, advisor_id=advisor.id, text=args,
                                 origin="forum")
            self._say(thread, say("note_saved"))
        elif command == "claim":
            await self.desk.claim(conversation_id, advisor.id, origin="forum")
            self._say(thread, say("claimed_here", advisor=advisor.display_name))
        elif command == "transfer":
            if args:
                target = await self.desk.find_advisor(args.split()[0])
                await self.desk.transfer(conversation_id, by_advisor_id=advisor.id,
                                         to_advisor_id=target.id, origin="forum")
                self._say(thread, say("transferred_here", advisor=_label(target)))
            else:
                await self.desk.transfer(conversation_id, by_advisor_id=advisor.id,
                                         to_advisor_id=None, origin="forum")
                self._say(thread, say("queued_here"))
        elif command == "resolve":
            await self.desk.resolve(conversation_id, advisor_id=advisor.id, origin="forum")
            self._say(thread, say("resolved_here", advisor=advisor.display_name))
            if thread is not None:
                closing = thread

                async def close() -> None:
                    await self._close(closing)

                self._enqueue(close)
        elif command == "suggest":
            lines = await self._suggestion_lines(conversation_id, None)
            self._say(thread, "\n".join(lines))
        else:
            self._say(thread, say("card_help"))

    async def _general_command(self, command: str, args: str, advisor: AdvisorView) -> None:
        if command == "queue":
            waiting = await self.desk.queue(advisor.id)
            if not waiting:
                self._say(None, say("queue_empty"))
                return
            now = self.desk.now()
            rows = [say("queue_title", count=len(waiting))]
            for v in waiting[:30]:
                rows.append(say("queue_row", customer=v.customer, language=v.language or "?",
                                minutes=_minutes(now, v.requested_at),
                                trigger=TRIGGERS.get(v.trigger, v.trigger),
                                link=self.link(v.forum_thread_id)))
            self._say(None, "\n".join(rows))
        elif command == "shift":
            choice = args.strip().lower()
            if choice in ("on", "off"):
                await self.desk.set_shift(advisor.id, choice == "on")
                self._say(None, say("shift_on" if choice == "on" else "shift_off",
                                    advisor=advisor.display_name))
            else:
                state = "on shift" if advisor.on_shift else "off shift"
                self._say(None, say("shift_usage", advisor=advisor.display_name, state=state))
        else:
            self._say(None, say("general_help"))


def topic_name(view: HandoffView) -> str:
    """"Aiko Tanaka · ja · #123": the customer, their language and contact id (≤128)."""
    tail = say("topic_name", customer="", language=view.language or "?",
               contact=view.contact_id or "?")
    return _clip(view.customer, 128 - len(tail)) + tail


def _label(a: AdvisorView) -> str:
    return f"{a.display_name} (@{a.telegram_username})" if a.telegram_username \
        else a.display_name


def _put(memory: dict[Any, Any], key: Any, value: Any) -> None:
    """Remember ``key``, forgetting the oldest entries beyond :data:`REMEMBER`."""
    memory.pop(key, None)
    memory[key] = value
    while len(memory) > REMEMBER:
        del memory[next(iter(memory))]


def _status(e: dict[str, Any]) -> str:
    if e.get("status") == "failed":
        return f"failed ({e.get('error') or 'unknown error'})"
    return str(e.get("status") or "?")


def _minutes(now: datetime, then: datetime) -> int:
    if then.tzinfo is None and now.tzinfo is not None:
        now = now.replace(tzinfo=None)
    return max(0, int((now - then).total_seconds() // 60))


def install(app: Any, desk: HandoffService) -> ForumWorkspace:
    """Make the configured forum group the advisors' workspace (``handoff.forum_chat_id``)."""
    s = app.settings.handoff
    chat = ChatRef(s.forum_platform, ChatKind.GROUP, str(s.forum_chat_id))
    workspace = ForumWorkspace(desk=desk, outbound=app.outbound, chat=chat)
    desk.listeners.append(workspace.on_event)
    app.conversations.interceptors.append(workspace.intercept)
    if s.forum_platform not in app.platforms:
        log.warning("the advisors' forum platform is not enabled",
                    extra={"platform": s.forum_platform})
    app.background.append(workspace)  # app.stop() drains what is still queued
    app.forum = workspace
    return workspace
