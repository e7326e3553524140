"""The group pool: groups humans created and made the bot an administrator of, each with a
capacity, tags and a pool; plus manager alerts (a pool running out of seats, a missed drop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from bot.core.types import ChatKind, ChatRef, MemberStatus, OutgoingMessage
from community.dbutil import check_name, retry_locked
from community.delivery import Publisher
from community.errors import CommunityError, NotFound
from community.settings import CommunitySettings
from models import Database
from models.base import utcnow
from models.community import CommunityAlert, CommunityGroup, GroupStatus, GroupTag, Pool

log = logging.getLogger(__name__)

JOIN_RULES = ("room", "known", "manual")


def parse_chat(value: str) -> ChatRef:
    """'telegram:-100123' (a group) or 'telegram:private:42' -> ChatRef."""
    parts = value.split(":")
    if len(parts) == 2 and parts[0] and parts[1]:
        kind = ChatKind.GROUP if parts[1].startswith("-") else ChatKind.PRIVATE
        return ChatRef(parts[0], kind, parts[1])
    if len(parts) == 3 and parts[1] in ("private", "group"):
        return ChatRef(parts[0], ChatKind(parts[1]), parts[2])
    raise CommunityError(f"bad chat {value!r}: use 'telegram:<chat id>'")


class Alerts:
    """Manager alerts: stored, logged and posted to a managers chat when one is configured."""

    def __init__(self, *, db: Database, publisher: Publisher | None,
                 settings: CommunitySettings) -> None:
        self.db = db
        self.publisher = publisher
        self.settings = settings

    async def __call__(self, kind: str, message: str, data: dict[str, Any],
                       *, store: bool = False, managers_chat: str | None = None) -> None:
        if store:
            async with self.db.session() as s:
                s.add(CommunityAlert(kind=kind, pool_id=data.get("pool"),
                                     drop_id=data.get("drop"), message=message))
        log.warning("community alert: %s", message, extra={"alert": kind, **data})
        target = managers_chat or self.settings.managers_chat
        if target and self.publisher is not None:
            try:
                result = await self.publisher.publish(
                    parse_chat(target), OutgoingMessage(text=f"⚠️ {message}",
                                                        sender="community:alert"))
                if not result.ok:
                    log.warning("alert not delivered", extra={"error": result.error})
            except Exception:
                log.exception("alert not delivered")

    async def recent(self, limit: int = 50) -> list[CommunityAlert]:
        async with self.db.session() as s:
            return list((await s.execute(
                select(CommunityAlert).order_by(CommunityAlert.id.desc()).limit(limit)
            )).scalars())


@dataclass(slots=True)
class GroupInfo:
    group: CommunityGroup
    pool: str | None
    tags: list[str]


@dataclass(slots=True)
class PoolInfo:
    pool: Pool
    groups: int
    capacity: int
    members: int

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.members)


class GroupService:
    """Adopts groups, keeps their capacity, tags and pool; alerts when a pool fills up."""

    def __init__(self, *, db: Database, settings: CommunitySettings, alerts: Alerts,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.settings = settings
        self.alerts = alerts
        self.now = now

    # ------------------------------------------------------------------ pools
    async def ensure_pool(self, name: str) -> Pool:
        async def go() -> Pool:
            async with self.db.session() as s:
                found = (await s.execute(select(Pool).where(Pool.name == name))) \
                    .scalar_one_or_none()
                if found is not None:
                    return found
                try:
                    async with s.begin_nested():
                        pool = Pool(name=name, default_capacity=self.settings.default_capacity,
                                    alert_threshold=self.settings.alert_threshold)
                        s.add(pool)
                        await s.flush()
                    return pool
                except IntegrityError:
                    return (await s.execute(select(Pool).where(Pool.name == name))).scalar_one()

        return await retry_locked(go)

    async def configure_pool(
        self, name: str, *, create: bool = True, capacity: int | None = None,
        alert_threshold: int | None = None, managers_chat: str | None = None,
        join_rule: str | None = None, welcome_coupon: str | None = None,
    ) -> Pool:
        check_name(name, "pool name")
        if capacity is not None and capacity < 1:
            raise CommunityError("capacity must be at least 1")
        if alert_threshold is not None and alert_threshold < 0:
            raise CommunityError("alert threshold must be >= 0")
        if join_rule is not None and join_rule not in JOIN_RULES:
            raise CommunityError(f"join rule must be one of {', '.join(JOIN_RULES)}")
        if managers_chat:
            parse_chat(managers_chat)
        async with self.db.session() as s:
            pool = (await s.execute(select(Pool).where(Pool.name == name))).scalar_one_or_none()
            if pool is None:
                if not create:
                    raise NotFound(f"no pool {name!r}")
                pool = Pool(name=name, default_capacity=self.settings.default_capacity,
                            alert_threshold=self.settings.alert_threshold)
                s.add(pool)
            if capacity is not None:
                pool.default_capacity = capacity
            if alert_threshold is not None:
                pool.alert_threshold = alert_threshold
            if managers_chat is not None:
                pool.managers_chat = managers_chat or None
            if join_rule is not None:
                pool.join_rule = join_rule
            if welcome_coupon is not None:
                pool.welcome_coupon = welcome_coupon or None
        return pool

    async def pools(self) -> list[PoolInfo]:
        async with self.db.session() as s:
            pools = list((await s.execute(select(Pool).order_by(Pool.id))).scalars())
            out = []
            for p in pools:
                n, cap, members = (await s.execute(
                    select(func.count(), func.coalesce(func.sum(CommunityGroup.capacity), 0),
                           func.coalesce(func.sum(CommunityGroup.member_count), 0))
                    .where(CommunityGroup.pool_id == p.id,
                           CommunityGroup.status == GroupStatus.ACTIVE)
                )).one()
                out.append(PoolInfo(p, int(n), int(cap), int(members)))
        return out

    async def pool_info(self, pool_id: int) -> PoolInfo:
        for info in await self.pools():
            if info.pool.id == pool_id:
                return info
        raise NotFound(f"no pool {pool_id}")

    async def check_capacity(self, pool_id: int | None) -> bool:
        """Alert managers (once per cooldown) when the pool's free seats drop below its
        threshold. Returns True when an alert was raised."""
        if pool_id is None:
            return False
        info = await self.pool_info(pool_id)
        pool = info.pool
        if info.free >= pool.alert_threshold:
            return False
        now = self.now()
        cooldown = timedelta(minutes=self.settings.alert_cooldown_minutes)
        if pool.last_alert_at is not None and now - pool.last_alert_at < cooldown:
            return False
        async with self.db.session() as s:
            row = await s.get(Pool, pool.id)
            assert row is not None
            if row.last_alert_at is not None and now - row.last_alert_at < cooldown:
                return False
            row.last_alert_at = now
        message = (f"pool {pool.name!r} has {info.free} free seat(s) left in {info.groups} "
                   f"group(s) (threshold {pool.alert_threshold}); add a group and make the bot "
                   "an administrator")
        await self.alerts("pool_low", message, {"pool": pool.id}, store=True,
                          managers_chat=pool.managers_chat)
        return True

    # ------------------------------------------------------------------ groups
    async def adopt(self, chat: ChatRef, bot_status: MemberStatus,
                    member_count: int | None) -> CommunityGroup | None:
        """The bot's own membership changed in a group: adopt it, or mark it removed."""
        if bot_status in (MemberStatus.LEFT, MemberStatus.KICKED):
            status = GroupStatus.REMOVED
        elif bot_status is MemberStatus.ADMINISTRATOR:
            status = GroupStatus.ACTIVE
        else:
            status = GroupStatus.NOT_ADMIN
        pool = await self.ensure_pool(self.settings.default_pool)

        async def go() -> tuple[CommunityGroup | None, bool]:
            async with self.db.session() as s:
                group = (await s.execute(select(CommunityGroup).where(
                    CommunityGroup.platform == chat.platform,
                    CommunityGroup.external_id == chat.id))).scalar_one_or_none()
                if group is None:
                    if status == GroupStatus.REMOVED:
                        return None, False
                    group = CommunityGroup(
                        platform=chat.platform, external_id=chat.id, title=chat.title,
                        pool_id=pool.id, capacity=pool.default_capacity,
                        member_count=member_count or 0, status=status, adopted_at=self.now(),
                    )
                    s.add(group)
                    await s.flush()
                    return group, True
                group.status = status
                if chat.title:
                    group.title = chat.title
                if member_count is not None:
                    group.member_count = member_count
                return group, False

        group, created = await retry_locked(go)
        if group is not None:
            log.info("community group %s", "adopted" if created else "updated",
                     extra={"chat": chat.id, "status": status})
            if status == GroupStatus.NOT_ADMIN:
                await self.alerts(
                    "group_not_admin",
                    f"group {chat.title or chat.id!r} added the bot without admin rights: make "
                    "it an administrator so members can be tracked and invited",
                    {"pool": group.pool_id}, store=True)
            if status == GroupStatus.ACTIVE:
                await self.check_capacity(group.pool_id)
        return group

    async def find(self, ref: str | int) -> CommunityGroup:
        """A group by community id, platform chat id ('-100123') or 'telegram:-100123'."""
        async with self.db.session() as s:
            text = str(ref).strip()
            stmt = None
            if text.isdigit():
                stmt = select(CommunityGroup).where(CommunityGroup.id == int(text))
            else:
                chat_id = text.split(":", 1)[1] if ":" in text else text
                stmt = select(CommunityGroup).where(CommunityGroup.external_id == chat_id)
            group = (await s.execute(stmt)).scalars().first()
        if group is None:
            raise NotFound(f"no group {ref!r} (use its id from 'kizuna groups list')")
        return group

    async def info(self, ref: str | int) -> GroupInfo:
        group = await self.find(ref)
        async with self.db.session() as s:
            tags = list((await s.execute(select(GroupTag.tag).where(
                GroupTag.group_id == group.id).order_by(GroupTag.tag))).scalars())
            pool = await s.get(Pool, group.pool_id) if group.pool_id else None
        return GroupInfo(group, pool.name if pool else None, tags)

    async def list(self, *, pool: str | None = None, tag: str | None = None,
                   include_removed: bool = False) -> list[GroupInfo]:
        async with self.db.session() as s:
            stmt = select(CommunityGroup).order_by(CommunityGroup.id)
            if not include_removed:
                stmt = stmt.where(CommunityGroup.status != GroupStatus.REMOVED)
            if pool:
                pool_id = (await s.execute(select(Pool.id).where(Pool.name == pool))) \
                    .scalar_one_or_none()
                if pool_id is None:
                    raise NotFound(f"no pool {pool!r}")
                stmt = stmt.where(CommunityGroup.pool_id == pool_id)
            if tag:
                stmt = stmt.where(CommunityGroup.id.in_(
                    select(GroupTag.group_id).where(GroupTag.tag == tag.lower())))
            groups = list((await s.execute(stmt)).scalars())
            tags: dict[int, list[str]] = {}
            for gid, t in await s.execute(
                select(GroupTag.group_id, GroupTag.tag).order_by(GroupTag.tag)
            ):
                tags.setdefault(gid, []).append(t)
            names = dict((await s.execute(select(Pool.id, Pool.name))).all())
        return [GroupInfo(g, names.get(g.pool_id) if g.pool_id else None, tags.get(g.id, []))
                for g in groups]

    async def tag(self, ref: str | int, *, add: Sequence[str] = (),
                  remove: Sequence[str] = ()) -> GroupInfo:
        group = await self.find(ref)
        add = [check_name(t.strip().lower(), "tag") for t in add]
        remove = [t.strip().lower() for t in remove]
        async with self.db.session() as s:
            have = set((await s.execute(select(GroupTag.tag).where(
                GroupTag.group_id == group.id))).scalars())
            for t in add:
                if t not in have:
                    s.add(GroupTag(group_id=group.id, tag=t))
                    have.add(t)
            if remove:
                await s.execute(delete(GroupTag).where(GroupTag.group_id == group.id,
                                                       GroupTag.tag.in_(remove)))
        return await self.info(group.id)

    async def move(self, ref: str | int, pool_name: str, *, capacity: int | None = None
                   ) -> GroupInfo:
        group = await self.find(ref)
        if capacity is not None and capacity < 1:
            raise CommunityError("capacity must be at least 1")
        async with self.db.session() as s:
            pool = (await s.execute(select(Pool).where(Pool.name == pool_name))) \
                .scalar_one_or_none()
            if pool is None:
                raise NotFound(f"no pool {pool_name!r} (create it with 'kizuna groups pool "
                               f"create {pool_name}')")
            row = await s.get(CommunityGroup, group.id)
            assert row is not None
            row.pool_id = pool.id
            if capacity is not None:
                row.capacity = capacity
        await self.check_capacity(pool.id)
        return await self.info(group.id)

    async def set_capacity(self, ref: str | int, capacity: int) -> GroupInfo:
        if capacity < 1:
            raise CommunityError("capacity must be at least 1")
        group = await self.find(ref)
        async with self.db.session() as s:
            row = await s.get(CommunityGroup, group.id)
            assert row is not None
            row.capacity = capacity
        await self.check_capacity(group.pool_id)
        return await self.info(group.id)
