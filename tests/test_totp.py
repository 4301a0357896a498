"""The admins' optional second factor (TOTP): enrol, log in with a code, limits, disable, reset.

Codes come from pyotp, as an authenticator app would make them from the enrolled key.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from flask import Flask
from web import PASSWORD, SAME_FAILURE, Browser, Unit, audit, messages

from admin_ui.blueprints import account
from provisioning.errors import ValidationError
from provisioning.services import admins

pytest_plugins = ["web"]

Cli = Callable[..., subprocess.CompletedProcess[str]]


def enrol(browser: Browser, username: str) -> pyotp.TOTP:
    """Log in, set up the second factor through the pages, return the 'phone app'."""
    assert browser.login(username).status_code == 302
    started = browser.submit("/account/second-factor", "/account/second-factor/enrol", {})
    assert started.status_code == 302
    page = browser.get("/account/second-factor").get_data(as_text=True)
    uri = re.search(r"<code>(otpauth://[^<]+)</code>", page)
    key = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page)
    assert uri and key
    parts = urlsplit(uri.group(1).replace("&amp;", "&"))
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert username in parts.path
    assert parse_qs(parts.query)["secret"] == [key.group(1)]
    assert "<svg" in page and "<script" not in page  # the QR code, drawn by the server
    app = pyotp.TOTP(key.group(1))
    wrong = browser.submit(
        "/account/second-factor", "/account/second-factor/confirm", {"code": wrong_code(app)}
    )
    assert wrong.status_code == 422 and "Wrong code." in wrong.get_data(as_text=True)
    # The previous step's code (apps drift): the current one is left for the next login.
    away_from_a_step_change()
    done = browser.submit(
        "/account/second-factor",
        "/account/second-factor/confirm",
        {"code": app.at(time.time() - 30)},
    )
    assert done.status_code == 302
    assert "The second factor is on" in browser.get("/account/second-factor").get_data(as_text=True)
    browser.submit("/", "/logout", {})
    return app


def away_from_a_step_change() -> None:
    """Wait out the last 2 seconds of a 30-second step, so a code is judged in its own step."""
    left = 30 - time.time() % 30
    if left < 2:
        time.sleep(left + 0.1)


def wrong_code(app: pyotp.TOTP) -> str:
    near = {app.at(time.time() + step * 30) for step in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(1000)) if c not in near)


def code_step(browser: Browser, code: str) -> int:
    return browser.submit("/login/code", "/login/code", {"code": code}).status_code


def test_enrol_then_login_asks_for_the_code(browser: Browser, unit: Unit) -> None:
    app = enrol(browser, "root")
    response = browser.login("root")
    assert response.status_code == 302 and response.location == "/login/code"
    assert browser.get("/").status_code == 302  # the password alone does not log in
    assert browser.get("/queue").status_code == 302
    assert code_step(browser, wrong_code(app)) == 401
    assert messages(browser.get("/login/code")) == []
    assert browser.get("/").status_code == 302
    now = app.now()
    response = browser.submit("/login/code", "/login/code", {"code": now[:3] + " " + now[3:]})
    assert response.status_code == 302 and response.location == "/"
    assert browser.get("/").status_code == 200
    logins = [e for e in audit(unit, "admin.login") if e.details.get("second_factor")]
    assert [(e.target, e.source_address) for e in logins] == [("root", "192.0.2.10")]
    failures = [e.details for e in audit(unit, "admin.login-failed")]
    assert failures == [{"reason": "second factor"}]
    enabled = audit(unit, "admin.totp-enable")
    assert [e.target for e in enabled] == ["root"]


def test_code_is_used_once_and_login_returns_to_the_page(browser: Browser) -> None:
    app = enrol(browser, "admin-alfa")  # member admins may use it too
    code = app.now()
    assert browser.login("admin-alfa").status_code == 302
    assert code_step(browser, code) == 302
    browser.submit("/", "/logout", {})
    asked = browser.get("/mailboxes")
    response = browser.submit(
        asked.location,
        "/login",
        {"username": "admin-alfa", "password": PASSWORD, "next": "/mailboxes"},
    )
    assert response.location == "/login/code"
    assert code_step(browser, code) == 401  # replayed
    later = browser.submit("/login/code", "/login/code", {"code": app.at(time.time() + 30)})
    assert later.status_code == 302 and later.location == "/mailboxes"


def test_wrong_password_looks_the_same_with_a_second_factor(browser: Browser, app: Flask) -> None:
    enrol(browser, "root")
    other = Browser(app, "192.0.2.90")
    with_factor = other.login("root", "not the password")
    without = other.login("admin-beta", "not the password")
    unknown = other.login("nobody", "not the password")
    for response in (with_factor, without, unknown):
        assert response.status_code == 401
        assert messages(response) == [SAME_FAILURE]
    token = re.compile(rb'name="csrf_token" value="[^"]*"')
    assert token.sub(b"", with_factor.data) == token.sub(b"", unknown.data)


def test_code_step_needs_the_password_step(app: Flask, browser: Browser) -> None:
    totp = enrol(browser, "root")
    stranger = Browser(app, "192.0.2.91")
    assert stranger.get("/login/code").location == "/login"
    token = stranger.token()
    response = stranger.post("/login/code", {"csrf_token": token, "code": totp.now()})
    assert response.status_code == 302 and response.location == "/login"
    assert stranger.get("/").status_code == 302
    assert stranger.post("/login/code", {"code": totp.now()}).status_code == 400  # CSRF


def test_code_step_expires(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    totp = enrol(browser, "root")
    assert browser.login("root").location == "/login/code"
    monkeypatch.setattr(account, "CODE_TIME", -1)
    response = browser.submit("/login", "/login/code", {"code": totp.now()})
    assert response.location == "/login"
    assert messages(browser.get("/login")) == ["Too slow: please log in again."]
    assert browser.get("/").status_code == 302


def test_wrong_codes_hit_the_login_limits(app: Flask, browser: Browser) -> None:
    totp = enrol(browser, "admin-beta")
    attacker = Browser(app, "198.51.100.20")
    assert attacker.login("admin-beta").location == "/login/code"
    for _attempt in range(5):
        assert code_step(attacker, wrong_code(totp)) == 401
    # Now even the right code is refused, and so is the password step, from anywhere.
    response = attacker.submit("/login", "/login/code", {"code": totp.now()})
    assert response.status_code == 429
    assert attacker.get("/").status_code == 302
    fresh = Browser(app, "198.51.100.21")
    refused = fresh.login("admin-beta")
    assert refused.status_code == 429
    assert messages(refused) == ["Too many failed attempts. Please try again later."]


def test_disable_with_a_code(browser: Browser, unit: Unit) -> None:
    totp = enrol(browser, "root")
    assert browser.login("root").status_code == 302
    assert code_step(browser, totp.now()) == 302
    page = "/account/second-factor"
    wrong = browser.submit(page, "/account/second-factor/disable", {"code": wrong_code(totp)})
    assert wrong.status_code == 422
    right = browser.submit(
        page, "/account/second-factor/disable", {"code": totp.at(time.time() + 30)}
    )
    assert right.status_code == 302
    assert "The second factor is off" in browser.get(page).get_data(as_text=True)
    browser.submit("/", "/logout", {})
    assert browser.login("root").location == "/"  # the password is enough again
    with unit() as ctx:
        root = admins.get(ctx.session, "root")
        assert root.totp_secret is None and not root.totp_enabled
    assert [e.target for e in audit(unit, "admin.totp-disable")] == ["root"]


def test_enrolment_is_not_active_until_confirmed(browser: Browser, unit: Unit) -> None:
    assert browser.login("root").status_code == 302
    browser.submit("/account/second-factor", "/account/second-factor/enrol", {})
    browser.submit("/", "/logout", {})
    assert browser.login("root").location == "/"  # not confirmed: no code asked
    with unit() as ctx:
        assert admins.get(ctx.session, "root").totp_secret


def test_services_accept_one_step_of_drift(unit: Unit, app: Flask) -> None:
    with unit() as ctx:
        secret = admins.totp_begin(ctx, "admin-alfa")
    totp = pyotp.TOTP(secret)
    t0 = 1_800_000_000.0
    with unit() as ctx:
        with pytest.raises(ValidationError):
            admins.totp_confirm(ctx, "admin-alfa", totp.at(t0 - 60), now=t0)  # two steps off
        admins.totp_confirm(ctx, "admin-alfa", totp.at(t0 - 30), now=t0)
    with unit() as ctx:
        assert not admins.totp_check(ctx, "admin-alfa", totp.at(t0 - 30), now=t0)  # used
        assert not admins.totp_check(ctx, "admin-alfa", "12345", now=t0)
        assert not admins.totp_check(ctx, "nobody", totp.at(t0), now=t0)
        assert admins.totp_check(ctx, "admin-alfa", totp.at(t0 + 30), now=t0)
        assert not admins.totp_check(ctx, "admin-alfa", totp.at(t0), now=t0)  # older than used
        admins.get(ctx.session, "admin-alfa").enabled = False
    with unit() as ctx:
        assert not admins.totp_check(ctx, "admin-alfa", totp.at(t0 + 60), now=t0 + 60)


def test_cli_reset_for_a_lost_phone(browser: Browser, cli: Cli, unit: Unit) -> None:
    enrol(browser, "root")
    assert browser.login("root").location == "/login/code"
    done = cli("admin", "totp-reset", "root")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "second factor of root switched off"
    fresh = Browser(browser.client.application, "192.0.2.95")
    assert fresh.login("root").location == "/"
    unknown = cli("admin", "totp-reset", "nobody")
    assert unknown.returncode == 1
    assert "no admin 'nobody'" in unknown.stderr and "Traceback" not in unknown.stderr
    assert [(e.actor_kind, e.target) for e in audit(unit, "admin.totp-reset")] == [("cli", "root")]


def test_second_factor_forms_need_csrf(browser: Browser, unit: Unit) -> None:
    assert browser.get("/account/second-factor").status_code == 302  # logged out: to login
    assert browser.login("root").status_code == 302
    for action in ["enrol", "confirm", "disable"]:
        path = f"/account/second-factor/{action}"
        assert browser.post(path, {"code": "123456"}).status_code == 400, path
    with unit() as ctx:
        assert admins.get(ctx.session, "root").totp_secret is None
