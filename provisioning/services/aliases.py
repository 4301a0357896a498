"""Aliases and catch-alls: a hosted source address forwarded to local or external destinations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from provisioning.addresses import address_key, parse_destination, parse_domain, split_address
from provisioning.errors import NotFound, ValidationError
from provisioning.models import Alias, AliasDestination, Domain, Mailbox
from provisioning.services import addressing, members
from provisioning.services.context import ServiceContext

MAX_DESTINATIONS = 50


def get(session: Session, source: str) -> Alias:
    hosted = addressing.parse_hosted(session, source, catch_all=True)
    alias = session.scalars(select(Alias).where(Alias.address == hosted.address.key)).one_or_none()
    if alias is None:
        raise NotFound("no alias %(alias)r", alias=source.strip())
    return alias


def list_aliases(session: Session, member_slug: str | None = None) -> list[Alias]:
    query = select(Alias).options(
        joinedload(Alias.domain), joinedload(Alias.member), selectinload(Alias.destinations)
    )
    if member_slug is not None:
        query = query.where(Alias.member_id == members.get(session, member_slug).id)
    return list(session.scalars(query.order_by(Alias.address)))


def _hosted_key(session: Session, destination: str) -> tuple[str, str] | None:
    """(key, display form) of a destination in a hosted domain, None if it is external."""
    local, domain_text = split_address(destination)
    ascii_name = parse_domain(domain_text).ascii
    domain = session.scalars(select(Domain).where(Domain.ascii_name == ascii_name)).one_or_none()
    if domain is None:
        return None
    key = address_key(local, domain.ascii_name)
    return key, f"{key.split('@')[0]}@{domain.name}"


def _local_targets(session: Session, key: str) -> list[str] | None:
    """Keys an existing hosted address forwards to; [] for a mailbox; None if it does not exist."""
    if session.scalar(select(Mailbox.id).where(Mailbox.address == key)) is not None:
        return []
    alias = session.scalars(select(Alias).where(Alias.address == key)).one_or_none()
    if alias is None:
        return None
    targets = []
    for dest in alias.destinations:
        hosted = _hosted_key(session, dest.address)
        if hosted is not None:
            targets.append(hosted[0])
    return targets


def _check_no_loop(session: Session, source_key: str, first_hops: list[str]) -> None:
    seen: set[str] = set()
    pending = list(first_hops)
    while pending:
        key = pending.pop()
        if key == source_key:
            raise ValidationError(
                "alias %(alias)r would forward mail back to itself", alias=source_key
            )
        if key in seen:
            continue
        seen.add(key)
        pending.extend(_local_targets(session, key) or [])


def create(
    ctx: ServiceContext, source: str, destinations: list[str], *, member_slug: str | None = None
) -> Alias:
    """Create an alias (or `@domain` catch-all). Hosted destinations must exist; no loops."""
    if not destinations:
        raise ValidationError("an alias needs at least one destination")
    if len(destinations) > MAX_DESTINATIONS:
        raise ValidationError("an alias takes at most %(max)s destinations", max=MAX_DESTINATIONS)
    member = members.get(ctx.session, member_slug, for_update=True) if member_slug else None
    hosted = addressing.parse_hosted(ctx.session, source, catch_all=True, for_update=True)
    owner = addressing.owner_for(hosted, member)
    members.require_active(owner)
    addressing.ensure_free(ctx.session, hosted.address.key, hosted.address.display)

    normalized: list[str] = []
    local_keys: list[str] = []
    for raw in destinations:
        dest = parse_destination(raw)
        local = _hosted_key(ctx.session, dest)
        if local is not None:
            key, dest = local
            if key == hosted.address.key:
                raise ValidationError(
                    "alias %(alias)r cannot forward to itself", alias=hosted.address.display
                )
            if _local_targets(ctx.session, key) is None:
                raise NotFound(
                    "destination %(dest)r is in a hosted domain but does not exist", dest=dest
                )
            local_keys.append(key)
        if dest.lower() not in (d.lower() for d in normalized):
            normalized.append(dest)
    _check_no_loop(ctx.session, hosted.address.key, local_keys)

    alias = Alias(
        address=hosted.address.key,
        local_part=hosted.address.local_part,
        domain=hosted.domain,
        member=owner,
        destinations=[AliasDestination(position=i, address=d) for i, d in enumerate(normalized)],
    )
    ctx.session.add(alias)
    ctx.session.flush()
    ctx.audit("alias.create", hosted.address.display, member=owner.slug, destinations=normalized)
    return alias


def remove(ctx: ServiceContext, source: str) -> None:
    alias = get(ctx.session, source)
    display = alias.display_address
    ctx.session.delete(alias)
    ctx.audit("alias.remove", display, member=alias.member.slug)
