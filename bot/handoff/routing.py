"""Who gets a waiting customer: a pure function over the advisors on shift.

Order: the customer's own advisor (sticky) if eligible; else advisors who speak the
customer's language and have the wanted skills; else those who speak the language; else
anyone. Within a group the least-loaded advisor (relative to capacity) wins, then the one
who got a conversation least recently. Nobody over capacity; members who need care go to
senior advisors only (any advisor when no senior is on shift would be wrong: they wait).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    advisor_id: int
    load: int  # open conversations now
    capacity: int
    languages: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()
    senior: bool = False
    last_assigned_at: datetime | None = None

    @property
    def has_room(self) -> bool:
        return self.load < self.capacity


@dataclass(frozen=True, slots=True)
class Request:
    language: str | None
    skills: frozenset[str] = frozenset()
    needs_senior: bool = False
    sticky_advisor_id: int | None = None
    exclude: frozenset[int] = field(default_factory=frozenset)  # e.g. who let it time out


def eligible(c: Candidate, r: Request) -> bool:
    return c.has_room and c.advisor_id not in r.exclude and (c.senior or not r.needs_senior)


def choose(candidates: Sequence[Candidate], request: Request) -> Candidate | None:
    pool = [c for c in candidates if eligible(c, request)]
    if not pool:
        return None
    if request.sticky_advisor_id is not None:
        for c in pool:
            if c.advisor_id == request.sticky_advisor_id:
                return c
    lang = request.language
    tiers = []
    if lang and request.skills:
        tiers.append([c for c in pool if lang in c.languages and request.skills <= c.skills])
    if lang:
        tiers.append([c for c in pool if lang in c.languages])
    if request.skills:
        tiers.append([c for c in pool if request.skills <= c.skills])
    tiers.append(pool)
    for tier in tiers:
        if tier:
            return min(tier, key=_order)
    return None  # pragma: no cover - the last tier is the non-empty pool


def _order(c: Candidate) -> tuple[float, float, int]:
    last = c.last_assigned_at.timestamp() if c.last_assigned_at else 0.0
    return (c.load / max(1, c.capacity), last, c.advisor_id)
