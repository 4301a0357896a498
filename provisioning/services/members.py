"""Members of the association and their service packages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.addresses import parse_destination
from provisioning.errors import (
    Conflict,
    LimitExceeded,
    NotFound,
    NotPermitted,
    Term,
    ValidationError,
)
from provisioning.models import (
    Alias,
    Domain,
    Mailbox,
    Member,
    MemberKind,
    MemberStatus,
    Subscriber,
)
from provisioning.services.context import ServiceContext
from provisioning.sizes import format_size

# A slug names the member's addresses on the shared domain (`<slug>@info...`), so it
# follows the hosted local-part rules, in plain ASCII.
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Usage:
    """How much of its package a member uses."""

    mailboxes: int
    quota_allocated: int
    aliases: int
    domains: int
    lines: int = 0  # subscribers (suspended ones too)


def get(session: Session, slug: str, *, for_update: bool = False) -> Member:
    query = select(Member).where(Member.slug == slug.strip().lower())
    if for_update:
        query = query.with_for_update()
    member = session.scalars(query).one_or_none()
    if member is None:
        raise NotFound("no member %(slug)r", slug=slug)
    return member


def list_members(session: Session) -> list[Member]:
    return list(session.scalars(select(Member).order_by(Member.slug)))


def usage(session: Session, member: Member) -> Usage:
    mailboxes, quota = session.execute(
        select(func.count(Mailbox.id), func.coalesce(func.sum(Mailbox.quota_bytes), 0)).where(
            Mailbox.member_id == member.id
        )
    ).one()
    aliases = session.scalar(select(func.count(Alias.id)).where(Alias.member_id == member.id))
    domains = session.scalar(select(func.count(Domain.id)).where(Domain.member_id == member.id))
    lines = session.scalar(
        select(func.count(Subscriber.id)).where(Subscriber.member_id == member.id)
    )
    return Usage(
        mailboxes=mailboxes,
        quota_allocated=int(quota),
        aliases=aliases or 0,
        domains=domains or 0,
        lines=lines or 0,
    )


def require_active(member: Member) -> None:
    """Refuse changes that add services for a member that is not active."""
    if member.status is not MemberStatus.ACTIVE:
        reason = f" ({member.status_reason})" if member.status_reason else ""
        # One message per status (not the status as a parameter), so translations agree.
        if member.status is MemberStatus.SUSPENDED:
            raise NotPermitted(
                "member %(member)r is suspended%(reason)s", member=member.slug, reason=reason
            )
        raise NotPermitted(
            "member %(member)r is ended%(reason)s", member=member.slug, reason=reason
        )


def parse_kind(kind: str) -> MemberKind:
    try:
        return MemberKind(kind.strip().lower())
    except ValueError:
        choices = ", ".join(k.value for k in MemberKind)
        raise ValidationError(
            "unknown member kind %(kind)r: choose one of %(choices)s", kind=kind, choices=choices
        ) from None


def _check_text(value: str, field: str, max_length: int, *, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise ValidationError("%(field)s must not be empty", field=field)
    if len(value) > max_length:
        raise ValidationError(
            "%(field)s is longer than %(max_length)s characters", field=field, max_length=max_length
        )
    if any(ord(ch) < 32 for ch in value):
        raise ValidationError("%(field)s must not contain control characters", field=field)
    return value


def _check_limit(value: int, field: str) -> int:
    if value < 0:
        raise ValidationError("%(field)s must not be negative", field=field)
    return value


def _check_contract(start: date | None, end: date | None) -> None:
    if start and end and end < start:
        raise ValidationError("contract end is before its start")


def create(
    ctx: ServiceContext,
    slug: str,
    name: str,
    *,
    kind: str = "municipality",
    max_mailboxes: int | None = None,
    mail_quota: int | None = None,
    max_lines: int | None = None,
    contact_name: str = "",
    contact_email: str = "",
    contact_phone: str = "",
    contract_number: str = "",
    contract_start: date | None = None,
    contract_end: date | None = None,
) -> Member:
    slug = slug.strip().lower()
    if not _SLUG.match(slug):
        raise ValidationError(
            "invalid member slug %(slug)r: use lower-case ASCII letters, digits and "
            "hyphens (it names the member's addresses, e.g. glusk@info.association.pl)",
            slug=slug,
        )
    if ctx.session.scalar(select(Member.id).where(Member.slug == slug)) is not None:
        raise Conflict("member %(slug)r already exists", slug=slug)
    defaults = ctx.settings.defaults
    _check_contract(contract_start, contract_end)
    member = Member(
        slug=slug,
        name=_check_text(name, Term("member name"), 200, required=True),
        kind=parse_kind(kind),
        max_mailboxes=_check_limit(
            defaults.member_max_mailboxes if max_mailboxes is None else max_mailboxes,
            Term("max mailboxes"),
        ),
        mail_quota_bytes=_check_limit(
            defaults.member_mail_quota if mail_quota is None else mail_quota, Term("mail quota")
        ),
        max_lines=_check_limit(
            defaults.member_max_lines if max_lines is None else max_lines, Term("max lines")
        ),
        contact_name=_check_text(contact_name, Term("contact name"), 200),
        contact_email=parse_destination(contact_email) if contact_email.strip() else "",
        contact_phone=_check_text(contact_phone, Term("contact phone"), 40),
        contract_number=_check_text(contract_number, Term("contract number"), 100),
        contract_start=contract_start,
        contract_end=contract_end,
    )
    ctx.session.add(member)
    ctx.session.flush()
    ctx.audit("member.create", slug, name=member.name, kind=member.kind.value)
    return member


def update_package(
    ctx: ServiceContext,
    slug: str,
    *,
    max_mailboxes: int | None = None,
    mail_quota: int | None = None,
    max_lines: int | None = None,
) -> Member:
    """Change a member's package; never below what the member already uses."""
    member = get(ctx.session, slug, for_update=True)
    used = usage(ctx.session, member)
    changes: dict[str, int] = {}
    if max_mailboxes is not None:
        if _check_limit(max_mailboxes, Term("max mailboxes")) < used.mailboxes:
            raise LimitExceeded(
                "member %(member)r has %(used)s mailboxes; cannot lower its limit to %(limit)s",
                member=member.slug,
                used=used.mailboxes,
                limit=max_mailboxes,
            )
        member.max_mailboxes = changes["max_mailboxes"] = max_mailboxes
    if mail_quota is not None:
        if _check_limit(mail_quota, Term("mail quota")) < used.quota_allocated:
            raise LimitExceeded(
                "member %(member)r has %(allocated)s allocated to mailboxes; cannot lower "
                "its quota to %(quota)s",
                member=member.slug,
                allocated=format_size(used.quota_allocated),
                quota=format_size(mail_quota),
            )
        member.mail_quota_bytes = changes["mail_quota_bytes"] = mail_quota
    if max_lines is not None:
        if _check_limit(max_lines, Term("max lines")) < used.lines:
            raise LimitExceeded(
                "member %(member)r has %(used)s lines; cannot lower its limit to %(limit)s",
                member=member.slug,
                used=used.lines,
                limit=max_lines,
            )
        member.max_lines = changes["max_lines"] = max_lines
    ctx.audit("member.update", member.slug, **changes)
    return member


