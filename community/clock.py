"""A wall clock the community services share, which tests can freeze and move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.base import utcnow


class WallClock:
    """``clock()`` is the current UTC time; ``set``/``advance`` pin it (tests, demos)."""

    def __init__(self) -> None:
        self._fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self._fixed if self._fixed is not None else utcnow()

    def set(self, when: datetime) -> None:
        self._fixed = when if when.tzinfo else when.replace(tzinfo=UTC)

    def advance(self, seconds: float) -> datetime:
        self._fixed = self() + timedelta(seconds=seconds)
        return self._fixed

    def release(self) -> None:
        self._fixed = None
