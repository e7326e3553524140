"""Drops: scheduled content and coupon pushes to groups and to members privately.

A drop has content, an audience and a schedule (one-off ``run_at`` or a 5-field ``cron`` in
the drop's own time zone). Each firing is a :class:`models.community.DropRun`, unique per
(drop, scheduled time), whose recipients go into the outbox and are delivered by
:class:`community.delivery.DeliveryEngine`.

Late firings: the scheduler runs a late job however late it is; :meth:`DropService.fire`
delivers it if it is at most ``grace_seconds`` late, otherwise records the run as *missed*
and raises an alert. Earlier cron occurrences skipped while the process was down are
recorded as missed too.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from bot.core.i18n import Translator
from bot.core.types import Button, ChatKind, ChatRef, Image, OutgoingMessage
from community import scheduler as sched
from community.audience import Audience, AudienceResolver, resolve_groups
from community.coupons import CouponService
from community.dbutil import insert_ignore
from community.delivery import ClaimedRow, DeliveryEngine, Publisher, Recipient, RunReport
from community.errors import CommunityError, NotFound
from community.settings import CommunitySettings
from models import Database
from models.base import utcnow
from models.community import CommunityAlert, CouponCampaign, Drop, DropRun, DropStatus

log = logging.getLogger(__name__)

JOB_FUNC = "community.jobs:fire_drop_job"
FINAL = (DropStatus.DONE, DropStatus.CANCELLED, DropStatus.MISSED)

Alert = Callable[[str, str, dict[str, Any]], Awaitable[None]]


def job_id(drop_id: int) -> str:
    return f"drop:{drop_id}"


@dataclass(slots=True)
class Preview:
    drop: Drop
    message: OutgoingMessage
    groups: int
    private: int
    blocked: int


class DropService:
    """Create, schedule, fire, pause, resume, cancel and report drops."""

    def __init__(
        self,
        *,
        db: Database,
        engine: DeliveryEngine,
        coupons: CouponService,
        resolver: AudienceResolver,
        settings: CommunitySettings,
        translate: Translator,
        test_publisher: Publisher,
        scheduler: Any | None = None,
        now: Callable[[], datetime] = utcnow,
        default_timezone: str = "Asia/Tokyo",
        alert: Alert | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.coupons = coupons
        self.resolver = resolver
        self.settings = settings
        self.t = translate
        self.test_publisher = test_publisher
        self.scheduler = scheduler
        self.now = now
        self.default_timezone = default_timezone
        self.alert = alert
        if engine.on_run_finished is None:
            engine.on_run_finished = self._run_finished

    async def _run_finished(self, report: RunReport) -> None:
        """A one-off drop is done when its run is."""
        if report.status == DropStatus.DONE:
            async with self.db.session() as s:
                await s.execute(update(Drop).where(
                    Drop.id == report.drop_id, Drop.cron.is_(None),
                    Drop.status == DropStatus.RUNNING).values(status=DropStatus.DONE))

    # ------------------------------------------------------------------ create
    async def create(
        self,
        *,
        name: str,
        text: str = "",
        texts: dict[str, str] | None = None,
        audience: Audience,
        kind: str = "content",
        format: str = "plain",
        image_url: str | None = None,
        buttons: list[list[dict[str, str]]] | None = None,
        coupon: str | None = None,
        run_at: datetime | str | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        grace_seconds: int | None = None,
        respect_cap: bool = True,
        draft: bool = False,
        created_by: str | None = None,
    ) -> Drop:
        """Validate everything first (:meth:`build`); on any error raise
        :class:`CommunityError` and store nothing. Then store and schedule the drop."""
        drop = await self.build(
            name=name, text=text, texts=texts, audience=audience, kind=kind, format=format,
            image_url=image_url, buttons=buttons, coupon=coupon, run_at=run_at, cron=cron,
            timezone=timezone, grace_seconds=grace_seconds, respect_cap=respect_cap,
            draft=draft, created_by=created_by,
        )
        async with self.db.session() as s:
            s.add(drop)
        self._schedule(drop)
        return drop

    async def build(
        self,
        *,
        name: str,
        text: str = "",
        texts: dict[str, str] | None = None,
        audience: Audience,
        kind: str = "content",
        format: str = "plain",
        image_url: str | None = None,
        buttons: list[list[dict[str, str]]] | None = None,
        coupon: str | None = None,
        run_at: datetime | str | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        grace_seconds: int | None = None,
        respect_cap: bool = True,
        draft: bool = False,
        created_by: str | None = None,
    ) -> Drop:
        """The drop :meth:`create` would store, validated against the data but not stored
        (the console's preview shows it); raises :class:`CommunityError`."""
        name = (name or "").strip()
        if not name or len(name) > 128:
            raise CommunityError("a drop needs a name (1-128 characters)")
        if kind not in ("content", "coupon"):
            raise CommunityError(f"drop kind must be 'content' or 'coupon', not {kind!r}")
        if format not in ("plain", "html"):
            raise CommunityError("format must be 'plain' or 'html'")
        tz = timezone or self.default_timezone
        try:
            zone = sched.check_timezone(tz)
        except ValueError as exc:
            raise CommunityError(str(exc)) from None
        texts = {k: v for k, v in (texts or {}).items() if v and v.strip()}
        if not (text or "").strip() and not texts and not image_url and kind == "content":
            raise CommunityError("the drop is empty: give a text or an image")
        if image_url is not None and (
            not image_url.startswith(("http://", "https://"))
            or any(ch.isspace() for ch in image_url)
        ):
            raise CommunityError("the image must be an http(s) URL")
        rows = self._buttons(buttons or [])
        audience.validate()
        if audience.groups is not None and not audience.groups.empty:
            await resolve_groups(self.db, audience.groups)  # unknown groups/pools raise
        campaign_id = None
        if kind == "coupon":
            if not coupon:
                raise CommunityError("a coupon drop needs a coupon campaign")
            async with self.db.session() as s:
                camp = (await s.execute(
                    select(CouponCampaign).where(CouponCampaign.name == coupon))
                ).scalar_one_or_none()
            if camp is None:
                raise CommunityError(f"no coupon campaign {coupon!r}")
            if camp.kind != "shared" and audience.groups is not None \
                    and not audience.groups.empty:
                raise CommunityError("a group gets one message for everyone: coupon drops to "
                                     "groups need a shared-code campaign")
            campaign_id = camp.id
        elif coupon:
            raise CommunityError("a coupon campaign is only for coupon drops")
        when: datetime | None = None
        if run_at is not None and cron:
            raise CommunityError("give either a time (one-off) or a cron (recurring), not both")
        if run_at is not None:
            when = parse_when(run_at, zone)
        if cron:
            try:
                sched.cron_trigger(cron, tz)
            except ValueError as exc:
                raise CommunityError(str(exc)) from None
        if when is None and not cron and not draft:
            raise CommunityError("give a time (one-off, e.g. '2026-05-01 09:00') or a cron "
                                 "(recurring, e.g. '0 9 * * mon'), or keep it as a draft")
        grace = self.settings.grace_seconds if grace_seconds is None else grace_seconds
        if grace < 0:
            raise CommunityError("grace must be >= 0 seconds")
        content: dict[str, Any] = {"text": text or "", "format": format}
        if texts:
            content["texts"] = texts
        if image_url:
            content["image_url"] = image_url
        if rows:
            content["buttons"] = rows
        return Drop(
            name=name, kind=kind, content=content, audience=audience.as_dict(),
            coupon_campaign_id=campaign_id, run_at=when, cron=cron or None, timezone=tz,
            grace_seconds=grace, respect_cap=respect_cap, created_by=created_by,
            created_at=self.now(),
            status=DropStatus.DRAFT if draft else DropStatus.SCHEDULED,
        )

    @staticmethod
    def _buttons(rows: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
        out = []
        for row in rows:
            out_row = []
            for b in row:
                text, url = (b.get("text") or "").strip(), (b.get("url") or "").strip()
                if not text or not url.startswith(("http://", "https://", "tg://")):
                    raise CommunityError(f"a button needs a text and an http(s) URL: {b!r}")
                out_row.append({"text": text, "url": url})
            if out_row:
                out.append(out_row)
        return out

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, drop: Drop) -> None:
        if self.scheduler is None:
            return
        if drop.status != DropStatus.SCHEDULED:
            self.scheduler.discard(job_id(drop.id))
            return
        kwargs = {"drop_id": drop.id}
        if drop.cron:
            self.scheduler.add_crontab(JOB_FUNC, job_id=job_id(drop.id), crontab=drop.cron,
                                       timezone=drop.timezone, kwargs=kwargs)
        elif drop.run_at is not None:
            self.scheduler.add_once(JOB_FUNC, job_id=job_id(drop.id), run_at=drop.run_at,
                                    kwargs=kwargs, misfire_grace_time=None)

    async def sync_jobs(self) -> int:
        """Make the scheduler's jobs match the drops table (drops created by the CLI in
        another process appear here). Returns the number of scheduled drops."""
        if self.scheduler is None:
            return 0
        async with self.db.session() as s:
            drops = list((await s.execute(select(Drop))).scalars())
        n = 0
        for drop in drops:
            has = self.scheduler.next_run(job_id(drop.id)) is not None
            if drop.status == DropStatus.SCHEDULED:
                n += 1
                if not has:
                    if drop.run_at is not None and not drop.cron \
                            and await self._has_run(drop.id):
                        continue
                    self._schedule(drop)
            elif has:
                self.scheduler.discard(job_id(drop.id))
        return n

    async def resume_orphaned_runs(self) -> list[int]:
        """Start delivering runs marked running that no task of this process delivers (a run
        resumed from the CLI). Only the leader calls this."""
        async with self.db.session() as s:
            runs = list((await s.execute(select(DropRun.id).where(
                DropRun.status == DropStatus.RUNNING))).scalars())
        started = [r for r in runs if not self.engine.running(r)]
        for run_id in started:
            self.engine.start_run(run_id)
        return started

    async def _has_run(self, drop_id: int) -> bool:
        async with self.db.session() as s:
            return (await s.execute(select(DropRun.id).where(DropRun.drop_id == drop_id)
                                    .limit(1))).scalar_one_or_none() is not None

    # ------------------------------------------------------------------ firing
    async def fire(self, drop_id: int) -> RunReport | None:
        """The scheduled job: create this occurrence's run (once) and deliver it."""
        now = self.now()
        async with self.db.session() as s:
            drop = await s.get(Drop, drop_id)
        if drop is None:
            log.warning("scheduled drop no longer exists", extra={"drop": drop_id})
            return None
        if drop.status != DropStatus.SCHEDULED:
            log.info("drop not fired", extra={"drop": drop_id, "status": drop.status})
            return None
        occurrences = await self._due(drop, now)
        if not occurrences:
            return None
        *skipped, scheduled_for = occurrences
        for missed in skipped:
            await self._record_missed(drop, missed, now, "the process was down")
        late = (now - scheduled_for).total_seconds()
        if late > drop.grace_seconds:
            await self._record_missed(drop, scheduled_for, now,
                                      f"{late:.0f}s late, grace is {drop.grace_seconds}s")
            return None
        run_id = await self._create_run(drop, scheduled_for, late)
        if run_id is None:  # this occurrence already ran (a second trigger, another process)
            return None
        recipients = await self._recipients(drop)
        await self.engine.enqueue(run_id, drop.id, recipients)
        return await self.engine.run(run_id)

    async def _due(self, drop: Drop, now: datetime) -> list[datetime]:
        if not drop.cron:
            if drop.run_at is None or drop.run_at > now + timedelta(seconds=1):
                return []
            return [drop.run_at]
        async with self.db.session() as s:
            last = (await s.execute(
                select(DropRun.scheduled_for).where(DropRun.drop_id == drop.id)
                .order_by(DropRun.scheduled_for.desc()).limit(1)
            )).scalar_one_or_none()
        start = last or drop.created_at
        times = sched.cron_fire_times(drop.cron, drop.timezone, after=start,
                                      until=now + timedelta(seconds=1), limit=50)
        return [t.astimezone(UTC) for t in times]

    async def _create_run(self, drop: Drop, scheduled_for: datetime, late: float) -> int | None:
        async with self.db.session() as s:
            res = await s.execute(
                insert_ignore(self.db, DropRun.__table__).values(
                    drop_id=drop.id, scheduled_for=scheduled_for, status=DropStatus.RUNNING,
                    recipients=0, started_at=self.now(), late_seconds=max(0.0, late),
                ).returning(DropRun.__table__.c.id)
            )
            run_id = res.scalar_one_or_none()
            if run_id is not None and not drop.cron:
                await s.execute(update(Drop).where(Drop.id == drop.id)
                                .values(status=DropStatus.RUNNING))
        if run_id is not None and late > 1:
            log.warning("drop delivered late", extra={"drop": drop.id, "late_seconds": late})
        return run_id

    async def _record_missed(self, drop: Drop, scheduled_for: datetime, now: datetime,
                             why: str) -> None:
        async with self.db.session() as s:
            res = await s.execute(
                insert_ignore(self.db, DropRun.__table__).values(
                    drop_id=drop.id, scheduled_for=scheduled_for, status=DropStatus.MISSED,
                    recipients=0, finished_at=now, note=f"missed: {why}"[:256],
                    late_seconds=(now - scheduled_for).total_seconds(),
                ).returning(DropRun.__table__.c.id)
            )
            if res.scalar_one_or_none() is None:
                return
            if not drop.cron:
                await s.execute(update(Drop).where(Drop.id == drop.id)
                                .values(status=DropStatus.MISSED))
            message = (f"drop {drop.id} {drop.name!r} scheduled for "
                       f"{scheduled_for:%Y-%m-%d %H:%M} UTC was missed ({why})")
            s.add(CommunityAlert(kind="drop_missed", drop_id=drop.id, message=message))
        log.warning("drop missed", extra={"drop": drop.id, "why": why})
        if self.alert is not None:
            await self.alert("drop_missed", message, {"drop": drop.id})

    async def _recipients(self, drop: Drop) -> list[Recipient]:
        audience = Audience.from_dict(drop.audience)
        out: list[Recipient] = []
        if audience.groups is not None and not audience.groups.empty:
            try:
                out.extend(await resolve_groups(self.db, audience.groups))
            except CommunityError as exc:  # a pool was deleted since: deliver the rest
                log.warning("drop audience partly unknown", extra={"error": str(exc)})
        if audience.private is not None and not audience.private.empty:
            async for r in self.resolver.resolve_private(audience.private):
                out.append(r)
        return out

    # ------------------------------------------------------------------ manage
    async def get(self, drop_id: int) -> Drop:
        async with self.db.session() as s:
            drop = await s.get(Drop, drop_id)
        if drop is None:
            raise NotFound(f"no drop {drop_id}")
        return drop

    async def list(self, *, status: str | None = None) -> list[Drop]:
        async with self.db.session() as s:
            stmt = select(Drop).order_by(Drop.id)
            if status:
                stmt = stmt.where(Drop.status == status)
            return list((await s.execute(stmt)).scalars())

    def next_run(self, drop: Drop) -> datetime | None:
        if drop.status != DropStatus.SCHEDULED:
            return None
        if drop.cron:
            return sched.next_cron_time(drop.cron, drop.timezone, self.now())
        return drop.run_at

    async def pause(self, drop_id: int) -> Drop:
        drop = await self.get(drop_id)
        if drop.status in FINAL or drop.status == DropStatus.PAUSED:
            raise CommunityError(f"drop {drop_id} is {drop.status}; cannot pause")
        async with self.db.session() as s:
            await s.execute(update(Drop).where(Drop.id == drop_id)
                            .values(status=DropStatus.PAUSED))
            runs = list((await s.execute(select(DropRun.id).where(
                DropRun.drop_id == drop_id, DropRun.status == DropStatus.RUNNING))).scalars())
            if runs:
                await s.execute(update(DropRun).where(DropRun.id.in_(runs))
                                .values(status=DropStatus.PAUSED))
        for run_id in runs:
            self.engine.halt(run_id)
        if self.scheduler is not None:
            self.scheduler.discard(job_id(drop_id))
        return await self.get(drop_id)

    async def resume(self, drop_id: int, *, deliver: bool = True) -> Drop:
        """Resume a paused drop: a paused run goes on; a schedule is re-armed (an occurrence
        that fell due while paused is delivered if within the grace window)."""
        drop = await self.get(drop_id)
        if drop.status != DropStatus.PAUSED:
            raise CommunityError(f"drop {drop_id} is {drop.status}, not paused")
        async with self.db.session() as s:
            runs = list((await s.execute(select(DropRun.id).where(
                DropRun.drop_id == drop_id, DropRun.status == DropStatus.PAUSED))).scalars())
            if runs:
                await s.execute(update(DropRun).where(DropRun.id.in_(runs))
                                .values(status=DropStatus.RUNNING))
            new_status = DropStatus.RUNNING if runs and not drop.cron else DropStatus.SCHEDULED
            await s.execute(update(Drop).where(Drop.id == drop_id).values(status=new_status))
        drop = await self.get(drop_id)
        self._schedule(drop)
        if deliver:
            for run_id in runs:
                self.engine.start_run(run_id)
        return drop

    async def schedule_draft(self, drop_id: int) -> Drop:
        drop = await self.get(drop_id)
        if drop.status != DropStatus.DRAFT:
            raise CommunityError(f"drop {drop_id} is {drop.status}, not a draft")
        if drop.run_at is None and not drop.cron:
            raise CommunityError("the draft has no time or cron")
        async with self.db.session() as s:
            await s.execute(update(Drop).where(Drop.id == drop_id)
                            .values(status=DropStatus.SCHEDULED))
        drop = await self.get(drop_id)
        self._schedule(drop)
        return drop

    async def cancel(self, drop_id: int) -> Drop:
        drop = await self.get(drop_id)
        if drop.status in FINAL:
            raise CommunityError(f"drop {drop_id} is already {drop.status}")
        async with self.db.session() as s:
            await s.execute(update(Drop).where(Drop.id == drop_id)
                            .values(status=DropStatus.CANCELLED))
            runs = list((await s.execute(select(DropRun.id).where(
                DropRun.drop_id == drop_id,
                DropRun.status.in_((DropStatus.RUNNING, DropStatus.PAUSED))))).scalars())
            if runs:
                await s.execute(update(DropRun).where(DropRun.id.in_(runs))
                                .values(status=DropStatus.CANCELLED, finished_at=self.now()))
                from models.community import OutboxRow, OutboxStatus

                await s.execute(update(OutboxRow).where(
                    OutboxRow.run_id.in_(runs), OutboxRow.status == OutboxStatus.PENDING
                ).values(status=OutboxStatus.CANCELLED))
        for run_id in runs:
            self.engine.halt(run_id)
        if self.scheduler is not None:
            self.scheduler.discard(job_id(drop_id))
        return await self.get(drop_id)

    async def reports(self, drop_id: int) -> builtins.list[RunReport]:
        await self.get(drop_id)
        async with self.db.session() as s:
            runs = list((await s.execute(select(DropRun.id).where(DropRun.drop_id == drop_id)
                                         .order_by(DropRun.id))).scalars())
        return [await self.engine.report_run(r) for r in runs]

    # ------------------------------------------------------------------ preview / test
    async def preview(self, drop_id: int, language: str | None = None) -> Preview:
        drop = await self.get(drop_id)
        recipients = await self._recipients(drop)
        code = "SAMPLE-CODE" if drop.kind == "coupon" else None
        row = ClaimedRow(0, ChatRef("preview", ChatKind.PRIVATE, "0"), None, None,
                         language or self.t.default, None)
        return Preview(
            drop=drop, message=self.render(drop, row, code),
            groups=sum(1 for r in recipients if r.group_id is not None),
            private=sum(1 for r in recipients if r.group_id is None and not r.blocked),
            blocked=sum(1 for r in recipients if r.blocked),
        )

    async def test_send(self, drop_id: int, chat: ChatRef, language: str | None = None) -> bool:
        """Send the drop to one chat (yourself) marked as a test; not recorded, not capped."""
        drop = await self.get(drop_id)
        code = "TEST-CODE" if drop.kind == "coupon" else None
        row = ClaimedRow(0, chat, None, None, language or self.t.default, None)
        message = self.render(drop, row, code)
        message.text = self.t("community_test_prefix", row.language) + message.text
        result = await self.test_publisher.publish(chat, message)
        if not result.ok:
            raise CommunityError(f"test send failed: {result.error}")
        return True

    def render(self, drop: Drop, row: ClaimedRow, code: str | None) -> OutgoingMessage:
        content = drop.content or {}
        lang = row.language or self.t.default
        text = (content.get("texts") or {}).get(lang) or content.get("text") or ""
        fmt = content.get("format", "plain")
        if code is not None:
            if "{code}" in text:
                text = text.replace("{code}", code)
            else:
                line = self.t("community_coupon_line", lang, code=code)
                text = f"{text}\n\n{line}" if text else line
        buttons = [[Button(b["text"], url=b["url"]) for b in r] for r in content.get("buttons", [])]
        image = Image(url=content["image_url"]) if content.get("image_url") else None
        return OutgoingMessage(text=text, buttons=buttons, image=image, format=fmt,
                               sender=f"drop:{drop.id}")


def parse_when(value: datetime | str, zone: Any) -> datetime:
    """'2026-05-01 09:00' (in the drop's zone), ISO with offset, or an aware datetime."""
    if isinstance(value, str):
        text = value.strip().replace("T", " ")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise CommunityError(
                f"bad time {value!r}: use 'YYYY-MM-DD HH:MM' (in the drop's time zone)"
            ) from None
    else:
        parsed = value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)
