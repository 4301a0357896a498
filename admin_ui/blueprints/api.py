"""The JSON API under /api/v1, for scripts and Ansible.

Authentication is by bearer token (`muninet token create`), never by cookie, so the API
is exempt from CSRF. A token acts as its admin: a superadmin's token reaches everything,
a member admin's only its own member (another member's objects answer 404). Every change
goes through the `provisioning` services in one transaction, audited as
`Actor("token", "<admin>:<token prefix>", <client address>)`.

One declarative description drives both the routes and the OpenAPI document: each view
is registered with `@operation(...)`, which names its request body (a `Body` of `Field`s,
parsed and checked by the same declaration) and its response schemas (`SCHEMAS`).
`GET /api/v1/openapi.json` is generated from that registry, so it cannot drift from the
code. Every error, wherever it arises, becomes RFC 9457 problem JSON in `problem_response`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from admin_ui.auth import client_address, unit_of_work
from admin_ui.context import database
from provisioning import serialize
from provisioning.audit import Actor
from provisioning.errors import (
    Conflict,
    LimitExceeded,
    MuninetError,
    NotFound,
    NotPermitted,
    ValidationError,
)
from provisioning.models import CapAction, MemberKind, PlanKind, SubscriberStatus
from provisioning.passwords import generate_password
from provisioning.services import (
    addressing,
    admins,
    aliases,
    domains,
    mailboxes,
    members,
    plans,
    subscribers,
)
from provisioning.services.context import ServiceContext
from provisioning.sizes import parse_size

PREFIX = "/api/v1"
api = Blueprint("api", __name__, url_prefix=PREFIX)
log = logging.getLogger(__name__)

JSON = dict[str, Any]
PROBLEM_TYPE = "urn:muninet:problem:"

# -- problems (RFC 9457) --------------------------------------------------------------------


class Problem(Exception):
    """An HTTP problem raised by the API layer itself (auth, body shape, scope)."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        errors: list[JSON] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


_SERVICE_PROBLEMS: list[tuple[type[MuninetError], str, str]] = [
    (ValidationError, "validation", "Invalid request"),
    (NotFound, "not-found", "Not found"),
    (LimitExceeded, "limit-exceeded", "Package limit exceeded"),
    (Conflict, "conflict", "Conflict"),
    (NotPermitted, "not-permitted", "Not permitted"),
]


def problem_response(error: BaseException) -> Response:
    """The one place every API error becomes `application/problem+json`."""
    if isinstance(error, Problem):
        problem = error
    elif isinstance(error, MuninetError):
        kind, title = "bad-request", "Bad request"
        for cls, cls_kind, cls_title in _SERVICE_PROBLEMS:
            if isinstance(error, cls):
                kind, title = cls_kind, cls_title
                break
        problem = Problem(error.http_status, kind, title, error.message)
    elif isinstance(error, HTTPException):
        status = error.code or 500
        problem = Problem(status, f"http-{status}", error.name, error.description or error.name)
        if status == 405 and error.response is None:
            allowed = getattr(error, "valid_methods", None) or []
            if allowed:
                problem.headers["Allow"] = ", ".join(sorted(allowed))
    else:
        log.exception("API request failed", exc_info=error)
        problem = Problem(500, "internal", "Internal error", "the request failed; see the log")
    body: JSON = {
        "type": PROBLEM_TYPE + problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    response = jsonify(body)
    response.status_code = problem.status
    response.mimetype = "application/problem+json"
    response.headers["Cache-Control"] = "no-store"
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def is_api_request() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


api.register_error_handler(Exception, problem_response)
# Code-specific handlers of the app (the HTML 404 page) would win over a class handler.
for _code in (400, 401, 403, 404, 405, 409, 413, 415, 422, 500):
    api.register_error_handler(_code, problem_response)


def _invalid(errors: list[JSON]) -> Problem:
    detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
    return Problem(422, "validation", "Invalid request", detail, errors=errors)


# -- request bodies: one declaration for parsing and for the OpenAPI schema -----------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_size(value: Any) -> int:
    return parse_size(value)  # ValidationError for "2X", negative numbers, ...


def _as_date(value: Any) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"not a date: {value!r} (use e.g. 2026-07-31)") from None


