"""Coupon campaigns: unique or shared codes, per-member limits, validity windows, redemption.

Every "once" is a database constraint (see :mod:`models.community`), so concurrent issuers and
redeemers in several processes cannot issue a code twice, exceed a member's limit or redeem a
code twice: the loser of a race gets an ``IntegrityError`` and re-reads.
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from community.dbutil import check_name, retry_locked
from community.errors import CommunityError, CouponError, NotFound
from models import Database
from models.base import utcnow
from models.community import (
    ApiKey,
    CouponCampaign,
    CouponCode,
    CouponIssue,
    CouponRedemption,
)

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I


@dataclass(frozen=True, slots=True)
class Issued:
    campaign: str
    code: str
    issue_id: int
    new: bool
    valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class Redeemed:
    campaign: str
    code: str
    redeemed_at: datetime
    contact_id: int | None


@dataclass(frozen=True, slots=True)
class CampaignStats:
    campaign: CouponCampaign
    issued: int
    members: int
    redeemed: int


def normalise_code(code: str) -> str:
    return code.strip().upper().replace(" ", "")


class CouponService:
    """Creates campaigns, issues codes to members, redeems codes; API keys for the shop."""

    def __init__(self, *, db: Database, now: Callable[[], datetime] = utcnow,
                 code_length: int = 10) -> None:
        self.db = db
        self.now = now
        self.code_length = code_length

    # ------------------------------------------------------------------ campaigns
    async def create_campaign(
        self,
        name: str,
        *,
        kind: str = "unique",
        shared_code: str | None = None,
        per_member_limit: int = 1,
        total_limit: int | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        title: str | None = None,
        code_prefix: str = "",
    ) -> CouponCampaign:
        check_name(name, "campaign name")
        if kind not in ("unique", "shared"):
            raise CommunityError(f"coupon kind must be 'unique' or 'shared', not {kind!r}")
        if kind == "shared":
            if not shared_code or not normalise_code(shared_code):
                raise CommunityError("a shared campaign needs its code (--code)")
            shared_code = normalise_code(shared_code)
        elif shared_code:
            raise CommunityError("a unique-code campaign generates its codes; drop --code")
        if per_member_limit < 1:
            raise CommunityError("per-member limit must be at least 1")
        if total_limit is not None and total_limit < 1:
            raise CommunityError("total limit must be at least 1")
        if valid_from and valid_until and valid_until <= valid_from:
            raise CommunityError("valid-until must be after valid-from")
        prefix = normalise_code(code_prefix)
        if len(prefix) > 12:
            raise CommunityError("code prefix is limited to 12 characters")
        async with self.db.session() as s:
            if await self._campaign(s, name, required=False) is not None:
                raise CommunityError(f"coupon campaign {name!r} already exists")
            campaign = CouponCampaign(
                name=name, title=title, kind=kind, shared_code=shared_code,
                per_member_limit=per_member_limit, total_limit=total_limit,
                valid_from=valid_from, valid_until=valid_until, code_prefix=prefix,
            )
            s.add(campaign)
            await s.flush()
            if shared_code:
                try:
                    async with s.begin_nested():
                        s.add(CouponCode(campaign_id=campaign.id, code=shared_code, shared=True))
                        await s.flush()
                except IntegrityError:
                    raise CommunityError(f"code {shared_code!r} is already in use") from None
        return campaign

    async def get(self, name: str) -> CouponCampaign:
        async with self.db.session() as s:
            return await self._campaign(s, name)

    async def list(self) -> list[CampaignStats]:
        async with self.db.session() as s:
            camps = list((await s.execute(select(CouponCampaign).order_by(CouponCampaign.id)))
                         .scalars())
        return [await self.stats(c.name) for c in camps]

    async def stats(self, name: str) -> CampaignStats:
        async with self.db.session() as s:
            c = await self._campaign(s, name)
            issued, members = (await s.execute(
                select(func.count(), func.count(func.distinct(CouponIssue.contact_id)))
                .where(CouponIssue.campaign_id == c.id)
            )).one()
            redeemed = (await s.execute(
                select(func.count()).select_from(CouponRedemption).join(
                    CouponCode, CouponCode.id == CouponRedemption.code_id
                ).where(CouponCode.campaign_id == c.id)
            )).scalar_one()
        return CampaignStats(c, int(issued), int(members), int(redeemed))

    async def _campaign(self, s: AsyncSession, name: str | int,
                        required: bool = True) -> CouponCampaign:
        stmt = select(CouponCampaign).where(
            CouponCampaign.id == name if isinstance(name, int) else CouponCampaign.name == name
        )
        found = (await s.execute(stmt)).scalar_one_or_none()
        if found is None and required:
            raise NotFound(f"no coupon campaign {name!r}")
        return found  # type: ignore[return-value]

    # ------------------------------------------------------------------ issuing
    async def issue(
        self, campaign: str | int, contact_id: int, *, issue_key: str | None = None
    ) -> Issued:
        """Hand a code to a member. With ``issue_key`` (e.g. ``"drop-row:17"``) a repeated call
        returns the same code instead of a new one. Raises :class:`CouponError`."""

        async def attempt() -> Issued:
            async with self.db.session() as s:
                return await self._issue(s, campaign, contact_id, issue_key)

        for _ in range(20):
            try:
                return await retry_locked(attempt)
            except _Raced:
                continue
        raise CouponError("busy", "could not issue a coupon: too much contention, try again")

    async def _issue(self, s: AsyncSession, name: str | int, contact_id: int,
                     issue_key: str | None) -> Issued:
        c = await self._campaign(s, name)
        if issue_key is not None:
            found = (await s.execute(
                select(CouponIssue, CouponCode.code)
                .join(CouponCode, CouponCode.id == CouponIssue.code_id)
                .where(CouponIssue.issue_key == issue_key)
            )).one_or_none()
            if found is not None:
                return Issued(c.name, found[1], found[0].id, False, c.valid_until)
        now = self.now()
        if not c.active:
            raise CouponError("inactive", f"campaign {c.name!r} is not active")
        if c.valid_until is not None and now >= c.valid_until:
            raise CouponError("expired", f"campaign {c.name!r} ended at {c.valid_until:%Y-%m-%d %H:%M} UTC")
        count = int((await s.execute(
            select(func.count()).select_from(CouponIssue).where(
                CouponIssue.campaign_id == c.id, CouponIssue.contact_id == contact_id)
        )).scalar_one())
        if count >= c.per_member_limit:
            raise CouponError("limit", f"member already has {count} coupon(s) of {c.name!r} "
                              f"(limit {c.per_member_limit})")
        if c.total_limit is not None:
            total = int((await s.execute(
                select(func.count()).select_from(CouponIssue)
                .where(CouponIssue.campaign_id == c.id)
            )).scalar_one())
            if total >= c.total_limit:
                raise CouponError("sold_out", f"campaign {c.name!r} reached its total limit")
        try:
            async with s.begin_nested():
                if c.kind == "shared":
                    code = (await s.execute(select(CouponCode).where(
                        CouponCode.campaign_id == c.id, CouponCode.shared.is_(True))
                    )).scalar_one()
                else:
                    code = CouponCode(campaign_id=c.id, code=self._new_code(c.code_prefix))
                    s.add(code)
                    await s.flush()
                issue = CouponIssue(
                    campaign_id=c.id, contact_id=contact_id, seq=count + 1, code_id=code.id,
                    unique_code_id=None if c.kind == "shared" else code.id,
                    issue_key=issue_key or f"auto:{secrets.token_hex(12)}", issued_at=now,
                )
                s.add(issue)
                await s.flush()
        except IntegrityError:
            raise _Raced() from None  # a concurrent issuer won seq/issue_key/code: re-read
        return Issued(c.name, code.code, issue.id, True, c.valid_until)

    def _new_code(self, prefix: str) -> str:
        body = "".join(secrets.choice(CODE_ALPHABET) for _ in range(self.code_length))
        return f"{prefix}-{body}" if prefix else body

    async def codes_of(self, contact_id: int) -> builtins.list[tuple[str, str]]:
        async with self.db.session() as s:
            rows = (await s.execute(
                select(CouponCampaign.name, CouponCode.code)
                .join(CouponIssue, CouponIssue.campaign_id == CouponCampaign.id)
                .join(CouponCode, CouponCode.id == CouponIssue.code_id)
                .where(CouponIssue.contact_id == contact_id).order_by(CouponIssue.id)
            )).all()
        return [(r[0], r[1]) for r in rows]

    # ------------------------------------------------------------------ redeeming
    async def redeem(self, code: str, *, reference: str | None = None,
                     by: str | None = None) -> Redeemed:
        """Mark a code used at the shop. A unique code is redeemable once; a shared code once
        per ``reference`` (member or order id, required). Raises :class:`CouponError` with
        reason ``unknown``, ``not_issued``, ``not_started``, ``expired``, ``already_redeemed``
        or ``reference_required``."""
        code = normalise_code(code)
        if not code:
            raise CouponError("unknown", "empty coupon code")
        ref = (reference or "").strip()[:128] or None

        async def attempt() -> Redeemed:
            async with self.db.session() as s:
                return await self._redeem(s, code, ref, by)

        return await retry_locked(attempt)

    async def _redeem(self, s: AsyncSession, code: str, ref: str | None,
                      by: str | None) -> Redeemed:
        row = (await s.execute(
            select(CouponCode, CouponCampaign)
            .join(CouponCampaign, CouponCampaign.id == CouponCode.campaign_id)
            .where(CouponCode.code == code)
        )).one_or_none()
        if row is None:
            raise CouponError("unknown", f"unknown coupon code {code!r}")
        cc, camp = row
        now = self.now()
        if camp.valid_from is not None and now < camp.valid_from:
            raise CouponError("not_started", f"coupon {code} is valid from "
                              f"{camp.valid_from:%Y-%m-%d %H:%M} UTC")
        if camp.valid_until is not None and now >= camp.valid_until:
            raise CouponError("expired", f"coupon {code} expired at "
                              f"{camp.valid_until:%Y-%m-%d %H:%M} UTC")
        issue = None
        if cc.shared:
            if ref is None:
                raise CouponError("reference_required",
                                  "a shared code needs the member or order reference")
            key = f"shared:{cc.id}:{ref}"
        else:
            issue = (await s.execute(
                select(CouponIssue).where(CouponIssue.code_id == cc.id)
            )).scalar_one_or_none()
            if issue is None:
                raise CouponError("not_issued", f"coupon {code} was never issued")
            key = f"code:{cc.id}"
        try:
            async with s.begin_nested():
                red = CouponRedemption(
                    code_id=cc.id, issue_id=issue.id if issue else None, redemption_key=key,
                    reference=ref, redeemed_by=by, redeemed_at=now,
                )
                s.add(red)
                await s.flush()
        except IntegrityError:
            prev = (await s.execute(
                select(CouponRedemption.redeemed_at)
                .where(CouponRedemption.redemption_key == key)
            )).scalar_one_or_none()
            when = f" at {prev:%Y-%m-%d %H:%M} UTC" if prev else ""
            raise CouponError("already_redeemed", f"coupon {code} was already redeemed{when}") \
                from None
        return Redeemed(camp.name, code, now, issue.contact_id if issue else None)

    # ------------------------------------------------------------------ API keys
    async def create_api_key(self, name: str, scopes: str = "coupons:redeem") -> str:
        """Store a new key's hash; return the key (shown once)."""
        check_name(name, "API key name")
        key = "kz_" + secrets.token_urlsafe(32)
        async with self.db.session() as s:
            try:
                async with s.begin_nested():
                    s.add(ApiKey(name=name, key_hash=hash_key(key), prefix=key[:8],
                                 scopes=scopes))
                    await s.flush()
            except IntegrityError:
                raise CommunityError(f"API key {name!r} already exists") from None
        return key

    async def revoke_api_key(self, name: str) -> None:
        async with self.db.session() as s:
            row = (await s.execute(select(ApiKey).where(ApiKey.name == name))) \
                .scalar_one_or_none()
            if row is None:
                raise NotFound(f"no API key {name!r}")
            row.revoked_at = self.now()

    async def check_api_key(self, key: str, scope: str) -> str | None:
        """The key's name when it is valid for ``scope``, else None."""
        if not key or len(key) > 200:
            return None
        async with self.db.session() as s:
            row = (await s.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))) \
                .scalar_one_or_none()
            if row is None or row.revoked_at is not None or scope not in row.scopes.split(","):
                return None
            row.last_used_at = self.now()
            return row.name


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching).
    return hashlib.sha256(key.encode()).hexdigest()


class _Raced(Exception):
    pass
