"""The inbox: the queue, "my conversations", every open one (managers and admins), recently
resolved ones, and the advisor's shift switch."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.handoff.service import HandoffView
from console.auth import Who
from console.html import render
from console.site import Console, ConsoleError

RECENT = 20


def view_json(v: HandoffView) -> dict[str, Any]:
    out = v.to_dict()
    out.pop("forum_thread_id", None)
    return out


def register(c: Console) -> None:
    @c.page("/", nav="Inbox")
    async def inbox_page(request: web.Request, who: Who) -> web.StreamResponse:
        body = render("inbox.html", all_hidden="" if who.sees_everything else "hidden")
        return c.render(request, who, title="Inbox", body=body, page="inbox",
                        scripts=("inbox.js",))

    @c.api("GET", "/api/inbox")
    async def inbox_api(request: web.Request, who: Who) -> web.StreamResponse:
        desk = c.desk
        out: dict[str, Any] = {
            "queue": [view_json(v) for v in await desk.queue(who.advisor_id)],
            "mine": [view_json(v) for v in await desk.mine(who.advisor_id)],
            "recent": [view_json(v) for v in await desk.recent(
                RECENT, advisor_id=None if who.sees_everything else who.advisor_id)],
        }
        if who.sees_everything:
            out["open"] = [view_json(v) for v in await desk.open_conversations()]
        me = await desk.advisor(who.advisor_id)
        out["me"] = {"id": me.id, "display_name": me.display_name, "role": me.role,
                     "on_shift": me.on_shift, "load": me.load, "capacity": me.capacity}
        return c.json(out)

    @c.api("POST", "/api/shift")
    async def shift_api(request: web.Request, who: Who) -> web.StreamResponse:
        data = await c.json_body(request)
        on = data.get("on_shift")
        if not isinstance(on, bool):
            raise ConsoleError(400, "on_shift must be true or false")
        await c.desk.set_shift(who.advisor_id, on)
        return c.json({"on_shift": on})
