"""The ``kizuna`` command-line tool. Each subcommand group lives in its own module with a
``register(subparsers)`` function; commands are ``(args) -> int`` functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config import ConfigError

COMMAND_MODULES = ("bot.cli.core", "bot.cli.kb", "bot.cli.community", "bot.cli.crm", "bot.cli.advisors")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="kizuna",
        description="Kizuna: social CRM bot for 1-on-1 chats and group communities.",
    )
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="TOML config file (default: config/kizuna.toml "
        "if present, or $KIZUNA_CONFIG); KIZUNA_* environment variables override it",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
