"""The web admin's plans, subscriber lines, online sessions (Disconnect) and usage pages.

The Disconnect button is checked against a NAS played by pyrad in the test
(`FakeNas` from test_radius_enforce): the Disconnect-Request must arrive, signed with
the NAS's secret, naming the right User-Name and Acct-Session-Id.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from flask import Flask
from passlib.hash import sha512_crypt
from pyrad import packet
from sqlalchemy import select
from test_radius_enforce import SECRET, FakeNas
from web import Browser, Unit, audit, messages
from werkzeug.test import TestResponse

from provisioning.errors import NotFound
from provisioning.models import RadAcct, ServicePlan, Subscriber, SubscriberStatus
from provisioning.services import members, nas, plans, radius, subscribers

pytest_plugins = ["web"]

GIB = 1024**3
LINE_PASSWORD = "dial-up password 1"


@pytest.fixture
def fake_nas() -> Iterator[FakeNas]:
    nas_ = FakeNas()
    yield nas_
    nas_.stop()


@pytest.fixture
def lines(app: Flask, unit: Unit, fake_nas: FakeNas) -> Flask:
    """Two plans, the NAS played by the test, a line for each member and one spare for alfa."""
    with unit() as ctx:
        plans.create(ctx, "dsl-8m", download_bps=8_000_000, upload_bps=1_000_000)
        plans.create(
            ctx,
            "fair",
            kind="wireless",
            download_bps=20_000_000,
            upload_bps=2_000_000,
            data_cap_bytes=20 * GIB,
            cap_action="throttle",
            fair_use_download_bps=1_000_000,
            fair_use_upload_bps=256_000,
        )
        nas.create(ctx, "nas-a", "127.0.0.1", SECRET, vendor="mikrotik", coa_port=fake_nas.port)
        subscribers.create(ctx, "szkola.alfa", "alfa", "dsl-8m", LINE_PASSWORD)
        subscribers.create(ctx, "biblioteka.alfa", "alfa", "dsl-8m", LINE_PASSWORD)
        subscribers.create(ctx, "urzad.beta", "beta", "fair", LINE_PASSWORD)
    return app


def logged_in(app: Flask, user: str) -> Browser:
    browser = Browser(app)
    assert browser.login(user).status_code == 302
    return browser


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def add_session(
    unit: Unit,
    username: str,
    session_id: str,
    *,
    start: int | None = None,
    octets_in: int = 0,
    octets_out: int = 0,
    seconds: int = 600,
    stopped: bool = False,
    framed_ip: str = "10.64.0.9",
) -> None:
    """A radacct row as FreeRADIUS's accounting queries store it."""
    now = int(time.time())
    start = start if start is not None else now - seconds
    with unit() as ctx:
        ctx.session.add(
            RadAcct(
                acctsessionid=session_id,
                acctuniqueid=hashlib.md5(session_id.encode()).hexdigest(),
                username=username,
                nasipaddress="127.0.0.1",
                acctstarttime=start,
                acctupdatetime=start + seconds,
                acctstoptime=start + seconds if stopped else None,
                acctsessiontime=seconds,
                acctinputoctets=octets_in,
                acctoutputoctets=octets_out,
                framedipaddress=framed_ip,
                callingstationid="48581234567",
            )
        )


def get_line(unit: Unit, username: str) -> Subscriber | None:
    """The line with its member and plan loaded, or None."""
    with unit() as ctx:
        try:
            return subscribers.get(ctx.session, username)
        except NotFound:
            return None


ROUTES_GET = [
    "/plans",
    "/plans/new",
    "/plans/dsl-8m",
    "/subscribers",
    "/subscribers/new",
    "/subscribers/szkola.alfa",
    "/sessions",
    "/usage",
    "/usage/szkola.alfa",
]


def test_logged_out_user_is_sent_to_login(lines: Flask) -> None:
    browser = Browser(lines)
    for path in ROUTES_GET:
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next="), path


def test_every_page_renders_with_nav_links(lines: Flask, unit: Unit) -> None:
    add_session(unit, "szkola.alfa", "s-1")
    browser = logged_in(lines, "root")
    for path in ROUTES_GET:
        response = browser.get(path)
        assert response.status_code == 200, path
        page = text(response)
        for link in ['href="/plans"', 'href="/subscribers"', 'href="/sessions"', 'href="/usage"']:
            assert link in page, (path, link)
        assert "<script" not in page and "style=" not in page, path


