"""``kizuna run``, ``kizuna db ...`` and ``kizuna config ...``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from bot.cli.common import settings_from
from config import Settings


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run", help="run every configured channel, the web server and the scheduler",
        description="Run Kizuna: the web chat (always), Telegram (when telegram.token is set), "
        "the web server and the scheduler, in one process. Stops on Ctrl-C / SIGTERM.",
    )
    run.add_argument("--host", help="web server host (overrides web.host)")
    run.add_argument("--port", type=int, help="web server port (overrides web.port; 0 = any)")
    run.add_argument("--no-kb", action="store_true",
                     help="run without the knowledge base (answers 'I don't know')")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database schema", description="Database schema commands.")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    db_sub.required = True
    up = db_sub.add_parser("upgrade", help="apply migrations",
                           description="Apply Alembic migrations up to a revision.")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    cur = db_sub.add_parser("current", help="show the current revision",
                            description="Show the database's and the code's revision.")
    cur.set_defaults(func=cmd_db_current)

    cfg = sub.add_parser("config", help="configuration",
                         description="Check or show the configuration.")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="COMMAND")
    cfg_sub.required = True
    check = cfg_sub.add_parser("check", help="validate the configuration",
                               description="Load and validate the configuration; exit 2 "
                               "with a message naming the key when a value is wrong.")
    check.set_defaults(func=cmd_config_check)
    show = cfg_sub.add_parser("show", help="print the effective configuration (secrets hidden)",
                              description="Print the effective configuration as JSON; "
                              "secrets are shown as '**********'.")
    show.set_defaults(func=cmd_config_show)


def _apply_overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    web = settings.web
    if getattr(args, "host", None):
        web = web.model_copy(update={"host": args.host})
    if getattr(args, "port", None) is not None:
        web = web.model_copy(update={"port": args.port})
    return settings.model_copy(update={"web": web})


def cmd_run(args: argparse.Namespace) -> int:
    from bot.app import KizunaApp
    from bot.logging_setup import setup_logging
    from bot.telegram.platform import TelegramStartError

    settings = _apply_overrides(settings_from(args), args)
    secrets = [s.get_secret_value() for s in (settings.telegram.token,
                                              settings.telegram.webhook_secret) if s]
    setup_logging(settings.logging.level, settings.logging.format, secrets)

    def ready(app: KizunaApp) -> None:
        lines = [
            "Kizuna is running.",
            f"  Web chat (demo shop page): {app.base_url}/chat/demo",
            f"  Web chat (full page):      {app.base_url}/chat",
            f"  Health: {app.base_url}/healthz   Metrics: {app.base_url}/metrics",
            f"  Database: {settings.database.url.split('@')[-1]}",
        ]
        if app.handoff is not None:
            lines.append(f"  Advisor console: {app.base_url}/console")
            if app.initial_admin_password:
                lines.append(f"    first login: admin / {app.initial_admin_password} (also in "
                             f"{settings.data_dir}/initial_admin_password until changed with "
                             "`kizuna advisors passwd admin`)")
        if settings.telegram.enabled:
            lines.append(f"  Telegram: {settings.telegram.mode} mode")
        else:
            lines.append("  Telegram: off (set KIZUNA_TELEGRAM__TOKEN to enable)")
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)

    app = KizunaApp(settings, with_knowledge_base=not args.no_kb)
    try:
        asyncio.run(app.run_forever(ready))
    except TelegramStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot start the web server on {settings.web.host}:"
              f"{settings.web.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from models import Database

    settings = settings_from(args)

    async def go() -> str | None:
        db = Database(settings.database.url)
        try:
            await db.upgrade(args.revision)
            return await db.current_revision()
        finally:
            await db.dispose()

    print(f"database at revision {asyncio.run(go())}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from models import Database

    settings = settings_from(args)

    async def go() -> str | None:
        db = Database(settings.database.url)
        try:
            return await db.current_revision()
        finally:
            await db.dispose()

    current = asyncio.run(go())
    head = Database.head_revision()
    print(f"database: {current or '(empty)'}\ncode head: {head}")
    return 0 if current == head else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    tg = "on (" + settings.telegram.mode + ")" if settings.telegram.enabled else "off"
    print(f"configuration OK (database: {settings.database.url.split('://')[0]}, "
          f"telegram: {tg}, web: {settings.web.host}:{settings.web.port})")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    print(json.dumps(settings.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return 0
