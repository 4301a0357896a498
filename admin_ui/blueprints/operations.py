"""The mail queue (retry, delete), the audit log, admins and API tokens: superadmins only.

Every page answers 404 to member admins, as if it did not exist. The queue is read
and steered through `provisioning.queue` (the spool's one format definition), never
through the mail engine. A new token's secret and a generated password are shown
once, in the response to the POST that made them: never in a redirect or a flash
message, which would carry them in the (signed, not encrypted) session cookie.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import format_timedelta
from flask_babel import gettext as _
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import superadmin_required, unit_of_work
from admin_ui.context import database, settings
from admin_ui.i18n import error_text
from provisioning import queue
from provisioning.errors import MuninetError, ValidationError
from provisioning.passwords import generate_password
from provisioning.services import admins, members
from provisioning.services.audit_log import AuditFilter, actions, search

operations = Blueprint("operations", __name__)

Page = str | tuple[str, int] | BaseResponse
QUEUE_PAGE = 50
AUDIT_PAGE = 50


def _page_number() -> int:
    text = request.args.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        abort(404)
    return int(text)


# -- the mail queue ---------------------------------------------------------------------------


def _age(received_at: float, now: float) -> str:
    return str(format_timedelta(timedelta(seconds=max(0.0, now - received_at)), threshold=1))


@operations.get("/queue")
@superadmin_required
def queue_list() -> Page:
    page = _page_number()
    spool = queue.open_queue(settings())
    messages, total = queue.page(spool, (page - 1) * QUEUE_PAGE, QUEUE_PAGE)
    now = time.time()
    rows = [
        {
            "message": m,
            "pending": [r.removeprefix(queue.LOCAL_PREFIX) for r in m.state.pending],
            "age": _age(m.header.received_at, now),
            "due": m.state.next_attempt <= now,
        }
        for m in messages
    ]
    pages = max(1, -(-total // QUEUE_PAGE))
    return render_template("operations_queue.html", rows=rows, total=total, page=page, pages=pages)


@operations.post("/queue/<message_id>/retry")
@superadmin_required
def queue_retry(message_id: str) -> Page:
    try:
        with unit_of_work() as ctx:
            queue.retry_audited(ctx, message_id)
    except MuninetError as exc:
        flash(error_text(exc), "error")
        return redirect(url_for("operations.queue_list"))
    flash(_("Message %(id)s will be tried again at once.", id=message_id), "info")
    return redirect(url_for("operations.queue_list"))


@operations.post("/queue/<message_id>/delete")
@superadmin_required
def queue_delete(message_id: str) -> Page:
    try:
        with unit_of_work() as ctx:
            queue.delete_audited(ctx, message_id)
    except MuninetError as exc:
        flash(error_text(exc), "error")
        return redirect(url_for("operations.queue_list"))
    flash(_("Message %(id)s deleted.", id=message_id), "info")
    return redirect(url_for("operations.queue_list"))


# -- the audit log ----------------------------------------------------------------------------


def _day(name: str) -> date | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationError(_("Dates must look like 2026-07-31.")) from None


@operations.get("/audit")
@superadmin_required
def audit_log() -> Page:
    form = {key: request.args.get(key, "").strip()[:100] for key in ("actor", "action", "target")}
    dates = {key: request.args.get(key, "").strip()[:10] for key in ("since", "until")}
    page = _page_number()
    with database().reader() as db:
        known = actions(db)
        try:
            wanted = AuditFilter(since=_day("since"), until=_day("until"), **form)
            found = search(db, wanted, page, AUDIT_PAGE)
        except ValidationError as exc:
            return render_template(
                "operations_audit.html",
                form={**form, **dates},
                actions=known,
                found=None,
                error=error_text(exc),
            ), 422
        return render_template(
            "operations_audit.html",
            form={**form, **dates},
            actions=known,
            found=found,
            error=None,
            query={k: v for k, v in {**form, **dates}.items() if v},
        )


# -- admins -----------------------------------------------------------------------------------


def _admins_page(
    error: str | None = None, status: int = 200, form: dict[str, str] | None = None
) -> Page:
    with database().reader() as db:
        rows = admins.list_admins(db)
        choices = [(m.slug, m.name) for m in members.list_members(db)]
        return render_template(
            "operations_admins.html",
            admins=rows,
            choices=choices,
            error=error,
            form=form or {"username": "", "member": ""},
        ), status


@operations.get("/admins")
@superadmin_required
def admin_list() -> Page:
    return _admins_page()


@operations.post("/admins")
@superadmin_required
def admin_create() -> Page:
    form = {key: request.form.get(key, "").strip() for key in ("username", "member")}
    password = request.form.get("password", "")
    generated = not password
    if generated:
        password = generate_password()
    try:
        with unit_of_work() as ctx:
            admin = admins.create(
                ctx, form["username"], password, member_slug=form["member"] or None
            )
            username = admin.username
    except MuninetError as exc:
        return _admins_page(
            error_text(exc), 422 if exc.http_status == 404 else exc.http_status, form
        )
    if generated:
        return render_template(
            "operations_secret.html", kind="password", username=username, secret=password
        )
    flash(_("Admin %(username)s created.", username=username), "info")
    return redirect(url_for("operations.admin_list"))


@operations.post("/admins/<username>/enabled")
@superadmin_required
def admin_enabled(username: str) -> Page:
    enable = request.form.get("enabled") == "yes"
    try:
        with unit_of_work() as ctx:
            admins.set_enabled(ctx, username, enable)
    except MuninetError as exc:
        if exc.http_status == 404:
            abort(404)
        return _admins_page(error_text(exc), exc.http_status)
    if enable:
        flash(_("Admin %(username)s enabled.", username=username), "info")
    else:
        flash(_("Admin %(username)s disabled.", username=username), "info")
    return redirect(url_for("operations.admin_list"))


@operations.post("/admins/<username>/password")
@superadmin_required
def admin_password(username: str) -> Page:
    password = generate_password()
    try:
        with unit_of_work() as ctx:
            name = admins.set_password(ctx, username, password).username
    except MuninetError as exc:
        if exc.http_status == 404:
            abort(404)
        return _admins_page(error_text(exc), exc.http_status)
    return render_template(
        "operations_secret.html", kind="password", username=name, secret=password
    )


# -- API tokens -------------------------------------------------------------------------------


def _tokens_page(error: str | None = None, status: int = 200) -> Page:
    with database().reader() as db:
        return render_template(
            "operations_tokens.html",
            tokens=admins.list_tokens(db),
            admins=[a for a in admins.list_admins(db) if a.enabled],
            error=error,
        ), status


@operations.get("/tokens")
@superadmin_required
def token_list() -> Page:
    return _tokens_page()


@operations.post("/tokens")
@superadmin_required
def token_create() -> Page:
    try:
        with unit_of_work() as ctx:
            token, secret = admins.create_token(
                ctx, request.form.get("admin", ""), request.form.get("name", "")
            )
            username = token.admin.username
    except MuninetError as exc:
        return _tokens_page(error_text(exc), 422 if exc.http_status == 404 else exc.http_status)
    return render_template("operations_secret.html", kind="token", username=username, secret=secret)


@operations.post("/tokens/<prefix>/revoke")
@superadmin_required
def token_revoke(prefix: str) -> Page:
    try:
        with unit_of_work() as ctx:
            admins.revoke_token(ctx, prefix)
    except MuninetError as exc:
        if exc.http_status == 404:
            abort(404)
        return _tokens_page(error_text(exc), exc.http_status)
    flash(_("Token %(prefix)s revoked.", prefix=prefix), "info")
    return redirect(url_for("operations.token_list"))
