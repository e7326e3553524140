"""Canned responses: every advisor reads them (the reply box's picker); managers and admins
add, change and delete them (a page with plain forms, and the JSON API)."""

from __future__ import annotations

from aiohttp import web

from bot.core.i18n import LANGUAGES
from bot.handoff.service import HandoffError
from console.auth import Who
from console.html import Markup, fmt, join, render
from console.site import Console, ConsoleError, path_int
from models.advisors import Role


def _language(value: object) -> str:
    if value not in LANGUAGES:
        raise ConsoleError(400, f"language: one of {', '.join(LANGUAGES)}")
    return str(value)


def register(c: Console) -> None:
    async def page(request: web.Request, who: Who, *, message: str = "", shortcut: str = "",
                   language: str = "", text: str = "", status: int = 200) -> web.Response:
        rows = await c.desk.canned()
        body = render(
            "canned.html", action=c.url("/canned"), csrf=who.csrf_token,
            message=fmt('<p class="alert" role="alert">{}</p>', message) if message
            else Markup(""),
            shortcut=shortcut, text=text,
            languages=join(fmt('<option value="{}"{}>{}</option>', lang,
                               Markup(" selected") if lang == language else Markup(""), lang)
                           for lang in LANGUAGES),
            rows=join(fmt(
                '<tr><td>/{}</td><td>{}</td><td class="pre">{}</td><td>'
                '<form method="post" action="{}"><input type="hidden" name="csrf_token" '
                'value="{}"><button type="submit" class="small danger" '
                'data-confirm="Delete /{}?">Delete</button></form></td></tr>',
                r["shortcut"], r["language"], r["text"], c.url(f"/canned/{r['id']}/delete"),
                who.csrf_token, r["shortcut"]) for r in rows) if rows else Markup(
                '<tr><td colspan="4" class="muted">None yet.</td></tr>'))
        return c.render(request, who, title="Canned responses", body=body, page="canned",
                        status=status)

    @c.page("/canned", role=Role.MANAGER, nav="Canned responses")
    async def canned_page(request: web.Request, who: Who) -> web.StreamResponse:
        return await page(request, who)

    @c.page("/canned", role=Role.MANAGER, method="POST")
    async def canned_save(request: web.Request, who: Who) -> web.StreamResponse:
        form = await request.post()
        shortcut, language, text = (str(form.get(k) or "") for k in
                                    ("shortcut", "language", "text"))
        try:
            await c.desk.add_canned(shortcut, _language(language), text)
        except (HandoffError, ConsoleError) as exc:
            return await page(request, who, message=str(exc), shortcut=shortcut,
                              language=language, text=text, status=400)
        raise web.HTTPSeeOther(c.url("/canned"))

    @c.page("/canned/{canned_id}/delete", role=Role.MANAGER, method="POST")
    async def canned_delete(request: web.Request, who: Who) -> web.StreamResponse:
        await c.desk.delete_canned(path_int(request, "canned_id"))
        raise web.HTTPSeeOther(c.url("/canned"))

    @c.api("GET", "/api/canned")
    async def canned_list(request: web.Request, who: Who) -> web.StreamResponse:
        language = request.query.get("language") or None
        return c.json({"canned": await c.desk.canned(
            _language(language) if language else None)})

    @c.api("POST", "/api/canned", role=Role.MANAGER)
    async def canned_add(request: web.Request, who: Who) -> web.StreamResponse:
        data = await c.json_body(request)
        shortcut, text = data.get("shortcut"), data.get("text")
        if not isinstance(shortcut, str) or not isinstance(text, str):
            raise ConsoleError(400, "shortcut and text must be strings")
        canned_id = await c.desk.add_canned(shortcut, _language(data.get("language")), text)
        return c.json({"id": canned_id})

    @c.api("DELETE", "/api/canned/{canned_id}", role=Role.MANAGER)
    async def canned_remove(request: web.Request, who: Who) -> web.StreamResponse:
        if not await c.desk.delete_canned(path_int(request, "canned_id")):
            raise ConsoleError(404, "no such canned response")
        return c.json({"ok": True})
