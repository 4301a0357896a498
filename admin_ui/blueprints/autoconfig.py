"""Mail client autoconfiguration at the URLs clients ask for by themselves.

Thunderbird: /mail/config-v1.1.xml (on autoconfig.<domain>) and
/.well-known/autoconfig/mail/config-v1.1.xml (on <domain>); Outlook: a POST to
/autodiscover/autodiscover.xml; Apple devices: a profile per address from
/mail/apple.mobileconfig?emailaddress=... (linked from the setup sheet).

Answers only for hosted domains; never says whether a mailbox exists.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from flask import Blueprint, Response, abort, request

from admin_ui.context import database, settings
from provisioning import autoconfig as documents
from provisioning.addresses import parse_domain, split_address
from provisioning.errors import NotFound, ValidationError
from provisioning.services import domains

autoconfig = Blueprint("autoconfig", __name__)

XML = "application/xml; charset=utf-8"
MAX_REQUEST = 16 * 1024


def _hosted_domain(name: str) -> str:
    """The hosted domain's Unicode name, or a 404 (400 for a malformed name)."""
    try:
        parsed = parse_domain(name)
    except ValidationError:
        abort(400, "invalid domain")
    with database().reader() as session:
        try:
            return domains.get(session, parsed.ascii).name
        except NotFound:
            abort(404, "not a domain hosted here")


def _address(text: str) -> tuple[str, str]:
    """(address, hosted domain) from what a client sent."""
    try:
        _, domain = split_address(text)
    except ValidationError:
        abort(400, "invalid e-mail address")
    return text.strip(), _hosted_domain(domain)


def _domain_from_request() -> str:
    email = request.args.get("emailaddress", "")
    if email:
        return _address(email)[1]
    host = (request.host or "").rsplit(":", 1)[0] if "]" not in (request.host or "") else ""
    for prefix in ("autoconfig.", "autodiscover."):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    return _hosted_domain(host)


@autoconfig.get("/mail/config-v1.1.xml")
@autoconfig.get("/.well-known/autoconfig/mail/config-v1.1.xml")
def thunderbird() -> Response:
    body = documents.thunderbird(settings(), _domain_from_request())
    return Response(body, content_type=XML)


@autoconfig.route("/autodiscover/autodiscover.xml", methods=["POST"])
@autoconfig.route("/Autodiscover/Autodiscover.xml", methods=["POST"])
def outlook() -> Response:
    if (request.content_length or 0) > MAX_REQUEST:
        abort(413)
    try:
        root = SafeET.fromstring(request.get_data(cache=False)[:MAX_REQUEST])
    except (ParseError, DefusedXmlException):
        abort(400, "the request is not valid XML")
    email = next((el.text or "" for el in root.iter() if str(el.tag).endswith("EMailAddress")), "")
    if not email:
        abort(400, "the request names no EMailAddress")
    address, _ = _address(email)
    return Response(documents.outlook(settings(), address), content_type=XML)


@autoconfig.get("/mail/apple.mobileconfig")
def apple() -> Response:
    address, _ = _address(request.args.get("emailaddress", ""))
    local = address.rpartition("@")[0]
    filename = f"{local}.mobileconfig" if local.isascii() else "mail.mobileconfig"
    return Response(
        documents.apple_profile(settings(), address),
        content_type="application/x-apple-aspen-config",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
