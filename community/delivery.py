"""The delivery engine: a persistent outbox that delivers each (drop run, recipient) once.

Every send goes through the app's one outbound path (:class:`bot.core.outbound.Outbound`, via
:class:`OutboundPublisher`): its shared rate limiter (overall, per private chat, per group),
its ``retry_after`` handling and retries. The engine's job is to keep enough sends in flight
that the overall rate is actually reached, and to remember what was sent.

Life of an outbox row (``drop_outbox``, UNIQUE(run_id, recipient))::

    pending --claim (batch)--> claimed --intent (group commit)--> sending --> sent
                                                                          \\-> failed | blocked
    pending/claimed --frequency cap / coupon limit--> skipped;  pause --> pending;
    cancel --> cancelled

*Claim* takes a batch of pending rows for this process. Once the rate limiter has given a row
its slot, and before the platform is called, the row is committed as ``sending`` (*intent*;
rows still queued behind the rate limiter stay ``claimed``, so a crash never leaves them in
doubt); right after the platform answers, the outcome is
committed (*mark*). Both writes are group commits: one transaction carries every row that is
ready (optionally waiting ``commit_linger_ms`` for more to join), so they cost little at
1,000 msg/s.

Crash window. A chat platform has no idempotency key, so a row that was ``sending`` when the
process died is *in doubt*: the request may or may not have reached the platform. The window is
one HTTP round trip plus one group commit (a few ms against a local server, one Telegram
round trip in production). On restart
:meth:`DeliveryEngine.recover` turns ``claimed`` rows (never sent) back into ``pending`` and
handles ``sending`` rows by the ``community.in_doubt`` policy: ``resend`` (at-least-once, the
default: a duplicate is less harmful than a lost coupon) or ``skip`` (at-most-once). Either way
the row keeps ``in_doubt = true`` and the drop report counts it. Everything else is exactly
once: rows are never re-claimed while another sender holds them, and the UNIQUE constraint
means a recipient is enqueued once per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, func, select, update

from bot.core.types import ChatKind, ChatRef, OutgoingMessage
from community.coupons import CouponService
from community.dbutil import insert_ignore, retry_locked
from community.errors import CouponError
from community.settings import CommunitySettings
from models import Database
from models.base import utcnow
from models.community import (
    CommunityGroup,
    Drop,
    DropRun,
    DropStatus,
    GroupStatus,
    Member,
    OutboxRow,
    OutboxStatus,
)
from models.repositories import ContactRepository

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- ports


@dataclass(frozen=True, slots=True)
class Recipient:
    """One destination of a drop: a group or a member's private chat."""

    chat: ChatRef
    contact_id: int | None = None
    group_id: int | None = None
    language: str | None = None
    blocked: bool = False  # known unreachable: recorded as blocked, never sent

    @property
    def key(self) -> str:
        return f"{self.chat.platform}:{self.chat.kind.value}:{self.chat.id}"


@dataclass(slots=True)
class PublishResult:
    ok: bool
    platform_message_ids: list[str] = field(default_factory=list)
    error: str | None = None
    unreachable: bool = False


