"""``kizuna groups|drops|coupons ...`` as a manager types them: every subcommand has --help,
errors are one stderr line, and the commands work end to end on a fresh database."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from tests.cli_util import subcommands


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KIZUNA_DATABASE__URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("KIZUNA_COMMUNITY__BOT_USERNAME", "kizuna_shop_bot")
    monkeypatch.delenv("KIZUNA_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run



@pytest.mark.parametrize("group", ["groups", "drops", "coupons"])
def test_every_subcommand_has_help(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = list(subcommands(top.choices[group]))
    assert len(commands) >= 4
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([group, *command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: kizuna {group}" in capsys.readouterr().out


def test_entry_links_close_and_reopen_from_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("groups", "pool", "shibuya", "--capacity", "400")[0] == 0
    code, out, _ = cli("groups", "link", "shibuya-2026", "--pool", "shibuya",
                       "--campaign", "spring")
    assert code == 0 and "created" in out and "https://t.me/kizuna_shop_bot?start=shibuya-2026" \
        in out
    code, out, _ = cli("groups", "link", "shibuya-2026", "--close")
    assert code == 0 and "closed" in out
    code, out, _ = cli("groups", "link")
    row = next(line for line in out.splitlines() if "shibuya-2026" in line)
    assert "closed" in row and "spring" in row
    assert cli("groups", "link", "shibuya-2026", "--reopen")[0] == 0
    code, out, _ = cli("groups", "link")
    assert "active" in next(line for line in out.splitlines() if "shibuya-2026" in line)
    code, _, err = cli("groups", "link", "nope", "--close")
    assert code != 0 and "no entry link 'nope'" in err and "Traceback" not in err
    code, out, _ = cli("groups", "qr", "shibuya-2026", "-o", str(tmp_path / "qr.png"))
    assert code == 0 and (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
    code, _, err = cli("groups", "link", "--close")
    assert code != 0 and "give the entry link's code" in err
    with pytest.raises(SystemExit):  # argparse: not both
        main(["groups", "link", "shibuya-2026", "--close", "--reopen"])
