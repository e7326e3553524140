"""CRM tables: member profiles, orders, tags and rules, computed tiers/LTV/KOC scores,
events, referrals and rewards, link codes, saved segments and step sequences.

Every table keys members by ``contacts.id``; platform ids stay in ``contact_identities``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow

_CONTACT_FK = "contacts.id"


class MemberProfile(Base):
    """What the brand knows about a member beyond the chat: shop ids, birthday, consent."""

    __tablename__ = "crm_profiles"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), primary_key=True
    )
    shop_customer_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    email: Mapped[str | None] = mapped_column(String(256), index=True)  # lower-cased
    phone: Mapped[str | None] = mapped_column(String(32), index=True)  # +E.164-ish digits
    birth_year: Mapped[int | None] = mapped_column(SmallInteger)
    birth_month: Mapped[int | None] = mapped_column(SmallInteger, index=True)
    birth_day: Mapped[int | None] = mapped_column(SmallInteger)
    member_level: Mapped[str | None] = mapped_column(String(64))
    favourite_products: Mapped[list[str]] = mapped_column(JSON, default=list)
    home_store: Mapped[str | None] = mapped_column(String(128))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # None = never asked (a member who started the chat), True = opted in, False = declined.
    marketing_consent: Mapped[bool | None] = mapped_column(Boolean)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Order(Base):
    """One purchase from the shop's export; the shop's order id is unique (re-imports skip)."""

    __tablename__ = "crm_orders"
    __table_args__ = (
        Index("ix_crm_orders_contact_id_ordered_at", "contact_id", "ordered_at", "amount"),
        # Covering index for "spend / orders within N days" (an index-only range scan).
        Index("ix_crm_orders_ordered_at_contact_id", "ordered_at", "contact_id", "amount"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey(_CONTACT_FK, ondelete="CASCADE"))
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str | None] = mapped_column(String(8))
    store: Mapped[str | None] = mapped_column(String(128))
    items: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OrderMonth(Base):
    """Per member per calendar month (UTC) order count and spend in whole cents, kept in
    step with ``crm_orders`` by every write path (importer, merge, ``crm.rollup.rebuild``
    after a bulk load). "spend / orders within N days" sums these months plus the few raw
    orders of the one partial month at the window's start."""

    __tablename__ = "crm_order_months"
    __table_args__ = (
        # Covering index: a window is an index-only range scan over months.
        Index("ix_crm_order_months_month_contact_id", "month", "contact_id", "spend_cents",
              "orders"),
    )

    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[int] = mapped_column(Integer, primary_key=True)  # year * 12 + month - 1
    orders: Mapped[int] = mapped_column(Integer, default=0)
    spend_cents: Mapped[int] = mapped_column(BigInteger, default=0)


class ContactTag(Base):
    """A tag on a member; ``source`` is 'manual' or 'rule:<rule name>'."""

    __tablename__ = "crm_contact_tags"
    __table_args__ = (Index("ix_crm_contact_tags_tag_contact_id", "tag", "contact_id"),)

    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(80), default="manual", index=True)
    actor: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TagRule(Base):
    """An automatic tag: members matching ``definition`` (segment rule JSON) get ``tag``."""

    __tablename__ = "crm_tag_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    tag: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class MemberStats(Base):
    """Computed by ``recompute`` (set-based SQL): RFM, tier, LTV factors, KOC score."""

    __tablename__ = "crm_member_stats"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), primary_key=True
    )
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    total_spend: Mapped[float] = mapped_column(Float, default=0.0)
    first_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # Windows as of ``computed_at`` (fast segment fields; live windows use within_days).
    spend_90d: Mapped[float] = mapped_column(Float, default=0.0)
    spend_365d: Mapped[float] = mapped_column(Float, default=0.0)
    orders_90d: Mapped[int] = mapped_column(Integer, default=0)
    orders_365d: Mapped[int] = mapped_column(Integer, default=0)
    recency_days: Mapped[float | None] = mapped_column(Float)
    r_score: Mapped[int] = mapped_column(SmallInteger, default=0)
    f_score: Mapped[int] = mapped_column(SmallInteger, default=0)
    m_score: Mapped[int] = mapped_column(SmallInteger, default=0)
    tier: Mapped[str] = mapped_column(String(16), default="dormant", index=True)
    needs_care: Mapped[bool] = mapped_column(Boolean, default=False)
    avg_order_value: Mapped[float] = mapped_column(Float, default=0.0)
    purchases_per_year: Mapped[float] = mapped_column(Float, default=0.0)
    expected_years: Mapped[float] = mapped_column(Float, default=0.0)
    ltv: Mapped[float] = mapped_column(Float, default=0.0)
    koc_score: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MemberEvent(Base):
    """Something a member did that CRM scores use: complaint, positive_feedback,
    helpful_answer, intent (data.intent), ..."""

    __tablename__ = "crm_events"
    __table_args__ = (Index("ix_crm_events_contact_id_kind", "contact_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey(_CONTACT_FK, ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    actor: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LinkCode(Base):
    """A one-time code issued to one identity and redeemed from another to merge contacts."""

    __tablename__ = "crm_link_codes"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey(_CONTACT_FK, ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReferralCode(Base):
    """A member's personal invite code; the deep-link payload is ``ref-<code>``."""

    __tablename__ = "crm_referral_codes"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Referral(Base):
    """A member who joined through someone's invite (one referrer per referee)."""

    __tablename__ = "crm_referrals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referrer_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), index=True
    )
    referee_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), unique=True
    )
    code: Mapped[str] = mapped_column(String(32))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_order_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_orders.id", ondelete="SET NULL")
    )
    first_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Reward(Base):
    """A reward owed to one side of a referral (or a birthday coupon); one row per
    (key): issuing is idempotent."""

    __tablename__ = "crm_rewards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), index=True
    )
    referral_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_referrals.id", ondelete="SET NULL"), index=True
    )
    side: Mapped[str | None] = mapped_column(String(16))  # referrer | referee
    reason: Mapped[str] = mapped_column(String(64))  # join, first_order, birthday
    status: Mapped[str] = mapped_column(String(16), default="recorded")  # recorded | issued
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Segment(Base):
    """A saved rule-based segment (JSON definition, validated on save)."""

    __tablename__ = "crm_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Sequence(Base):
    """A step sequence: started by one event, stopped by others (definition JSON)."""

    __tablename__ = "crm_sequences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    trigger: Mapped[str] = mapped_column(String(64), index=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Enrolment(Base):
    """One member in one sequence; ``next_step_at`` drives ``run_due``."""

    __tablename__ = "crm_enrolments"
    __table_args__ = (
        UniqueConstraint("sequence_id", "contact_id"),
        Index("ix_crm_enrolments_status_next_step_at", "status", "next_step_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("crm_sequences.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(
        ForeignKey(_CONTACT_FK, ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|completed|stopped
    step: Mapped[int] = mapped_column(Integer, default=0)  # the next step to send
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_step_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stopped_reason: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class MarketingSend(Base):
    """Every automated marketing message, unique per ``key`` (e.g. 'seq:<enrolment>:<step>',
    'birthday:<year>:<contact>'); also the ledger the frequency cap counts."""

    __tablename__ = "crm_sends"
    __table_args__ = (Index("ix_crm_sends_contact_id_created_at", "contact_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey(_CONTACT_FK, ondelete="CASCADE"))
    enrolment_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_enrolments.id", ondelete="SET NULL")
    )
    step: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    error: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