# -- plans ----------------------------------------------------------------------------------


PLAN_FORM = {
    "name": "radio-20m",
    "description": "Radio link",
    "kind": "wireless",
    "download": "20M",
    "upload": "5M",
    "data_cap": "50G",
    "time_cap": "",
    "cap_action": "throttle",
    "fair_use_down": "2M",
    "fair_use_up": "512k",
    "session_timeout": "24h",
    "idle_timeout": "10m",
    "simultaneous": "2",
    "port_limit": "",
}


def plan_row(unit: Unit, name: str) -> dict[str, object] | None:
    with unit() as ctx:
        try:
            return plans.as_dict(plans.get(ctx.session, name))
        except Exception:
            return None


def test_superadmin_creates_edits_and_removes_a_plan(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "root")
    created = browser.submit("/plans/new", "/plans/new", PLAN_FORM)
    assert created.status_code == 302 and created.location == "/plans/radio-20m"
    page = browser.get(created.location)
    assert messages(page) == ["Plan radio-20m created."]
    assert "Mikrotik-Rate-Limit" in text(page) and "5M/20M" in text(page)
    stored = plan_row(unit, "radio-20m")
    assert stored is not None
    assert (stored["download_bps"], stored["upload_bps"]) == (20_000_000, 5_000_000)
    assert stored["data_cap_bytes"] == 50 * GIB and stored["cap_action"] == "throttle"
    assert (stored["session_timeout"], stored["idle_timeout"]) == (86400, 600)
    assert stored["simultaneous_use"] == 2 and stored["time_cap_seconds"] is None
    # The edit form shows the values as typed; changing some keeps the rest.
    for shown in ['value="20M"', 'value="50G"', 'value="1d"', 'value="10m"', 'value="512k"']:
        assert shown in text(page), shown
    form = {k: v for k, v in PLAN_FORM.items() if k != "name"}
    saved = browser.submit(
        "/plans/radio-20m",
        "/plans/radio-20m",
        {**form, "download": "30M", "data_cap": "", "cap_action": "reject"},
    )
    assert saved.status_code == 302
    stored = plan_row(unit, "radio-20m")
    assert stored is not None
    assert stored["download_bps"] == 30_000_000 and stored["data_cap_bytes"] is None
    (event,) = audit(unit, "plan.update")
    assert (event.actor_name, event.source_address) == ("root", "192.0.2.10")
    assert event.details["download_bps"] == 30_000_000
    # In use: cannot be removed; unused: removed.
    refused = browser.submit("/plans/dsl-8m", "/plans/dsl-8m/delete", {})
    assert refused.status_code == 409 and "move them first" in text(refused)
    assert plan_row(unit, "dsl-8m") is not None
    removed = browser.submit("/plans/radio-20m", "/plans/radio-20m/delete", {})
    assert removed.status_code == 302 and removed.location == "/plans"
    assert plan_row(unit, "radio-20m") is None
    assert [e.target for e in audit(unit, "plan.remove")] == ["radio-20m"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("download", "fast", "not a rate"),
        ("data_cap", "lots", "not a size"),
        ("session_timeout", "a day", "not a duration"),
        ("simultaneous", "two", "Simultaneous sessions must be a whole number."),
        ("simultaneous", "99", "simultaneous sessions must be 1 to"),
        ("kind", "carrier-pigeon", "unknown plan kind"),
        ("fair_use_down", "", "a throttling plan needs a fair-use rate"),
        ("name", "Bad Name!", "invalid plan name"),
    ],
)
def test_bad_plan_input_is_refused_and_nothing_stored(
    lines: Flask, unit: Unit, field: str, value: str, expected: str
) -> None:
    browser = logged_in(lines, "root")
    form = {**PLAN_FORM, field: value}
    if field == "fair_use_down":
        form["fair_use_up"] = ""
    response = browser.submit("/plans/new", "/plans/new", form)
    assert response.status_code == 422
    assert expected in text(response)
    assert f'value="{value}"' in text(response) or field == "kind"  # the form keeps the input
    with unit() as ctx:
        assert [p.name for p in plans.list_plans(ctx.session)] == ["dsl-8m", "fair"]
    assert audit(unit, "plan.create") == [] or all(
        e.target in ("dsl-8m", "fair") for e in audit(unit, "plan.create")
    )
    # The same on an edit: the plan is unchanged.
    edit = {k: v for k, v in form.items() if k != "name"}
    if field != "name":
        changed = browser.submit("/plans/fair", "/plans/fair", edit)
        assert changed.status_code == 422 and expected in text(changed)
        stored = plan_row(unit, "fair")
        assert stored is not None and stored["download_bps"] == 20_000_000
    assert audit(unit, "plan.update") == []


