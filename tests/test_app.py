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


async def test_crm_segments_and_opt_outs_decide_drop_audiences(tmp_path):
    from community.audience import PrivateAudience
    from models.chat import ChatKind
    from models.repositories import ChatRepository, ContactRepository

    settings = load_settings(
        data_dir=str(tmp_path / "data"),
        database={"url": f"sqlite:///{tmp_path}/app.db"},
        web={"host": "127.0.0.1", "port": 0},
        scheduler={"enabled": False},
    )
    app = KizunaApp(settings, with_knowledge_base=False)
    await app.db.upgrade()
    try:
        ids = []
        async with app.db.session() as s:
            for i in range(4):
                ident, _ = await ContactRepository(s).identify("telegram", str(500 + i))
                await ChatRepository(s).upsert("telegram", str(500 + i), ChatKind.PRIVATE)
                ids.append(ident.contact_id)
        for cid in ids[:3]:
            await app.crm.members.add_tag(cid, "vip")
        await app.crm.opt_out(ids[1])
        await app.crm.segments.create("vips", {"field": "tag", "op": "has", "value": "vip"})
        resolver = app.community.drops.resolver
        got = [r.contact_id async for r in resolver.resolve_private(
            PrivateAudience(segment="vips"))]
        assert got == [ids[0], ids[2]]  # the opted-out VIP gets nothing
        everyone = [r.contact_id async for r in resolver.resolve_private(
            PrivateAudience(all=True))]
        assert ids[1] not in everyone and set(everyone) == {ids[0], ids[2], ids[3]}
    finally:
        await app.db.dispose()
