"""Community tables: group pools, entry links, memberships, coupons, drops and the drop outbox.

Invariants are database constraints, so they hold across processes and concurrent requests:

* a coupon code exists once (``coupon_codes.code`` UNIQUE) and is issued once
  (``coupon_issues.code_id`` UNIQUE for unique-code campaigns, ``issue_key`` UNIQUE);
* a member never gets more than the campaign's per-member limit
  (``coupon_issues`` UNIQUE(campaign_id, contact_id, seq));
* a redemption happens once (``coupon_redemptions.redemption_key`` UNIQUE);
* one drop occurrence runs once (``drop_runs`` UNIQUE(drop_id, scheduled_for));
* one recipient gets one delivery per run (``drop_outbox`` UNIQUE(run_id, recipient)).

Statuses are short strings (see the ``*Status`` classes) rather than database enums so that
adding a state needs no migration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class GroupStatus:
    ACTIVE = "active"  # the bot is an administrator: joins are tracked, links can be made
    NOT_ADMIN = "not_admin"  # the bot is a plain member: no invite links, no chat_member updates
    REMOVED = "removed"  # the bot left or was removed


class Pool(Base):
    """A set of groups that new members are spread over (one brand community, one store...)."""

    __tablename__ = "community_pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    default_capacity: Mapped[int] = mapped_column(Integer, default=500)
    alert_threshold: Mapped[int] = mapped_column(Integer, default=50)  # free seats
    managers_chat: Mapped[str | None] = mapped_column(String(128))
    join_rule: Mapped[str] = mapped_column(String(16), default="room")  # room|known|manual
    welcome_coupon: Mapped[str | None] = mapped_column(String(64))  # coupon campaign name
    last_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CommunityGroup(Base):
    __tablename__ = "community_groups"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(String(256))
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("community_pools.id", ondelete="SET NULL"), index=True
    )
    capacity: Mapped[int] = mapped_column(Integer, default=500)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=GroupStatus.ACTIVE, index=True)
    adopted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.member_count)


class GroupTag(Base):
    """``store:shibuya``, ``region:kanto``, ``interest:skincare`` - free-form, lower case."""

    __tablename__ = "community_group_tags"
    __table_args__ = (UniqueConstraint("group_id", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("community_groups.id", ondelete="CASCADE"), index=True
    )
    tag: Mapped[str] = mapped_column(String(64), index=True)


class EntryLink(Base):
    """A permanent entry point (deep link / QR) for a campaign or store, routing into a pool."""

    __tablename__ = "community_entry_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("community_pools.id", ondelete="CASCADE"))
    label: Mapped[str | None] = mapped_column(String(128))
    campaign: Mapped[str | None] = mapped_column(String(64))
    store: Mapped[str | None] = mapped_column(String(64))
    group_tag: Mapped[str | None] = mapped_column(String(64))  # only groups with this tag
    join_mode: Mapped[str] = mapped_column(String(16), default="link")  # link | request
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InviteLink(Base):
    """A rotated platform invite link of one group (``createChatInviteLink``)."""

    __tablename__ = "community_invite_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("community_groups.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(256), unique=True)
    member_limit: Mapped[int | None] = mapped_column(Integer)
    creates_join_request: Mapped[bool] = mapped_column(Boolean, default=False)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EntryVisit(Base):
    """Someone opened an entry link: where they were routed and whether they joined."""

    __tablename__ = "community_entry_visits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_link_id: Mapped[int] = mapped_column(
        ForeignKey("community_entry_links.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(32))
    user_external_id: Mapped[str] = mapped_column(String(128), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("community_groups.id", ondelete="SET NULL"), index=True
    )
    invite_link: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Member(Base):
    __tablename__ = "community_members"
    __table_args__ = (UniqueConstraint("group_id", "user_external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("community_groups.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(32))
    user_external_id: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="member")  # member|left|kicked
    entry_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("community_entry_links.id", ondelete="SET NULL")
    )
    invite_link: Mapped[str | None] = mapped_column(String(256))
    via_join_request: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CommunityAlert(Base):
    __tablename__ = "community_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # pool_low|drop_missed|...
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("community_pools.id", ondelete="CASCADE")
    )
    drop_id: Mapped[int | None] = mapped_column(ForeignKey("drops.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


# ----------------------------------------------------------------------------- coupons


class CouponCampaign(Base):
    __tablename__ = "coupon_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str | None] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))  # unique | shared
    shared_code: Mapped[str | None] = mapped_column(String(64))
    per_member_limit: Mapped[int] = mapped_column(Integer, default=1)
    total_limit: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_prefix: Mapped[str] = mapped_column(String(16), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CouponCode(Base):
    __tablename__ = "coupon_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("coupon_campaigns.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(64), unique=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CouponIssue(Base):
    """A code handed to one member. ``issue_key`` makes issuing idempotent per cause."""

    __tablename__ = "coupon_issues"
    __table_args__ = (UniqueConstraint("campaign_id", "contact_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("coupon_campaigns.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    code_id: Mapped[int] = mapped_column(ForeignKey("coupon_codes.id", ondelete="CASCADE"))
    # unique-code campaigns: the code id (a code is issued once); shared: NULL
    unique_code_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    issue_key: Mapped[str] = mapped_column(String(128), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CouponRedemption(Base):
    __tablename__ = "coupon_redemptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_id: Mapped[int] = mapped_column(
        ForeignKey("coupon_codes.id", ondelete="CASCADE"), index=True
    )
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("coupon_issues.id"))
    # unique code: "code:<id>"; shared code: "shared:<id>:<member or order ref>"
    redemption_key: Mapped[str] = mapped_column(String(256), unique=True)
    reference: Mapped[str | None] = mapped_column(String(128))
    redeemed_by: Mapped[str | None] = mapped_column(String(64))  # API key name, "cli"
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A key for the shop's systems; only its SHA-256 is stored."""

    __tablename__ = "community_api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(128), default="coupons:redeem")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# ----------------------------------------------------------------------------- drops


