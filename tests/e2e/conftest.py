"""End-to-end fixtures: the real Kizuna app against the local Telegram Bot API double."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import KizunaApp
from config import load_settings
from tests.doubles.telegram_api import BotAPIDouble, FakeBot, FloodLimits, ManualClock

TOKEN = "123456:TEST-TOKEN"
SECRET = "s3cret-webhook-token"


class DoubleSleep:
    """Instead of waiting, move the shared manual clock forward (tests never sleep)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Harness:
    app: KizunaApp
    api: BotAPIDouble
    bot: FakeBot
    clock: ManualClock
    sleep: DoubleSleep
    port: int


async def start_harness(
    tmp_path: Any, *, mode: str = "polling", limits: FloodLimits | None = None,
    with_kb: bool = False, configure: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Harness, Callable[[], Any]]:
    clock = ManualClock()
    api = BotAPIDouble(clock=clock, limits=limits)
    await api.start()
    bot = api.add_bot(TOKEN, username="kizuna_test_bot")
    port = free_port()
    overrides: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "database": {"url": f"sqlite:///{tmp_path}/e2e.db"},
        "web": {"host": "127.0.0.1", "port": port},
        "telegram": {
            "token": TOKEN, "mode": mode, "api_base_url": api.base_url, "polling_timeout": 1,
        },
        "scheduler": {"enabled": False},
        "knowledge_base": {"data_dir": str(tmp_path / "kb")},
        "bot": {"default_language": "en"},
    }
    if mode == "webhook":
        overrides["telegram"].update(
            webhook_url=f"http://127.0.0.1:{port}/telegram/webhook", webhook_secret=SECRET
        )
    if configure is not None:
        configure(overrides)
    settings = load_settings(**overrides)
    sleep = DoubleSleep(clock)
    app = KizunaApp(settings, clock=clock, sleep=sleep, with_knowledge_base=with_kb)
    await app.start()

    async def stop() -> None:
        await app.stop()
        await api.close()

    return Harness(app, api, bot, clock, sleep, port), stop


@pytest.fixture(params=["polling", "webhook"])
async def harness(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Harness]:
    h, stop = await start_harness(tmp_path, mode=request.param, limits=FloodLimits.off())
    try:
        yield h
    finally:
        await stop()
