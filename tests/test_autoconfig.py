"""Client autoconfiguration documents: right hosts, ports, socket types and logins, IDN too."""

from __future__ import annotations

import plistlib
from xml.etree import ElementTree as ET

import pytest

from provisioning.autoconfig import OUTLOOK_RESPONSE, apple_profile, outlook, thunderbird
from provisioning.settings import Settings, load_settings

PRODUCTION = {
    "MUNINET_ASSOCIATION__HOSTNAME": "mail.zwiazek-gmin.pl",
    "MUNINET_ASSOCIATION__NAME": "Związek Gmin Przykładowych",
    "MUNINET_LISTEN__IMAP_PORT": "143",
    "MUNINET_LISTEN__IMAPS_PORT": "993",
    "MUNINET_LISTEN__SUBMISSION_PORT": "587",
    "MUNINET_LISTEN__SMTPS_PORT": "465",
}


@pytest.fixture
def settings() -> Settings:
    return load_settings(PRODUCTION)


def test_thunderbird_for_an_idn_domain(settings: Settings) -> None:
    root = ET.fromstring(thunderbird(settings, "Община-Трън.бг"))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.get("id") == "xn----7sbc2azacbvr9dr.xn--90ae"
    assert [d.text for d in provider.findall("domain")] == [
        "xn----7sbc2azacbvr9dr.xn--90ae",
        "община-трън.бг",
    ]
    servers = [
        (s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider
        if s.tag.endswith("Server")
    ]
    assert servers == [
        ("incomingServer", "imap", "mail.zwiazek-gmin.pl", "993", "SSL"),
        ("incomingServer", "imap", "mail.zwiazek-gmin.pl", "143", "STARTTLS"),
        ("outgoingServer", "smtp", "mail.zwiazek-gmin.pl", "465", "SSL"),
        ("outgoingServer", "smtp", "mail.zwiazek-gmin.pl", "587", "STARTTLS"),
    ]
    for server in provider.iter():
        if server.tag.endswith("Server"):
            assert server.findtext("authentication") == "password-cleartext"
            assert server.findtext("username") == "%EMAILLOCALPART%@xn----7sbc2azacbvr9dr.xn--90ae"


def test_outlook_autodiscover(settings: Settings) -> None:
    root = ET.fromstring(outlook(settings, "Кмет@община-трън.бг"))
    ns = {"o": OUTLOOK_RESPONSE}
    protocols = root.findall(".//o:Protocol", ns)
    assert [
        (p.findtext("o:Type", namespaces=ns), p.findtext("o:Port", namespaces=ns))
        for p in protocols
    ] == [("IMAP", "993"), ("SMTP", "465")]
    for protocol in protocols:
        assert protocol.findtext("o:Server", namespaces=ns) == "mail.zwiazek-gmin.pl"
        assert protocol.findtext("o:SSL", namespaces=ns) == "on"
        assert protocol.findtext("o:LoginName", namespaces=ns) == (
            "кмет@xn----7sbc2azacbvr9dr.xn--90ae"
        )


def test_apple_profile(settings: Settings) -> None:
    profile = plistlib.loads(apple_profile(settings, "glusk@info.association.pl", "Urząd Gminy"))
    assert profile["PayloadType"] == "Configuration"
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"]) == (
        "mail.zwiazek-gmin.pl",
        993,
    )
    assert (account["OutgoingMailServerHostName"], account["OutgoingMailServerPortNumber"]) == (
        "mail.zwiazek-gmin.pl",
        465,
    )
    assert account["IncomingMailServerUseSSL"] and account["OutgoingMailServerUseSSL"]
    assert account["IncomingMailServerUsername"] == "glusk@info.association.pl"
    assert not {"IncomingPassword", "OutgoingPassword"} & set(account)  # the device asks
    assert account["PayloadUUID"] != profile["PayloadUUID"]
