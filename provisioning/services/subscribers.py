"""Dial-up and broadband subscribers: create, change password, suspend, resume, remove.

Credentials. A subscriber logs in over PPP (or a hotspot) with PAP, CHAP or
MS-CHAPv2, and FreeRADIUS must check all three against what muninet stores:

- PAP sends the password itself (hidden with the shared secret), so a one-way
  hash suffices: `password_crypt` holds SHA512-CRYPT (`$6$`, 5000 rounds, glibc's
  default; FreeRADIUS checks it as `Crypt-Password` with crypt(3)). Costlier
  rounds would make every dial-in login cost tens of milliseconds of server CPU.
- MS-CHAPv1/v2 need the NT hash (MD4 of the UTF-16LE password): `password_nt`,
  hex, given to FreeRADIUS as `NT-Password`. It is password-equivalent for
  MS-CHAP (pass-the-hash), though not the password itself.
- CHAP cannot be checked against any hash: the server needs the cleartext.
  `password_clear` holds it only for subscribers created or changed with CHAP
  enabled (`--chap`); it is NULL otherwise, and a CHAP login is then refused.
  When it is present, FreeRADIUS is given only `Cleartext-Password`, which serves
  PAP, CHAP and MS-CHAP alike.

So the database holds, per subscriber, a crypt hash and an NT hash always, and the
cleartext only where CHAP is needed. Attempted passwords are never stored or
logged: the rendered FreeRADIUS configuration turns off its password logging, and
its post-auth query writes only the user name, the answer and the reason.
Audit events never carry passwords either.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date

from passlib.hash import nthash, sha512_crypt
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from provisioning.errors import Conflict, LimitExceeded, NotFound, ValidationError
from provisioning.models import Member, Subscriber, SubscriberStatus
from provisioning.services import members, nas, plans
from provisioning.services.context import ServiceContext

CRYPT_ROUNDS = 5000
MAX_PASSWORD_BYTES = 128  # RFC 2865 User-Password
# FreeRADIUS escapes other characters in SQL queries, so a name must be made of these.
_USERNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._@-]{0,62}[a-z0-9])?$")
_CALLING_ID = re.compile(r"^[A-Za-z0-9+:._-]{1,64}$")


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.match(name):
        raise ValidationError(
            "invalid subscriber name %(username)r: use letters, digits, '.', '-', '_' "
            "and '@' (at most 64, starting and ending with a letter or digit)",
            username=username,
        )
    return name


def get(session: Session, username: str) -> Subscriber:
    subscriber = session.scalars(
        select(Subscriber)
        .where(Subscriber.username == username.strip().lower())
        .options(joinedload(Subscriber.member), joinedload(Subscriber.plan))
    ).one_or_none()
    if subscriber is None:
        raise NotFound("no subscriber %(username)r", username=username)
    return subscriber


def list_subscribers(session: Session, member_slug: str | None = None) -> list[Subscriber]:
    query = select(Subscriber).options(
        joinedload(Subscriber.member), joinedload(Subscriber.plan), joinedload(Subscriber.pool)
    )
    if member_slug is not None:
        query = query.where(Subscriber.member_id == members.get(session, member_slug).id)
    return list(session.scalars(query.order_by(Subscriber.username)))


def lines_used(session: Session, member: Member) -> int:
    """Subscriber lines a member uses (all its subscribers, suspended ones too)."""
    return members.usage(session, member).lines


@dataclass(frozen=True)
class Credentials:
    crypt: str
    nt: str
    clear: str | None


def make_credentials(ctx: ServiceContext, password: str, *, chap: bool) -> Credentials:
    """The stored forms of a password (see the module docstring)."""
    ctx.hasher.check_policy(password)
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValidationError(
            "password too long for RADIUS: at most %(max)s bytes", max=MAX_PASSWORD_BYTES
        )
    return Credentials(
        crypt=sha512_crypt.using(rounds=CRYPT_ROUNDS).hash(password),
        nt=nthash.hash(password).lower(),
        clear=password if chap else None,
    )


def _check_static_ip(session: Session, ip: str, subscriber_id: int | None = None) -> str:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise ValidationError("not an IP address: %(ip)r", ip=ip) from None
    if address.version != 4:
        raise ValidationError("a static address must be IPv4 (Framed-IP-Address)")
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        raise ValidationError("%(address)s cannot be a subscriber's address", address=address)
    text = str(address)
    holder = session.scalars(select(Subscriber).where(Subscriber.static_ip == text)).one_or_none()
    if holder is not None and holder.id != subscriber_id:
        raise Conflict(
            "%(address)s is the static address of subscriber %(subscriber)r",
            address=text,
            subscriber=holder.username,
        )
    pool = nas.pool_holding(session, text)
    if pool is not None:
        raise Conflict(
            "%(address)s is inside IP pool %(pool)r (%(network)s)",
            address=text,
            pool=pool.name,
            network=pool.network,
        )
    return text


def _check_calling_id(value: str) -> str:
    value = value.strip()
    if not _CALLING_ID.match(value):
        raise ValidationError(
            "invalid Calling-Station-Id %(value)r: a phone number or MAC address "
            "(letters, digits, '+', ':', '.', '-', '_')",
            value=value,
        )
    return value.lower()


def _check_notes(notes: str) -> str:
    notes = notes.strip()
    if len(notes) > 2000:
        raise ValidationError("notes are longer than 2000 characters")
    return notes


def create(
    ctx: ServiceContext,
    username: str,
    member_slug: str,
    plan_name: str,
    password: str,
    *,
    chap: bool = False,
    static_ip: str | None = None,
    pool_name: str | None = None,
    calling_station_id: str | None = None,
    expires_on: date | None = None,
    notes: str = "",
) -> Subscriber:
    """Create a subscriber line for a member, within its package's `max_lines`."""
    username = normalize_username(username)
    credentials = make_credentials(ctx, password, chap=chap)
    member = members.get(ctx.session, member_slug, for_update=True)
    members.require_active(member)
    plan = plans.get(ctx.session, plan_name)
    if ctx.session.scalar(select(Subscriber.id).where(Subscriber.username == username)):
        raise Conflict("subscriber %(username)r already exists", username=username)
    used = lines_used(ctx.session, member)
    if used + 1 > member.max_lines:
        raise LimitExceeded(
            "member %(member)r has used all %(limit)s subscriber lines of its package",
            member=member.slug,
            limit=member.max_lines,
        )
    if static_ip is not None and pool_name is not None:
        raise ValidationError("give a static address or a pool, not both")
    subscriber = Subscriber(
        username=username,
        member=member,
        plan=plan,
        password_crypt=credentials.crypt,
        password_nt=credentials.nt,
        password_clear=credentials.clear,
        static_ip=_check_static_ip(ctx.session, static_ip) if static_ip else None,
        pool=nas.get_pool(ctx.session, pool_name) if pool_name else None,
        calling_station_id=_check_calling_id(calling_station_id) if calling_station_id else None,
        expires_on=expires_on,
        notes=_check_notes(notes),
    )
    ctx.session.add(subscriber)
    ctx.session.flush()
    ctx.audit(
        "subscriber.create",
        username,
        member=member.slug,
        plan=plan.name,
        chap=chap,
        static_ip=subscriber.static_ip,
        pool=pool_name,
        calling_station_id=subscriber.calling_station_id,
        expires_on=expires_on.isoformat() if expires_on else None,
    )
    return subscriber


