"""The superadmin's operations pages: mail queue, audit log, admins and API tokens.

The queue tests use a real spool directory: messages are queued through
`provisioning.queue` (the admin's side of the interface) and read back, locked and
delivered by the mail engine's own code (`mailhost.spool`, `mailhost.queue_runner`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from web import PASSWORD, Browser, Unit, audit, messages

from mailhost.durability import GroupCommitter
from mailhost.queue_runner import QueueRunner
from mailhost.spool import Spool
from provisioning import queue
from provisioning.models import AuditEvent
from provisioning.services import admins
from provisioning.settings import Settings

pytest_plugins = ["web"]

GET_PAGES = ["/queue", "/audit", "/admins", "/tokens"]


@pytest.fixture
def spool(settings: Settings) -> Iterator[Spool]:
    """The mail engine's view of the spool the web admin steers."""
    root = queue.spool_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    committer = GroupCommitter(root)
    yield Spool(root, committer)
    committer.close()


def put(
    settings: Settings,
    recipients: list[str],
    *,
    sender: str = "biuro@alfa.example",
    age: float = 0.0,
) -> str:
    """Queue a message through the provisioning interface (as a face, not the engine)."""
    data = f"From: <{sender}>\r\nSubject: queued\r\n\r\nHello.\r\n".encode()
    header = queue.MessageHeader(
        id=queue.new_id(),
        mail_from=sender,
        recipients=recipients,
        received_at=time.time() - age,
        size=0,
    )
    return queue.QueueDir(queue.spool_root(settings)).enqueue(header, data)


def deferred(spool: Spool, message_id: str, error: str) -> None:
    """What the engine writes after a failed attempt: due in an hour."""
    message = spool.load(message_id)
    message.state.attempts = 3
    message.state.next_attempt = time.time() + 3600
    message.state.last_errors = {r: error for r in message.state.pending}
    spool.save_state(message_id, message.state)


# -- who may reach these pages ------------------------------------------------------------------


def test_logged_out_is_sent_to_login(browser: Browser) -> None:
    for path in GET_PAGES:
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next="), path


def test_member_admin_gets_404_everywhere(
    browser: Browser, unit: Unit, settings: Settings, spool: Spool
) -> None:
    message_id = put(settings, ["someone@example.org"])
    with unit() as ctx:
        _, secret = admins.create_token(ctx, "root", "ansible")
    prefix = secret.split("_")[1]
    assert browser.login("admin-alfa").status_code == 302
    for path in GET_PAGES:
        assert browser.get(path).status_code == 404, path
    token = browser.token("/")
    for path, form in [
        (f"/queue/{message_id}/retry", {}),
        (f"/queue/{message_id}/delete", {}),
        ("/admins", {"username": "intruder", "password": PASSWORD}),
        ("/admins/root/enabled", {"enabled": "no"}),
        ("/admins/root/password", {}),
        ("/tokens", {"admin": "root", "name": "mine now"}),
        (f"/tokens/{prefix}/revoke", {}),
    ]:
        assert browser.post(path, {"csrf_token": token, **form}).status_code == 404, path
    assert spool.ids() == [message_id]
    with unit() as ctx:
        assert [a.username for a in admins.list_admins(ctx.session)] == [
            "admin-alfa",
            "admin-beta",
            "root",
        ]
        assert admins.get(ctx.session, "root").enabled
        assert admins.verify_token(ctx.session, secret) is not None
    nav = browser.get("/").get_data(as_text=True)
    assert 'href="/queue"' not in nav and 'href="/audit"' not in nav and 'href="/admins"' not in nav


def test_superadmin_sees_the_links(browser: Browser) -> None:
    assert browser.login("root").status_code == 302
    nav = browser.get("/").get_data(as_text=True)
    for link in ['href="/queue"', 'href="/audit"', 'href="/admins"']:
        assert link in nav
    for path in GET_PAGES:
        page = browser.get(path)
        assert page.status_code == 200, path
        assert "<script" not in page.get_data(as_text=True)


def test_csrf_on_every_form(browser: Browser, settings: Settings, spool: Spool) -> None:
    message_id = put(settings, ["someone@example.org"])
    assert browser.login("root").status_code == 302
    for path in [
        f"/queue/{message_id}/retry",
        f"/queue/{message_id}/delete",
        "/admins",
        "/admins/admin-alfa/enabled",
        "/admins/admin-alfa/password",
        "/tokens",
    ]:
        assert browser.post(path, {"enabled": "no"}).status_code == 400, path
        assert browser.post(path, {"csrf_token": "forged"}).status_code == 400, path
    assert spool.ids() == [message_id]


