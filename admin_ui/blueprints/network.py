"""Service plans, subscriber lines, online sessions (with disconnect) and usage reports.

The views parse form fields into values and hand them to `provisioning` services,
which hold every rule (package limits, address conflicts, plan consistency) and
write the audit. A member admin reaches only its own member's lines, sessions and
usage: another member's line answers 404, as in the rest of the admin. Plans are
shared by every member: all admins may read them, only a superadmin changes them
(others get 404, like every superadmin-only page).

The Disconnect button calls `provisioning.radius_coa.kick`, the same code the CLI's
`muninet subscriber kick` runs: a real RFC 5176 Disconnect-Request to the NAS of
each open session of the subscriber, with the answer (ACK, NAK, timeout) shown.

Passwords generated here are shown once, in the answer to the POST that made
them; they are never put in the session (flash messages live in the cookie).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import format_date, format_decimal
from flask_babel import gettext as _
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import actor, login_required, scope, superadmin_required, unit_of_work
from admin_ui.context import database
from admin_ui.i18n import error_text, number
from provisioning import radius_coa
from provisioning.durations import parse_duration
from provisioning.errors import MuninetError, NotFound, ValidationError
from provisioning.models import CapAction, PlanKind, ServicePlan, Subscriber, SubscriberStatus
from provisioning.passwords import generate_password
from provisioning.services import members, nas, plans, radius, subscribers
from provisioning.sizes import format_size, parse_size

network = Blueprint("network", __name__)

Page = str | tuple[str, int] | BaseResponse


def _status(exc: MuninetError) -> int:
    """The HTTP status of a refused form: a name in a form that does not exist is bad input."""
    return 422 if isinstance(exc, NotFound) else exc.http_status


# -- template filters -----------------------------------------------------------------------


@network.app_template_filter("hms")
def hms(seconds: int | None) -> str:
    """A session time as hours:minutes:seconds, the hours in the locale's digits grouping."""
    total = int(seconds or 0)
    hours, rest = divmod(total, 3600)
    return f"{number(hours)}:{rest // 60:02d}:{rest % 60:02d}"


@network.app_template_filter("epoch")
def epoch(value: int | None) -> datetime | None:
    """radacct's epoch seconds as an aware datetime, for the `when` filter."""
    return datetime.fromtimestamp(value, UTC) if value else None


@network.app_template_filter("rate")
def rate(bps: int) -> str:
    """A rate as bit/s with a decimal prefix ("2 Mbit/s"); 0 means not limited."""
    if not bps:
        return str(_("unlimited"))
    for unit, factor in (("Gbit/s", 1000**3), ("Mbit/s", 1000**2), ("kbit/s", 1000)):
        if bps >= factor:
            return f"{format_decimal(bps / factor, format='#,##0.###')} {unit}"
    return f"{number(bps)} bit/s"


# -- form fields ----------------------------------------------------------------------------


def _text(name: str) -> str:
    return request.form.get(name, "").strip()


def _whole(text: str, label: str) -> int:
    if not text.isdigit():
        raise ValidationError(_("%(field)s must be a whole number.", field=label))
    return int(text)


def _seconds(text: str) -> int:
    return int(parse_duration(text))


def _duration_field(seconds: int | None) -> str:
    """A duration as the form shows it, in the largest unit that keeps it exact ("100h")."""
    if not seconds:
        return ""
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"


