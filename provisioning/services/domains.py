"""Mail domains: the association's shared domain and members' own domains."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.addresses import parse_domain
from provisioning.errors import Conflict, NotFound
from provisioning.models import Alias, Domain, Mailbox
from provisioning.services import members
from provisioning.services.context import ServiceContext


def get(session: Session, name: str, *, for_update: bool = False) -> Domain:
    """Find a hosted domain by either of its forms (Unicode or punycode)."""
    ascii_name = parse_domain(name).ascii
    query = select(Domain).where(Domain.ascii_name == ascii_name)
    if for_update:
        query = query.with_for_update()
    domain = session.scalars(query).one_or_none()
    if domain is None:
        raise NotFound(f"domain {name.strip()!r} is not hosted here")
    return domain


def list_domains(session: Session) -> list[Domain]:
    return list(session.scalars(select(Domain).order_by(Domain.name)))


def counts(session: Session, domain: Domain) -> tuple[int, int]:
    """(mailboxes, aliases) in a domain."""
    mailboxes = session.scalar(select(func.count(Mailbox.id)).where(Mailbox.domain_id == domain.id))
    aliases = session.scalar(select(func.count(Alias.id)).where(Alias.domain_id == domain.id))
    return mailboxes or 0, aliases or 0


def create(
    ctx: ServiceContext,
    name: str,
    *,
    member_slug: str | None = None,
    utf8_local_parts: bool = False,
) -> Domain:
    """Host a domain: a member's own (with member_slug) or the association's shared one."""
    parsed = parse_domain(name)
    member = None
    if member_slug is not None:
        member = members.get(ctx.session, member_slug, for_update=True)
        members.require_active(member)
    existing = ctx.session.scalar(
        select(Domain.id).where((Domain.ascii_name == parsed.ascii) | (Domain.name == parsed.name))
    )
    if existing is not None:
        raise Conflict(f"domain {parsed.name!r} is already hosted")
    domain = Domain(
        name=parsed.name,
        ascii_name=parsed.ascii,
        member=member,
        utf8_local_parts=utf8_local_parts,
    )
    ctx.session.add(domain)
    ctx.session.flush()
    ctx.audit(
        "domain.create",
        parsed.name,
        ascii=parsed.ascii,
        member=member.slug if member else None,
        utf8_local_parts=utf8_local_parts,
    )
    return domain


def remove(ctx: ServiceContext, name: str) -> None:
    """Stop hosting a domain; refused while mailboxes or aliases live in it."""
    domain = get(ctx.session, name, for_update=True)
    mailboxes, aliases = counts(ctx.session, domain)
    if mailboxes or aliases:
        raise Conflict(
            f"domain {domain.name!r} still has {mailboxes} mailboxes and {aliases} aliases; "
            "remove them first"
        )
    ctx.session.delete(domain)
    ctx.audit("domain.remove", domain.name, ascii=domain.ascii_name)
