"""Live updates: a WebSocket (``/console/ws``) forwarding the desk's inbox events.

The session is checked before the upgrade (and again at least every minute while the socket
is open; signing out closes it with code 4401). Each advisor gets only what their role lets
them see: managers and admins every event, an advisor the events of their own conversations
and of the queue they may take from, plus one last event when a conversation leaves their
view (transferred, taken by someone else) so the page can drop it.

Frames (server -> client, JSON): ``{"type": "ready"}`` once subscribed (the page reloads what
it shows), then the desk's events as published (``type``, ``conversation_id``, ``origin``...).
The client sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot.handoff.service import INBOX_TOPIC, HandoffService
from console.auth import Who
from console.site import Console

log = logging.getLogger(__name__)

HEARTBEAT = 30.0
SESSION_CHECK = 60.0  # seconds between session checks of an open socket
SIGNED_OUT = 4401  # close code: the session ended (the page goes to the login)


class EventFilter:
    """Which inbox events one advisor's socket may receive."""

    def __init__(self, desk: HandoffService, who: Who) -> None:
        self.desk = desk
        self.who = who
        self.known: set[int] = set()  # conversations this socket has been shown

    async def prime(self) -> None:
        if self.who.sees_everything:
            return
        views = [*await self.desk.queue(self.who.advisor_id),
                 *await self.desk.mine(self.who.advisor_id)]
        self.known = {v.conversation_id for v in views}

    async def allows(self, event: dict[str, Any]) -> bool:
        if self.who.sees_everything:
            return True
        me = self.who.advisor_id
        cid = event.get("conversation_id")
        if not isinstance(cid, int):
            return event.get("type") == "shift" and event.get("advisor_id") == me
        if event.get("advisor_id") == me or await self.desk.can_view(me, cid):
            self.known.add(cid)
            return True
        if cid in self.known:  # it just left this advisor's view: tell the page once
            self.known.discard(cid)
            return True
        return False


def register(c: Console) -> None:
    sockets: dict[str, set[web.WebSocketResponse]] = {}

    async def close_session(session_key: str) -> None:
        for ws in list(sockets.get(session_key, ())):
            with contextlib.suppress(Exception):
                await ws.close(code=SIGNED_OUT, message=b"signed out")

    c.logout_hooks.append(close_session)
    c.extras["live_sockets"] = sockets

    @c.socket("/ws")
    async def socket(request: web.Request, who: Who) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4096)
        await ws.prepare(request)
        sockets.setdefault(who.session_key, set()).add(ws)
        events = EventFilter(c.desk, who)
        lock = asyncio.Lock()

        async def send(frame: dict[str, Any]) -> None:
            if ws.closed:
                return
            async with lock:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(c.dumps(frame))

        async def pump() -> None:
            checked = time.monotonic()
            try:
                async for event in c.events.subscribe(INBOX_TOPIC):
                    if time.monotonic() - checked > SESSION_CHECK:
                        checked = time.monotonic()
                        if not await c.sessions.alive(who.session_key):
                            await ws.close(code=SIGNED_OUT, message=b"session ended")
                            return
                    try:
                        if await events.allows(event):
                            await send(event)
                    except Exception:
                        log.exception("console event filter failed")
            except Exception:  # the bus failed: close so the page reconnects afresh
                log.exception("console event subscription failed")
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"event bus failed")

        task = asyncio.create_task(pump())
        try:
            await asyncio.sleep(0)  # let the pump subscribe before the page reloads its data
            await events.prime()
            await send({"type": "ready"})
            async for msg in ws:
                if msg.type is WSMsgType.ERROR:
                    break
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            open_ = sockets.get(who.session_key)
            if open_ is not None:
                open_.discard(ws)
                if not open_:
                    sockets.pop(who.session_key, None)
        return ws
