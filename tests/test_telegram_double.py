"""Tests of the Telegram Bot API double itself (tests/doubles/telegram_api.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

try:
    from tests.doubles.telegram_api import (
        SECRET_HEADER,
        BotAPIDouble,
        FloodLimits,
        ManualClock,
        parse_html,
        parse_markdown_v2,
    )
except ModuleNotFoundError:  # pragma: no cover - when tests/ is not a package on sys.path
    from doubles.telegram_api import (  # type: ignore[no-redef]
        SECRET_HEADER,
        BotAPIDouble,
        FloodLimits,
        ManualClock,
        parse_html,
        parse_markdown_v2,
    )

TOKEN = "123456:TEST-TOKEN"


# ------------------------------------------------------------------------------------------
# fixtures & helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
async def tg() -> AsyncIterator[BotAPIDouble]:
    async with BotAPIDouble(limits=FloodLimits.off()) as double:
        yield double


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    tg: BotAPIDouble,
    method: str,
    payload: dict[str, Any] | None = None,
    *,
    token: str = TOKEN,
    form: Any = None,
    verb: str = "POST",
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    url = f"{tg.base_url}/bot{token}/{method}"
    kwargs: dict[str, Any] = {"params": params}
    if form is not None:
        kwargs["data"] = form
    elif payload is not None:
        kwargs["json"] = payload
    async with http.request(verb, url, **kwargs) as resp:
        return resp.status, await resp.json()


def err(status: int, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"ok": False, "error_code": status, "description": description}


async def wait_until(predicate, timeout: float = 2.0) -> None:
    """Wait for a condition set by another task (not for time to pass)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.002)


def world(tg: BotAPIDouble, **bot_kwargs: Any):
    bot = tg.add_bot(TOKEN, **bot_kwargs)
    aiko = tg.add_user("Aiko", username="aiko")
    return bot, aiko


@asynccontextmanager
async def webhook_receiver(statuses: list[int] | None = None, reply: Any = None):
    """A tiny aiohttp app recording webhook POSTs; answers with ``statuses`` first."""
    received: list[tuple[str | None, dict[str, Any]]] = []
    arrived = asyncio.Event()
    statuses = list(statuses or [])

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        status = statuses.pop(0) if statuses else 200
        if status == 200:
            received.append((request.headers.get(SECRET_HEADER), body))
            arrived.set()
            if reply is not None:
                return web.json_response(reply(body))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received, arrived
    finally:
        await runner.cleanup()


async def wait_received(received: list, arrived: asyncio.Event, count: int) -> None:
    while len(received) < count:
        arrived.clear()
        await asyncio.wait_for(arrived.wait(), 5)


# ------------------------------------------------------------------------------------------
# envelopes, auth, parameter formats
# ------------------------------------------------------------------------------------------


