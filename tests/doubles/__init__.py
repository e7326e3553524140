"""Test doubles for external services used by Kizuna's end-to-end tests and benchmarks."""

from .telegram_api import (
    ApiError,
    BotAPIDouble,
    DoubleStats,
    FakeBot,
    FakeChat,
    FakeUser,
    FloodLimits,
    ManualClock,
)

__all__ = [
    "ApiError",
    "BotAPIDouble",
    "DoubleStats",
    "FakeBot",
    "FakeChat",
    "FakeUser",
    "FloodLimits",
    "ManualClock",
]
