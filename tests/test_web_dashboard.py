"""The dashboard: service probes against real daemons, mail counters, and the charts.

Probes: a real `muninet smtpd`, Dovecot, clamd, rspamd, FreeRADIUS (Status-Server)
and the admin under a real HTTP server are all "up"; closed ports and listeners
that never answer are "down", within a second in all. Counters: mail sent through
a real `muninet smtpd` lands in `mail_counters` when the process flushes, and on
the page. Charts: the SVG bars carry the stored values, scaled to the tallest day.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from web import PASSWORD, Browser, Unit
from werkzeug.serving import make_server

from admin_ui import create_app
from mailhost.stats import CounterFlusher, MailCounters
from provisioning.db import Database
from provisioning.models import MailCounter, RadAcct
from provisioning.services import domains, mailboxes, members, plans, radius, subscribers
from provisioning.services import stats as mail_stats
from provisioning.settings import Settings, load_settings
from provisioning.status import (
    State,
    check_services,
    probe_radius_status,
    probe_udp_bound,
    queue_size,
    radius_secret,
)

from conftest import FAST_HASHING, free_port
from dovecot_server import require_root, start_dovecot, world_traversable_tmp
from filter_daemons import EICAR, GTUBE, FilterEnv, RunningClamd, plain_message
from mailserver import OFFLINE_DNS, MailServer, provisioned
from radius_server import free_udp_port, start_freeradius

pytest_plugins = ["web", "filter_daemons"]
SERVICES = ["smtp", "submission", "imap", "clamd", "rspamd", "radius", "web"]
TO = "sekretariat@info.association.pl"


def closed_ports_env(root: Path) -> dict[str, str]:
    """Every service on a 127.0.0.1 port where nothing listens."""
    return {
        "MUNINET_PATHS__STATE_DIR": str(root),
        "MUNINET_LISTEN__SMTP_PORT": str(free_port()),
        "MUNINET_LISTEN__SUBMISSION_PORT": str(free_port()),
        "MUNINET_LISTEN__SMTPS_PORT": str(free_port()),
        "MUNINET_LISTEN__IMAP_PORT": str(free_port()),
        "MUNINET_LISTEN__IMAPS_PORT": str(free_port()),
        "MUNINET_LISTEN__ADMIN_PORT": str(free_port()),
        "MUNINET_LISTEN__LOCAL_PORT": str(free_port()),
        "MUNINET_LISTEN__RADIUS_AUTH_PORT": str(free_udp_port()),
        "MUNINET_LISTEN__RADIUS_ACCT_PORT": str(free_udp_port()),
        "MUNINET_ANTIVIRUS__ADDRESS": f"127.0.0.1:{free_port()}",
        "MUNINET_SPAM__ADDRESS": f"127.0.0.1:{free_port()}",
    }


class Silent:
    """A TCP listener that accepts connections and never says anything."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


# -- probes -------------------------------------------------------------------------------


def test_everything_down_is_reported_within_a_second(tmp_path: Path) -> None:
    env = closed_ports_env(tmp_path / "state")
    silent_smtp, silent_clamd = Silent(), Silent()
    silent_radius = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent_radius.bind(("127.0.0.1", 0))
    env["MUNINET_LISTEN__SMTP_PORT"] = str(silent_smtp.port)
    env["MUNINET_ANTIVIRUS__ADDRESS"] = f"127.0.0.1:{silent_clamd.port}"
    env["MUNINET_LISTEN__RADIUS_AUTH_PORT"] = str(silent_radius.getsockname()[1])
    settings = load_settings(env)
    raddb = settings.state_dir / "freeradius"  # a secret: Status-Server to a silent port
    raddb.mkdir(parents=True)
    (raddb / "radiusd.conf").write_text("security {\n\tstatus_server = yes\n}\n")
    (raddb / "clients.conf").write_text('client x {\n\tipaddr = 127.0.0.1\n\tsecret = "s"\n}\n')
    try:
        started = time.monotonic()
        found = {s.key: s for s in check_services(settings)}
        elapsed = time.monotonic() - started
    finally:
        silent_smtp.close()
        silent_clamd.close()
        silent_radius.close()
    assert elapsed < 1.0
    assert list(found) == SERVICES
    assert {key: s.state for key, s in found.items()} == dict.fromkeys(SERVICES, State.DOWN)
    assert found["smtp"].detail == "no answer in time"
    assert found["clamd"].detail == "no answer in time"
    assert found["radius"].detail == "no answer in time"
    assert found["submission"].detail == "connection refused"
    assert found["rspamd"].detail == "connection refused"