async def test_envelopes_auth_and_param_formats(tg, http):
    bot, aiko = world(tg)
    status, body = await call(http, tg, "getMe")
    assert status == 200 and body["ok"] is True
    assert body["result"]["id"] == 123456 and body["result"]["is_bot"] is True
    assert body["result"]["username"] == "kizuna_test_bot"
    assert body["result"]["can_read_all_group_messages"] is False

    assert await call(http, tg, "getMe", token="999:WRONG") == err(401, "Unauthorized")
    assert await call(http, tg, "sendMessagez") == err(404, "Not Found")
    assert await call(http, tg, "getme", verb="GET") == (200, body)  # case-insensitive, GET

    async with http.post(
        f"{tg.base_url}/bot{TOKEN}/sendMessage",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["description"].startswith("Bad Request:")

    await tg.user_sends(aiko, "/start")
    # query string, urlencoded form and JSON all work
    s1, b1 = await call(http, tg, "sendMessage", params={"chat_id": str(aiko.id), "text": "q"})
    s2, b2 = await call(http, tg, "sendMessage", form={"chat_id": str(aiko.id), "text": "f"})
    s3, b3 = await call(http, tg, "sendMessage", {"chat_id": aiko.id, "text": "j"})
    assert (s1, s2, s3) == (200, 200, 200)
    assert [b["result"]["text"] for b in (b1, b2, b3)] == ["q", "f", "j"]
    ids = [b["result"]["message_id"] for b in (b1, b2, b3)]
    assert ids == sorted(set(ids)) and ids[0] == 2  # /start was message 1 of this chat
    assert b1["result"]["from"]["id"] == bot.id
    assert b1["result"]["chat"] == {
        "id": aiko.id,
        "type": "private",
        "first_name": "Aiko",
        "username": "aiko",
    }
    assert [m["text"] for m in tg.sent_messages(aiko.id)] == ["q", "f", "j"]
    assert len(tg.calls("sendmessage")) == 3
    assert tg.stats.calls["sendMessage"] == 3

    async with http.get(f"{tg.base_url}/file/bot{TOKEN}/photos/nothing.jpg") as resp:
        assert resp.status == 404
    assert tg.internal_errors == []


async def test_send_message_validation_errors(tg, http):
    bot, aiko = world(tg)
    stranger = tg.add_user("Ren")
    await tg.user_sends(aiko, "/start")
    cid = aiko.id
    assert await call(http, tg, "sendMessage", {"text": "x"}) == err(
        400, "Bad Request: chat_id is empty"
    )
    assert await call(http, tg, "sendMessage", {"chat_id": cid}) == err(
        400, "Bad Request: message text is empty"
    )
    assert await call(http, tg, "sendMessage", {"chat_id": cid, "text": "  \n "}) == err(
        400, "Bad Request: message text is empty"
    )
    assert await call(http, tg, "sendMessage", {"chat_id": 42, "text": "x"}) == err(
        400, "Bad Request: chat not found"
    )
    assert await call(http, tg, "sendMessage", {"chat_id": stranger.id, "text": "x"}) == err(
        403, "Forbidden: bot can't initiate conversation with a user"
    )
    # length is counted in UTF-16 code units of the visible text
    ok = await call(http, tg, "sendMessage", {"chat_id": cid, "text": "a" * 4096})
    assert ok[0] == 200
    too_long = err(400, "Bad Request: message is too long")
    assert await call(http, tg, "sendMessage", {"chat_id": cid, "text": "a" * 4097}) == too_long
    assert await call(http, tg, "sendMessage", {"chat_id": cid, "text": "😀" * 2049}) == too_long
    html_4096 = {"chat_id": cid, "text": "<b>" + "a" * 4096 + "</b>", "parse_mode": "HTML"}
    assert (await call(http, tg, "sendMessage", html_4096))[0] == 200

    status, body = await call(
        http, tg, "sendMessage", {"chat_id": cid, "text": "<b>bold", "parse_mode": "HTML"}
    )
    assert (status, body["description"]) == (
        400,
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
    )
    status, body = await call(
        http, tg, "sendMessage", {"chat_id": cid, "text": "<blink>x</blink>", "parse_mode": "HTML"}
    )
    assert body["description"] == (
        'Bad Request: can\'t parse entities: Unsupported start tag "blink" at byte offset 0'
    )
    status, body = await call(
        http, tg, "sendMessage", {"chat_id": cid, "text": "Hi.", "parse_mode": "MarkdownV2"}
    )
    assert body["description"] == (
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with "
        "the preceding '\\'"
    )

    def kb(*buttons: dict) -> dict:
        return {"chat_id": cid, "text": "k", "reply_markup": {"inline_keyboard": [list(buttons)]}}

    assert await call(
        http, tg, "sendMessage", kb({"text": "a", "callback_data": "x" * 65})
    ) == err(400, "Bad Request: BUTTON_DATA_INVALID")
    assert await call(
        http, tg, "sendMessage", kb({"text": "a", "callback_data": "x", "url": "https://a.b"})
    ) == err(400, "Bad Request: BUTTON_DATA_INVALID")
    assert await call(http, tg, "sendMessage", kb({"text": "a"})) == err(
        400,
        "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the "
        "inline keyboard",
    )
    assert await call(http, tg, "sendMessage", kb({"callback_data": "x"})) == err(
        400, "Bad Request: can't parse inline keyboard button: Can't find field \"text\""
    )
    status, body = await call(
        http,
        tg,
        "sendMessage",
        kb({"text": "あ", "callback_data": "x" * 64}, {"text": "u", "url": "https://k.jp"}),
    )
    assert status == 200
    assert body["result"]["reply_markup"]["inline_keyboard"][0][1] == {
        "text": "u",
        "url": "https://k.jp",
    }
    # replies
    assert await call(
        http, tg, "sendMessage", {"chat_id": cid, "text": "r", "reply_to_message_id": 999}
    ) == err(400, "Bad Request: message to be replied not found")
    status, body = await call(
        http,
        tg,
        "sendMessage",
        {"chat_id": cid, "text": "r", "reply_parameters": {"message_id": 1}},
    )
    assert body["result"]["reply_to_message"]["text"] == "/start"
    status, body = await call(
        http,
        tg,
        "sendMessage",
        {
            "chat_id": cid,
            "text": "r",
            "reply_parameters": {"message_id": 999, "allow_sending_without_reply": True},
        },
    )
    assert status == 200 and "reply_to_message" not in body["result"]
    assert tg.internal_errors == []


def test_entity_parsers_use_utf16_offsets():
    text, ents = parse_html(
        '😀 <b>太字 <i>x</i></b> &lt;3 <a href="https://e.jp/?a=1&amp;b=2">link</a>'
        ' <pre><code class="language-py">p</code></pre>'
    )
    assert text == "😀 太字 x <3 link p"
    assert ents == [
        {"type": "bold", "offset": 3, "length": 4},
        {"type": "italic", "offset": 6, "length": 1},
        {"type": "text_link", "offset": 11, "length": 4, "url": "https://e.jp/?a=1&b=2"},
        {"type": "pre", "offset": 16, "length": 1, "language": "py"},
    ]
    text, ents = parse_markdown_v2("*b* _i_ __u__ ~s~ ||sp|| `c\\`` [t](https://x.y/\\)) 1\\.")
    assert text == "b i u s sp c` t 1."
    assert [e["type"] for e in ents] == [
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "code",
        "text_link",
    ]
    assert ents[-1]["url"] == "https://x.y/)"


async def test_user_message_entities_are_computed_like_telegram(tg):
    bot, aiko = world(tg)
    msg = await tg.user_sends(aiko, "/start@kizuna_test_bot 😀 hi @some_user x@y.z /help")
    assert msg["entities"] == [
        {"type": "bot_command", "offset": 0, "length": 22},
        {"type": "mention", "offset": 29, "length": 10},
        {"type": "bot_command", "offset": 46, "length": 5},
    ]
    assert msg["from"] == {
        "id": aiko.id,
        "is_bot": False,
        "first_name": "Aiko",
        "username": "aiko",
        "language_code": "ja",
    }
    assert "entities" not in await tg.user_sends(aiko, "こんにちは")


# ------------------------------------------------------------------------------------------
# polling
# ------------------------------------------------------------------------------------------


async def test_long_poll_returns_on_arrival_and_offset_confirms(tg, http):
    bot, aiko = world(tg)
    started = time.monotonic()
    poll = asyncio.create_task(call(http, tg, "getUpdates", {"timeout": 30}))
    await wait_until(lambda: bot._poller is not None)
    msg = await tg.user_sends(aiko, "hello")
    status, body = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 5
    assert status == 200
    [update] = body["result"]
    assert update["message"] == msg
    first_id = update["update_id"]

    await tg.user_sends(aiko, "second")
    _, body = await call(http, tg, "getUpdates", {"timeout": 0})
    assert [u["update_id"] for u in body["result"]] == [first_id, first_id + 1]  # unconfirmed
    _, body = await call(http, tg, "getUpdates", {"offset": first_id + 1, "limit": 1})
    assert [u["message"]["text"] for u in body["result"]] == ["second"]
    _, body = await call(http, tg, "getUpdates", {"offset": first_id + 2})
    assert body["result"] == [] and bot.pending_update_count == 0

    # a second poller terminates the first one, like Telegram
    first = asyncio.create_task(call(http, tg, "getUpdates", {"timeout": 30}))
    await wait_until(lambda: bot._poller is not None)
    second = asyncio.create_task(call(http, tg, "getUpdates", {"timeout": 30}))
    assert await asyncio.wait_for(first, 5) == err(  # returns once `second` has taken over
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot "
        "instance is running",
    )
    await tg.user_sends(aiko, "third")
    status, body = await asyncio.wait_for(second, 5)
    assert body["result"][0]["message"]["text"] == "third"


async def test_allowed_updates_and_raw_updates(tg, http):
    bot, aiko = world(tg)
    _, body = await call(http, tg, "getUpdates", {"allowed_updates": ["callback_query"]})
    await tg.user_sends(aiko, "ignored")  # filtered at creation time, like Telegram
    uid = await tg.send_raw_update(bot, {"weird_update": {"x": 1}})
    _, body = await call(http, tg, "getUpdates", {"allowed_updates": []})
    assert body["result"] == [{"update_id": uid, "weird_update": {"x": 1}}]
    # default set excludes chat_member
    group = tg.create_group("G", [aiko])
    tg.add_bot_to_group(bot, group, by=aiko, admin=True)
    ren = tg.add_user("Ren")
    await tg.user_joins(ren, group)
    kinds = [next(k for k in u if k != "update_id") for u in tg.pending_updates(bot)]
    assert kinds == ["weird_update", "my_chat_member", "message", "message"]
    bot._set_allowed(["message", "chat_member"])
    await tg.user_leaves(ren, group)
    kinds = [next(k for k in u if k != "update_id") for u in tg.pending_updates(bot)][4:]
    assert kinds == ["chat_member", "message"]


# ------------------------------------------------------------------------------------------
# webhooks
# ------------------------------------------------------------------------------------------


async def test_webhook_delivery_with_secret_retry_and_conflict(http):
    async with (
        BotAPIDouble(limits=FloodLimits.off(), webhook_retry_delay=0.01) as tg,
        webhook_receiver(statuses=[500]) as (url, received, arrived),
    ):
        bot, aiko = world(tg)
        await tg.user_sends(aiko, "before webhook")  # pending updates are delivered too
        status, body = await call(
            http,
            tg,
            "setWebhook",
            {"url": url, "secret_token": "s3cr3t_-", "max_connections": 4},
        )
        assert (status, body) == (
            200,
            {"ok": True, "result": True, "description": "Webhook was set"},
        )
        for i in range(5):
            await tg.user_sends(aiko, f"m{i}")
        await wait_received(received, arrived, 6)
        assert {secret for secret, _ in received} == {"s3cr3t_-"}
        # a single chat's updates stay in order even with retries and several connections
        assert [u["message"]["text"] for _, u in received] == [
            "before webhook",
            "m0",
            "m1",
            "m2",
            "m3",
            "m4",
        ]
        assert tg.stats.webhook_failures == 1
        assert tg.webhook_failures[0]["error"] == (
            "Wrong response from the webhook: 500 Internal Server Error"
        )
        assert await call(http, tg, "getUpdates") == err(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
            "to delete the webhook first",
        )
        _, info = await call(http, tg, "getWebhookInfo")
        assert info["result"]["url"] == url
        assert info["result"]["max_connections"] == 4
        assert info["result"]["pending_update_count"] == 0
        assert "last_error_message" in info["result"]
        assert await call(http, tg, "setWebhook", {"url": "ftp://x"}) == err(
            400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
        )
        _, body = await call(http, tg, "deleteWebhook")
        assert body["description"] == "Webhook was deleted"
        await tg.user_sends(aiko, "after")
        _, body = await call(http, tg, "getUpdates")
        assert [u["message"]["text"] for u in body["result"]] == ["after"]


async def test_webhook_reply_method_is_executed(http):
    def reply(update: dict) -> dict:
        msg = update["message"]
        return {
            "method": "sendMessage",
            "chat_id": msg["chat"]["id"],
            "text": "echo " + msg["text"],
        }

    async with (
        BotAPIDouble(limits=FloodLimits.off()) as tg,
        webhook_receiver(reply=reply) as (url, received, arrived),
    ):
        bot, aiko = world(tg)
        await call(http, tg, "setWebhook", {"url": url})
        await tg.user_sends(aiko, "hi")
        [sent] = await tg.wait_for_sent(1, chat_id=aiko.id)
        assert sent["text"] == "echo hi"


async def test_webhook_connection_errors_are_retried_then_dropped(http):
    async with BotAPIDouble(
        limits=FloodLimits.off(), webhook_retry_delay=0.001, webhook_max_retries=2
    ) as tg:
        bot, aiko = world(tg)
        with socket.socket() as sock:  # a free port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        await call(http, tg, "setWebhook", {"url": f"http://127.0.0.1:{port}/hook"})
        await tg.user_sends(aiko, "lost")
        await wait_until(lambda: tg.stats.webhook_dropped == 1, timeout=5)
        assert tg.stats.webhook_failures == 3
        assert tg.webhook_failures[0]["error"] == "Connection refused"
        _, info = await call(http, tg, "getWebhookInfo")
        assert info["result"]["last_error_message"] == "Connection refused"
        assert info["result"]["pending_update_count"] == 0


# ------------------------------------------------------------------------------------------
# privacy mode, membership, blocking
# ------------------------------------------------------------------------------------------


async def test_privacy_mode_in_groups(tg, http):
    bot, aiko = world(tg)
    other = tg.add_bot("777:OTHER", username="other_bot", can_read_all_group_messages=True)
    group = tg.create_group("Kizuna fans", [aiko])
    tg.add_bot_to_group(bot, group, by=aiko)
    tg.add_bot_to_group(other, group, by=aiko)
    bot._pending.clear()
    other._pending.clear()

    await tg.user_sends(aiko, "just chatting", chat=group)
    await tg.user_sends(aiko, "/help", chat=group)
    await tg.user_sends(aiko, "/help@other_bot", chat=group)
    await tg.user_sends(aiko, "/help@Kizuna_Test_Bot now", chat=group)
    await tg.user_sends(aiko, "hey @kizuna_test_bot!", chat=group)
    await tg.user_sends(aiko, "hey @kizuna_test_bot_fan", chat=group)
    _, body = await call(http, tg, "sendMessage", {"chat_id": group.id, "text": "I am here"})
    await tg.user_sends(aiko, "a reply", chat=group, reply_to=body["result"]["message_id"])

    seen = [u["message"]["text"] for u in tg.pending_updates(bot)]
    assert seen == ["/help", "/help@Kizuna_Test_Bot now", "hey @kizuna_test_bot!", "a reply"]
    # a bot with privacy mode disabled sees all user messages, but never other bots' messages
    assert len(tg.pending_updates(other)) == 7

    tg.add_bot_to_group(bot, group, by=aiko, admin=True)  # admins see everything
    [promotion] = tg.pending_updates(bot)[4:]
    assert promotion["my_chat_member"]["new_chat_member"]["status"] == "administrator"
    await tg.user_sends(aiko, "plain again", chat=group)
    assert tg.pending_updates(bot)[-1]["message"]["text"] == "plain again"


async def test_group_membership_and_forbidden_errors(tg, http):
    bot, aiko = world(tg)
    group = tg.create_group("G", [aiko])
    basic = tg.create_group("Basic", [aiko], supergroup=False)
    assert await call(http, tg, "sendMessage", {"chat_id": group.id, "text": "x"}) == err(
        400, "Bad Request: chat not found"
    )
    tg.add_bot_to_group(bot, group, by=aiko)
    tg.add_bot_to_group(bot, basic, by=aiko)
    [added, service, *_] = tg.pending_updates(bot)
    change = added["my_chat_member"]
    assert change["from"]["id"] == aiko.id
    assert change["old_chat_member"]["status"] == "left"
    assert change["new_chat_member"] == {"status": "member", "user": bot.as_dict()}
    assert service["message"]["new_chat_members"] == [bot.as_dict()]
    assert (await call(http, tg, "sendMessage", {"chat_id": group.id, "text": "x"}))[0] == 200

    _, body = await call(http, tg, "getChatMember", {"chat_id": group.id, "user_id": aiko.id})
    assert body["result"]["status"] == "creator"
    _, body = await call(http, tg, "getChatMemberCount", {"chat_id": group.id})
    assert body["result"] == 2
    _, body = await call(http, tg, "getChat", {"chat_id": group.id})
    assert body["result"]["type"] == "supergroup" and body["result"]["title"] == "G"

    tg.remove_bot_from_group(bot, group, by=aiko)
    tg.remove_bot_from_group(bot, basic, by=aiko)
    removed = tg.pending_updates(bot)[-2]["my_chat_member"]
    assert removed["new_chat_member"] == {
        "status": "kicked",
        "user": bot.as_dict(),
        "until_date": 0,
    }
    assert await call(http, tg, "sendMessage", {"chat_id": group.id, "text": "x"}) == err(
        403, "Forbidden: bot was kicked from the supergroup chat"
    )
    assert await call(http, tg, "sendMessage", {"chat_id": basic.id, "text": "x"}) == err(
        403, "Forbidden: bot was kicked from the group chat"
    )
    other = tg.create_group("Other", [aiko])
    tg.add_bot_to_group(bot, other, by=aiko)
    assert (await call(http, tg, "leaveChat", {"chat_id": other.id}))[0] == 200
    assert await call(
        http, tg, "sendChatAction", {"chat_id": other.id, "action": "typing"}
    ) == err(403, "Forbidden: bot is not a member of the supergroup chat")


async def test_block_and_unblock(tg, http):
    bot, aiko = world(tg)
    await tg.user_sends(aiko, "/start")
    tg.user_blocks_bot(aiko, bot)
    update = tg.pending_updates(bot)[-1]["my_chat_member"]
    assert update["chat"]["type"] == "private" and update["from"]["id"] == aiko.id
    assert update["old_chat_member"]["status"] == "member"
    assert update["new_chat_member"]["status"] == "kicked"
    blocked = err(403, "Forbidden: bot was blocked by the user")
    assert await call(http, tg, "sendMessage", {"chat_id": aiko.id, "text": "x"}) == blocked
    assert (
        await call(http, tg, "sendChatAction", {"chat_id": aiko.id, "action": "typing"}) == blocked
    )
    tg.user_unblocks_bot(aiko, bot)
    assert tg.pending_updates(bot)[-1]["my_chat_member"]["new_chat_member"]["status"] == "member"
    assert (await call(http, tg, "sendMessage", {"chat_id": aiko.id, "text": "x"}))[0] == 200


async def test_invite_links_and_join_requests(tg, http):
    bot, aiko = world(tg)
    group = tg.create_group("G", [aiko])
    tg.add_bot_to_group(bot, group, by=aiko)
    assert await call(http, tg, "createChatInviteLink", {"chat_id": group.id}) == err(
        400, "Bad Request: not enough rights to manage chat invite link"
    )
    tg.add_bot_to_group(bot, group, by=aiko, admin=True)
    _, body = await call(
        http,
        tg,
        "createChatInviteLink",
        {"chat_id": group.id, "name": "drop", "creates_join_request": True},
    )
    link = body["result"]
    assert link["invite_link"].startswith("https://t.me/+")
    assert link["creates_join_request"] is True and link["name"] == "drop"
    ren = tg.add_user("Ren")
    await tg.user_requests_join(ren, group, invite_link=link["invite_link"])
    request = tg.pending_updates(bot)[-1]["chat_join_request"]
    assert request["user_chat_id"] == ren.id and request["invite_link"]["name"] == "drop"
    # the bot may message a join requester although they never started it
    assert (await call(http, tg, "sendMessage", {"chat_id": ren.id, "text": "hi"}))[0] == 200
    approve = {"chat_id": group.id, "user_id": ren.id}
    assert (await call(http, tg, "approveChatJoinRequest", approve))[1]["result"] is True
    assert group.status_of(ren) == "member"
    assert await call(http, tg, "approveChatJoinRequest", approve) == err(
        400, "Bad Request: USER_ALREADY_PARTICIPANT"
    )
    mio = tg.add_user("Mio")
    assert await call(
        http, tg, "declineChatJoinRequest", {"chat_id": group.id, "user_id": mio.id}
    ) == err(400, "Bad Request: HIDE_REQUESTER_MISSING")
    _, body = await call(
        http,
        tg,
        "revokeChatInviteLink",
        {"chat_id": group.id, "invite_link": link["invite_link"]},
    )
    assert body["result"]["is_revoked"] is True


# ------------------------------------------------------------------------------------------
# flood limits, injected errors
# ------------------------------------------------------------------------------------------


async def test_flood_limits_follow_the_injected_clock(http):
    clock = ManualClock()
    async with BotAPIDouble(clock=clock) as tg:
        bot, aiko = world(tg)
        await tg.user_sends(aiko, "/start")

        async def send(chat_id: int) -> tuple[int, dict]:
            return await call(http, tg, "sendMessage", {"chat_id": chat_id, "text": "x"})

        for _ in range(3):  # small burst per private chat
            assert (await send(aiko.id))[0] == 200
        status, body = await send(aiko.id)
        assert (status, body) == (
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            },
        )
        # edits are not counted
        edit = {"chat_id": aiko.id, "message_id": 2, "text": "edited"}
        assert (await call(http, tg, "editMessageText", edit))[0] == 200
        clock.advance(1.0)
        assert (await send(aiko.id))[0] == 200
        assert (await send(aiko.id))[0] == 429

        group = tg.create_group("G", [aiko])
        tg.add_bot_to_group(bot, group, by=aiko)
        clock.advance(60)
        for _ in range(20):
            assert (await send(group.id))[0] == 200
        status, body = await send(group.id)
        assert body["parameters"]["retry_after"] == 3  # 20/min refills one every 3 s
        clock.advance(3)
        assert (await send(group.id))[0] == 200
        assert tg.stats.too_many_requests == 3

        # the global per-bot limit (30/s) across many chats
        tg.limits = FloodLimits(private_per_second=None, group_per_minute=None)
        users = [tg.add_user(f"u{i}") for i in range(31)]
        for u in users:
            await tg.user_sends(u, "/start")
        results = [(await send(u.id))[0] for u in users]
        assert results == [200] * 30 + [429]
        tg.limits = FloodLimits(global_per_second=1000, private_per_second=None)
        assert (await send(users[-1].id))[0] == 200