# -- the mail queue -----------------------------------------------------------------------------


def test_queue_lists_what_the_engine_sees(
    browser: Browser, settings: Settings, spool: Spool
) -> None:
    first = put(settings, ["a@example.org", "b@example.net"], age=2 * 3600)
    second = put(settings, ["local:biuro@beta.example"], sender="")
    deferred(spool, first, "451 4.3.0 greylisted, try again later")
    assert spool.ids() == [first, second]  # the engine reads what the interface wrote
    assert browser.login("root").status_code == 302
    page = browser.get("/queue").get_data(as_text=True)
    assert page.index(first) < page.index(second)  # oldest first
    assert "biuro@alfa.example" in page
    assert "a@example.org" in page and "b@example.net" in page
    assert "451 4.3.0 greylisted, try again later" in page
    assert "2 hours" in page  # the age, in words
    assert "biuro@beta.example" in page and "local:" not in page
    assert "(bounce)" in page  # the null sender
    browser.submit("/", "/language", {"lang": "pl"})
    assert "2 godziny" in browser.get("/queue").get_data(as_text=True)


def test_retry_now_makes_the_engine_deliver(
    browser: Browser, unit: Unit, settings: Settings, spool: Spool
) -> None:
    message_id = put(settings, ["local:biuro@alfa.example"])
    deferred(spool, message_id, "452 4.2.2 mailbox full")
    delivered: list[str] = []

    async def deliver_local(key: str, data: bytes) -> None:
        delivered.append(key)

    runner = QueueRunner(spool, settings, deliver_local)
    assert asyncio.run(runner.run_once()).messages == 0  # not due for an hour
    assert browser.login("root").status_code == 302
    response = browser.submit("/queue", f"/queue/{message_id}/retry", {})
    assert response.status_code == 302 and response.location == "/queue"
    assert messages(browser.get("/queue")) == [f"Message {message_id} will be tried again at once."]
    state = spool.load(message_id).state
    assert state.next_attempt == 0.0 and state.attempts == 3  # only made due, nothing lost
    report = asyncio.run(runner.run_once())
    assert report.delivered == 1 and delivered == ["biuro@alfa.example"]
    assert spool.ids() == []
    [event] = audit(unit, "queue.retry")
    assert (event.actor_name, event.source_address, event.target) == (
        "root",
        "192.0.2.10",
        message_id,
    )
    assert event.details == {
        "sender": "biuro@alfa.example",
        "pending": ["local:biuro@alfa.example"],
    }


def test_delete_removes_the_message(
    browser: Browser, unit: Unit, settings: Settings, spool: Spool
) -> None:
    keep = put(settings, ["keep@example.org"])
    doomed = put(settings, ["doomed@example.org"])
    deferred(spool, doomed, "451 4.4.1 no answer")
    assert browser.login("root").status_code == 302
    response = browser.submit("/queue", f"/queue/{doomed}/delete", {})
    assert response.status_code == 302
    assert messages(browser.get("/queue")) == [f"Message {doomed} deleted."]
    assert spool.ids() == [keep]
    assert not (spool.queue / f"{doomed}.state").exists()
    [event] = audit(unit, "queue.delete")
    assert event.target == doomed and event.details["pending"] == ["doomed@example.org"]
    # Already gone (e.g. delivered meanwhile), or an id that is not one: a message, no change.
    for bad in [doomed, "00000000000000dead", "..%2f..%2fx"]:
        response = browser.submit("/queue", f"/queue/{bad}/delete", {})
        assert response.status_code in (302, 404), bad
    assert spool.ids() == [keep]
    assert len(audit(unit, "queue.delete")) == 1


def test_message_being_delivered_is_not_deleted(
    browser: Browser, unit: Unit, settings: Settings, spool: Spool
) -> None:
    message_id = put(settings, ["busy@example.org"])
    assert browser.login("root").status_code == 302
    with spool.lock(message_id):  # the engine's lock, as held during a delivery
        response = browser.submit("/queue", f"/queue/{message_id}/delete", {})
        assert response.status_code == 302
        page = browser.get("/queue")
        assert messages(page) == [f"message {message_id} is being delivered right now"]
    assert spool.ids() == [message_id]
    assert audit(unit, "queue.delete") == []  # refused, so not recorded as done