def test_duplicate_plan_is_a_conflict(lines: Flask) -> None:
    browser = logged_in(lines, "root")
    response = browser.submit("/plans/new", "/plans/new", {**PLAN_FORM, "name": "fair"})
    assert response.status_code == 409 and "already exists" in text(response)


def test_member_admin_may_read_plans_but_not_change_them(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "admin-alfa")
    listing = text(browser.get("/plans"))
    assert "dsl-8m" in listing and "fair" in listing and "/plans/new" not in listing
    detail = browser.get("/plans/fair")
    assert detail.status_code == 200
    assert "WISPr-Bandwidth-Max-Down" in text(detail)
    assert 'action="/plans/fair"' not in text(detail)  # no edit form
    assert browser.get("/plans/new").status_code == 404
    assert browser.get("/plans/no-such-plan").status_code == 404
    token = browser.token("/plans")
    form = {k: v for k, v in PLAN_FORM.items() if k != "name"}
    assert browser.post("/plans/new", {"csrf_token": token, **PLAN_FORM}).status_code == 404
    assert browser.post("/plans/fair", {"csrf_token": token, **form}).status_code == 404
    assert browser.post("/plans/dsl-8m/delete", {"csrf_token": token}).status_code == 404
    with unit() as ctx:
        assert [p.name for p in plans.list_plans(ctx.session)] == ["dsl-8m", "fair"]
        assert plans.get(ctx.session, "fair").download_bps == 20_000_000
    assert audit(unit, "plan.update") == [] and audit(unit, "plan.remove") == []


# -- subscriber lines -----------------------------------------------------------------------


def test_member_admin_sees_and_reaches_only_its_own_lines(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "admin-alfa")
    listing = text(browser.get("/subscribers"))
    assert "szkola.alfa" in listing and "biblioteka.alfa" in listing
    assert "urzad.beta" not in listing
    assert browser.get("/subscribers/szkola.alfa").status_code == 200
    for path in ["/subscribers/urzad.beta", "/usage/urzad.beta", "/subscribers/nobody"]:
        assert browser.get(path).status_code == 404, path
    token = browser.token("/subscribers")
    for action, form in [
        ("", {"plan": "dsl-8m", "static_ip": "192.0.2.99"}),
        ("/status", {"action": "suspend", "reason": "x"}),
        ("/password", {}),
        ("/delete", {"confirm": "on"}),
        ("/disconnect", {}),
    ]:
        response = browser.post(f"/subscribers/urzad.beta{action}", {"csrf_token": token, **form})
        assert response.status_code == 404, action
    line = get_line(unit, "urzad.beta")
    assert line is not None and line.static_ip is None
    assert line.status is SubscriberStatus.ACTIVE and line.plan.name == "fair"
    assert sha512_crypt.verify(LINE_PASSWORD, line.password_crypt)
    for action in [
        "subscriber.update",
        "subscriber.status",
        "subscriber.password",
        "subscriber.kick",
    ]:
        assert audit(unit, action) == [], action


def test_superadmin_sees_every_line(lines: Flask) -> None:
    browser = logged_in(lines, "root")
    listing = text(browser.get("/subscribers"))
    assert "szkola.alfa" in listing and "urzad.beta" in listing
    assert browser.get("/subscribers/urzad.beta").status_code == 200


