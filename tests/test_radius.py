"""A real FreeRADIUS, rendered by muninet, authenticating and accounting from muninet's database.

FreeRADIUS starts once per backend (SQLite, PostgreSQL) for this module; the test
plays the NAS with pyrad. Each test uses its own subscribers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from pyrad import packet
from sqlalchemy import select

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.models import CapAction, MemberStatus, RadAcct, RadPostAuth, SubscriberStatus
from provisioning.render_radius import CACHE_TTL
from provisioning.services import members, nas, plans, radius, subscribers
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings, load_settings

from conftest import BACKENDS, FAST_HASHING, PostgresDatabases, require_tool
from radius_server import Nas, start_freeradius, wait_until

SECRET = "nas-secret-1234"
MT_SECRET = "mikrotik-secret-99"
PW = "dial-up password 1"
GIB = 1024**3


@dataclass
class Radius:
    settings: Settings
    db: Database
    nas: Nas  # 127.0.0.1, vendor "other": every vendor's attributes
    mikrotik: Nas  # 127.0.0.2, vendor "mikrotik"

    def add_usage(self, username: str, octets: int, seconds: int = 60) -> None:
        """A closed session earlier this month (as if FreeRADIUS had stored it)."""
        now = int(time.time())
        start = max(now - 3600, radius.month_bounds(*radius.parse_month(None))[0])
        with self.db.transaction() as session:
            session.add(
                RadAcct(
                    acctsessionid=f"old-{username}",
                    acctuniqueid=f"old-{username}"[:32],
                    username=username,
                    nasipaddress="127.0.0.1",
                    acctstarttime=start,
                    acctupdatetime=start + seconds,
                    acctstoptime=start + seconds,
                    acctsessiontime=seconds,
                    acctinputoctets=octets // 4,
                    acctoutputoctets=octets - octets // 4,
                )
            )


def _provision(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "test"), settings=settings)
        members.create(ctx, "glusk", "Gmina Głusk", max_lines=30)
        members.create(ctx, "trun", "Община Трън", max_lines=5)
        plans.create(
            ctx,
            "fast",
            kind="pppoe",
            download_bps=8_000_000,
            upload_bps=1_000_000,
            data_cap_bytes=GIB,
            session_timeout=3600,
            idle_timeout=600,
        )
        plans.create(
            ctx,
            "dial",
            kind="dialup",
            download_bps=56_000,
            upload_bps=33_600,
            time_cap_seconds=36_000,
            port_limit=2,
            simultaneous_use=2,
        )
        plans.create(
            ctx,
            "fair",
            kind="wireless",
            download_bps=20_000_000,
            upload_bps=2_000_000,
            data_cap_bytes=GIB,
            cap_action="throttle",
            fair_use_download_bps=1_000_000,
            fair_use_upload_bps=256_000,
        )
        nas.create(ctx, "test-nas", "127.0.0.1", SECRET, vendor="other")
        nas.create(ctx, "mt", "127.0.0.2", MT_SECRET, vendor="mikrotik")
        nas.create_pool(ctx, "dyn", "10.64.0.0/16")

        def add(name: str, plan: str = "fast", member: str = "glusk", **kw: object) -> None:
            subscribers.create(ctx, name, member, plan, PW, **kw)  # type: ignore[arg-type]

        add("pap.user", static_ip="10.20.0.5")
        add("chap.user", chap=True, pool_name="dyn")
        add("ms.user")
        add("dial.user", plan="dial", chap=True)
        add("susp.user")
        add("exp.user", expires_on=date.today() - timedelta(days=2))
        add("today.user", expires_on=date.today())
        add("bound.user", calling_station_id="+48611234567")
        add("simul.user")
        add("cap.user")
        add("fair.user", plan="fair")
        add("acct.user")
        add("stale.user")
        add("trun.user", member="trun")
        add("time.user", plan="dial")
        add("enf.user")
        add("enf.fair", plan="fair")
        add("burst.clear", chap=True)  # cleartext stored (CHAP enabled)
        add("burst.crypt")  # SHA512-CRYPT only
        add("log.user")
        add("ttl.pw", chap=True)
        add("ttl.susp")
        subscribers.set_status(ctx, "susp.user", SubscriberStatus.SUSPENDED, "unpaid")
        members.set_status(ctx, "trun", MemberStatus.SUSPENDED, "contract")


@pytest.fixture(scope="module", params=BACKENDS)
def rad(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Radius]:
    state = tmp_path_factory.mktemp("radius") / "state"
    state.mkdir()
    dropped: tuple[PostgresDatabases, str] | None = None
    if request.param == "sqlite":
        shutil.copy(request.getfixturevalue("template_sqlite"), state / "muninet.db")
        url = f"sqlite:///{state / 'muninet.db'}"
    else:
        pg: PostgresDatabases = request.getfixturevalue("postgres")
        name, url = pg.create(template=request.getfixturevalue("template_postgres"))
        dropped = (pg, name)
    env = {"MUNINET_PATHS__STATE_DIR": str(state), "MUNINET_DATABASE__URL": url, **FAST_HASHING}
    settings = load_settings(env)
    db = Database.from_settings(settings)
    _provision(db, settings)
    server, settings = start_freeradius(env)
    try:
        yield Radius(
            settings=settings,
            db=db,
            nas=Nas(settings, SECRET),
            mikrotik=Nas(settings, MT_SECRET, source="127.0.0.2"),
        )
    finally:
        server.stop()
        db.dispose()
        if dropped:
            dropped[0].drop(dropped[1])


def accepted(reply: packet.Packet) -> packet.Packet:
    assert reply.code == packet.AccessAccept, reply.get("Reply-Message")
    return reply


def rejected(reply: packet.Packet, message: str) -> None:
    assert reply.code == packet.AccessReject
    assert reply["Reply-Message"] == [message]
    # A reject carries nothing but its message.
    assert "Framed-IP-Address" not in reply
    assert "Mikrotik-Rate-Limit" not in reply
    assert "Session-Timeout" not in reply


def test_pap_accept_with_plan_attributes_and_static_ip(rad: Radius) -> None:
    reply = accepted(rad.nas.pap("pap.user", PW))
    assert reply["Framed-IP-Address"] == ["10.20.0.5"]
    assert reply["Service-Type"] == ["Framed-User"]
    assert reply["Framed-Protocol"] == ["PPP"]
    assert reply["Session-Timeout"] == [3600]
    assert reply["Idle-Timeout"] == [600]
    assert reply["Acct-Interim-Interval"] == [plans.INTERIM_INTERVAL]
    assert reply["Mikrotik-Rate-Limit"] == ["1M/8M"]
    assert reply["WISPr-Bandwidth-Max-Down"] == [8_000_000]
    assert reply["WISPr-Bandwidth-Max-Up"] == [1_000_000]
    assert reply["Ascend-Xmit-Rate"] == [8_000_000]
    assert reply["Ascend-Data-Rate"] == [1_000_000]
    avpairs = reply["Cisco-AVPair"]
    assert any("rate-limit output 8000000" in v for v in avpairs), avpairs
    assert any("rate-limit input 1000000" in v for v in avpairs), avpairs
    # The 1 GiB monthly cap, as MikroTik's 32-bit limit and its gigawords.
    assert reply["Mikrotik-Total-Limit"] == [GIB % 2**32]
    assert reply["Mikrotik-Total-Limit-Gigawords"] == [GIB // 2**32]
    # User names are case-insensitive.
    accepted(rad.nas.pap("PAP.User", PW))


def test_nas_gets_only_its_vendors_attributes(rad: Radius) -> None:
    reply = accepted(rad.mikrotik.pap("pap.user", PW))
    assert reply["Mikrotik-Rate-Limit"] == ["1M/8M"]
    assert "WISPr-Bandwidth-Max-Down" not in reply
    assert "Cisco-AVPair" not in reply
    assert "Ascend-Xmit-Rate" not in reply
    assert reply["Framed-IP-Address"] == ["10.20.0.5"]


def test_chap_accept_with_pool_and_dialup_settings(rad: Radius) -> None:
    reply = accepted(rad.nas.chap("chap.user", PW))
    assert reply["Framed-Pool"] == ["dyn"]
    assert "Framed-IP-Address" not in reply
    dial = accepted(rad.nas.chap("dial.user", PW))
    assert dial["Port-Limit"] == [2]
    assert dial["Mikrotik-Rate-Limit"] == ["33600/56k"]
    # The monthly time cap bounds the session (10 h, or less if used).
    assert 0 < dial["Session-Timeout"][0] <= 36_000
    rejected(rad.nas.chap("chap.user", "wrong password 1"), "Login incorrect")


def test_mschapv2_accept_from_the_nt_hash(rad: Radius) -> None:
    reply = accepted(rad.nas.mschapv2("ms.user", PW))
    assert "MS-CHAP2-Success" in reply
    assert reply["Mikrotik-Rate-Limit"] == ["1M/8M"]
    accepted(rad.nas.mschapv2("chap.user", PW))  # from the cleartext too
    reply = rad.nas.mschapv2("ms.user", "wrong password 1")
    assert reply.code == packet.AccessReject
    # No cleartext stored for ms.user: CHAP cannot work, and says why.
    rejected(
        rad.nas.chap("ms.user", PW), "CHAP is not enabled for this account: use PAP or MS-CHAPv2"
    )
    accepted(rad.nas.pap("ms.user", PW))  # PAP from the SHA512-CRYPT hash


def test_rejects_wrong_password_and_unknown_user(rad: Radius) -> None:
    rejected(rad.nas.pap("pap.user", "wrong password 1"), "Login incorrect")
    rejected(rad.nas.pap("nobody.here", PW), "Login incorrect")


def test_suspended_expired_and_member_suspended_are_rejected_with_a_reason(rad: Radius) -> None:
    rejected(rad.nas.pap("susp.user", PW), "Account suspended: please contact your office")
    rejected(rad.nas.pap("exp.user", PW), "Account expired: please contact your office")
    accepted(rad.nas.pap("today.user", PW))  # the expiry day itself still works
    rejected(
        rad.nas.pap("trun.user", PW),
        "Service suspended for your organisation: please contact the association",
    )
    # The reason is given only to someone who knows the password.
    rejected(rad.nas.pap("susp.user", "wrong password 1"), "Login incorrect")


def test_calling_station_binding(rad: Radius) -> None:
    accepted(rad.nas.pap("bound.user", PW, Calling_Station_Id="+48611234567"))
    rejected(
        rad.nas.pap("bound.user", PW, Calling_Station_Id="+48619999999"),
        "This account may not connect from this line or device",
    )
    rejected(
        rad.nas.pap("bound.user", PW),
        "This account may not connect from this line or device",
    )


def test_second_session_over_simultaneous_use_is_rejected(rad: Radius) -> None:
    accepted(rad.nas.pap("simul.user", PW))
    assert rad.nas.accounting("simul.user", "Start", "simul-1") == packet.AccountingResponse
    rejected(
        rad.nas.pap("simul.user", PW),
        "Already logged in: no more sessions allowed for this account",
    )
    assert rad.nas.accounting("simul.user", "Stop", "simul-1", Acct_Session_Time=30) == (
        packet.AccountingResponse
    )
    accepted(rad.nas.pap("simul.user", PW))


def test_over_the_data_cap_rejects_or_throttles(rad: Radius) -> None:
    accepted(rad.nas.pap("cap.user", PW))
    rad.add_usage("cap.user", GIB + 1)
    rejected(rad.nas.pap("cap.user", PW), "Monthly data allowance used up")

    reply = accepted(rad.nas.pap("fair.user", PW))
    assert reply["Mikrotik-Rate-Limit"] == ["2M/20M"]
    rad.add_usage("fair.user", 2 * GIB)
    reply = accepted(rad.nas.pap("fair.user", PW))
    assert reply["Mikrotik-Rate-Limit"] == ["256k/1M"]
    assert reply["WISPr-Bandwidth-Max-Down"] == [1_000_000]
    assert "Reply-Message" not in reply


def test_over_the_time_cap_is_rejected(rad: Radius) -> None:
    rad.add_usage("time.user", 1000, seconds=36_000)
    rejected(rad.nas.pap("time.user", PW), "Monthly time allowance used up")


def test_accounting_start_interim_stop_gives_usage_with_gigawords(rad: Radius) -> None:
    nas_ = rad.nas
    assert nas_.accounting("acct.user", "Start", "a-1", Framed_IP_Address="10.64.1.9") == (
        packet.AccountingResponse
    )
    with rad.db.reader() as session:
        online = radius.online_sessions(session, "glusk")
        mine = [s for s in online if s.username == "acct.user"]
        assert len(mine) == 1
        assert mine[0].framed_ip == "10.64.1.9"
    nas_.accounting(
        "acct.user",
        "Interim-Update",
        "a-1",
        Acct_Session_Time=300,
        Acct_Input_Octets=1000,
        Acct_Output_Octets=5000,
        Acct_Output_Gigawords=1,
    )
    nas_.accounting(
        "acct.user",
        "Stop",
        "a-1",
        Acct_Session_Time=600,
        Acct_Input_Octets=2000,
        Acct_Input_Gigawords=0,
        Acct_Output_Octets=7,
        Acct_Output_Gigawords=3,  # the 32-bit counter wrapped three times
        Acct_Terminate_Cause="User-Request",
    )
    with rad.db.reader() as session:
        row = session.scalars(select(RadAcct).where(RadAcct.username == "acct.user")).one()
        assert row.acctstoptime is not None
        assert row.acctterminatecause == "User-Request"
        assert radius.online_sessions(session, username="acct.user") == []
        report = radius.usage(session, *radius.parse_month(None), member_slug="glusk")
        usage = next(r for r in report.rows if r.username == "acct.user")
        assert usage.sessions == 1
        assert usage.session_time == 600
        assert usage.input_octets == 2000
        assert usage.output_octets == 3 * 2**32 + 7
        assert report.members["glusk"].total_octets >= usage.total_octets


def test_stale_sessions_are_closed_and_free_the_line(rad: Radius) -> None:
    rad.nas.accounting("stale.user", "Start", "st-1")
    rejected(
        rad.nas.pap("stale.user", PW),
        "Already logged in: no more sessions allowed for this account",
    )
    with rad.db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("system", "test"), settings=rad.settings)
        assert radius.close_stale_sessions(ctx, now=time.time()) == 0  # still fresh
        closed = radius.close_stale_sessions(ctx, now=time.time() + 2 * plans.INTERIM_INTERVAL + 5)
        assert closed >= 1
    with rad.db.reader() as session:
        row = session.scalars(select(RadAcct).where(RadAcct.acctsessionid == "st-1")).one()
        assert row.acctterminatecause == "Stale-Session"
    accepted(rad.nas.pap("stale.user", PW))


def _login_log(rad: Radius, username: str) -> list[RadPostAuth]:
    with rad.db.reader() as session:
        return list(
            session.scalars(select(RadPostAuth).where(RadPostAuth.username == username)).all()
        )


def test_post_auth_log_never_holds_the_password(rad: Radius) -> None:
    # The login log is written off the login path (a spool file that FreeRADIUS's
    # detail reader feeds into radius_postauth): the rows arrive within seconds.
    secret_try = "unique-wrong-password-xyz"
    rad.nas.pap("log.user", secret_try)
    accepted(rad.nas.pap("log.user", PW, Calling_Station_Id="+48 61 'x\"y"))

    def logged() -> bool:
        return len(_login_log(rad, "log.user")) == 2

    wait_until(logged, timeout=15)
    rows = sorted(_login_log(rad, "log.user"), key=lambda r: r.id)
    assert [(r.reply, r.message) for r in rows] == [
        ("Access-Reject", "Login incorrect"),
        ("Access-Accept", ""),
    ]
    assert rows[0].nasipaddress == "127.0.0.1"
    assert abs(rows[1].authdate - time.time()) < 60
    # Escaped as rlm_sql escapes every value (=XX), never able to break the record.
    assert rows[1].callingstationid == "+48 61 =27x=22y"
    for row in rows:
        assert secret_try not in (row.message + row.callingstationid + row.username)
    raddb = rad.settings.state_dir / "freeradius"
    log = (raddb / "log" / "radius.log").read_text(errors="replace")
    assert "Login incorrect" in log
    assert secret_try not in log
    assert PW not in log
    for spool in (raddb / "log" / "login-log").iterdir():
        text = spool.read_text(errors="replace")
        assert secret_try not in text
        assert PW not in text


def test_sessions_past_their_cap_are_found_for_enforcement(rad: Radius) -> None:
    accepted(rad.nas.pap("enf.user", PW))
    accepted(rad.nas.pap("enf.fair", PW))
    rad.nas.accounting("enf.user", "Start", "enf-1")
    rad.nas.accounting("enf.fair", "Start", "enf-2")
    with rad.db.reader() as session:
        found = {o.session.username for o in radius.over_cap_sessions(session)}
        assert "enf.user" not in found
        assert "enf.fair" not in found
    rad.nas.accounting(
        "enf.user", "Interim-Update", "enf-1", Acct_Session_Time=60, Acct_Output_Gigawords=1
    )
    rad.add_usage("enf.fair", 2 * GIB)
    with rad.db.reader() as session:
        over = {o.session.username: o for o in radius.over_cap_sessions(session)}
    assert over["enf.user"].action is CapAction.REJECT
    assert over["enf.user"].reason == "data cap"
    assert over["enf.user"].session.session_id == "enf-1"
    assert over["enf.user"].nas is not None
    assert over["enf.user"].nas.name == "test-nas"
    assert over["enf.fair"].action is CapAction.THROTTLE


def test_changes_take_effect_within_the_cache_ttl(rad: Radius) -> None:
    # FreeRADIUS keeps check and reply items in memory for CACHE_TTL seconds
    # (rlm_cache): a new password, a suspension take effect at the latest then.
    new_pw = "dial-up password 2"
    accepted(rad.nas.pap("ttl.pw", PW))
    accepted(rad.nas.chap("ttl.pw", PW))
    accepted(rad.nas.pap("ttl.susp", PW))
    cached_at = time.monotonic()
    with rad.db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "test"), settings=rad.settings)
        subscribers.set_password(ctx, "ttl.pw", new_pw)
        subscribers.set_status(ctx, "ttl.susp", SubscriberStatus.SUSPENDED, "unpaid")
    changed_at = time.monotonic()
    if changed_at - cached_at < CACHE_TTL - 3:
        # Served from the cache: proof that the cache is in front of SQL.
        accepted(rad.nas.pap("ttl.pw", PW))
    deadline = changed_at + CACHE_TTL + 3
    while True:
        old = rad.nas.pap("ttl.pw", PW)
        new = rad.nas.pap("ttl.pw", new_pw)
        susp = rad.nas.pap("ttl.susp", PW)
        if (
            old.code == packet.AccessReject
            and new.code == packet.AccessAccept
            and susp.code == packet.AccessReject
        ):
            break
        assert time.monotonic() < deadline, "a change took longer than the cache TTL"
        time.sleep(0.5)
    assert susp["Reply-Message"] == ["Account suspended: please contact your office"]
    accepted(rad.nas.chap("ttl.pw", new_pw))
    rejected(rad.nas.chap("ttl.pw", PW), "Login incorrect")


def _radclient(rad: Radius, kind: str, requests: list[str]) -> dict[str, int]:
    """Send the requests with radclient, 32 in flight, no retries; its totals."""
    binary = require_tool("radclient")  # freeradius-utils
    listen = rad.settings.listen
    port = listen.radius_auth_port if kind == "auth" else listen.radius_acct_port
    result = subprocess.run(
        [binary, "-q", "-s", "-p", "32", "-r", "1", "-t", "5", f"127.0.0.1:{port}", kind, SECRET],
        input="".join(requests),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    totals = {
        what.lower(): int(number)
        for what, number in re.findall(r"^\s*(Accepted|Rejected|Lost)\s*:\s*(\d+)", output, re.M)
    }
    assert set(totals) == {"accepted", "rejected", "lost"}, output
    return totals


def test_parallel_burst_has_no_false_rejects_and_loses_no_accounting(rad: Radius) -> None:
    # 200 Access-Requests with the right password, 32 in flight: every one must be
    # accepted. A connection pool smaller than FreeRADIUS's thread pool failed most
    # of them at once ("No connections available and at max connection limit").
    # With the check/reply cache in front of SQL, the same users log in over
    # and over, PAP and CHAP mixed: what the cache keeps must not depend on the
    # method (Auth-Type is never cached) nor mix up users. Against a cold and a
    # warm cache (a second round at once).
    auth = [
        f'User-Name = "{name}"\n{kind}-Password = "{PW}"\nNAS-IP-Address = 127.0.0.1\n'
        "NAS-Port = 1\n\n"
        for n in range(100)
        for name, kind in (
            ("burst.clear", "User"),
            ("burst.crypt", "User"),
            ("burst.clear", "CHAP"),
        )
    ]
    for _ in range(2):
        assert _radclient(rad, "auth", auth) == {"accepted": 300, "rejected": 0, "lost": 0}
    # 100 sessions opened and closed, 32 packets in flight: all answered and stored.
    sessions = [
        f'User-Name = "burst.acct"\nAcct-Session-Id = "burst-{n}"\n'
        f"NAS-IP-Address = 127.0.0.1\nNAS-Port = {n}\n"
        for n in range(100)
    ]
    starts = [f"{s}Acct-Status-Type = Start\n\n" for s in sessions]
    stops = [
        f"{s}Acct-Status-Type = Stop\nAcct-Session-Time = 60\nAcct-Output-Octets = 1000\n\n"
        for s in sessions
    ]
    assert _radclient(rad, "acct", starts) == {"accepted": 100, "rejected": 0, "lost": 0}
    assert _radclient(rad, "acct", stops) == {"accepted": 100, "rejected": 0, "lost": 0}
    with rad.db.reader() as session:
        rows = session.scalars(select(RadAcct).where(RadAcct.username == "burst.acct")).all()
    assert len(rows) == 100
    assert all(r.acctstoptime is not None and r.acctoutputoctets == 1000 for r in rows)
    # The monthly rollup, kept by triggers under these parallel writes, gives
    # exactly what summing radacct gives (the report reads the rollup).
    with rad.db.reader() as session:
        month = radius.parse_month(None)
        assert radius.rollup_covers(session, *radius.month_bounds(*month))
        fast = radius.usage(session, *month).as_dict()
        assert fast == radius.usage(session, *month, rollup=False).as_dict()
        mine = [r for r in fast["subscribers"] if r["username"] == "burst.acct"]  # type: ignore[union-attr]
        assert mine[0]["sessions"] == 100
        assert mine[0]["output_octets"] == 100_000
    log = (rad.settings.state_dir / "freeradius" / "log" / "radius.log").read_text(errors="replace")
    assert "No connections available" not in log
    assert "database is locked" not in log
