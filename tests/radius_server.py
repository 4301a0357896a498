"""A real FreeRADIUS for tests, from the configuration muninet renders, and a NAS played by pyrad.

The client computes PAP, CHAP (RFC 1994) and MS-CHAPv2 (RFC 2759) itself, so
each method is checked against FreeRADIUS's own verification.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from passlib.hash import nthash
from pyrad import packet
from pyrad.client import Client
from pyrad.dictionary import Dictionary

from mailhost.freeradius import FreeRadius, freeradius_binary
from provisioning.settings import Settings, load_settings

from conftest import missing

DICTIONARY_DIR = "/usr/share/freeradius"
# pyrad cannot parse the whole Debian dictionary (dictionary.juniper): load the
# files the tests need one by one.
DICTIONARY_FILES = [
    "dictionary.rfc2865",
    "dictionary.rfc2866",
    "dictionary.rfc2869",
    "dictionary.rfc3576",
    "dictionary.microsoft",
    "dictionary.mikrotik",
    "dictionary.wispr",
    "dictionary.ascend",
    "dictionary.cisco",
]
_dictionary: Dictionary | None = None


def dictionary() -> Dictionary:
    global _dictionary  # noqa: PLW0603 - parsed once per test run
    if _dictionary is None:
        _dictionary = Dictionary(*(os.path.join(DICTIONARY_DIR, f) for f in DICTIONARY_FILES))
    return _dictionary


def require_freeradius() -> None:
    if freeradius_binary() is None:
        missing("freeradius (freeradius, freeradius-utils, freeradius-postgresql)")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_freeradius(env: dict[str, str], attempts: int = 3) -> tuple[FreeRadius, Settings]:
    """Render and start FreeRADIUS on free ports (again on new ports if one was taken)."""
    require_freeradius()
    error: Exception | None = None
    for _ in range(attempts):
        ports = {
            "MUNINET_LISTEN__RADIUS_AUTH_PORT": str(free_udp_port()),
            "MUNINET_LISTEN__RADIUS_ACCT_PORT": str(free_udp_port()),
        }
        settings = load_settings({**env, **ports})
        server = FreeRadius(settings, reject_delay=0)
        try:
            server.start()
        except RuntimeError as exc:
            error = exc
            continue
        return server, settings
    raise RuntimeError(f"FreeRADIUS did not start: {error}")


@dataclass
class Nas:
    """A NAS played by the test: sends Access- and Accounting-Requests with pyrad."""

    settings: Settings
    secret: str
    source: str = "127.0.0.1"

    def client(self) -> Client:
        client = Client(
            server="127.0.0.1",
            authport=self.settings.listen.radius_auth_port,
            acctport=self.settings.listen.radius_acct_port,
            secret=self.secret.encode(),
            dict=dictionary(),
        )
        client.timeout = 3
        client.retries = 1
        if self.source != "127.0.0.1":
            client.bind((self.source, 0))
        return client

    def _request(self, username: str, **attributes: Any) -> tuple[Client, packet.AuthPacket]:
        client = self.client()
        request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=username)
        request["NAS-IP-Address"] = self.source
        request["NAS-Port"] = 1
        for name, value in attributes.items():
            request[name.replace("_", "-")] = value
        return client, request

    def pap(self, username: str, password: str, **attributes: Any) -> packet.Packet:
        client, request = self._request(username, **attributes)
        request["User-Password"] = request.PwCrypt(password)
        return client.SendPacket(request)

    def chap(self, username: str, password: str, **attributes: Any) -> packet.Packet:
        client, request = self._request(username, **attributes)
        ident = os.urandom(1)
        challenge = os.urandom(16)
        digest = hashlib.md5(ident + password.encode() + challenge).digest()
        request["CHAP-Password"] = ident + digest
        request["CHAP-Challenge"] = challenge
        return client.SendPacket(request)

    def mschapv2(self, username: str, password: str, **attributes: Any) -> packet.Packet:
        client, request = self._request(username, **attributes)
        authenticator_challenge = os.urandom(16)
        peer_challenge = os.urandom(16)
        response = mschapv2_response(username, password, authenticator_challenge, peer_challenge)
        request["MS-CHAP-Challenge"] = authenticator_challenge
        request["MS-CHAP2-Response"] = b"\x01\x00" + peer_challenge + bytes(8) + response
        return client.SendPacket(request)

    def accounting(self, username: str, status: str, session_id: str, **attributes: Any) -> int:
        client = self.client()
        request = client.CreateAcctPacket(User_Name=username)
        request["Acct-Status-Type"] = status
        request["Acct-Session-Id"] = session_id
        request["NAS-IP-Address"] = self.source
        request["NAS-Port"] = 1
        for name, value in attributes.items():
            request[name.replace("_", "-")] = value
        reply = client.SendPacket(request)
        return int(reply.code)


def _des_keys(hash21: bytes) -> list[bytes]:
    """Three DES keys from the 21-byte padded NT hash (7 bytes each, parity bits added)."""
    keys = []
    for i in range(3):
        chunk = int.from_bytes(hash21[7 * i : 7 * i + 7], "big")
        key = bytes(((chunk >> (49 - 7 * j)) & 0x7F) << 1 for j in range(8))
        keys.append(key)
    return keys


def mschapv2_response(
    username: str, password: str, authenticator_challenge: bytes, peer_challenge: bytes
) -> bytes:
    """The 24-byte NT-Response of RFC 2759."""
    challenge = hashlib.sha1(peer_challenge + authenticator_challenge + username.encode()).digest()[
        :8
    ]
    password_hash = nthash.raw(password) + bytes(5)
    out = b""
    for key in _des_keys(password_hash):
        encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
        out += encryptor.update(challenge) + encryptor.finalize()
    return out


def wait_until(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
