"""Scheduled job entry points of the bot process. APScheduler keeps jobs by reference
("bot.jobs:...") so they survive restarts; the functions find the running app here."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

_app: Any = None


def set_app(app: Any) -> None:
    global _app
    _app = app


async def crm_refresh() -> None:
    """Nightly: tiers, LTV, KOC scores and rule-based tags."""
    if _app is None or getattr(_app, "crm", None) is None:
        log.warning("crm_refresh ran without a running app")
        return
    await _app.crm.refresh()


async def crm_automations() -> None:
    """Every few minutes: due sequence steps and birthday messages."""
    if _app is None or getattr(_app, "crm", None) is None:
        log.warning("crm_automations ran without a running app")
        return
    await _app.crm.run_automations(datetime.now(UTC))
