"""Structured (JSON) logs with secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class RedactFilter(logging.Filter):
    """Replaces every configured secret (bot token, webhook secret) wherever it appears."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def _clean(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "***")
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._clean(str(record.msg))
            if record.args:
                record.args = tuple(
                    self._clean(a) if isinstance(a, str) else a for a in record.args
                ) if isinstance(record.args, tuple) else record.args
            for key, value in list(vars(record).items()):
                if key not in _STD and isinstance(value, str):
                    setattr(record, key, self._clean(value))
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: RedactFilter | None = None) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                data[key] = value if isinstance(value, str | int | float | bool | None) \
                    else repr(value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        line = json.dumps(data, ensure_ascii=False)
        return self.redact._clean(line) if self.redact else line


def setup_logging(level: str = "INFO", fmt: str = "json", secrets: list[str] | None = None) -> None:
    redact = RedactFilter(secrets or [])
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(redact))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
