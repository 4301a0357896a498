"""A mailbox's vacation reply and forwarding, kept with the Sieve script made from them.

Each change writes the settings and the regenerated script (with a new data id) in
one transaction; Dovecot reads the script from the same database at the next
delivery, so there is nothing to reload.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.orm import Session

from provisioning import sieve
from provisioning.addresses import address_key, parse_destination, parse_domain, split_address
from provisioning.errors import ValidationError
from provisioning.models import Mailbox, MailRules
from provisioning.services import mailboxes
from provisioning.services.context import ServiceContext

MAX_FORWARDS = 10  # Dovecot's sieve_max_redirects, as rendered
MAX_SUBJECT = 200
MAX_BODY = 10_000
MAX_DAYS = 30


def get(session: Session, address: str) -> MailRules | None:
    return session.get(MailRules, mailboxes.get(session, address).id)


def _rules_for(ctx: ServiceContext, mailbox: Mailbox) -> MailRules:
    rules = ctx.session.get(MailRules, mailbox.id, with_for_update=True)
    if rules is None:
        rules = MailRules(
            mailbox_id=mailbox.id,
            vacation_enabled=False,
            vacation_subject="",
            vacation_body="",
            vacation_days=7,
            forward_to=[],
            forward_keep_copy=True,
            sieve_id="",
            sieve_script="",
        )
        ctx.session.add(rules)
    return rules


def _regenerate(rules: MailRules) -> None:
    vacation = None
    if rules.vacation_enabled:
        vacation = sieve.Vacation(
            subject=rules.vacation_subject,
            body=rules.vacation_body,
            days=rules.vacation_days,
            start=rules.vacation_start,
            end=rules.vacation_end,
        )
    text = sieve.script(
        sieve.Rules(
            vacation=vacation,
            forward_to=list(rules.forward_to),
            keep_copy=rules.forward_keep_copy,
        )
    )
    if text != rules.sieve_script:
        rules.sieve_script = text
        rules.sieve_id = uuid.uuid4().hex if text else ""


def _check_text(subject: str, body: str) -> tuple[str, str]:
    subject = subject.strip()
    if not subject:
        raise ValidationError("the vacation reply needs a subject")
    if len(subject) > MAX_SUBJECT or any(ord(ch) < 32 for ch in subject):
        raise ValidationError(
            "the subject must be one line of at most %(max)s characters", max=MAX_SUBJECT
        )
    body = body.replace("\r\n", "\n").strip("\n")
    if not body.strip():
        raise ValidationError("the vacation reply needs a message")
    if len(body) > MAX_BODY:
        raise ValidationError("the message is longer than %(max)s characters", max=MAX_BODY)
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in body):
        raise ValidationError("the message must not contain control characters")
    return subject, body


def set_vacation(
    ctx: ServiceContext,
    address: str,
    *,
    enabled: bool,
    subject: str | None = None,
    body: str | None = None,
    days: int | None = None,
    start: date | None = None,
    end: date | None = None,
) -> MailRules:
    """Switch the vacation reply on (with its text and dates) or off (the text is kept)."""
    mailbox = mailboxes.get(ctx.session, address)
    rules = _rules_for(ctx, mailbox)
    if enabled:
        new_subject, new_body = _check_text(
            rules.vacation_subject if subject is None else subject,
            rules.vacation_body if body is None else body,
        )
        new_days = rules.vacation_days if days is None else days
        if not 1 <= new_days <= MAX_DAYS:
            raise ValidationError("days must be between 1 and %(max)s", max=MAX_DAYS)
        if start is not None and end is not None and end < start:
            raise ValidationError("the vacation ends before it starts")
        rules.vacation_subject, rules.vacation_body = new_subject, new_body
        rules.vacation_days = new_days
        rules.vacation_start, rules.vacation_end = start, end
    rules.vacation_enabled = enabled
    _regenerate(rules)
    ctx.session.flush()
    ctx.audit(
        "mailbox.vacation",
        mailbox.display_address,
        enabled=enabled,
        start=start.isoformat() if start else None,
        end=end.isoformat() if end else None,
    )
    return rules


def set_forwarding(
    ctx: ServiceContext, address: str, destinations: list[str], *, keep_copy: bool = True
) -> MailRules:
    """Forward every message to these addresses (none: stop forwarding)."""
    mailbox = mailboxes.get(ctx.session, address)
    normalized: list[str] = []
    for destination in destinations:
        parsed = parse_destination(destination)
        local, domain = split_address(parsed)
        if not local.isascii():
            # Pigeonhole 0.5 (Dovecot 2.3) refuses such redirect addresses outright.
            raise ValidationError(
                "cannot forward to %(address)s: Dovecot's Sieve does not accept non-ASCII "
                "names before the @; use an alias to reach that address instead",
                address=parsed,
            )
        if address_key(local, parse_domain(domain).ascii) == mailbox.address:
            raise ValidationError(
                "%(address)s cannot forward to itself", address=mailbox.display_address
            )
        if parsed not in normalized:
            normalized.append(parsed)
    if len(normalized) > MAX_FORWARDS:
        raise ValidationError("at most %(max)s forwarding addresses", max=MAX_FORWARDS)
    rules = _rules_for(ctx, mailbox)
    rules.forward_to = normalized
    rules.forward_keep_copy = keep_copy
    _regenerate(rules)
    ctx.session.flush()
    ctx.audit(
        "mailbox.forwarding",
        mailbox.display_address,
        destinations=normalized,
        keep_copy=keep_copy,
    )
    return rules