class Publisher(Protocol):
    """Sends one message to one chat through the app's outbound path (rate limits included)."""

    async def publish(
        self,
        chat: ChatRef,
        message: OutgoingMessage,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> PublishResult:
        """Send one message. ``before_send`` (if given) is awaited exactly once, before the
        platform is called and after any wait for the rate limiter; if it raises, nothing is
        sent and the error propagates."""
        ...


class OutboundPublisher:
    """:class:`Publisher` over :class:`bot.core.outbound.Outbound`.

    ``record=False`` (drops) uses Outbound's delivery step without writing a ``messages`` row
    per recipient - the outbox row is the record, and 20,000 extra message rows per drop would
    cost more than the send itself. ``record=True`` (welcomes, onboarding DMs, alerts) uses
    ``Outbound.send`` so the message appears in the chat's history.
    """

    def __init__(self, outbound: Any, *, record: bool = False) -> None:
        self.outbound = outbound
        self.record = record

    async def publish(
        self,
        chat: ChatRef,
        message: OutgoingMessage,
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> PublishResult:
        if self.record:
            if before_send is not None:
                await before_send()
            r = await self.outbound.send(chat, message)
            return PublishResult(r.ok, list(r.platform_message_ids), r.error, r.unreachable)
        platform = self.outbound.platforms.get(chat.platform)
        if platform is None:
            return PublishResult(False, error=f"no platform {chat.platform!r} is configured")
        from bot.core.outbound import degrade

        message = degrade(message, platform.capabilities)
        deliver = self.outbound.deliver
        r = await deliver(platform, chat, message, before_send=before_send)
        return PublishResult(r.ok, list(r.platform_message_ids), r.error, r.unreachable)


Renderer = Callable[[Drop, "ClaimedRow", str | None], OutgoingMessage]


@dataclass(slots=True)
class ClaimedRow:
    id: int
    chat: ChatRef
    contact_id: int | None
    group_id: int | None
    language: str | None
    coupon_code: str | None


@dataclass(slots=True)
class RunReport:
    run_id: int
    drop_id: int
    status: str
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    in_doubt: int
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    note: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "drop_id": self.drop_id, "status": self.status,
            "scheduled_for": self.scheduled_for.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "counts": self.counts, "in_doubt": self.in_doubt, "total": self.total,
            "first_sent_at": self.first_sent_at.isoformat() if self.first_sent_at else None,
            "last_sent_at": self.last_sent_at.isoformat() if self.last_sent_at else None,
            "note": self.note,
        }


@dataclass(slots=True)
class Recovery:
    released: int = 0  # claimed, never sent: back to pending
    in_doubt_resent: int = 0
    in_doubt_skipped: int = 0
    runs: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------- group commit


class _Committer:
    """Batches outbox writes: every ready row goes in the next transaction."""

    def __init__(self, db: Database, linger: float = 0.0) -> None:
        self.db = db
        self.linger = linger
        self._intents: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._results: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="outbox-committer")

    async def intent(self, values: dict[str, Any]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._intents.append((values, fut))
        self._wake.set()
        await fut

    def result(self, values: dict[str, Any]) -> None:
        self._results.append(values)
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self.error is not None:
            raise self.error

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.linger and not self._closed:
                await asyncio.sleep(self.linger)  # let more rows join this transaction
            self._wake.clear()
            intents, self._intents = self._intents, []
            results, self._results = self._results, []
            if intents or results:
                try:
                    await retry_locked(functools.partial(self._write, intents, results))
                except BaseException as exc:  # the sender must not go on blindly
                    self.error = exc
                    for _, fut in intents:
                        if not fut.done():
                            fut.set_exception(exc)
                    log.exception("outbox write failed")
                    return
                for _, fut in intents:
                    if not fut.done():
                        fut.set_result(None)
            if self._closed and not self._intents and not self._results:
                return

    async def _write(self, intents: list[tuple[dict[str, Any], Any]],
                     results: list[dict[str, Any]]) -> None:
        async with self.db.session() as s:
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for values in [v for v, _ in intents] + results:
                by_keys.setdefault(tuple(sorted(values)), []).append(values)
            for rows in by_keys.values():
                await s.execute(update(OutboxRow), rows)


# ----------------------------------------------------------------------------- engine


class DeliveryEngine:
    """Delivers drop runs from the outbox; see the module docstring for the guarantees."""

    def __init__(
        self,
        *,
        db: Database,
        publisher: Publisher,
        settings: CommunitySettings,
        coupons: CouponService,
        renderer: Renderer,
        now: Callable[[], datetime] = utcnow,
        on_run_finished: Callable[[RunReport], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.settings = settings
        self.coupons = coupons
        self.renderer = renderer
        self.now = now
        self.on_run_finished = on_run_finished
        self.token = uuid.uuid4().hex[:16]
        self._halt: dict[int, asyncio.Event] = {}
        self._active: dict[int, asyncio.Task[RunReport]] = {}

    # ------------------------------------------------------------------ enqueue
    async def enqueue(self, run_id: int, drop_id: int, recipients: Iterable[Recipient]) -> int:
        """Write one outbox row per recipient (duplicates ignored); returns rows in the run."""
        stmt = insert_ignore(self.db, OutboxRow.__table__)
        chunk: list[dict[str, Any]] = []

        async def flush() -> None:
            rows = list(chunk)
            chunk.clear()

            async def write() -> None:
                async with self.db.session() as s:
                    await s.execute(stmt, rows)

            await retry_locked(write)

        for r in recipients:
            chunk.append({
                "run_id": run_id, "drop_id": drop_id, "recipient": r.key,
                "platform": r.chat.platform, "chat_kind": r.chat.kind.value,
                "chat_external_id": r.chat.id, "contact_id": r.contact_id,
                "group_id": r.group_id, "language": r.language,
                "status": OutboxStatus.BLOCKED if r.blocked else OutboxStatus.PENDING,
                "attempts": 0, "in_doubt": False,
                "error": "recipient unreachable" if r.blocked else None,
            })
            if len(chunk) >= 1000:
                await flush()
        if chunk:
            await flush()
        async with self.db.session() as s:
            total = int((await s.execute(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.run_id == run_id)
            )).scalar_one())
            await s.execute(update(DropRun).where(DropRun.id == run_id).values(recipients=total))
        return total

    # ------------------------------------------------------------------ control
    def halt(self, run_id: int) -> None:
        """Stop claiming for a run in this process (pause/cancel set the status in the DB)."""
        ev = self._halt.get(run_id)
        if ev is not None:
            ev.set()

    def running(self, run_id: int) -> bool:
        return run_id in self._active

    def start_run(self, run_id: int) -> asyncio.Task[RunReport]:
        """Deliver a run in the background (one task per run in this process)."""
        task = self._active.get(run_id)
        if task is None or task.done():
            task = asyncio.create_task(self.run(run_id), name=f"drop-run-{run_id}")
        return task

    async def wait_idle(self) -> None:
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    async def stop(self) -> None:
        for run_id in list(self._active):
            self.halt(run_id)
        await self.wait_idle()

    # ------------------------------------------------------------------ recovery
    async def recover(self) -> Recovery:
        """After a restart: release rows this process does not hold and restart running runs.

        Only the leader process delivers, so every ``claimed``/``sending`` row not held by this
        process belongs to a sender that died."""
        out = Recovery()
        async with self.db.session() as s:
            res = await s.execute(
                update(OutboxRow)
                .where(OutboxRow.status == OutboxStatus.CLAIMED,
                       OutboxRow.claimed_by != self.token)
                .values(status=OutboxStatus.PENDING, claimed_by=None)
            )
            out.released = int(res.rowcount or 0)  # type: ignore[attr-defined]
            doubt = OutboxRow.status == OutboxStatus.SENDING
            if self.settings.in_doubt == "resend":
                res = await s.execute(
                    update(OutboxRow).where(doubt, OutboxRow.claimed_by != self.token)
                    .values(status=OutboxStatus.PENDING, in_doubt=True, claimed_by=None)
                )
                out.in_doubt_resent = int(res.rowcount or 0)  # type: ignore[attr-defined]
            else:
                res = await s.execute(
                    update(OutboxRow).where(doubt, OutboxRow.claimed_by != self.token)
                    .values(status=OutboxStatus.FAILED, in_doubt=True,
                            error="outcome unknown after a crash; not resent")
                )
                out.in_doubt_skipped = int(res.rowcount or 0)  # type: ignore[attr-defined]
            out.runs = list((await s.execute(
                select(DropRun.id).where(DropRun.status == DropStatus.RUNNING)
                .order_by(DropRun.id)
            )).scalars())
        if out.released or out.in_doubt_resent or out.in_doubt_skipped:
            log.warning("outbox recovered after restart", extra={
                "released": out.released, "in_doubt_resent": out.in_doubt_resent,
                "in_doubt_skipped": out.in_doubt_skipped})
        return out

    # ------------------------------------------------------------------ delivery
    async def run(self, run_id: int) -> RunReport:
        """Deliver a run's pending rows until none is left or the run is paused/cancelled."""
        if run_id in self._active and asyncio.current_task() is not self._active[run_id]:
            return await self._active[run_id]
        task = asyncio.current_task()
        assert task is not None
        self._active[run_id] = task  # type: ignore[assignment]
        halt = self._halt.setdefault(run_id, asyncio.Event())
        halt.clear()
        try:
            return await self._run(run_id, halt)
        finally:
            self._active.pop(run_id, None)
            self._halt.pop(run_id, None)

    async def _run(self, run_id: int, halt: asyncio.Event) -> RunReport:
        async with self.db.session() as s:
            run = await s.get(DropRun, run_id)
            if run is None:
                raise ValueError(f"no drop run {run_id}")
            drop = await s.get(Drop, run.drop_id)
            assert drop is not None
            if run.started_at is None:
                run.started_at = self.now()
        if run.status != DropStatus.RUNNING:
            return await self.report_run(run_id)
        campaign = drop.coupon_campaign_id
        workers = self.settings.delivery_workers
        queue: asyncio.Queue[ClaimedRow | None] = asyncio.Queue(maxsize=workers * 2)
        committer = _Committer(self.db, self.settings.commit_linger_ms / 1000)
        committer.start()
        release: list[int] = []

        async def feeder() -> None:
            try:
                while not halt.is_set():
                    if await self._run_status(run_id) != DropStatus.RUNNING:
                        halt.set()
                        break
                    rows = await self._claim(run_id, self.settings.claim_batch)
                    if not rows:
                        break
                    if drop.respect_cap and self.settings.max_pushes_per_week:
                        rows = await self._apply_cap(rows, committer)
                    for row in rows:
                        if halt.is_set():
                            release.append(row.id)
                            continue
                        await queue.put(row)
            finally:
                for _ in range(workers):
                    await queue.put(None)

        async def worker() -> None:
            while (row := await queue.get()) is not None:
                if halt.is_set() or committer.error is not None:
                    release.append(row.id)
                    continue
                await self._deliver_one(drop, campaign, row, committer)

        try:
            await asyncio.gather(feeder(), *(worker() for _ in range(workers)))
        finally:
            await committer.close()
            if release:
                async with self.db.session() as s:
                    await s.execute(
                        update(OutboxRow).where(OutboxRow.id.in_(release),
                                                OutboxRow.status == OutboxStatus.CLAIMED)
                        .values(status=OutboxStatus.PENDING, claimed_by=None)
                    )
        return await self._finish(run_id)

    async def _deliver_one(self, drop: Drop, campaign: int | None, row: ClaimedRow,
                           committer: _Committer) -> None:
        code = row.coupon_code
        if campaign is not None and code is None:
            if row.contact_id is not None:
                try:
                    issued = await self.coupons.issue(
                        campaign, row.contact_id, issue_key=f"outbox:{row.id}"
                    )
                    code = issued.code
                except CouponError as exc:
                    committer.result({"id": row.id, "status": OutboxStatus.SKIPPED,
                                      "error": f"coupon: {exc}"[:256]})
                    return
            else:  # a group: only a shared code can be posted
                code = await self._shared_code(campaign)
        try:
            message = self.renderer(drop, row, code)
        except Exception as exc:
            log.exception("drop render failed", extra={"drop": drop.id})
            committer.result({"id": row.id, "status": OutboxStatus.FAILED,
                              "error": f"render: {exc}"[:256]})
            return
        async def mark_sending() -> None:
            # Committed once the rate limiter has given this row its slot, right before the
            # platform call: only requests really on their way can be left in doubt.
            await committer.intent({"id": row.id, "status": OutboxStatus.SENDING,
                                    "coupon_code": code})

        try:
            result = await self.publisher.publish(row.chat, message, before_send=mark_sending)
        except Exception:
            if committer.error is not None:
                raise  # the outbox cannot be written: stop sending (nothing was sent)
            # Not a platform answer (e.g. the HTTP session closed during shutdown): the row
            # stays 'sending' and is treated like a crash - in doubt, settled by recover().
            log.exception("publish failed unexpectedly", extra={"drop": drop.id})
            return
        if result.ok:
            committer.result({
                "id": row.id, "status": OutboxStatus.SENT, "sent_at": self.now(),
                "platform_message_id": ",".join(result.platform_message_ids)[:256] or None,
                "error": None,
            })
            return
        status = OutboxStatus.BLOCKED if result.unreachable else OutboxStatus.FAILED
        committer.result({"id": row.id, "status": status, "error": (result.error or "")[:256]})
        if result.unreachable:
            await self._mark_unreachable(row, result.error or "unreachable")

    async def _shared_code(self, campaign_id: int) -> str | None:
        from models.community import CouponCode

        async with self.db.session() as s:
            return (await s.execute(select(CouponCode.code).where(
                CouponCode.campaign_id == campaign_id, CouponCode.shared.is_(True)
            ))).scalar_one_or_none()

    async def _mark_unreachable(self, row: ClaimedRow, reason: str) -> None:
        async def write() -> None:
            async with self.db.session() as s:
                if row.chat.kind is ChatKind.PRIVATE:
                    await ContactRepository(s).mark_unreachable(
                        row.chat.platform, row.chat.id, reason)
                elif row.group_id is not None:
                    await s.execute(update(CommunityGroup).where(
                        CommunityGroup.id == row.group_id
                    ).values(status=GroupStatus.REMOVED))

        await retry_locked(write)

    async def _run_status(self, run_id: int) -> str:
        async with self.db.session() as s:
            return str((await s.execute(
                select(DropRun.status).where(DropRun.id == run_id))).scalar_one())

    async def _claim(self, run_id: int, limit: int) -> list[ClaimedRow]:
        async def claim() -> list[ClaimedRow]:
            async with self.db.session() as s:
                ids = list((await s.execute(
                    select(OutboxRow.id).where(OutboxRow.run_id == run_id,
                                               OutboxRow.status == OutboxStatus.PENDING)
                    .order_by(OutboxRow.id).limit(limit)
                )).scalars())
                if not ids:
                    return []
                await s.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_(ids), OutboxRow.status == OutboxStatus.PENDING)
                    .values(status=OutboxStatus.CLAIMED, claimed_by=self.token,
                            claimed_at=self.now(), attempts=OutboxRow.attempts + 1)
                )
                rows = (await s.execute(
                    select(OutboxRow.id, OutboxRow.platform, OutboxRow.chat_kind,
                           OutboxRow.chat_external_id, OutboxRow.contact_id, OutboxRow.group_id,
                           OutboxRow.language, OutboxRow.coupon_code)
                    .where(OutboxRow.id.in_(ids), OutboxRow.claimed_by == self.token,
                           OutboxRow.status == OutboxStatus.CLAIMED)
                    .order_by(OutboxRow.id)
                )).all()
            return [
                ClaimedRow(r[0], ChatRef(r[1], ChatKind(r[2]), r[3]), r[4], r[5], r[6], r[7])
                for r in rows
            ]

        return await retry_locked(claim)

    async def _apply_cap(self, rows: list[ClaimedRow], committer: _Committer
                         ) -> list[ClaimedRow]:
        """Skip recipients who already had ``max_pushes_per_week`` pushes in 7 days.

        A group message reaches every member, so it counts for each of them: a member's count
        is their private pushes plus the pushes to groups they are in. A group itself is capped
        at the same number (its members would otherwise exceed it)."""
        cap = self.settings.max_pushes_per_week
        assert cap
        since = self.now() - timedelta(days=7)
        contacts = {r.contact_id for r in rows if r.contact_id is not None
                    and r.chat.kind is ChatKind.PRIVATE}
        groups = {r.group_id for r in rows if r.group_id is not None}
        counts: dict[tuple[str, int | None], int] = {}
        async with self.db.session() as s:
            if contacts:
                private = await s.execute(
                    select(OutboxRow.contact_id, func.count()).where(
                        OutboxRow.contact_id.in_(contacts), OutboxRow.chat_kind == "private",
                        OutboxRow.status == OutboxStatus.SENT, OutboxRow.sent_at >= since,
                    ).group_by(OutboxRow.contact_id)
                )
                for cid, n in private:
                    counts[("c", cid)] = counts.get(("c", cid), 0) + int(n)
                via_groups = await s.execute(
                    select(Member.contact_id, func.count()).select_from(Member).join(
                        OutboxRow, and_(OutboxRow.group_id == Member.group_id,
                                        OutboxRow.status == OutboxStatus.SENT,
                                        OutboxRow.sent_at >= since,
                                        OutboxRow.sent_at >= Member.joined_at)
                    ).where(Member.contact_id.in_(contacts), Member.status == "member")
                    .group_by(Member.contact_id)
                )
                for cid, n in via_groups:
                    counts[("c", cid)] = counts.get(("c", cid), 0) + int(n)
            if groups:
                for gid, n in await s.execute(
                    select(OutboxRow.group_id, func.count()).where(
                        OutboxRow.group_id.in_(groups), OutboxRow.chat_kind == "group",
                        OutboxRow.status == OutboxStatus.SENT, OutboxRow.sent_at >= since,
                    ).group_by(OutboxRow.group_id)
                ):
                    counts[("g", gid)] = int(n)
        keep: list[ClaimedRow] = []
        for r in rows:
            key = ("c", r.contact_id) if r.chat.kind is ChatKind.PRIVATE else ("g", r.group_id)
            if key[1] is not None and counts.get(key, 0) >= cap:  # type: ignore[arg-type]
                committer.result({"id": r.id, "status": OutboxStatus.SKIPPED,
                                  "error": f"frequency cap: {cap} pushes per week"})
            else:
                keep.append(r)
        return keep

    async def _finish(self, run_id: int) -> RunReport:
        async with self.db.session() as s:
            run = await s.get(DropRun, run_id)
            assert run is not None
            left = int((await s.execute(
                select(func.count()).select_from(OutboxRow).where(
                    OutboxRow.run_id == run_id,
                    OutboxRow.status.in_((OutboxStatus.PENDING, OutboxStatus.CLAIMED,
                                          OutboxStatus.SENDING)),
                )
            )).scalar_one())
            if run.status == DropStatus.RUNNING and left == 0:
                run.status = DropStatus.DONE
                run.finished_at = self.now()
            if run.status == DropStatus.CANCELLED:
                await s.execute(
                    update(OutboxRow).where(OutboxRow.run_id == run_id,
                                            OutboxRow.status == OutboxStatus.PENDING)
                    .values(status=OutboxStatus.CANCELLED)
                )
                run.finished_at = run.finished_at or self.now()
        report = await self.report_run(run_id)
        if report.status in (DropStatus.DONE, DropStatus.CANCELLED):
            log.info("drop run finished", extra={"run": run_id, **report.counts})
            if self.on_run_finished is not None:
                with contextlib.suppress(Exception):
                    await self.on_run_finished(report)
        return report

    # ------------------------------------------------------------------ reports
    async def report_run(self, run_id: int) -> RunReport:
        async with self.db.session() as s:
            run = await s.get(DropRun, run_id)
            if run is None:
                raise ValueError(f"no drop run {run_id}")
            counts = {
                str(status): int(n) for status, n in await s.execute(
                    select(OutboxRow.status, func.count()).where(OutboxRow.run_id == run_id)
                    .group_by(OutboxRow.status)
                )
            }
            first, last, doubt = (await s.execute(
                select(func.min(OutboxRow.sent_at), func.max(OutboxRow.sent_at),
                       func.count().filter(OutboxRow.in_doubt.is_(True)))
                .where(OutboxRow.run_id == run_id)
            )).one()
        for key in ("sent", "failed", "blocked", "skipped", "pending"):
            counts.setdefault(key, 0)
        return RunReport(
            run_id=run.id, drop_id=run.drop_id, status=run.status,
            scheduled_for=run.scheduled_for, started_at=run.started_at,
            finished_at=run.finished_at, counts=counts, in_doubt=int(doubt or 0),
            first_sent_at=first, last_sent_at=last, note=run.note,
        )