async def test_inject_error(tg, http):
    bot, aiko = world(tg)
    await tg.user_sends(aiko, "/start")
    tg.inject_error("sendMessage", status=500, description="Internal Server Error", times=2)
    tg.inject_error(
        "getMe", status=429, description="Too Many Requests: retry after 7", retry_after=7
    )
    payload = {"chat_id": aiko.id, "text": "x"}
    assert await call(http, tg, "sendMessage", payload) == err(500, "Internal Server Error")
    assert await call(http, tg, "sendMessage", payload) == err(500, "Internal Server Error")
    assert (await call(http, tg, "sendMessage", payload))[0] == 200
    status, body = await call(http, tg, "getMe")
    assert status == 429 and body["parameters"] == {"retry_after": 7}
    assert (await call(http, tg, "getMe"))[0] == 200


# ------------------------------------------------------------------------------------------
# callbacks, commands, edits, deletes, photos, copy/forward
# ------------------------------------------------------------------------------------------


async def test_callback_queries(tg, http):
    bot, aiko = world(tg)
    await tg.user_sends(aiko, "/start")
    markup = {"inline_keyboard": [[{"text": "はい", "callback_data": "yes"}]]}
    _, body = await call(
        http, tg, "sendMessage", {"chat_id": aiko.id, "text": "ok?", "reply_markup": markup}
    )
    message = body["result"]
    with pytest.raises(ValueError):
        await tg.user_presses(aiko, message, "no")
    qid = await tg.user_presses(aiko, message, "yes")
    update = tg.pending_updates(bot)[-1]["callback_query"]
    assert update["id"] == qid and update["data"] == "yes"
    assert update["message"]["message_id"] == message["message_id"]
    answer = {"callback_query_id": qid, "text": "done", "show_alert": True}
    assert (await call(http, tg, "answerCallbackQuery", answer))[1]["result"] is True
    assert await call(http, tg, "answerCallbackQuery", answer) == err(
        400,
        "Bad Request: query is too old and response timeout expired or query ID is invalid",
    )
    [answered] = tg.answered_callbacks()
    assert answered["text"] == "done" and answered["show_alert"] is True


