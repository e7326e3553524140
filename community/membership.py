"""Members joining and leaving groups: tracked from the platform's member updates, welcomed in
the group (batched when many join at once) and given an onboarding coupon privately on their
first join anywhere in the community."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import func, select, update

from bot.core.i18n import Translator, normalise_language
from bot.core.types import ChatKind, ChatRef, MemberChanged, OutgoingMessage
from community.coupons import CouponService
from community.dbutil import retry_locked
from community.delivery import Publisher
from community.errors import CouponError
from community.groups import GroupService
from community.settings import CommunitySettings
from models import Database
from models.base import utcnow
from models.community import CommunityGroup, EntryVisit, InviteLink, Member, Pool
from models.repositories import ContactRepository

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class MembershipService:
    def __init__(
        self,
        *,
        db: Database,
        groups: GroupService,
        coupons: CouponService,
        publisher: Publisher,
        translate: Translator,
        settings: CommunitySettings,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], datetime] = utcnow,
        default_language: str = "ja",
    ) -> None:
        self.db = db
        self.groups = groups
        self.coupons = coupons
        self.publisher = publisher
        self.t = translate
        self.settings = settings
        self.sleep = sleep
        self.now = now
        self.default_language = default_language
        self._waiting: dict[int, list[str]] = {}
        self._flushers: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_member_changed(self, ev: MemberChanged) -> None:
        if ev.user.is_bot:
            return
        if ev.joined:
            await self._joined(ev)
        elif ev.left:
            await self._left(ev)

    async def _joined(self, ev: MemberChanged) -> None:
        now = self.now()

        async def write() -> tuple[CommunityGroup | None, int | None, bool, str | None, str]:
            async with self.db.session() as s:
                group = (await s.execute(select(CommunityGroup).where(
                    CommunityGroup.platform == ev.chat.platform,
                    CommunityGroup.external_id == ev.chat.id))).scalar_one_or_none()
                if group is None:
                    return None, None, False, None, ""
                identity, _ = await ContactRepository(s).identify(
                    ev.user.platform, ev.user.id, display_name=ev.user.display_name,
                    username=ev.user.username, language_code=ev.user.language_code)
                contact_id = identity.contact_id
                member = (await s.execute(select(Member).where(
                    Member.group_id == group.id, Member.user_external_id == ev.user.id))
                ).scalar_one_or_none()
                visit = (await s.execute(select(EntryVisit).where(
                    EntryVisit.user_external_id == ev.user.id,
                    EntryVisit.platform == ev.user.platform,
                    EntryVisit.joined_at.is_(None),
                ).order_by(EntryVisit.id.desc()).limit(1))).scalar_one_or_none()
                if visit is not None and visit.group_id in (group.id, None):
                    visit.joined_at = now
                else:
                    visit = None
                if ev.invite_link:
                    await s.execute(update(InviteLink).where(InviteLink.url == ev.invite_link)
                                    .values(uses=InviteLink.uses + 1))
                if member is None:
                    member = Member(group_id=group.id, platform=ev.user.platform,
                                    user_external_id=ev.user.id, joined_at=now)
                    s.add(member)
                elif member.status == "member":
                    return group, contact_id, False, None, ""  # a repeated update
                member.contact_id = contact_id
                member.status = "member"
                member.joined_at = now
                member.left_at = None
                member.invite_link = ev.invite_link
                member.via_join_request = ev.via_join_request
                if visit is not None:
                    member.entry_link_id = visit.entry_link_id
                await s.execute(update(CommunityGroup).where(CommunityGroup.id == group.id)
                                .values(member_count=CommunityGroup.member_count + 1))
                await s.flush()
                joins = int((await s.execute(select(func.count()).select_from(Member).where(
                    Member.contact_id == contact_id))).scalar_one())
                pool = await s.get(Pool, group.pool_id) if group.pool_id else None
                coupon = (pool.welcome_coupon if pool else None) or self.settings.welcome_coupon
                lang = identity.contact.language or normalise_language(
                    ev.user.language_code) or self.default_language
                return group, contact_id, joins == 1, coupon, lang

        group, contact_id, first, coupon, lang = await retry_locked(write)
        if group is None:
            log.info("member joined a group that is not adopted", extra={"chat": ev.chat.id})
            return
        self._queue_welcome(group, ev.user.display_name or ev.user.username or "")
        if first and coupon and contact_id is not None:
            await self._onboarding_coupon(ev, contact_id, coupon, lang)
        await self.groups.check_capacity(group.pool_id)

    async def _left(self, ev: MemberChanged) -> None:
        async def write() -> None:
            async with self.db.session() as s:
                group = (await s.execute(select(CommunityGroup).where(
                    CommunityGroup.platform == ev.chat.platform,
                    CommunityGroup.external_id == ev.chat.id))).scalar_one_or_none()
                if group is None:
                    return
                member = (await s.execute(select(Member).where(
                    Member.group_id == group.id, Member.user_external_id == ev.user.id))
                ).scalar_one_or_none()
                if member is not None and member.status != "member":
                    return
                if member is None:  # joined before the bot was there
                    member = Member(group_id=group.id, platform=ev.user.platform,
                                    user_external_id=ev.user.id)
                    s.add(member)
                member.status = "kicked" if ev.new_status.value == "kicked" else "left"
                member.left_at = self.now()
                await s.execute(update(CommunityGroup).where(
                    CommunityGroup.id == group.id, CommunityGroup.member_count > 0
                ).values(member_count=CommunityGroup.member_count - 1))

        await retry_locked(write)

    async def _onboarding_coupon(self, ev: MemberChanged, contact_id: int, campaign: str,
                                 lang: str) -> None:
        try:
            issued = await self.coupons.issue(campaign, contact_id,
                                              issue_key=f"onboarding:{contact_id}")
        except CouponError as exc:
            log.info("no onboarding coupon", extra={"reason": exc.reason})
            return
        if not issued.new:
            return
        chat = ChatRef(ev.user.platform, ChatKind.PRIVATE, ev.user.id)
        result = await self.publisher.publish(chat, OutgoingMessage(
            text=self.t("community_onboarding_coupon", lang, code=issued.code),
            sender="community:onboarding"))
        if not result.ok:
            log.info("onboarding coupon not delivered (the member never opened the bot?)",
                     extra={"error": result.error})

    # ------------------------------------------------------------------ welcomes
    def _queue_welcome(self, group: CommunityGroup, name: str) -> None:
        self._waiting.setdefault(group.id, []).append(name or "👋")
        if group.id not in self._flushers:
            chat = ChatRef(group.platform, ChatKind.GROUP, group.external_id, group.title)
            task = asyncio.create_task(self._flush(group.id, chat), name=f"welcome-{group.id}")
            self._flushers[group.id] = task

    async def _flush(self, group_id: int, chat: ChatRef) -> None:
        """One welcome for everyone who joined during the batch window or while the previous
        welcome waited for the group's rate limit."""
        try:
            await self.sleep(self.settings.welcome_batch_seconds)
            while self._waiting.get(group_id):
                names = self._waiting[group_id][: self.settings.welcome_max_names]
                del self._waiting[group_id][: len(names)]
                text = self.t("community_welcome_group", self.default_language,
                              names=", ".join(names))
                result = await self.publisher.publish(
                    chat, OutgoingMessage(text=text, sender="community:welcome"))
                if not result.ok:
                    log.info("welcome not delivered", extra={"error": result.error})
        except Exception:
            log.exception("welcome failed")
        finally:
            self._flushers.pop(group_id, None)
            self._waiting.pop(group_id, None)

    async def drain(self) -> None:
        """Wait for pending welcomes (tests, shutdown)."""
        while self._flushers:
            await asyncio.gather(*list(self._flushers.values()), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._flushers.values()):
            task.cancel()
        for task in list(self._flushers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
