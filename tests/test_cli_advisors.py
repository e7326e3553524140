"""``kizuna advisors|canned|handoff|report ...`` against a temporary SQLite database."""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli import build_parser, main
from tests.cli_util import subcommands

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/cli.db"


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("KIZUNA_DATABASE__URL", db_url)
    monkeypatch.delenv("KIZUNA_CONFIG", raising=False)
    monkeypatch.delenv("KIZUNA_REDIS__URL", raising=False)
    monkeypatch.chdir(tmp_path)

    def no_terminal(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(getpass, "getpass", no_terminal)  # never wait on a real terminal

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_error_line(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def typed(monkeypatch: pytest.MonkeyPatch, *answers: str) -> None:
    """What the user types at the getpass prompts."""
    it: Iterator[str] = iter(answers)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(it))


def authenticate(db_url: str, username: str, password: str) -> int | None:
    from bot.handoff.accounts import Accounts
    from models import Database

    async def go() -> int | None:
        db = Database(db_url)
        try:
            return await Accounts(db).authenticate(username, password)
        finally:
            await db.dispose()

    return asyncio.run(go())



def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    top = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices
    commands: list[tuple[str, ...]] = []
    for group in ("advisors", "canned", "handoff", "report"):
        commands += [(group, *c) for c in subcommands(top[group])]
    assert len(commands) == 11
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: kizuna {command[0]}" in capsys.readouterr().out


def test_advisor_accounts_end_to_end(cli: Run, db_url: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli("advisors", "add", "aiko", "--name", "Aiko", "--languages", "ja,en",
                       "--skills", "skincare,orders", "--capacity", "6", "--senior",
                       "--telegram", "@aiko_tg", "--password-stdin",
                       stdin="correct horse battery\n")
    assert code == 0 and "advisor 'aiko' created" in out
    assert authenticate(db_url, "aiko", "correct horse battery")

    typed(monkeypatch, "manager password 1", "manager password 1")
    code, out, _ = cli("advisors", "add", "boss", "--role", "manager")
    assert code == 0 and "manager" in out
    assert authenticate(db_url, "boss", "manager password 1")
    code, out, _ = cli("advisors", "add", "forum-only", "--no-password")
    assert code == 0 and "no console login" in out

    code, out, _ = cli("advisors", "list")
    assert code == 0
    line = next(x for x in out.splitlines() if " aiko " in x)
    for part in ("Aiko", "advisor (senior)", "ja,en", "orders,skincare", "0/6", "off",
                 "@aiko_tg"):
        assert part in line

    code, out, _ = cli("advisors", "update", "aiko", "--capacity", "8", "--languages", "en",
                       "--no-senior")
    assert code == 0 and "updated" in out
    line = next(x for x in cli("advisors", "list")[1].splitlines() if " aiko " in x)
    assert "0/8" in line and " en " in line and "senior" not in line

    code, out, _ = cli("advisors", "shift", "aiko", "on")
    assert code == 0 and "on shift" in out
    assert " on " in next(x for x in cli("advisors", "list")[1].splitlines() if " aiko " in x)
    code, out, _ = cli("advisors", "shift", "@aiko_tg", "off")  # Telegram name works too
    assert code == 0 and "off shift" in out

    typed(monkeypatch, "a new password!", "a new password!")
    code, out, _ = cli("advisors", "passwd", "aiko")
    assert code == 0 and "changed" in out
    assert authenticate(db_url, "aiko", "a new password!")
    assert not authenticate(db_url, "aiko", "correct horse battery")
    code, out, _ = cli("advisors", "passwd", "aiko", "--password-stdin",
                       stdin="from a script 123\n")
    assert code == 0 and authenticate(db_url, "aiko", "from a script 123")

    code, out, _ = cli("advisors", "deactivate", "forum-only")
    assert code == 0 and "deactivated" in out
    assert "forum-only" not in cli("advisors", "list")[1]


@pytest.mark.parametrize(("argv", "stdin", "message"), [
    (("advisors", "add", "xx"), None, "use --password-stdin"),  # no terminal to ask on
    (("advisors", "add", "xx", "--password-stdin"), "short\n", "at least 10"),
    (("advisors", "add", "xx", "--password-stdin"), "", "no password"),
    (("advisors", "add", "xx", "--languages", "ja,fr", "--no-password"), None, "languages"),
    (("advisors", "add", "xx", "--capacity", "0", "--no-password"), None, "capacity"),
    (("advisors", "add", "bad name!", "--no-password"), None, "username"),
    (("advisors", "add", "x"), None, "username"),  # checked before asking for a password
    (("advisors", "add", "xx", "--telegram", "@a-b", "--no-password"), None, "telegram"),
    (("advisors", "update", "nobody", "--capacity", "3"), None, "no advisor"),
    (("advisors", "update", "aiko"), None, "nothing to change"),
    (("advisors", "shift", "nobody", "on"), None, "no advisor"),
    (("advisors", "passwd", "nobody", "--password-stdin"), "long enough pw\n", "no advisor"),
    (("advisors", "deactivate", "nobody"), None, "no advisor"),
    (("canned", "add", "hi", "--lang", "fr", "Bonjour"), None, "--lang"),
    (("canned", "add", "", "--lang", "en", "Hello"), None, "shortcut"),
    (("canned", "delete", "99"), None, "no canned response"),
    (("report", "advisors", "--since", "2026-13-01"), None, "--since"),
    (("report", "advisors", "--since", "2026-12-02", "--until", "2026-12-01"), None,
     "before"),
    (("report", "advisors", "--tz", "Mars/Olympus"), None, "time zone"),
])
def test_bad_input_is_one_line_and_exit_code_2(cli: Run, argv: tuple[str, ...],
                                               stdin: str | None, message: str) -> None:
    assert cli("advisors", "add", "aiko", "--no-password")[0] == 0
    code, out, err = cli(*argv, stdin=stdin)
    assert code == 2, (out, err)
    assert one_error_line(err) and message in err, err


def test_duplicate_username_and_mismatched_passwords(cli: Run,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("advisors", "add", "aiko", "--no-password")[0] == 0
    code, _, err = cli("advisors", "add", "AIKO", "--no-password")
    assert code == 2 and one_error_line(err) and "taken" in err
    typed(monkeypatch, "first password", "second password")
    code, _, err = cli("advisors", "passwd", "aiko")
    assert code == 2 and one_error_line(err) and "do not match" in err


def test_a_password_is_never_a_plain_argument(cli: Run) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("advisors", "add", "xx", "--password", "hunter2hunter2")
    assert exit_.value.code == 2


def test_canned_responses(cli: Run) -> None:
    code, out, _ = cli("canned", "add", "/thanks", "--lang", "ja", "ありがとうございます！")
    assert code == 0 and "/thanks (ja) saved" in out
    assert cli("canned", "add", "thanks", "--lang", "en", "Thank you!")[0] == 0
    code, out, _ = cli("canned", "add", "thanks", "--lang", "en", "Thanks a lot!")  # replaces
    assert code == 0
    code, out, _ = cli("canned", "list")
    assert code == 0 and "ありがとうございます" in out and "Thanks a lot!" in out
    assert "Thank you!" not in out
    code, out, _ = cli("canned", "list", "--lang", "en")
    assert "ありがとう" not in out
    canned_id = next(x.split()[0] for x in out.splitlines() if "Thanks a lot" in x)
    code, out, _ = cli("canned", "delete", canned_id)
    assert code == 0 and "deleted" in out
    assert "no canned responses" in cli("canned", "list", "--lang", "en")[1]


# ------------------------------------------------------------------------------ desk data


def seed(db_url: str, steps: Callable[[Any], Any]) -> None:
    """Run ``steps(desk)`` on a handoff desk over the CLI's database (fixed clock)."""
    from bot.core.i18n import Translator
    from bot.core.metrics import Metrics
    from bot.core.outbound import Outbound, PlatformLimits
    from bot.core.shared import in_memory_shared_state
    from bot.handoff.accounts import Accounts
    from bot.handoff.service import HandoffService
    from config.settings import HandoffSettings
    from models import Database
    from tests.fakes import FakePlatform
    from tests.handoff.conftest import ALWAYS_OPEN, Desk, WallClock

    async def go() -> None:
        db = Database(db_url)
        await db.upgrade()
        platform = FakePlatform()
        shared = in_memory_shared_state()
        outbound = Outbound(db=db, platforms={"fake": platform},
                            rate_limiter=shared.rate_limiter, metrics=Metrics(),
                            limits={"fake": PlatformLimits.unlimited()})
        clock = WallClock()  # Monday 2026-11-30 10:00 UTC, 19:00 in Tokyo
        service = HandoffService(
            db=db, outbound=outbound, translate=Translator(default="en"),
            settings=HandoffSettings(business_hours=ALWAYS_OPEN, reassign_loop=False),
            events=shared.events, locks=shared.locks, now=clock)
        try:
            await steps(Desk(db, service, Accounts(db), platform, clock, []))
        finally:
            await db.dispose()

    asyncio.run(go())


def test_report_and_queue(cli: Run, db_url: str) -> None:
    assert cli("advisors", "add", "aiko", "--name", "Aiko", "--capacity", "1",
               "--no-password")[0] == 0
    assert cli("advisors", "shift", "aiko", "on")[0] == 0
    assert "nobody is waiting" in cli("handoff", "queue")[1]

    async def steps(d: Any) -> None:
        aiko = (await d.desk.find_advisor("aiko")).id
        conv, _ = await d.customer("1", name="Hanako")
        await d.desk.request(conv, trigger="button", question="Where is my parcel?",
                             language="ja")
        d.clock.advance(seconds=45)
        await d.desk.reply(conv, advisor_id=aiko, text="Let me check")
        d.clock.advance(seconds=75)
        view = await d.desk.resolve(conv, advisor_id=aiko)
        await d.desk.record_csat(view.handoff_id, 5, contact_id=view.contact_id)
        busy, _ = await d.customer("2", name="Taro")
        await d.desk.request(busy, trigger="button", language="en")  # Aiko has it
        waiting, _ = await d.customer("3", name="Jiro")
        await d.desk.request(waiting, trigger="complaint", question="Broken  bottle",
                             language="en")  # Aiko is full: waits

    seed(db_url, steps)
    code, out, _ = cli("handoff", "queue")
    assert code == 0 and "Jiro" in out and "Broken bottle" in out and "1 waiting" in out
    assert "Taro" not in out

    code, out, _ = cli("report", "advisors", "--since", "2026-11-30", "--until", "2026-11-30",
                       "--tz", "Asia/Tokyo")
    assert code == 0, out
    assert "2026-11-30 to 2026-11-30 (Asia/Tokyo)" in out
    day = next(x for x in out.splitlines() if "2026-11-30" in x and x.startswith("Aiko"))
    assert day.split()[1:] == ["2026-11-30", "2", "1", "45", "45", "120", "5", "1"]
    total = next(x for x in out.splitlines() if "total" in x)
    assert total.split()[:4] == ["Aiko", "total", "2", "1"]
    # the same days in UTC: nothing on 1 December
    code, out, _ = cli("report", "advisors", "--since", "2026-12-01", "--until", "2026-12-01",
                       "--tz", "UTC")
    assert code == 0 and out.splitlines()[-1].split()[:4] == ["Aiko", "total", "0", "0"]

    code, out, _ = cli("report", "advisors", "--since", "2026-11-30", "--until", "2026-11-30",
                       "--tz", "Asia/Tokyo", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["day"] for r in rows] == ["2026-11-30", "total"]
    assert rows[0]["advisor"] == "Aiko" and rows[0]["first_response_p50_s"] == "45.0"
    assert rows[0]["handling_p50_s"] == "120.0" and rows[0]["csat_avg"] == "5.0"
    assert rows[1]["csat_count"] == "1" and rows[1]["handling_p50_s"] == "120.0"

    # deactivating Aiko sends her open conversation back to the queue
    code, out, _ = cli("advisors", "deactivate", "aiko")
    assert code == 0 and "1 open conversation(s) went back to the queue" in out
    code, out, _ = cli("handoff", "queue")
    assert "Taro" in out and "Jiro" in out and "2 waiting" in out
