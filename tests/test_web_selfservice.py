"""Mailbox self-service at /me: login, separation from the admin, password, vacation, forwarding."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from web import PASSWORD, Browser, Unit, audit, messages
from werkzeug.test import TestResponse

from provisioning.models import MemberStatus
from provisioning.services import domains, mail_rules, mailboxes, members

pytest_plugins = ["web"]

SAME_FAILURE = "Wrong e-mail address or password."
NEW_PASSWORD = "a brand new secret 42"
IDN = "żółw.example"
IDN_ASCII = "xn--w-uga1v8h.example"


def login(browser: Browser, address: str, password: str = PASSWORD) -> TestResponse:
    return browser.submit("/me/login", "/me/login", {"address": address, "password": password})


def test_login_and_logout(browser: Browser, unit: Unit) -> None:
    assert browser.get("/me/").location == "/me/login"
    response = login(browser, "Biuro@Alfa.example")
    assert response.status_code == 302 and response.location == "/me/"
    page = browser.get("/me/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "biuro@alfa.example" in text and 'id="quota"' in text
    events = audit(unit, "mailbox.login")
    assert [(e.actor_kind, e.actor_name, e.source_address) for e in events] == [
        ("mailbox", "biuro@alfa.example", "192.0.2.10")
    ]
    assert browser.get("/me/login").location == "/me/"  # already logged in
    response = browser.submit("/me/", "/me/logout", {})
    assert response.location == "/me/login"
    assert browser.get("/me/").location == "/me/login"


def test_unicode_and_punycode_forms_log_in(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        domains.create(ctx, IDN, member_slug="alfa")
        mailboxes.create(ctx, f"sekretariat@{IDN}", "alfa", password=PASSWORD)
    for typed in [f"sekretariat@{IDN}", f"Sekretariat@{IDN_ASCII}", "sekretariat@ŻÓŁW.example"]:
        browser = Browser(app)
        assert login(browser, typed).status_code == 302, typed
        assert f"sekretariat@{IDN}" in browser.get("/me/").get_data(as_text=True)


def test_login_failures_look_the_same(browser: Browser, unit: Unit) -> None:
    wrong = login(browser, "biuro@alfa.example", "not the password")
    unknown = login(browser, "nobody@alfa.example")
    foreign = login(browser, "biuro@not-hosted.example")
    malformed = login(browser, "no at sign")
    empty = login(browser, "", "")
    token = re.compile(rb'name="csrf_token" value="[^"]*"')
    for response in (wrong, unknown, foreign, malformed, empty):
        assert response.status_code == 401
        assert messages(response) == [SAME_FAILURE]
        assert token.sub(b"", response.data) == token.sub(b"", wrong.data)
    failed = audit(unit, "mailbox.login-failed")
    assert sorted(e.target for e in failed) == [
        "biuro@alfa.example",
        "biuro@not-hosted.example",
        "no at sign",
        "nobody@alfa.example",
    ]
    assert browser.get("/me/").location == "/me/login"


@pytest.mark.parametrize("block", ["disable mailbox", "suspend member"])
def test_what_smtp_auth_refuses_is_refused(browser: Browser, unit: Unit, block: str) -> None:
    assert login(browser, "biuro@alfa.example").status_code == 302
    with unit() as ctx:
        if block == "disable mailbox":
            mailboxes.set_enabled(ctx, "biuro@alfa.example", False)
        else:
            members.set_status(ctx, "alfa", MemberStatus.SUSPENDED, "unpaid")
    assert browser.get("/me/").location == "/me/login"  # the live session ends too
    response = login(browser, "biuro@alfa.example")
    assert response.status_code == 401 and messages(response) == [SAME_FAILURE]


def test_rate_limit_per_mailbox(app: Flask) -> None:
    for attempt in range(5):
        response = login(Browser(app, f"198.51.100.{attempt}"), "biuro@beta.example", "wrong!!")
        assert response.status_code == 401
    # The right password, from a fresh address and in another spelling, is refused too.
    response = login(Browser(app, "198.51.100.99"), "BIURO@beta.example")
    assert response.status_code == 429
    assert messages(response) == ["Too many failed attempts. Please try again later."]
    # A mailbox that does not exist gets the same treatment.
    for attempt in range(5):
        login(Browser(app, f"203.0.113.{attempt}"), "ghost@beta.example", "wrong!!")
    assert login(Browser(app, "203.0.113.99"), "ghost@beta.example").status_code == 429
    assert login(Browser(app, "198.51.100.99"), "biuro@alfa.example").status_code == 302


def test_rate_limit_per_address_is_shared_with_admin_login(app: Flask) -> None:
    browser = Browser(app, "192.0.2.77")
    for attempt in range(10):
        assert login(browser, f"user{attempt}@alfa.example", "wrong!!").status_code == 401
        assert browser.login(f"admin{attempt}", "wrong password").status_code == 401
    assert login(browser, "biuro@alfa.example").status_code == 429
    assert browser.login("root").status_code == 429
    assert login(Browser(app, "192.0.2.78"), "biuro@alfa.example").status_code == 302


def test_csrf_enforced(browser: Browser) -> None:
    form = {"address": "biuro@alfa.example", "password": PASSWORD}
    assert browser.post("/me/login", form).status_code == 400
    assert login(browser, "biuro@alfa.example").status_code == 302
    assert browser.post("/me/vacation", {"enabled": "on"}).status_code == 400


def test_mailbox_user_cannot_reach_admin_pages(browser: Browser) -> None:
    assert login(browser, "biuro@alfa.example").status_code == 302
    for path in [
        "/",
        "/members",
        "/members/alfa",
        "/mailboxes",
        "/mailboxes/biuro@alfa.example",
        "/members/alfa/sheet",
        "/members/alfa/sheet.pdf",
    ]:
        response = browser.get(path)
        assert response.status_code in (302, 404), path
        if response.status_code == 302:
            assert response.location.startswith("/login"), path
    response = browser.submit(
        "/me/", "/mailboxes/biuro@alfa.example/forwarding", {"destinations": "x@example.org"}
    )
    assert response.status_code == 302 and response.location.startswith("/login")
    assert browser.get("/api/v1/members").status_code == 401
    assert browser.get("/me/").status_code == 200  # still logged in to its own page


def test_admin_session_does_not_grant_self_service(browser: Browser) -> None:
    assert browser.login("root").status_code == 302
    assert browser.get("/me/").location == "/me/login"
    response = browser.submit("/", "/me/forwarding", {"destinations": "x@example.org"})
    assert response.location == "/me/login"
    # Logging in as a mailbox ends the admin session: one identity per session.
    assert login(browser, "biuro@alfa.example").status_code == 302
    assert browser.get("/").location.startswith("/login")


def test_change_password(browser: Browser, unit: Unit) -> None:
    assert login(browser, "biuro@alfa.example").status_code == 302

    def change(current: str, new: str, repeat: str | None = None) -> TestResponse:
        form = {"current_password": current, "new_password": new}
        return browser.submit("/me/", "/me/password", {**form, "repeat_password": repeat or new})

    wrong = change("not my password", NEW_PASSWORD)
    assert wrong.status_code == 422 and "The current password is wrong." in wrong.text
    mismatch = change(PASSWORD, NEW_PASSWORD, "something else entirely")
    assert mismatch.status_code == 422 and "The new passwords do not match." in mismatch.text
    short = change(PASSWORD, "short")
    assert short.status_code == 422 and "at least 10 characters" in short.text
    response = change(PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302
    assert messages(browser.get("/me/")) == ["Your password has been changed."]
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, "biuro@alfa.example", NEW_PASSWORD) is not None
        assert mailboxes.authenticate(ctx, "biuro@alfa.example", PASSWORD) is None
        stored = mailboxes.get(ctx.session, "biuro@alfa.example").password_hash
        assert stored.startswith("{ARGON2ID}") and NEW_PASSWORD not in stored
    events = audit(unit, "mailbox.password")
    assert [(e.actor_kind, e.actor_name, e.target) for e in events] == [
        ("mailbox", "biuro@alfa.example", "biuro@alfa.example")
    ]
    assert [e.actor_kind for e in audit(unit, "mailbox.password-failed")] == ["mailbox"]
    other = Browser(browser.client.application, "192.0.2.11")
    assert login(other, "biuro@alfa.example").status_code == 401
    assert login(other, "biuro@alfa.example", NEW_PASSWORD).status_code == 302


def test_wrong_current_passwords_are_rate_limited(browser: Browser) -> None:
    assert login(browser, "biuro@alfa.example").status_code == 302
    form = {"new_password": NEW_PASSWORD, "repeat_password": NEW_PASSWORD}
    for _attempt in range(5):
        response = browser.submit("/me/", "/me/password", {**form, "current_password": "guess!"})
        assert response.status_code == 422
    response = browser.submit("/me/", "/me/password", {**form, "current_password": PASSWORD})
    assert response.status_code == 429


def test_password_set_elsewhere_ends_the_session(browser: Browser, unit: Unit) -> None:
    assert login(browser, "biuro@alfa.example").status_code == 302
    with unit() as ctx:
        mailboxes.set_password(ctx, "biuro@alfa.example", NEW_PASSWORD)
    assert browser.get("/me/").location == "/me/login"


def test_vacation_and_forwarding(browser: Browser, unit: Unit) -> None:
    assert login(browser, "biuro@beta.example").status_code == 302
    form = {
        "enabled": "on",
        "subject": "Отпуск",
        "body": "Ще се върна на 1 август.",
        "days": "3",
        "start": "2026-07-01",
        "end": "2026-07-31",
    }
    assert browser.submit("/me/", "/me/vacation", form).status_code == 302
    assert messages(browser.get("/me/")) == ["Vacation reply saved."]
    bad = browser.submit("/me/", "/me/vacation", {**form, "end": "31.07.2026"})
    assert bad.status_code == 422 and "Dates must look like 2026-07-31." in bad.text
    response = browser.submit(
        "/me/", "/me/forwarding", {"destinations": "someone@example.org\n", "keep_copy": "on"}
    )
    assert response.status_code == 302
    itself = browser.submit("/me/", "/me/forwarding", {"destinations": "biuro@beta.example"})
    assert itself.status_code == 422
    with unit() as ctx:
        rules = mail_rules.get(ctx.session, "biuro@beta.example")
        assert rules is not None
        assert rules.vacation_enabled and rules.vacation_subject == "Отпуск"
        assert rules.vacation_days == 3 and "vacation" in rules.sieve_script
        assert rules.forward_to == ["someone@example.org"] and rules.forward_keep_copy
        assert mail_rules.get(ctx.session, "biuro@alfa.example") is None
    for action in ("mailbox.vacation", "mailbox.forwarding"):
        assert [(e.actor_kind, e.actor_name) for e in audit(unit, action)] == [
            ("mailbox", "biuro@beta.example")
        ]
    page = browser.get("/me/").get_data(as_text=True)
    assert "Ще се върна на 1 август." in page and "someone@example.org" in page


def test_quota_use_is_shown(browser: Browser, app: Flask, unit: Unit) -> None:
    settings = app.config["MUNINET_SETTINGS"]
    new = settings.maildir_root / "alfa.example" / "biuro" / "Maildir" / "new"
    new.mkdir(parents=True)
    (new / "1.host,S=1536:2,").write_bytes(b"x" * 1536)
    assert login(browser, "biuro@alfa.example").status_code == 302
    page = browser.get("/me/", headers={"Accept-Language": "pl"}).get_data(as_text=True)
    assert "1,5 KiB" in page
    assert 'value="1536"' in page


def test_pages_are_translated(browser: Browser) -> None:
    polish = browser.get("/me/login", headers={"Accept-Language": "pl"}).get_data(as_text=True)
    assert "Moja skrzynka" in polish
    bulgarian = browser.get("/me/login", headers={"Accept-Language": "bg"}).get_data(as_text=True)
    assert "Моята пощенска кутия" in bulgarian
    assert "/me/login" in browser.get("/login").get_data(as_text=True)  # linked from admin login