def test_turned_off_filters_are_not_probed(tmp_path: Path) -> None:
    env = closed_ports_env(tmp_path / "state")
    env["MUNINET_ANTIVIRUS__ENABLED"] = "false"
    env["MUNINET_SPAM__ENABLED"] = "false"
    found = {s.key: s.state for s in check_services(load_settings(env))}
    assert found["clamd"] is State.OFF and found["rspamd"] is State.OFF
    assert found["smtp"] is State.DOWN


def test_radius_without_a_secret_falls_back_to_the_port(tmp_path: Path) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = int(holder.getsockname()[1])
    try:
        assert probe_udp_bound(port) == "port in use (no Status-Server)"
    finally:
        holder.close()
    with pytest.raises(Exception, match="nothing listens"):
        probe_udp_bound(port)
    # No rendered configuration, or Status-Server not enabled in it: no secret.
    assert radius_secret(tmp_path, "127.0.0.1") is None
    (tmp_path / "radiusd.conf").write_text("security {\n\tstatus_server = no\n}\n")
    (tmp_path / "clients.conf").write_text('client a {\n\tipaddr = 127.0.0.1\n\tsecret = "x"\n}\n')
    assert radius_secret(tmp_path, "127.0.0.1") is None
    (tmp_path / "radiusd.conf").write_text("security {\n\tstatus_server = yes\n}\n")
    (tmp_path / "clients.conf").write_text(
        'client a {\n\tipaddr = 192.0.2.1\n\tsecret = "other"\n}\n'
        'client b {\n\tipaddr = 127.0.0.1\n\tsecret = "q\\"uo\\\\te"\n}\n'
    )
    assert radius_secret(tmp_path, "127.0.0.1") == b'q"uo\\te'
    assert radius_secret(tmp_path, "198.51.100.1") is None


class Stack:
    """Every service of the appliance, real, on free 127.0.0.1 ports."""

    def __init__(self, filter_env: FilterEnv, clamd: RunningClamd, rspamd_socket: str) -> None:
        self.root = world_traversable_tmp("muninet-dashboard-")
        self.env = {
            **filter_env.env,
            **closed_ports_env(self.root / "state"),
            "MUNINET_DATABASE__URL": f"sqlite:///{self.root / 'state' / 'muninet.db'}",
            "MUNINET_DELIVERY__MAIL_USER": "vmail",
            "MUNINET_ANTIVIRUS__ADDRESS": clamd.socket,
            "MUNINET_SPAM__ADDRESS": rspamd_socket,
            **FAST_HASHING,
        }
        self.stoppers: list[tuple[str, object]] = []

    def start(self) -> Settings:
        with provisioned(self.env):
            pass
        freeradius, settings = start_freeradius(self.env)
        self.stoppers.append(("freeradius", freeradius))
        for name in ("RADIUS_AUTH_PORT", "RADIUS_ACCT_PORT"):
            key = f"MUNINET_LISTEN__{name}"
            self.env[key] = str(getattr(settings.listen, name.lower()))
        settings = load_settings(self.env)
        self.stoppers.append(("dovecot", start_dovecot(settings)))
        mail = MailServer(env=self.env, state_dir=settings.state_dir)
        mail.start("--no-queue")
        for name, port in [
            ("SMTP_PORT", mail.smtp_port),
            ("SUBMISSION_PORT", mail.submission_port),
            ("SMTPS_PORT", mail.smtps_port),
        ]:
            self.env[f"MUNINET_LISTEN__{name}"] = str(port)
        self.stoppers.append(("smtpd", mail))
        settings = load_settings(self.env)
        web = make_server("127.0.0.1", settings.listen.admin_port, create_app(settings))
        threading.Thread(target=web.serve_forever, daemon=True).start()
        self.stoppers.append(("web", web))
        return settings

    def stop(self) -> None:
        for name, thing in reversed(self.stoppers):
            if name == "web":
                thing.shutdown()  # type: ignore[attr-defined]
                thing.server_close()  # type: ignore[attr-defined]
            elif name == "smtpd":
                if thing.process is not None:  # type: ignore[attr-defined]
                    thing.stop()  # type: ignore[attr-defined]
            else:
                thing.stop()  # type: ignore[attr-defined]
        self.stoppers.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def test_real_services_are_up_then_down(
    filter_env: FilterEnv, clamd: RunningClamd, rspamd: object
) -> None:
    require_root()
    stack = Stack(filter_env, clamd, str(rspamd.socket))  # type: ignore[attr-defined]
    try:
        settings = stack.start()
        found = {s.key: s for s in check_services(settings, timeout=2)}
        assert {k: (s.state, s.detail) for k, s in found.items()} == {
            **dict.fromkeys(SERVICES, (State.UP, "")),
            "radius": (State.UP, "Status-Server"),
        }
        # A wrong secret gets no answer: FreeRADIUS drops a request it cannot verify.
        with pytest.raises(TimeoutError):
            probe_radius_status("127.0.0.1", settings.listen.radius_auth_port, b"wrong", 0.5)
        # The page shows it to the superadmin, with the addresses.
        with provisioned(stack.env) as ctx:
            from provisioning.services import admins

            admins.create(ctx, "root", PASSWORD)
        browser = Browser(create_app(settings))
        browser.login("root")
        page = browser.get("/").get_data(as_text=True)
        for key in SERVICES:
            row = re.search(rf'<tr id="service-{key}">(.*?)</tr>', page, re.DOTALL)
            assert row and '<span class="state up">Up</span>' in row.group(1), key
        assert f"<code>127.0.0.1:{settings.listen.smtp_port}</code>" in page
    finally:
        stack.stop()
    started = time.monotonic()
    found = {s.key: s for s in check_services(settings)}
    assert time.monotonic() - started < 1.0
    stopped = [key for key in SERVICES if key not in ("clamd", "rspamd")]  # those run on
    assert {k: found[k].state for k in stopped} == dict.fromkeys(stopped, State.DOWN)


