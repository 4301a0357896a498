"""The printable setup sheet (HTML and PDF) of a member office.

What an office with no sysadmin needs on paper: its mailboxes and subscriber lines, the
mail program and dial-up/broadband settings, and passwords. Passwords are stored only as
hashes, so the sheet can show one only in the response to the request that generated it
("generate new password": for one mailbox, one line, or everything the member has); every
other view says "(set)". They are never kept in the session, and the responses are marked
no-store. Member admins reach only their own member's sheet (404 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from admin_ui import setup_sheet
from admin_ui.auth import login_required, require_member, unit_of_work
from admin_ui.context import database, settings
from admin_ui.setup_sheet import FontMissing, LineRow, MailboxRow, Sheet
from provisioning.autoconfig import endpoints
from provisioning.errors import NotFound
from provisioning.models import SubscriberStatus
from provisioning.models.base import utcnow
from provisioning.passwords import generate_password
from provisioning.services import mailboxes, members, subscribers

sheets = Blueprint("sheets", __name__)

Page = str | tuple[str, int] | BaseResponse
GENERATED_LENGTH = 16


def _font_dir() -> Path:
    """Where the PDF fonts are (config `SHEET_FONT_DIR`, tests; else Debian's path)."""
    return Path(current_app.config.get("SHEET_FONT_DIR", setup_sheet.FONT_DIR))


def _build(db: Session, slug: str, passwords: Mapping[str, str]) -> Sheet:
    """The sheet of a member the current admin may see.

    `passwords` are the ones generated in this request, by "mailbox:<key>" and "line:<name>".
    """
    require_member(slug)
    try:
        member = members.get(db, slug)
    except NotFound:
        abort(404)
    boxes = [
        MailboxRow(
            address=box.address,
            display=box.display_address,
            login=box.address,
            display_name=box.display_name,
            quota=box.quota_bytes,
            enabled=box.enabled,
            password=passwords.get(f"mailbox:{box.address}"),
        )
        for box in mailboxes.list_mailboxes(db, member.slug)
    ]
    lines = [
        LineRow(
            username=line.username,
            plan=line.plan.name,
            kind=line.plan.kind.value,
            static_ip=line.static_ip,
            active=line.status is SubscriberStatus.ACTIVE,
            chap=line.chap_enabled,
            password=passwords.get(f"line:{line.username}"),
        )
        for line in subscribers.list_subscribers(db, member.slug)
    ]
    return Sheet(
        member_slug=member.slug,
        member_name=member.name,
        association=settings().association.name,
        made_at=utcnow(),
        endpoints=endpoints(settings()),
        mailboxes=boxes,
        lines=lines,
    )


def _html(sheet: Sheet, error: str | None = None, status: int = 200) -> tuple[str, int]:
    page = render_template(
        "sheets_sheet.html",
        sheet=sheet,
        servers=setup_sheet.server_rows(sheet.endpoints),
        kind_label=setup_sheet.kind_label,
        auth_label=setup_sheet.auth_label,
        error=error,
    )
    return page, status


def _pdf(sheet: Sheet) -> Response:
    response = Response(setup_sheet.pdf(sheet, _font_dir()), mimetype="application/pdf")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="setup-sheet-{sheet.member_slug}.pdf"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _font_error(slug: str, missing: FontMissing) -> tuple[str, int]:
    """503 with the sheet and a clear message: the server lacks the PDF font."""
    current_app.logger.error("setup sheet PDF: %s", missing)
    message = _(
        "The PDF cannot be made: the font %(path)s is missing on the server "
        "(Debian package fonts-dejavu-core).",
        path=str(missing.path),
    )
    with database().reader() as db:
        return _html(_build(db, slug, {}), message, 503)


@sheets.get("/members/<slug>/sheet")
@login_required
def sheet(slug: str) -> Page:
    with database().reader() as db:
        return _html(_build(db, slug, {}))


@sheets.get("/members/<slug>/sheet.pdf")
@login_required
def sheet_pdf(slug: str) -> Page:
    with database().reader() as db:
        built = _build(db, slug, {})
    try:
        return _pdf(built)
    except FontMissing as exc:
        return _font_error(slug, exc)


def _generate(slug: str, target: str) -> dict[str, str]:
    """New random passwords for the target's mailboxes and lines, set through the services."""
    passwords: dict[str, str] = {}
    length = max(GENERATED_LENGTH, settings().passwords.min_length)
    with unit_of_work() as ctx:
        member = members.get(ctx.session, slug)
        boxes = [b.address for b in mailboxes.list_mailboxes(ctx.session, member.slug)]
        lines = [s.username for s in subscribers.list_subscribers(ctx.session, member.slug)]
        kind, _sep, name = target.partition(":")
        if target == "all":
            chosen_boxes, chosen_lines = boxes, lines
        elif kind == "mailbox" and name in boxes:
            chosen_boxes, chosen_lines = [name], []
        elif kind == "line" and name in lines:
            chosen_boxes, chosen_lines = [], [name]
        else:
            abort(404)  # not this member's (or no such thing): as if it did not exist
        for address in chosen_boxes:
            password = generate_password(length)
            mailboxes.set_password(ctx, address, password)
            passwords[f"mailbox:{address}"] = password
        for username in chosen_lines:
            password = generate_password(length)
            subscribers.set_password(ctx, username, password)
            passwords[f"line:{username}"] = password
        ctx.audit(
            "member.sheet-passwords",
            member.slug,
            mailboxes=chosen_boxes,
            lines=chosen_lines,
        )
    return passwords


@sheets.post("/members/<slug>/sheet/passwords")
@login_required
def new_passwords(slug: str) -> Page:
    """Generate, then answer with the sheet showing the passwords (HTML, or the PDF)."""
    with database().reader() as db:
        _build(db, slug, {})  # 404 before anything changes
    target = request.form.get("target", "")
    as_pdf = request.form.get("format") == "pdf"
    if as_pdf:
        try:
            setup_sheet.check_fonts(_font_dir())
        except FontMissing as exc:
            return _font_error(slug, exc)  # before any password changes: none may be lost
    if target == "all" and request.form.get("confirm") != "on":
        with database().reader() as db:
            built = _build(db, slug, {})
        message = _("Tick the box to confirm that all the current passwords stop working.")
        return _html(built, message, 422)
    passwords = _generate(slug, target)
    with database().reader() as db:
        built = _build(db, slug, passwords)
    return _pdf(built) if as_pdf else _html(built)
