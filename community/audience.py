"""Who a drop goes to: groups (all, by tag, by pool, by id) and members privately.

:class:`AudienceResolver` is the seam for private audiences: the built-in
:class:`CommunityAudienceResolver` knows community facts (group tags of the groups a member is
in, the campaign/store of the entry link they came through, their language); the CRM's segment
engine implements the same protocol with its own rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import or_, select

from bot.core.i18n import LANGUAGES, normalise_language
from bot.core.types import ChatKind, ChatRef
from community.delivery import Recipient
from community.errors import CommunityError
from models import Database
from models.chat import Chat
from models.chat import ChatKind as ModelChatKind
from models.community import (
    CommunityGroup,
    EntryLink,
    EntryVisit,
    GroupStatus,
    GroupTag,
    Member,
    Pool,
)
from models.contact import Contact, ContactIdentity


@dataclass(slots=True)
class GroupAudience:
    all: bool = False
    tags: list[str] = field(default_factory=list)  # any of
    pools: list[str] = field(default_factory=list)  # any of
    ids: list[int] = field(default_factory=list)  # community group ids

    @property
    def empty(self) -> bool:
        return not (self.all or self.tags or self.pools or self.ids)


@dataclass(slots=True)
class PrivateAudience:
    all: bool = False
    tags: list[str] = field(default_factory=list)  # any of
    languages: list[str] = field(default_factory=list)  # any of; empty = every language
    segment: str | None = None  # a named segment of an external resolver (CRM)
    contact_ids: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.all or self.tags or self.segment or self.contact_ids)


@dataclass(slots=True)
class Audience:
    groups: GroupAudience | None = None
    private: PrivateAudience | None = None

    @property
    def empty(self) -> bool:
        return (self.groups is None or self.groups.empty) and (
            self.private is None or self.private.empty
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.groups is not None and not self.groups.empty:
            g = self.groups
            out["groups"] = {"all": g.all, "tags": g.tags, "pools": g.pools, "ids": g.ids}
        if self.private is not None and not self.private.empty:
            p = self.private
            out["private"] = {"all": p.all, "tags": p.tags, "languages": p.languages,
                              "segment": p.segment, "contact_ids": p.contact_ids}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Audience:
        data = data or {}
        g = data.get("groups")
        p = data.get("private")
        return cls(
            groups=GroupAudience(
                all=bool(g.get("all")), tags=list(g.get("tags") or []),
                pools=list(g.get("pools") or []), ids=[int(i) for i in g.get("ids") or []],
            ) if g else None,
            private=PrivateAudience(
                all=bool(p.get("all")), tags=list(p.get("tags") or []),
                languages=list(p.get("languages") or []), segment=p.get("segment"),
                contact_ids=[int(i) for i in p.get("contact_ids") or []],
            ) if p else None,
        )

    def validate(self) -> None:
        if self.empty:
            raise CommunityError("the drop has no audience: give groups (all, tags, pools, "
                                 "ids) and/or private recipients (all, tags, segment)")
        if self.private is not None:
            bad = [x for x in self.private.languages if x not in LANGUAGES]
            if bad:
                raise CommunityError(f"unknown language(s) {bad}; use {', '.join(LANGUAGES)}")


@runtime_checkable
class AudienceResolver(Protocol):
    """Turns a private audience into the members to message.

    Yields one :class:`Recipient` per member's private chat, each with ``contact_id`` and
    ``language``; members known to be unreachable come with ``blocked=True``.
    """

    def resolve_private(self, audience: PrivateAudience) -> AsyncIterator[Recipient]: ...


class CommunityAudienceResolver:
    """Built-in resolver. Tags a member has: the tags of the groups they are in, and
    ``campaign:<name>`` / ``store:<name>`` of the entry links they came through.

    Only members with a private chat with the bot are reachable privately (a bot may not start
    a conversation). ``segment`` is not supported here; the CRM's resolver handles it.
    """

    def __init__(self, *, db: Database, platform: str = "telegram",
                 default_language: str = "ja") -> None:
        self.db = db
        self.platform = platform
        self.default_language = default_language

    async def resolve_private(self, audience: PrivateAudience) -> AsyncIterator[Recipient]:
        if audience.segment:
            raise CommunityError(
                f"segment {audience.segment!r} needs the CRM's audience resolver")
        async with self.db.session() as s:
            stmt = (
                select(ContactIdentity.contact_id, ContactIdentity.external_id,
                       ContactIdentity.language_code, ContactIdentity.unreachable_at,
                       Contact.language)
                .join(Contact, Contact.id == ContactIdentity.contact_id)
                .join(Chat, (Chat.platform == ContactIdentity.platform)
                      & (Chat.external_id == ContactIdentity.external_id)
                      & (Chat.kind == ModelChatKind.PRIVATE))
                .where(ContactIdentity.platform == self.platform)
                .order_by(ContactIdentity.contact_id)
            )
            if not audience.all:
                conds = []
                if audience.contact_ids:
                    conds.append(ContactIdentity.contact_id.in_(audience.contact_ids))
                tags = [t.lower() for t in audience.tags]
                if tags:
                    by_group = (
                        select(Member.contact_id)
                        .join(GroupTag, GroupTag.group_id == Member.group_id)
                        .where(GroupTag.tag.in_(tags), Member.status == "member",
                               Member.contact_id.is_not(None))
                    )
                    conds.append(ContactIdentity.contact_id.in_(by_group))
                    campaigns = [t.split(":", 1)[1] for t in tags if t.startswith("campaign:")]
                    stores = [t.split(":", 1)[1] for t in tags if t.startswith("store:")]
                    if campaigns or stores:
                        by_entry = (
                            select(EntryVisit.contact_id)
                            .join(EntryLink, EntryLink.id == EntryVisit.entry_link_id)
                            .where(or_(EntryLink.campaign.in_(campaigns),
                                       EntryLink.store.in_(stores)),
                                   EntryVisit.contact_id.is_not(None))
                        )
                        conds.append(ContactIdentity.contact_id.in_(by_entry))
                if not conds:
                    return
                stmt = stmt.where(or_(*conds))
            rows = (await s.execute(stmt)).all()
        wanted = set(audience.languages)
        for contact_id, external_id, code, unreachable_at, language in rows:
            lang = language or normalise_language(code) or self.default_language
            if wanted and lang not in wanted:
                continue
            yield Recipient(
                chat=ChatRef(self.platform, ChatKind.PRIVATE, external_id),
                contact_id=contact_id, language=lang, blocked=unreachable_at is not None,
            )


async def resolve_groups(db: Database, audience: GroupAudience) -> list[Recipient]:
    """The active groups an audience names. Unknown pools/ids raise :class:`CommunityError`."""
    async with db.session() as s:
        stmt = select(CommunityGroup).where(CommunityGroup.status != GroupStatus.REMOVED) \
            .order_by(CommunityGroup.id)
        if not audience.all:
            conds = []
            if audience.ids:
                known = set((await s.execute(
                    select(CommunityGroup.id).where(CommunityGroup.id.in_(audience.ids))
                )).scalars())
                missing = sorted(set(audience.ids) - known)
                if missing:
                    raise CommunityError(f"unknown group id(s): {missing}")
                conds.append(CommunityGroup.id.in_(audience.ids))
            if audience.pools:
                pools = dict((await s.execute(
                    select(Pool.name, Pool.id).where(Pool.name.in_(audience.pools))
                )).all())
                missing_pools = sorted(set(audience.pools) - set(pools))
                if missing_pools:
                    raise CommunityError(f"unknown pool(s): {missing_pools}")
                conds.append(CommunityGroup.pool_id.in_(list(pools.values())))
            if audience.tags:
                tagged = select(GroupTag.group_id).where(
                    GroupTag.tag.in_([t.lower() for t in audience.tags]))
                conds.append(CommunityGroup.id.in_(tagged))
            if not conds:
                return []
            stmt = stmt.where(or_(*conds))
        groups = list((await s.execute(stmt)).scalars())
    return [
        Recipient(chat=ChatRef(g.platform, ChatKind.GROUP, g.external_id, g.title), group_id=g.id)
        for g in groups
    ]
