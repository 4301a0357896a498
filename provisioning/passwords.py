"""Password hashes that Dovecot reads: {ARGON2ID}, {BLF-CRYPT} and {SHA512-CRYPT}.

muninet stores each hash with Dovecot's `{SCHEME}` prefix, so Dovecot's SQL
passdb reads the column as it is. passlib (the maintained `libpass` fork) does
the hashing; this module only maps between passlib's names and Dovecot's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache

from passlib.context import CryptContext

from provisioning.errors import ValidationError
from provisioning.settings import PasswordSettings

# passlib scheme -> Dovecot scheme prefix
_DOVECOT = {"argon2": "ARGON2ID", "bcrypt": "BLF-CRYPT", "sha512_crypt": "SHA512-CRYPT"}
_PASSLIB = {dovecot: passlib for passlib, dovecot in _DOVECOT.items()}
_SETTING = {"argon2id": "argon2", "bcrypt": "bcrypt", "sha512-crypt": "sha512_crypt"}
# Bare hash prefixes accepted on import, mapped to the passlib scheme.
_BARE = {"$argon2id$": "argon2", "$2b$": "bcrypt", "$2y$": "bcrypt", "$6$": "sha512_crypt"}
_GENERATED_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MAX_PASSWORD_BYTES = 1024


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a password: `new_hash` is set when the stored one is outdated."""

    ok: bool
    new_hash: str | None = None


class PasswordHasher:
    """Hashes and verifies passwords with the configured scheme and costs."""

    def __init__(self, settings: PasswordSettings) -> None:
        self.settings = settings
        default = _SETTING[settings.scheme]
        self.context = CryptContext(
            schemes=["argon2", "bcrypt", "sha512_crypt"],
            default=default,
            deprecated=[s for s in _DOVECOT if s != default],
            argon2__type="ID",
            argon2__time_cost=settings.argon2_time_cost,
            argon2__memory_cost=settings.argon2_memory_kib,
            argon2__parallelism=settings.argon2_parallelism,
            bcrypt__ident="2b",
            bcrypt__default_rounds=settings.bcrypt_rounds,
            sha512_crypt__default_rounds=settings.sha512_rounds,
        )

    def check_policy(self, password: str) -> None:
        """Refuse passwords that are too short, too long or hold control characters."""
        if len(password) < self.settings.min_length:
            raise ValidationError(
                "password too short: at least %(min_length)s characters",
                min_length=self.settings.min_length,
            )
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            raise ValidationError(
                "password too long: at most %(max)s bytes", max=MAX_PASSWORD_BYTES
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
            raise ValidationError("password must not contain control characters or line breaks")
        if self.settings.scheme == "bcrypt" and len(password.encode()) > 72:
            raise ValidationError("password too long for bcrypt: at most 72 bytes")

    def hash(self, password: str) -> str:
        """A Dovecot-readable hash of a password that passed the policy."""
        self.check_policy(password)
        hashed: str = self.context.hash(password)
        scheme = self.context.identify(hashed)
        return f"{{{_DOVECOT[scheme]}}}{hashed}"

    def verify(self, password: str, stored: str) -> Verification:
        """Check a password; on success with an outdated scheme or cost, also return a new hash."""
        scheme, _, raw = _split(stored)
        if scheme is None:
            return Verification(ok=False)
        try:
            ok, replacement = self.context.verify_and_update(password, raw)
        except ValueError:
            return Verification(ok=False)
        if not ok:
            return Verification(ok=False)
        if replacement is None:
            return Verification(ok=True)
        return Verification(
            ok=True, new_hash=f"{{{_DOVECOT[self.context.identify(replacement)]}}}{replacement}"
        )


def _split(stored: str) -> tuple[str | None, str, str]:
    """("argon2", "ARGON2ID", "$argon2id$...") from "{ARGON2ID}$argon2id$..."."""
    if not stored.startswith("{") or "}" not in stored:
        return None, "", stored
    prefix, _, raw = stored[1:].partition("}")
    return _PASSLIB.get(prefix.upper()), prefix.upper(), raw


@cache
def _identifier() -> CryptContext:
    return CryptContext(schemes=list(_DOVECOT))


def normalize_imported_hash(text: str) -> str:
    """Accept an imported hash in a scheme Dovecot and muninet share, with or without prefix.

    Anything that is not recognisably such a hash is refused: an import must never
    store a plaintext password, or a weak scheme, as if it were a hash.
    """
    text = text.strip()
    scheme, _, raw = _split(text)
    if scheme is None and not text.startswith("{"):
        scheme = next((s for p, s in _BARE.items() if text.startswith(p)), None)
        raw = text
    if scheme is None:
        raise ValidationError(
            "not an accepted password hash: use {ARGON2ID}, {BLF-CRYPT} or {SHA512-CRYPT}"
        )
    handler = _identifier().handler(scheme)
    if not handler.identify(raw):
        raise ValidationError("malformed %(scheme)s hash", scheme=_DOVECOT[scheme])
    try:
        parsed = handler.from_string(raw)
    except ValueError as exc:
        raise ValidationError(
            "malformed %(scheme)s hash: %(reason)s", scheme=_DOVECOT[scheme], reason=str(exc)
        ) from exc
    if not parsed.checksum:
        raise ValidationError("malformed %(scheme)s hash: no checksum", scheme=_DOVECOT[scheme])
    return f"{{{_DOVECOT[scheme]}}}{raw}"


def dovecot_scheme(stored: str) -> str:
    """The Dovecot scheme name of a stored hash, e.g. "ARGON2ID"."""
    return _split(stored)[1]


def generate_password(length: int = 16) -> str:
    """A random password without look-alike characters, for reading over the phone."""
    return "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(length))
