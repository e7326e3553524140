"""Kizuna's own web server (aiohttp): health, metrics, web chat, Telegram webhook, console."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.core.metrics import Metrics

HealthCheck = Callable[[], Awaitable[dict[str, str]]]


def build_web_app(*, metrics: Metrics, health: HealthCheck) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)

    async def healthz(_request: web.Request) -> web.Response:
        checks = await health()
        ok = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if ok else "degraded", "checks": checks}, status=200 if ok else 503
        )

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def root(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/chat/demo")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/", root)
    return app


def same_origin(request: web.Request) -> bool:
    """Refuse a browser socket opened by another site's page (cross-site WebSocket hijacking).

    Browsers always send ``Origin`` on a WebSocket handshake and a page cannot forge it;
    non-browser clients may omit it. Behind a proxy the public host may arrive as
    ``X-Forwarded-Host``, which a browser cannot set on a handshake either.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    hosts = {request.host.lower()}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip().lower())
    return bool(netloc) and netloc in hosts
