"""Kizuna settings.

One ``Settings`` object per process, built by :func:`load_settings` from (highest first):
explicit overrides, ``KIZUNA_*`` environment variables (nested with ``__``, e.g.
``KIZUNA_TELEGRAM__TOKEN``), a TOML file (``--config``, ``KIZUNA_CONFIG`` or
``config/kizuna.toml`` when present) and the embedded defaults. Settings are passed to the
services that need them; nothing reads a global.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_FILE = Path("config/kizuna.toml")
SUPPORTED_LANGUAGES = ("ja", "en", "zh")


class ConfigError(Exception):
    """A configuration value is wrong; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TelegramSettings(_Section):
    token: SecretStr | None = None
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_path: str = "/telegram/webhook"
    api_base_url: str | None = Field(
        default=None,
        description="Custom Bot API server, e.g. a self-hosted telegram-bot-api or a test double.",
    )
    polling_timeout: int = Field(default=30, ge=0, le=300)
    max_send_attempts: int = Field(default=5, ge=1, le=20)
    request_timeout: float = Field(default=30.0, gt=0)

    @field_validator("api_base_url", "webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        raw = value.get_secret_value()
        bot_id, _, secret = raw.partition(":")
        if not bot_id.isdigit() or not secret:
            raise ValueError("must look like '123456:ABC-DEF...' (bot id, colon, secret)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
        if not 1 <= len(raw) <= 256 or set(raw) - allowed:
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _webhook_needs(self) -> TelegramSettings:
        if self.token is not None and self.mode == "webhook":
            if not self.webhook_url:
                raise ValueError("mode 'webhook' needs telegram.webhook_url")
            if self.webhook_secret is None:
                raise ValueError("mode 'webhook' needs telegram.webhook_secret")
        return self

    @property
    def enabled(self) -> bool:
        return self.token is not None


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///data/kizuna.db"
    echo: bool = False
    pool_size: int = Field(default=10, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _driver(cls, value: str) -> str:
        if value.startswith("sqlite:///") or value.startswith("sqlite://"):
            value = "sqlite+aiosqlite" + value[len("sqlite") :]
        elif value.startswith(("postgresql://", "postgres://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must be a sqlite:///PATH or postgresql://USER@HOST:PORT/DB URL"
            )
        return value


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    cookie_secure: bool = False
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs web-chat cookies and console sessions; generated into the data "
        "folder when unset (set it explicitly when several workers serve the web).",
    )


class RedisSettings(_Section):
    url: str | None = Field(
        default=None, description="redis://host:port/db; unset = in-process implementations"
    )


class BotSettings(_Section):
    name: str = "Kizuna"
    default_language: Literal["ja", "en", "zh"] = "ja"
    max_incoming_text: int = Field(default=16_384, ge=1)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class RateLimitSettings(_Section):
    """Per-platform send limits (messages per second / per minute)."""

    global_per_second: float = Field(default=30.0, gt=0)
    private_per_second: float = Field(default=1.0, gt=0)
    group_per_minute: float = Field(default=20.0, gt=0)


class KnowledgeBaseSettings(_Section):
    data_dir: str = "data/kb"
    sample: str | None = "bundled"
    embedder: str = "auto"
    model: str | None = None
    answer_threshold: float | None = None
    suggest_threshold: float | None = None


class SchedulerSettings(_Section):
    enabled: bool = True
    timezone: str = "Asia/Tokyo"


class CommunitySettings(_Section):
    """Group communities, drops and coupons (``[community]``)."""

    default_pool: str = Field(default="default", description="Pool for newly adopted groups.")
    default_capacity: int = Field(default=500, ge=1, le=200_000)
    alert_threshold: int = Field(
        default=50, ge=0, description="Alert managers when a pool has fewer free seats."
    )
    alert_cooldown_minutes: int = Field(default=360, ge=0)
    managers_chat: str | None = Field(
        default=None, description="'telegram:-100123' - where pool and drop alerts are posted."
    )
    bot_username: str | None = Field(
        default=None, description="For entry links outside the bot process (CLI, QR codes)."
    )
    welcome_coupon: str | None = Field(
        default=None, description="Coupon campaign sent privately on a member's first join."
    )
    welcome_batch_seconds: float = Field(default=5.0, ge=0)
    welcome_max_names: int = Field(default=20, ge=1)
    invite_link_ttl_hours: float = Field(default=24.0, gt=0)
    reservation_minutes: float = Field(
        default=30.0, ge=0, description="A routed visitor holds a seat this long."
    )
    max_pushes_per_week: int | None = Field(
        default=4, ge=1, description="Per-member frequency cap across groups and private "
        "messages (rolling 7 days); unset = no cap."
    )
    delivery_workers: int = Field(default=24, ge=1, le=1000)
    claim_batch: int = Field(default=200, ge=1, le=5000)
    commit_linger_ms: float = Field(
        default=0.0, ge=0, le=1000,
        description="How long outbox writes wait for others to share their transaction.")
    in_doubt: Literal["resend", "skip"] = Field(
        default="resend",
        description="After a crash, a send whose outcome is unknown is resent (at-least-once) "
        "or skipped (at-most-once). See community/delivery.py.",
    )
    grace_seconds: int = Field(default=3600, ge=0, description="Default lateness a drop "
                               "missed during downtime is still delivered within.")
    job_sync_seconds: float = Field(default=30.0, gt=0)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessHoursSettings(_Section):
    """When advisors work: weekly opening hours in the brand's time zone, plus closed dates."""

    timezone: str = "Asia/Tokyo"
    weekly: dict[str, str] = Field(
        default_factory=lambda: {d: "09:00-21:00" for d in _DAYS},
        description='Opening hours per weekday, e.g. {mon = "09:00-18:00"}; a missing or '
        'empty day is closed. Several ranges: "09:00-12:00,13:00-18:00".',
    )
    closed_dates: list[str] = Field(default_factory=list, description="YYYY-MM-DD holidays.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for day, spec in value.items():
            if day not in _DAYS:
                raise ValueError(f"unknown weekday {day!r} (use {', '.join(_DAYS)})")
            for part in filter(None, (p.strip() for p in spec.split(","))):
                m = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", part)
                if not m:
                    raise ValueError(f"{day}: {part!r} is not HH:MM-HH:MM")
                h1, m1, h2, m2 = (int(x) for x in m.groups())
                if not (0 <= h1 <= 24 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60) or (
                        h1 * 60 + m1 >= h2 * 60 + m2):
                    raise ValueError(f"{day}: {part!r} is not a valid range")
        return value

    @field_validator("closed_dates")
    @classmethod
    def _dates(cls, value: list[str]) -> list[str]:
        from datetime import date

        for item in value:
            try:
                date.fromisoformat(item)
            except ValueError:
                raise ValueError(f"{item!r} is not a YYYY-MM-DD date") from None
        return value


class HandoffSettings(_Section):
    """Handing conversations to human advisors."""

    enabled: bool = True
    failures_before_handoff: int = Field(
        default=2, ge=0, description="Bot turns in a row without an answer before the "
        "conversation goes to a person (0 = never automatically).")
    reassign_after_minutes: float = Field(
        default=5.0, gt=0, description="An assigned advisor who has not answered within this "
        "time loses the conversation to another eligible advisor.")
    default_capacity: int = Field(default=5, ge=1, le=500)
    sticky_days: int = Field(default=90, ge=0, description="A returning customer goes to "
                             "their own advisor (if on shift) within this many days.")
    csat: bool = True
    reassign_loop: bool = Field(default=True, description="Run the reassignment/routing "
                                "pass every 15 s in this process (tests switch it off).")
    forum_chat_id: str | None = Field(
        default=None, description="Telegram id of the advisors' forum supergroup (topics on); "
        "each handed-off customer gets a topic there.")
    forum_platform: str = "telegram"
    business_hours: BusinessHoursSettings = BusinessHoursSettings()


class ConsoleSettings(_Section):
    """The web console (advisor inbox, manager pages)."""

    session_hours: float = Field(default=12.0, gt=0)
    login_attempts_per_minute: float = Field(default=5.0, gt=0)
    max_upload_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    create_initial_admin: bool = Field(
        default=True, description="On a fresh install create the console user 'admin' with "
        "a random password (printed at start, kept in data_dir/initial_admin_password).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KIZUNA_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: str = "data"
    bot: BotSettings = BotSettings()
    telegram: TelegramSettings = TelegramSettings()
    database: DatabaseSettings = DatabaseSettings()
    web: WebSettings = WebSettings()
    redis: RedisSettings = RedisSettings()
    logging: LoggingSettings = LoggingSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    knowledge_base: KnowledgeBaseSettings = KnowledgeBaseSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    community: CommunitySettings = CommunitySettings()
    handoff: HandoffSettings = HandoffSettings()
    console: ConsoleSettings = ConsoleSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # TOML values arrive through init_settings (see load_settings), below the environment.
        return (env_settings, init_settings)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown setting"
        got = item.get("input")
        shown = ""
        if not isinstance(got, dict | list) and got is not None and "token" not in key \
                and "secret" not in key:
            shown = f" (got {got!r})"
        lines.append(f"config error in {source}: {key}: {msg}{shown}")
    return "\n".join(lines)


def load_settings(
    config_file: str | os.PathLike[str] | None = None, **overrides: Any
) -> Settings:
    """Build settings; raise :class:`ConfigError` with a message naming the bad key."""
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config error: file not found: {path}")
    elif os.environ.get("KIZUNA_CONFIG"):
        path = Path(os.environ["KIZUNA_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"config error: KIZUNA_CONFIG file not found: {path}")
    else:
        path = DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config error in {path}: not valid TOML: {exc}") from exc
    data = _deep_merge(data, overrides)
    source = str(path) if path else "environment"
    env_backup = os.environ.pop("KIZUNA_CONFIG", None)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
    finally:
        if env_backup is not None:
            os.environ["KIZUNA_CONFIG"] = env_backup
