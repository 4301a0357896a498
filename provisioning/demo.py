"""An example association, so that a newcomer sees a living system.

Polish and Bulgarian members, the shared domain info.association.pl, a member's
own IDN domain with Cyrillic addresses, aliases and a catch-all, and the ISP side:
three service plans, an address pool, a NAS on 127.0.0.1 (so that `radtest`
against `muninet run` works) and a few subscribers. Passwords and the NAS secret
are generated: nothing here is a known default password.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from provisioning.models import Domain
from provisioning.passwords import generate_password
from provisioning.services import admins, aliases, domains, mailboxes, members, nas, plans
from provisioning.services import subscribers as subscriber_service
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
MiB, GiB = 1024**2, 1024**3
PLANS: list[dict[str, object]] = [
    {
        "name": "dsl-20",
        "kind": "pppoe",
        "download_bps": 20_000_000,
        "upload_bps": 2_000_000,
        "data_cap_bytes": 200 * GiB,
        "description": "Broadband for offices",
    },
    {
        "name": "dialup-56k",
        "kind": "dialup",
        "download_bps": 56_000,
        "upload_bps": 33_600,
        "time_cap_seconds": 100 * 3600,
        "session_timeout": 4 * 3600,
        "idle_timeout": 600,
        "port_limit": 2,
        "simultaneous_use": 2,
        "description": "Dial-up with multilink ISDN",
    },
    {
        "name": "wireless-fair",
        "kind": "wireless",
        "download_bps": 10_000_000,
        "upload_bps": 1_000_000,
        "data_cap_bytes": 50 * GiB,
        "cap_action": "throttle",
        "fair_use_download_bps": 1_000_000,
        "fair_use_upload_bps": 256_000,
        "description": "Wireless, throttled over 50G a month",
    },
]
# (user name, member, plan, options)
SUBSCRIBERS: list[tuple[str, str, str, dict[str, object]]] = [
    ("glusk.urzad", "glusk", "dsl-20", {"static_ip": "10.20.0.10"}),
    ("sp1-glusk", "sp1-glusk", "dsl-20", {"pool_name": "dyn-pppoe"}),
    (
        "biblioteka-glusk.dialup",
        "biblioteka-glusk",
        "dialup-56k",
        {"chap": True, "calling_station_id": "+48815550123"},
    ),
    ("trun.wifi", "trun", "wireless-fair", {"pool_name": "dyn-pppoe"}),
]


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
    _load_isp(ctx, result)
    return result


def _load_isp(ctx: ServiceContext, result: DemoResult) -> None:
    for plan in PLANS:
        plans.create(ctx, **plan)  # type: ignore[arg-type]
    nas.create_pool(ctx, "dyn-pppoe", "10.64.0.0/16", "PPPoE clients")
    secret = nas.generate_secret()
    nas.create(ctx, "nas-local", "127.0.0.1", secret, vendor="mikrotik", description="radtest")
    result.credentials.append(("RADIUS secret of NAS nas-local (127.0.0.1)", secret))
    for username, owner, plan_name, options in SUBSCRIBERS:
        password = generate_password()
        subscriber_service.create(ctx, username, owner, plan_name, password, **options)  # type: ignore[arg-type]
        result.credentials.append((f"subscriber {username}", password))
