"""Real Dovecot authenticating against muninet's database: schemes, refusals, quota, run."""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import smtplib
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from mailhost.errors import PermanentFailure
from mailhost.lmtp import deliver
from mailhost.supervisor import Dovecot
from provisioning.models import MemberStatus
from provisioning.passwords import PasswordHasher
from provisioning.services import domains, mail_rules, mailboxes, members, nas, plans, subscribers
from provisioning.settings import load_settings

from conftest import FAST_HASHING, missing
from dovecot_server import require_root, start_dovecot, world_traversable_tmp
from mailserver import MUNINET, NO_FILTERS, OFFLINE_DNS, free_port, provisioned, wait_for_port

PW = "correct horse battery"
DOMAIN = "gmina-glusk.pl"
SCHEMES = {"argon2id": "argon", "bcrypt": "blf", "sha512-crypt": "sha"}


@pytest.fixture(scope="module")
def imap() -> Iterator[tuple[dict[str, str], Dovecot]]:
    require_root()
    state = world_traversable_tmp("muninet-imap-")
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        "MUNINET_LISTEN__IMAP_PORT": str(free_port()),
        "MUNINET_LISTEN__IMAPS_PORT": str(free_port()),
        **FAST_HASHING,
    }
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        members.create(ctx, "gone", "Zawieszony")
        domains.create(ctx, DOMAIN, member_slug="glusk")
        domains.create(ctx, "zawieszony.pl", member_slug="gone")
        for scheme, local in SCHEMES.items():
            hasher = PasswordHasher(
                load_settings({**env, "MUNINET_PASSWORDS__SCHEME": scheme}).passwords
            )
            mailboxes.create(ctx, f"{local}@{DOMAIN}", "glusk", password_hash=hasher.hash(PW))
        mailboxes.create(ctx, f"off@{DOMAIN}", "glusk", password=PW)
        mailboxes.set_enabled(ctx, f"off@{DOMAIN}", False)
        mailboxes.create(ctx, f"quota@{DOMAIN}", "glusk", password=PW, quota=5 * 1024 * 1024)
        mailboxes.create(ctx, f"tiny@{DOMAIN}", "glusk", password=PW, quota=4096)
        mailboxes.create(ctx, "biuro@zawieszony.pl", "gone", password=PW)
        members.set_status(ctx, "gone", MemberStatus.SUSPENDED, "test")
    dovecot = start_dovecot(load_settings(env))
    yield env, dovecot
    dovecot.stop()
    shutil.rmtree(state, ignore_errors=True)


def login(env: dict[str, str], user: str, password: str = PW) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", int(env["MUNINET_LISTEN__IMAP_PORT"]))
    try:
        client.login(user, password)
    except imaplib.IMAP4.error:
        client.shutdown()
        raise
    return client


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_hash_scheme_logs_in(imap: tuple[dict[str, str], Dovecot], scheme: str) -> None:
    client = login(imap[0], f"{SCHEMES[scheme]}@{DOMAIN}")
    assert client.select("INBOX")[0] == "OK"
    client.logout()


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (f"argon@{DOMAIN}", "wrong password"),
        (f"nobody@{DOMAIN}", PW),
        (f"off@{DOMAIN}", PW),  # disabled mailbox
        ("biuro@zawieszony.pl", PW),  # suspended member
    ],
)
def test_refused_logins(imap: tuple[dict[str, str], Dovecot], user: str, password: str) -> None:
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(imap[0], user, password)


def test_login_is_case_insensitive(imap: tuple[dict[str, str], Dovecot]) -> None:
    login(imap[0], f"Argon@{DOMAIN.upper()}").logout()