# -- counters -----------------------------------------------------------------------------


def counts(database: Database, day: date | None = None) -> dict[str, int]:
    with database.reader() as session:
        rows = session.scalars(select(MailCounter).where(MailCounter.day == (day or date.today())))
        return {row.name: row.value for row in rows}


def test_counts_are_added_not_overwritten(db: Database) -> None:
    today = date.today()
    with db.transaction() as session:
        mail_stats.add_counts(session, {(today, "accepted"): 3, (today, "rejected"): 1})
    with db.transaction() as session:
        mail_stats.add_counts(session, {(today, "accepted"): 2, (today, "spam"): 0})
    assert counts(db) == {"accepted": 5, "rejected": 1}


def test_flusher_writes_every_interval_and_at_stop(db: Database) -> None:
    counters = MailCounters()
    flusher = CounterFlusher(counters, db, interval=0.1)
    flusher.start()
    try:
        counters.accepted()
        counters.refused("550 5.1.1 No such user")
        counters.refused("451 4.3.0 Try later")
        counters.labels(["viruses"])
        counters.labels(["tagged", "spam"])  # one message: spam once
        deadline = time.monotonic() + 5
        while counts(db) != {"accepted": 1, "rejected": 1, "deferred": 1, "viruses": 1, "spam": 1}:
            assert time.monotonic() < deadline, counts(db)
            time.sleep(0.05)
        counters.accepted()
    finally:
        flusher.stop()
    assert counts(db)["accepted"] == 2


def test_failed_flush_keeps_the_counts(db: Database, tmp_path: Path) -> None:
    counters = MailCounters()
    counters.add("accepted", 4)
    broken = Database(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no mail_counters table
    with pytest.raises(Exception, match="mail_counters"):
        counters.flush(broken)
    broken.dispose()
    assert counters.flush(db) == 4
    assert counts(db) == {"accepted": 4}


@pytest.fixture
def mail(env: dict[str, str]) -> Iterator[MailServer]:
    full = {**env, **OFFLINE_DNS, "MUNINET_LISTEN__ADMIN_PORT": str(free_port())}
    with provisioned(full) as ctx:
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        domains.create(ctx, "info.association.pl")
        mailboxes.create(ctx, TO, "biuro", password=PASSWORD)
    state = load_settings(full).state_dir
    state.mkdir(parents=True, exist_ok=True)
    server = MailServer(env=full, state_dir=state)
    server.start("--no-queue", "--workers", "2")
    yield server
    if server.process is not None:
        server.stop()


def test_mail_through_smtpd_is_counted(mail: MailServer, db: Database, unit: Unit) -> None:
    """Two worker processes, each counting; both flush at shutdown."""
    replies: Counter[int] = Counter()
    started = time.monotonic()
    for n in range(4):
        with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=20) as client:
            client.ehlo("mail.gmina-przyklad.pl")
            client.mail("anna.nowak@gmina-przyklad.pl")
            replies[client.rcpt(f"nobody-{n}@info.association.pl")[0]] += 1
            assert client.rcpt(TO)[0] == 250
            replies[client.data(plain_message(f"Wiadomość {n}"))[0]] += 1
    assert replies == {550: 4, 250: 4}
    if time.monotonic() - started < 8:  # before the first periodic flush (10 s)
        assert counts(db) == {}  # nothing written per message: counted in memory
    assert mail.stop() == 0
    assert counts(db) == {"accepted": 4, "rejected": 4}
    with unit() as ctx:
        from provisioning.services import admins

        admins.create(ctx, "root", PASSWORD)
    browser = Browser(create_app(load_settings(mail.full_env)))
    browser.login("root")
    page = browser.get("/").get_data(as_text=True)
    assert re.search(r'id="mail-accepted"><span class="n">4</span>', page)
    assert re.search(r'id="mail-rejected"><span class="n">4</span>', page)
    assert f'data-day="{date.today().isoformat()}" data-value="4"' in page


