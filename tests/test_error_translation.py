"""The services' refusals in the web admin's languages (issue 7).

A refusal is an English %-template with named parameters (provisioning.errors); pybabel
extracts the templates by the error class names (admin_ui/babel.cfg) and the web admin
shows them translated (admin_ui.i18n.error_text). The CLI, logs, audit and the JSON API keep
the English text, which the existing tests compare.
"""

from __future__ import annotations

import ast
import html
import pickle
import re
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from flask import Flask
from web import Browser, Unit

from admin_ui import i18n
from admin_ui.i18n import error_text
from provisioning.errors import Conflict, MuninetError, NotFound, Term, ValidationError
from provisioning.models import MemberStatus
from provisioning.services import members

pytest_plugins = ["web"]

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "admin_ui" / "translations"
# The classes whose first argument pybabel extracts outside admin_ui (see babel.cfg).
KEYWORDS = {"ValidationError", "NotFound", "Conflict", "LimitExceeded", "NotPermitted", "Term"}
PLACEHOLDER = re.compile(r"%\((\w+)\)([-#0 +]*\d*(?:\.\d+)?[a-zA-Z])")


def placeholders(text: str) -> Counter[tuple[str, str]]:
    return Counter(PLACEHOLDER.findall(text))


def service_messages(tmp_path: Path) -> dict[str, list[str]]:
    """msgid -> locations, for every message extracted outside admin_ui (the documented command)."""
    pot = tmp_path / "messages.pot"
    config = ROOT / "admin_ui" / "babel.cfg"
    CommandLineInterface().run(
        ["pybabel", "-q", "extract", "-F", str(config), "-o", str(pot), str(ROOT)]
    )
    with pot.open("rb") as handle:
        template = read_po(handle)
    found = {}
    for message in template:
        where = [f"{Path(path).relative_to(ROOT)}:{line}" for path, line in message.locations]
        if message.id and any(not path.startswith("admin_ui/") for path in where):
            found[str(message.id)] = where
    return found


def test_every_refusal_is_translated(tmp_path: Path) -> None:
    """Each extracted refusal has a Polish and a Bulgarian translation with its placeholders."""
    extracted = service_messages(tmp_path)
    # Extraction works at all: a plain, a parametrised and a Term message are there.
    assert "no mailbox %(address)r" in extracted
    assert "%(address)s is already a mailbox" in extracted
    assert "member name" in extracted
    assert any(path.startswith("mailhost/") for paths in extracted.values() for path in paths)
    assert len(extracted) > 150
    for language in ["pl", "bg"]:
        with (TRANSLATIONS / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
            catalog = read_po(handle, locale=language)
        problems = []
        for msgid, where in sorted(extracted.items()):
            message = catalog.get(msgid)
            if message is None or not message.string or message.fuzzy:
                problems.append(f"untranslated {msgid!r} ({where[0]})")
            elif placeholders(str(message.string)) != placeholders(msgid):
                problems.append(f"placeholders differ in {msgid!r}: {message.string!r}")
            elif "%(" in msgid and "python-format" not in message.flags:
                problems.append(f"no python-format flag on {msgid!r}")
        # Babel's own checkers (python-format compatibility) on the whole catalogue.
        problems += [
            f"{message.id!r}: {error}" for message, errors in catalog.check() for error in errors
        ]
        assert problems == [], (language, problems)


def _keyword_calls(path: Path) -> list[ast.Call]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in KEYWORDS
        ):
            calls.append(node)
    return calls


def test_refusals_are_literal_templates() -> None:
    """An f-string message would not be extracted (so never translated): none may creep in."""
    files = [*sorted((ROOT / "provisioning").rglob("*.py")), ROOT / "mailhost" / "queue_cli.py"]
    calls = {path: _keyword_calls(path) for path in files}
    assert sum(len(found) for found in calls.values()) > 150
    bad = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path, found in calls.items()
        for call in found
        if not call.args
        or not isinstance(call.args[0], ast.Constant)
        or not isinstance(call.args[0].value, str)
    ]
    assert bad == [], "use a %-template with named parameters, not an f-string: " + str(bad)


def test_message_is_english_and_keeps_template_and_params() -> None:
    exc = NotFound("no mailbox %(address)r", address="biuro@alfa.example")
    assert exc.message == str(exc) == "no mailbox 'biuro@alfa.example'"
    assert exc.args == ("no mailbox 'biuro@alfa.example'",)
    assert exc.template == "no mailbox %(address)r"
    assert exc.params == {"address": "biuro@alfa.example"}
    plain = ValidationError("100% wrong")  # no parameters: the text is not %-formatted
    assert plain.message == "100% wrong"
    copied = pickle.loads(pickle.dumps(exc))
    assert type(copied) is NotFound and copied.message == exc.message
    field = ValidationError("%(field)s must not be empty", field=Term("member name"))
    assert field.message == "member name must not be empty"


