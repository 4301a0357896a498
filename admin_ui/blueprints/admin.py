"""The admin pages: dashboard, members, mailboxes (with vacation and forwarding).

Views only read through and change through `provisioning` services; what a member
admin may reach is decided by `admin_ui.auth` (`scope`, `require_member`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from babel.dates import format_skeleton
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import format_date, get_locale
from flask_babel import gettext as _
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import login_required, require_member, scope, unit_of_work
from admin_ui.context import database, settings
from admin_ui.forms import InvalidForm, save_forwarding, save_vacation
from admin_ui.i18n import error_text, number, size
from provisioning.errors import MuninetError, NotFound
from provisioning.models import Mailbox
from provisioning.services import domains, mail_rules, mailboxes, members, radius, subscribers
from provisioning.services import stats as mail_stats
from provisioning.sizes import parse_size
from provisioning.status import ServiceStatus, check_services, queue_size

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
        online = radius.online_sessions(db, member)
        counts = {
            "members": member_count,
            "mailboxes": len(mailboxes.list_mailboxes(db, member)),
            "domains": domain_count,
            "subscribers": len(subscribers.list_subscribers(db, member)),
            "online": len(online),
            "online_subscribers": len({s.username for s in online}),
        }
        traffic = radius.daily_traffic(db, CHART_DAYS, member)
        mail = mail_stats.daily(db, CHART_DAYS) if member is None else None
    return render_template(
        "dashboard.html",
        counts=counts,
        services=[_service_row(s) for s in check_services(settings())],
        queue=queue_size(settings()) if member is None else None,
        today=mail[-1] if mail else None,
        mail_chart=_mail_chart(mail) if mail else None,
        traffic_chart=_traffic_chart(traffic),
    )


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
            "mailbox_new.html", form=form, choices=choices, error=error_text(exc)
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


@admin.post("/mailboxes/<path:address>/vacation")
@login_required
def mailbox_vacation(address: str) -> Page:
    mailbox = _mailbox_in_scope(address)
    try:
        with unit_of_work() as ctx:
            save_vacation(ctx, mailbox.address, request.form)
    except (MuninetError, InvalidForm) as exc:
        return _render_mailbox(mailbox, error_text(exc), 422)
    flash(_("Vacation reply saved."), "info")
    return redirect(url_for("admin.mailbox_detail", address=mailbox.address))


@admin.post("/mailboxes/<path:address>/forwarding")
@login_required
def mailbox_forwarding(address: str) -> Page:
    mailbox = _mailbox_in_scope(address)
    try:
        with unit_of_work() as ctx:
            save_forwarding(ctx, mailbox.address, request.form)
    except MuninetError as exc:
        return _render_mailbox(mailbox, error_text(exc), 422)
    flash(_("Forwarding saved."), "info")
    return redirect(url_for("admin.mailbox_detail", address=mailbox.address))


@admin.app_context_processor
def _globals() -> dict[str, object]:
    return {"admin_user": g.get("admin")}


# -- dashboard: service states and charts ---------------------------------------------------

CHART_DAYS = 14
CHART_WIDTH, CHART_HEIGHT = 700, 200
PLOT_TOP, PLOT_BOTTOM = 16, 170  # the bars' area; day labels below it


def _service_names() -> dict[str, str]:
    return {
        "smtp": _("SMTP (MX)"),
        "submission": _("SMTP submission"),
        "imap": _("IMAP (Dovecot)"),
        "clamd": _("Antivirus (clamd)"),
        "rspamd": _("Spam filter (rspamd)"),
        "radius": _("RADIUS (FreeRADIUS)"),
        "web": _("Web admin"),
    }


def _service_row(status: ServiceStatus) -> dict[str, str]:
    states = {"up": _("Up"), "down": _("Down"), "off": _("Off")}
    return {
        "key": status.key,
        "name": _service_names()[status.key],
        "state": status.state.value,
        "state_text": states[status.state.value],
        "address": status.address,
        "detail": status.detail,
    }


@dataclass(frozen=True)
class Bar:
    """One rectangle of a stacked bar: a series' value on one day."""

    series: str  # a CSS class: which colour
    day: date
    value: int
    x: float
    y: float
    width: float
    height: float
    title: str  # "21 Nov 2026: 1,234 accepted", localised


@dataclass(frozen=True)
class DayLabel:
    x: float
    text: str


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart drawn as inline SVG by the template (no script, no style)."""

    width: int
    height: int
    baseline: float
    bars: list[Bar]
    labels: list[DayLabel]
    legend: list[tuple[str, str]]  # (series class, name)
    maximum: str  # the tallest day, formatted: written at the top left


def _bar_chart(
    days: list[date],
    series: list[tuple[str, str, list[int]]],
    fmt: Callable[[int], str],
) -> Chart:
    """Stacked bars, one per day; `series` is (class, name, value per day), bottom first."""
    totals = [sum(values[n] for _c, _name, values in series) for n in range(len(days))]
    top = max(totals, default=0) or 1
    slot = CHART_WIDTH / max(len(days), 1)
    scale = (PLOT_BOTTOM - PLOT_TOP) / top
    bars: list[Bar] = []
    labels: list[DayLabel] = []
    locale = get_locale()
    for n, day in enumerate(days):
        x = round(n * slot + slot * 0.15, 1)
        base = float(PLOT_BOTTOM)
        when = format_date(day, "medium")
        for css, name, values in series:
            height = round(values[n] * scale, 1)
            base -= height
            bars.append(
                Bar(
                    css,
                    day,
                    values[n],
                    x,
                    round(base, 1),
                    round(slot * 0.7, 1),
                    height,
                    f"{when}: {name} {fmt(values[n])}",
                )
            )
        short = format_skeleton("MMMd", day, locale=locale) if locale else day.isoformat()
        labels.append(DayLabel(round(n * slot + slot / 2, 1), short))
    return Chart(
        CHART_WIDTH,
        CHART_HEIGHT,
        PLOT_BOTTOM,
        bars,
        labels,
        [(css, name) for css, name, _values in series],
        fmt(max(totals, default=0)),
    )


def _mail_chart(days: list[mail_stats.DayCounts]) -> Chart:
    return _bar_chart(
        [d.day for d in days],
        [
            ("accepted", _("accepted"), [d[mail_stats.ACCEPTED] for d in days]),
            ("rejected", _("rejected"), [d[mail_stats.REJECTED] for d in days]),
        ],
        number,
    )


def _traffic_chart(days: list[radius.DayTraffic]) -> Chart:
    return _bar_chart(
        [d.day for d in days],
        [
            ("download", _("sent to subscribers"), [d.output_octets for d in days]),
            ("upload", _("received from subscribers"), [d.input_octets for d in days]),
        ],
        size,
    )
