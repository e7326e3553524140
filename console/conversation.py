"""One handed-off conversation: transcript, reply box (canned responses, agent assist, photo),
customer profile, notes, claim, transfer, resolve, and retry of a failed reply."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.core.types import Image
from bot.handoff.service import HandoffView, ReplyResult
from console.auth import Who
from console.html import Markup, escape, fmt, join, render
from console.inbox import view_json
from console.site import Console, ConsoleError, path_int
from console.uploads import read_reply_form
from models.advisors import Handoff
from models.conversation import Conversation, Message, MessageDirection

RECENT_ORDERS = 5
MAX_QUERY = 500


def _reply_json(result: ReplyResult) -> dict[str, Any]:
    return {"ok": result.ok, "message_id": result.message_id,
            "status": "sent" if result.ok else "failed", "error": result.error}


def permissions(view: HandoffView, who: Who) -> dict[str, bool]:
    """What the page offers (the desk checks every action again)."""
    mine = view.advisor_id == who.advisor_id
    open_ = view.status in ("waiting", "assigned")
    return {
        "may_reply": (view.status == "waiting") or (view.status == "assigned" and (
            mine or who.sees_everything)),
        "may_claim": view.status == "waiting" or (view.status == "assigned" and not mine
                                                  and who.sees_everything),
        "may_resolve": open_,
        "may_transfer": open_,
    }


def register(c: Console) -> None:
    async def visible(who: Who, conversation_id: int) -> HandoffView:
        if not await c.desk.can_view(who.advisor_id, conversation_id):
            raise ConsoleError(403, "this conversation is not yours to open")
        return await c.desk.view(conversation_id)

    async def transcript(who: Who, conversation_id: int) -> list[dict[str, Any]]:
        items = await c.desk.transcript(conversation_id, advisor_id=who.advisor_id)
        out_ids = [i.id for i in items if i.kind == "out"]
        advisor_ids: set[int] = set()
        if out_ids:
            async with c.db.session() as session:
                advisor_ids = set((await session.execute(select(Message.id).where(
                    Message.id.in_(out_ids), Message.sender.like("advisor:%")))).scalars())
        rows = []
        for item in items:
            row = item.to_dict()
            row["key"] = f"{'n' if item.kind == 'note' else 'm'}:{item.id}"
            if item.kind == "out":
                row["author"] = "advisor" if item.id in advisor_ids else "bot"
            else:
                row["author"] = {"in": "customer", "note": "note"}.get(item.kind, item.kind)
            row["retryable"] = item.kind == "out" and item.status == "failed" and \
                item.id in advisor_ids
            rows.append(row)
        return rows

    @c.page("/conversations/{conversation_id}")
    async def conversation_page(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        view = await visible(who, cid)
        profile = await c.desk.profile(view.contact_id) if view.contact_id else None
        canned = await c.desk.canned(view.language) if view.language else []
        if not canned:
            canned = await c.desk.canned()
        advisors = [a for a in await c.desk.advisors() if a.id != who.advisor_id]
        body = render(
            "conversation.html",
            customer=view.customer, platform=view.platform, language=view.language or "—",
            inbox=c.url("/"),
            canned=join(fmt('<option value="{}" data-text="{}">/{} ({})</option>',
                            r["id"], r["text"], r["shortcut"], r["language"]) for r in canned),
            canned_hidden="" if canned else "hidden",
            advisors=join(fmt('<option value="{}">{} — {} ({}/{})</option>', a.id,
                              a.display_name, "on shift" if a.on_shift else "off shift",
                              a.load, a.capacity) for a in advisors),
            profile=_profile_html(profile),
            max_upload=c.settings.max_upload_bytes,
        )
        return c.render(request, who, title=view.customer, body=body, page="conversation",
                        scripts=("conversation.js",),
                        data={"conversation-id": cid, "max-upload": c.settings.max_upload_bytes})

    @c.api("GET", "/api/conversations/{conversation_id}")
    async def conversation_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        view = await visible(who, cid)
        return c.json({"view": view_json(view), "transcript": await transcript(who, cid),
                       **permissions(view, who),
                       "me": {"id": who.advisor_id, "display_name": who.display_name}})

    @c.api("GET", "/api/conversations/{conversation_id}/suggestions")
    async def suggestions_api(request: web.Request, who: Who) -> web.StreamResponse:
        """Agent assist for the customer's latest question (or ``?q=`` the advisor typed)."""
        cid = path_int(request, "conversation_id")
        await visible(who, cid)
        question = request.query.get("q", "").strip()[:MAX_QUERY] or await assist_question(cid)
        found = await c.desk.suggestions(cid, question=question) if question else []
        return c.json({"question": question,
                       "suggestions": [{"key": s.key, "question": s.question,
                                        "answer": s.answer, "confidence": s.confidence}
                                       for s in found]})

    async def assist_question(cid: int) -> str | None:
        """The customer's latest question, passing over a plain request for a person (the
        handoff's own trigger text): "How much is shipping?" then "a human please" should
        suggest the shipping answer."""
        async with c.db.session() as session:
            conv = await session.get(Conversation, cid)
            if conv is None:
                return None
            texts = list((await session.execute(
                select(Message.text).where(Message.chat_id == conv.chat_id,
                                           Message.direction == MessageDirection.IN,
                                           Message.kind == "text")
                .order_by(Message.id.desc()).limit(5))).scalars())
            handoff = (await session.execute(
                select(Handoff.trigger, Handoff.question).where(Handoff.conversation_id == cid)
                .order_by(Handoff.id.desc()).limit(1))).first()
        texts = [t for t in texts if t and t.strip()]
        if handoff is not None and handoff.trigger == "request_human" and texts and \
                texts[0] == handoff.question:
            texts = texts[1:] or texts
        return texts[0] if texts else (handoff.question if handoff is not None else None)

    @c.api("GET", "/api/conversations/{conversation_id}/profile")
    async def profile_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        view = await visible(who, cid)
        if view.contact_id is None:
            raise ConsoleError(404, "this conversation has no known customer")
        return c.json(await c.desk.profile(view.contact_id))

    @c.api("POST", "/api/conversations/{conversation_id}/claim")
    async def claim_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        await visible(who, cid)
        return c.json({"view": view_json(await c.desk.claim(cid, who.advisor_id))})

    @c.api("POST", "/api/conversations/{conversation_id}/reply")
    async def reply_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        await visible(who, cid)
        image = None
        if request.content_type.startswith("multipart/"):
            text, upload = await read_reply_form(request,
                                                 max_bytes=c.settings.max_upload_bytes)
            if upload is not None:
                image = Image(data=upload.data, filename=upload.filename)
        else:
            value = (await c.json_body(request)).get("text")
            if not isinstance(value, str):
                raise ConsoleError(400, "text must be a string")
            text = value
        result = await c.desk.reply(cid, advisor_id=who.advisor_id, text=text, image=image)
        return c.json(_reply_json(result))

    @c.api("POST", "/api/messages/{message_id}/retry")
    async def retry_api(request: web.Request, who: Who) -> web.StreamResponse:
        message_id = path_int(request, "message_id")
        async with c.db.session() as session:
            cid = (await session.execute(select(Message.conversation_id).where(
                Message.id == message_id))).scalar_one_or_none()
        if cid is None:
            raise ConsoleError(404, "no such message")
        await visible(who, cid)
        result = await c.desk.retry(message_id, advisor_id=who.advisor_id)
        return c.json(_reply_json(result))

    @c.api("POST", "/api/conversations/{conversation_id}/notes")
    async def note_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        await visible(who, cid)
        text = (await c.json_body(request)).get("text")
        if not isinstance(text, str):
            raise ConsoleError(400, "text must be a string")
        return c.json({"note_id": await c.desk.note(cid, advisor_id=who.advisor_id,
                                                    text=text)})

    @c.api("POST", "/api/conversations/{conversation_id}/resolve")
    async def resolve_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        await visible(who, cid)
        return c.json({"view": view_json(await c.desk.resolve(cid,
                                                               advisor_id=who.advisor_id))})

    @c.api("POST", "/api/conversations/{conversation_id}/transfer")
    async def transfer_api(request: web.Request, who: Who) -> web.StreamResponse:
        cid = path_int(request, "conversation_id")
        await visible(who, cid)
        to = (await c.json_body(request)).get("to")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
            raise ConsoleError(400, "to must be an advisor id or null (back to the queue)")
        view = await c.desk.transfer(cid, by_advisor_id=who.advisor_id, to_advisor_id=to)
        return c.json({"view": view_json(view)})

    @c.api("GET", "/api/advisors")
    async def advisors_api(request: web.Request, who: Who) -> web.StreamResponse:
        return c.json({"advisors": [
            {"id": a.id, "display_name": a.display_name, "role": a.role,
             "languages": a.languages, "senior": a.senior, "on_shift": a.on_shift,
             "load": a.load, "capacity": a.capacity} for a in await c.desk.advisors()]})


