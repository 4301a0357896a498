"""Web admin pages for members, domains (DNS check, records to publish, DKIM, filters) and
aliases: every route, the role boundaries, CSRF, refused input and the audit trail.

DNS goes to a real DNS server on 127.0.0.1 (tests/dns_server.py); nothing leaves the host.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator

import dns.rdatatype
import dns.zone
import pytest
from flask import Flask
from web import Browser, Unit, audit, messages
from werkzeug.test import TestResponse

from provisioning.dnscheck import ExpectedDkim
from provisioning.dnsrecords import records_to_publish
from provisioning.models import AuditEvent, DkimKeyStatus, MemberStatus
from provisioning.services import aliases, dkim, domains, members
from provisioning.settings import Settings

from dns_server import DnsServer

pytest_plugins = ["web"]

HOST = "mail.association.test"
IP = "192.0.2.10"


@pytest.fixture(scope="module")
def dns_zone() -> Iterator[DnsServer]:
    records = {HOST: [("A", IP)], "10.2.0.192.in-addr.arpa": [("PTR", f"{HOST}.")]}
    server = DnsServer(records, drop=["slow.example"]).start()
    yield server
    server.stop()


@pytest.fixture
def zone(dns_zone: DnsServer) -> Iterator[DnsServer]:
    """The test DNS server, with whatever a test publishes forgotten afterwards."""
    saved = {name: list(records) for name, records in dns_zone.records.items()}
    yield dns_zone
    dns_zone.records.clear()
    dns_zone.records.update(saved)


@pytest.fixture
def env(env: dict[str, str], dns_zone: DnsServer) -> dict[str, str]:
    """Every test here resolves through the local test server only."""
    return {
        **env,
        "MUNINET_DNS__NAMESERVERS": '["127.0.0.1"]',
        "MUNINET_DNS__PORT": str(dns_zone.port),
        "MUNINET_DNS__TIMEOUT": "2s",
        "MUNINET_ASSOCIATION__HOSTNAME": HOST,
    }


def text(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(response: TestResponse) -> list[str]:
    return [html.unescape(m) for m in messages(response)]


def form_error(response: TestResponse) -> str:
    found = re.findall(r'<p class="flash error">([^<]*)</p>', text(response))
    assert found, text(response)[:2000]
    return found[0]


def by_admin(unit: Unit, action: str) -> list[AuditEvent]:
    """The audit events of a kind written through the web (the fixtures' setup is "cli")."""
    return [e for e in audit(unit, action) if e.actor_kind == "admin"]


def logged_in(app: Flask, user: str) -> Browser:
    browser = Browser(app)
    assert browser.login(user).status_code == 302
    return browser


def post(browser: Browser, action: str, data: dict[str, str]) -> TestResponse:
    """A POST with a valid token of this session (taken from the dashboard)."""
    return browser.post(action, {"csrf_token": browser.token("/"), **data})


# -- routes and roles -------------------------------------------------------------------------

GET_ROUTES = [
    "/members/new",
    "/members/alfa/edit",
    "/domains",
    "/domains/new",
    "/domains/alfa.example",
    "/domains/alfa.example/check",
    "/aliases",
    "/aliases/new",
    "/aliases/info@alfa.example",
]
POST_ROUTES = [
    "/members/new",
    "/members/alfa/edit",
    "/members/alfa/status",
    "/domains/new",
    "/domains/alfa.example/dkim",
    "/domains/alfa.example/dkim/m2026a/activate",
    "/domains/alfa.example/filters",
    "/aliases/new",
    "/aliases/info@alfa.example",
    "/aliases/info@alfa.example/delete",
]


def test_every_route_needs_a_login(browser: Browser, unit: Unit) -> None:
    with unit() as ctx:
        aliases.create(ctx, "info@alfa.example", ["biuro@alfa.example"])
    for path in GET_ROUTES:
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next="), path
    token = browser.token("/login")
    for path in POST_ROUTES:
        response = browser.post(path, {"csrf_token": token})
        assert response.status_code == 302 and response.location.startswith("/login"), path


def test_superadmin_reaches_every_page(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        aliases.create(ctx, "info@alfa.example", ["biuro@alfa.example"])
    root = logged_in(app, "root")
    for path in GET_ROUTES:
        assert root.get(path).status_code == 200, path
    nav = text(root.get("/"))
    assert 'href="/domains"' in nav and 'href="/aliases"' in nav
    assert 'href="/members/new"' in text(root.get("/members"))


def test_member_admin_gets_404_for_the_other_member(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        aliases.create(ctx, "info@beta.example", ["biuro@beta.example"])
        key = dkim.generate(ctx, "beta.example", dkim.parse_algorithm("rsa"))
        dkim.generate(ctx, "beta.example", dkim.parse_algorithm("rsa"))  # pending
    alfa = logged_in(app, "admin-alfa")
    for path in [
        "/members/new",
        "/members/beta/edit",
        "/domains/new",
        "/domains/beta.example",
        "/domains/beta.example/check",
        "/domains/no-such.example",
        "/aliases/info@beta.example",
        "/aliases/nobody@alfa.example",
    ]:
        assert alfa.get(path).status_code == 404, path
    posts: list[tuple[str, dict[str, str]]] = [
        ("/members/new", {"slug": "gamma", "name": "Gamma"}),
        ("/members/beta/edit", {"name": "Stolen", "contact_name": "x", "kind": "school"}),
        ("/members/beta/status", {"status": "suspended"}),
        ("/members/alfa/status", {"status": "suspended"}),
        ("/domains/new", {"name": "gamma.example", "member": "alfa"}),
        ("/domains/beta.example/dkim", {"algorithm": "rsa"}),
        ("/domains/beta.example/dkim/m2026b/activate", {}),
        ("/domains/beta.example/filters", {"spam_reject_score": "1"}),
        ("/aliases/info@beta.example", {"destinations": "thief@example.org"}),
        ("/aliases/info@beta.example/delete", {}),
    ]
    for path, data in posts:
        assert post(alfa, path, data).status_code == 404, path
    listing = text(alfa.get("/domains"))
    assert "alfa.example" in listing and "beta.example" not in listing
    assert "Add a domain" not in listing
    assert "info@beta.example" not in text(alfa.get("/aliases"))
    with unit() as ctx:
        assert members.get(ctx.session, "beta").name == "Община Бета"
        assert members.get(ctx.session, "alfa").status is MemberStatus.ACTIVE
        assert [m.slug for m in members.list_members(ctx.session)] == ["alfa", "beta"]
        assert [d.name for d in domains.list_domains(ctx.session)] == [
            "alfa.example",
            "beta.example",
        ]
        keys = dkim.list_keys(ctx.session, "beta.example")
        assert [(k.selector, k.status) for k in keys] == [
            (key.selector, DkimKeyStatus.ACTIVE),
            (keys[1].selector, DkimKeyStatus.PENDING),
        ]
        assert domains.get(ctx.session, "beta.example").spam_reject_score is None
        assert [d.address for d in aliases.get(ctx.session, "info@beta.example").destinations] == [
            "biuro@beta.example"
        ]


def test_csrf_is_enforced_on_every_form(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        aliases.create(ctx, "info@alfa.example", ["biuro@alfa.example"])
    root = logged_in(app, "root")
    data = {
        "slug": "gamma",
        "name": "gamma.example",
        "source": "x@alfa.example",
        "destinations": "biuro@alfa.example",
        "status": "suspended",
        "algorithm": "rsa",
        "spam_reject_score": "9",
    }
    for path in POST_ROUTES:
        assert root.post(path, data).status_code == 400, path
        assert root.post(path, {**data, "csrf_token": "forged"}).status_code == 400, path
    with unit() as ctx:
        assert len(members.list_members(ctx.session)) == 2
        assert len(domains.list_domains(ctx.session)) == 2
        assert members.get(ctx.session, "alfa").status is MemberStatus.ACTIVE
        assert dkim.list_keys(ctx.session, "alfa.example") == []
        assert domains.get(ctx.session, "alfa.example").spam_reject_score is None
        assert len(aliases.list_aliases(ctx.session)) == 1


# -- members ----------------------------------------------------------------------------------


def test_superadmin_creates_and_edits_a_member(app: Flask, unit: Unit) -> None:
    root = logged_in(app, "root")
    form = {
        "slug": "gamma",
        "name": "Gmina Gamma",
        "kind": "municipality",
        "contact_name": "Jan Kowalski",
        "contact_email": "jan@gamma.example",
        "contract_start": "2026-01-01",
        "max_mailboxes": "5",
        "mail_quota": "10G",
        "max_lines": "",
    }
    response = root.submit("/members/new", "/members/new", form)
    assert response.status_code == 302 and response.location == "/members/gamma"
    page = root.get(response.location)
    assert flashes(page) == ["Member Gmina Gamma created."]
    assert "0 / 5" in text(page) and "10 GiB" in text(page) and "Jan Kowalski" in text(page)
    with unit() as ctx:
        gamma = members.get(ctx.session, "gamma")
        assert gamma.mail_quota_bytes == 10 * 2**30
        assert gamma.max_lines == ctx.settings.defaults.member_max_lines  # empty: default
    created = by_admin(unit, "member.create")
    assert [(e.actor_name, e.source_address, e.target) for e in created] == [
        ("root", "192.0.2.10", "gamma")
    ]

    edit = root.get("/members/gamma/edit")
    assert 'value="10G"' in text(edit) and 'value="Gmina Gamma"' in text(edit)
    saved = root.submit(
        "/members/gamma/edit",
        "/members/gamma/edit",
        {**form, "name": "Gmina Gamma-Wielka", "contact_phone": "+48 1", "max_mailboxes": "7"},
    )
    assert saved.status_code == 302
    with unit() as ctx:
        gamma = members.get(ctx.session, "gamma")
        assert (gamma.name, gamma.contact_phone, gamma.max_mailboxes) == (
            "Gmina Gamma-Wielka",
            "+48 1",
            7,
        )
    [details] = by_admin(unit, "member.details")
    assert details.details == {"name": "Gmina Gamma-Wielka", "contact_phone": "+48 1"}
    [package] = by_admin(unit, "member.update")
    assert package.details == {"max_mailboxes": 7} and package.actor_name == "root"


@pytest.mark.parametrize(
    ("field", "value", "status", "message"),
    [
        ("slug", "Not A Slug", 422, "invalid member slug"),
        ("slug", "alfa", 409, "member 'alfa' already exists"),
        ("name", " ", 422, "member name must not be empty"),
        ("max_mailboxes", "lots", 422, "Mailboxes allowed must be a whole number."),
        ("mail_quota", "huge", 422, "not a size"),
        ("contract_end", "31.12.2026", 422, "Dates must look like 2026-07-31."),
        ("contact_email", "not an address", 422, "invalid address"),
    ],
)
def test_bad_member_input_is_a_form_error(
    app: Flask, unit: Unit, field: str, value: str, status: int, message: str
) -> None:
    root = logged_in(app, "root")
    form = {"slug": "gamma", "name": "Gmina Gamma", "kind": "school", field: value}
    response = root.submit("/members/new", "/members/new", form)
    assert response.status_code == status
    assert message in form_error(response)
    assert f'value="{value.strip()}"' in text(response)  # the form keeps what was typed
    with unit() as ctx:
        assert [m.slug for m in members.list_members(ctx.session)] == ["alfa", "beta"]
    assert by_admin(unit, "member.create") == []


def test_package_cannot_go_below_use(app: Flask, unit: Unit) -> None:
    root = logged_in(app, "root")
    current = {"name": "Gmina Alfa", "kind": "municipality", "max_lines": "0", "mail_quota": "3G"}
    refused = root.submit(
        "/members/alfa/edit", "/members/alfa/edit", {**current, "max_mailboxes": "0"}
    )
    assert refused.status_code == 409
    assert "cannot lower its limit to 0" in form_error(refused)
    bad = root.submit("/members/alfa/edit", "/members/alfa/edit", {**current, "name": ""})
    assert bad.status_code == 422
    with unit() as ctx:
        alfa = members.get(ctx.session, "alfa")
        assert (alfa.name, alfa.max_mailboxes) == ("Gmina Alfa", 3)
    assert by_admin(unit, "member.update") == [] and by_admin(unit, "member.details") == []


def test_member_admin_edits_only_its_contact(app: Flask, unit: Unit) -> None:
    alfa = logged_in(app, "admin-alfa")
    page = text(alfa.get("/members/alfa"))
    assert "Edit contact" in page and "Suspend" not in page and "Add a domain" not in page
    form = text(alfa.get("/members/alfa/edit"))
    assert 'name="contact_email"' in form and 'name="max_mailboxes"' not in form
    response = alfa.submit(
        "/members/alfa/edit",
        "/members/alfa/edit",
        {
            "contact_email": "sekretariat@alfa.example",
            "name": "Renamed",
            "max_mailboxes": "999",
            "mail_quota": "1T",
        },
    )
    assert response.status_code == 302
    with unit() as ctx:
        member = members.get(ctx.session, "alfa")
        assert member.contact_email == "sekretariat@alfa.example"
        assert (member.name, member.max_mailboxes) == ("Gmina Alfa", 3)
    [event] = by_admin(unit, "member.details")
    assert (event.actor_name, event.details) == (
        "admin-alfa",
        {"contact_email": "sekretariat@alfa.example"},
    )
    assert by_admin(unit, "member.update") == []


def test_suspend_and_activate_a_member(app: Flask, unit: Unit) -> None:
    root = logged_in(app, "root")
    page = text(root.get("/members/alfa"))
    assert "Quota used" in page and "1 / 3" in page
    response = root.submit(
        "/members/alfa", "/members/alfa/status", {"status": "suspended", "reason": "unpaid"}
    )
    assert response.status_code == 302
    page = root.get("/members/alfa")
    assert flashes(page) == ["Status of Gmina Alfa: Suspended."]
    assert "Suspended (unpaid)" in text(page)
    # A suspended member gets no new aliases (the service refuses, the form says why).
    alfa = logged_in(app, "admin-alfa")
    refused = alfa.submit(
        "/aliases/new",
        "/aliases/new",
        {"source": "x@alfa.example", "destinations": "biuro@alfa.example"},
    )
    assert refused.status_code == 403 and "suspended" in form_error(refused)
    again = root.submit("/members/alfa", "/members/alfa/status", {"status": "suspended"})
    assert flashes(root.get(again.location)) == ["member 'alfa' is already suspended"]
    assert root.submit("/members/alfa", "/members/alfa/status", {"status": "x"}).status_code == 400
    root.submit("/members/alfa", "/members/alfa/status", {"status": "active"})
    with unit() as ctx:
        assert members.get(ctx.session, "alfa").status is MemberStatus.ACTIVE
    events = by_admin(unit, "member.status")
    assert [(e.details["status"], e.details["previous"]) for e in events] == [
        ("suspended", "active"),
        ("active", "suspended"),
    ]


# -- domains ----------------------------------------------------------------------------------


def test_superadmin_adds_a_domain_with_its_records(app: Flask, unit: Unit) -> None:
    root = logged_in(app, "root")
    form = {"name": "Gmina-Łąka.example", "member": "alfa", "dkim": "on"}
    response = root.submit("/domains/new", "/domains/new", form)
    assert response.status_code == 302
    ascii_name = "xn--gmina-ka-n8a32d.example"
    assert response.location == f"/domains/{ascii_name}"
    page = text(root.get(response.location))
    with unit() as ctx:
        [key] = dkim.list_keys(ctx.session, ascii_name)
        assert key.status is DkimKeyStatus.ACTIVE
        value = dkim.txt_value(key)
    for line in [
        f"{ascii_name}. IN MX 10 {HOST}.",
        f'{ascii_name}. IN TXT "v=spf1 a:{HOST} -all"',
        f'_dmarc.{ascii_name}. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{ascii_name}"',
        f"autoconfig.{ascii_name}. IN CNAME {HOST}.",
        f"_imaps._tcp.{ascii_name}. IN SRV 0 1 2993 {HOST}.",
        f"_submission._tcp.{ascii_name}. IN SRV 0 1 2587 {HOST}.",
    ]:
        assert line in page, line
    assert dkim.txt_zone_line(f"{key.selector}._domainkey.{ascii_name}", value) in page
    assert "Gmina Alfa" in page and "gmina-łąka.example" in page
    events = by_admin(unit, "domain.create") + by_admin(unit, "dkim.generate")
    assert {(e.actor_name, e.target) for e in events} == {("root", "gmina-łąka.example")}
    # The member admin sees its new domain and its records too.
    alfa = logged_in(app, "admin-alfa")
    assert ascii_name in text(alfa.get("/domains"))
    assert alfa.get(f"/domains/{ascii_name}").status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"name": "alfa.example"}, 409, "is already hosted"),
        ({"name": "not a domain!"}, 422, "domain"),
        ({"name": "new.example", "member": "nobody"}, 422, "no member 'nobody'"),
    ],
)
def test_bad_domain_input_is_a_form_error(
    app: Flask, unit: Unit, form: dict[str, str], status: int, message: str
) -> None:
    root = logged_in(app, "root")
    response = root.submit("/domains/new", "/domains/new", {"dkim": "on", **form})
    assert response.status_code == status
    assert message in form_error(response)
    with unit() as ctx:
        assert len(domains.list_domains(ctx.session)) == 2
    assert by_admin(unit, "domain.create") == []
    assert by_admin(unit, "dkim.generate") == []


