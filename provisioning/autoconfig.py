"""Mail client autoconfiguration documents: Thunderbird, Outlook and Apple devices.

Offices have no sysadmin, so a client must set itself up from the address alone.
These functions build the documents; a web face serves them at the well-known
URLs (/mail/config-v1.1.xml, /.well-known/autoconfig/mail/config-v1.1.xml,
/autodiscover/autodiscover.xml, and a .mobileconfig per mailbox).

The login name is always muninet's lookup key form: the local part and the domain
in ASCII (punycode), which is what Dovecot and SMTP AUTH look up, even when the
user typed the Unicode domain.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from provisioning.addresses import address_key, parse_domain, split_address
from provisioning.settings import Settings

AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


@dataclass(frozen=True)
class Endpoints:
    host: str
    imaps: int
    imap: int
    smtps: int
    submission: int


def endpoints(settings: Settings) -> Endpoints:
    listen = settings.listen
    return Endpoints(
        host=parse_domain(settings.association.hostname).ascii,
        imaps=listen.imaps_port,
        imap=listen.imap_port,
        smtps=listen.smtps_port,
        submission=listen.submission_port,
    )


def _text(parent: ET.Element, tag: str, text: str | int) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(text)
    return element


def _xml(root: ET.Element) -> bytes:
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def thunderbird(settings: Settings, domain: str) -> bytes:
    """Thunderbird's config-v1.1.xml for a hosted domain (TLS first, STARTTLS second)."""
    name = parse_domain(domain)
    ends = endpoints(settings)
    login = f"%EMAILLOCALPART%@{name.ascii}"
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=name.ascii)
    _text(provider, "domain", name.ascii)
    if name.name != name.ascii:
        _text(provider, "domain", name.name)
    _text(provider, "displayName", settings.association.name)
    _text(provider, "displayShortName", settings.association.name[:30])
    servers = [
        ("incomingServer", "imap", ends.imaps, "SSL"),
        ("incomingServer", "imap", ends.imap, "STARTTLS"),
        ("outgoingServer", "smtp", ends.smtps, "SSL"),
        ("outgoingServer", "smtp", ends.submission, "STARTTLS"),
    ]
    for tag, kind, port, socket_type in servers:
        server = ET.SubElement(provider, tag, type=kind)
        _text(server, "hostname", ends.host)
        _text(server, "port", port)
        _text(server, "socketType", socket_type)
        _text(server, "authentication", "password-cleartext")
        _text(server, "username", login)
    return _xml(root)


def login_name(address: str) -> str:
    """The login for an address as users type it (Unicode domain allowed)."""
    local, domain = split_address(address)
    return address_key(local, parse_domain(domain).ascii)


def outlook(settings: Settings, address: str) -> bytes:
    """Outlook's POX autodiscover response for one address (implicit TLS endpoints)."""
    ends = endpoints(settings)
    login = login_name(address)
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for kind, port in (("IMAP", ends.imaps), ("SMTP", ends.smtps)):
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", kind)
        _text(protocol, "Server", ends.host)
        _text(protocol, "Port", port)
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "LoginName", login)
        _text(protocol, "SPA", "off")
        _text(protocol, "SSL", "on")
        _text(protocol, "AuthRequired", "on")
        if kind == "SMTP":
            _text(protocol, "UsePOPAuth", "off")
            _text(protocol, "SMTPLast", "off")
    return _xml(root)


def apple_profile(settings: Settings, address: str, display_name: str = "") -> bytes:
    """An Apple .mobileconfig that sets up one mailbox (the device asks for the password)."""
    ends = endpoints(settings)
    login = login_name(address)
    identifier = ".".join(reversed(ends.host.split(".")))
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.mail.{uuid.uuid5(uuid.NAMESPACE_DNS, login)}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mail:{login}")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountName": display_name or address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": ends.host,
        "IncomingMailServerPortNumber": ends.imaps,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": login,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": ends.host,
        "OutgoingMailServerPortNumber": ends.smtps,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": login,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.profile.{uuid.uuid5(uuid.NAMESPACE_DNS, login)}",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"profile:{login}")).upper(),
        "PayloadDisplayName": f"{settings.association.name}: {address}",
        "PayloadOrganization": settings.association.name,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)
