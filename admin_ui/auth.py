"""Who is logged in, and the one place that decides what they may reach.

A superadmin reaches everything; a member admin only its own member's objects, and
another member's objects answer 404 (as if they did not exist). The session holds the
admin's username and two times (login, last request); the admin is reloaded from the
database on every request, so disabling an admin ends their sessions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from admin_ui.context import database, settings
from provisioning.audit import Actor
from provisioning.errors import NotFound
from provisioning.services import admins
from provisioning.services.context import ServiceContext

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CurrentAdmin:
    username: str
    member: str | None  # the member's slug for a member admin; None for a superadmin

    @property
    def is_superadmin(self) -> bool:
        return self.member is None


def client_address() -> str:
    return request.remote_addr or ""


def start_session(username: str) -> None:
    session.clear()
    now = time.time()
    session["admin"] = username
    session["since"] = now
    session["seen"] = now
    session.permanent = True


def load_current_admin() -> None:
    """before_request: g.admin from a live, unexpired session (else the session ends)."""
    g.admin = None
    username = session.get("admin")
    if not isinstance(username, str):
        return
    now = time.time()
    lifetime = current_app.config["PERMANENT_SESSION_LIFETIME"].total_seconds()
    idle = current_app.config["ADMIN_SESSION_IDLE"].total_seconds()
    since, seen = session.get("since", 0), session.get("seen", 0)
    if not isinstance(since, float | int) or not isinstance(seen, float | int):
        session.clear()
        return
    if now - since > lifetime or now - seen > idle:
        lang = session.get("lang")
        session.clear()
        if lang:
            session["lang"] = lang
        session["expired"] = True
        return
    with database().reader() as db:
        try:
            admin = admins.get(db, username)
        except NotFound:
            admin = None
        if admin is None or not admin.enabled:
            session.clear()
            return
        g.admin = CurrentAdmin(admin.username, admin.member.slug if admin.member else None)
    session["seen"] = now


def current_admin() -> CurrentAdmin:
    admin = g.get("admin")
    if not isinstance(admin, CurrentAdmin):
        abort(401)
    return admin


def login_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
        if not isinstance(g.get("admin"), CurrentAdmin):
            target = request.full_path if request.method == "GET" else request.path
            return redirect(url_for("account.login", next=target.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def superadmin_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    @login_required
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not current_admin().is_superadmin:
            abort(404)
        return view(*args, **kwargs)

    return wrapper


def scope() -> str | None:
    """The member slug the current admin is limited to, or None (everything)."""
    return current_admin().member


def require_member(slug: str) -> None:
    """404 unless the current admin may see this member's objects."""
    member = current_admin().member
    if member is not None and member != slug:
        abort(404)


def actor() -> Actor:
    admin = g.get("admin")
    name = admin.username if isinstance(admin, CurrentAdmin) else "anonymous"
    return Actor("admin", name, source_address=client_address())


@contextmanager
def unit_of_work(who: Actor | None = None) -> Iterator[ServiceContext]:
    """One committed transaction for service calls, acting as the logged-in admin."""
    with database().transaction() as db:
        yield ServiceContext(session=db, actor=who or actor(), settings=settings())