def test_member_admin_creates_lines_within_its_package(lines: Flask, unit: Unit) -> None:
    with unit() as ctx:
        members.update_package(ctx, "alfa", max_lines=3)
    browser = logged_in(lines, "admin-alfa")
    form = {"username": "Sklep.Alfa", "member": "beta", "plan": "fair", "generate": "on"}
    created = browser.submit("/subscribers/new", "/subscribers/new", form)
    assert created.status_code == 200
    page = text(created)
    assert "Subscriber sklep.alfa created." in page
    shown = re.search(r'<code class="secret">([^<]+)</code>', page)
    assert shown is not None
    line = get_line(unit, "sklep.alfa")
    assert line is not None and line.member.slug == "alfa"  # the member field is ignored
    assert sha512_crypt.verify(shown.group(1), line.password_crypt)
    # Shown once: the line's page does not repeat it.
    assert shown.group(1) not in text(browser.get("/subscribers/sklep.alfa"))
    (event,) = audit(unit, "subscriber.create")[-1:]
    assert (event.actor_kind, event.actor_name, event.target) == (
        "admin",
        "admin-alfa",
        "sklep.alfa",
    )
    assert shown.group(1) not in str(event.details)
    # The package is full now (3 lines): the service's refusal is shown, nothing stored.
    full = browser.submit(
        "/subscribers/new",
        "/subscribers/new",
        {"username": "jeszcze.jeden", "plan": "fair", "password": LINE_PASSWORD},
    )
    assert full.status_code == 409
    assert "has used all 3 subscriber lines" in text(full)
    assert get_line(unit, "jeszcze.jeden") is None


def test_typed_password_and_options_are_stored(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "root")
    created = browser.submit(
        "/subscribers/new",
        "/subscribers/new",
        {
            "username": "gok.beta",
            "member": "beta",
            "plan": "dsl-8m",
            "password": LINE_PASSWORD,
            "chap": "on",
            "static_ip": "192.0.2.50",
            "bind": "48581112233",
            "expires": "2030-12-31",
            "notes": "Dom kultury",
        },
    )
    assert created.status_code == 302 and created.location == "/subscribers/gok.beta"
    assert messages(browser.get(created.location)) == ["Subscriber gok.beta created."]
    line = get_line(unit, "gok.beta")
    assert line is not None and line.member.slug == "beta" and line.chap_enabled
    assert (line.static_ip, line.calling_station_id) == ("192.0.2.50", "48581112233")
    assert line.expires_on is not None and line.expires_on.isoformat() == "2030-12-31"


@pytest.mark.parametrize(
    ("change", "expected", "status"),
    [
        ({"username": "bad name!"}, "invalid subscriber name", 422),
        ({"password": "short"}, "password too short", 422),
        ({"plan": "no-such-plan"}, "no plan", 422),
        ({"static_ip": "not-an-ip"}, "not an IP address", 422),
        ({"expires": "31.12.2030"}, "Dates must look like 2026-07-31.", 422),
        ({"username": "szkola.alfa"}, "already exists", 409),
    ],
)
def test_bad_line_input_is_refused_and_nothing_stored(
    lines: Flask, unit: Unit, change: dict[str, str], expected: str, status: int
) -> None:
    browser = logged_in(lines, "admin-alfa")
    form = {"username": "nowa.linia", "plan": "dsl-8m", "password": LINE_PASSWORD, **change}
    response = browser.submit("/subscribers/new", "/subscribers/new", form)
    assert response.status_code == status
    assert expected in text(response)
    with unit() as ctx:
        names = [s.username for s in subscribers.list_subscribers(ctx.session)]
    assert sorted(names) == ["biblioteka.alfa", "szkola.alfa", "urzad.beta"]
    assert len(audit(unit, "subscriber.create")) == 3  # the fixture's


