"""The scheduler: APScheduler 3 with a persistent job store in the app's database.

This is the only module that imports APScheduler. Only one process runs jobs at a time: the
leader, chosen through the shared :class:`bot.core.shared.Lock` port in a multi-worker setup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
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

    def add_crontab(self, func: Callable[..., Any] | str, *, job_id: str, crontab: str,
                    timezone: str, kwargs: dict[str, Any] | None = None,
                    misfire_grace_time: int | None = None) -> None:
        """A job on a 5-field crontab in ``timezone``. ``misfire_grace_time=None`` runs a
        late job however late it is (the job itself decides what is too late)."""
        self._scheduler.add_job(func, cron_trigger(crontab, timezone), id=job_id,
                                replace_existing=True, kwargs=kwargs or {},
                                misfire_grace_time=misfire_grace_time)

    def add_once(self, func: Callable[..., Any] | str, *, job_id: str, run_at: datetime,
                 kwargs: dict[str, Any] | None = None,
                 misfire_grace_time: int | None | str = "default") -> None:
        extra: dict[str, Any] = {}
        if misfire_grace_time != "default":
            extra["misfire_grace_time"] = misfire_grace_time
        self._scheduler.add_job(func, "date", id=job_id, replace_existing=True,
                                run_date=run_at, kwargs=kwargs or {}, **extra)

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

    def discard(self, job_id: str) -> bool:
        """Remove a job if it exists; True when one was removed."""
        if self._scheduler.get_job(job_id) is None:
            return False
        self._scheduler.remove_job(job_id)
        return True

    def next_run(self, job_id: str) -> datetime | None:
        job = self._scheduler.get_job(job_id)
        return job.next_run_time if job is not None else None

    def pause(self) -> None:
        """Stop running jobs in this process (another process leads); jobs stay stored."""
        if self._scheduler.running:
            self._scheduler.pause()

    def resume(self) -> None:
        if self._scheduler.running:
            self._scheduler.resume()


def check_timezone(name: str) -> ZoneInfo:
    """The zone, or ValueError naming it ("Asia/Tokyo", "Asia/Shanghai", "UTC"...)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like 'Asia/Tokyo')") \
            from None


def cron_trigger(crontab: str, timezone: str) -> CronTrigger:
    """A trigger from a 5-field crontab ("0 9 * * mon"); ValueError with the reason if bad."""
    zone = check_timezone(timezone)
    if len(crontab.split()) != 5:
        raise ValueError(f"bad cron expression {crontab!r}: need 5 fields "
                         "(minute hour day month weekday), e.g. '0 9 * * mon'")
    try:
        return CronTrigger.from_crontab(crontab, timezone=zone)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"bad cron expression {crontab!r}: {exc}") from None


def cron_fire_times(crontab: str, timezone: str, *, after: datetime, until: datetime,
                    limit: int = 1000) -> list[datetime]:
    """Fire times ``after < t <= until`` (oldest first, at most ``limit``, the newest kept)."""
    trigger = cron_trigger(crontab, timezone)
    out: list[datetime] = []
    prev: datetime | None = None
    t = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while t is not None and t <= until:
        out.append(t)
        if len(out) > limit:
            out.pop(0)
        prev = t
        t = trigger.get_next_fire_time(prev, prev + timedelta(microseconds=1))
    return out


def next_cron_time(crontab: str, timezone: str, after: datetime) -> datetime | None:
    return cron_trigger(crontab, timezone).get_next_fire_time(None, after)
