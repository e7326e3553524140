"""Helpers shared by CLI commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from config import ConfigError, Settings, load_settings

T = TypeVar("T")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def run_async(fn: Callable[..., Awaitable[T]], *a: Any) -> T:
    return asyncio.run(fn(*a))  # type: ignore[arg-type]


class CliError(Exception):
    """A user-facing error: one line on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_guarded(
    call: Callable[[], Awaitable[int]],
    *,
    domain_errors: tuple[type[BaseException], ...] = (),
    first_line_only: bool = False,
) -> int:
    """Run an async command; every failure becomes one message on stderr and an exit code
    (the CLI never shows a traceback). ``domain_errors`` are the command group's own
    user-facing errors."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(call())
    except ConfigError:
        raise
    except CliError as exc:
        err(str(exc))
        return exc.code
    except domain_errors as exc:
        err(_first_line(exc) if first_line_only else str(exc))
        return 1
    except FileNotFoundError as exc:
        err(f"file not found: {exc.filename or exc}")
        return 1
    except OSError as exc:
        err(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    except SQLAlchemyError as exc:
        err(f"database: {_first_line(exc)}")
        return 1
    except ValueError as exc:
        err(_first_line(exc))
        return 1
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback
        err(f"unexpected {type(exc).__name__}: {exc}")
        return 1