def test_dkim_keys_are_made_and_rotated(app: Flask, unit: Unit) -> None:
    alfa = logged_in(app, "admin-alfa")
    page = text(alfa.get("/domains/alfa.example"))
    assert "The domain has no DKIM key" in page
    first = alfa.submit("/domains/alfa.example", "/domains/alfa.example/dkim", {"algorithm": "rsa"})
    assert first.status_code == 302
    with unit() as ctx:
        [old] = dkim.list_keys(ctx.session, "alfa.example")
    assert flashes(alfa.get(first.location)) == [f"DKIM key {old.selector} made and active."]
    second = alfa.submit(
        "/domains/alfa.example", "/domains/alfa.example/dkim", {"algorithm": "rsa"}
    )
    with unit() as ctx:
        new = dkim.list_keys(ctx.session, "alfa.example")[1]
    assert new.status is DkimKeyStatus.PENDING
    page = alfa.get(second.location)
    assert flashes(page) == [
        f"DKIM key {new.selector} made. Publish its record, wait a day, then activate it."
    ]
    # Both records are to be published while the new key waits.
    assert f"{old.selector}._domainkey.alfa.example." in text(page)
    assert f"{new.selector}._domainkey.alfa.example." in text(page)
    bad = alfa.submit("/domains/alfa.example", "/domains/alfa.example/dkim", {"algorithm": "dsa"})
    assert bad.status_code == 422 and "unknown DKIM algorithm" in form_error(bad)
    activate = f"/domains/alfa.example/dkim/{new.selector}/activate"
    assert alfa.submit("/domains/alfa.example", activate, {}).status_code == 302
    again = alfa.submit("/domains/alfa.example", activate, {})
    assert again.status_code == 409 and "not pending" in form_error(again)
    unknown = alfa.submit("/domains/alfa.example", "/domains/alfa.example/dkim/zz/activate", {})
    assert unknown.status_code == 422
    with unit() as ctx:
        keys = dkim.list_keys(ctx.session, "alfa.example", include_retired=True)
        assert [(k.selector, k.status) for k in keys] == [
            (old.selector, DkimKeyStatus.RETIRED),
            (new.selector, DkimKeyStatus.ACTIVE),
        ]
    events = by_admin(unit, "dkim.generate") + by_admin(unit, "dkim.activate")
    assert len(events) == 3 and {e.actor_name for e in events} == {"admin-alfa"}


