"""The setup sheet: scoped per member, passwords shown once (and working), a real Unicode PDF."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from flask import Flask
from passlib.hash import nthash, sha512_crypt
from pypdf import PdfReader
from web import PASSWORD, Browser, Unit, audit
from werkzeug.test import TestResponse

from provisioning.services import mailboxes, plans, subscribers
from provisioning.settings import Settings

pytest_plugins = ["web"]

SHOWN = re.compile(r'<code class="password">([^<]+)</code>')


@pytest.fixture
def lines(app: Flask, unit: Unit) -> Flask:
    """Each member gets a broadband line, alfa a second mailbox and a CHAP dial-up line."""
    with unit() as ctx:
        plans.create(ctx, "dsl-20", kind="pppoe", download_bps=20_000_000, upload_bps=2_000_000)
        plans.create(ctx, "modem", kind="dialup")
        subscribers.create(ctx, "alfa.urzad", "alfa", "dsl-20", PASSWORD, static_ip="10.9.8.7")
        subscribers.create(ctx, "alfa.modem", "alfa", "modem", PASSWORD, chap=True)
        subscribers.create(ctx, "beta.urzad", "beta", "dsl-20", PASSWORD)
        mailboxes.create(ctx, "sekretariat@alfa.example", "alfa", password=PASSWORD)
    return app


def logged_in(app: Flask, user: str) -> Browser:
    browser = Browser(app)
    assert browser.login(user).status_code == 302
    return browser


def generate(browser: Browser, slug: str, target: str, **form: str) -> TestResponse:
    page = f"/members/{slug}/sheet"
    return browser.submit(page, f"{page}/passwords", {"target": target, **form})


def pdf_text(response: TestResponse) -> str:
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(response.data))
    return "\n".join(page.extract_text() for page in reader.pages)


def mailbox_password_works(unit: Unit, address: str, password: str) -> bool:
    with unit() as ctx:
        return mailboxes.authenticate(ctx, address, password) is not None


def test_sheet_is_scoped_to_the_member(lines: Flask, unit: Unit) -> None:
    anonymous = Browser(lines)
    assert anonymous.get("/members/alfa/sheet").location.startswith("/login")
    assert anonymous.get("/members/alfa/sheet.pdf").location.startswith("/login")
    alfa = logged_in(lines, "admin-alfa")
    assert alfa.get("/members/alfa/sheet").status_code == 200
    assert alfa.get("/members/beta/sheet").status_code == 404
    assert alfa.get("/members/beta/sheet.pdf").status_code == 404
    assert alfa.get("/members/ghost/sheet").status_code == 404
    page = "/members/alfa/sheet"
    for slug, target in [
        ("beta", "all"),
        ("beta", "mailbox:biuro@beta.example"),
        ("alfa", "mailbox:biuro@beta.example"),  # another member's mailbox via its own sheet
        ("alfa", "line:beta.urzad"),
        ("alfa", "line:nobody"),
        ("alfa", "something else"),
    ]:
        form = {"target": target, "confirm": "on"}
        response = alfa.submit(page, f"/members/{slug}/sheet/passwords", form)
        assert response.status_code == 404, (slug, target)
    assert mailbox_password_works(unit, "biuro@beta.example", PASSWORD)
    with unit() as ctx:
        assert sha512_crypt.verify(
            PASSWORD, subscribers.get(ctx.session, "beta.urzad").password_crypt
        )
    assert audit(unit, "mailbox.password") == audit(unit, "subscriber.password") == []
    root = logged_in(lines, "root")
    assert root.get("/members/beta/sheet").status_code == 200
    assert root.get("/members/ghost/sheet.pdf").status_code == 404
    # The member page links to its sheet.
    assert 'href="/members/alfa/sheet"' in alfa.get("/members/alfa").get_data(as_text=True)


def test_sheet_shows_settings_and_hides_passwords(lines: Flask, settings: Settings) -> None:
    text = logged_in(lines, "admin-alfa").get("/members/alfa/sheet").get_data(as_text=True)
    listen = settings.listen
    assert settings.association.hostname in text and settings.association.name in text
    for port in (listen.imaps_port, listen.imap_port, listen.smtps_port, listen.submission_port):
        assert f"<td>{port}</td>" in text
    assert "STARTTLS" in text and "SSL/TLS" in text
    for name in ("biuro@alfa.example", "sekretariat@alfa.example", "alfa.urzad", "alfa.modem"):
        assert name in text
    assert "10.9.8.7" in text and "PPPoE (broadband)" in text and "Dial-up (PPP)" in text
    assert "PAP, CHAP, MS-CHAPv2" in text  # the CHAP line
    assert "beta" not in text
    assert text.count("(set)") == 4 and not SHOWN.search(text)


def test_new_password_for_one_mailbox_is_shown_once(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "admin-alfa")
    response = generate(browser, "alfa", "mailbox:sekretariat@alfa.example")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    shown = SHOWN.findall(text)
    assert len(shown) == 1 and len(shown[0]) == 16
    password = shown[0]
    assert 'id="fresh-passwords"' in text and text.count("(set)") == 3
    assert mailbox_password_works(unit, "sekretariat@alfa.example", password)
    assert not mailbox_password_works(unit, "sekretariat@alfa.example", PASSWORD)
    assert mailbox_password_works(unit, "biuro@alfa.example", PASSWORD)  # untouched
    with unit() as ctx:
        stored = mailboxes.get(ctx.session, "sekretariat@alfa.example").password_hash
        assert stored.startswith("{ARGON2ID}") and password not in stored
    # Never in the session cookie, and gone on the next view.
    cookie = browser.client.get_cookie("__Host-muninet", domain="admin.example")
    assert cookie is not None
    serializer = lines.session_interface.get_signing_serializer(lines)  # type: ignore[attr-defined]
    assert password not in repr(serializer.loads(cookie.value))
    again = browser.get("/members/alfa/sheet").get_data(as_text=True)
    assert password not in again and not SHOWN.search(again) and again.count("(set)") == 4
    assert password not in pdf_text(browser.get("/members/alfa/sheet.pdf"))
    events = audit(unit, "mailbox.password")
    assert [(e.actor_kind, e.actor_name, e.target) for e in events] == [
        ("admin", "admin-alfa", "sekretariat@alfa.example")
    ]
    summary = audit(unit, "member.sheet-passwords")
    assert [(e.target, e.details) for e in summary] == [
        ("alfa", {"mailboxes": ["sekretariat@alfa.example"], "lines": []})
    ]
    assert all(password not in repr(e.details) for e in events + summary)


def test_new_password_for_one_line_works(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "root")
    shown = SHOWN.findall(generate(browser, "alfa", "line:alfa.urzad").get_data(as_text=True))
    assert len(shown) == 1
    with unit() as ctx:
        line = subscribers.get(ctx.session, "alfa.urzad")
        assert sha512_crypt.verify(shown[0], line.password_crypt)
        assert not sha512_crypt.verify(PASSWORD, line.password_crypt)
        assert line.password_nt == nthash.hash(shown[0]).lower()
        assert line.password_clear is None  # no CHAP: no cleartext stored


def test_new_passwords_for_everything(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "admin-alfa")
    refused = generate(browser, "alfa", "all")
    assert refused.status_code == 422 and not SHOWN.search(refused.get_data(as_text=True))
    assert mailbox_password_works(unit, "biuro@alfa.example", PASSWORD)
    text = generate(browser, "alfa", "all", confirm="on").get_data(as_text=True)
    found = {}
    for row in text.split("<tr>")[1:]:
        if shown := SHOWN.search(row):
            first = re.search(r"<td>(?:<code>)?([^<\s]+)", row)
            assert first is not None
            found[first.group(1)] = shown.group(1)
    assert set(found) == {
        "biuro@alfa.example",
        "sekretariat@alfa.example",
        "alfa.urzad",
        "alfa.modem",
    }
    assert len(set(found.values())) == 4
    for address in ("biuro@alfa.example", "sekretariat@alfa.example"):
        assert mailbox_password_works(unit, address, found[address])
    with unit() as ctx:
        for username in ("alfa.urzad", "alfa.modem"):
            line = subscribers.get(ctx.session, username)
            assert sha512_crypt.verify(found[username], line.password_crypt)
        assert subscribers.get(ctx.session, "alfa.modem").chap_enabled  # CHAP kept
    assert mailbox_password_works(unit, "biuro@beta.example", PASSWORD)  # other member untouched


def test_pdf_is_real_and_in_the_ui_language(lines: Flask, settings: Settings) -> None:
    browser = logged_in(lines, "root")
    response = browser.get("/members/beta/sheet.pdf", headers={"Accept-Language": "bg"})
    assert response.headers["Content-Disposition"] == 'attachment; filename="setup-sheet-beta.pdf"'
    text = pdf_text(response)
    assert "Община Бета" in text
    assert "Лист с настройки" in text  # "Setup sheet" in Bulgarian
    assert settings.association.hostname in text and str(settings.listen.imaps_port) in text
    assert "biuro@beta.example" in text and "beta.urzad" in text
    assert "alfa" not in text
    polish = pdf_text(browser.get("/members/alfa/sheet.pdf", headers={"Accept-Language": "pl"}))
    assert "Karta konfiguracji" in polish and "Gmina Alfa" in polish and "Skrzynki" in polish


def test_generated_passwords_as_pdf(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "admin-alfa")
    response = generate(browser, "alfa", "all", confirm="on", format="pdf")
    assert response.headers["Cache-Control"] == "no-store"
    text = pdf_text(response)
    found = re.findall(r"\b[a-zA-Z2-9]{16}\b", text)
    working = [p for p in found if mailbox_password_works(unit, "biuro@alfa.example", p)]
    assert len(working) == 1
    assert len(found) == 4


def test_missing_font_is_a_clear_error(lines: Flask, unit: Unit, tmp_path: Path) -> None:
    lines.config["SHEET_FONT_DIR"] = str(tmp_path)
    browser = logged_in(lines, "admin-alfa")
    response = browser.get("/members/alfa/sheet.pdf")
    assert response.status_code == 503
    assert f"{tmp_path}/DejaVuSans.ttf" in response.get_data(as_text=True)
    assert "fonts-dejavu-core" in response.get_data(as_text=True)
    refused = generate(browser, "alfa", "all", confirm="on", format="pdf")
    assert refused.status_code == 503
    assert mailbox_password_works(unit, "biuro@alfa.example", PASSWORD)  # nothing was changed
