"""Handoff desk under load, end to end through Telegram (the Bot API double).

    .venv/bin/python -m bench.handoff_bench [--customers 2000] [--advisors 50] [--pg]
                                           [--runs real,global,off]

With 50 advisors on shift and 2,000 customers writing at once: how long from handoff to
assignment and from an advisor's reply to its delivery (p50/p95), and whether any message is
lost or delivered twice.

Two processes: the Bot API double with the customers (``bench._handoff_double``; Telegram is a
remote service) and this one, running the real :class:`KizunaApp` in webhook mode (SQLite, or
PostgreSQL with ``--pg``, in a fresh database) without the knowledge base, plus the advisors.

Each customer (a script in the double's process), all starting at once: writes a question;
the bot answers "I don't know"; the customer presses "talk to a person" (callback
``handoff:request``) on that answer; the desk routes the handoff; the bot acknowledges; the
customer writes a follow-up (relayed to the desk while a person has the conversation).

Each advisor (a task here, one message at a time, as a person types): when a conversation is
assigned to them (the desk's ``assigned`` event) they greet the customer, and when the
customer's follow-up arrives (the desk's ``message`` event) they answer it - both through
``app.handoff.reply(...)``, the call the web console and the Telegram forum make. Every advisor
reply carries a unique token; the double records what each customer received and when.

Measured:

- handoff requested -> assigned: ``handoffs.assigned_at - requested_at`` (the desk's clock);
- button pressed -> acknowledgement received by the customer (the double's clock);
- advisor reply call -> message received by the double;
- customer follow-up created at the double -> relayed to the desk (stored and announced);
- lost / duplicated / misdelivered advisor replies (each token in its customer's chat exactly
  once) and customer follow-ups (stored and relayed exactly once).

Runs (``--runs``): ``real`` - Telegram's limits on the double and in Kizuna (30 msg/s per bot,
1 msg/s per private chat); ``global`` - the overall limit raised to 1,000 msg/s (as for paid
broadcasts), 1 msg/s per private chat kept; ``off`` - no limits (the engine's own speed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench._handoff_double import TOKEN  # noqa: E402
from bench._pg import drop_pg, pg_database  # noqa: E402
from bot.app import KizunaApp  # noqa: E402
from bot.handoff.accounts import AccountInput  # noqa: E402
from config import load_settings  # noqa: E402
from models.advisors import Handoff  # noqa: E402
from models.chat import Chat  # noqa: E402
from models.conversation import Conversation, Message, MessageDirection  # noqa: E402
from tests.e2e.conftest import free_port  # noqa: E402

SECRET = "bench-secret"
ADVISOR_TOKEN = re.compile(r"tok=(A[12])-(\d+)")
FOLLOWUP = re.compile(r"tok=CF-(\d+) t=(\d+\.\d+)")
ALWAYS_OPEN = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}

# name -> (label, double's global/s, double's private/s, Kizuna's global/s, Kizuna's private/s)
RUNS = {
    "real": ("real limits: 30 msg/s per bot, 1 msg/s per chat", 30.0, 1.0, 30.0, 1.0),
    "global": ("overall limit raised to 1,000 msg/s, 1 msg/s per chat", 1000.0, 1.0,
               1000.0, 1.0),
    "off": ("no limits (engine only)", 0.0, 0.0, 100_000.0, 10_000.0),
}


def pct(values: list[float], q: float) -> float:
    """Exact percentile, linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Advisors:
    """50 people: each answers one message at a time, in the order things reach them."""

    app: KizunaApp
    ids: list[int]
    queues: dict[int, asyncio.Queue[tuple[str, int]]] = field(default_factory=dict)
    owner: dict[int, int] = field(default_factory=dict)  # conversation -> advisor
    replies: list[dict[str, Any]] = field(default_factory=list)
    relayed: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    relay_latency: list[float] = field(default_factory=list)
    enqueued: int = 0
    errors: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for aid in self.ids:
            self.queues[aid] = asyncio.Queue()
            self.tasks.append(asyncio.create_task(self._work(aid)))
        self.app.handoff.listeners.append(self.on_event)

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "assigned":
            conv, aid = int(event["conversation_id"]), int(event["advisor_id"])
            self.owner[conv] = aid
            self._enqueue(aid, "A1", conv)
        elif kind == "message" and event.get("direction") == "in":
            match = FOLLOWUP.search(event.get("text") or "")
            if match is None:
                return
            now = time.time()
            conv = int(event["conversation_id"])
            self.relayed[int(match.group(1))].append(now)
            self.relay_latency.append(now - float(match.group(2)))
            aid = self.owner.get(conv)
            if aid is None:
                self.errors.append(f"follow-up in conversation {conv} with no advisor")
                return
            self._enqueue(aid, "A2", conv)

    def _enqueue(self, aid: int, kind: str, conv: int) -> None:
        self.enqueued += 1
        self.queues[aid].put_nowait((kind, conv))

    async def _work(self, aid: int) -> None:
        queue = self.queues[aid]
        while True:
            kind, conv = await queue.get()
            text = ("Hello, I'm looking into your order now." if kind == "A1" else
                    "Thanks, I found it: it ships tomorrow.") + f" tok={kind}-{conv}"
            called = time.time()
            try:
                result = await self.app.handoff.reply(conv, advisor_id=aid, text=text)
                ok, error = result.ok, result.error
            except Exception as exc:  # noqa: BLE001 - counted and reported
                ok, error = False, f"{type(exc).__name__}: {exc}"
            self.replies.append({"kind": kind, "conv": conv, "advisor": aid, "called": called,
                                 "returned": time.time(), "ok": ok, "error": error})

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class DoubleProcess:
    def __init__(self, customers: int, global_rate: float, private_rate: float,
                 patience: float) -> None:
        self.args = ["--customers", str(customers), "--global", str(global_rate),
                     "--private", str(private_rate), "--patience", str(patience)]
        self.proc: asyncio.subprocess.Process | None = None
        self.api = self.ctl = ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._handoff_double", *self.args, cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        urls = json.loads((await self.proc.stdout.readline()).decode())
        self.api, self.ctl = urls["api"], urls["ctl"]

    async def call(self, method: str, path: str) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.request(method, self.ctl + path) as r:
            return dict(await r.json())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def apply_workarounds(app: KizunaApp, workarounds: set[str]) -> None:
    """Bench-only patches that show what fixing the desk's concurrency problems would give
    (see the report): ``no-crm`` - no "needs a senior advisor" lookup, which opens a second
    database session while ``HandoffService.request`` holds one (under load every request
    holds a pooled connection and waits for another: the pool runs dry); ``immediate`` -
    SQLite transactions start with BEGIN IMMEDIATE (a deferred read transaction that later
    writes fails at once with "database is locked" when another writer committed since)."""
    if "no-crm" in workarounds:
        app.handoff.crm = None
    if "immediate" in workarounds and app.db.is_sqlite:
        from sqlalchemy import event

        engine = app.db.engine.sync_engine

        @event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def instrument(app: KizunaApp) -> dict[str, list[float]]:
    """Time the desk's request() and its routing passes (route_waiting, one at a time under
    the routing lock), to show where the time goes."""
    timings: dict[str, list[float]] = {"request": [], "route": []}
    desk = app.handoff

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                timings[name].append(time.perf_counter() - t0)

        return wrapper

    desk.request = timed("request", desk.request)
    desk.route_waiting = timed("route", desk.route_waiting)
    locks = desk.locks

    class TimedLocks:  # how long the routing lock is held (the passes' own work)
        def hold(self, name: str, *, ttl: float = 30.0) -> Any:
            inner = locks.hold(name, ttl=ttl)

            class Held:
                async def __aenter__(self) -> Any:
                    out = await inner.__aenter__()
                    self.t0 = time.perf_counter()
                    return out

                async def __aexit__(self, *exc: Any) -> Any:
                    if name == "handoff:routing":
                        timings["held"].append(time.perf_counter() - self.t0)
                    return await inner.__aexit__(*exc)

            return Held()

    timings["held"] = []
    desk.locks = TimedLocks()
    return timings


