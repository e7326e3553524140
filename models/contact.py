"""Contacts and their platform identities (platform ids never sit on the contact)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(256))
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    identities: Mapped[list[ContactIdentity]] = relationship(
        back_populates="contact", lazy="selectin"
    )


class ContactIdentity(Base):
    """One account of a contact on one platform: (platform, external_id) is unique."""

    __tablename__ = "contact_identities"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    username: Mapped[str | None] = mapped_column(String(128))
    language_code: Mapped[str | None] = mapped_column(String(16))
    first_payload: Mapped[str | None] = mapped_column(String(128))
    unreachable_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unreachable_reason: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="identities", lazy="joined")

    @property
    def reachable(self) -> bool:
        return self.unreachable_at is None


class DeepLinkStart(Base):
    """Every ``/start PAYLOAD`` kept for attribution (campaign, store, QR code, referral)."""

    __tablename__ = "deep_link_starts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(String(128), index=True)
    first_contact: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# Case-insensitive prefix search of members by name and @username (console, CLI).
Index("ix_contacts_lower_display_name", func.lower(Contact.display_name))
Index("ix_contact_identities_lower_username", func.lower(ContactIdentity.username))
