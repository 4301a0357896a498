"""Mail domains: the association's shared domain and members' own domains."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning.addresses import parse_domain
from provisioning.errors import Conflict, NotFound, ValidationError
from provisioning.models import Alias, Domain, Mailbox
from provisioning.models.mail import VirusAction
from provisioning.services import members
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

MAX_SPAM_SCORE = 1000.0


def get(session: Session, name: str, *, for_update: bool = False) -> Domain:
    """Find a hosted domain by either of its forms (Unicode or punycode)."""
    ascii_name = parse_domain(name).ascii
    query = select(Domain).where(Domain.ascii_name == ascii_name)
    if for_update:
        query = query.with_for_update()
    domain = session.scalars(query).one_or_none()
    if domain is None:
        raise NotFound("domain %(domain)r is not hosted here", domain=name.strip())
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
        raise Conflict("domain %(domain)r is already hosted", domain=parsed.name)
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
            "domain %(domain)r still has %(mailboxes)s mailboxes and %(aliases)s "
            "aliases; remove them first",
            domain=domain.name,
            mailboxes=mailboxes,
            aliases=aliases,
        )
    ctx.session.delete(domain)
    ctx.audit("domain.remove", domain.name, ascii=domain.ascii_name)


# -- content filter settings per domain ---------------------------------------------------


class Keep(enum.Enum):
    KEEP = "keep"


KEEP = Keep.KEEP  # "leave this setting as it is"; None means "back to the global value"


@dataclass(frozen=True)
class DomainFilters:
    """A domain's own filter settings; None: the global `[spam]` / `[antivirus]` value."""

    spam_add_header_score: float | None = None
    spam_reject_score: float | None = None
    virus_action: str | None = None  # "reject" or "quarantine"


@dataclass(frozen=True)
class EffectiveFilters:
    """The settings that apply to a domain's mail, and which of them are its own."""

    spam_add_header_score: float
    spam_reject_score: float
    virus_action: str
    own: frozenset[str]  # names of the fields the domain sets itself


def own_filters(domain: Domain) -> DomainFilters:
    return DomainFilters(
        domain.spam_add_header_score,
        domain.spam_reject_score,
        domain.virus_action.value if domain.virus_action is not None else None,
    )


def global_virus_action(settings: Settings) -> str:
    return (
        VirusAction.QUARANTINE.value if settings.antivirus.quarantine else VirusAction.REJECT.value
    )


def effective_filters(own: DomainFilters, settings: Settings) -> EffectiveFilters:
    names = ("spam_add_header_score", "spam_reject_score", "virus_action")
    return EffectiveFilters(
        spam_add_header_score=(
            own.spam_add_header_score
            if own.spam_add_header_score is not None
            else settings.spam.add_header_score
        ),
        spam_reject_score=(
            own.spam_reject_score
            if own.spam_reject_score is not None
            else settings.spam.reject_score
        ),
        virus_action=own.virus_action or global_virus_action(settings),
        own=frozenset(name for name in names if getattr(own, name) is not None),
    )


def _score(value: float | Keep | None, option: str) -> float | Keep | None:
    if value is None or value is KEEP:
        return value
    if not math.isfinite(value) or not 0 <= value <= MAX_SPAM_SCORE:
        raise ValidationError(
            "%(option)s must be from 0 to %(max)g, not %(value)g",
            option=option,
            max=MAX_SPAM_SCORE,
            value=value,
        )
    return float(value)


def set_filters(
    ctx: ServiceContext,
    name: str,
    *,
    spam_add_header_score: float | Keep | None = KEEP,
    spam_reject_score: float | Keep | None = KEEP,
    virus_action: str | Keep | None = KEEP,
    clear: bool = False,
) -> Domain:
    """Change a domain's own filter settings; None (or `clear` for all) means the global value.

    The spam scores are rspamd's scale: from `spam_add_header_score` a message is tagged
    (X-Spam-Flag: YES, filed into Junk), from `spam_reject_score` refused with 550. The
    thresholds in effect, own or global, must keep tagging at or below refusing.
    """
    domain = get(ctx.session, name, for_update=True)
    add = _score(spam_add_header_score, "the spam tag score")
    reject = _score(spam_reject_score, "the spam reject score")
    action: VirusAction | Keep | None
    if virus_action is None or virus_action is KEEP:
        action = virus_action
    else:
        try:
            action = VirusAction(virus_action)
        except ValueError:
            raise ValidationError(
                "the virus action must be reject or quarantine, not %(virus_action)r",
                virus_action=virus_action,
            ) from None
    before = own_filters(domain)
    if clear:
        domain.spam_add_header_score = domain.spam_reject_score = domain.virus_action = None
    if not isinstance(add, Keep):
        domain.spam_add_header_score = add
    if not isinstance(reject, Keep):
        domain.spam_reject_score = reject
    if not isinstance(action, Keep):
        domain.virus_action = action
    after = own_filters(domain)
    effective = effective_filters(after, ctx.settings)
    if effective.spam_add_header_score > effective.spam_reject_score:
        raise ValidationError(
            "the spam tag score %(tag_score)g is above the reject score %(reject_score)g "
            "for %(domain)s",
            tag_score=effective.spam_add_header_score,
            reject_score=effective.spam_reject_score,
            domain=domain.name,
        )
    ctx.session.flush()
    if after != before:
        ctx.audit(
            "domain.filters",
            domain.name,
            spam_add_header_score=after.spam_add_header_score,
            spam_reject_score=after.spam_reject_score,
            virus_action=after.virus_action,
        )
    return domain


def filter_overrides(session: Session, ascii_names: Iterable[str]) -> dict[str, DomainFilters]:
    """The own filter settings of those of these domains (ASCII names) that are hosted.

    One query; the mail engine calls it (in a worker thread) for the recipient domains
    of each message, behind a cache of a few seconds.
    """
    names = sorted({name.lower() for name in ascii_names})
    if not names:
        return {}
    rows = session.execute(
        select(
            Domain.ascii_name,
            Domain.spam_add_header_score,
            Domain.spam_reject_score,
            Domain.virus_action,
        ).where(Domain.ascii_name.in_(names))
    )
    return {
        ascii_name: DomainFilters(add, reject, action.value if action is not None else None)
        for ascii_name, add, reject, action in rows
    }
