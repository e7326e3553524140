"""The Telegram side of bench.handoff_bench, in its own process (Telegram is a remote service):
the Bot API double with N customers, each a small script that writes like a person would.

    python -m bench._handoff_double --customers N [--global R] [--private R] [--patience S]

``--global`` / ``--private``: the double's flood limits in messages per second (0 = off;
defaults are Telegram's 30/s overall and 1/s per private chat). Prints one JSON line
``{"api": URL, "ctl": URL}`` and serves a control API on ``ctl``:

- ``POST /start``: every customer starts at once: writes a question, waits for the bot's
  answer, presses the "talk to a person" button (``handoff:request``) on it, waits for the
  bot's acknowledgement (the next bot message that is not an advisor's reply), then writes a
  follow-up ``F<i> ... tok=CF-<i> t=<created>`` for the advisor;
- ``GET /progress``: how many customers finished their script, messages sent by the bot;
- ``GET /stats``: every message the bot sent (receive time at the double, chat, text), each
  customer's timeline, 429s returned, webhook failures and the double's internal errors.

All times are ``time.time()`` (the orchestrator on the same machine uses the same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web  # noqa: E402

from tests.doubles.telegram_api import BotAPIDouble, FloodLimits  # noqa: E402

TOKEN = "123456:BENCH-TOKEN"
USER0 = 20_000_000
ADVISOR_TOKEN = "tok=A"


class Customers:
    def __init__(self, api: BotAPIDouble, n: int, patience: float) -> None:
        self.api = api
        self.patience = patience
        self.bot = api.add_bot(TOKEN, username="kizuna_bench_bot")
        self.users = [api.add_user(f"Customer{i}", user_id=USER0 + i, language_code="en")
                      for i in range(n)]
        self.sent: list[tuple[float, int, str]] = []  # (received at, chat id, text)
        self.inbox: dict[int, list[dict[str, Any]]] = {u.id: [] for u in self.users}
        self.arrived: dict[int, asyncio.Event] = {u.id: asyncio.Event() for u in self.users}
        self.timeline: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.done = 0
        self.tasks: list[asyncio.Task[None]] = []
        original = api._record_sent

        def record(msg: dict[str, Any]) -> None:
            now = time.time()
            chat = msg["chat"]["id"]
            text = msg.get("text", msg.get("caption", "")) or ""
            self.sent.append((now, chat, text))
            if chat in self.inbox:
                msg["_received"] = now
                self.inbox[chat].append(msg)
                self.arrived[chat].set()
            original(msg)

        api._record_sent = record  # type: ignore[method-assign]

    async def next_message(self, chat: int, start: int, *, skip_advisor: bool) -> tuple[int,
                                                                                           Any]:
        """The first bot message at index >= start (not an advisor's, if asked)."""
        index = start
        while True:
            box = self.inbox[chat]
            while index < len(box):
                msg = box[index]
                if not (skip_advisor and ADVISOR_TOKEN in (msg.get("text") or "")):
                    return index, msg
                index += 1
            event = self.arrived[chat]
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), self.patience)
            except TimeoutError:
                raise TimeoutError(f"no message from the bot for {self.patience:.0f} s "
                                   f"(after {len(box)})") from None

    async def customer(self, i: int) -> None:
        user = self.users[i]
        t: dict[str, Any] = {"i": i, "chat": user.id}
        self.timeline[user.id] = t
        try:
            t["question"] = time.time()
            await self.api.user_sends(user, f"Q{i} Where is my order? I ordered last week.")
            index, answer = await self.next_message(user.id, 0, skip_advisor=True)
            t["answered"] = answer["_received"]
            # Without a knowledge base the bot's "I don't know" carries no button; with one it
            # offers "Talk to a person" (handoff:request): press that on the answer.
            t["pressed"] = time.time()
            await self.api.user_presses(user, answer, "handoff:request", check=False)
            _, ack = await self.next_message(user.id, index + 1, skip_advisor=True)
            t["ack"] = ack["_received"]
            t["ack_text"] = ack.get("text", "")
            t["advisor_before_ack"] = any(
                ADVISOR_TOKEN in (m.get("text") or "") for m in self.inbox[user.id]
                if m["_received"] <= ack["_received"])
            created = time.time()
            t["followup"] = created
            await self.api.user_sends(
                user, f"F{i} The order number is {100000 + i}. tok=CF-{i} t={created:.6f}")
        except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
            self.errors.append(f"customer {i}: {type(exc).__name__}: {exc}")
        finally:
            self.done += 1

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.customer(i)) for i in range(len(self.users))]


async def serve(n: int, global_rate: float, private_rate: float, patience: float) -> None:
    limits = FloodLimits(global_per_second=global_rate or None,
                         private_per_second=private_rate or None)
    api = BotAPIDouble(limits=limits, record_calls=False, webhook_timeout=60.0)
    await api.start()
    customers = Customers(api, n, patience)

    async def start(request: web.Request) -> web.Response:
        customers.start()
        return web.json_response({"ok": True, "at": time.time()})

    async def progress(request: web.Request) -> web.Response:
        return web.json_response({"done": customers.done, "sent": len(customers.sent),
                                  "errors": len(customers.errors)})

    async def stats(request: web.Request) -> web.Response:
        st = api.stats
        return web.json_response({
            "sent": customers.sent,
            "timeline": list(customers.timeline.values()),
            "errors": customers.errors[:20],
            "too_many_requests": st.too_many_requests,
            "webhook_deliveries": st.webhook_deliveries,
            "webhook_failures": st.webhook_failures,
            "webhook_dropped": st.webhook_dropped,
            "internal_errors": [repr(e) for e in api.internal_errors[:10]],
        })

    ctl = web.Application()
    ctl.router.add_post("/start", start)
    ctl.router.add_get("/progress", progress)
    ctl.router.add_get("/stats", stats)
    runner = web.AppRunner(ctl, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"api": api.base_url, "ctl": f"http://127.0.0.1:{port}"}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await api.close()


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--global", dest="global_rate", type=float, default=30.0)
    p.add_argument("--private", dest="private_rate", type=float, default=1.0)
    p.add_argument("--patience", type=float, default=300.0,
                   help="seconds a customer waits for the bot before giving up")
    a = p.parse_args()
    asyncio.run(serve(a.customers, a.global_rate, a.private_rate, a.patience))


if __name__ == "__main__":
    main()
