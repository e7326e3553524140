"""Social CRM: member profiles, tags, tiers and LTV, KOCs, segments and automations.

Imports only ``models`` and ``config``. Start from :class:`crm.service.CrmService`.
"""

from crm.automations import AutomationService, Sender
from crm.errors import CrmError, NotFound
from crm.importer import CsvImporter, ImportReport
from crm.koc import KocService, RecordingIssuer, RewardIssuer
from crm.members import MemberService, ProfileView
from crm.policy import CrmPolicy
from crm.scoring import ScoringService
from crm.segments import SegmentService
from crm.service import CrmService
from crm.tags import TagRuleService

__all__ = [
    "AutomationService",
    "CrmError",
    "CrmPolicy",
    "CrmService",
    "CsvImporter",
    "ImportReport",
    "KocService",
    "MemberService",
    "NotFound",
    "ProfileView",
    "RecordingIssuer",
    "RewardIssuer",
    "ScoringService",
    "SegmentService",
    "Sender",
    "TagRuleService",
]