# kind -> (JSON schema, type check, conversion)
_KINDS: dict[str, tuple[JSON, Callable[[Any], bool], Callable[[Any], Any] | None]] = {
    "string": ({"type": "string"}, lambda v: isinstance(v, str), None),
    "integer": ({"type": "integer", "minimum": 0}, lambda v: _is_int(v) and v >= 0, None),
    "boolean": ({"type": "boolean"}, lambda v: isinstance(v, bool), None),
    "strings": (
        {"type": "array", "items": {"type": "string"}},
        lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        None,
    ),
    "size": (
        {
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "description": "a size such as 500M or 2G"},
            ]
        },
        lambda v: (_is_int(v) and v >= 0) or isinstance(v, str),
        _as_size,
    ),
    "date": ({"type": "string", "format": "date"}, lambda v: isinstance(v, str), _as_date),
    "rate": (
        {
            "oneOf": [
                {"type": "integer", "minimum": 0, "description": "bit/s"},
                {"type": "string", "description": "a rate such as 512k or 2M (bit/s)"},
            ]
        },
        lambda v: (_is_int(v) and v >= 0) or isinstance(v, str),
        plans.parse_rate,
    ),
}
_EXPECTED = {
    "string": "a string",
    "integer": "a whole number, 0 or more",
    "boolean": "true or false",
    "strings": "a list of strings",
    "size": "a number of bytes or a size such as 2G",
    "date": "a date such as 2026-07-31",
    "rate": "bit/s or a rate such as 2M",
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    description: str = ""
    required: bool = False
    nullable: bool = False
    enum: tuple[str, ...] = ()

    def schema(self) -> JSON:
        base = dict(_KINDS[self.kind][0])
        if self.enum:
            base["enum"] = list(self.enum)
        if self.description:
            base["description"] = self.description
        if self.nullable:
            return {"anyOf": [base, {"type": "null"}]}
        return base

    def parse(self, value: Any) -> Any:
        """The converted value; ValidationError (with a plain message) when it does not fit."""
        if value is None and self.nullable:
            return None
        _schema, check, convert = _KINDS[self.kind]
        if not check(value):
            raise ValidationError(f"must be {_EXPECTED[self.kind]}")
        if self.enum and value not in self.enum:
            raise ValidationError(f"must be one of {', '.join(self.enum)}")
        return convert(value) if convert is not None else value


@dataclass(frozen=True)
class Body:
    name: str  # the component schema's name
    fields: tuple[Field, ...]

    def schema(self) -> JSON:
        return {
            "type": "object",
            "properties": {f.name: f.schema() for f in self.fields},
            "required": [f.name for f in self.fields if f.required],
            "additionalProperties": False,
        }

    def parse(self) -> JSON:
        """The request's JSON object, checked field by field (every problem reported at once)."""
        data = request.get_json(silent=True)
        if not request.is_json:
            raise Problem(
                415, "unsupported-media-type", "Unsupported media type", "send application/json"
            )
        if not isinstance(data, dict):
            raise _invalid([{"field": "", "pointer": "#", "detail": "must be a JSON object"}])
        known = {f.name: f for f in self.fields}
        errors: list[JSON] = []
        values: JSON = {}
        for name in data:
            if name not in known:
                errors.append({"field": name, "pointer": f"#/{name}", "detail": "unknown field"})
        for f in self.fields:
            if f.name not in data:
                if f.required:
                    errors.append(
                        {"field": f.name, "pointer": f"#/{f.name}", "detail": "is required"}
                    )
                continue
            try:
                values[f.name] = f.parse(data[f.name])
            except ValidationError as exc:
                errors.append({"field": f.name, "pointer": f"#/{f.name}", "detail": exc.message})
        if errors:
            raise _invalid(errors)
        return values


# -- response schemas ------------------------------------------------------------------------

_STR: JSON = {"type": "string"}
_INT: JSON = {"type": "integer"}
_BOOL: JSON = {"type": "boolean"}
_STR_OR_NULL: JSON = {"type": ["string", "null"]}
_TIME: JSON = {"type": ["string", "null"], "format": "date-time"}
_DAY: JSON = {"type": ["string", "null"], "format": "date"}


def _object(properties: JSON, *, optional: tuple[str, ...] = ()) -> JSON:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _items(name: str) -> JSON:
    return _object({"items": {"type": "array", "items": _ref(name)}})


SCHEMAS: dict[str, JSON] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": _STR,
            "status": _INT,
            "detail": _STR,
            "instance": _STR,
            "errors": {
                "type": "array",
                "items": _object({"field": _STR, "pointer": _STR, "detail": _STR}),
            },
        },
        "required": ["type", "title", "status", "detail"],
    },
    "Member": _object(
        {
            "slug": _STR,
            "name": _STR,
            "kind": {"type": "string", "enum": [k.value for k in MemberKind]},
            "status": _STR,
            "status_reason": _STR,
            "contact": _object({"name": _STR, "email": _STR, "phone": _STR}),
            "contract": _object({"number": _STR, "start": _DAY, "end": _DAY}),
            "package": _object(
                {"max_mailboxes": _INT, "mail_quota_bytes": _INT, "max_lines": _INT}
            ),
            "created_at": _TIME,
            "usage": _object(
                {
                    "mailboxes": _INT,
                    "quota_allocated_bytes": _INT,
                    "aliases": _INT,
                    "domains": _INT,
                    "lines": _INT,
                }
            ),
        },
        optional=("usage",),
    ),
    "Domain": _object(
        {
            "name": _STR,
            "ascii_name": _STR,
            "shared": _BOOL,
            "member": _STR_OR_NULL,
            "utf8_local_parts": _BOOL,
            "filters": _object(
                {
                    "spam_add_header_score": {"type": ["number", "null"]},
                    "spam_reject_score": {"type": ["number", "null"]},
                    "virus_action": {"enum": ["reject", "quarantine", None]},
                }
            ),
            "created_at": _TIME,
            "mailboxes": _INT,
            "aliases": _INT,
        },
        optional=("mailboxes", "aliases"),
    ),
    "Mailbox": _object(
        {
            "address": _STR,
            "login": _STR,
            "member": _STR,
            "display_name": _STR,
            "quota_bytes": _INT,
            "enabled": _BOOL,
            "password_scheme": _STR,
            "created_at": _TIME,
            "updated_at": _TIME,
            "generated_password": {
                "type": "string",
                "description": "only in the response that created the mailbox with "
                "generate_password; shown once, never stored in clear",
            },
        },
        optional=("generated_password",),
    ),
    "Alias": _object(
        {
            "source": _STR,
            "catch_all": _BOOL,
            "member": _STR,
            "destinations": {"type": "array", "items": _STR},
            "enabled": _BOOL,
            "created_at": _TIME,
        }
    ),
    "Plan": _object(
        {
            "name": _STR,
            "description": _STR,
            "kind": {"type": "string", "enum": [k.value for k in PlanKind]},
            "download_bps": _INT,
            "upload_bps": _INT,
            "data_cap_bytes": {"type": ["integer", "null"]},
            "time_cap_seconds": {"type": ["integer", "null"]},
            "cap_action": {"type": "string", "enum": [a.value for a in CapAction]},
            "fair_use_download_bps": _INT,
            "fair_use_upload_bps": _INT,
            "session_timeout": {"type": ["integer", "null"]},
            "idle_timeout": {"type": ["integer", "null"]},
            "simultaneous_use": _INT,
            "port_limit": {"type": ["integer", "null"]},
            "reply_attributes": {
                "type": "array",
                "items": _object(
                    {"tier": _STR, "vendor": _STR, "attribute": _STR, "op": _STR, "value": _STR}
                ),
            },
            "subscribers": _INT,
        }
    ),
    "Subscriber": _object(
        {
            "username": _STR,
            "member": _STR,
            "plan": _STR,
            "status": {"type": "string", "enum": ["active", "suspended", "expired"]},
            "status_reason": _STR,
            "chap": _BOOL,
            "static_ip": _STR_OR_NULL,
            "pool": _STR_OR_NULL,
            "calling_station_id": _STR_OR_NULL,
            "expires_on": _DAY,
            "notes": _STR,
            "created_at": _TIME,
            "generated_password": {
                "type": "string",
                "description": "only in the response that created the line with "
                "generate_password; shown once",
            },
        },
        optional=("generated_password",),
    ),
    "OpenAPI": {"type": "object", "description": "this document"},
}
for _name in ("Member", "Domain", "Mailbox", "Alias", "Plan", "Subscriber"):
    SCHEMAS[f"{_name}List"] = _items(_name)