def set_status(ctx: ServiceContext, slug: str, status: MemberStatus, reason: str = "") -> Member:
    """Suspend, resume or end a member. Its mailboxes and lines stop working while suspended."""
    member = get(ctx.session, slug, for_update=True)
    if member.status is status:
        raise _already(member.slug, status)
    previous = member.status
    member.status = status
    member.status_reason = _check_text(reason, Term("reason"), 500)
    ctx.audit(
        "member.status", member.slug, status=status.value, previous=previous.value, reason=reason
    )
    return member


def _already(slug: str, status: MemberStatus) -> ValidationError:
    """One message per status (not the status as a parameter), so translations agree."""
    if status is MemberStatus.ACTIVE:
        return ValidationError("member %(member)r is already active", member=slug)
    if status is MemberStatus.SUSPENDED:
        return ValidationError("member %(member)r is already suspended", member=slug)
    return ValidationError("member %(member)r is already ended", member=slug)


def set_details(
    ctx: ServiceContext,
    slug: str,
    *,
    name: str,
    kind: str,
    contact_name: str,
    contact_email: str,
    contact_phone: str,
    contract_number: str,
    contract_start: date | None,
    contract_end: date | None,
) -> Member:
    """Set a member's name, kind, contact and contract (not its slug or package).

    Every field is given (a form sends them all); only the ones that change are audited.
    """
    member = get(ctx.session, slug, for_update=True)
    _check_contract(contract_start, contract_end)
    wanted: dict[str, object] = {
        "name": _check_text(name, Term("member name"), 200, required=True),
        "kind": parse_kind(kind),
        "contact_name": _check_text(contact_name, Term("contact name"), 200),
        "contact_email": parse_destination(contact_email) if contact_email.strip() else "",
        "contact_phone": _check_text(contact_phone, Term("contact phone"), 40),
        "contract_number": _check_text(contract_number, Term("contract number"), 100),
        "contract_start": contract_start,
        "contract_end": contract_end,
    }
    changes = {field: value for field, value in wanted.items() if getattr(member, field) != value}
    for field, value in changes.items():
        setattr(member, field, value)
    if changes:
        shown = {
            field: value.isoformat() if isinstance(value, date) else value
            for field, value in changes.items()
        }
        ctx.audit("member.details", member.slug, **shown)
    return member
