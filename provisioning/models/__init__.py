"""SQLAlchemy 2 models of muninet. Import them from here."""

from provisioning.models.admins import AdminUser, ApiToken
from provisioning.models.audit import AuditEvent
from provisioning.models.base import Base, utcnow
from provisioning.models.dkim import DkimAlgorithm, DkimKey, DkimKeyStatus
from provisioning.models.mail import Alias, AliasDestination, Domain, Mailbox, MailRules
from provisioning.models.members import Member, MemberKind, MemberStatus
from provisioning.models.radius import (
    CapAction,
    IpPool,
    Nas,
    NasVendor,
    PlanAttribute,
    PlanKind,
    RadAcct,
    RadiusCheck,
    RadPostAuth,
    ServicePlan,
    Subscriber,
    SubscriberStatus,
)
from provisioning.models.stats import MailCounter

__all__ = [
    "AdminUser",
    "Alias",
    "AliasDestination",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Domain",
    "MailRules",
    "Mailbox",
    "Member",
    "MemberKind",
    "MemberStatus",
    "utcnow",
]
__all__ += [
    "CapAction",
    "IpPool",
    "Nas",
    "NasVendor",
    "PlanAttribute",
    "PlanKind",
    "RadAcct",
    "RadPostAuth",
    "RadiusCheck",
    "ServicePlan",
    "Subscriber",
    "SubscriberStatus",
]
__all__ += ["DkimAlgorithm", "DkimKey", "DkimKeyStatus"]
__all__ += ["MailCounter"]
