"""Logging in and out, the second factor (TOTP), and the language switch.

Every failed login gets the same message and status, whether the user exists or not,
and costs the same password check (a dummy hash for unknown users). Failures are
counted per client address and per username; past the limit every attempt is refused
(even with the right password) until the window has slid.

An admin with the second factor on is asked for a code after the right password: the
session then holds only that pending step (who, since when), not a login. A wrong
code counts against the same limits as a wrong password.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal
from urllib.parse import urlsplit

import segno
from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import client_address, current_admin, login_required, start_session, unit_of_work
from admin_ui.context import database, settings
from admin_ui.i18n import LANGUAGES, error_text
from admin_ui.security import SlidingWindow, window
from provisioning.audit import Actor
from provisioning.errors import MuninetError, NotFound
from provisioning.services import admins
from provisioning.services.context import ServiceContext

account = Blueprint("account", __name__)

MAX_USERNAME = 64
MAX_PASSWORD_BYTES = 1024
WINDOW = 15 * 60
PENDING = "second_factor"  # session key: {"user", "at", "next"} between password and code
CODE_TIME = 5 * 60  # seconds to type the code after the password


def limits() -> tuple[SlidingWindow, SlidingWindow]:
    """(per address, per account), shared by every worker of this host."""
    app = current_app
    return (
        window(app, "address", app.config.get("LOGIN_LIMIT_PER_IP", 20), WINDOW),
        window(app, "admin", app.config.get("LOGIN_LIMIT_PER_ACCOUNT", 5), WINDOW),
    )


def _dummy_hash(ctx: ServiceContext) -> str:
    value = current_app.extensions.get("muninet_dummy_hash")
    if not isinstance(value, str):
        value = ctx.hasher.hash(secrets.token_urlsafe(24))
        current_app.extensions["muninet_dummy_hash"] = value
    return value


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("admin.dashboard")


Outcome = Literal["in", "code"] | None


def _check(username: str, password: str) -> Outcome:
    """ "in" (logged in), "code" (right password, second factor next) or None (refused)."""
    address = client_address()
    who = Actor("admin", username[:MAX_USERNAME] or "-", source_address=address)
    with unit_of_work(who) as ctx:
        admin = None
        usable = len(username) <= MAX_USERNAME and len(password.encode()) <= MAX_PASSWORD_BYTES
        try:
            exists = usable and bool(admins.get(ctx.session, username))
        except NotFound:
            exists = False
        if exists:
            admin = admins.authenticate(ctx, username, password)
        else:
            ctx.hasher.verify(password[:MAX_PASSWORD_BYTES], _dummy_hash(ctx))
        if admin is not None and admin.totp_enabled:
            return "code"  # audited once the code is checked
        ctx.audit("admin.login" if admin else "admin.login-failed", who.name)
        return "in" if admin else None


def _keep_language(start: bool = False, username: str = "") -> None:
    """Clear the session (or start a login) and keep the chosen language."""
    lang = session.get("lang")
    if start:
        start_session(username)
    else:
        session.clear()
    if lang in LANGUAGES:
        session["lang"] = lang


@account.route("/login", methods=["GET", "POST"])
def login() -> str | BaseResponse | tuple[str, int]:
    if request.method == "GET":
        if session.pop("expired", False):
            flash(_("Your session has expired. Please log in again."), "info")
        return render_template("login.html", next=request.args.get("next", ""))
    # Cut before use: an over-long name fails anyway and must not bloat the limiter.
    username = request.form.get("username", "").strip().lower()[: MAX_USERNAME + 1]
    password = request.form.get("password", "")
    per_ip, per_account = limits()
    address = client_address()
    if per_ip.blocked(address) or per_account.blocked(username):
        flash(_("Too many failed attempts. Please try again later."), "error")
        return render_template("login.html", next=request.form.get("next", "")), 429
    outcome = _check(username, password) if username and password else None
    if outcome is None:
        per_ip.hit(address)
        per_account.hit(username)
        flash(_("Wrong username or password."), "error")
        return render_template("login.html", next=request.form.get("next", "")), 401
    if outcome == "code":
        _keep_language()
        session[PENDING] = {
            "user": username,
            "at": time.time(),
            "next": _safe_next(request.form.get("next")),
        }
        return redirect(url_for("account.login_code"))
    per_account.reset(username)
    _keep_language(start=True, username=username)
    return redirect(_safe_next(request.form.get("next")))


def _pending() -> tuple[str, str] | None:
    """(username, next page) of a password step passed in the last CODE_TIME seconds."""
    step = session.get(PENDING)
    if not isinstance(step, dict):
        return None
    user, at, target = step.get("user"), step.get("at"), step.get("next")
    if not isinstance(user, str) or not isinstance(at, float | int) or not isinstance(target, str):
        return None
    if not 0 <= time.time() - at <= CODE_TIME:
        return None
    return user, target


@account.route("/login/code", methods=["GET", "POST"])
def login_code() -> str | BaseResponse | tuple[str, int]:
    """The second step for admins with TOTP: a code from their app."""
    pending = _pending()
    if pending is None:
        if session.pop(PENDING, None) is not None:
            flash(_("Too slow: please log in again."), "info")
        return redirect(url_for("account.login"))
    if request.method == "GET":
        return render_template("operations_login_code.html")
    username, target = pending
    per_ip, per_account = limits()
    address = client_address()
    if per_ip.blocked(address) or per_account.blocked(username):
        _keep_language()
        flash(_("Too many failed attempts. Please try again later."), "error")
        return render_template("login.html", next=""), 429
    code = request.form.get("code", "")[:20]
    who = Actor("admin", username, source_address=address)
    with unit_of_work(who) as ctx:
        ok = admins.totp_check(ctx, username, code)
        if ok:
            ctx.audit("admin.login", username, second_factor=True)
        else:
            ctx.audit("admin.login-failed", username, reason="second factor")
    if not ok:
        per_ip.hit(address)
        per_account.hit(username)
        flash(_("Wrong code."), "error")
        return render_template("operations_login_code.html"), 401
    per_account.reset(username)
    _keep_language(start=True, username=username)
    return redirect(target)


@account.post("/logout")
def logout() -> BaseResponse:
    _keep_language()
    flash(_("You have logged out."), "info")
    return redirect(url_for("account.login"))


@account.post("/language")
def language() -> BaseResponse:
    chosen = request.form.get("lang", "")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return redirect(_safe_next(request.form.get("next")))


# -- the second factor: enrol, confirm, disable ------------------------------------------------


def _qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (no script, no style attribute)."""
    code = segno.make(uri, error="m")
    svg = code.svg_inline(scale=4, dark="#000", light="#fff", title=_("QR code"))
    return Markup(svg)  # noqa: S704 - segno's own SVG; the title is escaped by segno


