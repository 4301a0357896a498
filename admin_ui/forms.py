"""What the pages share about forms: fields that must parse before a service sees them, and
the vacation-reply and forwarding forms of the admin's mailbox page and of self-service.

Both mailbox pages post the same fields; `save_vacation` and `save_forwarding` read them
and hand them to `provisioning.services.mail_rules`, so the two pages cannot drift apart.
"""

from __future__ import annotations

from datetime import date

from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from provisioning.services import mail_rules
from provisioning.services.context import ServiceContext


class InvalidForm(Exception):
    """A field the service never sees because it does not even parse (a number, a date)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def optional_date(text: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidForm(_("Dates must look like 2026-07-31.")) from None


def optional_whole(text: str, message: str) -> int | None:
    """An optional whole number; `message` (translated) when it is not one."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise InvalidForm(message)
    return int(text)


def save_vacation(ctx: ServiceContext, address: str, form: MultiDict[str, str]) -> None:
    """InvalidForm for unreadable dates or days; MuninetError for what the service refuses."""
    mail_rules.set_vacation(
        ctx,
        address,
        enabled=form.get("enabled") == "on",
        subject=form.get("subject", ""),
        body=form.get("body", ""),
        days=optional_whole(form.get("days", ""), _("Days must be a whole number.")),
        start=optional_date(form.get("start", "")),
        end=optional_date(form.get("end", "")),
    )


def save_forwarding(ctx: ServiceContext, address: str, form: MultiDict[str, str]) -> None:
    destinations = [
        line.strip() for line in form.get("destinations", "").splitlines() if line.strip()
    ]
    mail_rules.set_forwarding(ctx, address, destinations, keep_copy=form.get("keep_copy") == "on")
