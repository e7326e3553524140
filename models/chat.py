"""Chats: a private 1-on-1 chat or a group, on one platform."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class ChatKind(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[ChatKind] = mapped_column(
        Enum(ChatKind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    title: Mapped[str | None] = mapped_column(String(256))
    # For groups: the bot's own membership ("member", "administrator", "left", "kicked").
    bot_status: Mapped[str | None] = mapped_column(String(32))
    bot_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def bot_present(self) -> bool:
        return self.bot_status not in ("left", "kicked")