async def test_commands_with_scopes_and_languages(tg, http):
    bot, aiko = world(tg)
    cmds = [{"command": "start", "description": "Start"}]
    ja = [{"command": "start", "description": "はじめる"}]
    group = tg.create_group("G", [aiko])
    assert (await call(http, tg, "setMyCommands", {"commands": cmds}))[0] == 200
    assert (await call(http, tg, "setMyCommands", {"commands": ja, "language_code": "ja"}))[
        0
    ] == 200
    scope = {"type": "chat", "chat_id": group.id}
    await call(http, tg, "setMyCommands", {"commands": cmds[:1], "scope": scope})
    assert await call(
        http, tg, "setMyCommands", {"commands": [{"command": "Bad-Cmd", "description": "x"}]}
    ) == err(400, "Bad Request: BOT_COMMAND_INVALID")
    _, body = await call(http, tg, "getMyCommands", {"language_code": "ja"})
    assert body["result"] == ja
    assert tg.commands(bot) == cmds
    assert tg.commands(bot, language_code="ja") == ja
    assert tg.commands(bot, scope_type="chat", chat_id=group.id) == cmds
    assert tg.commands(bot, scope_type="all_private_chats") == []
    await call(http, tg, "deleteMyCommands", {"language_code": "ja"})
    assert tg.commands(bot, language_code="ja") == []