def test_domain_filter_settings(app: Flask, unit: Unit) -> None:
    alfa = logged_in(app, "admin-alfa")
    url = "/domains/alfa.example/filters"
    saved = alfa.submit(
        "/domains/alfa.example",
        url,
        {"spam_add_header_score": "4,5", "spam_reject_score": "12", "virus_action": "quarantine"},
    )
    assert saved.status_code == 302
    assert flashes(alfa.get(saved.location)) == ["Filter settings saved."]
    for form, message in [
        ({"spam_reject_score": "lots"}, "Spam scores must be numbers, e.g. 6 or 7.5."),
        ({"spam_add_header_score": "20", "spam_reject_score": "10"}, "is above the reject score"),
        ({"spam_reject_score": "-1"}, "must be from 0 to"),
        ({"virus_action": "ignore"}, "the virus action must be reject or quarantine"),
    ]:
        refused = alfa.submit("/domains/alfa.example", url, form)
        assert refused.status_code == 422, form
        assert message in form_error(refused)
    with unit() as ctx:
        domain = domains.get(ctx.session, "alfa.example")
        assert (domain.spam_add_header_score, domain.spam_reject_score) == (4.5, 12.0)
        assert domain.virus_action is not None and domain.virus_action.value == "quarantine"
    [event] = by_admin(unit, "domain.filters")
    assert event.actor_name == "admin-alfa" and event.details["spam_reject_score"] == 12.0
    # Empty fields: back to the server-wide values.
    alfa.submit("/domains/alfa.example", url, {})
    with unit() as ctx:
        domain = domains.get(ctx.session, "alfa.example")
        assert (domain.spam_add_header_score, domain.virus_action) == (None, None)