# -- operations: the route table the OpenAPI document is made from --------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str  # Flask rule under PREFIX, e.g. "/mailboxes/<path:address>"
    endpoint: str
    summary: str
    tag: str
    responses: dict[int, str | None]  # status -> schema name (None: no body)
    body: Body | None = None
    public: bool = False
    parameters: tuple[tuple[str, str], ...] = field(default=())  # query (name, description)

    @property
    def path(self) -> str:
        parts = [
            "{" + part[1:-1].rpartition(":")[2] + "}" if part.startswith("<") else part
            for part in self.rule.split("/")
        ]
        return PREFIX + "/".join(parts)


OPERATIONS: list[Operation] = []
View = Callable[..., Response]


def operation(
    method: str,
    rule: str,
    summary: str,
    *,
    tag: str,
    responses: dict[int, str | None],
    body: Body | None = None,
    public: bool = False,
    parameters: tuple[tuple[str, str], ...] = (),
) -> Callable[[View], View]:
    """Register a view and describe it; a declared body is parsed and passed as `data`."""

    def register(view: View) -> View:
        op = Operation(
            method, rule, view.__name__, summary, tag, responses, body, public, parameters
        )
        OPERATIONS.append(op)

        def handler(**kwargs: Any) -> Response:
            if op.body is not None:
                kwargs["data"] = op.body.parse()
            return view(**kwargs)

        handler.__name__ = view.__name__
        handler.__doc__ = view.__doc__
        api.add_url_rule(rule, endpoint=view.__name__, view_func=handler, methods=[method])
        return view

    return register


def _schema_content(name: str, media: str = "application/json") -> JSON:
    return {media: {"schema": _ref(name)}}


