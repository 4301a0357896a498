"""Password hashes: every scheme muninet writes verifies with Dovecot's own `doveadm pw -t`."""

from __future__ import annotations

import subprocess

import pytest

from provisioning.errors import ValidationError
from provisioning.passwords import PasswordHasher, normalize_imported_hash
from provisioning.settings import load_settings

from conftest import FAST_HASHING, require_tool

PASSWORD = "Zażółć gęślą jaźń 2026"


def hasher(scheme: str, **env: str) -> PasswordHasher:
    return PasswordHasher(
        load_settings({**FAST_HASHING, "MUNINET_PASSWORDS__SCHEME": scheme, **env}).passwords
    )


def doveadm_verifies(stored: str, password: str) -> bool:
    doveadm = require_tool("doveadm")
    result = subprocess.run(
        [doveadm, "pw", "-t", stored, "-p", password], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and "(verified)" in result.stdout


@pytest.mark.parametrize(
    ("scheme", "prefix"),
    [
        ("argon2id", "{ARGON2ID}$argon2id$"),
        ("bcrypt", "{BLF-CRYPT}$2b$"),
        ("sha512-crypt", "{SHA512-CRYPT}$6$"),
    ],
)
def test_every_scheme_is_dovecot_readable(scheme: str, prefix: str) -> None:
    stored = hasher(scheme).hash(PASSWORD)
    assert stored.startswith(prefix)
    assert doveadm_verifies(stored, PASSWORD)
    assert not doveadm_verifies(stored, PASSWORD + "x")


def test_production_argon2_cost_is_dovecot_readable() -> None:
    production = PasswordHasher(load_settings({}).passwords)
    stored = production.hash(PASSWORD)
    assert "$m=65536,t=3,p=1$" in stored
    assert doveadm_verifies(stored, PASSWORD)


@pytest.mark.parametrize("old", ["bcrypt", "sha512-crypt"])
def test_old_scheme_is_rehashed_on_verify(old: str) -> None:
    stored = hasher(old).hash(PASSWORD)
    current = hasher("argon2id")
    result = current.verify(PASSWORD, stored)
    assert result.ok
    assert result.new_hash is not None
    assert result.new_hash.startswith("{ARGON2ID}")
    assert doveadm_verifies(result.new_hash, PASSWORD)
    assert current.verify(PASSWORD, result.new_hash).new_hash is None


def test_wrong_password_and_garbage_hash_fail() -> None:
    h = hasher("argon2id")
    stored = h.hash(PASSWORD)
    assert not h.verify("wrong password", stored).ok
    assert not h.verify(PASSWORD, "{ARGON2ID}garbage").ok
    assert not h.verify(PASSWORD, PASSWORD).ok  # a plaintext "hash" never matches


def test_imported_hashes_with_and_without_prefix() -> None:
    bare = hasher("sha512-crypt").hash(PASSWORD).removeprefix("{SHA512-CRYPT}")
    assert normalize_imported_hash(bare) == "{SHA512-CRYPT}" + bare
    blf = hasher("bcrypt").hash(PASSWORD)
    assert normalize_imported_hash(blf) == blf
    y_variant = "{BLF-CRYPT}" + blf.removeprefix("{BLF-CRYPT}").replace("$2b$", "$2y$", 1)
    assert doveadm_verifies(normalize_imported_hash(y_variant), PASSWORD)


@pytest.mark.parametrize(
    "text",
    [
        PASSWORD,
        "{PLAIN}secret",
        "{MD5-CRYPT}$1$abc$def",
        "$1$abcdefgh$abcdefghijklmnopqrstuv",
        "{SHA512-CRYPT}$6$saltonly",
        "{ARGON2ID}$argon2id$v=19$broken",
        "",
    ],
)
def test_imports_refuse_anything_but_accepted_hashes(text: str) -> None:
    with pytest.raises(ValidationError):
        normalize_imported_hash(text)


@pytest.mark.parametrize(
    "password", ["short", "with\nnewline", "tab\there-long-enough", "x" * 1025]
)
def test_password_policy(password: str) -> None:
    with pytest.raises(ValidationError):
        hasher("argon2id").hash(password)
