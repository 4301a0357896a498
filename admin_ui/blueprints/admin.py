"""The admin pages: dashboard, members, mailboxes (with vacation and forwarding).

Views only read through and change through `provisioning` services; what a member
admin may reach is decided by `admin_ui.auth` (`scope`, `require_member`).
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import login_required, require_member, scope, unit_of_work
from admin_ui.context import database, settings
from provisioning.errors import MuninetError, NotFound
from provisioning.models import Mailbox
from provisioning.services import domains, mail_rules, mailboxes, members, radius, subscribers
from provisioning.sizes import parse_size

admin = Blueprint("admin", __name__)

Page = str | tuple[str, int] | BaseResponse


@admin.get("/")
@login_required
def dashboard() -> Page:
    member = scope()
    with database().reader() as db:
        if member is None:
            member_count = len(members.list_members(db))
            domain_count = len(domains.list_domains(db))
        else:
            member_count = 1
            domain_count = sum(
                1 for d in domains.list_domains(db) if d.member and d.member.slug == member
            )
        counts = {
            "members": member_count,
            "mailboxes": len(mailboxes.list_mailboxes(db, member)),
            "domains": domain_count,
            "subscribers": len(subscribers.list_subscribers(db, member)),
            "online": len(radius.online_sessions(db, member)),
        }
    return render_template("dashboard.html", counts=counts)


@admin.get("/members")
@login_required
def member_list() -> Page:
    member = scope()
    if member is not None:
        return redirect(url_for("admin.member_detail", slug=member))
    with database().reader() as db:
        rows = [(m, members.usage(db, m)) for m in members.list_members(db)]
    return render_template("members.html", rows=rows)


@admin.get("/members/<slug>")
@login_required
def member_detail(slug: str) -> Page:
    require_member(slug)
    with database().reader() as db:
        try:
            member = members.get(db, slug)
        except NotFound:
            abort(404)
        used = members.usage(db, member)
        boxes = mailboxes.list_mailboxes(db, member.slug)
        owned = [d for d in domains.list_domains(db) if d.member_id == member.id]
    return render_template("member.html", member=member, usage=used, mailboxes=boxes, domains=owned)


@admin.get("/mailboxes")
@login_required
def mailbox_list() -> Page:
    with database().reader() as db:
        boxes = mailboxes.list_mailboxes(db, scope())
    return render_template("mailboxes.html", mailboxes=boxes)


def _member_choices() -> list[tuple[str, str]]:
    member = scope()
    with database().reader() as db:
        if member is not None:
            found = members.get(db, member)
            return [(found.slug, found.name)]
        return [(m.slug, m.name) for m in members.list_members(db)]


@admin.route("/mailboxes/new", methods=["GET", "POST"])
@login_required
def mailbox_new() -> Page:
    choices = _member_choices()
    form = {
        "address": "",
        "member": choices[0][0] if choices else "",
        "quota": "",
        "display_name": "",
    }
    if request.method == "GET":
        return render_template("mailbox_new.html", form=form, choices=choices, error=None)
    form = {key: request.form.get(key, "").strip() for key in form}
    password = request.form.get("password", "")
    member = scope() or form["member"]
    if member not in {slug for slug, _name in choices}:
        abort(404)
    try:
        quota = parse_size(form["quota"]) if form["quota"] else None
        with unit_of_work() as ctx:
            mailbox = mailboxes.create(
                ctx,
                form["address"],
                member,
                password=password,
                quota=quota,
                display_name=form["display_name"],
            )
            key = mailbox.address
    except MuninetError as exc:
        return render_template(
            "mailbox_new.html", form=form, choices=choices, error=exc.message
        ), exc.http_status if exc.http_status != 404 else 422
    flash(_("Mailbox %(address)s created.", address=form["address"]), "info")
    return redirect(url_for("admin.mailbox_detail", address=key))


def _mailbox_in_scope(address: str) -> Mailbox:
    """The mailbox, if the current admin may see it; 404 otherwise (also for other members)."""
    with database().reader() as db:
        try:
            mailbox = mailboxes.get(db, address)
        except MuninetError:
            abort(404)
        member = scope()
        if member is not None and mailbox.member.slug != member:
            abort(404)
        return mailbox


def _render_mailbox(mailbox: Mailbox, error: str | None = None, status: int = 200) -> Page:
    with database().reader() as db:
        rules = mail_rules.get(db, mailbox.address)
        fresh = mailboxes.get(db, mailbox.address)
        usage = mailboxes.usage(settings(), fresh)
        context = {
            "mailbox": fresh,
            "member": fresh.member,
            "domain": fresh.domain,
            "rules": rules,
            "usage": usage,
            "error": error,
        }
        return render_template("mailbox.html", **context), status


@admin.get("/mailboxes/<path:address>")
@login_required
def mailbox_detail(address: str) -> Page:
    return _render_mailbox(_mailbox_in_scope(address))


def _date(text: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidForm(_("Dates must look like 2026-07-31.")) from None


def _days(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise InvalidForm(_("Days must be a whole number."))
    return int(text)


class InvalidForm(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@admin.post("/mailboxes/<path:address>/vacation")
@login_required
def mailbox_vacation(address: str) -> Page:
    mailbox = _mailbox_in_scope(address)
    form = request.form
    try:
        with unit_of_work() as ctx:
            mail_rules.set_vacation(
                ctx,
                mailbox.address,
                enabled=form.get("enabled") == "on",
                subject=form.get("subject", ""),
                body=form.get("body", ""),
                days=_days(form.get("days", "")),
                start=_date(form.get("start", "")),
                end=_date(form.get("end", "")),
            )
    except (MuninetError, InvalidForm) as exc:
        return _render_mailbox(mailbox, exc.message, 422)
    flash(_("Vacation reply saved."), "info")
    return redirect(url_for("admin.mailbox_detail", address=mailbox.address))


@admin.post("/mailboxes/<path:address>/forwarding")
@login_required
def mailbox_forwarding(address: str) -> Page:
    mailbox = _mailbox_in_scope(address)
    destinations = [
        line.strip() for line in request.form.get("destinations", "").splitlines() if line.strip()
    ]
    try:
        with unit_of_work() as ctx:
            mail_rules.set_forwarding(
                ctx, mailbox.address, destinations, keep_copy=request.form.get("keep_copy") == "on"
            )
    except MuninetError as exc:
        return _render_mailbox(mailbox, exc.message, 422)
    flash(_("Forwarding saved."), "info")
    return redirect(url_for("admin.mailbox_detail", address=mailbox.address))


@admin.app_context_processor
def _globals() -> dict[str, object]:
    return {"admin_user": g.get("admin")}