def openapi_document() -> JSON:
    """OpenAPI 3.1, made from OPERATIONS, the request bodies and SCHEMAS."""
    components: JSON = dict(SCHEMAS)
    paths: dict[str, JSON] = {}
    for op in OPERATIONS:
        if op.body is not None:
            components[op.body.name] = op.body.schema()
        responses: JSON = {}
        for status, schema in sorted(op.responses.items()):
            entry: JSON = {"description": _DESCRIPTIONS.get(status, "Success")}
            if schema is not None:
                entry["content"] = _schema_content(schema)
            responses[str(status)] = entry
        responses["default"] = {
            "description": "A problem (RFC 9457): 401 without a valid token, 404 for objects "
            "out of reach, 409 conflicts and package limits, 422 invalid input.",
            "content": _schema_content("Problem", "application/problem+json"),
        }
        parameters: list[JSON] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_names(op.path)
        ]
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in op.parameters
        ]
        entry_op: JSON = {
            "operationId": op.endpoint,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
        }
        if parameters:
            entry_op["parameters"] = parameters
        if op.body is not None:
            entry_op["requestBody"] = {
                "required": True,
                "content": _schema_content(op.body.name),
            }
        if op.public:
            entry_op["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = entry_op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "muninet API",
            "version": "1",
            "description": "Members, domains, mailboxes, aliases, service plans and subscriber "
            "lines. A member admin's token "
            "reaches only its own member; other members' objects answer 404.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `muninet token create`",
                }
            },
        },
    }


_DESCRIPTIONS = {200: "OK", 201: "Created", 204: "Deleted"}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


# -- authentication and scope -----------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    username: str
    member: str | None  # a member admin's member slug; None for a superadmin
    prefix: str

    @property
    def actor(self) -> Actor:
        return Actor("token", f"{self.username}:{self.prefix}", source_address=client_address())


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="muninet"'
    if error:
        challenge += f', error="{error}"'
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge}
    )


@api.before_request
def _authenticate() -> None:
    g.api_principal = None
    view = request.endpoint or ""
    if any(op.public and f"api.{op.endpoint}" == view for op in OPERATIONS):
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _unauthorized("send Authorization: Bearer <token> (from `muninet token create`)")
    with database().reader() as db:
        token = admins.verify_token(db, presented)
        if token is None:
            raise _unauthorized(
                "the token is unknown, revoked or its admin disabled", "invalid_token"
            )
        admin = token.admin
        g.api_principal = Principal(
            admin.username, admin.member.slug if admin.member else None, token.prefix
        )


@api.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # generated passwords, private data
    return response


def principal() -> Principal:
    found = g.get("api_principal")
    if not isinstance(found, Principal):
        raise _unauthorized("not authenticated")
    return found


def _in_scope(member: str | None, not_found: str) -> None:
    """Raise NotFound (the same message as a missing object) outside the token's member."""
    limit = principal().member
    if limit is not None and member != limit:
        raise NotFound(not_found)


def _superadmin(action: str) -> None:
    if principal().member is not None:
        raise NotPermitted(f"only a superadmin may {action}")


def _unit() -> AbstractContextManager[ServiceContext]:
    """One committed transaction acting as the token."""
    return unit_of_work(principal().actor)


def _json(data: Any, status: int = 200, location: str | None = None) -> Response:
    response = jsonify(data)
    response.status_code = status
    if location is not None:
        response.headers["Location"] = location
    return response


def _no_content() -> Response:
    return Response(status=204)


def _field_error(name: str, detail: str) -> Problem:
    return _invalid([{"field": name, "pointer": f"#/{name}", "detail": detail}])


# -- the OpenAPI document ----------------------------------------------------------------------


@operation(
    "GET",
    "/openapi.json",
    "This OpenAPI document",
    tag="meta",
    responses={200: "OpenAPI"},
    public=True,
)
def openapi() -> Response:
    return _json(openapi_document())


# -- members -----------------------------------------------------------------------------------

_MEMBER_FIELDS = (
    Field("max_mailboxes", "integer"),
    Field("mail_quota_bytes", "size", "total mail quota of the package"),
    Field("max_lines", "integer", "subscriber lines in the package"),
)
MEMBER_CREATE = Body(
    "MemberCreate",
    (
        Field("slug", "string", "lower-case ASCII name, e.g. glusk", required=True),
        Field("name", "string", required=True),
        Field("kind", "string", enum=tuple(k.value for k in MemberKind)),
        *_MEMBER_FIELDS,
        Field("contact_name", "string"),
        Field("contact_email", "string"),
        Field("contact_phone", "string"),
        Field("contract_number", "string"),
        Field("contract_start", "date", nullable=True),
        Field("contract_end", "date", nullable=True),
    ),
)
PACKAGE_PATCH = Body("PackagePatch", _MEMBER_FIELDS)


def _member_json(slug: str) -> JSON:
    with database().reader() as db:
        member = members.get(db, slug)
        return serialize.member(member, members.usage(db, member))


@operation("GET", "/members", "List members", tag="members", responses={200: "MemberList"})
def member_list() -> Response:
    limit = principal().member
    with database().reader() as db:
        found = members.list_members(db)
        items = [
            serialize.member(m, members.usage(db, m))
            for m in found
            if limit is None or m.slug == limit
        ]
    return _json({"items": items})


