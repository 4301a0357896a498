"""Per-domain filter settings: spam thresholds and the virus action of a hosted domain.

The service and the engine's cached lookup on SQLite and PostgreSQL, the CLI, and end
to end through a real `muninet smtpd` with real clamd and rspamd: the same borderline
message is refused for a domain whose reject score is below its score while another
domain still gets it tagged.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

import pytest
from sqlalchemy import select

from mailhost.engine import Engine
from mailhost.filters.spam import RspamdClient, SpamFilter
from provisioning.db import Database
from provisioning.errors import ValidationError
from provisioning.models import AuditEvent
from provisioning.services import domains, mailboxes, members
from provisioning.services.context import ServiceContext
from provisioning.services.domains import DomainFilters
from provisioning.settings import Settings, load_settings

from conftest import FAST_HASHING
from dovecot_server import require_root, world_traversable_tmp
from filter_daemons import EICAR, EICAR_SIGNATURE, FilterEnv, RunningClamd, info, plain_message
from mailserver import MailServer, provisioned

pytest_plugins = ["filter_daemons"]
# The borderline message of test_filters_smtp.py (no From, To, Date, Message-ID):
# rspamd 3.4 scores it between the default add-header (6) and reject (15) scores.
BORDERLINE = b"Subject: zaproszenie\r\n\r\nZapraszamy na spotkanie w sprawie funduszy.\r\n"
CLEAN = plain_message("Dzień dobry,\n\nprzesyłam porządek obrad sesji rady gminy.\n")
Unit = Callable[[], AbstractContextManager[ServiceContext]]
SHARED = "info.association.pl"
IDN = "община-трън.бг"
IDN_ASCII = "xn----7sbc2azacbvr9dr.xn--90ae"


@pytest.fixture
def hosted(unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "trun", "Община Трън")
        domains.create(ctx, SHARED)
        domains.create(ctx, IDN, member_slug="trun")


def own(db: Database, name: str) -> DomainFilters:
    with db.reader() as session:
        return domains.own_filters(domains.get(session, name))


def test_defaults_are_the_global_settings(hosted: None, db: Database, settings: Settings) -> None:
    assert own(db, SHARED) == DomainFilters(None, None, None)
    effective = domains.effective_filters(own(db, SHARED), settings)
    assert (effective.spam_add_header_score, effective.spam_reject_score) == (6.0, 15.0)
    assert effective.virus_action == "reject" and effective.own == frozenset()
    quarantining = load_settings({"MUNINET_ANTIVIRUS__QUARANTINE": "true"})
    assert domains.effective_filters(own(db, SHARED), quarantining).virus_action == "quarantine"


def test_set_change_and_clear(hosted: None, unit: Unit, db: Database, settings: Settings) -> None:
    with unit() as ctx:  # by its Unicode name
        domains.set_filters(ctx, IDN, spam_add_header_score=4, virus_action="quarantine")
    assert own(db, IDN_ASCII) == DomainFilters(4.0, None, "quarantine")
    effective = domains.effective_filters(own(db, IDN), settings)
    assert (effective.spam_add_header_score, effective.spam_reject_score) == (4.0, 15.0)
    assert effective.own == {"spam_add_header_score", "virus_action"}
    with db.reader() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert event is not None and (event.action, event.target) == ("domain.filters", IDN)
    assert event.details == {
        "spam_add_header_score": 4.0,
        "spam_reject_score": None,
        "virus_action": "quarantine",
    }

    with unit() as ctx:  # only what is given changes; None is back to the global value
        domains.set_filters(ctx, IDN, spam_reject_score=9.5, spam_add_header_score=None)
    assert own(db, IDN) == DomainFilters(None, 9.5, "quarantine")
    with unit() as ctx:  # clear first, then the values given
        domains.set_filters(ctx, IDN, clear=True, spam_reject_score=12)
    assert own(db, IDN) == DomainFilters(None, 12.0, None)
    with db.reader() as session:
        events = session.scalar(
            select(AuditEvent.id)
            .where(AuditEvent.action == "domain.filters")
            .order_by(AuditEvent.id.desc())
        )
    with unit() as ctx:  # nothing changes: no audit event
        domains.set_filters(ctx, IDN, spam_reject_score=12)
    with db.reader() as session:
        assert events == session.scalar(
            select(AuditEvent.id)
            .where(AuditEvent.action == "domain.filters")
            .order_by(AuditEvent.id.desc())
        )


def test_invalid_settings_are_refused(hosted: None, unit: Unit, db: Database) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"spam_add_header_score": 20}, "tag score 20 is above the reject score 15"),
        ({"spam_reject_score": 3}, "tag score 6 is above the reject score 3"),
        ({"spam_add_header_score": -1}, "from 0 to 1000"),
        ({"spam_reject_score": 1001}, "from 0 to 1000"),
        ({"spam_reject_score": float("nan")}, "from 0 to 1000"),
        ({"virus_action": "deliver"}, "reject or quarantine"),
    ]
    for changes, message in cases:
        with pytest.raises(ValidationError, match=message), unit() as ctx:
            domains.set_filters(ctx, SHARED, **changes)  # type: ignore[arg-type]
    assert own(db, SHARED) == DomainFilters(None, None, None)  # nothing half-applied
    with unit() as ctx:  # both thresholds at once may go below the global tag score
        domains.set_filters(ctx, SHARED, spam_add_header_score=2, spam_reject_score=3)
    assert own(db, SHARED) == DomainFilters(2.0, 3.0, None)


def test_engine_lookup_is_cached_briefly(hosted: None, unit: Unit, env: dict[str, str]) -> None:
    settings = load_settings({**env, "MUNINET_SMTP__LOOKUP_CACHE": "0.5s"})
    db = Database.from_settings(settings)
    engine = Engine(settings, db)
    try:
        with unit() as ctx:
            domains.set_filters(ctx, SHARED, spam_reject_score=8)

        async def lookup() -> Mapping[str, DomainFilters]:
            return await engine.domain_filters([SHARED, IDN_ASCII, "example.org"])

        # Hosted domains only; a domain without own values is there with Nones.
        assert asyncio.run(lookup()) == {
            SHARED: DomainFilters(None, 8.0, None),
            IDN_ASCII: DomainFilters(None, None, None),
        }
        with unit() as ctx:
            domains.set_filters(ctx, SHARED, spam_reject_score=9)
        assert asyncio.run(lookup())[SHARED].spam_reject_score == 8.0  # still cached
        time.sleep(0.6)
        assert asyncio.run(lookup())[SHARED].spam_reject_score == 9.0
    finally:
        engine.close()
        db.dispose()


def test_strictest_thresholds_of_the_recipient_domains() -> None:
    own_values = {
        "strict.test": DomainFilters(3.0, 8.0, None),
        "tagonly.test": DomainFilters(2.0, None, None),
    }

    async def lookup(names: Sequence[str]) -> Mapping[str, DomainFilters]:
        return {name: own_values[name] for name in names if name in own_values}

    flt = SpamFilter(RspamdClient("/nonexistent"), domain_filters=lookup)

    def thresholds(*domain_names: str) -> tuple[float, float]:
        return asyncio.run(flt.thresholds(info(b"", recipient_domains=list(domain_names))))

    assert thresholds("other.test") == (6.0, 15.0)
    assert thresholds("strict.test") == (3.0, 8.0)
    assert thresholds("tagonly.test") == (2.0, 15.0)
    assert thresholds("strict.test", "tagonly.test", "other.test") == (2.0, 8.0)

    async def broken(names: Sequence[str]) -> Mapping[str, DomainFilters]:
        raise OSError("database unavailable")

    fallback = SpamFilter(RspamdClient("/nonexistent"), domain_filters=broken)
    assert asyncio.run(fallback.thresholds(info(b""))) == (6.0, 15.0)


@pytest.mark.parametrize("backend", ["sqlite"])  # the service runs on both above
def test_cli_filters_and_show(
    hosted: None, cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = cli("domain", "filters", IDN, "--spam-tag", "4.5", "--virus", "quarantine")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"domain {IDN}: filter settings changed",
        "spam tag:     4.5 (domain)",
        "spam reject:  15 (global)",
        "virus:        quarantine (domain)",
    ]
    shown = cli("domain", "show", IDN_ASCII, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["filters"] == {
        "spam_add_header_score": 4.5,
        "spam_reject_score": None,
        "virus_action": "quarantine",
    }
    assert data["effective_filters"] == {
        "spam_add_header_score": 4.5,
        "spam_reject_score": 15.0,
        "virus_action": "quarantine",
        "own": ["spam_add_header_score", "virus_action"],
    }
    bad = cli("domain", "filters", IDN, "--spam-reject", "high")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == "muninet: --spam-reject: not a score: 'high'\n"


# -- end to end: real smtpd, clamd and rspamd -----------------------------------------------

LENIENT = "sekretariat@info.association.pl"
STRICT = "urzad@gmina-scisla.pl"


def send(port: int, recipients: list[str], message: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("mail.gmina-przyklad.pl")
        client.mail("anna.nowak@gmina-przyklad.pl")
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(message)
        return code, text.decode()


def header(data: bytes, name: str) -> str:
    match = re.search(rb"^" + name.encode() + rb": (.*)\r?$", data, re.MULTILINE | re.IGNORECASE)
    assert match is not None, (name, data[:400])
    return match.group(1).decode().strip()


def test_spam_thresholds_and_virus_action_per_domain_end_to_end(
    filter_env: FilterEnv, clamd: RunningClamd, rspamd: object
) -> None:
    require_root()
    env = {
        **filter_env.env,
        "MUNINET_PATHS__STATE_DIR": str(world_traversable_tmp("muninet-domain-filters-")),
        "MUNINET_DELIVERY__MAIL_USER": "vmail",
        "MUNINET_ANTIVIRUS__ENABLED": "true",
        "MUNINET_ANTIVIRUS__ADDRESS": clamd.socket,
        "MUNINET_SPAM__ENABLED": "true",
        "MUNINET_SPAM__ADDRESS": str(rspamd.socket),  # type: ignore[attr-defined]
        "MUNINET_SMTP__LOOKUP_CACHE": "1s",
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        members.create(ctx, "scisla", "Gmina Ścisła")
        domains.create(ctx, "info.association.pl")
        domains.create(ctx, "gmina-scisla.pl", member_slug="scisla")
        mailboxes.create(ctx, LENIENT, "biuro", password="correct horse battery")
        mailboxes.create(ctx, STRICT, "scisla", password="correct horse battery")
        domains.set_filters(
            ctx,
            "gmina-scisla.pl",
            spam_add_header_score=3,
            spam_reject_score=6,
            virus_action="quarantine",
        )
    state = load_settings(env).state_dir
    mail = MailServer(env=env, state_dir=state)
    try:
        mail.start("--no-queue")
        # The global thresholds (6, 15): tagged for the lenient domain.
        assert send(mail.smtp_port, [LENIENT], BORDERLINE)[0] == 250
        (delivered,) = mail.maildir_files(LENIENT)
        stored = delivered.read_bytes()
        score = float(header(stored, "X-Spam-Score"))
        assert 6 <= score < 15 and header(stored, "X-Spam-Flag") == "YES"
        assert header(stored, "X-Spam-Status") == f"Yes, score={score:.2f} required=6.00"
        # Its own reject score 6 is below the message's score: refused for gmina-scisla.pl,
        # and for a message to both domains (the strictest threshold wins).
        refused = (550, "5.7.1 Message refused as spam")
        assert send(mail.smtp_port, [STRICT], BORDERLINE) == refused
        assert send(mail.smtp_port, [LENIENT, STRICT], BORDERLINE) == refused
        assert len(mail.maildir_files(LENIENT)) == 1 and mail.maildir_files(STRICT) == []
        # Clean mail still arrives, judged against the domain's own tag score.
        assert send(mail.smtp_port, [STRICT], CLEAN)[0] == 250
        (clean,) = mail.maildir_files(STRICT)
        assert header(clean.read_bytes(), "X-Spam-Status").endswith("required=3.00")

        # Viruses are refused for both; only gmina-scisla.pl keeps a copy.
        quarantine = state / "quarantine" / "virus"
        virus = plain_message(EICAR.decode(), subject="faktura")
        assert send(mail.smtp_port, [LENIENT], virus) == (
            554,
            f"5.7.1 Virus found: {EICAR_SIGNATURE}",
        )
        assert list(quarantine.glob("*.eml")) == []
        assert send(mail.smtp_port, [STRICT], virus)[0] == 554
        (kept,) = quarantine.glob("*.json")
        assert json.loads(kept.read_text())["recipients"] == [STRICT]

        # Back to the global values: effective once the engine's 1 s cache has passed.
        with provisioned(env, migrate=False) as ctx:
            domains.set_filters(ctx, "gmina-scisla.pl", clear=True)
        time.sleep(1.2)
        assert send(mail.smtp_port, [STRICT], BORDERLINE)[0] == 250
        assert len(mail.maildir_files(STRICT)) == 2
    finally:
        if mail.process is not None:
            mail.stop()
        shutil.rmtree(state, ignore_errors=True)