def _serve(dns_zone: DnsServer, lines: list[str]) -> None:
    """Serve exactly what these zone-file lines say (as a DNS admin would publish them)."""
    zone = dns.zone.from_text(
        "@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ IN NS ns.\n" + "\n".join(lines) + "\n",
        origin=".",
        relativize=False,
    )
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS):
                continue
            key = name.to_text().lower()
            dns_zone.records.setdefault(key, [])
            dns_zone.records[key] += [
                (dns.rdatatype.to_text(rdataset.rdtype), r.to_text()) for r in rdataset
            ]


def _check_statuses(page: str) -> dict[str, str]:
    rows = re.findall(
        r"<td>([^<]+)<br><small>[^<]*</small></td>\s*<td><span class=\"check (\w+)\"", page
    )
    return {check.strip(): status for check, status in rows}


def test_dns_check_on_demand_and_publishing_the_records_fixes_it(
    app: Flask, unit: Unit, settings: Settings, zone: DnsServer
) -> None:
    with unit() as ctx:
        domains.create(ctx, "fresh.example", member_slug="alfa")
        key = dkim.generate(ctx, "fresh.example", dkim.parse_algorithm("ed25519"))
        expected = [ExpectedDkim(key.selector, dkim.txt_value(key), "active")]
    alfa = logged_in(app, "admin-alfa")
    plain = text(alfa.get("/domains/fresh.example"))
    assert "Check DNS now" in plain and 'class="check ' not in plain  # no lookup by itself
    before = alfa.get("/domains/fresh.example/check")
    assert before.status_code == 200
    statuses = _check_statuses(text(before))
    assert statuses["MX"] == statuses["SPF"] == statuses["DMARC"] == "missing"
    assert statuses[f"DKIM {key.selector}"] == "missing"
    assert "Some records are missing or wrong, or could not be looked up." in text(before)

    _serve(zone, [r.line for r in records_to_publish(settings, "fresh.example", expected)])
    after = alfa.get("/domains/fresh.example/check")
    statuses = _check_statuses(text(after))
    for check in ["server address", "MX", "SPF", f"DKIM {key.selector}", "DMARC", "TLS-RPT"]:
        assert statuses[check] == "ok", (check, statuses)
    assert statuses[f"PTR {IP}"] == "ok"


