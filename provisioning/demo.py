"""An example association, so that a newcomer sees a living system.

Polish and Bulgarian members, the shared domain info.association.pl, a member's
own IDN domain with Cyrillic addresses, aliases and a catch-all. Passwords are
generated: nothing here is a known default password.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from provisioning.models import Domain
from provisioning.passwords import generate_password
from provisioning.services import admins, aliases, domains, mailboxes, members
from provisioning.services.context import ServiceContext

SHARED_DOMAIN = "info.association.pl"

MEMBERS = [
    ("biuro", "Związek Gmin Przykładowych — biuro", "association"),
    ("glusk", "Gmina Głusk", "municipality"),
    ("powiat-lubelski", "Starostwo Powiatowe w Lublinie", "county"),
    ("sp1-glusk", "Szkoła Podstawowa nr 1 w Głusku", "school"),
    ("biblioteka-glusk", "Gminna Biblioteka Publiczna w Głusku", "library"),
    ("trun", "Община Трън", "municipality"),
]
OWN_DOMAINS = [("община-трън.бг", "trun", True)]
MAILBOXES = [
    ("biuro@info.association.pl", "biuro", "Biuro Związku"),
    ("glusk@info.association.pl", "glusk", "Urząd Gminy Głusk"),
    ("glusk.sekretariat@info.association.pl", "glusk", "Sekretariat"),
    ("glusk.ksiegowosc@info.association.pl", "glusk", "Księgowość"),
    ("powiat-lubelski@info.association.pl", "powiat-lubelski", "Starostwo"),
    ("sp1-glusk@info.association.pl", "sp1-glusk", "Szkoła Podstawowa nr 1"),
    ("sp1-glusk.dyrektor@info.association.pl", "sp1-glusk", "Dyrektor szkoły"),
    ("biblioteka-glusk@info.association.pl", "biblioteka-glusk", "Biblioteka"),
    ("trun@info.association.pl", "trun", "Община Трън"),
    ("кмет@община-трън.бг", "trun", "Кмет на общината"),
    ("деловодство@община-трън.бг", "trun", "Деловодство"),
]
ALIASES = [
    ("postmaster@info.association.pl", ["biuro@info.association.pl"], "biuro"),
    ("abuse@info.association.pl", ["biuro@info.association.pl"], "biuro"),
    (
        "glusk.urzad@info.association.pl",
        ["glusk@info.association.pl", "glusk.sekretariat@info.association.pl"],
        "glusk",
    ),
    ("@община-трън.бг", ["деловодство@община-трън.бг"], None),
]
ADMINS = [("admin", None), ("glusk-admin", "glusk")]


@dataclass
class DemoResult:
    loaded: bool
    credentials: list[tuple[str, str]] = field(default_factory=list)


def load(ctx: ServiceContext) -> DemoResult:
    """Load the demo association unless it is there already (then change nothing)."""
    present = ctx.session.scalar(select(Domain.id).where(Domain.name == SHARED_DOMAIN))
    if present is not None:
        return DemoResult(loaded=False)
    result = DemoResult(loaded=True)
    for slug, name, kind in MEMBERS:
        members.create(ctx, slug, name, kind=kind, contact_email=f"{slug}@{SHARED_DOMAIN}")
    domains.create(ctx, SHARED_DOMAIN)
    for domain, owner, utf8 in OWN_DOMAINS:
        domains.create(ctx, domain, member_slug=owner, utf8_local_parts=utf8)
    for address, owner, display_name in MAILBOXES:
        password = generate_password()
        mailboxes.create(ctx, address, owner, password=password, display_name=display_name)
        result.credentials.append((address, password))
    for source, targets, alias_owner in ALIASES:
        aliases.create(ctx, source, targets, member_slug=alias_owner)
    for username, admin_member in ADMINS:
        password = generate_password()
        admins.create(ctx, username, password, member_slug=admin_member)
        result.credentials.append((f"admin {username}", password))
    return result