@operation(
    "GET",
    "/members/<slug>",
    "One member with its package use",
    tag="members",
    responses={200: "Member"},
)
def member_get(slug: str) -> Response:
    _in_scope(slug.strip().lower(), f"no member {slug!r}")
    return _json(_member_json(slug))


@operation(
    "POST",
    "/members",
    "Create a member (superadmin)",
    tag="members",
    responses={201: "Member"},
    body=MEMBER_CREATE,
)
def member_create(data: JSON) -> Response:
    _superadmin("create members")
    slug = data.pop("slug")
    name = data.pop("name")
    if "mail_quota_bytes" in data:
        data["mail_quota"] = data.pop("mail_quota_bytes")
    with _unit() as ctx:
        member = members.create(ctx, slug, name, **data)
        slug = member.slug
    return _json(_member_json(slug), 201, f"{PREFIX}/members/{slug}")


@operation(
    "PATCH",
    "/members/<slug>/package",
    "Change a member's package (superadmin)",
    tag="members",
    responses={200: "Member"},
    body=PACKAGE_PATCH,
)
def member_package(slug: str, data: JSON) -> Response:
    _in_scope(slug.strip().lower(), f"no member {slug!r}")
    _superadmin("change a package")
    with _unit() as ctx:
        member = members.update_package(
            ctx,
            slug,
            max_mailboxes=data.get("max_mailboxes"),
            mail_quota=data.get("mail_quota_bytes"),
            max_lines=data.get("max_lines"),
        )
        slug = member.slug
    return _json(_member_json(slug))


# -- domains -----------------------------------------------------------------------------------

DOMAIN_CREATE = Body(
    "DomainCreate",
    (
        Field("name", "string", "Unicode or punycode", required=True),
        Field("member", "string", "owning member's slug; null: the shared domain", nullable=True),
        Field("utf8_local_parts", "boolean"),
    ),
)


def _domain_json(name: str) -> JSON:
    with database().reader() as db:
        domain = domains.get(db, name)
        _in_scope(
            domain.member.slug if domain.member else None, f"domain {name!r} is not hosted here"
        )
        return serialize.domain(domain, *domains.counts(db, domain))


@operation("GET", "/domains", "List domains", tag="domains", responses={200: "DomainList"})
def domain_list() -> Response:
    limit = principal().member
    with database().reader() as db:
        items = [
            serialize.domain(d, *domains.counts(db, d))
            for d in domains.list_domains(db)
            if limit is None or (d.member is not None and d.member.slug == limit)
        ]
    return _json({"items": items})


@operation("GET", "/domains/<name>", "One domain", tag="domains", responses={200: "Domain"})
def domain_get(name: str) -> Response:
    return _json(_domain_json(name))


@operation(
    "POST",
    "/domains",
    "Host a domain (superadmin)",
    tag="domains",
    responses={201: "Domain"},
    body=DOMAIN_CREATE,
)
def domain_create(data: JSON) -> Response:
    _superadmin("add domains")
    with _unit() as ctx:
        domain = domains.create(
            ctx,
            data["name"],
            member_slug=data.get("member"),
            utf8_local_parts=data.get("utf8_local_parts", False),
        )
        name = domain.ascii_name
    return _json(_domain_json(name), 201, f"{PREFIX}/domains/{name}")


@operation(
    "DELETE",
    "/domains/<name>",
    "Stop hosting an empty domain (superadmin)",
    tag="domains",
    responses={204: None},
)
def domain_delete(name: str) -> Response:
    _domain_json(name)  # 404 out of scope
    _superadmin("remove domains")
    with _unit() as ctx:
        domains.remove(ctx, name)
    return _no_content()


# -- mailboxes ---------------------------------------------------------------------------------

_MAILBOX_FIELDS = (
    Field("member", "string", "owning member; default: the token's member or the domain's"),
    Field("password", "string", "used when the mailbox is created (PUT: set when it differs)"),
    Field("generate_password", "boolean", "make a password and return it once (on create)"),
    Field("quota_bytes", "size"),
    Field("display_name", "string", "set when the mailbox is created"),
    Field("enabled", "boolean"),
)
MAILBOX_CREATE = Body(
    "MailboxCreate", (Field("address", "string", required=True), *_MAILBOX_FIELDS)
)
MAILBOX_PUT = Body("MailboxPut", _MAILBOX_FIELDS)


def _mailbox_json(address: str) -> JSON:
    with database().reader() as db:
        mailbox = mailboxes.get(db, address)
        _in_scope(mailbox.member.slug, f"no mailbox {address.strip()!r}")
        return serialize.mailbox(mailbox)


