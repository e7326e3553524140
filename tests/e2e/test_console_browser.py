"""The advisor console in a real browser (Debian's Chromium driven by Playwright) against the
whole app: a Telegram customer asks a knowledge-base question, then asks for a person; the
advisor signs in, takes the conversation from the queue, inserts the suggested answer, edits
it, sends it, sees it once as sent, sees the customer's next message arrive live, resolves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bot.handoff.accounts import AccountInput
from tests.doubles.telegram_api import FloodLimits
from tests.e2e.conftest import start_harness

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ALWAYS = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
PASSWORD = "aiko-console-password"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


async def test_an_advisor_answers_a_waiting_customer_in_the_browser(tmp_path: Any) -> None:
    from playwright.async_api import async_playwright, expect

    started = time.monotonic()

    def configure(o: dict[str, Any]) -> None:
        o["handoff"] = {"reassign_loop": False,
                        "business_hours": {"timezone": "UTC", "weekly": ALWAYS}}
        o["console"] = {"create_initial_admin": False}

    h, stop = await start_harness(tmp_path, limits=FloodLimits.off(), with_kb=True,
                                  configure=configure)
    try:
        await h.app.accounts.create(AccountInput(username="aiko", display_name="Aiko",
                                                 password=PASSWORD, languages=["en"]))
        tom = h.api.add_user("Tom", language_code="en")
        await h.api.user_sends(tom, "How much does shipping cost?")
        assert "550" in (await h.api.wait_for_sent(1, chat_id=tom.id))[0]["text"]
        await h.api.user_sends(tom, "I want to talk to a human please")
        assert "queue" in (await h.api.wait_for_sent(2, chat_id=tom.id))[1]["text"]

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                              headless=True)
            try:
                page = await browser.new_page()
                problems: list[str] = []  # script errors and CSP violations
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.on("console", lambda m: problems.append(m.text) if m.type == "error"
                        else None)
                page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                        if r.status >= 400 else None)

                async def accept(dialog: Any) -> None:
                    await dialog.accept()

                page.on("dialog", accept)
                await page.goto(h.app.base_url + "/console/")
                await page.fill("input[name=username]", "aiko")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url("**/console/")
                waiting = page.locator("#queue li", has_text="Tom")
                await expect(waiting).to_contain_text("I want to talk to a human please")
                await waiting.get_by_role("button", name="Take").click()
                await page.wait_for_url("**/console/conversations/*")
                await expect(page.locator("#status")).to_have_text("assigned")

                suggestion = page.locator("#suggestions li", has_text="550").first
                await suggestion.get_by_role("button", name="Insert").click()
                box = page.locator("#reply-text")
                inserted = await box.input_value()
                assert "550" in inserted
                await box.press("Control+End")
                await box.press_sequentially(" Anything else I can help with?")
                edited = await box.input_value()
                assert edited.startswith(inserted) and edited != inserted
                await page.click("#send")

                ours = page.locator("#transcript li.msg.out", has_text="Anything else I can")
                await expect(ours).to_have_count(1)
                await expect(ours.locator(".status")).to_have_text("sent")
                await expect(box).to_have_value("")
                delivered = (await h.api.wait_for_sent(3, chat_id=tom.id))[2]
                assert delivered["text"] == edited.strip()

                await h.api.user_sends(tom, "Great, do you also ship to Osaka?")
                await expect(page.locator("#transcript li.msg.in", has_text="Osaka")
                             ).to_have_count(1)  # arrived live
                await expect(ours).to_have_count(1)  # still shown once

                await page.click("#resolve")
                await expect(page.locator("#status")).to_have_text("resolved")
                await expect(page.locator("#send")).to_be_disabled()
                texts = [m["text"] for m in await h.api.wait_for_sent(5, chat_id=tom.id)]
                assert any("How satisfied" in t for t in texts)
                assert problems == []
            finally:
                await browser.close()
        assert h.api.internal_errors == []
    finally:
        await stop()
    print(f"\nconsole browser test: {time.monotonic() - started:.1f}s")
