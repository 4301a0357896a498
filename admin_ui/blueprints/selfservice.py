"""Mailbox self-service under /me: a mailbox user logs in with the mailbox's own password.

Its session is separate from an admin's: logging in clears the session and sets only the
`mailbox_*` keys, never `admin`, so every admin page treats a mailbox user as logged out
(and 302s to the admin login); this blueprint reads only `mailbox`, so an admin session
grants nothing here.

The login makes the same checks as SMTP AUTH and Dovecot (`mailboxes.authenticate`: the
right password, the mailbox enabled, its member active), and they are made again on every
request. The session also keeps a keyed fingerprint of the stored hash, so a password set
elsewhere (by an admin, or on the setup sheet) ends the mailbox's web sessions.

Failures look the same whether the mailbox exists or not (same message, status and
password check, with a dummy hash for unknown ones), and are counted per client address
(the budget the admin login uses too) and per mailbox; past the limit every attempt is
refused until the window has slid. Every change is audited with the mailbox as the actor.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.auth import client_address, unit_of_work
from admin_ui.blueprints.account import WINDOW, limits
from admin_ui.context import database, settings
from admin_ui.forms import InvalidForm, save_forwarding, save_vacation
from admin_ui.i18n import LANGUAGES, error_text
from admin_ui.security import SlidingWindow, window
from provisioning.audit import Actor
from provisioning.autoconfig import login_name
from provisioning.errors import MuninetError
from provisioning.models import Mailbox, MemberStatus
from provisioning.passwords import MAX_PASSWORD_BYTES
from provisioning.services import mail_rules, mailboxes
from provisioning.services.context import ServiceContext

selfservice = Blueprint("selfservice", __name__, url_prefix="/me")

P = ParamSpec("P")
R = TypeVar("R")
Page = str | tuple[str, int] | BaseResponse

MAX_ADDRESS = 320
MAX_ACTOR = 100  # audit_events.actor_name


@dataclass(frozen=True)
class CurrentMailbox:
    address: str  # the lookup key (ASCII domain)
    display: str  # as people read it (Unicode domain)


# -- helpers ----------------------------------------------------------------------------------


def _per_mailbox() -> SlidingWindow:
    """Failures per mailbox (the per-address window is the admin login's)."""
    app = current_app
    return window(app, "mailbox", app.config.get("LOGIN_LIMIT_PER_ACCOUNT", 5), WINDOW)


def _key(text: str) -> str:
    """What the limiter counts: the lookup key, so Unicode and punycode forms count as one."""
    try:
        return login_name(text)
    except MuninetError:
        return text.strip().lower()


def _stamp(password_hash: str) -> str:
    """A keyed fingerprint of the stored hash: it changes when the password does."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def _actor(name: str) -> Actor:
    return Actor("mailbox", name[:MAX_ACTOR] or "-", source_address=client_address())


def _dummy_hash(ctx: ServiceContext) -> str:
    """A hash of nothing anyone knows: unknown mailboxes cost the same check as known ones."""
    value = current_app.extensions.get("muninet_dummy_hash")
    if not isinstance(value, str):
        value = ctx.hasher.hash(secrets.token_urlsafe(24))
        current_app.extensions["muninet_dummy_hash"] = value
    return value


def _end_session(*, expired: bool = False) -> None:
    lang = session.get("lang")
    session.clear()
    if lang in LANGUAGES:
        session["lang"] = lang
    if expired:
        session["mailbox_expired"] = True


def _may_log_in(mailbox: Mailbox) -> bool:
    return mailbox.enabled and mailbox.member.status is MemberStatus.ACTIVE


@selfservice.before_request
def _load_mailbox() -> None:
    """g.mailbox from a live, unexpired session whose mailbox may still log in."""
    g.mailbox = None
    key = session.get("mailbox")
    if not isinstance(key, str):
        return
    now = time.time()
    lifetime = current_app.config["PERMANENT_SESSION_LIFETIME"].total_seconds()
    idle = current_app.config["ADMIN_SESSION_IDLE"].total_seconds()
    since, seen = session.get("mailbox_since"), session.get("mailbox_seen")
    if not isinstance(since, float | int) or not isinstance(seen, float | int):
        _end_session()
        return
    if now - since > lifetime or now - seen > idle:
        _end_session(expired=True)
        return
    stamp = session.get("mailbox_stamp")
    with database().reader() as db:
        try:
            mailbox: Mailbox | None = mailboxes.get(db, key)
        except MuninetError:
            mailbox = None
        if (
            mailbox is None
            or not _may_log_in(mailbox)
            or not isinstance(stamp, str)
            or not hmac.compare_digest(stamp, _stamp(mailbox.password_hash))
        ):
            _end_session()
            return
        g.mailbox = CurrentMailbox(mailbox.address, mailbox.display_address)
    session["mailbox_seen"] = now


def current_mailbox() -> CurrentMailbox:
    found = g.get("mailbox")
    assert isinstance(found, CurrentMailbox)
    return found


def mailbox_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
        if not isinstance(g.get("mailbox"), CurrentMailbox):
            return redirect(url_for("selfservice.login"))
        return view(*args, **kwargs)

    return wrapper


@selfservice.app_context_processor
def _globals() -> dict[str, object]:
    return {"mailbox_user": g.get("mailbox")}


# -- logging in and out -----------------------------------------------------------------------


def _check(address: str, password: str) -> tuple[str, str] | None:
    """(lookup key, hash fingerprint) when the password is right and the mailbox may log in."""
    with unit_of_work(_actor(address)) as ctx:
        usable = len(address) <= MAX_ADDRESS and len(password.encode()) <= MAX_PASSWORD_BYTES
        try:
            exists = usable and bool(mailboxes.get(ctx.session, address))
        except MuninetError:
            exists = False
        mailbox = mailboxes.authenticate(ctx, address, password) if exists else None
        if not exists:
            ctx.hasher.verify(password[:MAX_PASSWORD_BYTES], _dummy_hash(ctx))
        if mailbox is None:
            ctx.audit("mailbox.login-failed", address[:MAX_ADDRESS])
            return None
        ctx.actor = _actor(mailbox.display_address)
        ctx.audit("mailbox.login", mailbox.display_address)
        return mailbox.address, _stamp(mailbox.password_hash)


def _login_page(status: int = 200) -> tuple[str, int]:
    return render_template("selfservice_login.html"), status


@selfservice.route("/login", methods=["GET", "POST"])
def login() -> Page:
    if request.method == "GET":
        if isinstance(g.get("mailbox"), CurrentMailbox):
            return redirect(url_for("selfservice.home"))
        if session.pop("mailbox_expired", False):
            flash(_("Your session has expired. Please log in again."), "info")
        return _login_page()
    # Cut before use: an over-long address fails anyway and must not bloat the limiter.
    address = request.form.get("address", "").strip()[: MAX_ADDRESS + 1]
    password = request.form.get("password", "")
    key = _key(address)
    per_ip, per_mailbox = limits()[0], _per_mailbox()
    where = client_address()
    if per_ip.blocked(where) or per_mailbox.blocked(key):
        flash(_("Too many failed attempts. Please try again later."), "error")
        return _login_page(429)
    found = _check(address, password) if address and password else None
    if found is None:
        per_ip.hit(where)
        per_mailbox.hit(key)
        flash(_("Wrong e-mail address or password."), "error")
        return _login_page(401)
    per_mailbox.reset(key)
    _end_session()
    now = time.time()
    session["mailbox"], session["mailbox_stamp"] = found
    session["mailbox_since"] = session["mailbox_seen"] = now
    session.permanent = True
    return redirect(url_for("selfservice.home"))


@selfservice.post("/logout")
def logout() -> BaseResponse:
    _end_session()
    flash(_("You have logged out."), "info")
    return redirect(url_for("selfservice.login"))


# -- the mailbox's own page -------------------------------------------------------------------


def _home(error: str | None = None, status: int = 200) -> tuple[str, int]:
    key = current_mailbox().address
    with database().reader() as db:
        mailbox = mailboxes.get(db, key)
        usage = mailboxes.usage(settings(), mailbox)
        quota = max(mailbox.quota_bytes, 1)
        percent = min(100, round(100 * usage.bytes / quota))
        page = render_template(
            "selfservice_home.html",
            mailbox=mailbox,
            rules=mail_rules.get(db, key),
            usage=usage,
            percent=percent,
            min_length=settings().passwords.min_length,
            error=error,
        )
    return page, status


@selfservice.get("/")
@mailbox_required
def home() -> Page:
    return _home()


@selfservice.post("/password")
@mailbox_required
def password() -> Page:
    me = current_mailbox()
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    per_mailbox = _per_mailbox()
    if per_mailbox.blocked(me.address):
        return _home(_("Too many failed attempts. Please try again later."), 429)
    minimum = settings().passwords.min_length
    if new != request.form.get("repeat_password", ""):
        return _home(_("The new passwords do not match."), 422)
    if len(new) < minimum:
        return _home(_("The new password needs at least %(count)s characters.", count=minimum), 422)
    if len(current.encode()) > MAX_PASSWORD_BYTES:
        current = ""
    try:
        with unit_of_work(_actor(me.display)) as ctx:
            if mailboxes.authenticate(ctx, me.address, current) is None:
                ctx.audit("mailbox.password-failed", me.display)
                stamp = None
            else:
                stamp = _stamp(mailboxes.set_password(ctx, me.address, new).password_hash)
    except MuninetError as exc:
        return _home(error_text(exc), 422)
    if stamp is None:
        per_mailbox.hit(me.address)
        return _home(_("The current password is wrong."), 422)
    session["mailbox_stamp"] = stamp
    flash(_("Your password has been changed."), "info")
    return redirect(url_for("selfservice.home"))


@selfservice.post("/vacation")
@mailbox_required
def vacation() -> Page:
    me = current_mailbox()
    try:
        with unit_of_work(_actor(me.display)) as ctx:
            save_vacation(ctx, me.address, request.form)
    except (MuninetError, InvalidForm) as exc:
        return _home(error_text(exc), 422)
    flash(_("Vacation reply saved."), "info")
    return redirect(url_for("selfservice.home"))


@selfservice.post("/forwarding")
@mailbox_required
def forwarding() -> Page:
    me = current_mailbox()
    try:
        with unit_of_work(_actor(me.display)) as ctx:
            save_forwarding(ctx, me.address, request.form)
    except MuninetError as exc:
        return _home(error_text(exc), 422)
    flash(_("Forwarding saved."), "info")
    return redirect(url_for("selfservice.home"))
