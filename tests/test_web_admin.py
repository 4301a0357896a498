"""The web admin (Flask test client over https): login, roles, CSRF, limits, headers, languages."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from web import PASSWORD, SAME_FAILURE, Browser, Unit, audit, messages

from admin_ui import create_app
from provisioning.services import admins, mail_rules, mailboxes, members
from provisioning.settings import Settings, load_settings

pytest_plugins = ["web"]


def test_logged_out_user_is_sent_to_login(browser: Browser) -> None:
    for path in ["/", "/members", "/mailboxes", "/mailboxes/new", "/mailboxes/biuro@alfa.example"]:
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next="), response.location
    assert browser.post("/mailboxes/biuro@alfa.example/forwarding", {}).status_code in (302, 400)


def test_login_and_logout(browser: Browser, unit: Unit) -> None:
    response = browser.login("root")
    assert response.status_code == 302 and response.location == "/"
    page = browser.get("/")
    assert page.status_code == 200
    assert "Online sessions" in page.get_data(as_text=True)
    cookie = page.request.headers.get("Cookie", "")
    assert "__Host-muninet=" in cookie
    events = audit(unit, "admin.login")
    assert [(e.actor_name, e.source_address) for e in events] == [("root", "192.0.2.10")]
    response = browser.submit("/", "/logout", {})
    assert response.status_code == 302
    assert browser.get("/").status_code == 302


def test_session_cookie_flags(browser: Browser) -> None:
    response = browser.login("root")
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("__Host-muninet=")
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Expires="]:
        assert flag in set_cookie, set_cookie


def test_login_failures_look_the_same(browser: Browser, unit: Unit) -> None:
    wrong = browser.login("root", "not the password")
    unknown = browser.login("nobody-here", PASSWORD)
    empty = browser.login("", "")
    for response in (wrong, unknown, empty):
        assert response.status_code == 401
        assert messages(response) == [SAME_FAILURE]
    # Identical but for the CSRF token, which carries its own time stamp.
    token = re.compile(rb'name="csrf_token" value="[^"]*"')
    assert token.sub(b"", wrong.data) == token.sub(b"", unknown.data)
    failed = audit(unit, "admin.login-failed")
    assert sorted(e.target for e in failed) == ["nobody-here", "root"]  # empty forms: no check
    assert browser.get("/").status_code == 302


def test_login_rate_limit_per_account(app: Flask) -> None:
    for attempt in range(5):
        response = Browser(app, f"198.51.100.{attempt}").login("admin-alfa", "wrong password!")
        assert response.status_code == 401
    # The right password from a fresh address is refused too, with no hint about the account.
    response = Browser(app, "198.51.100.99").login("admin-alfa")
    assert response.status_code == 429
    assert messages(response) == ["Too many failed attempts. Please try again later."]
    # ... and an unknown account gets the very same treatment.
    for attempt in range(5):
        Browser(app, f"203.0.113.{attempt}").login("ghost", "wrong password!")
    assert Browser(app, "203.0.113.99").login("ghost").status_code == 429
    # Another account is not affected.
    assert Browser(app, "198.51.100.99").login("admin-beta").status_code == 302


def test_login_rate_limit_per_address(app: Flask) -> None:
    browser = Browser(app, "192.0.2.77")
    for attempt in range(20):
        assert browser.login(f"user{attempt}", "wrong password!").status_code == 401
    assert browser.login("root").status_code == 429
    assert Browser(app, "192.0.2.78").login("root").status_code == 302


def test_csrf_enforced(browser: Browser, unit: Unit) -> None:
    response = browser.post("/login", {"username": "root", "password": PASSWORD})
    assert response.status_code == 400
    assert browser.get("/").status_code == 302  # not logged in
    assert browser.login("root").status_code == 302
    form = {"destinations": "someone@example.org", "keep_copy": "on"}
    url = "/mailboxes/biuro@alfa.example/forwarding"
    assert browser.post(url, form).status_code == 400
    assert browser.post(url, {**form, "csrf_token": "forged"}).status_code == 400
    # A token from this session, but posted from another site (Referer check over https).
    token = browser.token("/mailboxes/biuro@alfa.example")
    other_site = {"Referer": "https://evil.example/"}
    assert browser.post(url, {**form, "csrf_token": token}, headers=other_site).status_code == 400
    with unit() as ctx:
        assert mail_rules.get(ctx.session, "biuro@alfa.example") is None
    assert browser.post(url, {**form, "csrf_token": token}).status_code == 302
    with unit() as ctx:
        rules = mail_rules.get(ctx.session, "biuro@alfa.example")
        assert rules is not None and rules.forward_to == ["someone@example.org"]


def test_member_admin_sees_only_its_member(browser: Browser, unit: Unit) -> None:
    assert browser.login("admin-alfa").status_code == 302
    listing = browser.get("/mailboxes").get_data(as_text=True)
    assert "biuro@alfa.example" in listing and "beta.example" not in listing
    assert browser.get("/members").location == "/members/alfa"
    assert browser.get("/members/alfa").status_code == 200
    assert browser.get("/members/beta").status_code == 404
    assert browser.get("/members/no-such-member").status_code == 404
    assert browser.get("/mailboxes/biuro@beta.example").status_code == 404
    assert browser.get("/mailboxes/nobody@alfa.example").status_code == 404
    token = browser.token("/mailboxes/biuro@alfa.example")
    for action, form in [
        ("forwarding", {"destinations": "thief@example.org"}),
        ("vacation", {"enabled": "on", "subject": "x", "body": "y"}),
    ]:
        response = browser.post(
            f"/mailboxes/biuro@beta.example/{action}", {"csrf_token": token, **form}
        )
        assert response.status_code == 404, action
    # Creating a mailbox for the other member: the member field is ignored, and the
    # other member's domain is refused by the service.
    response = browser.post(
        "/mailboxes/new",
        {"csrf_token": token, "address": "x@beta.example", "member": "beta", "password": PASSWORD},
    )
    assert response.status_code in (403, 422)
    with unit() as ctx:
        assert mail_rules.get(ctx.session, "biuro@beta.example") is None
        assert [m.address for m in mailboxes.list_mailboxes(ctx.session, "beta")] == [
            "biuro@beta.example"
        ]


def test_member_admin_creates_mailbox_and_sets_vacation(browser: Browser, unit: Unit) -> None:
    assert browser.login("admin-alfa").status_code == 302
    response = browser.submit(
        "/mailboxes/new",
        "/mailboxes/new",
        {"address": "sekretariat@alfa.example", "password": PASSWORD, "quota": "1G"},
    )
    assert response.status_code == 302, response.data
    assert response.location == "/mailboxes/sekretariat@alfa.example"
    page = browser.get(response.location)
    assert messages(page) == ["Mailbox sekretariat@alfa.example created."]
    # The package allows 3 mailboxes and 3 GiB: a 2 GiB mailbox does not fit any more.
    refused = browser.submit(
        "/mailboxes/new",
        "/mailboxes/new",
        {"address": "duza@alfa.example", "password": PASSWORD, "quota": "2G"},
    )
    assert refused.status_code == 409
    assert "mail quota left" in refused.get_data(as_text=True)
    saved = browser.submit(
        response.location,
        "/mailboxes/sekretariat@alfa.example/vacation",
        {
            "enabled": "on",
            "subject": "Urlop",
            "body": "Wracam 1 sierpnia.",
            "days": "3",
            "start": "2026-07-01",
            "end": "2026-07-31",
        },
    )
    assert saved.status_code == 302
    bad = browser.submit(
        response.location,
        "/mailboxes/sekretariat@alfa.example/vacation",
        {"enabled": "on", "subject": "Urlop", "body": "x", "start": "31.07.2026"},
    )
    assert bad.status_code == 422
    assert "Dates must look like 2026-07-31." in bad.get_data(as_text=True)
    with unit() as ctx:
        rules = mail_rules.get(ctx.session, "sekretariat@alfa.example")
        assert rules is not None and rules.vacation_enabled and rules.vacation_days == 3
        assert "vacation" in rules.sieve_script
    events = audit(unit, "mailbox.create") + audit(unit, "mailbox.vacation")
    assert {
        (e.actor_kind, e.actor_name, e.source_address) for e in events if e.actor_kind != "cli"
    } == {("admin", "admin-alfa", "192.0.2.10")}


def test_superadmin_sees_every_member(browser: Browser) -> None:
    assert browser.login("root").status_code == 302
    page = browser.get("/members").get_data(as_text=True)
    assert "Gmina Alfa" in page and "Община Бета" in page
    assert "1 / 3" in page  # mailboxes used of the package
    assert browser.get("/mailboxes/biuro@beta.example").status_code == 200
    assert browser.get("/members/beta").status_code == 200


def test_security_headers_everywhere(browser: Browser) -> None:
    for path in ["/login", "/", "/static/admin.css", "/no-such-page"]:
        response = browser.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    page = browser.get("/login").get_data(as_text=True)
    assert "<script" not in page and "style=" not in page
    assert browser.get("/login").headers["Cache-Control"] == "no-store"


def test_secret_key_is_made_once_and_private(
    app: Flask, settings: Settings, env: dict[str, str]
) -> None:
    path = Path(settings.state_dir) / "admin-secret-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = create_app(settings)
    assert again.config["SECRET_KEY"] == app.config["SECRET_KEY"] == path.read_text().strip()
    configured = create_app(load_settings({**env, "MUNINET_ADMIN__SECRET_KEY": "k" * 40}))
    assert configured.config["SECRET_KEY"] == "k" * 40


def test_insecure_cookies_for_plain_http_development(env: dict[str, str]) -> None:
    app = create_app(load_settings({**env, "MUNINET_ADMIN__INSECURE_COOKIES": "true"}))
    client = app.test_client()
    found = re.search(rb'name="csrf_token" value="([^"]+)"', client.get("/login").data)
    assert found
    response = client.post(
        "/login", data={"csrf_token": found.group(1).decode(), "username": "x", "password": "y"}
    )
    assert response.status_code == 401
    assert "Secure" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("pl-PL,pl;q=0.9,en;q=0.5", ["Zaloguj się", "Nazwa użytkownika", "Hasło"]),
        ("bg,en;q=0.5", ["Вход", "Потребителско име", "Парола"]),
    ],
)
def test_translated_by_browser_language(
    browser: Browser, language: str, expected: list[str]
) -> None:
    page = browser.get("/login", headers={"Accept-Language": language})
    text = page.get_data(as_text=True)
    assert f'<html lang="{language[:2]}">' in text
    for phrase in expected:
        assert phrase in text
    assert "Username" not in text
    wrong = browser.post(
        "/login",
        {"csrf_token": browser.token(), "username": "x", "password": "y"},
        headers={"Accept-Language": language},
    )
    assert messages(wrong) == [
        {
            "pl": "Nieprawidłowa nazwa użytkownika lub hasło.",
            "bg": "Грешно потребителско име или парола.",
        }[language[:2]]
    ]


def test_language_switch_is_kept_in_session(browser: Browser) -> None:
    assert browser.login("root").status_code == 302
    response = browser.submit("/", "/language", {"lang": "bg", "next": "/members"})
    assert response.status_code == 302 and response.location == "/members"
    page = browser.get("/", headers={"Accept-Language": "pl"}).get_data(as_text=True)
    assert "Табло" in page and "Активни сесии" in page and "Pulpit" not in page
    moved = browser.submit("/", "/language", {"lang": "pl", "next": "https://evil.example/"})
    assert moved.location == "/"  # never off-site
    page = browser.get("/").get_data(as_text=True)
    assert "Pulpit" in page and "Aktywne sesje" in page
    members_page = browser.get("/members").get_data(as_text=True)
    assert "3 GiB" in members_page  # numbers formatted with Babel (no decimals here)


def test_sizes_use_the_locale_decimal_separator(browser: Browser, unit: Unit) -> None:
    with unit() as ctx:
        members.update_package(ctx, "alfa", mail_quota=int(2.5 * 2**30))
    assert browser.login("root").status_code == 302
    browser.submit("/", "/language", {"lang": "pl"})
    assert "2,5 GiB" in browser.get("/members").get_data(as_text=True)
    browser.submit("/", "/language", {"lang": "en"})
    assert "2.5 GiB" in browser.get("/members").get_data(as_text=True)


def test_expired_session_is_ended(app: Flask, browser: Browser) -> None:
    assert browser.login("root").status_code == 302
    app.config["ADMIN_SESSION_IDLE"] = app.config["ADMIN_SESSION_IDLE"] * 0
    response = browser.get("/")
    assert response.status_code == 302
    assert messages(browser.get(response.location)) == [
        "Your session has expired. Please log in again."
    ]


def test_disabled_admin_loses_session(browser: Browser, unit: Unit) -> None:
    assert browser.login("admin-beta").status_code == 302
    with unit() as ctx:
        admins.get(ctx.session, "admin-beta").enabled = False
    assert browser.get("/").status_code == 302
    assert browser.login("admin-beta").status_code == 401


def test_every_ui_string_is_translated() -> None:
    """Each message in the code and templates has a Polish and a Bulgarian translation."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parent.parent / "admin_ui"
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    used = {
        message
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(root), method_map, keywords={"_": None, "gettext": None}
        )
    }
    assert "Wrong username or password." in used and "Dashboard" in used
    for language in ["pl", "bg"]:
        with (root / "translations" / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
            catalog = read_po(f, locale=language)
        translated = {m.id for m in catalog if m.id and m.string and "fuzzy" not in m.flags}
        assert used <= translated, (language, sorted(used - translated))


def test_login_returns_to_the_page_asked_for_on_this_site_only(browser: Browser) -> None:
    asked = browser.get("/mailboxes/new")
    assert asked.location == "/login?next=/mailboxes/new"
    form = {"username": "root", "password": PASSWORD}
    back = browser.submit(asked.location, "/login", {**form, "next": "/mailboxes/new"})
    assert back.location == "/mailboxes/new"
    for target in ["https://evil.example/", "//evil.example/", "/\\evil.example"]:
        response = browser.submit("/login", "/login", {**form, "next": target})
        assert response.location == "/", target


def test_sliding_window_forgets_old_events(tmp_path: Path) -> None:
    from admin_ui.security import SlidingWindow

    window = SlidingWindow(tmp_path / "limits.sqlite", "test", limit=2, window=60)
    window.hit("a", now=0)
    window.hit("a", now=30)
    assert window.blocked("a", now=59) and not window.blocked("b", now=59)
    assert not window.blocked("a", now=61)  # the first event slid out
    window.hit("a", now=62)
    assert window.blocked("a", now=62)
    window.reset("a")
    assert not window.blocked("a", now=62)


def test_login_limits_are_shared_by_worker_processes(app: Flask, settings: Settings) -> None:
    """Failures counted in other gunicorn workers (other processes) count here too."""
    script = (
        "import sys, time\n"
        "from admin_ui.security import SlidingWindow\n"
        "w = SlidingWindow(__import__('pathlib').Path(sys.argv[1]), 'admin', 5, 900)\n"
        "for _ in range(5): w.hit('admin-beta')\n"
    )
    limits_file = Path(settings.state_dir) / "admin-login-limits.sqlite"
    subprocess.run([sys.executable, "-c", script, str(limits_file)], check=True, timeout=60)
    assert stat.S_IMODE(os.stat(limits_file).st_mode) == 0o600
    response = Browser(app, "198.51.100.7").login("admin-beta")
    assert response.status_code == 429
