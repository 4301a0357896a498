"""The autoconfiguration URLs served by the web app (Flask test client), IDN domains too."""

from __future__ import annotations

import plistlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient

from admin_ui import create_app
from provisioning.autoconfig import OUTLOOK_RESPONSE
from provisioning.services import domains, members
from provisioning.services.context import ServiceContext
from provisioning.settings import load_settings

Unit = Callable[[], AbstractContextManager[ServiceContext]]
IDN = "община-трън.бг"
IDN_ASCII = "xn----7sbc2azacbvr9dr.xn--90ae"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"


@pytest.fixture
def client(env: dict[str, str], unit: Unit) -> FlaskClient:
    with unit() as ctx:
        members.create(ctx, "trun", "Община Трън")
        domains.create(ctx, IDN, member_slug="trun", utf8_local_parts=True)
        domains.create(ctx, "info.association.pl")
    settings = load_settings(
        {
            **env,
            "MUNINET_ASSOCIATION__HOSTNAME": "mail.zwiazek-gmin.pl",
            "MUNINET_LISTEN__IMAPS_PORT": "993",
        }
    )
    return create_app(settings).test_client()


def servers(body: bytes) -> list[tuple[str | None, str | None, str | None]]:
    provider = ET.fromstring(body).find("emailProvider")
    assert provider is not None
    return [
        (s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider
        if s.tag.endswith("Server")
    ]


def test_thunderbird_urls(client: FlaskClient) -> None:
    for url, host in [
        (f"/mail/config-v1.1.xml?emailaddress=кмет@{IDN}", "localhost"),
        ("/mail/config-v1.1.xml", f"autoconfig.{IDN_ASCII}"),  # as Thunderbird asks
        (f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a@{IDN_ASCII}", "x"),
    ]:
        response = client.get(url, headers={"Host": host})
        assert response.status_code == 200, (url, response.data)
        assert response.content_type.startswith("application/xml")
        assert servers(response.data)[0] == ("mail.zwiazek-gmin.pl", "993", "SSL")
        provider = ET.fromstring(response.data).find("emailProvider")
        assert provider is not None and provider.get("id") == IDN_ASCII


def test_unknown_or_bad_domains_are_refused(client: FlaskClient) -> None:
    assert client.get("/mail/config-v1.1.xml?emailaddress=a@example.com").status_code == 404
    assert client.get("/mail/config-v1.1.xml?emailaddress=bez-malpy").status_code == 400
    assert (
        client.get("/mail/config-v1.1.xml", headers={"Host": "autoconfig.example.com"}).status_code
        == 404
    )
    assert client.get("/mail/apple.mobileconfig?emailaddress=a@example.com").status_code == 404


def test_outlook_autodiscover_post(client: FlaskClient) -> None:
    request = (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQUEST_NS}"><Request>'
        f"<EMailAddress>кмет@{IDN}</EMailAddress>"
        f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()
    response = client.post("/autodiscover/autodiscover.xml", data=request, content_type="text/xml")
    assert response.status_code == 200
    ns = {"o": OUTLOOK_RESPONSE}
    logins = [p.text for p in ET.fromstring(response.data).findall(".//o:LoginName", ns)]
    assert logins == [f"кмет@{IDN_ASCII}"] * 2
    assert client.post("/Autodiscover/Autodiscover.xml", data=request).status_code == 200
    assert client.post("/autodiscover/autodiscover.xml", data=b"<nie").status_code == 400
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><x><EMailAddress>&b;</EMailAddress></x>'
    )
    assert client.post("/autodiscover/autodiscover.xml", data=bomb).status_code == 400
    assert client.get("/autodiscover/autodiscover.xml").status_code == 405


def test_apple_profile_download(client: FlaskClient) -> None:
    response = client.get("/mail/apple.mobileconfig?emailaddress=glusk@info.association.pl")
    assert response.status_code == 200
    assert response.content_type == "application/x-apple-aspen-config"
    assert 'filename="glusk.mobileconfig"' in response.headers["Content-Disposition"]
    (account,) = plistlib.loads(response.data)["PayloadContent"]
    assert account["IncomingMailServerUsername"] == "glusk@info.association.pl"