def test_a_slow_dns_check_does_not_hold_the_page(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        domains.create(ctx, "slow.example", member_slug="alfa")
    app.config["DNS_CHECK_SECONDS"] = 0.5
    alfa = logged_in(app, "admin-alfa")
    started = time.monotonic()
    response = alfa.get("/domains/slow.example/check")
    assert time.monotonic() - started < 1.8  # the dropped queries would take 2 s each
    assert response.status_code == 200
    assert "The DNS check did not finish within 0.5 seconds." in form_error(response)
    assert "Records to publish" in text(response)


# -- aliases ----------------------------------------------------------------------------------


def test_member_admin_manages_its_aliases(app: Flask, unit: Unit) -> None:
    alfa = logged_in(app, "admin-alfa")
    response = alfa.submit(
        "/aliases/new",
        "/aliases/new",
        {"source": "Kontakt@alfa.example", "destinations": "biuro@alfa.example\nwojt@example.org"},
    )
    assert response.status_code == 302 and response.location == "/aliases/kontakt@alfa.example"
    assert flashes(alfa.get(response.location)) == ["Alias kontakt@alfa.example created."]
    listing = text(alfa.get("/aliases"))
    assert "kontakt@alfa.example" in listing and "wojt@example.org" in listing

    edit = "/aliases/kontakt@alfa.example"
    same = alfa.submit(edit, edit, {"destinations": "biuro@alfa.example, wojt@example.org"})
    assert flashes(alfa.get(same.location)) == ["Nothing changed."]
    saved = alfa.submit(edit, edit, {"destinations": "sekretarz@example.org"})
    assert saved.status_code == 302
    assert flashes(alfa.get(saved.location)) == ["Alias saved."]
    refused = alfa.submit(edit, edit, {"destinations": "ghost@alfa.example"})
    assert refused.status_code == 422
    assert "does not exist" in form_error(refused)
    assert "ghost@alfa.example" in text(refused)  # kept in the form
    empty = alfa.submit(edit, edit, {"destinations": ""})
    assert empty.status_code == 422 and "at least one destination" in form_error(empty)
    with unit() as ctx:
        alias = aliases.get(ctx.session, "kontakt@alfa.example")
        assert [d.address for d in alias.destinations] == ["sekretarz@example.org"]

    gone = alfa.submit(edit, f"{edit}/delete", {})
    assert gone.status_code == 302 and gone.location == "/aliases"
    assert flashes(alfa.get("/aliases")) == ["Alias kontakt@alfa.example removed."]
    assert alfa.get(edit).status_code == 404
    created = by_admin(unit, "alias.create")
    removed = by_admin(unit, "alias.remove")
    assert len(created) == 2 and len(removed) == 2  # create, replace (remove + create), remove
    assert {e.actor_name for e in created + removed} == {"admin-alfa"}


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"source": "x@beta.example"}, 403, "belongs to member 'beta'"),
        ({"source": "biuro@alfa.example"}, 409, "is already a mailbox"),
        ({"source": "x@alfa.example", "destinations": "x@alfa.example"}, 422, "itself"),
        ({"source": "x@alfa.example", "destinations": "not an address"}, 422, "address"),
        ({"source": "x@nowhere.example"}, 422, "not hosted here"),
    ],
)
def test_bad_alias_input_is_a_form_error(
    app: Flask, unit: Unit, form: dict[str, str], status: int, message: str
) -> None:
    alfa = logged_in(app, "admin-alfa")
    data = {"destinations": "biuro@alfa.example", "member": "beta", **form}
    response = alfa.submit("/aliases/new", "/aliases/new", data)
    assert response.status_code == status
    assert message in form_error(response)
    with unit() as ctx:
        assert aliases.list_aliases(ctx.session) == []
    assert by_admin(unit, "alias.create") == []


