"""Advisors (console and Telegram users who take handoffs), their sessions, handoffs with
their timings and CSAT, internal notes and canned responses."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class Role(enum.StrEnum):
    ADVISOR = "advisor"
    MANAGER = "manager"  # community manager
    ADMIN = "admin"


class HandoffStatus(enum.StrEnum):
    WAITING = "waiting"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"  # the customer went back to the bot before anyone took it


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=24, values_callable=lambda e: [m.value for m in e])


class Advisor(Base):
    __tablename__ = "advisors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # console login
    display_name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.ADVISOR)
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)  # ["ja", "en"]
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)  # ["skincare", "orders"]
    capacity: Mapped[int] = mapped_column(Integer, default=5)  # open conversations at once
    senior: Mapped[bool] = mapped_column(Boolean, default=False)  # takes "needs care" members
    on_shift: Mapped[bool] = mapped_column(Boolean, default=False)
    telegram_user_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    telegram_username: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsoleSession(Base):
    """A server-side login session; the cookie holds only a random token (stored hashed)."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    advisor_id: Mapped[int] = mapped_column(ForeignKey("advisors.id", ondelete="CASCADE"),
                                            index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_agent: Mapped[str | None] = mapped_column(String(256))


class Handoff(Base):
    """One hand-over of a conversation to people: from the trigger to resolve and CSAT."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_status_requested", "status", "requested_at"),
        Index("ix_handoffs_advisor_status", "advisor_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[HandoffStatus] = mapped_column(_enum(HandoffStatus),
                                                  default=HandoffStatus.WAITING)
    trigger: Mapped[str] = mapped_column(String(32))  # button, intent, complaint, failures...
    question: Mapped[str | None] = mapped_column(Text)  # what the bot could not answer
    language: Mapped[str | None] = mapped_column(String(8))
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)  # wanted skill tags
    needs_senior: Mapped[bool] = mapped_column(Boolean, default=False)
    advisor_id: Mapped[int | None] = mapped_column(
        ForeignKey("advisors.id", ondelete="SET NULL"), index=True
    )
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reassignments: Mapped[int] = mapped_column(Integer, default=0)
    forum_thread_id: Mapped[str | None] = mapped_column(String(32))
    csat: Mapped[int | None] = mapped_column(Integer)
    csat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AdvisorCustomer(Base):
    """A customer's own advisor (sticky routing): set on first resolve, or by a manager."""

    __tablename__ = "advisor_customers"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    advisor_id: Mapped[int] = mapped_column(ForeignKey("advisors.id", ondelete="CASCADE"),
                                            index=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConversationNote(Base):
    """Internal note on a conversation: shown to advisors, never sent to the customer."""

    __tablename__ = "conversation_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    advisor_id: Mapped[int | None] = mapped_column(
        ForeignKey("advisors.id", ondelete="SET NULL")
    )
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CannedResponse(Base):
    __tablename__ = "canned_responses"
    __table_args__ = (UniqueConstraint("shortcut", "language"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shortcut: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
