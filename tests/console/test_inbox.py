"""The advisor inbox through HTTP: lists, who may open what, reply / retry / notes / transfer /
resolve, photo uploads, agent assist and the profile panel."""

from __future__ import annotations

import aiohttp

from bot.core.types import PermanentSendError
from tests.console.conftest import TOKEN, World

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32


async def test_inbox_lists_the_queue_my_conversations_and_all_open_for_managers(
        world: World) -> None:
    aiko, aiko_id = await world.signed_in("aiko", on_shift=True)
    first = await world.waiting("100", "Tom")  # routed to Aiko (the only one on shift)
    boss, _ = await world.signed_in("boss", role="manager")
    await world.desk.set_shift(aiko_id, False)
    second = await world.waiting("200", "Mia")  # nobody on shift: waits
    mine = await aiko.ok("GET", "/api/inbox")
    assert [v["conversation_id"] for v in mine["mine"]] == [first]
    assert [v["conversation_id"] for v in mine["queue"]] == [second]
    assert mine["queue"][0]["customer"] == "Mia" and "open" not in mine
    assert mine["me"]["on_shift"] is False
    managed = await boss.ok("GET", "/api/inbox")
    assert [v["conversation_id"] for v in managed["open"]] == [first, second]
    page = await (await aiko.client.get("/console/")).text()
    assert 'id="queue"' in page and "inbox.js" in page


async def test_an_advisor_cannot_open_another_advisors_conversation(world: World) -> None:
    aiko, _ = await world.signed_in("aiko", on_shift=True)
    conv = await world.waiting("100", "Tom")  # Aiko's now
    ken, _ = await world.signed_in("ken")
    boss, _ = await world.signed_in("boss", role="admin")
    assert (await ken.client.get(f"/console/conversations/{conv}")).status == 403
    for method, path, body in [
            ("GET", f"/api/conversations/{conv}", None),
            ("GET", f"/api/conversations/{conv}/suggestions", None),
            ("GET", f"/api/conversations/{conv}/profile", None),
            ("POST", f"/api/conversations/{conv}/reply", {"text": "hi"}),
            ("POST", f"/api/conversations/{conv}/notes", {"text": "hi"}),
            ("POST", f"/api/conversations/{conv}/claim", None),
            ("POST", f"/api/conversations/{conv}/resolve", None),
            ("POST", f"/api/conversations/{conv}/transfer", {"to": None})]:
        resp = await ken.api(method, path, body)
        assert resp.status == 403, (method, path)
    assert (await ken.client.get("/console/conversations/99999")).status == 403
    assert (await aiko.client.get(f"/console/conversations/{conv}")).status == 200
    assert (await boss.client.get(f"/console/conversations/{conv}")).status == 200
    assert "hi" not in world.platform.texts("100")  # nothing reached the customer


async def test_a_reply_reaches_the_customer_once_and_shows_once(world: World) -> None:
    aiko, aiko_id = await world.signed_in("aiko", display_name="Aiko")
    conv = await world.waiting("100", "Tom")
    before = len(world.platform.sent)
    seen: list[dict] = []

    async def listen(event: dict) -> None:
        seen.append(event)

    world.desk.listeners.append(listen)
    result = await aiko.ok("POST", f"/api/conversations/{conv}/reply",
                           {"text": "Hello Tom, I'm Aiko."})  # replying takes it
    assert result["ok"] and result["status"] == "sent"
    assert world.platform.texts("100")[before:] == ["Hello Tom, I'm Aiko."]
    data = await aiko.ok("GET", f"/api/conversations/{conv}")
    assert data["view"]["advisor_id"] == aiko_id and data["view"]["status"] == "assigned"
    ours = [i for i in data["transcript"] if i["text"] == "Hello Tom, I'm Aiko."]
    assert len(ours) == 1 and ours[0]["key"] == f"m:{result['message_id']}"
    assert ours[0]["author"] == "advisor" and ours[0]["sender"] == "Aiko"
    out = [e for e in seen if e["type"] == "message"]
    assert [(e["origin"], e["message_id"]) for e in out] == [("console", result["message_id"])]
    empty = await aiko.api("POST", f"/api/conversations/{conv}/reply", {"text": "  "})
    assert empty.status == 400


async def test_a_failed_reply_is_marked_failed_and_retry_sends_it(world: World) -> None:
    aiko, _ = await world.signed_in("aiko", on_shift=True)
    conv = await world.waiting("100", "Tom")
    world.platform.failures.append(PermanentSendError(f"bot{TOKEN}: chat is unreachable"))
    result = await aiko.ok("POST", f"/api/conversations/{conv}/reply", {"text": "Are you there?"})
    assert not result["ok"] and result["status"] == "failed"
    assert TOKEN not in str(result["error"])  # an error text never carries the bot token
    data = await aiko.ok("GET", f"/api/conversations/{conv}")
    [item] = [i for i in data["transcript"] if i["text"] == "Are you there?"]
    assert item["status"] == "failed" and item["retryable"]
    assert not any(i["retryable"] for i in data["transcript"] if i is not item)
    again = await aiko.ok("POST", f"/api/messages/{result['message_id']}/retry")
    assert again == {"ok": True, "message_id": result["message_id"], "status": "sent",
                     "error": None}
    assert world.platform.texts("100")[-1] == "Are you there?"
    data = await aiko.ok("GET", f"/api/conversations/{conv}")
    [item] = [i for i in data["transcript"] if i["text"] == "Are you there?"]
    assert item["status"] == "sent" and not item["retryable"]
    assert (await aiko.api("POST", f"/api/messages/{result['message_id']}/retry")).status == 400
    ken, _ = await world.signed_in("ken")
    assert (await ken.api("POST", f"/api/messages/{result['message_id']}/retry")).status == 403