def test_superadmin_names_the_member_of_a_shared_domain_alias(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        domains.create(ctx, "info.association.test")
    root = logged_in(app, "root")
    data = {
        "source": "beta.sekretariat@info.association.test",
        "destinations": "biuro@beta.example",
    }
    missing = root.submit("/aliases/new", "/aliases/new", data)
    assert missing.status_code == 422 and "name the member" in form_error(missing)
    created = root.submit("/aliases/new", "/aliases/new", {**data, "member": "beta"})
    assert created.status_code == 302
    beta = logged_in(app, "admin-beta")
    assert "beta.sekretariat@info.association.test" in text(beta.get("/aliases"))
    # The shared domain itself is the superadmin's.
    assert beta.get("/domains/info.association.test").status_code == 404
    assert "info.association.test" not in text(beta.get("/domains"))


def test_pages_are_translated(app: Flask) -> None:
    root = logged_in(app, "root")
    root.submit("/", "/language", {"lang": "pl"})
    assert "Rekordy do opublikowania" in text(root.get("/domains/alfa.example"))
    assert "Nowy alias" in text(root.get("/aliases"))
    root.submit("/", "/language", {"lang": "bg"})
    assert "Домейни" in text(root.get("/domains"))
    assert "Нов член" in text(root.get("/members"))


def test_alias_list_by_member(app: Flask, unit: Unit) -> None:
    with unit() as ctx:
        aliases.create(ctx, "info@alfa.example", ["biuro@alfa.example"])
        aliases.create(ctx, "info@beta.example", ["biuro@beta.example"])
    root = logged_in(app, "root")
    assert 'href="/aliases?member=beta"' in text(root.get("/members/beta"))
    both = text(root.get("/aliases"))
    assert "info@alfa.example" in both and "info@beta.example" in both
    only = text(root.get("/aliases?member=beta"))
    assert "info@beta.example" in only and "info@alfa.example" not in only
    assert root.get("/aliases?member=nobody").status_code == 404
    alfa = logged_in(app, "admin-alfa")
    own = text(alfa.get("/aliases?member=beta"))  # the scope wins over the parameter
    assert "info@alfa.example" in own and "info@beta.example" not in own