async def run_case(name: str, db_url: str, data_dir: str, customers: int, advisors: int,
                   capacity: int, timeout: float, workarounds: set[str]) -> dict[str, Any]:
    label, d_global, d_private, k_global, k_private = RUNS[name]
    # a customer waits at most the whole run for each answer (a lost one ends their script)
    double = DoubleProcess(customers, d_global, d_private, patience=timeout * 0.8)
    await double.start()
    port = free_port()
    settings = load_settings(
        data_dir=data_dir,
        database={"url": db_url, "pool_size": 20},
        web={"host": "127.0.0.1", "port": port},
        telegram={"token": TOKEN, "mode": "webhook", "api_base_url": double.api,
                  "webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
                  "webhook_secret": SECRET},
        scheduler={"enabled": False},
        logging={"level": "WARNING"},
        bot={"default_language": "en"},
        rate_limits={"global_per_second": k_global, "private_per_second": k_private,
                     "group_per_minute": 20},
        handoff={"business_hours": {"timezone": "UTC", "weekly": ALWAYS_OPEN},
                 "reassign_loop": False, "default_capacity": capacity},
        console={"create_initial_admin": False},
    )
    app = KizunaApp(settings, with_knowledge_base=False)
    apply_workarounds(app, workarounds)
    timings = instrument(app)
    await app.start()
    team: Advisors | None = None
    try:
        ids = []
        for j in range(advisors):
            aid = await app.accounts.create(AccountInput(
                username=f"adv{j:03d}", display_name=f"Advisor {j:03d}", languages=["en", "ja"],
                capacity=capacity))
            await app.handoff.set_shift(aid, True)
            ids.append(aid)
        team = Advisors(app, ids)
        team.start()
        started = time.time()
        await double.call("POST", "/start")
        expected_replies = 2 * customers
        deadline = started + timeout
        finished = False
        while time.time() < deadline:
            await asyncio.sleep(0.5)
            progress = await double.call("GET", "/progress")
            if progress["done"] >= customers and len(team.replies) >= team.enqueued and \
                    len(team.relayed) >= customers - progress["errors"]:
                finished = len(team.replies) >= expected_replies
                break
        wall = time.time() - started
        await asyncio.sleep(1.0)  # anything still in flight lands (and would count as a dup)
        stats = await double.call("GET", "/stats")
        async with app.db.session() as s:
            handoffs = (await s.execute(select(
                Handoff.conversation_id, Handoff.requested_at, Handoff.assigned_at))).all()
            chats = dict((await s.execute(
                select(Conversation.id, Chat.external_id)
                .join(Chat, Chat.id == Conversation.chat_id))).all())
            stored = (await s.execute(select(Message.text).where(
                Message.direction == MessageDirection.IN,
                Message.text.like("F% tok=CF-%")))).scalars().all()
        rate_limited = app.metrics.rate_limited.labels("telegram")._value.get()
    finally:
        if team is not None:
            await team.stop()
        await app.stop()
        await double.stop()
    result = analyse(label, customers, advisors, capacity, finished, wall, stats, team,
                     handoffs, chats, stored, rate_limited)
    result.update(request_p50=pct(timings["request"], 0.5),
                  request_p95=pct(timings["request"], 0.95),
                  routes=len(timings["held"]), route_mean=(
                      sum(timings["held"]) / len(timings["held"]) if timings["held"]
                      else math.nan), route_total=sum(timings["held"]),
                  route_wait_p50=pct(timings["route"], 0.5))
    return result