def set_password(
    ctx: ServiceContext, username: str, password: str, *, chap: bool | None = None
) -> Subscriber:
    """A new password; `chap` None keeps whether the cleartext is stored."""
    subscriber = get(ctx.session, username)
    keep_clear = subscriber.chap_enabled if chap is None else chap
    credentials = make_credentials(ctx, password, chap=keep_clear)
    subscriber.password_crypt = credentials.crypt
    subscriber.password_nt = credentials.nt
    subscriber.password_clear = credentials.clear
    ctx.audit("subscriber.password", subscriber.username, chap=keep_clear)
    return subscriber


def set_status(
    ctx: ServiceContext, username: str, status: SubscriberStatus, reason: str = ""
) -> Subscriber:
    """Suspend or resume: a suspended subscriber's next login is rejected with a reason."""
    subscriber = get(ctx.session, username)
    if subscriber.status is status:
        # One message per status (not the status as a parameter), so translations agree.
        if status is SubscriberStatus.ACTIVE:
            raise ValidationError(
                "subscriber %(subscriber)r is already active", subscriber=subscriber.username
            )
        raise ValidationError(
            "subscriber %(subscriber)r is already suspended", subscriber=subscriber.username
        )
    reason = reason.strip()
    if len(reason) > 500 or any(ord(ch) < 32 for ch in reason):
        raise ValidationError("reason: at most 500 characters, no control characters")
    previous = subscriber.status
    subscriber.status = status
    subscriber.status_reason = reason
    ctx.audit(
        "subscriber.status",
        subscriber.username,
        status=status.value,
        previous=previous.value,
        reason=reason,
    )
    return subscriber


def update(
    ctx: ServiceContext,
    username: str,
    *,
    plan_name: str | None = None,
    static_ip: str | plans.Unset | None = plans.UNSET,
    calling_station_id: str | plans.Unset | None = plans.UNSET,
    expires_on: date | plans.Unset | None = plans.UNSET,
) -> Subscriber:
    """Move to another plan, change or clear the static address, binding or expiry."""
    subscriber = get(ctx.session, username)
    changes: dict[str, object] = {}
    if plan_name is not None:
        subscriber.plan = plans.get(ctx.session, plan_name)
        changes["plan"] = subscriber.plan.name
    if not isinstance(static_ip, plans.Unset):
        subscriber.static_ip = (
            _check_static_ip(ctx.session, static_ip, subscriber.id) if static_ip else None
        )
        if subscriber.static_ip:
            subscriber.pool = None
        changes["static_ip"] = subscriber.static_ip
    if not isinstance(calling_station_id, plans.Unset):
        subscriber.calling_station_id = (
            _check_calling_id(calling_station_id) if calling_station_id else None
        )
        changes["calling_station_id"] = subscriber.calling_station_id
    if not isinstance(expires_on, plans.Unset):
        subscriber.expires_on = expires_on
        changes["expires_on"] = expires_on.isoformat() if expires_on else None
    ctx.session.flush()
    ctx.audit("subscriber.update", subscriber.username, **changes)
    return subscriber


def remove(ctx: ServiceContext, username: str) -> None:
    """Delete the account; its accounting history stays in radacct."""
    subscriber = get(ctx.session, username)
    ctx.session.delete(subscriber)
    ctx.audit("subscriber.remove", subscriber.username, member=subscriber.member.slug)


def as_dict(subscriber: Subscriber, today: date | None = None) -> dict[str, object]:
    today = today or date.today()
    return {
        "username": subscriber.username,
        "member": subscriber.member.slug,
        "plan": subscriber.plan.name,
        "status": subscriber.effective_status(today),
        "status_reason": subscriber.status_reason,
        "chap": subscriber.chap_enabled,
        "static_ip": subscriber.static_ip,
        "pool": subscriber.pool.name if subscriber.pool else None,
        "calling_station_id": subscriber.calling_station_id,
        "expires_on": subscriber.expires_on.isoformat() if subscriber.expires_on else None,
        "notes": subscriber.notes,
        "created_at": subscriber.created_at.isoformat(),
    }
