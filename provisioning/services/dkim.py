"""DKIM keys of hosted domains: generate, activate (rotation), and what DNS must hold.

Selectors name the algorithm, the year and a sequence letter: `m2026a` for the first
RSA key made in 2026, `m2026b` for the next, `e2026a` for Ed25519. A selector is
never reused for a domain, so a resolver's cached record of an old key never meets
a new signature.

Rotation: `generate` makes the first key of an algorithm active at once. When an
active key of that algorithm exists, the new key is `pending`: publish its record
(`muninet dkim show`), wait for DNS to propagate (a day), then `activate` it; the old
key is retired then and its private key erased. Keep the old record published a few
days more so mail signed just before the switch still verifies.
"""

from __future__ import annotations

import base64
import re
import string
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning.addresses import parse_domain
from provisioning.errors import Conflict, NotFound, ValidationError
from provisioning.models import DkimAlgorithm, DkimKey, DkimKeyStatus, Domain, utcnow
from provisioning.services import domains
from provisioning.services.context import ServiceContext

RSA_BITS = 2048
PREFIX = {DkimAlgorithm.RSA: "m", DkimAlgorithm.ED25519: "e"}
SIGNATURE_ALGORITHM = {DkimAlgorithm.RSA: b"rsa-sha256", DkimAlgorithm.ED25519: b"ed25519-sha256"}
MAX_TXT_STRING = 255  # bytes in one DNS character-string (RFC 1035 3.3)


# -- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private_pem: str  # PKCS#8 PEM
    public_value: str  # the p= tag


def new_key_pair(algorithm: DkimAlgorithm) -> KeyPair:
    """A fresh key: 2048-bit RSA (p= is the SubjectPublicKeyInfo) or Ed25519 (RFC 8463)."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm is DkimAlgorithm.RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyPair(pem.decode("ascii"), base64.b64encode(public).decode("ascii"))


@dataclass(frozen=True)
class SigningKey:
    """What the mail engine needs to sign with one key; no database object attached."""

    domain: str  # ASCII (punycode) form: the d= tag
    selector: str
    algorithm: DkimAlgorithm
    # The private key in the form dkimpy reads: PKCS#1 PEM for RSA, base64 of the
    # 32-byte seed for Ed25519.
    dkimpy_key: bytes

    @property
    def signature_algorithm(self) -> bytes:
        return SIGNATURE_ALGORITHM[self.algorithm]

    @classmethod
    def from_pem(
        cls, domain: str, selector: str, algorithm: DkimAlgorithm, private_pem: str
    ) -> SigningKey:
        loaded = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
        if algorithm is DkimAlgorithm.RSA:
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValidationError("DKIM key %(selector)s is not an RSA key", selector=selector)
            material = loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        else:
            if not isinstance(loaded, ed25519.Ed25519PrivateKey):
                raise ValidationError(
                    "DKIM key %(selector)s is not an Ed25519 key", selector=selector
                )
            seed = loaded.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            material = base64.b64encode(seed)
        return cls(domain, selector, algorithm, material)


# -- DNS records --------------------------------------------------------------------------------


def record_name(domain_ascii: str, selector: str) -> str:
    """`<selector>._domainkey.<domain>` (ASCII, no trailing dot)."""
    return f"{selector}._domainkey.{domain_ascii}"


def txt_value(key: DkimKey) -> str:
    return f"v=DKIM1; k={key.algorithm.value}; p={key.public_key}"


def split_txt(value: str) -> list[str]:
    """The value cut into DNS character-strings of at most 255 bytes (UTF-8 kept whole).

    A TXT record is a sequence of such strings; DKIM and SPF readers join them with
    nothing in between (RFC 6376 3.6.2.2, RFC 7208 3.3), so any cut point is right.
    """
    chunks: list[str] = []
    current = ""
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > MAX_TXT_STRING:
            chunks.append(current)
            current, size = "", 0
        current += char
        size += width
    if current or not chunks:
        chunks.append(current)
    return chunks


_ZONE_SAFE = set(string.printable) - set('"\\') - set("\t\n\r\x0b\x0c")


def _quote(chunk: str) -> str:
    out = []
    for byte in chunk.encode("utf-8"):
        char = chr(byte)
        if char in _ZONE_SAFE:
            out.append(char)
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def txt_rdata(value: str) -> str:
    """The TXT value in zone-file syntax: quoted character-strings of <= 255 bytes each."""
    return " ".join(_quote(chunk) for chunk in split_txt(value))


def zone_line(name: str, rdtype: str, rdata: str, ttl: int | None = None) -> str:
    """One resource record as a zone file line, with the name fully qualified."""
    ttl_part = f" {ttl}" if ttl is not None else ""
    return f"{name.rstrip('.')}.{ttl_part} IN {rdtype} {rdata}"


def txt_zone_line(name: str, value: str) -> str:
    """A TXT record as a zone file line; several strings go in parentheses, one record."""
    chunks = split_txt(value)
    rdata = " ".join(_quote(chunk) for chunk in chunks)
    if len(chunks) > 1:
        rdata = f"( {rdata} )"
    return zone_line(name, "TXT", rdata)


# -- service functions --------------------------------------------------------------------------


def _next_selector(session: Session, domain: Domain, algorithm: DkimAlgorithm) -> str:
    stem = f"{PREFIX[algorithm]}{utcnow().year}"
    taken = set(session.scalars(select(DkimKey.selector).where(DkimKey.domain_id == domain.id)))
    pattern = re.compile(rf"^{stem}([a-z]+)$")
    used = [m.group(1) for s in taken if (m := pattern.match(s))]
    index = max((_letters_to_index(u) for u in used), default=-1) + 1
    return stem + _index_to_letters(index)


def _letters_to_index(letters: str) -> int:
    value = 0
    for char in letters:
        value = value * 26 + (ord(char) - ord("a") + 1)
    return value - 1


def _index_to_letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa, ... (bijective base 26)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def parse_algorithm(text: str) -> DkimAlgorithm:
    try:
        return DkimAlgorithm(text.strip().lower())
    except ValueError:
        raise ValidationError(
            "unknown DKIM algorithm %(text)r: use rsa or ed25519", text=text
        ) from None


def generate(ctx: ServiceContext, domain_name: str, algorithm: DkimAlgorithm) -> DkimKey:
    """A new key for a hosted domain: active if it is the algorithm's first, else pending."""
    domain = domains.get(ctx.session, domain_name, for_update=True)
    has_active = ctx.session.scalar(
        select(DkimKey.id).where(
            DkimKey.domain_id == domain.id,
            DkimKey.algorithm == algorithm,
            DkimKey.status == DkimKeyStatus.ACTIVE,
        )
    )
    pair = new_key_pair(algorithm)
    now = utcnow()
    key = DkimKey(
        domain=domain,
        selector=_next_selector(ctx.session, domain, algorithm),
        algorithm=algorithm,
        status=DkimKeyStatus.PENDING if has_active else DkimKeyStatus.ACTIVE,
        private_key=pair.private_pem,
        public_key=pair.public_value,
        activated_at=None if has_active else now,
    )
    ctx.session.add(key)
    ctx.session.flush()
    ctx.audit(
        "dkim.generate",
        domain.name,
        selector=key.selector,
        algorithm=algorithm.value,
        status=key.status.value,
    )
    return key