@pytest.fixture
def bare_app(tmp_path: Path) -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"
    i18n.init_app(app, tmp_path)
    return app


@pytest.mark.parametrize(
    ("language", "expected_conflict", "expected_field"),
    [
        (
            "en",
            "biuro@alfa.example is already a mailbox",
            "member name must not be empty",
        ),
        (
            "pl",
            "biuro@alfa.example jest już skrzynką pocztową",
            "pole „nazwa członka” nie może być puste",
        ),
        (
            "bg",
            "biuro@alfa.example вече е пощенска кутия",
            "полето „име на члена“ не може да е празно",
        ),
    ],
)
def test_error_text_translates_template_and_terms(
    bare_app: Flask, language: str, expected_conflict: str, expected_field: str
) -> None:
    headers = {"Accept-Language": language}
    with bare_app.test_request_context(headers=headers):
        conflict = Conflict("%(address)s is already a mailbox", address="biuro@alfa.example")
        assert error_text(conflict) == expected_conflict
        empty = ValidationError("%(field)s must not be empty", field=Term("member name"))
        assert error_text(empty) == expected_field
        # Not in the catalogue (e.g. a library's text): shown as it is.
        other = MuninetError("sievec refused %(path)s", path="/x")
        assert error_text(other) == "sievec refused /x"
        assert error_text(ValueError("already translated")) == "already translated"
        assert error_text(MuninetError("")) == ""


def test_error_text_falls_back_to_english_when_a_translation_does_not_fit(
    bare_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(i18n, "gettext", lambda text: "%(missing)s broken")
    with bare_app.test_request_context(headers={"Accept-Language": "pl"}):
        exc = NotFound("no mailbox %(address)r", address="x@alfa.example")
        assert error_text(exc) == "no mailbox 'x@alfa.example'"


def form_error(response_text: str) -> str:
    found = re.findall(r'<p class="flash error">([^<]*)</p>', response_text)
    assert found, response_text[:2000]
    return html.unescape(found[0])


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "biuro@alfa.example is already a mailbox"),
        ("pl", "biuro@alfa.example jest już skrzynką pocztową"),
        ("bg", "biuro@alfa.example вече е пощенска кутия"),
    ],
)
def test_duplicate_mailbox_is_refused_in_the_users_language(
    browser: Browser, language: str, expected: str
) -> None:
    assert browser.login("admin-alfa").status_code == 302
    browser.submit("/", "/language", {"lang": language})
    refused = browser.submit(
        "/mailboxes/new",
        "/mailboxes/new",
        {"address": "biuro@alfa.example", "password": "another long password"},
    )
    assert refused.status_code == 409
    assert form_error(refused.get_data(as_text=True)) == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("pl", "członek 'alfa' jest zawieszony (nieopłacone faktury)"),
        ("bg", "член 'alfa' е спрян (nieopłacone faktury)"),
    ],
)
def test_suspended_member_refusal_in_the_users_language(
    browser: Browser, unit: Unit, language: str, expected: str
) -> None:
    with unit() as ctx:
        members.set_status(ctx, "alfa", MemberStatus.SUSPENDED, "nieopłacone faktury")
    assert browser.login("root").status_code == 302
    browser.submit("/", "/language", {"lang": language})
    refused = browser.submit(
        "/mailboxes/new",
        "/mailboxes/new",
        {"address": "nowa@alfa.example", "member": "alfa", "password": "another long password"},
    )
    assert refused.status_code == 403
    assert form_error(refused.get_data(as_text=True)) == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("pl", "pole „nazwa członka” nie może być puste"),
        ("bg", "полето „име на члена“ не може да е празно"),
    ],
)
def test_member_form_names_the_field_in_the_users_language(
    browser: Browser, unit: Unit, language: str, expected: str
) -> None:
    assert browser.login("root").status_code == 302
    browser.submit("/", "/language", {"lang": language})
    form = {"slug": "gamma", "name": " ", "kind": "school"}
    refused = browser.submit("/members/new", "/members/new", form)
    assert refused.status_code == 422
    assert form_error(refused.get_data(as_text=True)) == expected
    with unit() as ctx:
        assert [m.slug for m in members.list_members(ctx.session)] == ["alfa", "beta"]
