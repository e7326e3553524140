"""Scheduled job entry points. APScheduler stores jobs by reference ("community.jobs:...") so
they survive restarts; the functions find the running services here (set by the wiring)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_runtime: Any = None


def set_runtime(runtime: Any) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> Any:
    return _runtime


async def fire_drop_job(drop_id: int) -> None:
    if _runtime is None:
        log.error("drop job ran before the community runtime was installed",
                  extra={"drop": drop_id})
        return
    await _runtime.drops.fire(drop_id)


async def sync_drops_job() -> None:
    """Pick up changes made by other processes (the CLI): new or paused drops, resumed runs."""
    if _runtime is not None:
        await _runtime.drops.sync_jobs()
        await _runtime.drops.resume_orphaned_runs()
