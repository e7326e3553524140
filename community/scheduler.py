"""The scheduler: APScheduler 3 with a persistent job store in the app's database.

This is the only module that imports APScheduler. Only one process runs jobs at a time: the
leader, chosen through the shared :class:`bot.core.shared.Lock` port in a multi-worker setup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def sync_url(async_url: str) -> str:
    """The synchronous driver URL for the same database (APScheduler 3 is synchronous)."""
    url = make_url(async_url)
    driver = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}[url.get_backend_name()]
    return url.set(drivername=driver).render_as_string(hide_password=False)


class Scheduler:
    """Thin wrapper over APScheduler's ``AsyncIOScheduler``; jobs survive restarts."""

    def __init__(
        self,
        *,
        database_url: str | None,
        timezone: str = "Asia/Tokyo",
        misfire_grace_time: int = 3600,
    ) -> None:
        jobstore: Any = (
            SQLAlchemyJobStore(url=sync_url(database_url), tablename="scheduler_jobs")
            if database_url
            else MemoryJobStore()
        )
        self._scheduler = AsyncIOScheduler(
            jobstores={"default": jobstore},
            executors={"default": AsyncIOExecutor()},
            job_defaults={"coalesce": True, "misfire_grace_time": misfire_grace_time,
                          "max_instances": 1},
            timezone=timezone,
        )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self, *, paused: bool = False) -> None:
        self._scheduler.start(paused=paused)
        log.info("scheduler started", extra={"jobs": len(self._scheduler.get_jobs())})

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def add_cron(self, func: Callable[..., Any] | str, *, job_id: str, timezone: str | None = None,
                 kwargs: dict[str, Any] | None = None, **cron: Any) -> None:
        self._scheduler.add_job(func, "cron", id=job_id, replace_existing=True,
                                timezone=timezone, kwargs=kwargs or {}, **cron)

    def add_once(self, func: Callable[..., Any] | str, *, job_id: str, run_at: datetime,
                 kwargs: dict[str, Any] | None = None) -> None:
        self._scheduler.add_job(func, "date", id=job_id, replace_existing=True,
                                run_date=run_at, kwargs=kwargs or {})

    def add_interval(self, func: Callable[..., Any] | str, *, job_id: str, seconds: float,
                     kwargs: dict[str, Any] | None = None) -> None:
        self._scheduler.add_job(func, "interval", id=job_id, replace_existing=True,
                                seconds=seconds, kwargs=kwargs or {})

    def jobs(self) -> list[dict[str, Any]]:
        return [
            {"id": j.id, "next_run": j.next_run_time, "trigger": str(j.trigger)}
            for j in self._scheduler.get_jobs()
        ]

    def remove(self, job_id: str) -> None:
        self._scheduler.remove_job(job_id)
