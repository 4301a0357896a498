"""Rules shared by mailboxes and aliases: which hosted address a member may own.

One place decides address ownership and uniqueness, so a mailbox and an alias
can never claim the same address and a member can never take another's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.addresses import DomainName, LocalAddress, check_local_part, split_address
from provisioning.errors import Conflict, NotPermitted, ValidationError
from provisioning.models import Alias, Domain, Mailbox, Member, MemberKind
from provisioning.services import domains


@dataclass(frozen=True)
class HostedAddress:
    address: LocalAddress
    domain: Domain


def parse_hosted(
    session: Session, text: str, *, catch_all: bool = False, for_update: bool = False
) -> HostedAddress:
    """Parse an address in a hosted domain; `@domain` is a catch-all where allowed."""
    local, domain_text = split_address(text)
    domain = domains.get(session, domain_text, for_update=for_update)
    if local == "" and catch_all:
        local_part = ""
    else:
        local_part = check_local_part(local, utf8_allowed=domain.utf8_local_parts, address=text)
    name = DomainName(name=domain.name, ascii=domain.ascii_name)
    return HostedAddress(LocalAddress(local_part=local_part, domain=name), domain=domain)


def owner_for(hosted: HostedAddress, member: Member | None) -> Member:
    """The member that will own the address, checked against the domain's rules."""
    domain = hosted.domain
    if domain.member is not None:
        if member is not None and member.id != domain.member.id:
            raise NotPermitted(
                "domain %(domain)r belongs to member %(owner)r, not %(member)r",
                domain=domain.name,
                owner=domain.member.slug,
                member=member.slug,
            )
        return domain.member
    if member is None:
        raise ValidationError(
            "%(address)r is on the shared domain %(domain)r: name the member that owns it",
            address=hosted.address.display,
            domain=domain.name,
        )
    local = hosted.address.local_part
    slug = member.slug
    if member.kind is not MemberKind.ASSOCIATION and not (
        local == slug or local.startswith((f"{slug}.", f"{slug}-"))
    ):
        raise NotPermitted(
            "on the shared domain %(domain)r, member %(member)r may use only %(slug)s@, "
            "%(slug)s.<name>@ or %(slug)s-<name>@ addresses",
            domain=domain.name,
            member=slug,
            slug=slug,
        )
    return member


def ensure_free(session: Session, key: str, display: str) -> None:
    """Refuse an address already taken by a mailbox or an alias (case-insensitively)."""
    if session.scalar(select(Mailbox.id).where(Mailbox.address == key)) is not None:
        raise Conflict("%(address)s is already a mailbox", address=display)
    if session.scalar(select(Alias.id).where(Alias.address == key)) is not None:
        raise Conflict("%(address)s is already an alias", address=display)