def _second_factor_page(error: str | None = None, status: int = 200) -> tuple[str, int]:
    with database().reader() as db:
        admin = admins.get(db, current_admin().username)
        uri = None
        if admin.totp_secret and not admin.totp_enabled:
            uri = admins.totp_uri(admin, settings().association.name or admins.TOTP_ISSUER)
        return render_template(
            "operations_second_factor.html",
            enabled=admin.totp_enabled,
            secret=admin.totp_secret if uri else None,
            uri=uri,
            qr=_qr_svg(uri) if uri else None,
            error=error,
        ), status


@account.get("/account/second-factor")
@login_required
def second_factor() -> tuple[str, int]:
    return _second_factor_page()


@account.post("/account/second-factor/enrol")
@login_required
def second_factor_enrol() -> BaseResponse | tuple[str, int]:
    try:
        with unit_of_work() as ctx:
            admins.totp_begin(ctx, current_admin().username)
    except MuninetError as exc:
        return _second_factor_page(error_text(exc), exc.http_status)
    return redirect(url_for("account.second_factor"))


@account.post("/account/second-factor/confirm")
@login_required
def second_factor_confirm() -> BaseResponse | tuple[str, int]:
    try:
        with unit_of_work() as ctx:
            admins.totp_confirm(ctx, current_admin().username, request.form.get("code", "")[:20])
    except MuninetError:
        return _second_factor_page(_("Wrong code."), 422)
    flash(_("The second factor is on: logins now ask for a code."), "info")
    return redirect(url_for("account.second_factor"))


@account.post("/account/second-factor/disable")
@login_required
def second_factor_disable() -> BaseResponse | tuple[str, int]:
    username = current_admin().username
    _per_ip, per_account = limits()
    if per_account.blocked(username):
        return _second_factor_page(_("Too many failed attempts. Please try again later."), 429)
    try:
        with unit_of_work() as ctx:
            admins.totp_disable(ctx, username, request.form.get("code", "")[:20])
    except MuninetError:
        per_account.hit(username)
        return _second_factor_page(_("Wrong code."), 422)
    flash(_("The second factor is off."), "info")
    return redirect(url_for("account.second_factor"))
