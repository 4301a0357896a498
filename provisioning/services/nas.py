"""Network access servers (the RADIUS clients) and the IP pools configured on them.

FreeRADIUS reads its clients only when it starts, so muninet renders the `nas`
table into FreeRADIUS's `clients.conf`; `fingerprint()` changes with every NAS
change, and the FreeRADIUS supervisor restarts the server when it does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import string

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.errors import Conflict, NotFound, ValidationError
from provisioning.models import IpPool, Nas, NasVendor, Subscriber
from provisioning.services.context import ServiceContext

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
# The secret is written into clients.conf between double quotes: no quote, no
# backslash, no whitespace; RFC 2865 asks for at least 16 octets, old NASes cap it.
_SECRET_CHARS = set(string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~")
MIN_SECRET = 8
MAX_SECRET = 64


def _check_name(name: str, what: str) -> str:
    name = name.strip().lower()
    if not _NAME.match(name):
        if what == "NAS":  # one message each, so that translations can name the thing
            raise ValidationError(
                "invalid NAS name %(name)r: use lower-case letters, digits, '.', '-' and '_'",
                name=name,
            )
        raise ValidationError(
            "invalid pool name %(name)r: use lower-case letters, digits, '.', '-' and '_'",
            name=name,
        )
    return name


def check_secret(secret: str) -> str:
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise ValidationError(
            "the shared secret must have %(min)s to %(max)s characters",
            min=MIN_SECRET,
            max=MAX_SECRET,
        )
    bad = sorted(set(secret) - _SECRET_CHARS)
    if bad:
        raise ValidationError(
            "the shared secret may hold ASCII letters, digits and punctuation other than "
            "quotes and backslash; not %(characters)s",
            characters=", ".join(repr(c) for c in bad),
        )
    return secret


def generate_secret() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(24))


def parse_vendor(vendor: str) -> NasVendor:
    try:
        return NasVendor(vendor.strip().lower())
    except ValueError:
        choices = ", ".join(v.value for v in NasVendor)
        raise ValidationError(
            "unknown NAS vendor %(vendor)r: choose one of %(choices)s",
            vendor=vendor,
            choices=choices,
        ) from None


def parse_address(text: str) -> str:
    """An IP address or a network in CIDR form, normalised ("192.0.2.7", "10.1.0.0/16")."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValidationError("not an IP address or network: %(text)r", text=text) from None
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def get(session: Session, name: str) -> Nas:
    nas = session.scalars(select(Nas).where(Nas.name == name.strip().lower())).one_or_none()
    if nas is None:
        raise NotFound("no NAS %(name)r", name=name)
    return nas


def list_nas(session: Session) -> list[Nas]:
    return list(session.scalars(select(Nas).order_by(Nas.name)))


def fingerprint(session: Session) -> str:
    """Changes whenever a NAS is added, removed or changed (FreeRADIUS needs a restart)."""
    digest = hashlib.sha256()
    for nas in list_nas(session):
        digest.update(f"{nas.name}\0{nas.address}\0{nas.secret}\0{nas.vendor.value}\n".encode())
    return digest.hexdigest()


def create(
    ctx: ServiceContext,
    name: str,
    address: str,
    secret: str,
    *,
    vendor: str = "other",
    coa_port: int = 3799,
    description: str = "",
) -> Nas:
    name = _check_name(name, "NAS")
    address = parse_address(address)
    if ctx.session.scalar(select(Nas.id).where(Nas.name == name)) is not None:
        raise Conflict("NAS %(name)r already exists", name=name)
    if ctx.session.scalar(select(Nas.name).where(Nas.address == address)) is not None:
        raise Conflict("a NAS with address %(address)s already exists", address=address)
    if not 1 <= coa_port <= 65535:
        raise ValidationError("not a port: %(port)s", port=coa_port)
    description = description.strip()
    if len(description) > 200 or any(ord(ch) < 32 for ch in description):
        raise ValidationError("description: at most 200 characters, no control characters")
    nas = Nas(
        name=name,
        address=address,
        secret=check_secret(secret),
        vendor=parse_vendor(vendor),
        coa_port=coa_port,
        description=description,
    )
    ctx.session.add(nas)
    ctx.session.flush()
    ctx.audit("nas.create", name, address=address, vendor=nas.vendor.value, coa_port=coa_port)
    return nas


def remove(ctx: ServiceContext, name: str) -> None:
    nas = get(ctx.session, name)
    ctx.session.delete(nas)
    ctx.audit("nas.remove", nas.name, address=nas.address)


def for_address(session: Session, ip: str) -> Nas | None:
    """The NAS an address belongs to: an exact entry first, else the network holding it."""
    address = ipaddress.ip_address(ip)
    best: Nas | None = None
    best_prefix = -1
    for nas in list_nas(session):
        network = ipaddress.ip_network(nas.address, strict=False)
        if address in network and network.prefixlen > best_prefix:
            best, best_prefix = nas, network.prefixlen
    return best


# -- IP pools ---------------------------------------------------------------------------------


def get_pool(session: Session, name: str) -> IpPool:
    pool = session.scalars(select(IpPool).where(IpPool.name == name.strip().lower())).one_or_none()
    if pool is None:
        raise NotFound("no IP pool %(name)r", name=name)
    return pool


def list_pools(session: Session) -> list[IpPool]:
    return list(session.scalars(select(IpPool).order_by(IpPool.name)))


def create_pool(ctx: ServiceContext, name: str, network: str, description: str = "") -> IpPool:
    """A pool the NASes hand addresses out of; RADIUS names it in `Framed-Pool`."""
    name = _check_name(name, "pool")
    try:
        net = ipaddress.ip_network(network.strip(), strict=True)
    except ValueError as exc:
        raise ValidationError(
            "not a network: %(network)r (%(reason)s)", network=network, reason=str(exc)
        ) from None
    if ctx.session.scalar(select(IpPool.id).where(IpPool.name == name)) is not None:
        raise Conflict("IP pool %(name)r already exists", name=name)
    for other in list_pools(ctx.session):
        if net.overlaps(ipaddress.ip_network(other.network)):
            raise Conflict(
                "%(net)s overlaps IP pool %(pool)r (%(network)s)",
                net=net,
                pool=other.name,
                network=other.network,
            )
    static = ctx.session.scalars(
        select(Subscriber.static_ip).where(Subscriber.static_ip.is_not(None))
    )
    for ip in static:
        if ip is not None and ipaddress.ip_address(ip) in net:
            raise Conflict(
                "%(net)s holds the static address %(ip)s of a subscriber", net=net, ip=ip
            )
    pool = IpPool(name=name, network=str(net), description=description.strip()[:200])
    ctx.session.add(pool)
    ctx.session.flush()
    ctx.audit("pool.create", name, network=str(net))
    return pool


def pool_holding(session: Session, ip: str) -> IpPool | None:
    address = ipaddress.ip_address(ip)
    for pool in list_pools(session):
        if address in ipaddress.ip_network(pool.network):
            return pool
    return None
