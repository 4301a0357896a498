"""Logging in and out, and the language switch.

Every failed login gets the same message and status, whether the user exists or not,
and costs the same password check (a dummy hash for unknown users). Failures are
counted per client address and per username; past the limit every attempt is refused
(even with the right password) until the window has slid.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

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
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import client_address, start_session, unit_of_work
from admin_ui.i18n import LANGUAGES
from admin_ui.security import SlidingWindow
from provisioning.audit import Actor
from provisioning.errors import NotFound
from provisioning.services import admins
from provisioning.services.context import ServiceContext

account = Blueprint("account", __name__)

MAX_USERNAME = 64
MAX_PASSWORD_BYTES = 1024
WINDOW = 15 * 60


def limits() -> tuple[SlidingWindow, SlidingWindow]:
    """(per address, per account), one pair per app."""
    pair = current_app.extensions.get("muninet_login_limits")
    if not isinstance(pair, tuple):
        pair = (
            SlidingWindow(current_app.config.get("LOGIN_LIMIT_PER_IP", 20), WINDOW),
            SlidingWindow(current_app.config.get("LOGIN_LIMIT_PER_ACCOUNT", 5), WINDOW),
        )
        current_app.extensions["muninet_login_limits"] = pair
    return pair


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


def _check(username: str, password: str) -> bool:
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
        ctx.audit("admin.login" if admin else "admin.login-failed", who.name)
        return admin is not None


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
    if not username or not password or not _check(username, password):
        per_ip.hit(address)
        per_account.hit(username)
        flash(_("Wrong username or password."), "error")
        return render_template("login.html", next=request.form.get("next", "")), 401
    per_account.reset(username)
    lang = session.get("lang")
    start_session(username)
    if lang in LANGUAGES:
        session["lang"] = lang
    return redirect(_safe_next(request.form.get("next")))


@account.post("/logout")
def logout() -> BaseResponse:
    lang = session.get("lang")
    session.clear()
    if lang in LANGUAGES:
        session["lang"] = lang
    flash(_("You have logged out."), "info")
    return redirect(url_for("account.login"))


@account.post("/language")
def language() -> BaseResponse:
    chosen = request.form.get("lang", "")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return redirect(_safe_next(request.form.get("next")))
