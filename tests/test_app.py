"""The composition root starts every part on embedded defaults and stops cleanly."""

from __future__ import annotations

import aiohttp

from bot.app import KizunaApp
from config import load_settings


async def test_app_starts_with_scheduler_webchat_and_jobs(tmp_path):
    settings = load_settings(
        data_dir=str(tmp_path / "data"),
        database={"url": f"sqlite:///{tmp_path}/app.db"},
        web={"host": "127.0.0.1", "port": 0},
        knowledge_base={"data_dir": str(tmp_path / "kb")},
    )
    app = KizunaApp(settings, with_knowledge_base=False)
    await app.start()
    try:
        assert set(app.platforms) == {"webchat"}  # Telegram only with a token
        job_ids = {job["id"] for job in app.scheduler.jobs()}
        assert {"crm-refresh", "crm-automations"} <= job_ids
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{app.base_url}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"{app.base_url}/chat/demo") as resp:
                assert resp.status == 200 and "widget.js" in await resp.text()
    finally:
        await app.stop()
    # Jobs live in the app's database and survive a restart.
    again = KizunaApp(settings, with_knowledge_base=False)
    await again.start()
    try:
        assert {"crm-refresh", "crm-automations"} <= {j["id"] for j in again.scheduler.jobs()}
    finally:
        await again.stop()