class DropStatus:
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"
    MISSED = "missed"


class Drop(Base):
    __tablename__ = "drops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # content | coupon
    status: Mapped[str] = mapped_column(String(16), default=DropStatus.SCHEDULED, index=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    audience: Mapped[dict[str, Any]] = mapped_column(JSON)
    coupon_campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("coupon_campaigns.id", ondelete="RESTRICT")
    )
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # one-off
    cron: Mapped[str | None] = mapped_column(String(64))  # recurring
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Tokyo")
    grace_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    respect_cap: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class DropRun(Base):
    """One occurrence of a drop (a one-off drop has one run; a recurring one, one per fire)."""

    __tablename__ = "drop_runs"
    __table_args__ = (UniqueConstraint("drop_id", "scheduled_for"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    drop_id: Mapped[int] = mapped_column(ForeignKey("drops.id", ondelete="CASCADE"), index=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=DropStatus.RUNNING, index=True)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    late_seconds: Mapped[float | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(String(256))


class OutboxStatus:
    PENDING = "pending"
    CLAIMED = "claimed"  # taken by a sender; the platform was not called yet
    SENDING = "sending"  # the platform call may be in flight (see community/delivery.py)
    SENT = "sent"
    FAILED = "failed"
    BLOCKED = "blocked"
    SKIPPED = "skipped"  # frequency cap, coupon limit...
    CANCELLED = "cancelled"


class OutboxRow(Base):
    """One (drop run, recipient) delivery. Exactly one row per pair; see community/delivery.py."""

    __tablename__ = "drop_outbox"
    __table_args__ = (
        UniqueConstraint("run_id", "recipient"),
        Index("ix_drop_outbox_run_status", "run_id", "status"),
        Index("ix_drop_outbox_contact_sent", "contact_id", "sent_at"),
        Index("ix_drop_outbox_group_sent", "group_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("drop_runs.id", ondelete="CASCADE"))
    drop_id: Mapped[int] = mapped_column(ForeignKey("drops.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(160))  # "telegram:private:123"
    platform: Mapped[str] = mapped_column(String(32))
    chat_kind: Mapped[str] = mapped_column(String(16))
    chat_external_id: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[int | None] = mapped_column(Integer)
    group_id: Mapped[int | None] = mapped_column(Integer)
    language: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    platform_message_id: Mapped[str | None] = mapped_column(String(256))
    error: Mapped[str | None] = mapped_column(String(256))