def _owner(address: str, data: JSON) -> str:
    """The member a new mailbox or alias goes to: given, the token's, or the domain's."""
    limit = principal().member
    given = data.get("member")
    if given is not None:
        if limit is not None and given.strip().lower() != limit:
            raise NotFound(f"no member {given!r}")
        return str(given)
    if limit is not None:
        return limit
    with database().reader() as db:
        hosted = addressing.parse_hosted(db, address, catch_all=True)
        if hosted.domain.member is None:
            raise _field_error("member", f"{address!r} is on the shared domain: name its member")
        return hosted.domain.member.slug


def _create_mailbox(address: str, data: JSON) -> JSON:
    password = data.get("password")
    generate = data.get("generate_password", False)
    if (password is None) == (not generate):
        raise _field_error("password", "give either password or generate_password: true")
    if generate:
        password = generate_password()
    member = _owner(address, data)
    with _unit() as ctx:
        mailbox = mailboxes.create(
            ctx,
            address,
            member,
            password=password,
            quota=data.get("quota_bytes"),
            display_name=data.get("display_name", ""),
            enabled=data.get("enabled", True),
        )
        key = mailbox.address
    result = _mailbox_json(key)
    if generate:
        result["generated_password"] = password
    return result


@operation(
    "GET",
    "/mailboxes",
    "List mailboxes",
    tag="mailboxes",
    responses={200: "MailboxList"},
    parameters=(("member", "only this member's mailboxes"),),
)
def mailbox_list() -> Response:
    member = principal().member or request.args.get("member") or None
    if principal().member is not None and request.args.get("member") not in (None, member):
        raise NotFound(f"no member {request.args['member']!r}")
    with database().reader() as db:
        items = [serialize.mailbox(m) for m in mailboxes.list_mailboxes(db, member)]
    return _json({"items": items})


@operation(
    "GET",
    "/mailboxes/<path:address>",
    "One mailbox",
    tag="mailboxes",
    responses={200: "Mailbox"},
)
def mailbox_get(address: str) -> Response:
    return _json(_mailbox_json(address))


@operation(
    "POST",
    "/mailboxes",
    "Create a mailbox",
    tag="mailboxes",
    responses={201: "Mailbox"},
    body=MAILBOX_CREATE,
)
def mailbox_create(data: JSON) -> Response:
    result = _create_mailbox(data["address"], data)
    return _json(result, 201, f"{PREFIX}/mailboxes/{result['login']}")


@operation(
    "PUT",
    "/mailboxes/<path:address>",
    "Create or bring a mailbox to this state (idempotent: nothing changes when it matches)",
    tag="mailboxes",
    responses={200: "Mailbox", 201: "Mailbox"},
    body=MAILBOX_PUT,
)
def mailbox_put(address: str, data: JSON) -> Response:
    with database().reader() as db:
        try:
            current = serialize.mailbox(mailboxes.get(db, address))
        except NotFound:
            current = None
    if current is None:
        result = _create_mailbox(address, data)
        return _json(result, 201, f"{PREFIX}/mailboxes/{result['login']}")
    _in_scope(current["member"], f"no mailbox {address.strip()!r}")
    member = data.get("member")
    if member is not None and member.strip().lower() != current["member"]:
        raise _field_error("member", "a mailbox cannot move to another member")
    name = data.get("display_name")
    if name is not None and name.strip() != current["display_name"]:
        raise _field_error("display_name", "changing an existing mailbox's name is not supported")
    with _unit() as ctx:
        key = current["login"]
        quota = data.get("quota_bytes")
        if quota is not None and quota != current["quota_bytes"]:
            mailboxes.set_quota(ctx, key, quota)
        enabled = data.get("enabled")
        if enabled is not None and enabled != current["enabled"]:
            mailboxes.set_enabled(ctx, key, enabled)
        password = data.get("password")
        if password is not None:
            stored = mailboxes.get(ctx.session, key).password_hash
            if not ctx.hasher.verify(password, stored).ok:
                mailboxes.set_password(ctx, key, password)
    return _json(_mailbox_json(key))


@operation(
    "DELETE",
    "/mailboxes/<path:address>",
    "Remove a mailbox record",
    tag="mailboxes",
    responses={204: None},
)
def mailbox_delete(address: str) -> Response:
    key = _mailbox_json(address)["login"]
    with _unit() as ctx:
        mailboxes.remove(ctx, key)
    return _no_content()


# -- aliases -----------------------------------------------------------------------------------

ALIAS_PUT = Body(
    "AliasPut",
    (
        Field("destinations", "strings", "local or external addresses", required=True),
        Field("member", "string", "owning member (shared domain); default: as for mailboxes"),
    ),
)


class _Unchanged(Exception):
    """Rolls back a replacement that came out identical to what was there."""


def _alias_json(source: str) -> JSON:
    with database().reader() as db:
        alias = aliases.get(db, source)
        _in_scope(alias.member.slug, f"no alias {source.strip()!r}")
        return serialize.alias(alias)