async def test_edit_and_delete(tg, http):
    bot, aiko = world(tg)
    user_msg = await tg.user_sends(aiko, "/start")
    _, body = await call(http, tg, "sendMessage", {"chat_id": aiko.id, "text": "v1"})
    mid = body["result"]["message_id"]
    edit = {"chat_id": aiko.id, "message_id": mid, "text": "<b>v2</b>", "parse_mode": "HTML"}
    _, body = await call(http, tg, "editMessageText", edit)
    assert body["result"]["text"] == "v2" and "edit_date" in body["result"]
    assert await call(http, tg, "editMessageText", edit) == err(
        400,
        "Bad Request: message is not modified: specified new message content and reply markup "
        "are exactly the same as a current content and reply markup of the message",
    )
    assert await call(
        http, tg, "editMessageText", {"chat_id": aiko.id, "message_id": 99, "text": "x"}
    ) == err(400, "Bad Request: message to edit not found")
    assert await call(
        http,
        tg,
        "editMessageText",
        {"chat_id": aiko.id, "message_id": user_msg["message_id"], "text": "x"},
    ) == err(400, "Bad Request: message can't be edited")
    markup = {"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]}
    _, body = await call(
        http,
        tg,
        "editMessageReplyMarkup",
        {"chat_id": aiko.id, "message_id": mid, "reply_markup": markup},
    )
    assert body["result"]["reply_markup"] == markup
    assert tg.sent_messages(aiko.id)[-1]["text"] == "v2"  # current state
    assert [e["text"] for e in tg.edits()] == ["v2", "v2"]

    delete = {"chat_id": aiko.id, "message_id": mid}
    assert (await call(http, tg, "deleteMessage", delete))[1]["result"] is True
    assert await call(http, tg, "deleteMessage", delete) == err(
        400, "Bad Request: message to delete not found"
    )
    assert tg.deleted_messages() == [(aiko.id, mid)]


async def test_send_photo_upload_file_id_and_download(tg, http):
    bot, aiko = world(tg)
    await tg.user_sends(aiko, "/start")
    form = aiohttp.FormData()
    form.add_field("chat_id", str(aiko.id))
    form.add_field("caption", "<i>写真</i>")
    form.add_field("parse_mode", "HTML")
    form.add_field("photo", b"\xff\xd8fakejpeg", filename="p.jpg", content_type="image/jpeg")
    status, body = await call(http, tg, "sendPhoto", form=form)
    assert status == 200
    msg = body["result"]
    assert msg["caption"] == "写真"
    assert msg["caption_entities"] == [{"type": "italic", "offset": 0, "length": 2}]
    file_id = msg["photo"][-1]["file_id"]
    _, again = await call(http, tg, "sendPhoto", {"chat_id": aiko.id, "photo": file_id})
    assert again["result"]["photo"] == msg["photo"]
    _, by_url = await call(
        http, tg, "sendPhoto", {"chat_id": aiko.id, "photo": "https://e.jp/a.png"}
    )
    assert by_url["ok"] is True
    assert await call(http, tg, "sendPhoto", {"chat_id": aiko.id, "photo": "nonsense"}) == err(
        400, "Bad Request: wrong file identifier/HTTP URL specified"
    )
    assert await call(
        http, tg, "sendPhoto", {"chat_id": aiko.id, "photo": file_id, "caption": "c" * 1025}
    ) == err(400, "Bad Request: message caption is too long")
    _, file_info = await call(http, tg, "getFile", {"file_id": file_id})
    async with http.get(f"{tg.base_url}/file/bot{TOKEN}/{file_info['result']['file_path']}") as r:
        assert r.status == 200 and await r.read() == b"\xff\xd8fakejpeg"
    assert [m.get("caption") for m in tg.sent_messages(aiko.id)] == ["写真", None, None]


async def test_forum_topics_create_send_close_reopen(tg, http):
    bot, aiko = world(tg)
    forum = tg.create_group("Advisors", [aiko], forum=True)
    plain = tg.create_group("Plain", [aiko])
    with pytest.raises(ValueError):
        tg.create_group("Basic forum", [aiko], supergroup=False, forum=True)
    tg.add_bot_to_group(bot, forum, by=aiko)
    tg.add_bot_to_group(bot, plain, by=aiko, admin=True)
    _, chat = await call(http, tg, "getChat", {"chat_id": forum.id})
    assert chat["result"]["is_forum"] is True
    _, chat = await call(http, tg, "getChat", {"chat_id": plain.id})
    assert "is_forum" not in chat["result"]

    create = {"chat_id": forum.id, "name": "Aiko · ja · #1"}
    assert await call(http, tg, "createForumTopic", create) == err(
        400, "Bad Request: not enough rights to create a topic")
    assert await call(http, tg, "createForumTopic", {**create, "chat_id": plain.id}) == err(
        400, "Bad Request: the chat is not a forum")
    assert await call(http, tg, "createForumTopic", {**create, "chat_id": aiko.id}) == err(
        400, "Bad Request: the chat is not a forum")
    tg.add_bot_to_group(bot, forum, by=aiko, admin=True, rights={"can_manage_topics": True})
    assert await call(http, tg, "createForumTopic", {**create, "name": "  "}) == err(
        400, "Bad Request: title must be non-empty")
    status, body = await call(http, tg, "createForumTopic", create)
    assert status == 200
    topic = body["result"]
    assert topic == {"message_thread_id": topic["message_thread_id"], "name": "Aiko · ja · #1",
                     "icon_color": 7322096}
    tid = topic["message_thread_id"]
    _, long = await call(http, tg, "createForumTopic", {"chat_id": forum.id, "name": "n" * 200})
    assert long["result"]["name"] == "n" * 128

    _, sent = await call(http, tg, "sendMessage",
                         {"chat_id": forum.id, "text": "card", "message_thread_id": tid})
    msg = sent["result"]
    assert msg["message_thread_id"] == tid and msg["is_topic_message"] is True
    assert msg["reply_to_message"]["forum_topic_created"]["name"] == "Aiko · ja · #1"
    assert msg["chat"]["is_forum"] is True
    _, general = await call(http, tg, "sendMessage", {"chat_id": forum.id, "text": "all"})
    assert "message_thread_id" not in general["result"]
    _, ignored = await call(http, tg, "sendMessage",
                            {"chat_id": plain.id, "text": "x", "message_thread_id": 5})
    assert "message_thread_id" not in ignored["result"]
    assert await call(http, tg, "sendMessage", {
        "chat_id": forum.id, "text": "x", "message_thread_id": 999}) == err(
        400, "Bad Request: message thread not found")
    _, photo = await call(http, tg, "sendPhoto", {
        "chat_id": forum.id, "photo": "https://e.jp/a.png", "message_thread_id": tid})
    assert photo["result"]["message_thread_id"] == tid
    assert [m.get("text", "photo") for m in tg.sent_in_topic(forum.id, tid)] == ["card", "photo"]
    assert [m["text"] for m in tg.sent_in_topic(forum.id, None)] == ["all"]

    close = {"chat_id": forum.id, "message_thread_id": tid}
    assert await call(http, tg, "closeForumTopic", close) == (200, {"ok": True, "result": True})
    assert await call(http, tg, "closeForumTopic", close) == err(
        400, "Bad Request: TOPIC_NOT_MODIFIED")
    assert await call(http, tg, "sendMessage", {**close, "text": "late"}) == err(
        400, "Bad Request: TOPIC_CLOSED")
    assert await call(http, tg, "sendPhoto", {**close, "photo": "https://e.jp/a.png"}) == err(
        400, "Bad Request: TOPIC_CLOSED")
    assert await call(http, tg, "reopenForumTopic", close) == (200, {"ok": True, "result": True})
    assert await call(http, tg, "reopenForumTopic", close) == err(
        400, "Bad Request: TOPIC_NOT_MODIFIED")
    assert (await call(http, tg, "sendMessage", {**close, "text": "again"}))[0] == 200
    assert await call(http, tg, "closeForumTopic", {**close, "message_thread_id": 999}) == err(
        400, "Bad Request: TOPIC_ID_INVALID")
    assert await call(http, tg, "closeForumTopic", {**close, "chat_id": plain.id}) == err(
        400, "Bad Request: the chat is not a forum")
    # a topic the bot created can be closed by it even without the right to manage topics
    tg.add_bot_to_group(bot, forum, by=aiko, admin=True)
    assert (await call(http, tg, "closeForumTopic", close))[0] == 200
    other = await tg.user_creates_topic(aiko, forum, "Aiko's own")
    assert await call(http, tg, "closeForumTopic", {**close, "message_thread_id": other}) == err(
        400, "Bad Request: not enough rights to manage forum topics")
    assert tg.internal_errors == []


async def test_users_write_in_forum_topics(tg, http):
    bot, aiko = world(tg)
    ken = tg.add_user("Ken", username="ken")
    forum = tg.create_group("Advisors", [aiko, ken], forum=True)
    tg.add_bot_to_group(bot, forum, by=aiko, admin=True, rights={"can_manage_topics": True})
    bot._pending.clear()
    _, body = await call(http, tg, "createForumTopic", {"chat_id": forum.id, "name": "Tom"})
    tid = body["result"]["message_thread_id"]
    assert tg.pending_updates(bot) == []  # a bot does not get updates about its own actions
    own = await tg.user_creates_topic(aiko, forum, "Team chat")
    [created] = tg.pending_updates(bot)
    assert created["message"]["forum_topic_created"]["name"] == "Team chat"
    assert created["message"]["message_thread_id"] == own

    await tg.user_sends(ken, "I'll take this", chat=forum, thread_id=tid)
    await tg.user_sends(ken, "morning all", chat=forum)
    photo = await tg.user_sends_photo(ken, caption="the receipt", chat=forum, thread_id=tid)
    in_topic, general, with_photo = (u["message"] for u in tg.pending_updates(bot)[1:])
    assert in_topic["message_thread_id"] == tid and in_topic["is_topic_message"] is True
    assert in_topic["reply_to_message"]["forum_topic_created"]["name"] == "Tom"
    assert in_topic["reply_to_message"]["from"]["id"] == bot.id
    assert "message_thread_id" not in general and "reply_to_message" not in general
    assert with_photo["caption"] == "the receipt" and with_photo["message_thread_id"] == tid
    reply = await tg.user_sends(aiko, "thanks", chat=forum, reply_to=in_topic["message_id"])
    assert reply["message_thread_id"] == tid  # a reply lands in the replied message's topic
    assert reply["reply_to_message"]["message_id"] == in_topic["message_id"]
    # the bot can pass a user's photo on by file_id
    await tg.user_sends(aiko, "/start")
    file_id = photo["photo"][-1]["file_id"]
    _, again = await call(http, tg, "sendPhoto", {"chat_id": aiko.id, "photo": file_id})
    assert again["result"]["photo"][-1]["file_id"] == file_id

    await call(http, tg, "closeForumTopic", {"chat_id": forum.id, "message_thread_id": tid})
    closed = tg.pending_updates(bot)[-1]["message"]
    assert closed.get("forum_topic_closed") is None  # the bot closed it itself: no update
    with pytest.raises(ValueError, match="closed"):
        await tg.user_sends(ken, "one more thing", chat=forum, thread_id=tid)
    await tg.user_sends(aiko, "owner can still write", chat=forum, thread_id=tid)
    with pytest.raises(ValueError):
        await tg.user_sends(ken, "x", chat=forum, thread_id=12345)
    with pytest.raises(ValueError):
        await tg.user_sends(ken, "x", thread_id=tid)  # private chats have no topics
    tg.delete_topic(forum, tid)
    assert await call(http, tg, "sendMessage", {
        "chat_id": forum.id, "text": "x", "message_thread_id": tid}) == err(
        400, "Bad Request: message thread not found")
    assert await call(http, tg, "reopenForumTopic", {
        "chat_id": forum.id, "message_thread_id": tid}) == err(
        400, "Bad Request: TOPIC_ID_INVALID")
    assert tg.internal_errors == []


async def test_copy_and_forward(tg, http):
    bot, aiko = world(tg)
    group = tg.create_group("G", [aiko])
    tg.add_bot_to_group(bot, group, by=aiko, admin=True)
    original = await tg.user_sends(aiko, "share me", chat=group)
    await tg.user_sends(aiko, "/start")
    ref = {"chat_id": aiko.id, "from_chat_id": group.id, "message_id": original["message_id"]}
    _, body = await call(http, tg, "copyMessage", ref)
    copied_id = body["result"]["message_id"]
    _, body = await call(http, tg, "forwardMessage", ref)
    forwarded = body["result"]
    assert forwarded["forward_origin"]["sender_user"]["id"] == aiko.id
    copied, fwd = tg.sent_messages(aiko.id)
    assert copied["message_id"] == copied_id and copied["text"] == "share me"
    assert "forward_origin" not in copied and fwd == forwarded
    assert await call(http, tg, "copyMessage", {**ref, "message_id": 999}) == err(
        400, "Bad Request: message to copy not found"
    )


async def test_wait_for_sent_is_event_driven(tg, http):
    bot, aiko = world(tg)
    await tg.user_sends(aiko, "/start")
    waiter = asyncio.create_task(tg.wait_for_sent(2, chat_id=aiko.id, timeout=5))
    await asyncio.sleep(0)
    assert not waiter.done()
    await call(http, tg, "sendMessage", {"chat_id": aiko.id, "text": "1"})
    await call(http, tg, "sendMessage", {"chat_id": aiko.id, "text": "2"})
    assert [m["text"] for m in await asyncio.wait_for(waiter, 1)] == ["1", "2"]
    with pytest.raises(TimeoutError, match="expected 3"):
        await tg.wait_for_sent(3, chat_id=aiko.id, timeout=0.05)


# ------------------------------------------------------------------------------------------
# real aiogram against the double
# ------------------------------------------------------------------------------------------


def aiogram_bot(tg: BotAPIDouble, token: str = TOKEN):
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    return Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))