def analyse(label: str, customers: int, advisors: int, capacity: int, finished: bool,
            wall: float, stats: dict[str, Any], team: Advisors | None,
            handoffs: Any, chats: dict[int, str], stored: list[str],
            rate_limited: float) -> dict[str, Any]:
    assert team is not None
    assigned = [(a - r).total_seconds() for _, r, a in handoffs if a is not None]
    timeline = stats["timeline"]
    acks = [t["ack"] - t["pressed"] for t in timeline if "ack" in t]
    ack_texts = [t.get("ack_text", "") for t in timeline if "ack" in t]
    # deliveries of advisor replies, by token
    delivered: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
    for at, chat, text in stats["sent"]:
        m = ADVISOR_TOKEN.search(text)
        if m:
            delivered[(m.group(1), int(m.group(2)))].append((at, chat))
    reply_latency, lost, dups, wrong_chat, failed = [], 0, 0, 0, 0
    for r in team.replies:
        got = delivered.get((r["kind"], r["conv"]), [])
        if not r["ok"]:
            failed += 1
        if not got:
            lost += 1
            continue
        dups += len(got) - 1
        if any(str(chat) != chats.get(r["conv"]) for _, chat in got):
            wrong_chat += 1
        reply_latency.append(got[0][0] - r["called"])
    called = {(r["kind"], r["conv"]) for r in team.replies}
    unrequested = sum(1 for key in delivered if key not in called)
    # every customer should have had a greeting and an answer to their follow-up
    never_answered = sum(1 for conv, _, _ in handoffs for kind in ("A1", "A2")
                         if (kind, conv) not in called)
    never_assigned = sum(1 for _, _, a in handoffs if a is None)
    stored_counts = Counter(int(m.group(1)) for text in stored
                            if (m := FOLLOWUP.search(text)))
    follow_lost = sum(1 for i in range(customers) if stored_counts.get(i, 0) == 0)
    follow_dup = sum(c - 1 for c in stored_counts.values() if c > 1)
    relay_dup = sum(len(v) - 1 for v in team.relayed.values() if len(v) > 1)
    relay_lost = sum(1 for i in range(customers) if i not in team.relayed)
    sent_times = [at for at, _, _ in stats["sent"]]
    span = (max(sent_times) - min(sent_times)) if sent_times else 0.0
    return {
        "label": label, "customers": customers, "advisors": advisors, "capacity": capacity,
        "finished": finished, "wall": wall,
        "handoffs": len(handoffs), "never_assigned": never_assigned,
        "assign_p50": pct(assigned, 0.5), "assign_p95": pct(assigned, 0.95),
        "assign_max": max(assigned) if assigned else math.nan,
        "ack_p50": pct(acks, 0.5), "ack_p95": pct(acks, 0.95),
        "ack_assigned": sum(1 for t in ack_texts if "Advisor " in t),
        "ack_other": sum(1 for t in ack_texts if "Advisor " not in t),
        "advisor_before_ack": sum(1 for t in timeline if t.get("advisor_before_ack")),
        "reply_calls": len(team.replies), "reply_p50": pct(reply_latency, 0.5),
        "reply_p95": pct(reply_latency, 0.95),
        "reply_max": max(reply_latency) if reply_latency else math.nan,
        "replies_lost": lost, "replies_dup": dups, "replies_wrong_chat": wrong_chat,
        "replies_failed": failed, "replies_unrequested": unrequested,
        "never_answered": never_answered,
        "relay_p50": pct(team.relay_latency, 0.5), "relay_p95": pct(team.relay_latency, 0.95),
        "followups_stored_lost": follow_lost, "followups_stored_dup": follow_dup,
        "relay_lost": relay_lost, "relay_dup": relay_dup,
        "bot_sends": len(sent_times), "send_rate": len(sent_times) / span if span else 0.0,
        "send_span": span, "double_429": stats["too_many_requests"],
        "kizuna_429": rate_limited, "webhook_failures": stats["webhook_failures"],
        "webhook_dropped": stats["webhook_dropped"],
        "double_errors": len(stats["internal_errors"]) + len(stats["errors"]),
        "error_samples": (stats["errors"] + stats["internal_errors"] + team.errors)[:5],
    }


