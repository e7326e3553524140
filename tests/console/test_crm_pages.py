"""The managers' CRM pages: member search and profile (tags, opt-out), the segment builder's
live count and saved segments, tier and LTV charts, the KOC leaderboard."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console.crm_insights_pages import ltv_edges, ltv_histogram, tier_distribution
from console.crm_members_pages import search_members, starts_with
from console.crm_pages import axis_step, bar_chart, distinct_tags, distinct_values
from console.crm_segments_pages import describe_definition
from crm import CrmService
from models import Database
from models.contact import ContactIdentity
from models.crm import Referral
from models.repositories import ContactRepository
from tests.console.conftest import World

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class Shop:
    crm: CrmService
    ids: dict[str, int]  # name -> contact id


async def _member(db: Database, external_id: str, name: str, username: str | None = None,
                  platform: str = "fake") -> int:
    async with db.session() as session:
        ident, _ = await ContactRepository(session).identify(
            platform, external_id, display_name=name, username=username)
        return ident.contact_id


async def seed(crm: CrmService, tmp_path: Path) -> Shop:
    """Five buyers whose recency, frequency and spend rise together (R+F+M = 3, 6, 9, 12,
    15: regular, regular, good, good, best) and two members without orders (dormant)."""
    names = ["Akira", "Bunta", "Chie", "Daiki", "Hanako Sato", "Kenji", "Yui"]
    ids: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        ids[name] = await _member(crm.db, f"10{i}", name, username=name.split()[0].lower())
    await crm.members.update_profile(ids["Hanako Sato"], shop_customer_id="C005",
                                     email="hanako@example.com", phone="090-1234-5678",
                                     birth_month=4, birth_day=2, member_level="gold",
                                     home_store="Shibuya", favourite_products=["serum"])
    lines = ["order_id,platform,platform_id,ordered_at,amount,store"]
    for i in range(1, 6):
        last = NOW - timedelta(days=30 * (6 - i))
        for k in range(i):
            at = last - timedelta(days=10 * k)
            lines.append(f"O{i}-{k},fake,10{i},{at:%Y-%m-%d %H:%M},{1000 * i},Shibuya")
    path = tmp_path / "orders.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = await crm.import_file("orders", path, now=NOW)
    assert report.ok, report.errors
    await crm.members.add_tag(ids["Hanako Sato"], "vip")
    await crm.members.add_tag(ids["Daiki"], "vip")
    for _ in range(3):
        await crm.members.record_helpful_answer(ids["Akira"], at=NOW)
    for _ in range(2):
        await crm.members.record_feedback(ids["Bunta"], positive=True, at=NOW)
    async with crm.db.session() as session:  # Chie invited Kenji (10 points)
        session.add(Referral(referrer_id=ids["Chie"], referee_id=ids["Kenji"], code="abc",
                             joined_at=NOW - timedelta(days=3)))
    result = await crm.scoring.recompute(now=NOW)
    assert result.tiers == {"dormant": 2, "regular": 2, "good": 2, "best": 1}
    return Shop(crm, ids)


@pytest.fixture
async def shop(world: World, tmp_path: Path) -> Shop:
    return await seed(world.app.crm, tmp_path)


async def test_pages_are_for_managers(world: World, shop: Shop) -> None:
    aiko, _ = await world.signed_in("aiko")
    boss, _ = await world.signed_in("boss", role="manager")
    root, _ = await world.signed_in("root", role="admin")
    hanako = shop.ids["Hanako Sato"]
    pages = ["/crm", f"/crm/members/{hanako}", "/crm/segments", "/crm/insights", "/crm/koc"]
    for path in pages:
        resp = await boss.client.get("/console" + path)
        assert resp.status == 200, (path, await resp.text())
        page = await resp.text()
        assert 'rel="stylesheet" href="/console/static/crm.css?v=' in page
        assert "crm-subnav" in page
        assert (await aiko.client.get("/console" + path)).status == 403
    assert (await root.client.get(f"/console/crm/members/{hanako}")).status == 200  # admins too
    for method, path in [("GET", "/api/crm/members?q=han"), ("GET", f"/api/crm/members/{hanako}"),
                         ("POST", f"/api/crm/members/{hanako}/tags"),
                         ("POST", "/api/crm/segments/count"), ("GET", "/api/crm/insights"),
                         ("GET", "/api/crm/koc")]:
        assert (await aiko.api(method, path, {"tag": "x"})).status == 403, path
    assert 'href="/console/crm"' in await (await boss.client.get("/console/")).text()
    assert 'href="/console/crm"' not in await (await aiko.client.get("/console/")).text()
    missing = await boss.client.get("/console/crm/members/999999")
    assert missing.status == 404 and "no member" in await missing.text()


async def test_search_by_name_username_id_and_contact_details(world: World, shop: Shop) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    hanako = shop.ids["Hanako Sato"]

    async def found(q: str) -> list[tuple[int, str]]:
        data = await boss.ok("GET", "/api/crm/members", params={"q": q})
        assert isinstance(data["ms"], float)
        return [(r["contact_id"], r["matched"]) for r in data["results"]]

    assert await found("hana") == [(hanako, "name")]
    assert await found("HANAKO s") == [(hanako, "name")]
    assert await found("sato") == []  # names match from their start
    assert await found(str(hanako)) == [(hanako, "member id")]
    assert await found("C005") == [(hanako, "shop id")]
    assert await found("c00") == [(hanako, "shop id")]
    assert await found("shop:C005") == [(hanako, "shop id")]
    assert await found("hanako@example.com") == [(hanako, "e-mail")]
    assert await found("090-1234-5678") == [(hanako, "phone")]
    ext = f"10{list(shop.ids).index('Hanako Sato') + 1}"
    assert await found(f"fake:{ext}") == [(hanako, "platform id")]
    assert await found(ext) == [(hanako, "platform id")]  # on any platform members use
    assert await found("@hanako") == [(hanako, "username")]
    assert await found("100%") == []  # LIKE wildcards are text
    assert await found("") == []
    row = (await boss.ok("GET", "/api/crm/members", params={"q": "hanako"}))["results"][0]
    assert row["tier"] == "best" and row["order_count"] == 5 and row["total_spend"] == 25000
    assert row["identities"] == [{"platform": "fake", "username": "hanako"}]
    assert (await boss.api("GET", "/api/crm/members", params={"q": "x" * 200})).status == 400
    page = await (await boss.client.get("/console/crm?q=%3Cb%3E")).text()
    assert 'value="&lt;b&gt;"' in page  # the query is escaped back into the box


async def test_profile_shows_tier_ltv_factors_tags_orders(world: World, shop: Shop) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    hanako = shop.ids["Hanako Sato"]
    data = await boss.ok("GET", f"/api/crm/members/{hanako}")
    v = data["profile"]
    assert v["tier"] == "best" and v["rfm"]["r"] == 5 and v["member_level"] == "gold"
    ltv = v["ltv"]
    assert ltv["avg_order_value"] == 5000
    assert ltv["ltv"] == pytest.approx(ltv["avg_order_value"] * ltv["purchases_per_year"]
                                       * ltv["expected_years"], rel=1e-3)
    assert [t["tag"] for t in v["tags"]] == ["vip"]
    assert data["consent"]["marketable"] is True
    page = await (await boss.client.get(f"/console/crm/members/{hanako}")).text()
    assert "<h1>Hanako Sato</h1>" in page
    assert 'class="tier tier-best"' in page
    for text in ("average order value", "purchases per year", "expected years (best)",
                 "¥5,000", f"¥{ltv['ltv']:,.0f}", "lifetime value", "R 5 · F 5 · M 5",
                 'data-tag="vip"', "Shibuya", "serum", "04-02", "O5-0", "hanako@example.com"):
        assert text in page, text
    assert f'data-contact-id="{hanako}"' in page
    chie = await boss.ok("GET", f"/api/crm/members/{shop.ids['Chie']}")
    assert chie["koc"]["joins"] == 1 and chie["koc"]["live_score"] == 10
    assert [r["display_name"] for r in chie["koc"]["referrals"]] == ["Kenji"]
    kenji = await (await boss.client.get(f"/console/crm/members/{shop.ids['Kenji']}")).text()
    assert "Not scored yet" not in kenji and 'class="tier tier-dormant"' in kenji
    assert f'href="/console/crm/members/{shop.ids["Chie"]}">Chie</a>' in kenji  # referred by


async def test_tags_and_consent_need_csrf_and_work(world: World, shop: Shop) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    yui = shop.ids["Yui"]
    path = f"/api/crm/members/{yui}/tags"
    refused = await boss.api("POST", path, {"tag": "sensitive skin"}, csrf=False)
    assert refused.status == 403
    assert await shop.crm.members.tags(yui) == []
    added = await boss.ok("POST", path, {"tag": "  Sensitive   Skin "})
    assert added == {"added": True, "tags": [{"tag": "sensitive skin", "source": "manual"}]}
    again = await boss.ok("POST", path, {"tag": "sensitive skin"})
    assert again["added"] is False
    bad = await boss.api("POST", path, {"tag": "a,b"})
    assert bad.status == 400 and "no commas" in (await bad.json())["error"]
    assert (await boss.api("POST", path, {"tag": 5})).status == 400
    refused = await boss.api("POST", path + "/remove", {"tag": "sensitive skin"}, csrf=False)
    assert refused.status == 403
    removed = await boss.ok("POST", path + "/remove", {"tag": "sensitive skin"})
    assert removed == {"removed": True, "tags": []}
    assert (await boss.api("POST", "/api/crm/members/999999/tags", {"tag": "x"})).status == 404

    hanako = shop.ids["Hanako Sato"]
    vip = {"definition": {"field": "tag", "op": "has", "value": "vip"}}
    assert (await boss.api("POST", f"/api/crm/members/{hanako}/opt-out", {},
                           csrf=False)).status == 403
    assert (await boss.ok("POST", f"/api/crm/members/{hanako}/opt-out",
                          {"reason": "asked by phone"})) == {"marketable": False}
    count = await boss.ok("POST", "/api/crm/segments/count", vip)
    assert (count["matching"], count["marketable"]) == (2, 1)
    page = await (await boss.client.get(f"/console/crm/members/{hanako}")).text()
    assert "opted out on" in page and "no marketing" in page
    assert (await boss.ok("POST", f"/api/crm/members/{hanako}/opt-in")) == {"marketable": True}
    count = await boss.ok("POST", "/api/crm/segments/count", vip)
    assert (count["matching"], count["marketable"]) == (2, 2)


async def test_live_count_sample_and_bad_rules(world: World, shop: Shop) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    rule = {"all": [{"field": "tag", "op": "has", "value": "vip"},
                    {"field": "tier", "op": "in", "value": ["best", "good"]}]}
    data = await boss.ok("POST", "/api/crm/segments/count", {"definition": rule})
    assert (data["matching"], data["marketable"]) == (2, 2)
    assert isinstance(data["ms"], float)
    assert [m["display_name"] for m in data["sample"]] == ["Hanako Sato", "Daiki"]
    assert data["describe"] == "tag has vip AND tier in best, good"
    as_text = await boss.ok("POST", "/api/crm/segments/count",
                            {"definition": '{"field": "spend", "op": ">=", "value": 9000}'})
    assert as_text["matching"] == 3  # Chie 9000, Daiki 16000, Hanako 25000
    everyone = await boss.ok("POST", "/api/crm/segments/count", {"definition": {"all": []}})
    assert everyone["matching"] == 7 and everyone["describe"] == "every member"
    bad = await boss.api("POST", "/api/crm/segments/count",
                         {"definition": {"field": "tier", "op": "has", "value": "best"}})
    assert bad.status == 400
    assert (await bad.json())["error"] == ("rule op: unknown operator 'has' for tier "
                                           "(known: eq, ne, in, not_in)")
    nested = await boss.api("POST", "/api/crm/segments/count", {"definition": {"any": [
        {"field": "tag", "op": "has", "value": "vip"}, {"field": "spend", "op": "gte"}]}})
    assert (await nested.json())["error"] == "rule any[1]: spend gte needs a 'value'"
    syntax = await boss.api("POST", "/api/crm/segments/count", {"definition": '{"all": [}'})
    assert "not valid JSON" in (await syntax.json())["error"]
    assert (await boss.api("POST", "/api/crm/segments/count", {})).status == 400
    refused = await boss.api("POST", "/api/crm/segments/count", {"definition": rule},
                             csrf=False)
    assert refused.status == 403


async def test_save_list_replace_delete_segments(world: World, shop: Shop) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    rule = {"field": "tag", "op": "has", "value": "vip"}
    saved = await boss.ok("POST", "/api/crm/segments", {
        "name": "VIPs", "definition": rule, "description": "hand-picked <best>"})
    seg = saved["segment"]
    assert seg["name"] == "VIPs" and seg["describe"] == "tag has vip"
    listed = await boss.ok("GET", "/api/crm/segments")
    assert [s["name"] for s in listed["segments"]] == ["VIPs"]
    count = await boss.ok("GET", f"/api/crm/segments/{seg['id']}/count")
    assert (count["matching"], count["marketable"]) == (2, 2)
    page = await (await boss.client.get("/console/crm/segments")).text()
    assert "<strong>VIPs</strong>" in page and "hand-picked &lt;best&gt;" in page
    assert f'data-id="{seg["id"]}"' in page and "tag has vip" in page
    fields = re.search(r'data-fields="([^"]*)"', page)
    assert fields and "within_days" in fields.group(1)
    options = re.search(r'data-options="([^"]*)"', page)
    assert options and "vip" in options.group(1)
    dup = await boss.api("POST", "/api/crm/segments", {"name": "VIPs", "definition": rule})
    assert dup.status == 400 and "exists" in (await dup.json())["error"]
    best = {"field": "tier", "op": "eq", "value": "best"}
    await boss.ok("POST", "/api/crm/segments", {"name": "VIPs", "definition": best,
                                                "replace": True})
    count = await boss.ok("GET", f"/api/crm/segments/{seg['id']}/count")
    assert count["matching"] == 1
    bad = await boss.api("POST", "/api/crm/segments", {"name": "x", "definition": {"x": 1}})
    assert bad.status == 400 and "unknown key" in (await bad.json())["error"]
    assert (await boss.api("DELETE", f"/api/crm/segments/{seg['id']}", csrf=False)).status == 403
    await boss.ok("DELETE", f"/api/crm/segments/{seg['id']}")
    assert (await boss.ok("GET", "/api/crm/segments"))["segments"] == []
    assert (await boss.api("DELETE", f"/api/crm/segments/{seg['id']}")).status == 404


async def test_tier_chart_ltv_histogram_and_koc_leaderboard(world: World, shop: Shop) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    data = await boss.ok("GET", "/api/crm/insights")
    tiers = {t["tier"]: t["members"] for t in data["tiers"]["tiers"]}
    assert tiers == {"dormant": 2, "regular": 2, "good": 2, "best": 1}
    assert data["tiers"]["members"] == 7 and data["tiers"]["not_scored"] == 0
    best = next(t for t in data["tiers"]["tiers"] if t["tier"] == "best")
    assert best["avg_order_value"] == 5000 and best["expected_years"] == 5
    buckets = data["ltv"]["buckets"]
    assert sum(b["members"] for b in buckets) == 7
    assert buckets[0]["label"] == "¥0" and buckets[0]["members"] == 2
    assert data["ltv"]["with_ltv"] == 5
    page = await (await boss.client.get("/console/crm/insights")).text()
    assert page.count("<svg") == 2 and ' style="' not in page  # CSP: no inline styles
    for tier, n in tiers.items():
        assert f"<title>{tier}: {n} members</title>" in page
    # a member who appeared after the last recompute counts as dormant, not scored yet
    await world.customer("555", "Newcomer")
    again = (await boss.ok("GET", "/api/crm/insights"))["tiers"]
    assert again["not_scored"] == 1 and again["tiers"][0]["members"] == 3

    data = await boss.ok("GET", "/api/crm/koc")
    board = [(r["display_name"], r["score"]) for r in data["leaderboard"]]
    assert board == [("Chie", 10.0), ("Akira", 9.0), ("Bunta", 4.0)]
    first = data["leaderboard"][0]
    assert (first["referrals"], first["rank"], first["tier"]) == (1, 1, "good")
    assert data["leaderboard"][1]["helpful_answers"] == 3
    assert data["leaderboard"][2]["positive_feedback"] == 2
    page = await (await boss.client.get("/console/crm/koc")).text()
    links = re.findall(r'href="/console/crm/members/(\d+)">([^<]+)</a>', page)
    assert [name for _, name in links] == ["Chie", "Akira", "Bunta"]
    assert (await boss.api("GET", "/api/crm/koc?limit=0")).status == 400
    assert len((await boss.ok("GET", "/api/crm/koc?limit=1"))["leaderboard"]) == 1


async def test_empty_crm_and_crm_off(world: World) -> None:
    boss, _ = await world.signed_in("boss", role="manager")
    for path in ("/crm", "/crm/segments", "/crm/insights", "/crm/koc"):
        assert (await boss.client.get("/console" + path)).status == 200, path
    data = await boss.ok("GET", "/api/crm/insights")
    assert data["ltv"]["buckets"] == [{"low": 0.0, "high": 0.0, "label": "¥0", "members": 0,
                                       "total_ltv": 0.0}]
    crm = world.console.extras["crm"]
    world.console.extras["crm"] = None
    try:
        for path in ("/crm", "/crm/members/1", "/crm/segments", "/crm/insights", "/crm/koc"):
            resp = await boss.client.get("/console" + path)
            assert resp.status == 200 and "CRM is not enabled" in await resp.text(), path
        resp = await boss.api("GET", "/api/crm/members?q=a")
        assert resp.status == 404 and "not enabled" in (await resp.json())["error"]
    finally:
        world.console.extras["crm"] = crm


# ------------------------------------------------------------------ the queries on both DBs
async def test_queries_on_sqlite_and_postgresql(db: Database, tmp_path: Path) -> None:
    crm = CrmService(db=db)
    shop = await seed(crm, tmp_path)
    hanako = shop.ids["Hanako Sato"]
    rows, more = await search_members(crm, "hana", platforms=["fake"])
    assert [r["contact_id"] for r in rows] == [hanako] and not more
    rows, _ = await search_members(crm, "10" + str(list(shop.ids).index("Yui") + 1),
                                   platforms=["fake", "telegram"])
    assert [r["matched"] for r in rows] == ["platform id"]
    dist = await tier_distribution(crm)
    assert [t["members"] for t in dist["tiers"]] == [2, 2, 2, 1]
    hist = await ltv_histogram(crm)
    assert sum(b["members"] for b in hist["buckets"]) == 7
    assert await distinct_tags(crm) == ["vip"]
    await crm.members.add_tag(hanako, "glow")
    assert await distinct_tags(crm) == ["glow", "vip"]
    for i, name in enumerate(("Aya", "ami", "Àni")):
        await _member(db, f"a{i}", name, platform="line")
    rows, more = await search_members(crm, "a", limit=2)  # any two of four, by name
    names = [r["display_name"] for r in rows]
    assert len(names) == 2 and more and names == sorted(names, key=str.lower)
    assert set(names) <= {"Akira", "Aya", "ami"}
    platform = ContactIdentity.__table__.c.platform
    assert await distinct_values(crm, platform) == ["fake", "line"]
    rows, more = await search_members(crm, "Àn")
    assert [r["display_name"] for r in rows] == ["Àni"] and not more
    if not db.is_sqlite:  # SQLite's lower() leaves non-ASCII letters alone
        rows, _ = await search_members(crm, "àN")
        assert [r["display_name"] for r in rows] == ["Àni"]


def test_ltv_edges_and_chart() -> None:
    assert ltv_edges(1500, 80000) == [1000, 2000, 5000, 10000, 20000, 50000, 100000]
    assert ltv_edges(1000, 1000) == [1000, 2000]
    wide = ltv_edges(3, 9e8)
    assert wide[0] == 1 and wide[-1] == 1e9 and len(wide) - 1 <= 12
    assert [axis_step(p, integer=True) for p in (0, 2, 7, 1000, 1e6)] == [1, 1, 2, 250, 250000]
    assert axis_step(0.3) == 0.1 and axis_step(9000) == 2500
    svg = bar_chart([("a<b", 3, "tip & more"), ("c", 0, "none")], label="Test")
    assert "a&lt;b" in svg and "tip &amp; more" in svg and "style=" not in svg


def test_describe_and_prefix_helpers() -> None:
    assert describe_definition({"not": {"any": [
        {"field": "orders", "op": "between", "value": [2, 5], "within_days": 90},
        {"field": "needs_care", "op": "eq", "value": True}]}}) == (
        "NOT (orders between 2 and 5 within 90 days OR needs_care = true)")
    assert describe_definition({"field": "nope"}).startswith("(invalid: rule (top)")
    from sqlalchemy import column

    sql = str(starts_with(column("x"), "ab%").compile(compile_kwargs={"literal_binds": True}))
    assert "x >= 'ab%'" in sql and "x < 'ab&'" in sql and "LIKE 'ab\\%%'" in sql


# ------------------------------------------------------------------ the scripts, in a browser
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.e2e
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
async def test_the_scripts_in_a_browser(world: World, shop: Shop) -> None:
    """Search while typing, add and remove a tag, build a rule in the form and see the live
    count, save it: with the real CSP, no script error and no failed request."""
    from playwright.async_api import async_playwright, expect

    from tests.console.conftest import PASSWORD

    await world.advisor("boss", role="manager")
    base = str(world.server.make_url("/console"))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                          args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error"
                    else None)

            async def accept(dialog: object) -> None:
                await dialog.accept()  # type: ignore[attr-defined]

            page.on("dialog", accept)
            await page.goto(base + "/login?next=/console/crm")
            await page.fill("input[name=username]", "boss")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/console/crm")
            await page.locator("#q").press_sequentially("han")
            await expect(page.locator("#results tbody tr")).to_have_count(1)
            await page.click("#results a")
            await page.wait_for_url("**/crm/members/*")
            await page.fill("#tag-input", "glow")
            await page.click("#tag-form button")
            await expect(page.locator("#tags li")).to_have_count(2)
            await page.locator('#tags li[data-tag="vip"] button').click()
            await expect(page.locator("#tags li")).to_have_text(["glow ×"])

            await page.goto(base + "/crm/segments")
            await expect(page.locator("#count-matching")).to_have_text("7")  # everyone
            await page.click("#add-condition")
            await page.locator("#conditions li .value").press_sequentially("glow")
            await expect(page.locator("#count-matching")).to_have_text("1")
            await page.locator("#conditions li .field").select_option("tier")
            await page.locator("#conditions li .op").select_option("in")
            await page.locator("#conditions li .value").fill("best, gold")
            await expect(page.locator("#rule-error")).to_contain_text("unknown tier 'gold'")
            await page.locator("#conditions li .value").fill("best, good")
            await expect(page.locator("#count-matching")).to_have_text("3")
            assert '"value": [\n        "best",\n        "good"\n      ]' in (
                await page.locator("#rule-json").input_value())
            await page.fill("#seg-name", "Best and good")
            await page.click("#save-form button")
            await expect(page.locator("#saved tr[data-id] .count")).to_have_text("3")
            # 400s from the rule being typed are answers, not failures
            assert [x for x in problems if "400" not in x] == []
        finally:
            await browser.close()
