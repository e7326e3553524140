"""``kizuna advisors ...`` (advisor accounts and shifts), ``kizuna canned ...`` (canned
responses), ``kizuna handoff queue`` and ``kizuna report advisors``.

Passwords are never command-line arguments (they would show in ``ps`` and shell history):
they are read from standard input with ``--password-stdin`` or asked twice without echo.
"""

from __future__ import annotations

import argparse
import csv
import functools
import getpass
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from bot.cli.common import CliError, run_guarded, settings_from
from config import Settings

Command = Callable[[argparse.Namespace], int]
ROLES = ("advisor", "manager", "admin")


# ------------------------------------------------------------------------------ plumbing


@dataclass
class Desk:
    settings: Settings
    db: Any
    accounts: Any
    desk: Any


def _command(fn: Callable[[argparse.Namespace, Desk], Awaitable[int]]) -> Command:
    """Open the desk on the configured database and run ``fn``. Bad input (unknown advisor,
    invalid field, wrong date...) is one stderr line and exit code 2; other failures exit 1."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        async def go() -> int:
            from bot.app import build_shared_state
            from bot.core.i18n import Translator
            from bot.core.metrics import Metrics
            from bot.core.outbound import Outbound
            from bot.handoff.accounts import AccountError, Accounts
            from bot.handoff.service import HandoffError, HandoffService
            from models import Database

            settings = settings_from(args)
            db = Database(settings.database.url, echo=settings.database.echo)
            # The running bot's shared state (Redis when configured): shift changes reach the
            # live consoles and routing takes the same lock as the bot's workers.
            shared = build_shared_state(settings, time.monotonic)
            try:
                await db.upgrade()
                outbound = Outbound(db=db, platforms={}, rate_limiter=shared.rate_limiter,
                                    metrics=Metrics())
                desk = HandoffService(
                    db=db, outbound=outbound,
                    translate=Translator(default=settings.bot.default_language),
                    settings=settings.handoff, events=shared.events, locks=shared.locks)
                accounts = Accounts(db, default_capacity=settings.handoff.default_capacity)
                try:
                    return await fn(args, Desk(settings, db, accounts, desk))
                except (AccountError, HandoffError) as exc:
                    raise CliError(str(exc), 2) from None
            finally:
                redis = getattr(shared.events, "redis", None)
                if redis is not None:
                    await redis.aclose()
                await db.dispose()

        return run_guarded(go)

    return run


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("no password on standard input", 2)
        return password
    try:
        with warnings.catch_warnings():
            # no terminal: getpass would read standard input with echo; refuse instead
            warnings.simplefilter("error", getpass.GetPassWarning)
            first = getpass.getpass("Password: ")
            second = getpass.getpass("Password again: ")
    except (EOFError, getpass.GetPassWarning):
        raise CliError("no terminal to ask for the password: use --password-stdin", 2) from None
    if first != second:
        raise CliError("the passwords do not match", 2)
    return first


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _date(value: str | None, label: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CliError(f"{label}: expected a date YYYY-MM-DD, got {value!r}", 2) from None


def _language(value: str) -> str:
    from bot.core.i18n import LANGUAGES

    lang = value.strip().lower()
    if lang not in LANGUAGES:
        raise CliError(f"--lang: one of {', '.join(LANGUAGES)} (got {value!r})", 2)
    return lang


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ------------------------------------------------------------------------------ advisors


@_command
async def cmd_add(args: argparse.Namespace, d: Desk) -> int:
    from bot.handoff.accounts import USERNAME_RE, AccountError, AccountInput

    if not USERNAME_RE.match(args.username):  # before asking for a password
        raise AccountError("username: 2-64 letters, digits, '_', '.' or '-'")
    password = None if args.no_password else _read_password(args)
    aid = await d.accounts.create(AccountInput(
        username=args.username, display_name=args.name, password=password, role=args.role,
        languages=_csv_list(args.languages) or [], skills=_csv_list(args.skills) or [],
        capacity=args.capacity, senior=args.senior, telegram_username=args.telegram))
    login = "no console login" if password is None else "console login with the password"
    print(f"advisor {args.username!r} created (id {aid}, {args.role}, {login}); "
          f"start a shift with 'kizuna advisors shift {args.username} on'")
    return 0


@_command
async def cmd_list(args: argparse.Namespace, d: Desk) -> int:
    advisors = await d.desk.advisors()
    if not advisors:
        print("no advisors (add one with 'kizuna advisors add USERNAME')")
        return 0
    rows = [[str(a.id), a.username, a.display_name, a.role + (" (senior)" if a.senior else ""),
             ",".join(a.languages) or "-", ",".join(a.skills) or "-",
             f"{a.load}/{a.capacity}", "on" if a.on_shift else "off",
             f"@{a.telegram_username}" if a.telegram_username else "-"]
            for a in advisors]
    _table(["id", "username", "name", "role", "languages", "skills", "open/cap", "shift",
            "telegram"], rows)
    return 0


@_command
async def cmd_update(args: argparse.Namespace, d: Desk) -> int:
    changes = {"display_name": args.name, "role": args.role,
               "languages": _csv_list(args.languages), "skills": _csv_list(args.skills),
               "capacity": args.capacity, "senior": args.senior,
               "telegram_username": args.telegram}
    if all(v is None for v in changes.values()):
        raise CliError("nothing to change (see 'kizuna advisors update --help')", 2)
    await d.accounts.update(args.username, **changes)
    print(f"advisor {args.username!r} updated")
    return 0


@_command
async def cmd_passwd(args: argparse.Namespace, d: Desk) -> int:
    advisor = await d.desk.find_advisor(args.username)  # unknown: say so before asking
    await d.accounts.set_password(advisor.username, _read_password(args))
    print(f"password of {advisor.username!r} changed")
    return 0


@_command
async def cmd_shift(args: argparse.Namespace, d: Desk) -> int:
    advisor = await d.desk.find_advisor(args.username)
    on = args.state == "on"
    await d.desk.set_shift(advisor.id, on)
    if on:
        advisor = await d.desk.advisor(advisor.id)
        print(f"{advisor.display_name} is on shift ({advisor.load}/{advisor.capacity} open "
              "conversations)")
    else:
        print(f"{advisor.display_name} is off shift (gets no new conversations; "
              f"{advisor.load} open stay assigned)")
    return 0


@_command
async def cmd_deactivate(args: argparse.Namespace, d: Desk) -> int:
    advisor = await d.desk.find_advisor(args.username)
    moved = 0
    if advisor.on_shift:  # first, so that routing does not give them the conversations back
        await d.desk.set_shift(advisor.id, False)
    for view in await d.desk.mine(advisor.id):  # back to the queue, routed to others
        await d.desk.transfer(view.conversation_id, by_advisor_id=advisor.id,
                              to_advisor_id=None, origin="system")
        moved += 1
    await d.accounts.deactivate(advisor.username)
    note = f"; {moved} open conversation(s) went back to the queue" if moved else ""
    print(f"advisor {advisor.username!r} deactivated (cannot log in, gets no conversations){note}")
    return 0


# ------------------------------------------------------------------------------ canned


@_command
async def cmd_canned(args: argparse.Namespace, d: Desk) -> int:
    sub = args.canned_command
    if sub == "add":
        cid = await d.desk.add_canned(args.shortcut, _language(args.lang), args.text)
        print(f"canned response /{args.shortcut.strip().lstrip('/')} ({args.lang}) saved "
              f"(id {cid})")
    elif sub == "list":
        items = await d.desk.canned(_language(args.lang) if args.lang else None)
        if not items:
            print("no canned responses")
        for c in items:
            text = " ".join(c["text"].split())
            text = text if len(text) <= 70 else text[:69] + "…"
            print(f"{c['id']:>4}  /{c['shortcut']:<16} {c['language']:<3} {text}")
    else:
        if not await d.desk.delete_canned(args.id):
            raise CliError(f"no canned response with id {args.id}", 2)
        print(f"canned response {args.id} deleted")
    return 0


# ------------------------------------------------------------------------------ queue


@_command
async def cmd_queue(args: argparse.Namespace, d: Desk) -> int:
    from zoneinfo import ZoneInfo

    views = await d.desk.queue()
    if not views:
        print("nobody is waiting")
        return 0
    zone = ZoneInfo(d.settings.handoff.business_hours.timezone)
    now = d.desk.now()
    rows = []
    for v in views:
        waited = max(0, int((now - v.requested_at).total_seconds() // 60))
        question = " ".join((v.question or v.last_message or "").split())
        rows.append([str(v.conversation_id), v.customer, v.platform, v.language or "-",
                     v.requested_at.astimezone(zone).strftime("%m-%d %H:%M"), f"{waited} min",
                     v.trigger + (" senior" if v.needs_senior else ""),
                     question if len(question) <= 50 else question[:49] + "…"])
    _table(["conv", "customer", "platform", "lang", "since", "waiting", "trigger", "question"],
           rows)
    print(f"{len(views)} waiting")
    return 0


# ------------------------------------------------------------------------------ report


REPORT_HEADER = ["advisor", "day", "handled", "resolved", "first reply p50 s",
                 "first reply p95 s", "handling p50 s", "CSAT", "ratings"]


@_command
async def cmd_report(args: argparse.Namespace, d: Desk) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from bot.handoff.reports import COLUMNS, advisor_report

    tz = args.tz or d.settings.handoff.business_hours.timezone
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CliError(f"--tz: unknown time zone {tz!r}", 2) from None
    until = _date(args.until, "--until") or datetime.now(zone).date()
    since = _date(args.since, "--since") or until - timedelta(days=6)
    if until < since:
        raise CliError(f"--until {until} is before --since {since}", 2)
    try:
        rows = await advisor_report(d.db, since=since, until=until, tz=tz)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
        return 0
    print(f"advisors, {since} to {until} ({tz}); days by assignment, timings in seconds")
    if not rows:
        print("no advisors")
        return 0
    _table(REPORT_HEADER, [[r["advisor"], r["day"], str(r["handled"]), str(r["resolved"]),
                            _fmt(r["first_response_p50_s"]), _fmt(r["first_response_p95_s"]),
                            _fmt(r["handling_p50_s"]), _fmt(r["csat_avg"]),
                            str(r["csat_count"])] for r in rows])
    return 0


# ------------------------------------------------------------------------------ register


def _p(sub: Any, name: str, help_: str, desc: str | None = None, **kw: Any) -> Any:
    return sub.add_parser(name, help=help_, description=desc or help_[0].upper() + help_[1:]
                          + ".", **kw)


def _profile_options(p: Any, *, update: bool) -> None:
    p.add_argument("--name", help="display name shown to customers (default: the username)")
    p.add_argument("--role", choices=ROLES, default=None if update else "advisor",
                   help="advisor (default), manager (sees every conversation, reports) or "
                   "admin (also manages accounts)")
    p.add_argument("--languages", metavar="ja,en", help="languages they answer in")
    p.add_argument("--skills", metavar="TAG,TAG", help="skill tags for routing, e.g. "
                   "skincare,orders")
    p.add_argument("--capacity", type=int, metavar="N",
                   help="open conversations at once" + ("" if update else
                                                        " (default: handoff.default_capacity)"))
    if update:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--senior", dest="senior", action="store_true", default=None,
                       help="takes members who need care")
        g.add_argument("--no-senior", dest="senior", action="store_false")
    else:
        p.add_argument("--senior", action="store_true", help="takes members who need care")
    p.add_argument("--telegram", metavar="@NAME",
                   help="their Telegram username (for the advisors' forum)")


def _password_option(p: Any) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input (otherwise "
                   "it is asked twice, without echo)")


def register(sub: Any) -> None:
    """Add the ``advisors``, ``canned``, ``handoff`` and ``report`` command groups."""
    adv = sub.add_parser(
        "advisors", help="advisor accounts: add, list, update, password, shift, deactivate",
        description="Advisors take handed-off conversations in the web console and the "
        "Telegram forum. USERNAME is the console login.")
    s = adv.add_subparsers(dest="advisors_command", metavar="COMMAND")
    s.required = True

    p = _p(s, "add", "create an advisor account",
           "Create an advisor account. The password (10+ characters) is asked twice, or read "
           "from standard input with --password-stdin; it is never a command-line argument.")
    p.add_argument("username")
    _profile_options(p, update=False)
    _password_option(p)
    p.add_argument("--no-password", action="store_true",
                   help="no console login (an advisor who works in the Telegram forum only)")
    p.set_defaults(func=cmd_add)

    _p(s, "list", "list active advisors with their load and shift").set_defaults(func=cmd_list)

    p = _p(s, "update", "change an advisor's profile (only the options given)")
    p.add_argument("username")
    _profile_options(p, update=True)
    p.set_defaults(func=cmd_update)

    p = _p(s, "passwd", "set an advisor's console password")
    p.add_argument("username")
    _password_option(p)
    p.set_defaults(func=cmd_passwd)

    p = _p(s, "shift", "start or end an advisor's shift",
           "Start (on) or end (off) a shift. On shift an advisor gets new conversations (the "
           "queue is routed at once); off shift they keep the ones they have.")
    p.add_argument("username")
    p.add_argument("state", choices=("on", "off"))
    p.set_defaults(func=cmd_shift)

    p = _p(s, "deactivate", "deactivate an advisor (their open conversations go back to the "
           "queue)")
    p.add_argument("username")
    p.set_defaults(func=cmd_deactivate)

    canned = sub.add_parser("canned", help="canned responses for advisors",
                            description="Canned responses: advisors insert them by shortcut.")
    cs = canned.add_subparsers(dest="canned_command", metavar="COMMAND")
    cs.required = True
    p = _p(cs, "add", "add or replace a canned response (per shortcut and language)")
    p.add_argument("shortcut")
    p.add_argument("--lang", required=True, help="ja, en or zh")
    p.add_argument("text")
    p.set_defaults(func=cmd_canned)
    p = _p(cs, "list", "list canned responses")
    p.add_argument("--lang", help="only this language")
    p.set_defaults(func=cmd_canned)
    p = _p(cs, "delete", "delete a canned response by id")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_canned)

    ho = sub.add_parser("handoff", help="the handoff queue",
                        description="Conversations handed to people.")
    hs = ho.add_subparsers(dest="handoff_command", metavar="COMMAND")
    hs.required = True
    _p(hs, "queue", "list conversations waiting for an advisor, oldest first"
       ).set_defaults(func=cmd_queue)

    rep = sub.add_parser("report", help="reports", description="Reports.")
    rs = rep.add_subparsers(dest="report_command", metavar="COMMAND")
    rs.required = True
    p = _p(rs, "advisors", "per advisor and day: handled, resolved, first reply and handling "
           "times, CSAT",
           "Per advisor and local day, and a total per advisor: handoffs assigned that day "
           "(handled), how many of them are resolved, time from assignment to the first reply "
           "(p50/p95) and to resolve (p50), CSAT average and count. Days are counted in --tz "
           "(default: the business hours' time zone) by the day of assignment.")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="first day (default: 6 days before "
                   "--until)")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="last day, included (default: today)")
    p.add_argument("--tz", metavar="ZONE", help="time zone of the days, e.g. Asia/Tokyo")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.set_defaults(func=cmd_report)


__all__ = ["register"]
