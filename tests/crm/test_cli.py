"""``kizuna crm ...``: every subcommand has --help; errors are one stderr line, no traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from tests.cli_util import subcommands


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KIZUNA_DATABASE__URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("KIZUNA_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["crm", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run



def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    crm = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
               ).choices["crm"]
    commands = list(subcommands(crm))
    assert len(commands) >= 30
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main(["crm", *command, "--help"])
        assert exit_.value.code == 0
        assert "usage: kizuna crm" in capsys.readouterr().out


def test_cli_end_to_end(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    customers = tmp_path / "c.csv"
    customers.write_text("customer_id,name,email,telegram_id\nC1,Hanako,h@x.com,100\n"
                         "C2,Bob,b@x.com,200\n", encoding="utf-8")
    orders = tmp_path / "o.csv"
    orders.write_text("order_id,customer_id,ordered_at,amount\nO1,C1,2025-05-01,3000\n"
                      "O2,C1,2025-05-20,5000\n", encoding="utf-8")
    code, out, _ = cli("import", "customers", str(customers))
    assert code == 0 and "2 new" in out
    code, out, _ = cli("import", "orders", str(orders), "--dry-run")
    assert code == 0 and "would import" in out
    assert cli("import", "orders", str(orders))[0] == 0
    code, out, _ = cli("import", "orders", str(orders))
    assert code == 0 and "0 new, 2 already there" in out
    assert cli("recompute")[0] == 0
    assert cli("tag", "add", "telegram:100", "vip")[0] == 0
    code, out, _ = cli("profile", "shop:C1")
    assert code == 0 and "LTV:" in out and "tags: vip" in out and "order O2" in out
    code, out, _ = cli("segments", "create", "vips", "--rule",
                       '{"field": "tag", "op": "has", "value": "vip"}')
    assert code == 0 and "1 member(s), 1 reachable" in out
    assert cli("optout", "h@x.com")[0] == 0
    code, out, _ = cli("segments", "count", "vips")
    assert code == 0 and out.startswith("1 matching, 0 reachable")
    code, out, _ = cli("link-code", "issue", "telegram:200")
    link = out.split()[0]
    code, out, _ = cli("link-code", "redeem", link, "webchat:visitor")
    assert code == 0 and "merged into member" in out
    assert cli("sequences", "create", "welcome",
               '{"trigger": "joined_group", "steps": [{"text": "hi"}]}')[0] == 0
    code, out, _ = cli("event", "telegram:200", "joined_group")
    assert code == 0 and "1 sequence(s) started" in out
    code, out, _ = cli("koc", "leaderboard")
    assert code == 0


@pytest.mark.parametrize(("argv", "message", "code"), [
    (("import", "orders", "missing.csv"), "error: file not found: missing.csv", 1),
    (("profile", "telegram:nobody"), "error: no member 'telegram:nobody'", 1),
    (("segments", "create", "x", "--rule", "{bad"), "error: not valid JSON", 1),
    (("segments", "count", "--rule", '{"field": "x", "op": "eq", "value": 1}'),
     "error: rule (top): unknown field 'x'", 1),
    (("segments", "show", "nope"), "error: no segment 'nope'", 1),
    (("link-code", "redeem", "ABCD", "nocolon"), "error: expected PLATFORM:ID", 2),
    (("link-code", "redeem", "ABCD", "webchat:1"), "error: unknown link code", 1),
    (("rules", "preset", "nope"), "error: no preset 'nope'", 1),
    (("sequences", "create", "s", '{"trigger": "x"}'), "error: sequence: 'steps'", 1),
])
def test_errors_are_one_line(cli, argv: tuple[str, ...], message: str, code: int) -> None:  # type: ignore[no-untyped-def]
    got, out, err = cli(*argv)
    assert got == code
    assert err.startswith(message), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_import_lists_lines(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_bytes("order_id,customer_id,ordered_at,amount\nX1,C1,2025-02-30,1\n".encode("cp932"))
    code, _, err = cli("import", "orders", str(bad))
    assert code == 1
    assert "bad.csv: line 2: order date: impossible date '2025-02-30'" in err
    assert err.strip().splitlines()[-1].endswith("nothing was imported")