def table(results: list[dict[str, Any]]) -> str:
    def s(v: float) -> str:
        return "-" if v != v else f"{v:.2f}"

    def ms(v: float) -> str:
        return "-" if v != v else f"{v * 1000:.0f}"

    rows: list[tuple[str, Any]] = [
        ("customers / advisors (capacity each)",
         lambda r: f"{r['customers']:,} / {r['advisors']} ({r['capacity']})"),
        ("completed", lambda r: "yes" if r["finished"] else "**NO (timeout)**"),
        ("wall time, s", lambda r: f"{r['wall']:.1f}"),
        ("handoffs / never assigned", lambda r: f"{r['handoffs']:,} / {r['never_assigned']}"),
        ("handoff requested -> assigned p50 / p95 / max, ms",
         lambda r: f"{ms(r['assign_p50'])} / {ms(r['assign_p95'])} / {ms(r['assign_max'])}"),
        ("button pressed -> customer has the acknowledgement p50 / p95, s",
         lambda r: f"{s(r['ack_p50'])} / {s(r['ack_p95'])}"),
        ("acknowledgement says assigned / queued",
         lambda r: f"{r['ack_assigned']:,} / {r['ack_other']:,}"),
        ("advisor's greeting reached the customer before the acknowledgement",
         lambda r: f"{r['advisor_before_ack']:,}"),
        ("desk.request() duration p50 / p95, s (routing pass inside)",
         lambda r: f"{s(r['request_p50'])} / {s(r['request_p95'])}"),
        ("routing lock held (passes run one at a time): count x mean ms = total s",
         lambda r: f"{r['routes']:,} x {ms(r['route_mean'])} = {r['route_total']:.1f}"),
        ("route_waiting() call incl. waiting for the lock p50, s",
         lambda r: s(r["route_wait_p50"])),
        ("advisor reply call -> delivered at the double p50 / p95 / max, s",
         lambda r: f"{s(r['reply_p50'])} / {s(r['reply_p95'])} / {s(r['reply_max'])}"),
        ("customer message -> relayed to the desk (stored) p50 / p95, ms",
         lambda r: f"{ms(r['relay_p50'])} / {ms(r['relay_p95'])}"),
        ("advisor replies sent / lost / duplicated / wrong chat / failed",
         lambda r: f"{r['reply_calls']:,} / {r['replies_lost']} / {r['replies_dup']} / "
         f"{r['replies_wrong_chat']} / {r['replies_failed']}"),
        ("replies never made (no assignment or follow-up event) / delivered unasked",
         lambda r: f"{r['never_answered']} / {r['replies_unrequested']}"),
        ("customer follow-ups stored lost / dup; relayed lost / dup",
         lambda r: f"{r['followups_stored_lost']} / {r['followups_stored_dup']}; "
         f"{r['relay_lost']} / {r['relay_dup']}"),
        ("bot messages sent (all kinds), achieved msg/s",
         lambda r: f"{r['bot_sends']:,} in {r['send_span']:.1f} s = {r['send_rate']:.1f}/s"),
        ("429s from the double / retries in Kizuna",
         lambda r: f"{r['double_429']} / {r['kizuna_429']:.0f}"),
        ("webhook failures / dropped updates",
         lambda r: f"{r['webhook_failures']} / {r['webhook_dropped']}"),
    ]
    head = "| metric | " + " | ".join(r["label"] for r in results) + " |"
    lines = [head, "|---|" + "---|" * len(results)]
    for name, fn in rows:
        lines.append(f"| {name} | " + " | ".join(str(fn(r)) for r in results) + " |")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--advisors", type=int, default=50)
    parser.add_argument("--capacity", type=int, default=None,
                        help="open conversations per advisor (default: room for everyone, "
                        "at least 40)")
    parser.add_argument("--runs", default="real,global,off",
                        help="comma-separated: real, global, off (default: all three)")
    parser.add_argument("--pg", action="store_true",
                        help="PostgreSQL at 127.0.0.1:5432 (a fresh database per run)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per run before giving up (default: from the limits)")
    parser.add_argument("--workaround", action="append", default=[],
                        choices=("no-crm", "immediate"),
                        help="bench-only patches for the desk's concurrency problems (see "
                        "apply_workarounds); repeatable")
    args = parser.parse_args()
    workarounds = set(args.workaround)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        parser.error(f"--runs: unknown {unknown} (use {', '.join(RUNS)})")
    capacity = args.capacity or max(40, math.ceil(args.customers / args.advisors))
    logging.basicConfig(level=logging.ERROR)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in runs:
            global_rate = RUNS[name][3]
            # four bot messages per customer at the overall limit, one routing pass per
            # customer (they run one at a time), plus slack
            timeout = args.timeout or (4 * args.customers / min(global_rate, 500.0) * 1.5
                                       + 0.15 * args.customers + 120)
            pg = None
            if args.pg:
                pg = await pg_database()
                if pg is None:
                    print("PostgreSQL is not reachable on 127.0.0.1:5432", file=sys.stderr)
                    return 1
                url = pg[0]
            else:
                url = f"sqlite:///{tmp}/{name}.db"
            try:
                print(f"  running: {RUNS[name][0]} ({args.customers} customers, "
                      f"{args.advisors} advisors)...", file=sys.stderr, flush=True)
                result = await run_case(name, url, f"{tmp}/{name}", args.customers,
                                        args.advisors, capacity, timeout, workarounds)
            finally:
                if pg is not None:
                    await drop_pg(pg[1])
            results.append(result)
            for sample in result["error_samples"]:
                print(f"    error: {sample}", file=sys.stderr)
    backend = "PostgreSQL" if args.pg else "SQLite"
    patched = f", bench workarounds: {', '.join(sorted(workarounds))}" if workarounds else ""
    print(f"\nHandoff desk, {backend}, webhook mode, Bot API double in its own "
          f"process{patched}\n")
    print(table(results))
    bad = any(not r["finished"] or r["replies_lost"] or r["replies_dup"]
              or r["replies_wrong_chat"] or r["followups_stored_lost"]
              or r["followups_stored_dup"] or r["relay_lost"] or r["relay_dup"]
              for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