async def test_aiogram_round_trip():
    from aiogram.exceptions import (
        TelegramBadRequest,
        TelegramForbiddenError,
        TelegramRetryAfter,
        TelegramUnauthorizedError,
    )
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    clock = ManualClock()
    async with BotAPIDouble(clock=clock) as tg:
        bot_user, aiko = world(tg)
        bot = aiogram_bot(tg)
        try:
            me = await bot.get_me()
            assert (me.id, me.username) == (bot_user.id, "kizuna_test_bot")

            await tg.user_sends(aiko, "/start")
            updates = await bot.get_updates(timeout=1)
            assert updates[0].message.text == "/start"
            assert updates[0].message.entities[0].type == "bot_command"
            assert await bot.get_updates(offset=updates[-1].update_id + 1) == []

            kb = InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="はい", callback_data="yes")]]
            )
            sent = await bot.send_message(
                aiko.id, "<b>ようこそ</b> 😀", parse_mode="HTML", reply_markup=kb
            )
            assert sent.text == "ようこそ 😀" and sent.entities[0].type == "bold"
            assert sent.from_user.id == bot_user.id
            await bot.send_message(aiko.id, "2")
            await bot.send_message(aiko.id, "3")
            with pytest.raises(TelegramRetryAfter) as flood:
                await bot.send_message(aiko.id, "4")
            assert flood.value.retry_after == 1
            clock.advance(1)
            await bot.send_message(aiko.id, "4")

            with pytest.raises(TelegramBadRequest, match="chat not found"):
                await bot.send_message(42, "x")
            tg.user_blocks_bot(aiko, bot_user)
            with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
                await bot.send_message(aiko.id, "x")
            [blocked] = await bot.get_updates()
            assert blocked.my_chat_member.new_chat_member.status == "kicked"

            group = tg.create_group("G", [aiko])
            tg.add_bot_to_group(bot_user, group, by=aiko, admin=True)
            member = await bot.get_chat_member(group.id, bot_user.id)
            assert member.status == "administrator"
            chat = await bot.get_chat(group.id)
            assert chat.title == "G"
            link = await bot.create_chat_invite_link(group.id, member_limit=5)
            assert link.member_limit == 5
            info = await bot.get_webhook_info()
            assert info.url == "" and info.pending_update_count == 3  # none confirmed
            assert await bot.log_out() is True
            with pytest.raises(TelegramUnauthorizedError):
                await bot.get_me()
            assert tg.internal_errors == []
        finally:
            await bot.session.close()