def test_viruses_and_spam_are_counted(
    filter_env: FilterEnv, clamd: RunningClamd, rspamd: object, env: dict[str, str]
) -> None:
    full = {
        **filter_env.env,
        **env,
        "MUNINET_ANTIVIRUS__ENABLED": "true",
        "MUNINET_ANTIVIRUS__ADDRESS": clamd.socket,
        "MUNINET_SPAM__ENABLED": "true",
        "MUNINET_SPAM__ADDRESS": str(rspamd.socket),  # type: ignore[attr-defined]
    }
    with provisioned(full) as ctx:
        members.create(ctx, "biuro", "Biuro Związku", kind="association")
        domains.create(ctx, "info.association.pl")
        mailboxes.create(ctx, TO, "biuro", password=PASSWORD)
    state = load_settings(full).state_dir
    state.mkdir(parents=True, exist_ok=True)
    server = MailServer(env=full, state_dir=state)  # with the filters `full` turns on
    server.start("--no-queue")
    try:
        answers = []
        for message in (plain_message(EICAR.decode()), plain_message(GTUBE.decode())):
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as client:
                client.ehlo("mail.gmina-przyklad.pl")
                client.mail("anna.nowak@gmina-przyklad.pl")
                assert client.rcpt(TO)[0] == 250
                answers.append(client.data(message)[0])
    finally:
        server.stop()
    assert answers == [554, 550]
    database = Database.from_settings(load_settings(full))
    try:
        assert counts(database) == {"rejected": 2, "viruses": 1, "spam": 1}
    finally:
        database.dispose()


# -- charts -------------------------------------------------------------------------------


def bars(page: str, chart: str) -> list[tuple[str, str, int, float]]:
    """(series, day, value, height) of each bar of one chart on the page."""
    section = page.split(f'<div id="{chart}">', 1)[1].split("</figure>", 1)[0]
    return [
        (series, day, int(value), float(height))
        for series, height, day, value in re.findall(
            r'<rect class="bar (\w+)" x="[\d.]+" y="[\d.]+" width="[\d.]+" '
            r'height="([\d.]+)" data-day="([\d-]+)" data-value="(\d+)">',
            section,
        )
    ]


def session_row(username: str, started: datetime, octets_in: int, octets_out: int) -> RadAcct:
    stamp = int(started.timestamp())
    return RadAcct(
        acctsessionid=f"s-{username}-{stamp}",
        acctuniqueid=f"{username}{stamp}"[-32:],
        username=username,
        nasipaddress="192.0.2.1",
        acctstarttime=stamp,
        acctupdatetime=stamp + 60,
        acctstoptime=stamp + 120,
        acctsessiontime=120,
        acctinputoctets=octets_in,
        acctoutputoctets=octets_out,
    )


@pytest.fixture
def charted(app: Flask, unit: Unit) -> date:
    """Mail counts on three days and traffic of two members' subscribers."""
    today = date.today()
    midnight = datetime.combine(today, datetime.min.time())
    with unit() as ctx:
        mail_stats.add_counts(
            ctx.session,
            {
                (today, "accepted"): 1234,
                (today, "rejected"): 16,
                (today, "viruses"): 2,
                (today, "spam"): 7,
                (today - timedelta(days=1), "accepted"): 625,
                (today - timedelta(days=13), "accepted"): 5,
                (today - timedelta(days=14), "accepted"): 99999,  # outside the chart
            },
        )
        plans.create(ctx, "dom")
        subscribers.create(ctx, "jan.alfa", "alfa", "dom", PASSWORD)
        subscribers.create(ctx, "ivan.beta", "beta", "dom", PASSWORD)
        ctx.session.add_all(
            [
                session_row("jan.alfa", midnight + timedelta(hours=1), 1000, 3 * 2**20),
                session_row("jan.alfa", midnight - timedelta(seconds=1), 10, 20),  # yesterday
                session_row("ivan.beta", midnight + timedelta(hours=2), 5, 2**30),
            ]
        )
        live = session_row("jan.alfa", midnight + timedelta(hours=3), 0, 0)
        live.acctstoptime = None
        ctx.session.add(live)
    return today


