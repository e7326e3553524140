"""Community managers' pages (managers and admins): groups with their fill levels and pools,
entry links with QR codes, drops (calendar, new drop with a preview, delivery reports).

The pages live in ``groups_pages`` and ``drops_pages`` (shared pieces in ``community_pages``);
they use the community runtime ``c.extras["community"]`` and say so when it is off.
"""

from __future__ import annotations

from console import drops_pages, groups_pages
from console.site import Console


def register(c: Console) -> None:
    groups_pages.register(c)
    drops_pages.register(c)