def test_edit_suspend_resume_password_and_remove(lines: Flask, unit: Unit) -> None:
    browser = logged_in(lines, "admin-alfa")
    page = "/subscribers/szkola.alfa"
    saved = browser.submit(
        page,
        page,
        {"plan": "fair", "static_ip": "192.0.2.60", "bind": "", "expires": "2031-01-31"},
    )
    assert saved.status_code == 302
    line = get_line(unit, "szkola.alfa")
    assert line is not None and line.plan.name == "fair" and line.static_ip == "192.0.2.60"
    bad = browser.submit(page, page, {"plan": "dsl-8m", "static_ip": "224.0.0.1", "expires": ""})
    assert bad.status_code == 422 and "cannot be a subscriber" in text(bad)
    line = get_line(unit, "szkola.alfa")
    assert line is not None and line.plan.name == "fair" and line.static_ip == "192.0.2.60"
    # Suspend and resume, with the reason in the audit.
    suspended = browser.submit(page, f"{page}/status", {"action": "suspend", "reason": "unpaid"})
    assert suspended.status_code == 302
    assert messages(browser.get(page)) == ["Subscriber szkola.alfa suspended."]
    line = get_line(unit, "szkola.alfa")
    assert line is not None and line.status is SubscriberStatus.SUSPENDED
    again = browser.submit(page, f"{page}/status", {"action": "suspend"})
    assert again.status_code == 422 and "already suspended" in text(again)
    assert browser.submit(page, f"{page}/status", {"action": "resume"}).status_code == 302
    line = get_line(unit, "szkola.alfa")
    assert line is not None and line.status is SubscriberStatus.ACTIVE
    statuses = [
        (e.details["status"], e.details["reason"]) for e in audit(unit, "subscriber.status")
    ]
    assert statuses == [("suspended", "unpaid"), ("active", "")]
    # A new password: shown once, the old one stops working.
    reset = browser.submit(page, f"{page}/password", {})
    assert reset.status_code == 200
    shown = re.search(r'<code class="secret">([^<]+)</code>', text(reset))
    assert shown is not None and "The password of szkola.alfa has been changed." in text(reset)
    line = get_line(unit, "szkola.alfa")
    assert line is not None
    assert sha512_crypt.verify(shown.group(1), line.password_crypt)
    assert not sha512_crypt.verify(LINE_PASSWORD, line.password_crypt)
    assert shown.group(1) not in text(browser.get(page))
    assert [e.actor_name for e in audit(unit, "subscriber.password")] == ["admin-alfa"]
    # Removal needs the box ticked.
    unticked = browser.submit(page, f"{page}/delete", {})
    assert unticked.status_code == 422 and get_line(unit, "szkola.alfa") is not None
    removed = browser.submit(page, f"{page}/delete", {"confirm": "on"})
    assert removed.status_code == 302 and removed.location == "/subscribers"
    assert get_line(unit, "szkola.alfa") is None
    assert [e.target for e in audit(unit, "subscriber.remove")] == ["szkola.alfa"]


def test_csrf_is_enforced_on_every_network_form(
    lines: Flask, unit: Unit, fake_nas: FakeNas
) -> None:
    add_session(unit, "szkola.alfa", "csrf-1")
    browser = logged_in(lines, "root")
    posts = [
        ("/plans/new", PLAN_FORM),
        ("/plans/fair", {**PLAN_FORM, "download": "1M"}),
        ("/plans/dsl-8m/delete", {}),
        ("/subscribers/new", {"username": "x.alfa", "member": "alfa", "plan": "fair"}),
        ("/subscribers/szkola.alfa", {"plan": "fair"}),
        ("/subscribers/szkola.alfa/status", {"action": "suspend"}),
        ("/subscribers/szkola.alfa/password", {}),
        ("/subscribers/szkola.alfa/delete", {"confirm": "on"}),
        ("/subscribers/szkola.alfa/disconnect", {}),
    ]
    for path, form in posts:
        assert browser.post(path, form).status_code == 400, path
        assert browser.post(path, {**form, "csrf_token": "forged"}).status_code == 400, path
    line = get_line(unit, "szkola.alfa")
    assert line is not None and line.plan.name == "dsl-8m"
    assert line.status is SubscriberStatus.ACTIVE
    assert sha512_crypt.verify(LINE_PASSWORD, line.password_crypt)
    with unit() as ctx:
        assert ctx.session.scalars(select(ServicePlan.name)).all() != []
        assert plans.get(ctx.session, "fair").download_bps == 20_000_000
    assert fake_nas.received == []


# -- online sessions and Disconnect ---------------------------------------------------------


def test_sessions_are_scoped_to_the_member(lines: Flask, unit: Unit) -> None:
    add_session(unit, "szkola.alfa", "sess-alfa", octets_out=3 * 1024**2)
    add_session(unit, "urzad.beta", "sess-beta")
    add_session(unit, "szkola.alfa", "closed-1", stopped=True)
    alfa = text(logged_in(lines, "admin-alfa").get("/sessions"))
    assert "sess-alfa" in alfa and "sess-beta" not in alfa and "closed-1" not in alfa
    assert "3 MiB" in alfa
    root = text(logged_in(lines, "root").get("/sessions"))
    assert "sess-alfa" in root and "sess-beta" in root