def test_password_changed_by_the_cli_works_at_next_login(
    imap: tuple[dict[str, str], Dovecot],
) -> None:
    env = imap[0]
    base = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}
    result = subprocess.run(
        [str(MUNINET), "mailbox", "passwd", f"sha@{DOMAIN}", "--password-stdin"],
        input="a brand new password\n",
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    login(env, f"sha@{DOMAIN}", "a brand new password").logout()
    with pytest.raises(imaplib.IMAP4.error):
        login(env, f"sha@{DOMAIN}", PW)


def test_quota_from_the_database(imap: tuple[dict[str, str], Dovecot]) -> None:
    client = login(imap[0], f"quota@{DOMAIN}")
    status, data = client.getquotaroot("INBOX")
    client.logout()
    assert status == "OK"
    assert b"(STORAGE 0 5120)" in data[1][0]


def test_delivery_over_quota_is_refused(imap: tuple[dict[str, str], Dovecot]) -> None:
    socket_path = str(imap[1].files.lmtp_socket) if imap[1].files else ""
    small = b"Subject: fits\r\n\r\n" + b"x" * 1000 + b"\r\n"
    big = b"Subject: too big\r\n\r\n" + b"x" * 8000 + b"\r\n"
    assert deliver(socket_path, "a@example.com", [f"tiny@{DOMAIN}"], small) == {
        f"tiny@{DOMAIN}": None
    }
    outcome = deliver(socket_path, "a@example.com", [f"tiny@{DOMAIN}"], big)[f"tiny@{DOMAIN}"]
    assert isinstance(outcome, PermanentFailure)
    assert (outcome.code, outcome.enhanced) == (552, "5.2.2")


def test_muninet_run_serves_imap_smtp_radius_and_web() -> None:
    require_root()
    radtest = shutil.which("radtest")
    if radtest is None:
        missing("radtest (freeradius-utils)")
    state = world_traversable_tmp("muninet-run-")
    names = (
        "SMTP",
        "SUBMISSION",
        "SMTPS",
        "IMAP",
        "IMAPS",
        "ADMIN",
        "LOCAL",
        "RADIUS_AUTH",
        "RADIUS_ACCT",
    )
    ports = {name: free_port() for name in names}
    env = {
        "MUNINET_PATHS__STATE_DIR": str(state),
        **{f"MUNINET_LISTEN__{name}_PORT": str(port) for name, port in ports.items()},
        **FAST_HASHING,
        **OFFLINE_DNS,
        **NO_FILTERS,  # their daemons are tested in test_filters_smtp.py
    }
    with provisioned(env) as ctx:
        members.create(ctx, "glusk", "Gmina Głusk")
        domains.create(ctx, DOMAIN, member_slug="glusk")
        mailboxes.create(ctx, f"urzad@{DOMAIN}", "glusk", password=PW)
        mailboxes.create(ctx, f"wojt@{DOMAIN}", "glusk", password=PW)
        mail_rules.set_forwarding(ctx, f"wojt@{DOMAIN}", [f"urzad@{DOMAIN}"], keep_copy=False)
        plans.create(ctx, "dsl-20", download_bps=20_000_000, upload_bps=2_000_000)
        nas.create(ctx, "nas-local", "127.0.0.1", "sekret-nas-1", vendor="mikrotik")
        subscribers.create(ctx, "glusk.urzad", "glusk", "dsl-20", PW)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}
    log = open(state / "run.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(MUNINET), "run"], env={**base, **env}, stdout=log, stderr=log)
    try:
        wait_for_port(ports["IMAP"], process)
        wait_for_port(ports["SMTP"], process)
        with smtplib.SMTP("127.0.0.1", ports["SMTP"], timeout=20) as client:
            client.sendmail("a@example.com", [f"urzad@{DOMAIN}"], b"Subject: via run\r\n\r\nhi\r\n")
            # Under `muninet run` local mail passes Dovecot's Sieve: this one is forwarded.
            client.sendmail("a@example.com", [f"wojt@{DOMAIN}"], b"Subject: via wojt\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 10
        while True:
            client_imap = imaplib.IMAP4("127.0.0.1", ports["IMAP"])
            client_imap.login(f"urzad@{DOMAIN}", PW)
            client_imap.select("INBOX")
            _, direct = client_imap.search(None, "SUBJECT", '"via run"')
            _, forwarded = client_imap.search(None, "SUBJECT", '"via wojt"')
            client_imap.logout()
            if forwarded[0].split() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert direct[0].split() and forwarded[0].split()
        url = f"http://127.0.0.1:{ports['ADMIN']}/mail/config-v1.1.xml?emailaddress=urzad@{DOMAIN}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("application/xml")
            assert b"<socketType>SSL</socketType>" in response.read()
        answer = subprocess.run(
            [radtest, "glusk.urzad", PW, f"127.0.0.1:{ports['RADIUS_AUTH']}", "0", "sekret-nas-1"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "Access-Accept" in answer.stdout, answer.stdout + answer.stderr
        assert "Mikrotik-Rate-Limit" in answer.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        log.close()
    output = (state / "run.log").read_text(errors="replace")
    assert "Dovecot serves IMAP" in output
    assert "autoconfiguration) on http://127.0.0.1:" in output
    assert "FreeRADIUS serves RADIUS" in output
    assert "Traceback" not in output
    pid_file = state / "dovecot" / "run" / "master.pid"
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:  # Dovecot stopped with us
        time.sleep(0.05)
    assert not pid_file.exists()
    shutil.rmtree(state, ignore_errors=True)
