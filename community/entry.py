"""Entry links: one permanent link (and QR code) per campaign or store.

``https://t.me/<bot>?start=<code>`` opens the bot; :meth:`EntryService.handle_start` routes the
visitor to the first group of the link's pool that has room - counting members and the seats
held by visitors routed in the last ``reservation_minutes`` - and sends them that group's
current invite link. Invite links are created with ``createChatInviteLink`` and rotated: one
live link per group, ``member_limit`` = the group's free seats when it was made, replaced when
used up or expired. Links with ``join_mode = request`` need approval instead; requests are
approved or declined by the pool's rule (:meth:`handle_join_request`), with a private welcome
sent inside the platform's window (Telegram: 5 minutes) before the answer.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from bot.core.i18n import Translator, normalise_language
from bot.core.ports import GroupAdmin
from bot.core.types import (
    Button,
    ChatKind,
    ChatRef,
    IncomingMessage,
    JoinRequest,
    OutgoingMessage,
    SendError,
)
from community.dbutil import check_name
from community.delivery import Publisher
from community.errors import CommunityError, NotFound
from community.groups import GroupService
from community.settings import CommunitySettings
from models import Database
from models.base import utcnow
from models.community import (
    CommunityGroup,
    EntryLink,
    EntryVisit,
    GroupStatus,
    GroupTag,
    InviteLink,
    Member,
    Pool,
)
from models.repositories import ContactRepository

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Route:
    group: CommunityGroup | None
    url: str | None
    already_member: bool = False


class EntryService:
    def __init__(
        self,
        *,
        db: Database,
        groups: GroupService,
        admins: dict[str, GroupAdmin],
        publisher: Publisher,
        translate: Translator,
        settings: CommunitySettings,
        locks: Any,
        now: Callable[[], datetime] = utcnow,
        default_language: str = "ja",
    ) -> None:
        self.db = db
        self.groups = groups
        self.admins = admins
        self.publisher = publisher
        self.t = translate
        self.settings = settings
        self.locks = locks
        self.now = now
        self.default_language = default_language

    # ------------------------------------------------------------------ links
    async def create_link(
        self, code: str, *, pool: str, campaign: str | None = None, store: str | None = None,
        label: str | None = None, group_tag: str | None = None, join_mode: str = "link",
    ) -> EntryLink:
        check_name(code, "entry code")
        if not all(c.isalnum() or c in "_-" for c in code):
            raise CommunityError("an entry code may use letters, digits, '_' and '-' only "
                                 "(Telegram start parameters)")
        if join_mode not in ("link", "request"):
            raise CommunityError("join mode must be 'link' or 'request'")
        async with self.db.session() as s:
            p = (await s.execute(select(Pool).where(Pool.name == pool))).scalar_one_or_none()
            if p is None:
                raise NotFound(f"no pool {pool!r}")
            if (await s.execute(select(EntryLink.id).where(EntryLink.code == code))) \
                    .scalar_one_or_none() is not None:
                raise CommunityError(f"entry code {code!r} already exists")
            link = EntryLink(code=code, pool_id=p.id, campaign=campaign, store=store,
                             label=label, group_tag=group_tag.lower() if group_tag else None,
                             join_mode=join_mode)
            s.add(link)
        return link

    async def links(self) -> list[tuple[EntryLink, str, int, int]]:
        """(link, pool name, visits, joins) for every entry link."""
        async with self.db.session() as s:
            rows = (await s.execute(
                select(EntryLink, Pool.name).join(Pool, Pool.id == EntryLink.pool_id)
                .order_by(EntryLink.id))).all()
            stats = {lid: (int(v), int(j)) for lid, v, j in await s.execute(
                select(EntryVisit.entry_link_id, func.count(), func.count(EntryVisit.joined_at))
                .group_by(EntryVisit.entry_link_id))}
        return [(link, name, *stats.get(link.id, (0, 0))) for link, name in rows]

    async def get_link(self, code: str) -> EntryLink:
        async with self.db.session() as s:
            link = (await s.execute(select(EntryLink).where(EntryLink.code == code))) \
                .scalar_one_or_none()
        if link is None:
            raise NotFound(f"no entry link {code!r}")
        return link

    async def set_active(self, code: str, active: bool) -> EntryLink:
        """Close an entry link (whoever opens it is told it is no longer active; the QR
        codes already printed stay harmless) or reopen it."""
        async with self.db.session() as s:
            link = (await s.execute(select(EntryLink).where(EntryLink.code == code))) \
                .scalar_one_or_none()
            if link is None:
                raise NotFound(f"no entry link {code!r}")
            link.active = bool(active)
        return link

    def start_url(self, code: str, platform: str = "telegram") -> str:
        admin = self.admins.get(platform)
        url = admin.start_link(code) if admin is not None else None
        if url is None and self.settings.bot_username:
            url = f"https://t.me/{self.settings.bot_username}?start={code}"
        if url is None:
            raise CommunityError("the bot's username is unknown: set community.bot_username")
        return url

    @staticmethod
    def qr_png(url: str, *, scale: int = 8) -> bytes:
        import segno

        out = io.BytesIO()
        segno.make(url, error="m").save(out, kind="png", scale=scale, border=4)
        return out.getvalue()

    # ------------------------------------------------------------------ /start CODE
    async def handle_start(self, msg: IncomingMessage) -> bool:
        """If ``/start`` carries an entry code, route the visitor; True when handled."""
        if msg.command != "start" or not msg.command_args or msg.chat.kind is not ChatKind.PRIVATE:
            return False
        code = msg.command_args.strip().split()[0]
        async with self.db.session() as s:
            entry = (await s.execute(select(EntryLink).where(EntryLink.code == code))) \
                .scalar_one_or_none()
            if entry is None:
                return False
            identity, _ = await ContactRepository(s).identify(
                msg.sender.platform, msg.sender.id, display_name=msg.sender.display_name,
                username=msg.sender.username, language_code=msg.sender.language_code)
            contact_id = identity.contact_id
            lang = identity.contact.language or normalise_language(
                msg.sender.language_code) or self.default_language
        if not entry.active:
            await self._dm(msg.chat, self.t("community_entry_closed", lang))
            return True
        route = await self.route(entry, msg.sender.platform, msg.sender.id, contact_id)
        if route.already_member and route.group is not None:
            await self._dm(msg.chat, self.t("community_already_member", lang,
                                            group=route.group.title or ""))
        elif route.url is None or route.group is None:
            await self._dm(msg.chat, self.t("community_pool_full", lang))
        else:
            await self._dm(msg.chat, self.t("community_join_prompt", lang,
                                             group=route.group.title or ""),
                           [[Button(self.t("community_join_button", lang), url=route.url)]])
        return True

    async def route(self, entry: EntryLink, platform: str, user_id: str,
                    contact_id: int | None) -> Route:
        """Pick the group with room for this visitor and get its live invite link."""
        async with self.locks.hold(f"community:pool:{entry.pool_id}", ttl=30):
            now = self.now()
            since = now - timedelta(minutes=self.settings.reservation_minutes)
            async with self.db.session() as s:
                stmt = select(CommunityGroup).where(
                    CommunityGroup.pool_id == entry.pool_id,
                    CommunityGroup.platform == platform,
                    CommunityGroup.status == GroupStatus.ACTIVE,
                ).order_by(CommunityGroup.id)
                if entry.group_tag:
                    stmt = stmt.where(CommunityGroup.id.in_(
                        select(GroupTag.group_id).where(GroupTag.tag == entry.group_tag)))
                groups = list((await s.execute(stmt)).scalars())
                if not groups:
                    await self.groups.check_capacity(entry.pool_id)
                    return Route(None, None)
                ids = [g.id for g in groups]
                member_of = (await s.execute(select(Member.group_id).where(
                    Member.group_id.in_(ids), Member.user_external_id == user_id,
                    Member.status == "member"))).scalars().first()
                if member_of is not None:
                    return Route(next(g for g in groups if g.id == member_of), None, True)
                held = dict((await s.execute(
                    select(EntryVisit.group_id, func.count()).where(
                        EntryVisit.group_id.in_(ids), EntryVisit.joined_at.is_(None),
                        EntryVisit.created_at >= since,
                        EntryVisit.user_external_id != user_id,
                    ).group_by(EntryVisit.group_id))).all())
            chosen = None
            for g in groups:
                free = g.capacity - g.member_count - int(held.get(g.id, 0))
                if free > 0:
                    chosen = g
                    break
            if chosen is None:
                await self.groups.check_capacity(entry.pool_id)
                return Route(None, None)
            try:
                url = await self.invite_link(chosen, request=entry.join_mode == "request",
                                             free=max(1, chosen.capacity - chosen.member_count))
            except SendError as exc:
                log.warning("invite link not created: %s", exc.description,
                            extra={"group": chosen.id})
                return Route(None, None)
            async with self.db.session() as s:
                s.add(EntryVisit(entry_link_id=entry.id, platform=platform,
                                 user_external_id=user_id, contact_id=contact_id,
                                 group_id=chosen.id, invite_link=url, created_at=now))
        await self.groups.check_capacity(entry.pool_id)
        return Route(chosen, url)

    async def invite_link(self, group: CommunityGroup, *, request: bool, free: int) -> str:
        """The group's live invite link, rotated when used up or about to expire."""
        now = self.now()
        async with self.db.session() as s:
            live = (await s.execute(
                select(InviteLink).where(
                    InviteLink.group_id == group.id, InviteLink.revoked_at.is_(None),
                    InviteLink.creates_join_request.is_(request),
                ).order_by(InviteLink.id.desc()).limit(1)
            )).scalar_one_or_none()
        fresh = live is not None and (
            live.expires_at is None or live.expires_at > now + timedelta(minutes=10)
        ) and (live.member_limit is None or live.uses < live.member_limit)
        if live is not None and fresh:
            return live.url
        admin = self.admins.get(group.platform)
        if admin is None:
            raise CommunityError(f"platform {group.platform!r} cannot make invite links")
        chat = ChatRef(group.platform, ChatKind.GROUP, group.external_id, group.title)
        made = await admin.create_invite_link(
            chat, name=f"kizuna-{group.id}-{int(now.timestamp())}"[:32],
            member_limit=None if request else min(99_999, free),
            expires_at=now + timedelta(hours=self.settings.invite_link_ttl_hours),
            creates_join_request=request,
        )
        async with self.db.session() as s:
            s.add(InviteLink(group_id=group.id, url=made.url, member_limit=made.member_limit,
                             creates_join_request=request, expires_at=made.expires_at
                             or now + timedelta(hours=self.settings.invite_link_ttl_hours)))
            if live is not None:
                await s.execute(update(InviteLink).where(InviteLink.id == live.id)
                                .values(revoked_at=now))
        if live is not None:  # best effort: an old link must not overfill the group
            try:
                await admin.revoke_invite_link(chat, live.url)
            except SendError as exc:
                log.info("old invite link not revoked", extra={"error": exc.description})
        return made.url

    # ------------------------------------------------------------------ join requests
    async def handle_join_request(self, ev: JoinRequest) -> str:
        """Approve or decline by the pool's rule; returns 'approved', 'declined' or 'left'."""
        async with self.db.session() as s:
            group = (await s.execute(select(CommunityGroup).where(
                CommunityGroup.platform == ev.chat.platform,
                CommunityGroup.external_id == ev.chat.id))).scalar_one_or_none()
            pool = await s.get(Pool, group.pool_id) if group and group.pool_id else None
            visited = (await s.execute(select(EntryVisit.id).where(
                EntryVisit.user_external_id == ev.user.id,
                EntryVisit.platform == ev.chat.platform).limit(1))).scalar_one_or_none()
        if group is None or group.status != GroupStatus.ACTIVE:
            return "left"
        rule = pool.join_rule if pool else "room"
        if rule == "manual":
            return "left"
        lang = normalise_language(ev.user.language_code) or self.default_language
        room = group.member_count < group.capacity
        known = visited is not None
        approve = room and (rule == "room" or known)
        admin = self.admins.get(ev.chat.platform)
        if admin is None:
            return "left"
        dm = ChatRef(ev.user.platform, ChatKind.PRIVATE, ev.user.id)
        # The private message goes first: the platform allows it only while the request is
        # pending (Telegram: 5 minutes).
        if approve:
            await self._dm(dm, self.t("community_request_approved", lang,
                                      group=group.title or ""))
            try:
                await admin.approve_join_request(ev.chat, ev.user.id)
            except SendError as exc:
                log.warning("join request not approved", extra={"error": exc.description})
                return "left"
            return "approved"
        reason = self.t("community_reason_full" if not room else "community_reason_unknown", lang)
        await self._dm(dm, self.t("community_request_declined", lang,
                                  group=group.title or "", reason=reason))
        try:
            await admin.decline_join_request(ev.chat, ev.user.id)
        except SendError as exc:
            log.warning("join request not declined", extra={"error": exc.description})
        return "declined"

    async def _dm(self, chat: ChatRef, text: str,
                  buttons: list[list[Button]] | None = None) -> None:
        result = await self.publisher.publish(
            chat, OutgoingMessage(text=text, buttons=buttons or [], sender="community"))
        if not result.ok:
            log.info("community DM not delivered", extra={"error": result.error})