def test_queue_pages(browser: Browser, settings: Settings) -> None:
    ids = [put(settings, [f"r{n}@example.org"]) for n in range(52)]
    assert browser.login("root").status_code == 302
    first = browser.get("/queue").get_data(as_text=True)
    assert ids[0] in first and ids[49] in first and ids[50] not in first
    assert "Page 1 of 2" in first
    second = browser.get("/queue?page=2").get_data(as_text=True)
    assert ids[50] in second and ids[51] in second and ids[0] not in second
    assert browser.get("/queue?page=0").status_code == 404
    assert browser.get("/queue?page=x").status_code == 404


def test_empty_queue_without_a_spool(browser: Browser, settings: Settings) -> None:
    assert not queue.spool_root(settings).exists()
    assert browser.login("root").status_code == 302
    assert "The queue is empty." in browser.get("/queue").get_data(as_text=True)
    assert not queue.spool_root(settings).exists()  # looking creates nothing


# -- the audit log ------------------------------------------------------------------------------


def rows(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)


def test_audit_log_filters(browser: Browser, unit: Unit) -> None:
    assert browser.login("root").status_code == 302
    page = browser.get("/audit").get_data(as_text=True)
    assert "mailbox.create" in page and "admin.login" in page
    newest = rows(page)[0]
    assert "admin.login" in newest and "192.0.2.10" in newest  # newest first
    by_actor = rows(browser.get("/audit?actor=roo").get_data(as_text=True))
    assert by_actor and all("root" in row and "mailbox.create" not in row for row in by_actor)
    by_action = browser.get("/audit?action=mailbox.").get_data(as_text=True)
    assert len(rows(by_action)) == 2 and "biuro@beta.example" in by_action
    by_target = browser.get("/audit?action=mailbox&target=beta.ex").get_data(as_text=True)
    assert len(rows(by_target)) == 1 and "biuro@alfa.example" not in by_target
    literal = browser.get("/audit?target=%25").get_data(as_text=True)  # % is not a wildcard
    assert "No events match." in literal
    today = datetime.now(UTC).date()
    dated = browser.get(f"/audit?action=mailbox.&since={today}&until={today}")
    assert len(rows(dated.get_data(as_text=True))) == 2
    yesterday = today - timedelta(days=1)
    past = browser.get(f"/audit?until={yesterday}").get_data(as_text=True)
    assert "No events match." in past
    bad = browser.get("/audit?since=31.12.2026")
    assert bad.status_code == 422 and "Dates must look like 2026-07-31." in bad.get_data(
        as_text=True
    )
    backwards = browser.get(f"/audit?since={today}&until={yesterday}")
    assert backwards.status_code == 422


def test_audit_log_pages_newest_first(browser: Browser, unit: Unit) -> None:
    start = datetime.now(UTC) - timedelta(days=3)
    with unit() as ctx:
        for n in range(60):
            event = AuditEvent(
                actor_kind="cli",
                actor_name="filler",
                action="test.event",
                target=f"object-{n:02d}",
                at=start + timedelta(minutes=n),
                details={"n": n},
            )
            ctx.session.add(event)
    assert browser.login("root").status_code == 302
    first = rows(browser.get("/audit?action=test.").get_data(as_text=True))
    assert len(first) == 50
    assert "object-59" in first[0] and "object-10" in first[-1]
    page = browser.get("/audit?action=test.&page=2").get_data(as_text=True)
    second = rows(page)
    assert len(second) == 10 and "object-09" in second[0] and "object-00" in second[-1]
    assert "Page 2 of 2" in page and "action=test." in page  # links keep the filter
    assert "n=5" in second[4]


# -- admins -------------------------------------------------------------------------------------


def test_create_admins(browser: Browser, unit: Unit, app: Flask) -> None:
    assert browser.login("root").status_code == 302
    listing = browser.get("/admins").get_data(as_text=True)
    assert "admin-alfa" in listing and "Admin of Gmina Alfa" in listing
    made = browser.submit(
        "/admins", "/admins", {"username": "Kasia", "member": "beta", "password": PASSWORD}
    )
    assert made.status_code == 302
    assert messages(browser.get("/admins")) == ["Admin kasia created."]
    generated = browser.submit("/admins", "/admins", {"username": "ops", "member": ""})
    assert generated.status_code == 200
    secret = re.search(r'<code class="secret">([^<]+)</code>', generated.get_data(as_text=True))
    assert secret
    assert generated.headers["Cache-Control"] == "no-store"
    assert secret.group(1) not in browser.get("/admins").get_data(as_text=True)
    with unit() as ctx:
        kasia, ops = admins.get(ctx.session, "kasia"), admins.get(ctx.session, "ops")
        assert kasia.member is not None and kasia.member.slug == "beta"
        assert ops.is_superadmin
    assert Browser(app, "192.0.2.50").login("ops", secret.group(1)).status_code == 302
    assert Browser(app, "192.0.2.51").login("kasia").status_code == 302
    for form, status in [
        ({"username": "kasia", "password": PASSWORD}, 409),
        ({"username": "x", "password": PASSWORD}, 422),
        ({"username": "short", "password": "abc"}, 422),
        ({"username": "ghost", "member": "no-such-member", "password": PASSWORD}, 422),
    ]:
        assert browser.submit("/admins", "/admins", form).status_code == status, form
    created = [e.target for e in audit(unit, "admin.create") if e.actor_kind == "admin"]
    assert created == ["kasia", "ops"]


