"""Load generator for bench.ingest_bench: runs the Bot API double in its own process (as
Telegram is a remote service) and creates user messages on command.

Protocol on stdin/stdout, one line each: prints ``ready BASE_URL``; then
``setup groups|private`` -> ``ok``; ``send N RATE`` -> ``sent SECONDS`` (RATE 0 = as fast as
possible); ``quit``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.doubles.telegram_api import BotAPIDouble, FloodLimits  # noqa: E402

TOKEN = "123456:BENCH-TOKEN"


async def main() -> None:
    api = BotAPIDouble(limits=FloodLimits.off(), record_calls=False)
    await api.start()
    bot = api.add_bot(TOKEN, username="kizuna_bench_bot")
    users = [api.add_user(f"U{i}", language_code="ja") for i in range(200)]
    groups: list = []
    scenario = "groups"
    print(f"ready {api.base_url}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        cmd, *args = line.split()
        if cmd == "setup":
            scenario = args[0]
            if scenario == "groups":
                groups = [api.create_group(f"G{i}", users[i * 10:(i + 1) * 10])
                          for i in range(20)]
                for g in groups:
                    api.add_bot_to_group(bot, g, by=users[0], admin=True)
            else:
                for u in users:
                    await api.user_sends(u, "/start")
            print("ok", flush=True)
        elif cmd == "stats":
            st = api.stats
            print(f"stats deliveries={st.webhook_deliveries} failures={st.webhook_failures} "
                  f"dropped={st.webhook_dropped} errors={len(api.internal_errors)}", flush=True)
        elif cmd == "send":
            n, rate = int(args[0]), float(args[1])
            t0 = time.perf_counter()
            for i in range(n):
                if rate > 0:
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                stamp = f"t={time.time():.6f}"
                if scenario == "groups":
                    g = groups[i % len(groups)]
                    member = users[(i % len(groups)) * 10 + (i // len(groups)) % 10]
                    await api.user_sends(member, f"message {i} 🌸 こんにちは {stamp}", chat=g)
                else:
                    await api.user_sends(users[i % len(users)], f"question {i} 送料は? {stamp}")
                if rate <= 0 and i % 100 == 0:
                    await asyncio.sleep(0)
            print(f"sent {time.perf_counter() - t0:.3f}", flush=True)
    await api.close()


if __name__ == "__main__":
    asyncio.run(main())
