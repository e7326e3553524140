"""Errors the community services raise; messages are meant for managers (CLI, console, API)."""

from __future__ import annotations


class CommunityError(ValueError):
    """Bad input or a refused operation; nothing was stored."""


class NotFound(CommunityError):
    pass


class CouponError(CommunityError):
    """A coupon could not be issued or redeemed; ``reason`` is a stable machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
