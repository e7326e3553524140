"""Who a web chat visitor is: a random id carried in an HMAC-signed cookie.

The id is the platform's chat id and user id (``ChatRef("webchat", PRIVATE, visitor_id)``). It is
not secret, but it must not be forgeable: a visitor who could choose their id could read another
visitor's conversation. So the cookie holds ``<id>.<signature>`` and the server accepts only ids it
signed itself. Anything else (missing, tampered, signed with another secret) gets a fresh id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

COOKIE_NAME = "kizuna_visitor"
COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest lifetime browsers accept (Chrome caps at 400 days)

_ID_BYTES = 16
_ID_RE = re.compile(r"[0-9a-f]{32}")
_DOMAIN = b"kizuna-webchat-visitor\x00"  # keeps these signatures apart from other HMAC uses


def new_visitor_id() -> str:
    """A fresh random visitor id (32 lowercase hex digits, 128 bits)."""
    return secrets.token_hex(_ID_BYTES)


def is_visitor_id(value: str) -> bool:
    """Whether ``value`` has the shape of a visitor id (says nothing about who signed it)."""
    return _ID_RE.fullmatch(value) is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class VisitorSigner:
    """Signs visitor ids into cookie values and verifies them (HMAC-SHA256 with ``secret``).

    ``sign_token``/``verify_token`` sign short strings bound to one visitor; the web chat uses
    them so that a visitor can press only the buttons it was actually shown.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the web chat secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, *parts: str) -> str:
        message = _DOMAIN + b"\x00".join(part.encode("utf-8") for part in parts)
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def sign(self, visitor_id: str) -> str:
        """The cookie value for ``visitor_id``."""
        if not is_visitor_id(visitor_id):
            raise ValueError("not a visitor id")
        return f"{visitor_id}.{self._mac('cookie', visitor_id)}"

    def verify(self, cookie_value: str | None) -> str | None:
        """The visitor id in a cookie value this server signed, else ``None``."""
        if not cookie_value:
            return None
        visitor_id, sep, signature = cookie_value.partition(".")
        if not sep or not is_visitor_id(visitor_id) or not signature.isascii():
            return None
        expected = self._mac("cookie", visitor_id)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            return None
        return visitor_id

    def sign_token(self, visitor_id: str, *parts: str) -> str:
        """A signature over ``parts`` valid only for ``visitor_id``."""
        return self._mac("token", visitor_id, *parts)

    def verify_token(self, visitor_id: str, token: str, *parts: str) -> bool:
        """Whether ``token`` is :meth:`sign_token` of ``parts`` for ``visitor_id``."""
        if not token.isascii():
            return False
        expected = self.sign_token(visitor_id, *parts)
        return hmac.compare_digest(expected.encode("ascii"), token.encode("ascii"))

    def resolve(self, cookie_value: str | None) -> tuple[str, bool]:
        """``(visitor_id, is_new)``: the signed id from the cookie, or a fresh one."""
        visitor_id = self.verify(cookie_value)
        if visitor_id is not None:
            return visitor_id, False
        return new_visitor_id(), True
