"""HTTP endpoints of the community features (aiohttp), mounted on the app's web server.

``POST /api/coupons/redeem`` - the shop marks a coupon used::

    Authorization: Bearer kz_...            (a key made with 'kizuna coupons apikey create')
    {"code": "SPRING-7KQ2M9XW3P", "reference": "order-1234"}

200 ``{"ok": true, ...}``; 401 bad key; 404 unknown code; 409 already redeemed;
410 expired / not started; 422 bad input.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from community.coupons import CouponService
from community.errors import CouponError

STATUS = {
    "unknown": 404, "not_issued": 404, "already_redeemed": 409, "expired": 410,
    "not_started": 410, "reference_required": 422,
}


def register_routes(app: web.Application, coupons: CouponService) -> None:
    async def redeem(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else \
            request.headers.get("X-Api-Key", "")
        who = await coupons.check_api_key(key, "coupons:redeem")
        if who is None:
            return _error(401, "unauthorized", "missing or invalid API key")
        try:
            body: Any = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            return _error(422, "bad_json", "body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            return _error(422, "bad_input", "give {\"code\": \"...\"}")
        ref = body.get("reference")
        if ref is not None and not isinstance(ref, str):
            return _error(422, "bad_input", "reference must be a string")
        try:
            done = await coupons.redeem(body["code"], reference=ref, by=f"api:{who}")
        except CouponError as exc:
            return _error(STATUS.get(exc.reason, 400), exc.reason, str(exc))
        return web.json_response({
            "ok": True, "code": done.code, "campaign": done.campaign,
            "redeemed_at": done.redeemed_at.isoformat(),
        })

    app.router.add_post("/api/coupons/redeem", redeem)


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": reason, "message": message},
                             status=status)