def test_disable_enable_and_reset_password(browser: Browser, unit: Unit, app: Flask) -> None:
    other = Browser(app, "192.0.2.60")
    assert other.login("admin-beta").status_code == 302
    assert browser.login("root").status_code == 302
    response = browser.submit("/admins", "/admins/admin-beta/enabled", {"enabled": "no"})
    assert response.status_code == 302
    assert other.get("/").status_code == 302  # the session ended at once
    assert Browser(app, "192.0.2.61").login("admin-beta").status_code == 401
    browser.submit("/admins", "/admins/admin-beta/enabled", {"enabled": "yes"})
    assert Browser(app, "192.0.2.62").login("admin-beta").status_code == 302
    # The last superadmin cannot lock everyone out.
    refused = browser.submit("/admins", "/admins/root/enabled", {"enabled": "no"})
    assert refused.status_code == 409
    assert "last enabled superadmin" in refused.get_data(as_text=True)
    assert browser.submit("/admins", "/admins/nobody/enabled", {"enabled": "no"}).status_code == 404
    reset = browser.submit("/admins", "/admins/admin-alfa/password", {})
    assert reset.status_code == 200
    found = re.search(r'<code class="secret">([^<]+)</code>', reset.get_data(as_text=True))
    assert found
    assert Browser(app, "192.0.2.63").login("admin-alfa").status_code == 401
    assert Browser(app, "192.0.2.64").login("admin-alfa", found.group(1)).status_code == 302
    assert browser.submit("/admins", "/admins/nobody/password", {}).status_code == 404
    actions = [
        (e.action, e.target)
        for e in audit(unit, "admin.disable")
        + audit(unit, "admin.enable")
        + audit(unit, "admin.password")
    ]
    assert actions == [
        ("admin.disable", "admin-beta"),
        ("admin.enable", "admin-beta"),
        ("admin.password", "admin-alfa"),
    ]


# -- API tokens ---------------------------------------------------------------------------------


def test_tokens_created_once_and_revoked(browser: Browser, unit: Unit, app: Flask) -> None:
    assert browser.login("root").status_code == 302
    assert "No API tokens yet." in browser.get("/tokens").get_data(as_text=True)
    made = browser.submit("/tokens", "/tokens", {"admin": "admin-alfa", "name": "ansible"})
    assert made.status_code == 200
    found = re.search(r'<code class="secret">(mnt_[^<]+)</code>', made.get_data(as_text=True))
    assert found
    secret = found.group(1)
    listing = browser.get("/tokens").get_data(as_text=True)
    assert secret not in listing and secret.split("_", 2)[2] not in listing
    prefix = secret.split("_")[1]
    assert prefix in listing and "ansible" in listing and "admin-alfa" in listing
    api = app.test_client().get(
        "/api/v1/members",
        base_url="https://admin.example",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert api.status_code == 200
    assert browser.submit("/tokens", "/tokens", {"admin": "nobody"}).status_code == 422
    revoked = browser.submit("/tokens", f"/tokens/{prefix}/revoke", {})
    assert revoked.status_code == 302
    assert messages(browser.get("/tokens")) == [f"Token {prefix} revoked."]
    with unit() as ctx:
        assert admins.verify_token(ctx.session, secret) is None
    assert browser.submit("/tokens", f"/tokens/{prefix}/revoke", {}).status_code == 422
    assert browser.submit("/tokens", "/tokens/feedfeedfeed/revoke", {}).status_code == 404
    [created] = audit(unit, "token.create")
    assert created.actor_name == "root" and secret.split("_", 2)[2] not in str(created.details)
    assert [e.target for e in audit(unit, "token.revoke")] == [f"admin-alfa/{prefix}"]
