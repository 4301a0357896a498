"""The JSON API (/api/v1) with the Flask test client, on SQLite and PostgreSQL.

Every response these tests receive is checked against the OpenAPI document the app
serves (`Api.check_contract`, run when each test ends): status, media type and body schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from admin_ui import create_app
from provisioning.models import AuditEvent
from provisioning.services import admins, aliases, domains, mailboxes, members
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

Unit = Callable[[], AbstractContextManager[ServiceContext]]
PASSWORD = "correct horse battery"
BASE = "https://admin.example"
CLIENT = "192.0.2.20"
PROBLEM = "application/problem+json"


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    mimetype: str
    body: Any
    sent: Any = None


class Api:
    """A bearer-token client that keeps every exchange for the contract check."""

    def __init__(self, app: Flask, tokens: dict[str, str]) -> None:
        self.client = app.test_client()
        self.tokens = tokens
        self.exchanges: list[Exchange] = []

    def call(
        self,
        method: str,
        path: str,
        as_: str | None = "root",
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        sent = dict(headers or {})
        if as_ is not None:
            sent["Authorization"] = f"Bearer {self.tokens[as_]}"
        if json is not None:
            kwargs["json"] = json
        response = self.client.open(
            path,
            method=method,
            base_url=BASE,
            headers=sent,
            environ_base={"REMOTE_ADDR": CLIENT},
            **kwargs,
        )
        body = response.get_json(silent=True) if response.data else None
        self.exchanges.append(
            Exchange(
                method,
                path.split("?", maxsplit=1)[0],
                response.status_code,
                response.mimetype or "",
                body,
                json,
            )
        )
        return response

    def get(self, path: str, as_: str | None = "root") -> TestResponse:
        return self.call("GET", path, as_)

    def document(self) -> dict[str, Any]:
        response = self.client.get("/api/v1/openapi.json", base_url=BASE)
        assert response.status_code == 200
        document = response.get_json()
        assert isinstance(document, dict)
        return document

    def check_contract(self) -> None:
        document = self.document()
        for exchange in self.exchanges:
            validate_exchange(document, exchange)


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in document["paths"].items():
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            operation = item[method.lower()]
            assert isinstance(operation, dict)
            return operation
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def validate_exchange(document: dict[str, Any], exchange: Exchange) -> None:
    """Raise unless the response is one the document declares for this operation."""
    label = f"{exchange.method} {exchange.path} -> {exchange.status}"
    try:
        operation = _operation(document, exchange.method, exchange.path)
    except AssertionError:
        # No such route: the answer must still be a problem document.
        operation = {"responses": {"default": _any_problem(document)}}
    if exchange.status < 400 and "requestBody" in operation:
        # What the API accepted must be what the document says it accepts.
        sent = operation["requestBody"]["content"]["application/json"]["schema"]
        errors = [e.message for e in _validator(document, sent).iter_errors(exchange.sent)]
        assert not errors, f"{label}: request body {errors}"
    responses = operation["responses"]
    declared = responses.get(str(exchange.status))
    if declared is None:
        assert exchange.status >= 400, f"{label}: undeclared success status"
        declared = responses["default"]
    content = declared.get("content")
    if content is None:
        assert exchange.body is None, f"{label}: declared without a body"
        return
    assert exchange.mimetype in content, f"{label}: {exchange.mimetype} not in {list(content)}"
    validator = _validator(document, content[exchange.mimetype]["schema"])
    errors = [e.message for e in validator.iter_errors(exchange.body)]
    assert not errors, f"{label}: {errors}"


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema of the document (its `$ref`s resolve inside the document)."""
    return Draft202012Validator(
        {**document, **schema}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _any_problem(document: dict[str, Any]) -> dict[str, Any]:
    return {"content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


@pytest.fixture
def app(settings: Settings, unit: Unit) -> Flask:
    with unit() as ctx:
        for slug, name in [("alfa", "Gmina Alfa"), ("beta", "Община Бета")]:
            members.create(ctx, slug, name, max_mailboxes=3, mail_quota=3 * 2**30, max_lines=2)
            domains.create(ctx, f"{slug}.example", member_slug=slug)
            mailboxes.create(ctx, f"biuro@{slug}.example", slug, password=PASSWORD)
            aliases.create(ctx, f"info@{slug}.example", [f"biuro@{slug}.example"])
            admins.create(ctx, f"admin-{slug}", PASSWORD, member_slug=slug)
        admins.create(ctx, "root", PASSWORD)
    return create_app(settings)


@pytest.fixture
def tokens(app: Flask, unit: Unit) -> dict[str, str]:
    made = {}
    with unit() as ctx:
        for who in ["root", "admin-alfa", "admin-beta"]:
            made[who] = admins.create_token(ctx, who, "test")[1]
    return made


@pytest.fixture
def api(app: Flask, tokens: dict[str, str]) -> Iterator[Api]:
    client = Api(app, tokens)
    yield client
    client.check_contract()


def audit_count(unit: Unit) -> int:
    with unit() as ctx:
        return int(ctx.session.scalar(select(func.count(AuditEvent.id))) or 0)


def audit(unit: Unit, action: str) -> list[AuditEvent]:
    with unit() as ctx:
        return list(ctx.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def prefix(token: str) -> str:
    return token.split("_")[1]


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


# -- authentication -------------------------------------------------------------------------


def test_token_required(api: Api, unit: Unit) -> None:
    for method, path in [("GET", "/api/v1/mailboxes"), ("POST", "/api/v1/members")]:
        response = api.call(method, path, as_=None)
        body = assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert body["type"] == "urn:muninet:problem:unauthorized"
    basic = api.call("GET", "/api/v1/members", None, headers={"Authorization": "Basic cm9vdA=="})
    assert_problem(basic, 401)
    forged = api.tokens["root"][:-3] + "xyz"
    response = api.call(
        "GET", "/api/v1/members", None, headers={"Authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    with unit() as ctx:
        admins.revoke_token(ctx, prefix(api.tokens["admin-beta"]))
    assert_problem(api.get("/api/v1/members", "admin-beta"), 401)
    assert api.get("/api/v1/members").status_code == 200
    # The document is public: it holds no data.
    assert api.get("/api/v1/openapi.json", None).status_code == 200


def test_a_web_session_is_not_an_api_login(app: Flask, api: Api) -> None:
    client = app.test_client()
    with client.session_transaction(base_url=BASE) as session:
        session["admin"] = "root"
    response = client.get("/api/v1/members", base_url=BASE)
    assert response.status_code == 401


# -- scope ----------------------------------------------------------------------------------


def test_member_admin_token_cannot_reach_another_member(api: Api, unit: Unit) -> None:
    own = api.get("/api/v1/mailboxes", "admin-alfa")
    assert [m["address"] for m in own.get_json()["items"]] == ["biuro@alfa.example"]
    assert [m["slug"] for m in api.get("/api/v1/members", "admin-alfa").get_json()["items"]] == [
        "alfa"
    ]
    assert [d["name"] for d in api.get("/api/v1/domains", "admin-alfa").get_json()["items"]] == [
        "alfa.example"
    ]
    assert api.get("/api/v1/mailboxes/biuro@alfa.example", "admin-alfa").status_code == 200

    before = audit_count(unit)
    other = "/api/v1/mailboxes/biuro@beta.example"
    missing = "/api/v1/mailboxes/nikt@beta.example"
    read = assert_problem(api.get(other, "admin-alfa"), 404)
    assert read["detail"] == assert_problem(api.get(missing, "admin-alfa"), 404)["detail"].replace(
        "nikt", "biuro"
    )
    change = {"quota_bytes": 2**20, "enabled": False, "password": "taken over"}
    assert_problem(api.call("PUT", other, "admin-alfa", json=change), 404)
    assert_problem(api.call("DELETE", other, "admin-alfa"), 404)
    assert_problem(api.get("/api/v1/mailboxes?member=beta", "admin-alfa"), 404)
    assert_problem(api.get("/api/v1/members/beta", "admin-alfa"), 404)
    assert_problem(api.get("/api/v1/domains/beta.example", "admin-alfa"), 404)
    assert_problem(api.get("/api/v1/aliases/info@beta.example", "admin-alfa"), 404)
    alias_change = {"destinations": ["attacker@example.net"]}
    assert_problem(
        api.call("PUT", "/api/v1/aliases/info@beta.example", "admin-alfa", json=alias_change), 404
    )
    assert_problem(api.call("DELETE", "/api/v1/aliases/info@beta.example", "admin-alfa"), 404)
    new_box = {"address": "nowy@beta.example", "member": "beta", "password": PASSWORD}
    assert_problem(api.call("POST", "/api/v1/mailboxes", "admin-alfa", json=new_box), 404)
    # Superadmin-only actions: refused on the own member, hidden for another.
    package = {"max_mailboxes": 100}
    assert_problem(
        api.call("PATCH", "/api/v1/members/alfa/package", "admin-alfa", json=package), 403
    )
    assert_problem(
        api.call("PATCH", "/api/v1/members/beta/package", "admin-alfa", json=package), 404
    )
    create = {"slug": "gamma", "name": "Gamma"}
    assert_problem(api.call("POST", "/api/v1/members", "admin-alfa", json=create), 403)
    assert_problem(api.call("DELETE", "/api/v1/domains/alfa.example", "admin-alfa"), 403)
    assert audit_count(unit) == before

    with unit() as ctx:
        mailbox = mailboxes.get(ctx.session, "biuro@beta.example")
        assert mailbox.enabled and mailbox.quota_bytes != 2**20
        assert aliases.get(ctx.session, "info@beta.example").destinations[0].address == (
            "biuro@beta.example"
        )


# -- round trips ----------------------------------------------------------------------------


def test_mailbox_round_trip_as_member_admin(api: Api, unit: Unit) -> None:
    body = {"address": "sekretariat@alfa.example", "generate_password": True, "quota_bytes": "1G"}
    created = api.call("POST", "/api/v1/mailboxes", "admin-alfa", json=body)
    assert created.status_code == 201, created.get_data(as_text=True)
    data = created.get_json()
    assert created.headers["Location"] == "/api/v1/mailboxes/sekretariat@alfa.example"
    assert data["member"] == "alfa" and data["quota_bytes"] == 2**30
    password = data["generated_password"]
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, "sekretariat@alfa.example", password) is not None

    fetched = api.get("/api/v1/mailboxes/sekretariat@alfa.example", "admin-alfa").get_json()
    assert "generated_password" not in fetched
    assert fetched["address"] == "sekretariat@alfa.example"

    put = {"quota_bytes": 512 * 2**20, "enabled": False}
    updated = api.call("PUT", "/api/v1/mailboxes/sekretariat@alfa.example", "admin-alfa", json=put)
    assert updated.status_code == 200
    assert updated.get_json()["quota_bytes"] == 512 * 2**20
    assert updated.get_json()["enabled"] is False
    [event] = audit(unit, "mailbox.quota")
    token_name = f"admin-alfa:{prefix(api.tokens['admin-alfa'])}"
    assert (event.actor_kind, event.actor_name, event.source_address) == (
        "token",
        token_name,
        CLIENT,
    )
    assert len(audit(unit, "mailbox.disable")) == 1

    assert (
        api.call("DELETE", "/api/v1/mailboxes/sekretariat@alfa.example", "admin-alfa").status_code
        == 204
    )
    assert_problem(api.get("/api/v1/mailboxes/sekretariat@alfa.example", "admin-alfa"), 404)
    assert [e.actor_name for e in audit(unit, "mailbox.remove")] == [token_name]


def test_members_and_domains_round_trip(api: Api, unit: Unit) -> None:
    member = {
        "slug": "gamma",
        "name": "Gmina Gamma",
        "kind": "school",
        "max_mailboxes": 2,
        "mail_quota_bytes": "2G",
        "contract_start": "2026-01-01",
    }
    created = api.call("POST", "/api/v1/members", json=member)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["package"]["mail_quota_bytes"] == 2 * 2**30
    assert created.get_json()["contract"]["start"] == "2026-01-01"
    assert_problem(api.call("POST", "/api/v1/members", json=member), 409)

    patched = api.call("PATCH", "/api/v1/members/gamma/package", json={"max_mailboxes": 5})
    assert patched.status_code == 200
    assert patched.get_json()["package"]["max_mailboxes"] == 5
    assert api.get("/api/v1/members/gamma").get_json()["usage"]["mailboxes"] == 0

    domain = api.call("POST", "/api/v1/domains", json={"name": "Gamma.Example", "member": "gamma"})
    assert domain.status_code == 201, domain.get_data(as_text=True)
    assert domain.get_json()["member"] == "gamma"
    assert api.get("/api/v1/domains/gamma.example").get_json()["mailboxes"] == 0
    assert {d["name"] for d in api.get("/api/v1/domains").get_json()["items"]} == {
        "alfa.example",
        "beta.example",
        "gamma.example",
    }
    # A domain still holding mailboxes is refused; an empty one goes.
    assert_problem(api.call("DELETE", "/api/v1/domains/alfa.example"), 409)
    assert api.call("DELETE", "/api/v1/domains/gamma.example").status_code == 204
    assert_problem(api.get("/api/v1/domains/gamma.example"), 404)
    assert [e.actor_kind for e in audit(unit, "domain.remove")] == ["token"]


def test_aliases_round_trip(api: Api, unit: Unit) -> None:
    put = {"destinations": ["biuro@alfa.example", "kronika@example.net"]}
    created = api.call("PUT", "/api/v1/aliases/kontakt@alfa.example", "admin-alfa", json=put)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["destinations"] == put["destinations"]
    replaced = api.call(
        "PUT",
        "/api/v1/aliases/kontakt@alfa.example",
        "admin-alfa",
        json={"destinations": ["biuro@alfa.example"]},
    )
    assert replaced.status_code == 200
    assert replaced.get_json()["destinations"] == ["biuro@alfa.example"]
    listed = api.get("/api/v1/aliases", "admin-alfa").get_json()["items"]
    assert {a["source"] for a in listed} == {"info@alfa.example", "kontakt@alfa.example"}
    # A loop is refused by the service, with the reason.
    loop = api.call(
        "PUT",
        "/api/v1/aliases/biuro2@alfa.example",
        "admin-alfa",
        json={"destinations": ["biuro2@alfa.example"]},
    )
    assert_problem(loop, 422)
    assert (
        api.call("DELETE", "/api/v1/aliases/kontakt@alfa.example", "admin-alfa").status_code == 204
    )
    assert_problem(api.get("/api/v1/aliases/kontakt@alfa.example", "admin-alfa"), 404)


def test_plans_and_subscribers_round_trip(api: Api, unit: Unit) -> None:
    plan = {
        "name": "dsl-2m",
        "download_bps": "2M",
        "upload_bps": 512000,
        "data_cap_bytes": "50G",
        "cap_action": "throttle",
        "fair_use_download_bps": "256k",
        "fair_use_upload_bps": "128k",
    }
    assert_problem(api.call("POST", "/api/v1/plans", "admin-alfa", json=plan), 403)
    created = api.call("POST", "/api/v1/plans", json=plan)
    assert created.status_code == 201, created.get_data(as_text=True)
    data = created.get_json()
    assert (data["download_bps"], data["data_cap_bytes"]) == (2_000_000, 50 * 2**30)
    assert any(a["tier"] == "fairuse" for a in data["reply_attributes"])
    patched = api.call("PATCH", "/api/v1/plans/dsl-2m", json={"download_bps": "4M"})
    assert patched.get_json()["download_bps"] == 4_000_000
    # Member admins read the catalogue (to choose a plan) but do not change it.
    assert [p["name"] for p in api.get("/api/v1/plans", "admin-alfa").get_json()["items"]] == [
        "dsl-2m"
    ]
    assert_problem(api.call("PATCH", "/api/v1/plans/dsl-2m", "admin-alfa", json={}), 403)

    line = {"username": "jan.kowalski", "plan": "dsl-2m", "generate_password": True}
    made = api.call("POST", "/api/v1/subscribers", "admin-alfa", json=line)
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.get_json()["member"] == "alfa" and len(made.get_json()["generated_password"]) >= 12
    path = "/api/v1/subscribers/jan.kowalski"
    assert_problem(api.get(path, "admin-beta"), 404)
    suspend = {"status": "suspended", "reason": "unpaid"}
    assert_problem(api.call("PATCH", path, "admin-beta", json=suspend), 404)
    assert_problem(api.call("DELETE", path, "admin-beta"), 404)
    assert api.get("/api/v1/subscribers", "admin-beta").get_json()["items"] == []

    suspended = api.call("PATCH", path, "admin-alfa", json=suspend)
    assert suspended.status_code == 200
    assert suspended.get_json()["status"] == "suspended"
    assert suspended.get_json()["status_reason"] == "unpaid"
    events = audit_count(unit)
    assert api.call("PATCH", path, "admin-alfa", json=suspend).status_code == 200
    assert audit_count(unit) == events  # already suspended: nothing to record
    moved = api.call("PATCH", path, "admin-alfa", json={"expires_on": "2030-01-31"})
    assert moved.get_json()["expires_on"] == "2030-01-31"

    assert_problem(api.call("DELETE", "/api/v1/plans/dsl-2m"), 409)
    assert api.call("DELETE", path, "admin-alfa").status_code == 204
    assert_problem(api.get(path, "admin-alfa"), 404)
    assert api.call("DELETE", "/api/v1/plans/dsl-2m").status_code == 204
    assert {e.actor_kind for e in audit(unit, "subscriber.status")} == {"token"}


# -- idempotence ----------------------------------------------------------------------------


def test_put_is_idempotent(api: Api, unit: Unit) -> None:
    path = "/api/v1/mailboxes/kasa@alfa.example"
    body = {"password": PASSWORD, "quota_bytes": "256M", "display_name": "Kasa", "enabled": True}
    first = api.call("PUT", path, "admin-alfa", json=body)
    assert first.status_code == 201, first.get_data(as_text=True)
    events = audit_count(unit)
    second = api.call("PUT", path, "admin-alfa", json=body)
    assert second.status_code == 200
    assert second.get_json() == first.get_json()
    assert audit_count(unit) == events

    changed = api.call("PUT", path, "admin-alfa", json={**body, "password": "a new password"})
    assert changed.status_code == 200
    assert audit_count(unit) == events + 1
    assert len(audit(unit, "mailbox.password")) == 1

    alias = "/api/v1/aliases/info@alfa.example"
    events = audit_count(unit)
    same = api.call("PUT", alias, json={"destinations": ["biuro@alfa.example"]})
    assert same.status_code == 200
    # Spelled differently, normalised to the same: still no change and no audit event.
    respelled = api.call("PUT", alias, json={"destinations": ["BIURO@Alfa.Example"]})
    assert respelled.status_code == 200
    assert respelled.get_json() == same.get_json()
    assert audit_count(unit) == events


# -- problems -------------------------------------------------------------------------------


def test_validation_errors_are_problem_json_with_fields(api: Api, unit: Unit) -> None:
    before = audit_count(unit)
    bad = {"address": 5, "quota_bytes": -1, "enabled": "yes", "colour": "blue"}
    body = assert_problem(api.call("POST", "/api/v1/mailboxes", json=bad), 422)
    assert body["type"] == "urn:muninet:problem:validation"
    fields = {e["field"]: e["detail"] for e in body["errors"]}
    assert fields == {
        "address": "must be a string",
        "quota_bytes": "must be a number of bytes or a size such as 2G",
        "enabled": "must be true or false",
        "colour": "unknown field",
    }
    assert {e["pointer"] for e in body["errors"]} == {
        "#/address",
        "#/quota_bytes",
        "#/enabled",
        "#/colour",
    }
    missing = assert_problem(api.call("POST", "/api/v1/members", json={"name": "X"}), 422)
    assert [e["field"] for e in missing["errors"]] == ["slug"]
    size = assert_problem(
        api.call("PATCH", "/api/v1/members/alfa/package", json={"mail_quota_bytes": "lots"}), 422
    )
    assert size["errors"][0]["field"] == "mail_quota_bytes"
    both = assert_problem(
        api.call(
            "POST",
            "/api/v1/mailboxes",
            json={"address": "x@alfa.example", "password": "p", "generate_password": True},
        ),
        422,
    )
    assert both["errors"][0]["field"] == "password"
    # The services' own refusals keep their message and their status.
    service = assert_problem(
        api.call(
            "POST",
            "/api/v1/mailboxes",
            json={"address": "zły adres@alfa.example", "password": PASSWORD},
        ),
        422,
    )
    assert "errors" not in service and service["detail"]
    limit = assert_problem(
        api.call(
            "PUT",
            "/api/v1/mailboxes/duzo@alfa.example",
            json={"password": PASSWORD, "quota_bytes": "5G"},
        ),
        409,
    )
    assert limit["type"] == "urn:muninet:problem:limit-exceeded"
    not_json = api.call("POST", "/api/v1/mailboxes", data="address=x", content_type="text/plain")
    assert_problem(not_json, 415)
    broken = api.call("POST", "/api/v1/mailboxes", data="{", content_type="application/json")
    assert_problem(broken, 422)
    assert audit_count(unit) == before


def test_unknown_routes_and_methods_answer_problem_json(api: Api, app: Flask) -> None:
    assert_problem(api.get("/api/v1/nothing-here"), 404)
    not_allowed = api.call("DELETE", "/api/v1/members")
    assert_problem(not_allowed, 405)
    assert "GET" in not_allowed.headers["Allow"]
    # Outside the API the HTML error page stays.
    page = app.test_client().get("/nothing-here", base_url=BASE)
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_an_unexpected_failure_is_a_problem_too(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(mailboxes, "list_mailboxes", broken)
    body = assert_problem(api.get("/api/v1/mailboxes"), 500)
    assert "on fire" not in body["detail"]  # internals stay in the log


# -- the document ---------------------------------------------------------------------------


def test_openapi_document_matches_the_routes(api: Api, app: Flask) -> None:
    document = api.document()
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)  # a well-formed OpenAPI 3.1 document
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from `muninet token create`",
    }
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    declared = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            routed |= {(m, path) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}}
    assert declared == routed
    assert ("PUT", "/api/v1/mailboxes/{address}") in declared
    # The checker is not vacuous: a response that breaks the schema is caught.
    wrong = Exchange(
        "GET", "/api/v1/mailboxes/biuro@alfa.example", 200, "application/json", {"address": 1}
    )
    with pytest.raises(AssertionError):
        validate_exchange(document, wrong)
    undeclared = Exchange("DELETE", "/api/v1/mailboxes/x@alfa.example", 200, "application/json", {})
    with pytest.raises(AssertionError):
        validate_exchange(document, undeclared)
