"""Kizuna's data model: SQLAlchemy 2 models and repositories. Imports only ``config``."""

from models import advisors as _advisors  # noqa: F401
from models import community as _community  # noqa: F401
from models import crm as _crm  # noqa: F401
from models import knowledge as _knowledge  # noqa: F401
from models.base import Base
from models.chat import Chat, ChatKind
from models.contact import Contact, ContactIdentity, DeepLinkStart
from models.conversation import (
    Conversation,
    ConversationEvent,
    ConversationStatus,
    Message,
    MessageDirection,
    MessageStatus,
)
from models.db import Database

__all__ = [
    "Base",
    "Chat",
    "ChatKind",
    "Contact",
    "ContactIdentity",
    "Conversation",
    "ConversationEvent",
    "ConversationStatus",
    "Database",
    "DeepLinkStart",
    "Message",
    "MessageDirection",
    "MessageStatus",
]
