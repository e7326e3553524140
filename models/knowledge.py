"""Knowledge-base content: entries with per-language translations, answer feedback and the
questions the bot could not answer.

Design: one :class:`KbEntry` per stable external key (``"shipping-fee"``) holds what is the
same in every language (tags, category, image, active flag); one :class:`KbTranslation` per
(entry, language) holds the question, its alternative phrasings, the answer and the
language-specific buttons and links. ``KbEntry.language`` is the entry's primary language,
the one used when a customer's language has no translation.

Feedback and unanswered rows refer to entries by key, not by id, so they survive an entry
being deleted and re-imported.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class KbEntry(Base):
    """One knowledge-base entry, identified by a stable external ``key``."""

    __tablename__ = "kb_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    language: Mapped[str] = mapped_column(String(8))  # primary language
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    image_url: Mapped[str | None] = mapped_column(String(1024))
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    translations: Mapped[list[KbTranslation]] = relationship(
        back_populates="entry",
        lazy="selectin",
        cascade="all, delete-orphan",
        order_by="KbTranslation.language",
    )

    def translation(self, language: str) -> KbTranslation | None:
        """The translation in ``language``, if the entry has one."""
        for tr in self.translations:
            if tr.language == language:
                return tr
        return None


class KbTranslation(Base):
    """The question, alternative phrasings and answer of an entry in one language."""

    __tablename__ = "kb_translations"
    __table_args__ = (UniqueConstraint("entry_id", "language"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("kb_entries.id", ondelete="CASCADE"), index=True
    )
    language: Mapped[str] = mapped_column(String(8))
    question: Mapped[str] = mapped_column(Text)
    alternatives: Mapped[list[str]] = mapped_column(JSON, default=list)
    answer: Mapped[str] = mapped_column(Text)
    # [{"text": ..., "url": ...} | {"text": ..., "callback": ...}]
    buttons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # [{"title": ..., "url": ...}]
    links: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    entry: Mapped[KbEntry] = relationship(back_populates="translations")


class KbFeedback(Base):
    """A customer's "was this helpful?" vote on an answer."""

    __tablename__ = "kb_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_key: Mapped[str] = mapped_column(String(128), index=True)
    question: Mapped[str] = mapped_column(Text)
    helpful: Mapped[bool] = mapped_column(Boolean)
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class KbUnanswered(Base):
    """A question the bot did not answer outright (suggested or handed off)."""

    __tablename__ = "kb_unanswered"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    decision: Mapped[str] = mapped_column(String(16))  # "suggest" | "handoff"
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
