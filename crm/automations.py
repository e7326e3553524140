"""Automations as data: step sequences (started by one event, stopped by others) with
enrolment rows carrying ``next_step_at``, and birthday messages with a coupon.

``run_due(now)`` and ``run_birthdays(now)`` are the coroutines the scheduler calls. Each
message is claimed by a unique ``crm_sends.key`` (``seq:<enrolment>:<step>``,
``birthday:<year>:<contact>``) before it is sent, so a step is sent at most once even when
two workers run at the same time. Marketing respects opt-out, quiet hours in the member's
time zone, and a per-day / per-week frequency cap (sequence steps are deferred, not lost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from crm.errors import CrmError, NotFound
from crm.koc import RecordingIssuer, RewardIssuer, record_reward
from crm.policy import CrmPolicy
from models.base import utcnow
from models.contact import Contact
from models.crm import Enrolment, MarketingSend, MemberProfile, Sequence
from models.db import Database

_KIND = re.compile(r"^[a-z][a-z0-9_:.-]{0,63}$")
BIRTHDAY_TEXT = {
    "ja": "{name}さん、お誕生日おめでとうございます！ささやかなプレゼントです：{coupon}",
    "en": "Happy birthday, {name}! A small gift from us: {coupon}",
    "zh": "{name}，生日快乐！送您一份小礼物：{coupon}",
}


class Sender(Protocol):
    """Delivers one marketing message to a member (the app wires the Outbound path: it
    picks the member's reachable private chat). Returns True when delivered."""

    async def send(self, contact_id: int, text: str, *, key: str) -> bool: ...


@dataclass
class RunReport:
    sent: int = 0
    deferred: int = 0
    stopped: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    details: list[str] = field(default_factory=list)


class _Format(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def validate_sequence(raw: Any) -> dict[str, Any]:
    """Check a sequence definition::

        {"trigger": "first_order", "stop_on": ["purchase", "opt_out"],
         "steps": [{"after_days": 0, "text": "Welcome {name}!"},
                   {"after_days": 3, "text": {"ja": "...", "en": "..."}},
                   {"after_days": 7, "text": "Here is {coupon}", "coupon": "welcome"}]}
    """
    if not isinstance(raw, dict):
        raise CrmError("sequence definition must be a JSON object")
    unknown = sorted(set(raw) - {"trigger", "stop_on", "steps"})
    if unknown:
        raise CrmError(f"sequence: unknown key(s) {unknown} (known: trigger, stop_on, steps)")
    trigger = raw.get("trigger")
    if not isinstance(trigger, str) or not _KIND.match(trigger):
        raise CrmError("sequence: 'trigger' must be an event name such as joined, "
                       "joined_group, first_order, purchase or event:<kind>")
    stop_on = raw.get("stop_on", [])
    if not isinstance(stop_on, list) or not all(isinstance(x, str) and _KIND.match(x)
                                                for x in stop_on):
        raise CrmError("sequence: 'stop_on' must be a list of event names")
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        raise CrmError("sequence: 'steps' must be a non-empty list")
    last = 0.0
    for i, step in enumerate(steps):
        where = f"sequence: steps[{i}]"
        if not isinstance(step, dict):
            raise CrmError(f"{where} must be an object")
        extra = sorted(set(step) - {"after_days", "text", "coupon"})
        if extra:
            raise CrmError(f"{where}: unknown key(s) {extra} (known: after_days, text, coupon)")
        after = step.get("after_days", 0)
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            raise CrmError(f"{where}.after_days must be a number >= 0")
        if after < last:
            raise CrmError(f"{where}.after_days ({after}) is before the previous step ({last})")
        last = float(after)
        text = step.get("text")
        texts = text.values() if isinstance(text, dict) else [text]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise CrmError(f"{where}.text must be a text or a {{language: text}} object")
        if "coupon" in step and (not isinstance(step["coupon"], str) or not step["coupon"]):
            raise CrmError(f"{where}.coupon must be a reward name")
    return {"trigger": trigger, "stop_on": list(stop_on), "steps": steps}


def render(text: str | dict[str, str], language: str | None, **values: str) -> str:
    """Pick the member's language (else English, else the first) and fill {name}, {coupon}."""
    if isinstance(text, dict):
        chosen = text.get(language or "") or text.get("en") or next(iter(text.values()))
    else:
        chosen = text
    return chosen.format_map(_Format(values)).strip()


class AutomationService:
    """Sequences (create/list/enrol/stop), the due-step runner and birthday messages."""

    def __init__(self, *, db: Database, sender: Sender, policy: CrmPolicy | None = None,
                 issuer: RewardIssuer | None = None) -> None:
        self.db = db
        self.sender = sender
        self.policy = policy or CrmPolicy()
        self.issuer: RewardIssuer = issuer or RecordingIssuer()

    # ------------------------------------------------------------------ definitions
    async def create_sequence(self, name: str, definition: dict[str, Any], *,
                              replace: bool = False) -> Sequence:
        """Save a validated sequence definition."""
        name = name.strip()
        if not name or len(name) > 64:
            raise CrmError("sequence name must be 1-64 characters")
        data = validate_sequence(definition)
        async with self.db.session() as session:
            seq = (await session.execute(select(Sequence).where(Sequence.name == name))
                   ).scalar_one_or_none()
            if seq is not None:
                if not replace:
                    raise CrmError(f"sequence {name!r} already exists (choose another name, or replace it)")
                seq.definition, seq.trigger = data, data["trigger"]
                return seq
            seq = Sequence(name=name, trigger=data["trigger"], definition=data, enabled=True)
            session.add(seq)
            await session.flush()
            return seq

    async def list_sequences(self) -> list[tuple[Sequence, dict[str, int]]]:
        """Each sequence with its enrolment counts by status."""
        async with self.db.session() as session:
            seqs = list((await session.execute(select(Sequence).order_by(Sequence.name))
                         ).scalars())
            counts: dict[int, dict[str, int]] = {}
            for sid, status, n in await session.execute(
                    select(Enrolment.sequence_id, Enrolment.status, func.count())
                    .group_by(Enrolment.sequence_id, Enrolment.status)):
                counts.setdefault(sid, {})[status] = int(n)
        return [(s, counts.get(s.id, {})) for s in seqs]

    async def get_sequence(self, name: str) -> Sequence:
        async with self.db.session() as session:
            seq = (await session.execute(select(Sequence).where(Sequence.name == name))
                   ).scalar_one_or_none()
        if seq is None:
            raise NotFound(f"no sequence {name!r}")
        return seq

    async def set_enabled(self, name: str, enabled: bool) -> None:
        async with self.db.session() as session:
            result = await session.execute(
                update(Sequence).where(Sequence.name == name).values(enabled=enabled))
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"no sequence {name!r}")

    async def delete_sequence(self, name: str) -> None:
        async with self.db.session() as session:
            seq = (await session.execute(select(Sequence).where(Sequence.name == name))
                   ).scalar_one_or_none()
            if seq is None:
                raise NotFound(f"no sequence {name!r}")
            await session.delete(seq)

    # ------------------------------------------------------------------ events
    async def on_event(self, contact_id: int, kind: str, *,
                       at: datetime | None = None) -> tuple[int, int]:
        """An event happened (joined, joined_group, first_order, purchase, opt_out, ...):
        stop active enrolments that ``stop_on`` it (those started before it), then enrol the
        member in enabled sequences it triggers. Returns (started, stopped)."""
        at = at or utcnow()
        started = stopped = 0
        async with self.db.session() as session:
            seqs = list((await session.execute(select(Sequence).where(Sequence.enabled)))
                        .scalars())
            stop_ids = [s.id for s in seqs if kind in s.definition.get("stop_on", [])]
            if stop_ids:
                result = await session.execute(
                    update(Enrolment)
                    .where(Enrolment.contact_id == contact_id, Enrolment.status == "active",
                           Enrolment.sequence_id.in_(stop_ids), Enrolment.started_at < at)
                    .values(status="stopped", stopped_reason=kind[:64], next_step_at=None))
                stopped = result.rowcount or 0  # type: ignore[attr-defined]
            if kind == "opt_out":
                return 0, stopped
            profile = await session.get(MemberProfile, contact_id)
            if profile is not None and (profile.opted_out_at is not None
                                        or profile.marketing_consent is False):
                return 0, stopped
            for seq in seqs:
                if seq.trigger != kind:
                    continue
                first = seq.definition["steps"][0].get("after_days", 0)
                try:
                    async with session.begin_nested():
                        session.add(Enrolment(sequence_id=seq.id, contact_id=contact_id,
                                              status="active", step=0, started_at=at,
                                              next_step_at=at + timedelta(days=first)))
                        await session.flush()
                    started += 1
                except IntegrityError:
                    continue  # already enrolled once: a sequence runs once per member
        return started, stopped

    async def event_kinds(self) -> set[str]:
        """Event kinds any enabled sequence starts or stops on."""
        async with self.db.session() as session:
            seqs = (await session.execute(select(Sequence).where(Sequence.enabled))).scalars()
            return {k for s in seqs for k in (s.trigger, *s.definition.get("stop_on", []))}

    async def enrolments(self, contact_id: int) -> list[Enrolment]:
        async with self.db.session() as session:
            return list((await session.execute(select(Enrolment).where(
                Enrolment.contact_id == contact_id).order_by(Enrolment.id))).scalars())

    # ------------------------------------------------------------------ timing rules
    def _zone(self, name: str | None) -> ZoneInfo:
        try:
            return ZoneInfo(name or self.policy.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(self.policy.default_timezone)

    def quiet_until(self, now: datetime, tz_name: str | None) -> datetime | None:
        """When quiet hours end for a member in ``tz_name``, or None if now is not quiet."""
        zone = self._zone(tz_name)
        local = now.astimezone(zone)
        start, end = self.policy.quiet_start_hour, self.policy.quiet_end_hour
        hour = local.hour
        quiet = (start <= hour or hour < end) if start > end else (start <= hour < end)
        if not quiet or start == end:
            return None
        day = local.date() if hour < end else local.date() + timedelta(days=1)
        resume = datetime(day.year, day.month, day.day, end, tzinfo=zone)
        return resume.astimezone(UTC)

    async def cap_until(self, contact_id: int, now: datetime) -> datetime | None:
        """When the frequency cap frees up for this member, or None if a send is allowed."""
        pol = self.policy
        async with self.db.session() as session:
            times = list((await session.execute(
                select(MarketingSend.created_at)
                .where(MarketingSend.contact_id == contact_id,
                       MarketingSend.status != "failed",
                       MarketingSend.created_at > now - timedelta(days=7))
                .order_by(MarketingSend.created_at))).scalars())
        day = [t for t in times if t > now - timedelta(days=1)]
        until: datetime | None = None
        if pol.max_per_day and len(day) >= pol.max_per_day:
            until = day[-pol.max_per_day] + timedelta(days=1)
        if pol.max_per_week and len(times) >= pol.max_per_week:
            week = times[-pol.max_per_week] + timedelta(days=7)
            until = max(until, week) if until else week
        return until

    async def _claim(self, key: str, contact_id: int, text: str, *,
                     enrolment_id: int | None = None, step: int | None = None,
                     now: datetime) -> int | None:
        async with self.db.session() as session:
            try:
                async with session.begin_nested():
                    row = MarketingSend(key=key, contact_id=contact_id, enrolment_id=enrolment_id,
                                        step=step, text=text, status="pending", created_at=now)
                    session.add(row)
                    await session.flush()
                return int(row.id)
            except IntegrityError:
                return None

    async def _deliver(self, send_id: int, contact_id: int, text: str, key: str) -> bool:
        try:
            ok = await self.sender.send(contact_id, text, key=key)
            error = None if ok else "not delivered"
        except Exception as exc:  # noqa: BLE001 - one failed member never stops the run
            ok, error = False, f"{type(exc).__name__}: {exc}"[:256]
        async with self.db.session() as session:
            await session.execute(update(MarketingSend).where(MarketingSend.id == send_id)
                                  .values(status="sent" if ok else "failed", error=error))
        return ok

    # ------------------------------------------------------------------ runners
    async def run_due(self, now: datetime | None = None, *, batch: int = 500) -> RunReport:
        """Send every due sequence step (the scheduler calls this every few minutes)."""
        now = now or utcnow()
        report = RunReport()
        last_id = 0  # keyset: each enrolment is looked at once per run
        while True:
            async with self.db.session() as session:
                rows = (await session.execute(
                    select(Enrolment, Sequence, MemberProfile, Contact)
                    .join(Sequence, Sequence.id == Enrolment.sequence_id)
                    .join(Contact, Contact.id == Enrolment.contact_id)
                    .outerjoin(MemberProfile, MemberProfile.contact_id == Enrolment.contact_id)
                    .where(Enrolment.status == "active", Enrolment.next_step_at <= now,
                           Enrolment.id > last_id)
                    .order_by(Enrolment.id).limit(batch))).all()
            if not rows:
                return report
            for enrolment, seq, profile, contact in rows:
                last_id = enrolment.id
                await self._run_one(enrolment, seq, profile, contact, now, report)

    async def _update(self, enrolment_id: int, **values: Any) -> None:
        async with self.db.session() as session:
            await session.execute(update(Enrolment).where(Enrolment.id == enrolment_id)
                                  .values(**values))

    async def _run_one(self, enr: Enrolment, seq: Sequence, profile: MemberProfile | None,
                       contact: Contact, now: datetime, report: RunReport) -> None:
        steps = seq.definition["steps"]
        if not seq.enabled:
            report.skipped += 1
            return
        if enr.step >= len(steps):
            await self._update(enr.id, status="completed", next_step_at=None)
            report.completed += 1
            return
        if profile is not None and (profile.opted_out_at is not None
                                    or profile.marketing_consent is False):
            await self._update(enr.id, status="stopped", stopped_reason="opt_out",
                               next_step_at=None)
            report.stopped += 1
            return
        tz = profile.timezone if profile is not None else None
        later = self.quiet_until(now, tz)
        reason = "quiet hours"
        if later is None:
            later = await self.cap_until(contact.id, now)
            reason = "frequency cap"
        if later is not None:
            # The cap may free up inside quiet hours: resume when both allow it.
            quiet = self.quiet_until(later, tz)
            await self._update(enr.id, next_step_at=quiet or later)
            report.deferred += 1
            report.details.append(f"enrolment {enr.id}: {reason}, deferred")
            return
        step = steps[enr.step]
        key = f"seq:{enr.id}:{enr.step}"
        coupon = ""
        if step.get("coupon"):
            reward = await record_reward(self.db, self.issuer, contact.id, key=f"{key}:coupon",
                                         reason=step["coupon"])
            coupon = (reward.coupon_code or "") if reward else ""
        text = render(step["text"], contact.language, name=contact.display_name or "",
                      coupon=coupon)
        send_id = await self._claim(key, contact.id, text, enrolment_id=enr.id, step=enr.step,
                                    now=now)
        if send_id is not None:
            if await self._deliver(send_id, contact.id, text, key):
                report.sent += 1
            else:
                report.failed += 1
        nxt = enr.step + 1
        if nxt >= len(steps):
            await self._update(enr.id, step=nxt, status="completed", next_step_at=None)
            report.completed += 1
        else:
            due = enr.started_at + timedelta(days=steps[nxt].get("after_days", 0))
            await self._update(enr.id, step=nxt, next_step_at=max(due, now))

    async def run_birthdays(self, now: datetime | None = None, *,
                            text: dict[str, str] | str | None = None,
                            coupon: str | None = "birthday") -> RunReport:
        """Greet members whose birthday it is in their time zone, with a birthday coupon
        (recorded through the issuer). Run hourly: members in quiet hours are greeted by a
        later run the same day; ``birthday:<year>:<contact>`` makes it once a year."""
        now = now or utcnow()
        report = RunReport()
        days = {(now + timedelta(hours=h)).date() for h in (-14, 0, 14)}
        pairs = set()
        for d in days:
            pairs.add((d.month, d.day))
            if d.month == 2 and d.day == 28 and not _leap(d.year):
                pairs.add((2, 29))  # 29 February birthdays are greeted on the 28th
        async with self.db.session() as session:
            rows = (await session.execute(
                select(MemberProfile, Contact)
                .join(Contact, Contact.id == MemberProfile.contact_id)
                .where(tuple_(MemberProfile.birth_month, MemberProfile.birth_day).in_(
                    sorted(pairs)),
                       MemberProfile.opted_out_at.is_(None),
                       func.coalesce(MemberProfile.marketing_consent, True).is_(True))
                .order_by(MemberProfile.contact_id))).all()
        for profile, contact in rows:
            local = now.astimezone(self._zone(profile.timezone)).date()
            month, day = profile.birth_month, profile.birth_day
            if (month, day) == (2, 29) and not _leap(local.year):
                month, day = 2, 28
            if (local.month, local.day) != (month, day):
                continue
            if self.quiet_until(now, profile.timezone) is not None:
                report.deferred += 1
                continue
            key = f"birthday:{local.year}:{contact.id}"
            async with self.db.session() as session:
                done = await session.scalar(select(MarketingSend.id).where(
                    MarketingSend.key == key))
            if done is not None:
                report.skipped += 1
                continue
            code = ""
            if coupon:
                reward = await record_reward(self.db, self.issuer, contact.id,
                                             key=f"{key}:coupon", reason=coupon)
                code = (reward.coupon_code or "") if reward else ""
            message = render(text or BIRTHDAY_TEXT, contact.language,
                             name=contact.display_name or "", coupon=code)
            if not code:
                message = message.rstrip(":： ").rstrip("：")
            send_id = await self._claim(key, contact.id, message, now=now)
            if send_id is None:
                report.skipped += 1
                continue
            if await self._deliver(send_id, contact.id, message, key):
                report.sent += 1
            else:
                report.failed += 1
        return report


def _leap(year: int) -> bool:
    try:
        date(year, 2, 29)
        return True
    except ValueError:
        return False
