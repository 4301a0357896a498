"""Provisioning services on SQLite and PostgreSQL: validation, package limits, collisions, audit."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from sqlalchemy import func, select, text

from provisioning.addresses import parse_domain
from provisioning.db import Database
from provisioning.errors import Conflict, LimitExceeded, NotFound, NotPermitted, ValidationError
from provisioning.models import AuditEvent, Mailbox, MemberStatus
from provisioning.services import admins, aliases, domains, mail_rules, mailboxes, members
from provisioning.services.context import ServiceContext

Unit = Callable[[], AbstractContextManager[ServiceContext]]
SHARED = "info.association.pl"
PW = "correct horse battery"


@pytest.fixture
def association(unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk", max_mailboxes=3, mail_quota=3 * 1024**3)
        members.create(ctx, "trun", "Община Трън", max_mailboxes=5, mail_quota=10 * 1024**3)
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        domains.create(ctx, SHARED)
        domains.create(ctx, "община-трън.бг", member_slug="trun", utf8_local_parts=True)


def count(db: Database, model: type) -> int:
    with db.reader() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_member_validation(unit: Unit) -> None:
    with pytest.raises(ValidationError, match="slug"), unit() as ctx:
        members.create(ctx, "Głusk!", "Gmina")
    with pytest.raises(ValidationError, match="kind"), unit() as ctx:
        members.create(ctx, "glusk", "Gmina", kind="village")
    with pytest.raises(ValidationError, match="empty"), unit() as ctx:
        members.create(ctx, "glusk", "  ")
    with pytest.raises(ValidationError, match="invalid address"), unit() as ctx:
        members.create(ctx, "glusk", "Gmina", contact_email="not-an-email")
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
    with pytest.raises(Conflict), unit() as ctx:
        members.create(ctx, "GLUSK", "again")


@pytest.mark.usefixtures("association")
def test_mailbox_on_shared_domain_is_namespaced_by_slug(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk@{SHARED}", "glusk", password=PW)
        mailboxes.create(ctx, f"Glusk.Sekretariat@{SHARED}", "glusk", password=PW)
        mailboxes.create(ctx, f"postmaster-desk@{SHARED}", "biuro", password=PW)  # association
    with pytest.raises(NotPermitted, match="glusk@"), unit() as ctx:
        mailboxes.create(ctx, f"wojt@{SHARED}", "glusk", password=PW)
    with pytest.raises(NotPermitted), unit() as ctx:
        mailboxes.create(ctx, f"trun.kmet@{SHARED}", "glusk", password=PW)
    with pytest.raises(NotPermitted, match="belongs to member 'trun'"), unit() as ctx:
        mailboxes.create(ctx, "glusk@община-трън.бг", "glusk", password=PW)
    with db.reader() as session:
        mb = mailboxes.get(session, f"GLUSK.SEKRETARIAT@{SHARED.upper()}")
        assert mb.address == f"glusk.sekretariat@{SHARED}"


@pytest.mark.usefixtures("association")
def test_cyrillic_mailbox_on_idn_domain(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        mb = mailboxes.create(ctx, "Кмет@Община-Трън.бг", "trun", password=PW)
        assert mb.display_address == "кмет@община-трън.бг"
        assert mb.address == "кмет@xn----7sbc2azacbvr9dr.xn--90ae"
    with db.reader() as session:
        assert mailboxes.get(session, "КМЕТ@xn----7sbc2azacbvr9dr.xn--90ae").id == mb.id
    with pytest.raises(ValidationError, match="SMTPUTF8"), unit() as ctx:
        mailboxes.create(ctx, f"glusk.ж@{SHARED}", "glusk", password=PW)


@pytest.mark.usefixtures("association")
def test_package_limits_are_enforced(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        for name in ("a", "b"):
            mailboxes.create(ctx, f"glusk.{name}@{SHARED}", "glusk", password=PW)
    with pytest.raises(LimitExceeded, match="1G of mail quota left"), unit() as ctx:
        mailboxes.create(ctx, f"glusk.c@{SHARED}", "glusk", password=PW, quota=2 * 1024**3)
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk.c@{SHARED}", "glusk", password=PW)
    with pytest.raises(LimitExceeded, match="all 3 mailboxes"), unit() as ctx:
        mailboxes.create(ctx, f"glusk.d@{SHARED}", "glusk", password=PW, quota=1)
    with pytest.raises(LimitExceeded, match="cannot lower"), unit() as ctx:
        members.update_package(ctx, "glusk", max_mailboxes=2)
    with pytest.raises(LimitExceeded, match="left"), unit() as ctx:
        mailboxes.set_quota(ctx, f"glusk.a@{SHARED}", 2 * 1024**3)
    with unit() as ctx:
        members.update_package(ctx, "glusk", max_mailboxes=4, mail_quota=5 * 1024**3)
        mailboxes.create(ctx, f"glusk.d@{SHARED}", "glusk", password=PW, quota=2 * 1024**3)
    assert count(db, Mailbox) == 4


@pytest.mark.usefixtures("association")
def test_addresses_are_unique_across_mailboxes_and_aliases(unit: Unit) -> None:
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk@{SHARED}", "glusk", password=PW)
        aliases.create(ctx, f"glusk.urzad@{SHARED}", [f"glusk@{SHARED}"], member_slug="glusk")
    with pytest.raises(Conflict, match="already a mailbox"), unit() as ctx:
        aliases.create(ctx, f"GLUSK@{SHARED}", ["x@example.com"], member_slug="glusk")
    with pytest.raises(Conflict, match="already an alias"), unit() as ctx:
        mailboxes.create(ctx, f"Glusk.Urzad@{SHARED}", "glusk", password=PW)


@pytest.mark.usefixtures("association")
def test_aliases_destinations_loops_and_catch_all(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        mailboxes.create(ctx, "деловодство@община-трън.бг", "trun", password=PW)
        aliases.create(ctx, "@община-трън.бг", ["деловодство@община-трън.бг"])
        aliases.create(
            ctx, "кмет@община-трън.бг", ["деловодство@община-трън.бг", "Kmet.Trun@Example.com"]
        )
    with pytest.raises(NotFound, match="does not exist"), unit() as ctx:
        aliases.create(ctx, "a@община-трън.бг", ["typo@община-трън.бг"])
    with pytest.raises(ValidationError, match="itself"), unit() as ctx:
        aliases.create(ctx, "b@община-трън.бг", ["b@община-трън.бг"])
    with unit() as ctx:
        aliases.create(ctx, "c@община-трън.бг", ["кмет@община-трън.бг"])
    # d -> c -> кмет -> деловодство: no loop; but кмет can't point back at c (c -> кмет).
    with pytest.raises(ValidationError, match="back to itself"), unit() as ctx:
        aliases.remove(ctx, "кмет@община-трън.бг")
        aliases.create(ctx, "кмет@община-трън.бг", ["c@община-трън.бг"])
    with pytest.raises(NotPermitted), unit() as ctx:
        aliases.create(ctx, f"@{SHARED}", ["x@example.com"], member_slug="glusk")
    with db.reader() as session:
        listed = {
            a.display_address: [d.address for d in a.destinations]
            for a in aliases.list_aliases(session)
        }
    assert listed["@община-трън.бг"] == ["деловодство@община-трън.бг"]
    assert listed["кмет@община-трън.бг"] == ["деловодство@община-трън.бг", "Kmet.Trun@example.com"]
    with pytest.raises(Conflict, match="destination"), unit() as ctx:
        mailboxes.remove(ctx, "деловодство@община-трън.бг")


@pytest.mark.usefixtures("association")
def test_suspended_member_gets_nothing_new_and_cannot_log_in(unit: Unit) -> None:
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk@{SHARED}", "glusk", password=PW)
        members.set_status(ctx, "glusk", MemberStatus.SUSPENDED, "unpaid invoice")
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, f"glusk@{SHARED}", PW) is None
    with pytest.raises(NotPermitted, match="unpaid invoice"), unit() as ctx:
        mailboxes.create(ctx, f"glusk.a@{SHARED}", "glusk", password=PW)
    with unit() as ctx:
        members.set_status(ctx, "glusk", MemberStatus.ACTIVE)
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, f"glusk@{SHARED}", PW) is not None


@pytest.mark.usefixtures("association")
def test_authenticate_disabled_wrong_and_rehash(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        legacy = ctx.hasher.context.handler("sha512_crypt").using(rounds=1000).hash(PW)
        mailboxes.create(ctx, f"glusk@{SHARED}", "glusk", password_hash=legacy)
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, f"glusk@{SHARED}", "wrong password") is None
        assert mailboxes.authenticate(ctx, "nobody@nowhere.pl", PW) is None
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, f"glusk@{SHARED}", PW) is not None
    with db.reader() as session:
        assert mailboxes.get(session, f"glusk@{SHARED}").password_hash.startswith("{ARGON2ID}")
    with unit() as ctx:
        mailboxes.set_enabled(ctx, f"glusk@{SHARED}", False)
    with unit() as ctx:
        assert mailboxes.authenticate(ctx, f"glusk@{SHARED}", PW) is None


@pytest.mark.usefixtures("association")
def test_failed_change_leaves_no_trace_not_even_audit(unit: Unit, db: Database) -> None:
    events_before = count(db, AuditEvent)
    with pytest.raises(LimitExceeded), unit() as ctx:
        mailboxes.create(ctx, f"glusk.a@{SHARED}", "glusk", password=PW)
        mailboxes.create(ctx, f"glusk.b@{SHARED}", "glusk", password=PW, quota=10 * 1024**4)
    assert count(db, Mailbox) == 0
    assert count(db, AuditEvent) == events_before
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk.a@{SHARED}", "glusk", password=PW)
    with db.reader() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event is not None
    assert (event.action, event.target, event.actor_name) == (
        "mailbox.create",
        f"glusk.a@{SHARED}",
        "test",
    )
    assert PW not in str(event.details)


@pytest.mark.usefixtures("association")
def test_domain_rules(unit: Unit, db: Database) -> None:
    with pytest.raises(Conflict, match="already hosted"), unit() as ctx:
        domains.create(ctx, "INFO.association.pl")
    with pytest.raises(Conflict, match="already hosted"), unit() as ctx:
        domains.create(ctx, "xn----7sbc2azacbvr9dr.xn--90ae", member_slug="glusk")
    with pytest.raises(NotFound), unit() as ctx:
        domains.create(ctx, "gmina.pl", member_slug="nobody")
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk@{SHARED}", "glusk", password=PW)
    with pytest.raises(Conflict, match="1 mailboxes"), unit() as ctx:
        domains.remove(ctx, SHARED)
    with unit() as ctx:
        domains.create(ctx, "gmina-głusk.pl", member_slug="glusk")
        domains.remove(ctx, parse_domain("gmina-głusk.pl").ascii)
    with pytest.raises(NotFound), unit() as ctx:
        domains.remove(ctx, "gmina-głusk.pl")


def test_admins_and_tokens(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        admins.create(ctx, "root", PW)
        admins.create(ctx, "Glusk-Admin", PW, member_slug="glusk")
        _, secret = admins.create_token(ctx, "root", "ansible")
    with pytest.raises(Conflict), unit() as ctx:
        admins.create(ctx, "ROOT", PW)
    with db.reader() as session:
        token = admins.verify_token(session, secret)
        assert token is not None and token.admin.username == "root"
        assert secret not in token.secret_hash
        assert admins.verify_token(session, secret[:-1] + "x") is None
        assert admins.verify_token(session, "garbage") is None
        assert admins.get(session, "glusk-admin").member is not None
    with unit() as ctx:
        admins.revoke_token(ctx, token.prefix)
        assert admins.authenticate(ctx, "root", PW) is not None
        assert admins.authenticate(ctx, "root", "nope nope nope") is None
    with db.reader() as session:
        assert admins.verify_token(session, secret) is None


@pytest.mark.usefixtures("association")
def test_concurrent_creates_cannot_exceed_the_package(unit: Unit, db: Database) -> None:
    """Writers racing for the last mailbox slot: one wins (BEGIN IMMEDIATE / FOR UPDATE)."""
    import threading

    with unit() as ctx:
        members.update_package(ctx, "glusk", max_mailboxes=1)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def create(name: str) -> None:
        barrier.wait()
        try:
            with unit() as ctx:
                mailboxes.create(ctx, f"glusk.{name}@{SHARED}", "glusk", password=PW)
            outcomes.append("created")
        except LimitExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(n,)) for n in ("a", "b", "c", "d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created", "refused", "refused", "refused"]
    assert count(db, Mailbox) == 1


@pytest.mark.usefixtures("association")
def test_vacation_and_forwarding_rules(unit: Unit, db: Database) -> None:
    with unit() as ctx:
        mailboxes.create(ctx, f"glusk@{SHARED}", "glusk", password=PW)
        idn = mailboxes.create(ctx, "кмет@община-трън.бг", "trun", password=PW)
        assert idn.unicode_address == "кмет@община-трън.бг"
        assert (
            mailboxes.create(ctx, f"glusk.a@{SHARED}", "glusk", password=PW).unicode_address is None
        )
    with unit() as ctx:
        rules = mail_rules.set_vacation(
            ctx, f"glusk@{SHARED}", enabled=True, subject="Urlop", body="Wracam w styczniu.", days=3
        )
        first_id = rules.sieve_id
        assert 'vacation :days 3 :subject "Urlop" "Wracam w styczniu.";' in rules.sieve_script
    with unit() as ctx:
        rules = mail_rules.set_forwarding(
            ctx, f"glusk@{SHARED}", ["wojt@Община-Трън.бг"], keep_copy=False
        )
        assert rules.forward_to == ["wojt@община-трън.бг"]
        assert 'redirect "wojt@xn----7sbc2azacbvr9dr.xn--90ae";' in rules.sieve_script
        assert "keep;" not in rules.sieve_script
        assert rules.sieve_id != first_id  # Pigeonhole recompiles on a new id
    for bad, message in [
        ({"subject": "", "body": "x"}, "subject"),
        ({"subject": "a\nb", "body": "x"}, "one line"),
        ({"subject": "Urlop", "body": " \n "}, "message"),
        ({"subject": "Urlop", "body": "x", "days": 0}, "days"),
    ]:
        with pytest.raises(ValidationError, match=message), unit() as ctx:
            mail_rules.set_vacation(ctx, f"glusk@{SHARED}", enabled=True, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="itself"), unit() as ctx:
        mail_rules.set_forwarding(ctx, f"GLUSK@{SHARED}", ["glusk@info.association.pl"])
    with pytest.raises(ValidationError, match="non-ASCII"), unit() as ctx:
        mail_rules.set_forwarding(ctx, f"glusk@{SHARED}", ["кмет@община-трън.бг"])
    with pytest.raises(ValidationError, match="at most 10"), unit() as ctx:
        mail_rules.set_forwarding(ctx, f"glusk@{SHARED}", [f"a{i}@example.com" for i in range(11)])
    with unit() as ctx:  # off keeps the text for next time; forwarding cleared
        mail_rules.set_vacation(ctx, f"glusk@{SHARED}", enabled=False)
        rules = mail_rules.set_forwarding(ctx, f"glusk@{SHARED}", [])
        assert rules.sieve_script == "" and rules.sieve_id == ""
        assert rules.vacation_subject == "Urlop"
    with db.reader() as session:  # what Dovecot's dict reads: nothing left for this mailbox
        rows = session.execute(text("SELECT username FROM sieve_scripts")).all()
        assert rows == []
        assert (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action.in_(["mailbox.vacation", "mailbox.forwarding"]))
            )
            == 4
        )
