"""Tunable CRM numbers in one frozen object, passed to the services (never a global)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CrmPolicy:
    """Thresholds for tiers, LTV, KOC scores and automated messages.

    Tiers: a member with no order in ``dormant_after_days`` (or none at all) is *dormant*;
    otherwise R, F and M are scored 1-5 by quintile (``cume_dist``, so ties score alike)
    among buyers and R+F+M >= ``best_min_rfm`` is *best*, >= ``good_min_rfm`` *good*, else
    *regular*. LTV = average order value x purchases per year x expected years retained
    (``expected_years`` per tier); purchases per year uses a tenure of at least
    ``min_tenure_days``.
    """

    dormant_after_days: int = 365
    best_min_rfm: int = 13
    good_min_rfm: int = 9
    min_tenure_days: int = 90
    expected_years: dict[str, float] = field(
        default_factory=lambda: {"best": 5.0, "good": 3.0, "regular": 2.0, "dormant": 0.5}
    )
    #: complaint events (or the ``complaint`` tag) within this many days set "needs care".
    needs_care_days: int = 90
    care_tags: tuple[str, ...] = ("complaint", "needs-care")
    #: KOC score weights.
    koc_join: float = 10.0
    koc_first_order: float = 20.0
    koc_helpful_answer: float = 3.0
    koc_positive_feedback: float = 2.0
    #: automated marketing messages (sequences, birthdays).
    default_timezone: str = "Asia/Tokyo"
    quiet_start_hour: int = 21  # local time; no marketing from 21:00 ...
    quiet_end_hour: int = 9  # ... to 09:00
    max_per_day: int = 1
    max_per_week: int = 3
    #: phone numbers without a country code are read as this country's (81 = Japan).
    default_country_code: str = "81"
    link_code_minutes: int = 15
    #: imported orders older than this fire no purchase / first_order automation events
    #: (importing a shop's history must not enrol old customers in a welcome sequence).
    automation_event_max_age_days: int = 7