def _date_field(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationError(_("Dates must look like 2026-07-31.")) from None


# -- plans ----------------------------------------------------------------------------------

PLAN_FIELDS = (
    "description",
    "kind",
    "download",
    "upload",
    "data_cap",
    "time_cap",
    "cap_action",
    "fair_use_down",
    "fair_use_up",
    "session_timeout",
    "idle_timeout",
    "simultaneous",
    "port_limit",
)


def _plan_form(plan: ServicePlan | None) -> dict[str, str]:
    """The plan's values as the form's text fields (empty for a new plan's defaults)."""
    if plan is None:
        defaults = {"kind": PlanKind.PPPOE.value, "cap_action": "reject", "simultaneous": "1"}
        return dict.fromkeys(("name", *PLAN_FIELDS), "") | defaults
    return {
        "name": plan.name,
        "description": plan.description,
        "kind": plan.kind.value,
        "download": plans.format_rate(plan.download_bps) if plan.download_bps else "",
        "upload": plans.format_rate(plan.upload_bps) if plan.upload_bps else "",
        "data_cap": format_size(plan.data_cap_bytes, exact=True) if plan.data_cap_bytes else "",
        "time_cap": _duration_field(plan.time_cap_seconds),
        "cap_action": plan.cap_action.value,
        "fair_use_down": plans.format_rate(plan.fair_use_download_bps)
        if plan.fair_use_download_bps
        else "",
        "fair_use_up": plans.format_rate(plan.fair_use_upload_bps)
        if plan.fair_use_upload_bps
        else "",
        "session_timeout": _duration_field(plan.session_timeout),
        "idle_timeout": _duration_field(plan.idle_timeout),
        "simultaneous": str(plan.simultaneous_use),
        "port_limit": str(plan.port_limit) if plan.port_limit else "",
    }


def _plan_values(form: Mapping[str, str]) -> dict[str, Any]:
    """Service arguments from the form; an empty optional field clears that limit."""

    def optional(key: str, parse: Any) -> Any:
        return parse(form[key]) if form[key] else None

    return {
        "description": form["description"],
        "kind": form["kind"],
        "download_bps": plans.parse_rate(form["download"] or "0"),
        "upload_bps": plans.parse_rate(form["upload"] or "0"),
        "data_cap_bytes": optional("data_cap", parse_size),
        "time_cap_seconds": optional("time_cap", _seconds),
        "cap_action": form["cap_action"],
        "fair_use_download_bps": plans.parse_rate(form["fair_use_down"] or "0"),
        "fair_use_upload_bps": plans.parse_rate(form["fair_use_up"] or "0"),
        "session_timeout": optional("session_timeout", _seconds),
        "idle_timeout": optional("idle_timeout", _seconds),
        "simultaneous_use": _whole(form["simultaneous"], _("Simultaneous sessions")),
        "port_limit": optional("port_limit", lambda v: _whole(v, _("Port limit"))),
    }


def _plan_choices() -> dict[str, list[tuple[str, str]]]:
    return {
        "kinds": [
            (PlanKind.DIALUP.value, _("dial-up")),
            (PlanKind.PPPOE.value, _("PPPoE / DSL")),
            (PlanKind.WIRELESS.value, _("wireless")),
        ],
        "cap_actions": [
            (CapAction.REJECT.value, _("reject new sessions")),
            (CapAction.THROTTLE.value, _("throttle to the fair-use rate")),
        ],
    }


@network.get("/plans")
@login_required
def plan_list() -> Page:
    with database().reader() as db:
        counts = plans.subscriber_counts(db)
        rows = [(p, counts.get(p.id, 0)) for p in plans.list_plans(db)]
    return render_template("network_plans.html", rows=rows)


@network.route("/plans/new", methods=["GET", "POST"])
@superadmin_required
def plan_new() -> Page:
    form = _plan_form(None)
    if request.method == "GET":
        return render_template("network_plan_new.html", form=form, error=None, **_plan_choices())
    form = {key: _text(key) for key in form}
    try:
        with unit_of_work() as ctx:
            name = plans.create(ctx, form["name"], **_plan_values(form)).name
    except MuninetError as exc:
        page = render_template(
            "network_plan_new.html", form=form, error=error_text(exc), **_plan_choices()
        )
        return page, _status(exc)
    flash(_("Plan %(name)s created.", name=name), "info")
    return redirect(url_for("network.plan_detail", name=name))


def _render_plan(
    name: str, form: dict[str, str] | None = None, error: str | None = None, status: int = 200
) -> Page:
    with database().reader() as db:
        try:
            plan = plans.get(db, name)
        except NotFound:
            abort(404)
        used = plans.subscriber_counts(db).get(plan.id, 0)
        page = render_template(
            "network_plan.html",
            plan=plan,
            attributes=list(plan.attributes),
            used=used,
            form=form or _plan_form(plan),
            error=error,
            **_plan_choices(),
        )
    return page, status


@network.get("/plans/<name>")
@login_required
def plan_detail(name: str) -> Page:
    return _render_plan(name)


@network.post("/plans/<name>")
@superadmin_required
def plan_update(name: str) -> Page:
    form = {key: _text(key) for key in PLAN_FIELDS}
    try:
        with unit_of_work() as ctx:
            name = plans.update(ctx, name, **_plan_values(form)).name
    except NotFound:
        abort(404)
    except MuninetError as exc:
        return _render_plan(name, {**form, "name": name}, error_text(exc), _status(exc))
    flash(_("Plan %(name)s saved.", name=name), "info")
    return redirect(url_for("network.plan_detail", name=name))


@network.post("/plans/<name>/delete")
@superadmin_required
def plan_delete(name: str) -> Page:
    try:
        with unit_of_work() as ctx:
            plans.remove(ctx, name)
    except NotFound:
        abort(404)
    except MuninetError as exc:
        return _render_plan(name, error=error_text(exc), status=_status(exc))
    flash(_("Plan %(name)s removed.", name=name), "info")
    return redirect(url_for("network.plan_list"))


# -- subscribers ----------------------------------------------------------------------------


def _scoped(db: Session, username: str) -> Subscriber:
    """The subscriber, if the current admin may reach it; 404 otherwise (also another member's)."""
    try:
        subscriber = subscribers.get(db, username)
    except MuninetError:
        abort(404)
    member = scope()
    if member is not None and subscriber.member.slug != member:
        abort(404)
    return subscriber


def _member_choices(db: Session) -> list[tuple[str, str]]:
    member = scope()
    if member is not None:
        found = members.get(db, member)
        return [(found.slug, found.name)]
    return [(m.slug, m.name) for m in members.list_members(db)]


@network.get("/subscribers")
@login_required
def subscriber_list() -> Page:
    with database().reader() as db:
        rows = subscribers.list_subscribers(db, scope())
        page = render_template("network_subscribers.html", rows=rows, today=date.today())
    return page


def _render_new(form: dict[str, str], error: str | None = None, status: int = 200) -> Page:
    with database().reader() as db:
        page = render_template(
            "network_subscriber_new.html",
            form=form,
            error=error,
            choices=_member_choices(db),
            plan_names=[p.name for p in plans.list_plans(db)],
            pools=[p.name for p in nas.list_pools(db)],
        )
    return page, status


SUBSCRIBER_FIELDS = ("username", "member", "plan", "static_ip", "pool", "bind", "expires", "notes")


@network.route("/subscribers/new", methods=["GET", "POST"])
@login_required
def subscriber_new() -> Page:
    if request.method == "GET":
        return _render_new(dict.fromkeys(SUBSCRIBER_FIELDS, "") | {"generate": "on"})
    form = {key: _text(key) for key in SUBSCRIBER_FIELDS}
    form["generate"] = "on" if request.form.get("generate") == "on" else ""
    form["chap"] = "on" if request.form.get("chap") == "on" else ""
    member = scope() or form["member"]  # a member admin's lines are its own member's
    password = generate_password() if form["generate"] else request.form.get("password", "")
    try:
        with unit_of_work() as ctx:
            username = subscribers.create(
                ctx,
                form["username"],
                member,
                form["plan"],
                password,
                chap=bool(form["chap"]),
                static_ip=form["static_ip"] or None,
                pool_name=form["pool"] or None,
                calling_station_id=form["bind"] or None,
                expires_on=_date_field(form["expires"]),
                notes=form["notes"],
            ).username
    except MuninetError as exc:
        return _render_new(form, error_text(exc), _status(exc))
    if form["generate"]:
        return _password_page(username, password, created=True)
    flash(_("Subscriber %(username)s created.", username=username), "info")
    return redirect(url_for("network.subscriber_detail", username=username))


def _password_page(username: str, password: str, *, created: bool) -> Page:
    """The new password, shown this once (the answer to the POST; never stored for display)."""
    return render_template(
        "network_password.html", username=username, password=password, created=created
    )


def _render_subscriber(username: str, error: str | None = None, status: int = 200) -> Page:
    year, month = radius.parse_month(None)
    with database().reader() as db:
        subscriber = _scoped(db, username)
        report = radius.usage(db, year, month, subscriber.member.slug)
        page = render_template(
            "network_subscriber.html",
            subscriber=subscriber,
            state=subscriber.effective_status(date.today()),
            plan_names=[p.name for p in plans.list_plans(db)],
            sessions=radius.online_sessions(db, username=subscriber.username),
            usage=next((r for r in report.rows if r.username == subscriber.username), None),
            month=f"{year:04d}-{month:02d}",
            error=error,
        )
    return page, status


@network.get("/subscribers/<username>")
@login_required
def subscriber_detail(username: str) -> Page:
    return _render_subscriber(username)


@network.post("/subscribers/<username>")
@login_required
def subscriber_update(username: str) -> Page:
    try:
        with unit_of_work() as ctx:
            name = _scoped(ctx.session, username).username
            subscribers.update(
                ctx,
                name,
                plan_name=_text("plan") or None,
                static_ip=_text("static_ip") or None,
                calling_station_id=_text("bind") or None,
                expires_on=_date_field(_text("expires")),
            )
    except MuninetError as exc:
        return _render_subscriber(username, error_text(exc), _status(exc))
    flash(_("Subscriber %(username)s saved.", username=name), "info")
    return redirect(url_for("network.subscriber_detail", username=name))


@network.post("/subscribers/<username>/status")
@login_required
def subscriber_status(username: str) -> Page:
    wanted = {"suspend": SubscriberStatus.SUSPENDED, "resume": SubscriberStatus.ACTIVE}
    action = request.form.get("action", "")
    try:
        with unit_of_work() as ctx:
            name = _scoped(ctx.session, username).username
            if action not in wanted:
                raise ValidationError(_("Choose to suspend or to resume the line."))
            subscribers.set_status(ctx, name, wanted[action], _text("reason"))
    except MuninetError as exc:
        return _render_subscriber(username, error_text(exc), _status(exc))
    if action == "suspend":
        flash(_("Subscriber %(username)s suspended.", username=name), "info")
    else:
        flash(_("Subscriber %(username)s resumed.", username=name), "info")
    return redirect(url_for("network.subscriber_detail", username=name))


@network.post("/subscribers/<username>/password")
@login_required
def subscriber_password(username: str) -> Page:
    password = generate_password()
    with unit_of_work() as ctx:
        name = _scoped(ctx.session, username).username
        subscribers.set_password(ctx, name, password)
    return _password_page(name, password, created=False)


@network.post("/subscribers/<username>/delete")
@login_required
def subscriber_delete(username: str) -> Page:
    try:
        with unit_of_work() as ctx:
            name = _scoped(ctx.session, username).username
            if request.form.get("confirm") != "on":
                raise ValidationError(_("Tick the box to confirm the removal."))
            subscribers.remove(ctx, name)
    except MuninetError as exc:
        return _render_subscriber(username, error_text(exc), _status(exc))
    flash(_("Subscriber %(username)s removed.", username=name), "info")
    return redirect(url_for("network.subscriber_list"))


# -- online sessions and disconnect ---------------------------------------------------------


@network.get("/sessions")
@login_required
def session_list() -> Page:
    with database().reader() as db:
        rows = radius.online_sessions(db, scope())
        known = {s.username for s in subscribers.list_subscribers(db, scope())}
    return render_template("network_sessions.html", sessions=rows, known=known)


def _outcome_text(kick: radius_coa.Kick) -> str:
    result = kick.result
    if result is None:
        return str(_("no NAS entry covers this address: nothing sent"))
    if result.outcome is radius_coa.Outcome.ACK:
        return str(_("disconnected (ACK)"))
    if result.outcome is radius_coa.Outcome.NAK:
        cause = f": {result.error_cause}" if result.error_cause else ""
        return str(_("refused by the NAS (NAK)")) + cause
    if result.outcome is radius_coa.Outcome.TIMEOUT:
        return str(_("no answer from the NAS (timeout)"))
    return str(_("could not be sent (%(detail)s)", detail=result.detail))


@network.post("/subscribers/<username>/disconnect")
@login_required
def subscriber_disconnect(username: str) -> Page:
    """Disconnect the line's session named in the form, or all of its open sessions, as
    `muninet subscriber kick` does."""
    if scope() is not None:  # a superadmin may also end a removed subscriber's session
        with database().reader() as db:
            username = _scoped(db, username).username
    config = current_app.config
    try:
        kicks = radius_coa.kick(
            database(),
            actor(),
            username,
            timeout=float(config.get("RADIUS_COA_TIMEOUT", radius_coa.DEFAULT_TIMEOUT)),
            tries=int(config.get("RADIUS_COA_TRIES", radius_coa.DEFAULT_TRIES)),
            session_id=request.form.get("session_id") or None,
        )
    except NotFound:
        abort(404)
    name = username.strip().lower()
    if not kicks:
        flash(_("%(username)s has no open sessions.", username=name), "info")
    for item in kicks:
        text = _(
            "Session %(session)s of %(username)s at %(nas)s: %(outcome)s",
            session=item.session_id,
            username=name,
            nas=item.nas,
            outcome=_outcome_text(item),
        )
        flash(text, "info" if item.result is not None and item.result.ok else "error")
    if request.form.get("back") == "subscriber":
        return redirect(url_for("network.subscriber_detail", username=name))
    return redirect(url_for("network.session_list"))


# -- usage reports --------------------------------------------------------------------------


def _month_arg() -> tuple[int, int]:
    text = request.args.get("month", "").strip()
    return radius.parse_month(text or None)


def _month_links(year: int, month: int) -> dict[str, str]:
    before = (year - 1, 12) if month == 1 else (year, month - 1)
    after = (year + 1, 1) if month == 12 else (year, month + 1)
    return {
        "month": f"{year:04d}-{month:02d}",
        "previous": f"{before[0]:04d}-{before[1]:02d}",
        "next": f"{after[0]:04d}-{after[1]:02d}",
        "label": format_date(date(year, month, 1), "LLLL y"),
    }


def _bad_month(template: str, **context: Any) -> Page:
    year, month = radius.parse_month(None)
    error = _("Months must look like 2026-07.")
    return render_template(template, error=error, **_month_links(year, month), **context), 422


@network.get("/usage")
@login_required
def usage_report() -> Page:
    limit = scope()
    member = limit or request.args.get("member", "").strip() or None
    with database().reader() as db:
        choices = _member_choices(db)
        if member not in {slug for slug, _name in choices} | {None}:
            abort(404)
        try:
            year, month = _month_arg()
        except ValidationError:
            return _bad_month("network_usage.html", report=None, choices=choices, member=member)
        report = radius.usage(db, year, month, member)
        known = {s.username for s in subscribers.list_subscribers(db, member)}
    names = dict(choices)
    return render_template(
        "network_usage.html",
        report=report,
        member_rows=[(slug, names.get(slug, slug), row) for slug, row in report.members.items()],
        totals=_total(report.rows),
        known=known,
        choices=choices,
        member=member,
        error=None,
        **_month_links(year, month),
    )


def _total(rows: list[radius.UsageRow]) -> radius.UsageRow:
    return radius.UsageRow(
        username="",
        member=None,
        sessions=sum(r.sessions for r in rows),
        session_time=sum(r.session_time for r in rows),
        input_octets=sum(r.input_octets for r in rows),
        output_octets=sum(r.output_octets for r in rows),
    )


@network.get("/usage/<username>")
@login_required
def usage_daily(username: str) -> Page:
    with database().reader() as db:
        subscriber = _scoped(db, username)
        name = subscriber.username
        try:
            year, month = _month_arg()
        except ValidationError:
            return _bad_month("network_usage_daily.html", username=name, days=None)
        days = radius.daily_usage(db, name, year, month)
    rows = [(date(year, month, day), row) for day, row in days.items()]
    return render_template(
        "network_usage_daily.html",
        username=name,
        days=rows,
        totals=_total([row for _day, row in rows]),
        error=None,
        **_month_links(year, month),
    )
