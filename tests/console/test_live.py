"""Live updates over /console/ws: session-checked, filtered by role, closed at sign-out."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.console.conftest import Browser, World


async def connect(b: Browser) -> aiohttp.ClientWebSocketResponse:
    ws = await b.client.ws_connect("/console/ws")
    assert (await asyncio.wait_for(ws.receive_json(), 5)) == {"type": "ready"}
    return ws


async def until(ws: aiohttp.ClientWebSocketResponse, last: Any) -> list[dict[str, Any]]:
    """Frames up to and including the first one ``last(frame)`` accepts (the sentinel)."""
    frames = []
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), 5)
        frames.append(frame)
        if last(frame):
            return frames


def kinds(frames: list[dict[str, Any]], conversation_id: int) -> list[str]:
    return [f["type"] for f in frames if f.get("conversation_id") == conversation_id]


async def test_each_advisor_gets_only_what_their_role_allows(world: World) -> None:
    aiko, aiko_id = await world.signed_in("aiko", on_shift=True)
    ken, ken_id = await world.signed_in("ken")
    boss, _ = await world.signed_in("boss", role="manager")
    sockets = {name: await connect(b) for name, b in
               (("aiko", aiko), ("ken", ken), ("boss", boss))}
    conv = await world.waiting("100", "Tom")  # queued, then routed to Aiko
    await aiko.ok("POST", f"/api/conversations/{conv}/reply", {"text": "Hi Tom"})
    await world.desk.set_shift(ken_id, False)  # sentinels: each advisor's own shift event
    await world.desk.set_shift(aiko_id, True)

    def shift_of(aid: int) -> Any:
        return lambda f: f["type"] == "shift" and f["advisor_id"] == aid

    got_aiko = await until(sockets["aiko"], shift_of(aiko_id))
    got_ken = await until(sockets["ken"], shift_of(ken_id))
    got_boss = await until(sockets["boss"], shift_of(aiko_id))
    assert kinds(got_aiko, conv) == ["handoff", "assigned", "message"]
    reply = [f for f in got_aiko if f["type"] == "message"][0]
    assert reply["origin"] == "console" and reply["text"] == "Hi Tom" and reply["message_id"]
    # Ken saw it waiting, then once that it was taken, and nothing of the conversation itself
    assert kinds(got_ken, conv) == ["handoff", "assigned"]
    assert not any(f["type"] == "shift" and f["advisor_id"] == aiko_id for f in got_ken)
    assert kinds(got_boss, conv) == ["handoff", "assigned", "message"]
    assert any(f["type"] == "shift" and f["advisor_id"] == ken_id for f in got_boss)
    for ws in sockets.values():
        await ws.close()


async def test_the_socket_needs_a_session_and_a_same_site_origin(world: World) -> None:
    anonymous = await world.browser()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await anonymous.client.ws_connect("/console/ws")
    assert err.value.status == 401
    aiko, _ = await world.signed_in("aiko")
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await aiko.client.ws_connect("/console/ws", headers={"Origin": "https://evil.example"})
    assert err.value.status == 403


async def test_signing_out_closes_the_live_socket(world: World) -> None:
    aiko, _ = await world.signed_in("aiko")
    ws = await connect(aiko)
    await aiko.ok("POST", "/api/logout")
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4401  # the page goes to login
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await aiko.client.ws_connect("/console/ws")