def test_disconnect_sends_a_real_disconnect_request(
    lines: Flask, unit: Unit, fake_nas: FakeNas
) -> None:
    add_session(unit, "szkola.alfa", "sess-7", framed_ip="10.64.0.7")
    add_session(unit, "biblioteka.alfa", "sess-8", framed_ip="10.64.0.8")
    add_session(unit, "urzad.beta", "sess-9", framed_ip="10.64.0.9")
    browser = logged_in(lines, "admin-alfa")
    assert 'action="/subscribers/szkola.alfa/disconnect"' in text(browser.get("/sessions"))
    response = browser.submit("/sessions", "/subscribers/szkola.alfa/disconnect", {})
    assert response.status_code == 302 and response.location == "/sessions"
    assert messages(browser.get("/sessions")) == [
        "Session sess-7 of szkola.alfa at nas-a: disconnected (ACK)"
    ]
    (request,) = fake_nas.received  # only this line's session; the NAS verified the secret
    assert request.code == packet.DisconnectRequest
    assert request["User-Name"] == ["szkola.alfa"]
    assert request["Acct-Session-Id"] == ["sess-7"]
    assert request["Framed-IP-Address"] == ["10.64.0.7"]
    assert fake_nas.dropped == 0
    (event,) = audit(unit, "subscriber.kick")
    assert (event.actor_kind, event.actor_name, event.source_address) == (
        "admin",
        "admin-alfa",
        "192.0.2.10",
    )
    assert event.target == "szkola.alfa"
    assert event.details["sessions"] == [
        {"session_id": "sess-7", "nas": "nas-a", "result": "ack", "error_cause": ""}
    ]
    # Another member's session: 404, nothing sent.
    token = browser.token("/sessions")
    denied = browser.post("/subscribers/urzad.beta/disconnect", {"csrf_token": token})
    assert denied.status_code == 404
    assert len(fake_nas.received) == 1


def test_disconnect_ends_only_the_session_clicked(
    lines: Flask, unit: Unit, fake_nas: FakeNas
) -> None:
    add_session(unit, "szkola.alfa", "sess-1", framed_ip="10.64.0.1")
    add_session(unit, "szkola.alfa", "sess-2", framed_ip="10.64.0.2")
    browser = logged_in(lines, "admin-alfa")
    assert 'name="session_id" value="sess-2"' in text(browser.get("/sessions"))
    browser.submit("/sessions", "/subscribers/szkola.alfa/disconnect", {"session_id": "sess-2"})
    (request,) = fake_nas.received
    assert request["Acct-Session-Id"] == ["sess-2"]


def test_disconnect_reports_nak_timeout_and_no_sessions(
    lines: Flask, unit: Unit, fake_nas: FakeNas
) -> None:
    lines.config.update(RADIUS_COA_TIMEOUT=0.3, RADIUS_COA_TRIES=1)
    add_session(unit, "urzad.beta", "sess-nak")
    browser = logged_in(lines, "root")
    fake_nas.answers[packet.DisconnectRequest] = "nak"
    page = "/subscribers/urzad.beta"
    nak = browser.submit(page, f"{page}/disconnect", {"back": "subscriber"})
    assert nak.location == page
    assert messages(browser.get(page)) == [
        "Session sess-nak of urzad.beta at nas-a: refused by the NAS (NAK): "
        "Session-Context-Not-Found"
    ]
    fake_nas.answers[packet.DisconnectRequest] = "silent"
    browser.submit(page, f"{page}/disconnect", {})
    assert messages(browser.get("/sessions")) == [
        "Session sess-nak of urzad.beta at nas-a: no answer from the NAS (timeout)"
    ]
    assert [p["Acct-Session-Id"] for p in fake_nas.received] == [["sess-nak"], ["sess-nak"]]
    results = [e.details["sessions"][0]["result"] for e in audit(unit, "subscriber.kick")]
    assert results == ["nak", "timeout"]
    # No open session: nothing sent, said so.
    browser.submit("/sessions", "/subscribers/szkola.alfa/disconnect", {})
    assert messages(browser.get("/sessions")) == ["szkola.alfa has no open sessions."]
    assert len(fake_nas.received) == 2
    # A superadmin can still end the session of a line removed meanwhile.
    with unit() as ctx:
        subscribers.remove(ctx, "urzad.beta")
    fake_nas.answers[packet.DisconnectRequest] = "ack"
    assert "sess-nak" in text(browser.get("/sessions"))
    browser.submit("/sessions", "/subscribers/urzad.beta/disconnect", {})
    assert messages(browser.get("/sessions")) == [
        "Session sess-nak of urzad.beta at nas-a: disconnected (ACK)"
    ]
    assert browser.submit("/sessions", "/subscribers/nobody/disconnect", {}).status_code == 404


