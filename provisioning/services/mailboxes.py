"""Mailboxes: create, change password, enable/disable, remove, authenticate."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from provisioning import maildirs
from provisioning.addresses import split_address
from provisioning.errors import Conflict, LimitExceeded, NotFound, ValidationError
from provisioning.maildirs import MaildirUsage, maildir_path
from provisioning.models import AliasDestination, Mailbox, Member, MemberStatus
from provisioning.passwords import normalize_imported_hash
from provisioning.services import addressing, members
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings
from provisioning.sizes import format_size

MAX_DISPLAY_NAME = 200


def get(session: Session, address: str) -> Mailbox:
    hosted = addressing.parse_hosted(session, address)
    mailbox = session.scalars(
        select(Mailbox).where(Mailbox.address == hosted.address.key)
    ).one_or_none()
    if mailbox is None:
        raise NotFound("no mailbox %(address)r", address=address.strip())
    return mailbox


def usage(settings: Settings, mailbox: Mailbox) -> MaildirUsage:
    """What the mailbox holds now, all folders, read from its Maildir (not from Dovecot)."""
    path = maildir_path(settings.maildir_root, mailbox.address)
    return maildirs.usage(path) if path is not None else MaildirUsage(0, 0)


def list_mailboxes(session: Session, member_slug: str | None = None) -> list[Mailbox]:
    query = select(Mailbox).options(joinedload(Mailbox.domain), joinedload(Mailbox.member))
    if member_slug is not None:
        query = query.where(Mailbox.member_id == members.get(session, member_slug).id)
    return list(session.scalars(query.order_by(Mailbox.address)))


def _check_display_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_DISPLAY_NAME:
        raise ValidationError(
            "display name is longer than %(max)s characters", max=MAX_DISPLAY_NAME
        )
    if any(ord(ch) < 32 for ch in name):
        raise ValidationError("display name must not contain control characters")
    return name


def _check_package(session: Session, member: Member, quota: int, extra_mailboxes: int) -> None:
    used = members.usage(session, member)
    if used.mailboxes + extra_mailboxes > member.max_mailboxes:
        raise LimitExceeded(
            "member %(member)r has used all %(limit)s mailboxes of its package",
            member=member.slug,
            limit=member.max_mailboxes,
        )
    free = member.mail_quota_bytes - used.quota_allocated
    if quota > free:
        raise LimitExceeded(
            "member %(member)r has %(free)s of mail quota left (package %(package)s), "
            "not %(quota)s",
            member=member.slug,
            free=format_size(max(free, 0)),
            package=format_size(member.mail_quota_bytes),
            quota=format_size(quota),
        )


def create(
    ctx: ServiceContext,
    address: str,
    member_slug: str,
    *,
    password: str | None = None,
    password_hash: str | None = None,
    quota: int | None = None,
    display_name: str = "",
    enabled: bool = True,
) -> Mailbox:
    """Create a mailbox from a password, or from an imported hash (never both)."""
    if (password is None) == (password_hash is None):
        raise ValidationError("give either a password or a password hash")
    member = members.get(ctx.session, member_slug, for_update=True)
    members.require_active(member)
    hosted = addressing.parse_hosted(ctx.session, address, for_update=True)
    owner = addressing.owner_for(hosted, member)
    addressing.ensure_free(ctx.session, hosted.address.key, hosted.address.display)
    quota = ctx.settings.defaults.mailbox_quota if quota is None else quota
    if quota <= 0:
        raise ValidationError("quota must be larger than zero")
    _check_package(ctx.session, owner, quota, extra_mailboxes=1)
    stored = (
        ctx.hasher.hash(password)
        if password is not None
        else normalize_imported_hash(password_hash or "")
    )
    key = hosted.address.key
    unicode_key = f"{key.rpartition('@')[0]}@{hosted.domain.name}"
    mailbox = Mailbox(
        address=key,
        unicode_address=unicode_key if unicode_key != key else None,
        local_part=hosted.address.local_part,
        domain=hosted.domain,
        member=owner,
        display_name=_check_display_name(display_name),
        password_hash=stored,
        quota_bytes=quota,
        enabled=enabled,
    )
    ctx.session.add(mailbox)
    ctx.session.flush()
    ctx.audit(
        "mailbox.create",
        hosted.address.display,
        member=owner.slug,
        quota=quota,
        enabled=enabled,
        imported_hash=password_hash is not None,
    )
    return mailbox


def set_password(ctx: ServiceContext, address: str, password: str) -> Mailbox:
    mailbox = get(ctx.session, address)
    mailbox.password_hash = ctx.hasher.hash(password)
    ctx.audit("mailbox.password", mailbox.display_address)
    return mailbox


def set_quota(ctx: ServiceContext, address: str, quota: int) -> Mailbox:
    mailbox = get(ctx.session, address)
    member = members.get(ctx.session, mailbox.member.slug, for_update=True)
    if quota <= 0:
        raise ValidationError("quota must be larger than zero")
    _check_package(ctx.session, member, quota - mailbox.quota_bytes, extra_mailboxes=0)
    mailbox.quota_bytes = quota
    ctx.audit("mailbox.quota", mailbox.display_address, quota=quota)
    return mailbox


def set_enabled(ctx: ServiceContext, address: str, enabled: bool) -> Mailbox:
    mailbox = get(ctx.session, address)
    if mailbox.enabled == enabled:
        if enabled:
            raise ValidationError(
                "mailbox %(mailbox)r is already enabled", mailbox=mailbox.display_address
            )
        raise ValidationError(
            "mailbox %(mailbox)r is already disabled", mailbox=mailbox.display_address
        )
    mailbox.enabled = enabled
    ctx.audit("mailbox.enable" if enabled else "mailbox.disable", mailbox.display_address)
    return mailbox


def remove(ctx: ServiceContext, address: str) -> None:
    """Delete a mailbox record. Refused while an alias still forwards to it."""
    mailbox = get(ctx.session, address)
    referring = ctx.session.scalars(
        select(AliasDestination).where(
            AliasDestination.address.in_({mailbox.display_address, mailbox.address})
        )
    ).all()
    if referring:
        raise Conflict(
            "mailbox %(mailbox)r is the destination of %(count)s alias(es); change or "
            "remove them first",
            mailbox=mailbox.display_address,
            count=len(referring),
        )
    ctx.session.delete(mailbox)
    ctx.audit("mailbox.remove", mailbox.display_address, member=mailbox.member.slug)


def authenticate(ctx: ServiceContext, address: str, password: str) -> Mailbox | None:
    """The mailbox if the password is right and it may log in; upgrades an outdated hash."""
    try:
        split_address(address)
        mailbox = get(ctx.session, address)
    except (NotFound, ValidationError):
        return None
    result = ctx.hasher.verify(password, mailbox.password_hash)
    if not result.ok or not mailbox.enabled or mailbox.member.status is not MemberStatus.ACTIVE:
        return None
    if result.new_hash is not None:
        mailbox.password_hash = result.new_hash
        ctx.audit(
            "mailbox.rehash", mailbox.display_address, scheme=result.new_hash.split("}")[0][1:]
        )
    return mailbox
