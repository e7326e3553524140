"""The web chat channel: a chat page, an embeddable widget and a WebSocket (see ``platform``)."""

from bot.webchat.identity import COOKIE_NAME, VisitorSigner
from bot.webchat.platform import WebChatPlatform

__all__ = ["COOKIE_NAME", "VisitorSigner", "WebChatPlatform"]
