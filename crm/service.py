"""``CrmService``: one object holding the CRM services, plus the jobs the scheduler runs.

The composition root builds it with the database, the policy, a ``Sender`` (wired to the
Outbound path) and a ``RewardIssuer`` (the community coupons module), then schedules
``refresh`` (e.g. nightly) and ``run_automations`` (e.g. every five minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from crm.automations import AutomationService, RunReport, Sender
from crm.errors import CrmError
from crm.importer import CsvImporter, ImportReport
from crm.koc import KocService, RecordingIssuer, ReferralSync, RewardIssuer
from crm.members import MemberService
from crm.policy import CrmPolicy
from crm.scoring import RecomputeResult, ScoringService
from crm.segments import SegmentService
from crm.tags import RuleRun, TagRuleService
from models.base import utcnow
from models.db import Database


class _NoSender:
    async def send(self, contact_id: int, text: str, *, key: str) -> bool:
        raise CrmError("no message sender is configured for CRM automations")


@dataclass
class RefreshReport:
    referrals: ReferralSync
    recompute: RecomputeResult
    rules: list[RuleRun] = field(default_factory=list)


class CrmService:
    """Facade over members, import, tags, scoring, segments, KOC and automations."""

    def __init__(self, *, db: Database, policy: CrmPolicy | None = None,
                 sender: Sender | None = None, issuer: RewardIssuer | None = None,
                 bot_username: str | None = None) -> None:
        self.db = db
        self.policy = policy or CrmPolicy()
        issuer = issuer or RecordingIssuer()
        self.members = MemberService(db=db, policy=self.policy)
        self.importer = CsvImporter(db=db, policy=self.policy)
        self.segments = SegmentService(db=db)
        self.rules = TagRuleService(db=db, segments=self.segments)
        self.scoring = ScoringService(db=db, policy=self.policy)
        self.koc = KocService(db=db, policy=self.policy, issuer=issuer,
                              bot_username=bot_username)
        self.automations = AutomationService(db=db, sender=sender or _NoSender(),
                                             policy=self.policy, issuer=issuer)

    # Shortcuts the bot core and the advisor inbox use.
    async def is_marketable(self, contact_id: int) -> bool:
        """False for opted-out (or declined) members: they get no marketing, ever."""
        return await self.members.is_marketable(contact_id)

    async def needs_senior(self, contact_id: int) -> bool:
        """Route this member's hand-off to a senior advisor."""
        return await self.members.needs_senior(contact_id)

    async def opt_out(self, contact_id: int, *, reason: str | None = None) -> None:
        """Opt out and stop the member's sequences."""
        await self.members.opt_out(contact_id, reason=reason)
        await self.automations.on_event(contact_id, "opt_out")

    async def import_file(self, kind: str, path: str | Path, *, dry_run: bool = False,
                          encoding: str | None = None,
                          now: datetime | None = None) -> ImportReport:
        """Import customers or orders; after a real import re-evaluate tag rules, attribute
        referral first orders and fire purchase / first_order automation events."""
        if kind == "customers":
            report = await self.importer.import_customers(path, encoding=encoding,
                                                          dry_run=dry_run)
        elif kind == "orders":
            report = await self.importer.import_orders(path, encoding=encoding,
                                                       dry_run=dry_run)
        else:
            raise CrmError(f"unknown import kind {kind!r} (customers or orders)")
        if report.ok and not dry_run and (report.created or report.updated):
            await self.after_data_change(report, now=now)
        return report

    async def after_data_change(self, report: ImportReport | None = None, *,
                                now: datetime | None = None) -> list[RuleRun]:
        """After an import: fire automation events for recent orders, attribute referral
        first orders, re-evaluate tag rules."""
        now = now or utcnow()
        if report is not None:
            recent = now - timedelta(days=self.policy.automation_event_max_age_days)
            kinds = await self.automations.event_kinds()
            if "purchase" in kinds:
                for cid, at in sorted(report.last_orders.items()):
                    if at >= recent:
                        await self.automations.on_event(cid, "purchase", at=at)
            if "first_order" in kinds:
                for cid, at in sorted(report.first_orders.items()):
                    if at >= recent:
                        await self.automations.on_event(cid, "first_order", at=now)
            if report.purchasers:
                await self.koc.sync_referrals()
        return await self.rules.evaluate_all(now=now)

    async def refresh(self, now: datetime | None = None) -> RefreshReport:
        """The scheduled job: attribute referrals, recompute tiers/LTV/KOC, re-run rules."""
        now = now or utcnow()
        referrals = await self.koc.sync_referrals()
        result = await self.scoring.recompute(now=now)
        rules = await self.rules.evaluate_all(now=now)
        return RefreshReport(referrals, result, rules)

    async def run_automations(self, now: datetime | None = None) -> RunReport:
        """The frequent job: due sequence steps, then birthday greetings."""
        now = now or utcnow()
        report = await self.automations.run_due(now)
        birthdays = await self.automations.run_birthdays(now)
        report.sent += birthdays.sent
        report.failed += birthdays.failed
        report.deferred += birthdays.deferred
        return report