async def test_aiogram_forum_round_trip():
    from aiogram.exceptions import TelegramBadRequest

    async with BotAPIDouble(limits=FloodLimits.off()) as tg:
        bot_user, aiko = world(tg)
        forum = tg.create_group("Advisors", [aiko], forum=True)
        tg.add_bot_to_group(bot_user, forum, by=aiko, admin=True,
                            rights={"can_manage_topics": True})
        bot = aiogram_bot(tg)
        try:
            bot_user._pending.clear()
            topic = await bot.create_forum_topic(forum.id, "Tom · en · #7")
            assert topic.name == "Tom · en · #7" and topic.icon_color == 7322096
            sent = await bot.send_message(forum.id, "card",
                                          message_thread_id=topic.message_thread_id)
            assert sent.is_topic_message and sent.message_thread_id == topic.message_thread_id
            assert sent.reply_to_message.forum_topic_created.name == "Tom · en · #7"
            await tg.user_sends(aiko, "hello Tom", chat=forum,
                                thread_id=topic.message_thread_id)
            [update] = await bot.get_updates(timeout=1)
            assert update.message.is_topic_message
            assert update.message.message_thread_id == topic.message_thread_id
            assert update.message.chat.is_forum
            assert await bot.close_forum_topic(forum.id, topic.message_thread_id) is True
            with pytest.raises(TelegramBadRequest, match="TOPIC_CLOSED"):
                await bot.send_message(forum.id, "x", message_thread_id=topic.message_thread_id)
            assert await bot.reopen_forum_topic(forum.id, topic.message_thread_id) is True
            assert tg.internal_errors == []
        finally:
            await bot.session.close()


