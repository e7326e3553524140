"""Performance report and canned responses pages: numbers, roles, forms."""

from __future__ import annotations

import re

from tests.console.conftest import World


async def test_performance_per_advisor_and_day(world: World) -> None:
    aiko, aiko_id = await world.signed_in("aiko", display_name="Aiko", on_shift=True)
    ken, _ = await world.signed_in("ken", display_name="Ken")
    boss, _ = await world.signed_in("boss", display_name="Boss", role="manager")
    conv = await world.waiting("100", "Tom")  # assigned to Aiko at 10:00 UTC
    world.now.advance(seconds=90)
    await aiko.ok("POST", f"/api/conversations/{conv}/reply", {"text": "Hello"})
    world.now.advance(minutes=10)
    await aiko.ok("POST", f"/api/conversations/{conv}/resolve")
    view = await world.desk.view(conv)
    assert await world.desk.record_csat(view.handoff_id, 4, contact_id=view.contact_id)
    query = "?since=2026-11-30&until=2026-11-30&tz=UTC"
    data = await boss.ok("GET", "/api/performance" + query)
    day = [r for r in data["rows"] if r["advisor"] == "Aiko" and r["day"] == "2026-11-30"]
    assert day == [{"advisor": "Aiko", "advisor_id": aiko_id, "day": "2026-11-30",
                    "handled": 1, "resolved": 1, "first_response_p50_s": 90.0,
                    "first_response_p95_s": 90.0, "handling_p50_s": 690.0,
                    "csat_avg": 4.0, "csat_count": 1}]
    assert {r["advisor"] for r in data["rows"]} == {"Aiko", "Ken", "Boss"}
    page = await (await boss.client.get("/console/performance" + query)).text()
    row = re.search(r"<tr><td>Aiko</td><td>2026-11-30</td>(.*?)</tr>", page)
    assert row and "1m 30s" in row.group(1) and "11m 30s" in row.group(1)
    assert "4.00 (1)" in row.group(1)
    # an advisor sees their own rows only
    own = await ken.ok("GET", "/api/performance" + query)
    assert {r["advisor"] for r in own["rows"]} == {"Ken"}
    assert (await boss.api("GET", "/api/performance?tz=Mars/Olympus")).status == 400
    assert (await boss.api("GET", "/api/performance?since=yesterday")).status == 400
    bad = await boss.client.get("/console/performance?since=2026-12-01&until=2026-11-01")
    assert bad.status == 400 and "before it starts" in await bad.text()
    default = await boss.ok("GET", "/api/performance")  # the last 7 days, the desk's zone
    assert (default["since"], default["until"]) == ("2026-11-24", "2026-11-30")


async def test_canned_responses_are_managed_by_managers(world: World) -> None:
    aiko, _ = await world.signed_in("aiko")
    boss, _ = await world.signed_in("boss", role="manager")
    assert (await aiko.client.get("/console/canned")).status == 403
    assert (await aiko.api("POST", "/api/canned", {"shortcut": "hi", "language": "en",
                                                   "text": "Hi"})).status == 403
    page = await (await aiko.client.get("/console/")).text()
    assert "/console/canned" not in page  # no link to a page they cannot open
    assert "/console/canned" in await (await boss.client.get("/console/")).text()
    saved = await boss.client.post("/console/canned", data={
        "csrf_token": boss.csrf, "shortcut": "/thanks", "language": "en",
        "text": "Thank you for <waiting>!"}, allow_redirects=False)
    assert saved.status == 303
    listing = await (await boss.client.get("/console/canned")).text()
    assert "/thanks" in listing and "Thank you for &lt;waiting&gt;!" in listing
    wrong = await boss.client.post("/console/canned", data={
        "csrf_token": boss.csrf, "shortcut": "x", "language": "fr", "text": "Salut"})
    assert wrong.status == 400 and "language: one of" in await wrong.text()
    no_token = await boss.client.post("/console/canned", data={
        "shortcut": "x", "language": "en", "text": "t"}, allow_redirects=False)
    assert no_token.status == 403
    added = await boss.ok("POST", "/api/canned", {"shortcut": "bye", "language": "ja",
                                                  "text": "またね"})
    got = await aiko.ok("GET", "/api/canned?language=ja")
    assert [r["shortcut"] for r in got["canned"]] == ["bye"]
    assert (await aiko.api("DELETE", f"/api/canned/{added['id']}")).status == 403
    assert (await boss.ok("DELETE", f"/api/canned/{added['id']}")) == {"ok": True}
    assert (await boss.api("DELETE", f"/api/canned/{added['id']}")).status == 404
    [thanks] = (await aiko.ok("GET", "/api/canned"))["canned"]
    deleted = await boss.client.post(f"/console/canned/{thanks['id']}/delete",
                                     data={"csrf_token": boss.csrf}, allow_redirects=False)
    assert deleted.status == 303
    assert (await aiko.ok("GET", "/api/canned"))["canned"] == []