@operation(
    "GET",
    "/aliases",
    "List aliases",
    tag="aliases",
    responses={200: "AliasList"},
    parameters=(("member", "only this member's aliases"),),
)
def alias_list() -> Response:
    member = principal().member or request.args.get("member") or None
    if principal().member is not None and request.args.get("member") not in (None, member):
        raise NotFound(f"no member {request.args['member']!r}")
    with database().reader() as db:
        items = [serialize.alias(a) for a in aliases.list_aliases(db, member)]
    return _json({"items": items})


@operation(
    "GET",
    "/aliases/<path:source>",
    "One alias (`@domain` for a catch-all)",
    tag="aliases",
    responses={200: "Alias"},
)
def alias_get(source: str) -> Response:
    return _json(_alias_json(source))


@operation(
    "PUT",
    "/aliases/<path:source>",
    "Create an alias or set its destinations (idempotent: nothing changes when they match)",
    tag="aliases",
    responses={200: "Alias", 201: "Alias"},
    body=ALIAS_PUT,
)
def alias_put(source: str, data: JSON) -> Response:
    with database().reader() as db:
        try:
            current: JSON | None = serialize.alias(aliases.get(db, source))
        except NotFound:
            current = None
    if current is not None:
        _in_scope(current["member"], f"no alias {source.strip()!r}")
    else:
        member = _owner(source, data)
        with _unit() as ctx:
            created = aliases.create(ctx, source, data["destinations"], member_slug=member)
            display = created.display_address
        return _json(_alias_json(display), 201, f"{PREFIX}/aliases/{display}")
    given = data.get("member")
    if given is not None and given.strip().lower() != current["member"]:
        raise _field_error("member", "an alias cannot move to another member")
    if data["destinations"] == current["destinations"]:
        return _json(current)
    try:
        with _unit() as ctx:
            aliases.remove(ctx, current["source"])
            ctx.session.flush()
            replaced = aliases.create(
                ctx, current["source"], data["destinations"], member_slug=current["member"]
            )
            if [d.address for d in replaced.destinations] == current["destinations"]:
                raise _Unchanged  # same after normalising: roll back, audit nothing
    except _Unchanged:
        pass
    return _json(_alias_json(current["source"]))


@operation(
    "DELETE", "/aliases/<path:source>", "Remove an alias", tag="aliases", responses={204: None}
)
def alias_delete(source: str) -> Response:
    display = _alias_json(source)["source"]
    with _unit() as ctx:
        aliases.remove(ctx, display)
    return _no_content()


# -- plans -------------------------------------------------------------------------------------

_PLAN_FIELDS = (
    Field("kind", "string", enum=tuple(k.value for k in PlanKind)),
    Field("download_bps", "rate", "0: unlimited"),
    Field("upload_bps", "rate", "0: unlimited"),
    Field("data_cap_bytes", "size", "monthly data cap; null or 0: none", nullable=True),
    Field("time_cap_seconds", "integer", "monthly time cap; null or 0: none", nullable=True),
    Field("cap_action", "string", enum=tuple(a.value for a in CapAction)),
    Field("fair_use_download_bps", "rate", "the throttled rate past the cap"),
    Field("fair_use_upload_bps", "rate"),
    Field("session_timeout", "integer", nullable=True),
    Field("idle_timeout", "integer", nullable=True),
    Field("simultaneous_use", "integer"),
    Field("port_limit", "integer", nullable=True),
    Field("description", "string"),
)
PLAN_CREATE = Body("PlanCreate", (Field("name", "string", required=True), *_PLAN_FIELDS))
PLAN_PATCH = Body("PlanPatch", _PLAN_FIELDS)


def _plan_json(name: str) -> JSON:
    with database().reader() as db:
        plan = plans.get(db, name)
        data = plans.as_dict(plan)
        data["subscribers"] = plans.subscriber_counts(db).get(plan.id, 0)
        return data


@operation("GET", "/plans", "List service plans", tag="plans", responses={200: "PlanList"})
def plan_list() -> Response:
    with database().reader() as db:
        counts = plans.subscriber_counts(db)
        items = [
            {**plans.as_dict(p), "subscribers": counts.get(p.id, 0)} for p in plans.list_plans(db)
        ]
    return _json({"items": items})


@operation(
    "GET",
    "/plans/<name>",
    "One plan with its RADIUS reply attributes",
    tag="plans",
    responses={200: "Plan"},
)
def plan_get(name: str) -> Response:
    return _json(_plan_json(name))


@operation(
    "POST",
    "/plans",
    "Create a plan (superadmin)",
    tag="plans",
    responses={201: "Plan"},
    body=PLAN_CREATE,
)
def plan_create(data: JSON) -> Response:
    _superadmin("create plans")
    with _unit() as ctx:
        plan = plans.create(ctx, data.pop("name"), **data)
        name = plan.name
    return _json(_plan_json(name), 201, f"{PREFIX}/plans/{name}")


@operation(
    "PATCH",
    "/plans/<name>",
    "Change a plan (superadmin); null clears an optional limit",
    tag="plans",
    responses={200: "Plan"},
    body=PLAN_PATCH,
)
def plan_patch(name: str, data: JSON) -> Response:
    _superadmin("change plans")
    with _unit() as ctx:
        name = plans.update(ctx, name, **data).name
    return _json(_plan_json(name))