async def test_notes_transfer_and_resolve(world: World) -> None:
    aiko, aiko_id = await world.signed_in("aiko", on_shift=True)
    ken, ken_id = await world.signed_in("ken", display_name="Ken")
    conv = await world.waiting("100", "Tom")
    sent = len(world.platform.sent)
    note = await aiko.ok("POST", f"/api/conversations/{conv}/notes", {"text": "VIP, be kind"})
    data = await aiko.ok("GET", f"/api/conversations/{conv}")
    [n] = [i for i in data["transcript"] if i["kind"] == "note"]
    assert n["key"] == f"n:{note['note_id']}" and n["text"] == "VIP, be kind"
    assert len(world.platform.sent) == sent  # a note never reaches the customer
    moved = await aiko.ok("POST", f"/api/conversations/{conv}/transfer", {"to": ken_id})
    assert moved["view"]["advisor_id"] == ken_id
    assert (await aiko.api("GET", f"/api/conversations/{conv}")).status == 403
    back = await ken.ok("POST", f"/api/conversations/{conv}/transfer", {"to": None})
    assert back["view"]["status"] in ("waiting", "assigned")  # Aiko is on shift: routed again
    bad = await ken.api("POST", f"/api/conversations/{conv}/transfer", {"to": "ken"})
    assert bad.status in (400, 403)
    owner = aiko if back["view"]["advisor_id"] == aiko_id else ken
    done = await owner.ok("POST", f"/api/conversations/{conv}/resolve")
    assert done["view"]["status"] == "resolved"
    assert any("How satisfied" in t for t in world.platform.texts("100")[sent:])  # CSAT
    again = await owner.api("POST", f"/api/conversations/{conv}/resolve")
    assert again.status == 403
    recent = await owner.ok("GET", "/api/inbox")
    assert [v["conversation_id"] for v in recent["recent"]] == [conv]


async def test_claim_takes_a_waiting_conversation(world: World) -> None:
    conv = await world.waiting("100", "Tom")
    aiko, aiko_id = await world.signed_in("aiko")
    page = await aiko.client.get(f"/console/conversations/{conv}")
    assert page.status == 200  # the queue is open to every advisor
    claimed = await aiko.ok("POST", f"/api/conversations/{conv}/claim")
    assert claimed["view"]["advisor_id"] == aiko_id
    ken, _ = await world.signed_in("ken")
    assert (await ken.api("POST", f"/api/conversations/{conv}/claim")).status == 403


async def test_photo_replies_are_checked_by_type_and_size(world: World) -> None:
    aiko, _ = await world.signed_in("aiko", on_shift=True)
    conv = await world.waiting("100", "Tom")

    def form(data: bytes, filename: str, text: str = "Here it is") -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("text", text)
        f.add_field("image", data, filename=filename, content_type="image/png")
        return f

    ok = await aiko.ok("POST", f"/api/conversations/{conv}/reply", data=form(PNG, "a.png"))
    assert ok["ok"]
    image = world.platform.sent[-1].message.image
    assert image is not None and image.data == PNG and image.filename == "photo.png"
    ok = await aiko.ok("POST", f"/api/conversations/{conv}/reply", data=form(WEBP, "x.bin"))
    assert world.platform.sent[-1].message.image.filename == "photo.webp"
    fake = await aiko.api("POST", f"/api/conversations/{conv}/reply",
                          data=form(b"<svg onload=alert(1)>", "evil.png"))
    assert fake.status == 415 and "PNG, JPEG, WebP or GIF" in (await fake.json())["error"]
    big = await aiko.api("POST", f"/api/conversations/{conv}/reply",
                         data=form(PNG + b"\x00" * 5000, "big.png"))  # limit: 4096 bytes
    assert big.status == 413
    no_csrf = await aiko.api("POST", f"/api/conversations/{conv}/reply",
                             data=form(PNG, "a.png"), csrf=False)
    assert no_csrf.status == 403
    text_only = await aiko.ok("POST", f"/api/conversations/{conv}/reply",
                              data=form(b"", "", text="Just text"))
    assert text_only["ok"] and world.platform.sent[-1].message.image is None


async def test_profile_canned_responses_and_assist_without_a_knowledge_base(
        world: World) -> None:
    aiko, _ = await world.signed_in("aiko", on_shift=True)
    conv = await world.waiting("100", "Tom <script>")
    await world.desk.add_canned("hello", "en", "Hello! How can I help <you>?")
    page = await (await aiko.client.get(f"/console/conversations/{conv}")).text()
    assert "Tom &lt;script&gt;" in page and "<script>" not in page.replace(
        "<script src=", "")
    assert 'data-text="Hello! How can I help &lt;you&gt;?"' in page
    assert "/hello (en)" in page
    profile = await aiko.ok("GET", f"/api/conversations/{conv}/profile")
    assert profile["name"] == "Tom <script>" and profile["identities"][0]["platform"] == "fake"
    assist = await aiko.ok("GET", f"/api/conversations/{conv}/suggestions")
    assert assist == {"question": "Where is my order?", "suggestions": []}  # no KB here
    advisors = await aiko.ok("GET", "/api/advisors")
    assert [a["display_name"] for a in advisors["advisors"]] == ["Aiko"]
    assert "password_hash" not in str(advisors)
