"""The CRM pages for community managers (managers and admins): member search and profile
(tags, opt-out), the segment builder with a live count, tier and LTV charts, the KOC
leaderboard. The CRM service is ``c.extras["crm"]``; when it is None the pages say so and
the API answers 404.

Pages: ``/crm`` (search), ``/crm/members/{id}``, ``/crm/segments``, ``/crm/insights``,
``/crm/koc``; JSON under ``/api/crm/...`` (see each module).
"""

from __future__ import annotations

from console import crm_insights_pages, crm_members_pages, crm_segments_pages
from console.site import Console


def register(c: Console) -> None:
    crm_members_pages.register(c)
    crm_segments_pages.register(c)
    crm_insights_pages.register(c)