@operation(
    "DELETE",
    "/plans/<name>",
    "Remove an unused plan (superadmin)",
    tag="plans",
    responses={204: None},
)
def plan_delete(name: str) -> Response:
    _superadmin("remove plans")
    with _unit() as ctx:
        plans.remove(ctx, name)
    return _no_content()


# -- subscribers -------------------------------------------------------------------------------

SUBSCRIBER_CREATE = Body(
    "SubscriberCreate",
    (
        Field("username", "string", required=True),
        Field("member", "string", "default: the token's member"),
        Field("plan", "string", required=True),
        Field("password", "string"),
        Field("generate_password", "boolean", "make a password and return it once"),
        Field("chap", "boolean", "store the cleartext so CHAP works"),
        Field("static_ip", "string", nullable=True),
        Field("pool", "string", nullable=True),
        Field("calling_station_id", "string", nullable=True),
        Field("expires_on", "date", nullable=True),
        Field("notes", "string"),
    ),
)
SUBSCRIBER_PATCH = Body(
    "SubscriberPatch",
    (
        Field("status", "string", enum=tuple(s.value for s in SubscriberStatus)),
        Field("reason", "string", "why it is suspended"),
        Field("plan", "string"),
        Field("static_ip", "string", "null: none", nullable=True),
        Field("calling_station_id", "string", "null: none", nullable=True),
        Field("expires_on", "date", "null: never", nullable=True),
    ),
)


def _subscriber_json(username: str) -> JSON:
    with database().reader() as db:
        subscriber = subscribers.get(db, username)
        _in_scope(subscriber.member.slug, f"no subscriber {username!r}")
        return subscribers.as_dict(subscriber)


@operation(
    "GET",
    "/subscribers",
    "List subscriber lines",
    tag="subscribers",
    responses={200: "SubscriberList"},
    parameters=(("member", "only this member's lines"),),
)
def subscriber_list() -> Response:
    member = principal().member or request.args.get("member") or None
    if principal().member is not None and request.args.get("member") not in (None, member):
        raise NotFound(f"no member {request.args['member']!r}")
    with database().reader() as db:
        items = [subscribers.as_dict(s) for s in subscribers.list_subscribers(db, member)]
    return _json({"items": items})


@operation(
    "GET",
    "/subscribers/<username>",
    "One subscriber line",
    tag="subscribers",
    responses={200: "Subscriber"},
)
def subscriber_get(username: str) -> Response:
    return _json(_subscriber_json(username))


@operation(
    "POST",
    "/subscribers",
    "Create a subscriber line within the member's package",
    tag="subscribers",
    responses={201: "Subscriber"},
    body=SUBSCRIBER_CREATE,
)
def subscriber_create(data: JSON) -> Response:
    password = data.pop("password", None)
    generate = data.pop("generate_password", False)
    if (password is None) == (not generate):
        raise _field_error("password", "give either password or generate_password: true")
    if generate:
        password = generate_password()
    limit = principal().member
    member = data.pop("member", None)
    if member is not None and limit is not None and member.strip().lower() != limit:
        raise NotFound(f"no member {member!r}")
    member = member or limit
    if member is None:
        raise _field_error("member", "name the member that owns the line")
    with _unit() as ctx:
        subscriber = subscribers.create(
            ctx,
            data.pop("username"),
            member,
            data.pop("plan"),
            password,
            pool_name=data.pop("pool", None),
            **data,
        )
        username = subscriber.username
    result = _subscriber_json(username)
    if generate:
        result["generated_password"] = password
    return _json(result, 201, f"{PREFIX}/subscribers/{username}")


@operation(
    "PATCH",
    "/subscribers/<username>",
    "Suspend or resume (status, reason), change plan, address, binding or expiry",
    tag="subscribers",
    responses={200: "Subscriber"},
    body=SUBSCRIBER_PATCH,
)
def subscriber_patch(username: str, data: JSON) -> Response:
    current = _subscriber_json(username)
    username = current["username"]
    status = data.pop("status", None)
    reason = data.pop("reason", "")
    changes = {
        name: data.get(name, plans.UNSET)
        for name in ("static_ip", "calling_station_id", "expires_on")
    }
    with _unit() as ctx:
        stored = subscribers.get(ctx.session, username).status.value
        if status is not None and status != stored:
            subscribers.set_status(ctx, username, SubscriberStatus(status), reason)
        if data:
            subscribers.update(ctx, username, plan_name=data.get("plan"), **changes)
    return _json(_subscriber_json(username))


@operation(
    "DELETE",
    "/subscribers/<username>",
    "Remove a subscriber line",
    tag="subscribers",
    responses={204: None},
)
def subscriber_delete(username: str) -> Response:
    username = _subscriber_json(username)["username"]
    with _unit() as ctx:
        subscribers.remove(ctx, username)
    return _no_content()