def activate(ctx: ServiceContext, domain_name: str, selector: str) -> DkimKey:
    """Sign with a pending key from now on; the active key of its algorithm is retired."""
    domain = domains.get(ctx.session, domain_name, for_update=True)
    rows = list(
        ctx.session.scalars(select(DkimKey).where(DkimKey.domain_id == domain.id).with_for_update())
    )
    key = next((k for k in rows if k.selector == selector.strip().lower()), None)
    if key is None:
        raise NotFound(
            "domain %(domain)r has no DKIM key %(selector)r", domain=domain.name, selector=selector
        )
    if key.status is not DkimKeyStatus.PENDING:
        raise Conflict(
            "DKIM key %(selector)s is %(status)s, not pending",
            selector=key.selector,
            status=key.status.value,
        )
    now = utcnow()
    for other in rows:
        if other.algorithm is key.algorithm and other.status is DkimKeyStatus.ACTIVE:
            other.status = DkimKeyStatus.RETIRED
            other.retired_at = now
            other.private_key = ""
    key.status = DkimKeyStatus.ACTIVE
    key.activated_at = now
    ctx.audit("dkim.activate", domain.name, selector=key.selector)
    return key


def list_keys(
    session: Session, domain_name: str, *, include_retired: bool = False
) -> list[DkimKey]:
    """The keys of a hosted domain (NotFound if it is not hosted), oldest first."""
    domain = domains.get(session, domain_name)
    query = select(DkimKey).where(DkimKey.domain_id == domain.id)
    if not include_retired:
        query = query.where(DkimKey.status != DkimKeyStatus.RETIRED)
    return list(session.scalars(query.order_by(DkimKey.id)))


def signing_keys(session: Session, domain_name: str) -> list[SigningKey]:
    """The active keys of a domain, ready for `mailhost.dkim_sign.sign`; [] when none.

    `domain_name` may be in either form; an unknown or unhosted domain has no keys.
    """
    try:
        ascii_name = parse_domain(domain_name).ascii
    except ValidationError:
        return []
    rows = session.execute(
        select(DkimKey.selector, DkimKey.algorithm, DkimKey.private_key)
        .join(Domain, Domain.id == DkimKey.domain_id)
        .where(Domain.ascii_name == ascii_name, DkimKey.status == DkimKeyStatus.ACTIVE)
        .order_by(DkimKey.id)
    ).all()
    return [
        SigningKey.from_pem(ascii_name, selector, algorithm, pem)
        for selector, algorithm, pem in rows
    ]
