"""CRM errors: each message is one line a person can act on."""

from __future__ import annotations


class CrmError(ValueError):
    """A user-facing CRM error (bad input, unknown member, invalid rule...)."""


class NotFound(CrmError):
    """A member, segment, rule or sequence that does not exist."""