def test_charts_show_the_stored_values(charted: date, browser: Browser) -> None:
    browser.login("root")
    page = browser.get("/").get_data(as_text=True)
    mail_bars = bars(page, "mail-chart")
    assert len(mail_bars) == 28  # 14 days x (accepted, rejected)
    values = {(series, day): value for series, day, value, _h in mail_bars}
    today, yesterday = charted.isoformat(), (charted - timedelta(days=1)).isoformat()
    first = (charted - timedelta(days=13)).isoformat()
    assert values[("accepted", today)] == 1234 and values[("rejected", today)] == 16
    assert values[("accepted", yesterday)] == 625 and values[("accepted", first)] == 5
    assert sum(values.values()) == 1234 + 16 + 625 + 5  # the 15th day back is not drawn
    heights = {(series, day): height for series, day, _v, height in mail_bars}
    tallest = heights[("accepted", today)] + heights[("rejected", today)]
    assert tallest == pytest.approx(154, abs=0.2)  # the plot's full height
    assert heights[("accepted", yesterday)] == pytest.approx(154 * 625 / 1250, abs=0.2)
    assert re.search(r'id="mail-viruses"><span class="n">2</span>', page)
    assert re.search(r'id="mail-spam"><span class="n">7</span>', page)
    assert re.search(r'id="mail-accepted"><span class="n">1,234</span>', page)
    assert re.search(r'id="online-subscribers"><span class="n">1</span>', page)
    traffic = {(s, d): v for s, d, v, _h in bars(page, "traffic-chart")}
    assert traffic[("download", today)] == 3 * 2**20 + 2**30
    assert traffic[("upload", today)] == 1005
    assert traffic[("download", yesterday)] == 20
    assert "<title>" in page and 'style="' not in page


def test_dashboard_in_polish(charted: date, browser: Browser) -> None:
    browser.login("root")
    browser.submit("/", "/language", {"lang": "pl", "next": "/"})
    page = browser.get("/").get_data(as_text=True)
    assert "Poczta dzisiaj" in page and "Usługi" in page
    assert re.search(r'id="mail-accepted"><span class="n">1\xa0234</span>', page)
    months = ["sty", "lut", "mar", "kwi", "maj", "cze", "lip", "sie", "wrz", "paź", "lis", "gru"]
    assert f"{charted.day} {months[charted.month - 1]}" in page  # the day labels
    assert "1\xa0234 przyjęte" in page or "przyjęte 1\xa0234" in page  # a bar's title


def test_member_admin_sees_own_traffic_and_no_mail_totals(charted: date, browser: Browser) -> None:
    browser.login("admin-alfa")
    page = browser.get("/").get_data(as_text=True)
    assert 'id="mail-chart"' not in page and 'id="mail-today"' not in page
    assert "<code>" not in page  # no internal addresses
    traffic = {(s, d): v for s, d, v, _h in bars(page, "traffic-chart")}
    assert traffic[("download", charted.isoformat())] == 3 * 2**20  # beta's GiB is not here
    assert re.search(r'id="online-subscribers"><span class="n">1</span>', page)
    browser.login("admin-beta")
    page = browser.get("/").get_data(as_text=True)
    assert re.search(r'id="online-subscribers"><span class="n">0</span>', page)


def test_daily_traffic_days_follow_local_midnight(charted: date, unit: Unit) -> None:
    with unit() as ctx:
        days = radius.daily_traffic(ctx.session, 3)
        alfa = radius.daily_traffic(ctx.session, 3, "alfa")
    assert [d.day for d in days] == [charted - timedelta(days=n) for n in (2, 1, 0)]
    assert [d.total_octets for d in days] == [0, 30, 1000 + 3 * 2**20 + 5 + 2**30]
    assert [d.total_octets for d in alfa] == [0, 30, 1000 + 3 * 2**20]


def test_queue_size_counts_spooled_messages(settings: Settings) -> None:
    assert queue_size(settings) == 0
    queue = settings.state_dir / "spool" / "queue"
    queue.mkdir(parents=True)
    for name in ("a.msg", "a.state", "b.msg"):
        (queue / name).write_bytes(b"")
    assert queue_size(settings) == 2