async def test_aiogram_dispatcher_polling_end_to_end():
    from aiogram import Dispatcher, F
    from aiogram.filters import CommandStart
    from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

    async with BotAPIDouble(limits=FloodLimits.off()) as tg:
        bot_user, aiko = world(tg)
        bot = aiogram_bot(tg)
        dp = Dispatcher()

        @dp.message(CommandStart())
        async def start(message: Message) -> None:
            await message.answer(
                "ようこそ",
                reply_markup=InlineKeyboardMarkup(
                    inline_keyboard=[[InlineKeyboardButton(text="OK", callback_data="ok")]]
                ),
            )

        @dp.callback_query(F.data == "ok")
        async def ok(query: CallbackQuery) -> None:
            await query.answer("👍")
            await query.message.edit_text("done")

        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        try:
            await tg.user_sends(aiko, "/start")
            [welcome] = await tg.wait_for_sent(1, chat_id=aiko.id)
            assert welcome["text"] == "ようこそ"
            await tg.user_presses(aiko, welcome, "ok")
            await wait_until(lambda: bool(tg.edits()), timeout=5)
            assert tg.sent_messages(aiko.id)[0]["text"] == "done"
            assert tg.answered_callbacks()[0]["text"] == "👍"
        finally:
            await dp.stop_polling()
            await asyncio.wait_for(polling, 5)
        assert tg.internal_errors == []


async def test_aiogram_webhook_mode_with_reply_in_response(http):
    from aiogram import Dispatcher
    from aiogram.types import Message
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler

    async with BotAPIDouble(limits=FloodLimits.off()) as tg:
        bot_user, aiko = world(tg)
        bot = aiogram_bot(tg)
        dp = Dispatcher()

        @dp.message()
        async def echo(message: Message):
            return message.answer(f"echo: {message.text}")  # answered in the webhook response

        app = web.Application()
        SimpleRequestHandler(dp, bot, secret_token="tok", handle_in_background=False).register(
            app, path="/wh"
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/wh"
            assert await bot.set_webhook(url, secret_token="tok") is True
            for text in ("a", "b", "c"):
                await tg.user_sends(aiko, text)
            sent = await tg.wait_for_sent(3, chat_id=aiko.id)
            assert [m["text"] for m in sent] == ["echo: a", "echo: b", "echo: c"]
            await bot.delete_webhook()
        finally:
            await runner.cleanup()
            await bot.session.close()
        assert tg.internal_errors == []
        assert tg.stats.webhook_failures == 0


# ------------------------------------------------------------------------------------------
# throughput smoke test (the real benchmark lives elsewhere)
# ------------------------------------------------------------------------------------------


async def test_throughput_smoke(tg, http):
    bot, aiko = world(tg)
    users = [tg.add_user(f"u{i}") for i in range(50)]
    for u in users:
        await tg.user_sends(u, "/start")
    started = time.perf_counter()
    n = 600
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> int:
        async with sem:
            status, _ = await call(
                http, tg, "sendMessage", {"chat_id": users[i % 50].id, "text": f"m{i}"}
            )
            return status

    statuses = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    assert statuses == [200] * n
    assert len(tg.sent_messages()) == n
    assert elapsed < 10, elapsed
    # payload sizes stay sane for JSON round trips
    assert json.dumps(tg.sent_messages()[0])
