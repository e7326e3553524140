"""The web console (advisor inbox, and the managers' pages), served under ``/console`` by
Kizuna's own web server. ``install(app)`` is called once by the composition root.

Each page module has ``register(console)``; :data:`MODULES` lists them in order. See
``console/README.md`` for adding a page or an API route.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from console import (
    canned,
    conversation,
    inbox,
    live,
    login,
    manage_community,
    manage_crm,
    performance,
)
from console.site import Console

log = logging.getLogger(__name__)

CONSOLE_KEY = web.AppKey("kizuna_console", Console)
MODULES = (login, inbox, conversation, live, performance, canned, manage_community, manage_crm)


def install(app: Any) -> Console | None:
    """Register the console's routes on ``app.web`` (needs the handoff desk)."""
    if app.handoff is None:
        log.info("web console not installed: the handoff desk is disabled")
        return None
    s = app.settings
    console = Console(
        web_app=app.web, desk=app.handoff, accounts=app.accounts, db=app.db,
        settings=s.console, rate_limiter=app.shared.rate_limiter, events=app.shared.events,
        cookie_secure=s.web.cookie_secure, timezone=s.handoff.business_hours.timezone,
        secrets=_secrets(s),
    )
    # Services the managers' pages use (None when that part of Kizuna is off).
    console.extras["community"] = getattr(app, "community", None)
    console.extras["crm"] = getattr(app, "crm", None)
    console.extras["scheduler_timezone"] = s.scheduler.timezone
    for module in MODULES:
        module.register(console)
    app.web[CONSOLE_KEY] = console
    return console


def _secrets(settings: Any) -> list[str]:
    """Configured values that must never appear in a console page or JSON."""
    out: list[str] = []
    for value in (settings.telegram.token, settings.telegram.webhook_secret,
                  settings.web.secret_key):
        if value is not None:
            raw = value.get_secret_value()
            out += [raw, raw.partition(":")[2]]
    generated = Path(settings.data_dir) / "web_secret"
    if settings.web.secret_key is None and generated.is_file():
        out.append(generated.read_text(encoding="utf-8").strip())
    for url in (settings.database.url, settings.redis.url):
        password = urlsplit(url).password if url else None
        if password:
            out.append(password)
    return out
