"""Domain names (IDN) and the hosted-address policy."""

from __future__ import annotations

import pytest

from provisioning.addresses import (
    address_key,
    check_local_part,
    parse_destination,
    parse_domain,
)
from provisioning.errors import ValidationError


def test_idn_domain_has_both_forms() -> None:
    domain = parse_domain("Община-Трън.БГ.")
    assert domain.name == "община-трън.бг"
    assert domain.ascii == "xn----7sbc2azacbvr9dr.xn--90ae"
    assert parse_domain(domain.ascii) == domain


def test_polish_idn_domain() -> None:
    domain = parse_domain("gmina-głusk.pl")
    assert domain.ascii.startswith("xn--gmina-gusk-")
    assert domain.name == "gmina-głusk.pl"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "localhost",
        "a..pl",
        "-a.pl",
        "a-.pl",
        "exa mple.pl",
        "a_b.pl",
        "1.2.3.4",
        "a" * 64 + ".pl",
        ("a" * 60 + ".") * 5 + "pl",
        "x@y.pl",
    ],
)
def test_invalid_domains_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_domain(text)


@pytest.mark.parametrize(
    ("local", "utf8", "expected"),
    [
        ("Jan.Kowalski", False, "jan.kowalski"),
        ("sekretariat_1", False, "sekretariat_1"),
        ("Иван", True, "иван"),
        ("zażółć", True, "zażółć"),
        ("a-b", False, "a-b"),
    ],
)
def test_hosted_local_parts(local: str, utf8: bool, expected: str) -> None:
    assert check_local_part(local, utf8_allowed=utf8, address=f"{local}@x.pl") == expected


@pytest.mark.parametrize(
    ("local", "utf8"),
    [
        ("иван", False),
        ("user%other", False),
        ("a+b", False),
        ("a!b", False),
        ("a/b", False),
        (".a", False),
        ("a.", False),
        ("a..b", False),
        ('"a"', False),
        ("a" * 65, False),
        ("ж" * 33, True),
        ("", False),
        ("a b", True),
        ("иван|x", True),
    ],
)
def test_hosted_local_parts_refused(local: str, utf8: bool) -> None:
    with pytest.raises(ValidationError):
        check_local_part(local, utf8_allowed=utf8, address=f"{local}@x.pl")


def test_key_is_case_insensitive_and_unicode_aware() -> None:
    assert address_key("ИВАН", "xn--90ae.xn--90ae") == address_key("иван", "XN--90AE.xn--90ae")


def test_destinations_external_and_unicode() -> None:
    assert parse_destination(" Jan.Nowak+tag@Example.COM ") == "Jan.Nowak+tag@example.com"
    assert parse_destination("кмет@община-трън.бг") == "кмет@община-трън.бг"


@pytest.mark.parametrize(
    "text", ["nobody", "a@b@c.pl", '"a b"@x.pl', "a@[127.0.0.1]", "a@localhost", "@x.pl"]
)
def test_bad_destinations_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_destination(text)