# -- usage ----------------------------------------------------------------------------------


def this_month_start(day: int) -> int:
    year, month = radius.parse_month(None)
    return int(datetime(year, month, day, 12).timestamp())


def test_usage_report_by_member_and_subscriber(lines: Flask, unit: Unit) -> None:
    mib = 1024**2
    add_session(
        unit,
        "szkola.alfa",
        "u1",
        start=this_month_start(1),
        octets_in=mib,
        octets_out=3 * mib,
        seconds=3600,
        stopped=True,
    )
    add_session(
        unit,
        "szkola.alfa",
        "u2",
        start=this_month_start(2),
        octets_in=mib,
        octets_out=mib,
        seconds=1800,
        stopped=True,
    )
    add_session(
        unit,
        "urzad.beta",
        "u3",
        start=this_month_start(1),
        octets_out=5 * GIB // 2,
        seconds=60,
        stopped=True,
    )
    year, month = radius.parse_month(None)
    current = f"{year:04d}-{month:02d}"
    root = logged_in(lines, "root")
    page = text(root.get(f"/usage?month={current}"))
    assert "Gmina Alfa" in page and "Община Бета" in page
    assert "6 MiB" in page  # szkola.alfa: 2 + 4 MiB
    assert "2.5 GiB" in page  # urzad.beta, English decimal point
    assert "1:30:00" in page  # 3600 + 1800 seconds
    assert f'href="/usage/szkola.alfa?month={current}"' in page
    root.submit("/", "/language", {"lang": "pl"})
    polish = text(root.get(f"/usage?month={current}"))
    assert "2,5 GiB" in polish and "Według członków" in polish  # Polish decimal comma
    only_beta = text(root.get(f"/usage?month={current}&member=beta"))
    assert "urzad.beta" in only_beta and "szkola.alfa" not in only_beta
    assert root.get("/usage?member=no-such-member").status_code == 404
    # A member admin: only its own lines and member, whatever it asks for.
    alfa = logged_in(lines, "admin-alfa")
    mine = text(alfa.get(f"/usage?month={current}&member=beta"))
    assert "szkola.alfa" in mine and "urzad.beta" not in mine and "Община Бета" not in mine
    # Another month: none of these sessions.
    before = f"{year - 1:04d}-{month:02d}"
    assert "szkola.alfa" not in text(alfa.get(f"/usage?month={before}"))
    # Bad months: 422 with a message.
    for bad in ["2026-13", "july", "2026-7-1"]:
        response = alfa.get(f"/usage?month={bad}")
        assert response.status_code == 422, bad
        assert "Months must look like 2026-07." in text(response)


def test_daily_usage_of_a_line(lines: Flask, unit: Unit) -> None:
    mib = 1024**2
    add_session(
        unit,
        "szkola.alfa",
        "d1",
        start=this_month_start(1),
        octets_out=mib,
        seconds=60,
        stopped=True,
    )
    add_session(
        unit,
        "szkola.alfa",
        "d2",
        start=this_month_start(1) + 60,
        octets_out=mib,
        seconds=60,
        stopped=True,
    )
    add_session(
        unit,
        "szkola.alfa",
        "d3",
        start=this_month_start(2),
        octets_out=5 * mib,
        seconds=60,
        stopped=True,
    )
    year, month = radius.parse_month(None)
    browser = logged_in(lines, "admin-alfa")
    response = browser.get(f"/usage/szkola.alfa?month={year:04d}-{month:02d}")
    assert response.status_code == 200
    rows = re.findall(r"<tr>\s*<td>([^<]+)</td>\s*<td>(\d+)</td>", text(response))
    assert [count for _day, count in rows] == ["2", "1"]  # two sessions on the 1st, one on the 2nd
    page = text(response)
    assert "2 MiB" in page and "5 MiB" in page and "7 MiB" in page  # days and the total
    assert browser.get("/usage/szkola.alfa?month=bad").status_code == 422
    assert browser.get("/usage/urzad.beta").status_code == 404