def _profile_html(profile: dict[str, Any] | None) -> Markup:
    if profile is None:
        return Markup('<p class="muted">No customer record.</p>')
    rows: list[tuple[str, Any]] = [
        ("Name", profile.get("name") or "—"),
        ("Language", profile.get("language") or "—"),
        ("Platforms", ", ".join(i["platform"] + (f" @{i['username']}" if i.get("username")
                                                 else "")
                                for i in profile.get("identities", [])) or "—"),
        ("Handoffs", profile.get("handoffs", 0)),
        ("Own advisor", profile.get("own_advisor") or "—"),
        ("Customer since", str(profile.get("since", ""))[:10]),
    ]
    crm = profile.get("crm")
    extra = Markup("")
    if crm:
        ltv = (crm.get("ltv") or {}).get("ltv")
        rows += [
            ("Tier", crm.get("tier") or "—"),
            ("Member level", crm.get("member_level") or "—"),
            ("LTV", f"¥{ltv:,.0f}" if isinstance(ltv, int | float) else "—"),
            ("Orders", f"{crm.get('order_count', 0)} (¥{crm.get('total_spend', 0):,.0f})"),
        ]
        if crm.get("needs_care"):
            rows.append(("Care", Markup('<span class="badge senior">needs care</span>')))
        tags = crm.get("tags") or []
        if tags:
            rows.append(("Tags", fmt('<span class="tags">{}</span>', join(
                fmt('<span class="badge">{}</span>', t.get("tag")) for t in tags))))
        orders = (crm.get("recent_orders") or [])[:RECENT_ORDERS]
        if orders:
            extra = fmt('<h3>Recent orders</h3><table class="orders"><tbody>{}</tbody></table>',
                        join(fmt('<tr><td>{}</td><td class="num">¥{}</td><td>{}</td></tr>',
                                 str(o.get("ordered_at", ""))[:10],
                                 f"{float(o.get('amount') or 0):,.0f}",
                                 ", ".join(o.get("items") or []) or o.get("store") or "")
                             for o in orders))
    dl = fmt('<dl class="profile">{}</dl>',
             join(fmt("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in rows))
    return Markup(escape(dl) + extra)
