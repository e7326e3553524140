"""Inbound throughput of the Telegram adapter in webhook mode, end to end.

The local Bot API double runs in its own process (Telegram is a remote service) and delivers
updates to Kizuna's webhook as Telegram does (POST with the secret header, up to 40
connections); Kizuna validates, maps and stores every message (and, for private questions,
sends a reply). For each database it reports:

- the saturated rate: messages offered as fast as the double can create them;
- latency at a steady offered load (default 300 messages/s): p50/p95 from the moment the double
  created the update to the moment Kizuna had stored it (and sent the reply).

    .venv/bin/python -m bench.ingest_bench [--messages 3000] [--rate 300] [--no-pg]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from bench._pg import drop_pg, pg_database  # noqa: E402
from bot.app import KizunaApp  # noqa: E402
from bot.core.types import IncomingMessage  # noqa: E402
from bot.telegram.platform import TelegramPlatform  # noqa: E402
from config import load_settings  # noqa: E402
from models import Message  # noqa: E402
from tests.e2e.conftest import free_port  # noqa: E402

TOKEN = "123456:BENCH-TOKEN"
SECRET = "bench-secret"
STAMP = re.compile(r"t=(\d+\.\d+)")
ARRIVAL: contextvars.ContextVar[float | None] = contextvars.ContextVar("arrival", default=None)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LoadProcess:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._telegram_load", cwd=str(ROOT),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        line = await self._read()
        assert line.startswith("ready "), line
        return line.split()[1]

    async def _read(self) -> str:
        assert self.proc and self.proc.stdout
        return (await self.proc.stdout.readline()).decode().strip()

    async def command(self, line: str) -> str:
        assert self.proc and self.proc.stdin
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read()

    async def stop(self) -> None:
        if self.proc is not None:
            try:
                await self.command("quit")
            except Exception:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()


async def run_case(db_url: str, scenario: str, n: int, rate: float,
                   data_dir: str) -> dict[str, Any]:
    load = LoadProcess()
    base_url = await load.start()
    port = free_port()
    settings = load_settings(
        data_dir=data_dir,
        database={"url": db_url, "pool_size": 20},
        web={"host": "127.0.0.1", "port": port},
        telegram={"token": TOKEN, "mode": "webhook", "api_base_url": base_url,
                  "webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
                  "webhook_secret": SECRET},
        scheduler={"enabled": False},
        logging={"level": "WARNING"},
        # The double's flood limits are off: measure the engine, not Telegram's 30/s cap.
        rate_limits={"global_per_second": 5000, "private_per_second": 100,
                     "group_per_minute": 6000},
    )
    # Handling latency: from the webhook request reaching Kizuna to the message stored (and
    # the reply sent). The arrival time rides in a context variable into the handling task.
    original_webhook = TelegramPlatform._webhook

    async def webhook_with_arrival(self: Any, request: Any) -> Any:
        ARRIVAL.set(time.perf_counter())
        return await original_webhook(self, request)

    TelegramPlatform._webhook = webhook_with_arrival  # type: ignore[method-assign]
    app = KizunaApp(settings, with_knowledge_base=False)
    latencies: list[float] = []
    e2e: list[float] = []
    original = app.conversations.handle

    async def timed(event: Any) -> None:
        await original(event)
        if isinstance(event, IncomingMessage):
            arrival = ARRIVAL.get()
            if arrival is not None:
                latencies.append(time.perf_counter() - arrival)
            match = STAMP.search(event.text)
            if match:
                e2e.append(time.time() - float(match.group(1)))

    for platform in app.platforms.values():
        platform.set_handler(timed)
    await app.start()
    per_message = 1 if scenario == "groups" else 2
    try:
        assert await load.command(f"setup {scenario}") == "ok"
        await wait_count(app, 0 if scenario == "groups" else 400)
        # Warm-up (not timed): aiogram builds its pydantic models on first use.
        base = await count(app)
        await load.command("send 200 0")
        await wait_count(app, base + 200 * per_message)
        results: dict[str, Any] = {"n": n}
        for label, offered in (("saturated", 0.0), ("steady", rate)):
            base = await count(app)
            latencies.clear()
            e2e.clear()
            t0 = time.perf_counter()
            await load.command(f"send {n} {offered}")
            try:
                await wait_count(app, base + n * per_message, timeout=120)
            except TimeoutError:
                print(await load.command("stats"), file=sys.stderr)
                raise
            elapsed = time.perf_counter() - t0
            results[label] = {
                "msgs_per_s": n / elapsed,
                "p50_ms": 1000 * statistics.median(latencies),
                "p95_ms": 1000 * pct(latencies, 0.95),
                "e2e_p50_ms": 1000 * statistics.median(e2e),
                "e2e_p95_ms": 1000 * pct(e2e, 0.95),
            }
    finally:
        await app.stop()
        await load.stop()
        TelegramPlatform._webhook = original_webhook  # type: ignore[method-assign]
    return results


async def count(app: KizunaApp) -> int:
    async with app.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(Message))).scalar_one())


async def wait_count(app: KizunaApp, target: int, timeout: float = 600) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await count(app) >= target:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"only {await count(app)} of {target} messages stored")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("SQLite", "PostgreSQL"):
            for scenario in ("groups", "private"):
                pg = None
                if backend == "SQLite":
                    url = f"sqlite:///{tmp}/{scenario}.db"
                else:
                    if args.no_pg:
                        continue
                    pg = await pg_database()
                    if pg is None:
                        print("PostgreSQL not reachable: skipped", file=sys.stderr)
                        continue
                    url = pg[0]
                try:
                    result = await run_case(url, scenario, args.messages, args.rate,
                                            f"{tmp}/{backend}-{scenario}")
                finally:
                    if pg is not None:
                        await drop_pg(pg[1])
                rows.append((backend, scenario, result))
                print(f"  done: {backend} {scenario}", file=sys.stderr)
    print(f"\n| backend | scenario | messages | saturated msgs/s | offered {args.rate:.0f}/s: "
          "achieved msgs/s | handling p50 ms | handling p95 ms | update-created-to-stored "
          "p50 / p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, scenario, r in rows:
        label = {"groups": "group messages stored (bot admin, no reply)",
                 "private": "private questions stored + reply sent"}[scenario]
        sat, steady = r["saturated"], r["steady"]
        print(f"| {backend} | {label} | {r['n']} | {sat['msgs_per_s']:.0f} | "
              f"{steady['msgs_per_s']:.0f} | {steady['p50_ms']:.1f} | {steady['p95_ms']:.1f} | "
              f"{steady['e2e_p50_ms']:.0f} / {steady['e2e_p95_ms']:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
