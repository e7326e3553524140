"""Helpers shared by CLI commands."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from config import Settings, load_settings

T = TypeVar("T")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def run_async(fn: Callable[..., Awaitable[T]], *a: Any) -> T:
    return asyncio.run(fn(*a))  # type: ignore[arg-type]
