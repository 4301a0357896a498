"""Caps enforced during a session: RFC 5176 Disconnect- and CoA-Requests to a NAS played by pyrad.

The NAS is a pyrad server on 127.0.0.1 and a free port (the NAS's `coa_port`),
decoding with FreeRADIUS's own dictionary files and verifying each request's
authenticator with the shared secret; it answers ACK, NAK or nothing as told.
Sessions come from `radacct` rows as FreeRADIUS writes them (one test has the real
FreeRADIUS write them from the NAS's accounting).
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from pyrad import packet, server
from pyrad.dictionary import Dictionary
from sqlalchemy import select as sql_select
from sqlalchemy import update
from test_cli import ok, refused

from mailhost.maintenance import Maintenance
from provisioning import radius_coa
from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.models import AuditEvent, RadAcct
from provisioning.radius_coa import Outcome, RequestKind
from provisioning.services import members, nas, plans, radius, subscribers
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings, load_settings

from conftest import FAST_HASHING, PostgresDatabases
from radius_server import DICTIONARY_DIR, Nas, dictionary, free_udp_port, start_freeradius

Unit = Callable[[], AbstractContextManager[ServiceContext]]
SECRET = "coa-secret-2468"
PW = "dial-up password 1"
GIB = 1024**3
ACTOR = Actor("cli", "test")
FAST: dict[str, Any] = {"timeout": 0.3, "tries": 2}


class FakeNas(server.Server):  # type: ignore[misc]
    """A NAS's Dynamic Authorization port: records requests, answers as configured."""

    def __init__(self, secret: str = SECRET, port: int | None = None) -> None:
        self.port = port or free_udp_port()
        super().__init__(
            coaport=self.port,
            hosts={"127.0.0.1": server.RemoteHost("127.0.0.1", secret.encode(), "muninet")},
            dict=dictionary(),
            auth_enabled=False,
            acct_enabled=False,
            coa_enabled=True,
        )
        self.BindToAddress("127.0.0.1")
        self.answers: dict[int, str] = {}  # request code -> "ack", "nak" or "silent"
        self.received: list[packet.CoAPacket] = []
        self.dropped = 0  # packets pyrad refused (e.g. a wrong authenticator)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def HandleDisconnectPacket(self, pkt: packet.CoAPacket) -> None:
        self._answer(pkt, packet.DisconnectNAK)

    def HandleCoaPacket(self, pkt: packet.CoAPacket) -> None:
        self._answer(pkt, packet.CoANAK)

    def _answer(self, pkt: packet.CoAPacket, nak: int) -> None:
        assert pkt.VerifyCoARequest()  # pyrad checked it too (enable_pkt_verify)
        self.received.append(pkt)
        mode = self.answers.get(pkt.code, "ack")
        if mode == "silent":
            return
        reply = self.CreateReplyPacket(pkt)
        if mode == "nak":
            reply.code = nak
            reply["Error-Cause"] = "Session-Context-Not-Found"
        self.SendReplyPacket(pkt.fd, reply)

    def _serve(self) -> None:
        poller = select.poll()
        sockets = {sock.fileno(): sock for sock in self.coafds}
        for fd in sockets:
            poller.register(fd, select.POLLIN)
        self._realcoafds = list(sockets)
        self._realauthfds: list[int] = []
        self._realacctfds: list[int] = []
        while not self._stop.is_set():
            for fd, _event in poller.poll(50):
                try:
                    self._ProcessInput(sockets[fd])
                except (server.ServerPacketError, packet.PacketError):
                    self.dropped += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.coafds:
            sock.close()


@pytest.fixture
def fake_nas() -> Iterator[FakeNas]:
    nas_ = FakeNas()
    yield nas_
    nas_.stop()


def _provision(ctx: ServiceContext, coa_port: int, vendor: str = "mikrotik") -> None:
    members.create(ctx, "glusk", "Gmina Głusk", max_lines=20)
    plans.create(ctx, "capped", download_bps=8_000_000, upload_bps=1_000_000, data_cap_bytes=GIB)
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
    nas.create(ctx, "nas-a", "127.0.0.1", SECRET, vendor=vendor, coa_port=coa_port)
    for name, plan in [("cap.user", "capped"), ("fair.user", "fair"), ("light.user", "capped")]:
        subscribers.create(ctx, name, "glusk", plan, PW)


def _unique(session_id: str) -> str:
    return hashlib.md5(session_id.encode()).hexdigest()


def open_session(
    db: Database,
    username: str,
    session_id: str,
    octets: int,
    *,
    nas_ip: str = "127.0.0.1",
    framed_ip: str = "10.64.0.9",
) -> None:
    """An open session this month, as FreeRADIUS's accounting queries store it."""
    now = int(time.time())
    start = max(now - 600, radius.month_bounds(*radius.parse_month(None))[0])
    with db.transaction() as session:
        session.add(
            RadAcct(
                acctsessionid=session_id,
                acctuniqueid=_unique(session_id),
                username=username,
                nasipaddress=nas_ip,
                acctstarttime=start,
                acctupdatetime=now,
                acctsessiontime=now - start,
                acctinputoctets=octets // 4,
                acctoutputoctets=octets - octets // 4,
                framedipaddress=framed_ip,
            )
        )


def audit(db: Database, action: str) -> list[AuditEvent]:
    with db.reader() as session:
        return list(
            session.scalars(
                sql_select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def test_embedded_dictionary_matches_freeradius() -> None:
    """The attributes muninet sends are those of FreeRADIUS's dictionary files."""
    ours = radius_coa.dictionary()
    theirs = Dictionary(
        *(
            os.path.join(DICTIONARY_DIR, f)
            for f in (
                "dictionary.rfc2865",
                "dictionary.rfc2866",
                "dictionary.rfc2869",
                "dictionary.rfc3576",
                "dictionary.rfc5176",
                "dictionary.mikrotik",
                "dictionary.wispr",
                "dictionary.ascend",
                "dictionary.cisco",
            )
        )
    )
    for name in ours.attributes:
        mine, debian = ours.attributes[name], theirs.attributes[name]
        assert (mine.code, mine.type, mine.vendor) == (debian.code, debian.type, debian.vendor)
        assert ours.vendors.GetForward(mine.vendor) == theirs.vendors.GetForward(debian.vendor)
    # Every attribute the plans generate for a CoA is known.
    with_fair_use = [a.attribute for a in plans._rate_attributes("fairuse", 1, 1)]
    assert with_fair_use and all(a in ours.attributes for a in with_fair_use)


def test_round_disconnects_reject_plans_and_throttles_with_coa(
    unit: Unit, db: Database, fake_nas: FakeNas
) -> None:
    with unit() as ctx:
        _provision(ctx, fake_nas.port)
    open_session(db, "cap.user", "s-cap", 2 * GIB, framed_ip="10.64.0.9")
    open_session(db, "fair.user", "s-fair", GIB + 1, framed_ip="")
    open_session(db, "light.user", "s-light", GIB // 2)

    done = {item.username: item for item in radius_coa.enforce(db, ACTOR, **FAST)}

    assert set(done) == {"cap.user", "fair.user"}  # light.user is under its cap
    assert done["cap.user"].kind is RequestKind.DISCONNECT
    assert done["cap.user"].result is not None
    assert done["cap.user"].result.outcome is Outcome.ACK
    assert done["fair.user"].kind is RequestKind.COA
    assert done["fair.user"].result is not None
    assert done["fair.user"].result.outcome is Outcome.ACK
    assert fake_nas.dropped == 0
    by_code = {pkt.code: pkt for pkt in fake_nas.received}
    assert sorted(by_code) == [packet.DisconnectRequest, packet.CoARequest]
    gone = by_code[packet.DisconnectRequest]
    assert gone["User-Name"] == ["cap.user"]
    assert gone["Acct-Session-Id"] == ["s-cap"]
    assert gone["NAS-IP-Address"] == ["127.0.0.1"]
    assert gone["Framed-IP-Address"] == ["10.64.0.9"]
    assert "Mikrotik-Rate-Limit" not in gone
    coa = by_code[packet.CoARequest]
    assert coa["User-Name"] == ["fair.user"]
    assert coa["Acct-Session-Id"] == ["s-fair"]
    assert "Framed-IP-Address" not in coa  # not known for this session
    # The fair-use rate, as FreeRADIUS would send it at login over the cap (MikroTik: up/down).
    assert coa["Mikrotik-Rate-Limit"] == ["256k/1M"]
    assert "WISPr-Bandwidth-Max-Down" not in coa  # a MikroTik NAS gets MikroTik's attributes
    events = audit(db, radius_coa.ENFORCE_ACTION)
    assert {(e.target, e.details["request"], e.details["result"]) for e in events} == {
        ("cap.user", "disconnect", "ack"),
        ("fair.user", "coa", "ack"),
    }
    assert all(SECRET not in str(e.details) for e in events)

    # Acknowledged sessions are not asked again while their Stop is on its way.
    again = radius_coa.enforce(db, ACTOR, **FAST)
    assert len(fake_nas.received) == 2
    assert {item.note for item in again} == {"acknowledged earlier"}
    assert len(audit(db, radius_coa.ENFORCE_ACTION)) == 2


def test_nak_timeout_and_a_closed_port_are_reported_not_raised(
    unit: Unit, db: Database, fake_nas: FakeNas
) -> None:
    with unit() as ctx:
        _provision(ctx, fake_nas.port, vendor="other")
    endpoint = radius_coa.Endpoint("nas-a", "127.0.0.1", fake_nas.port, SECRET)
    ref = radius_coa.SessionRef("cap.user", "s-1", "127.0.0.1")

    fake_nas.answers[packet.DisconnectRequest] = "nak"
    result = radius_coa.disconnect(endpoint, ref, timeout=0.5, tries=1)
    assert result.outcome is Outcome.NAK
    assert result.error_cause == "Session-Context-Not-Found"

    fake_nas.answers[packet.DisconnectRequest] = "silent"
    began = time.monotonic()
    result = radius_coa.disconnect(endpoint, ref, timeout=0.3, tries=2)
    assert result.outcome is Outcome.TIMEOUT
    assert 0.5 < time.monotonic() - began < 2
    assert len(fake_nas.received) == 3  # one NAK'd, two transmissions of the timed-out one

    # A wrong secret: the NAS drops the request (bad authenticator), so it times out.
    wrong = radius_coa.Endpoint("nas-a", "127.0.0.1", fake_nas.port, "not-the-secret")
    fake_nas.answers.clear()
    assert radius_coa.disconnect(wrong, ref, timeout=0.3, tries=1).outcome is Outcome.TIMEOUT
    assert fake_nas.dropped == 1

    # A port nobody listens on: Linux drops the ICMP error on an unconnected socket.
    closed = radius_coa.Endpoint("gone", "127.0.0.1", free_udp_port(), SECRET)
    assert radius_coa.disconnect(closed, ref, timeout=0.3, tries=1).outcome is Outcome.TIMEOUT
    # Nothing can be sent at all (broadcast without SO_BROADCAST): an error, not an exception.
    broadcast = radius_coa.Endpoint("bad", "255.255.255.255", 3799, SECRET)
    failed = radius_coa.disconnect(broadcast, ref, timeout=0.3, tries=1)
    assert failed.outcome is Outcome.ERROR
    assert "PermissionError" in failed.detail and SECRET not in failed.describe()

    # In a round: a refused CoA falls back to a Disconnect (the next login is throttled).
    open_session(db, "fair.user", "s-fair", 2 * GIB)
    fake_nas.received.clear()
    fake_nas.answers[packet.CoARequest] = "nak"
    (item,) = radius_coa.enforce(db, ACTOR, **FAST)
    assert item.result is not None and item.result.outcome is Outcome.NAK
    assert item.fallback is not None and item.fallback.outcome is Outcome.ACK
    assert [p.code for p in fake_nas.received] == [packet.CoARequest, packet.DisconnectRequest]
    # The vendor "other" NAS gets every vendor's fair-use attributes.
    coa = fake_nas.received[0]
    assert coa["WISPr-Bandwidth-Max-Down"] == [1_000_000]
    assert coa["Ascend-Data-Rate"] == [256_000]
    assert coa["Mikrotik-Rate-Limit"] == ["256k/1M"]
    assert any("rate-limit output 1000000" in v for v in coa["Cisco-AVPair"])

    # A silent NAS: one timeout per round, its other sessions wait for the next round.
    open_session(db, "cap.user", "s-cap-1", 2 * GIB)
    open_session(db, "cap.user", "s-cap-2", 0)
    fake_nas.received.clear()
    fake_nas.answers[packet.DisconnectRequest] = "silent"
    began = time.monotonic()
    done = radius_coa.enforce(db, ACTOR, **FAST)
    assert time.monotonic() - began < 1.5
    cap_items = [i for i in done if i.username == "cap.user"]
    assert sorted(i.result.outcome.value if i.result else i.note for i in cap_items) == [
        "skipped: NAS nas-a did not answer this round",
        "timeout",
    ]
    assert len(fake_nas.received) == 2  # two transmissions of one request


def test_maintenance_round_enforces_and_survives_a_dead_nas(
    unit: Unit, db: Database, settings: Settings, fake_nas: FakeNas
) -> None:
    with unit() as ctx:
        _provision(ctx, fake_nas.port)
        nas.create(ctx, "nas-dead", "127.0.0.9", "dead-secret-1", coa_port=free_udp_port())
    open_session(db, "cap.user", "s-live", 2 * GIB)
    open_session(db, "fair.user", "s-dead", 2 * GIB, nas_ip="127.0.0.9")
    maintenance = Maintenance(settings, None, coa_timeout=0.3, coa_tries=2)
    began = time.monotonic()
    maintenance.run_once(db)  # must not raise although nas-dead never answers
    assert time.monotonic() - began < 3
    assert [(p.code, p["Acct-Session-Id"]) for p in fake_nas.received] == [
        (packet.DisconnectRequest, ["s-live"])
    ]
    results = {
        e.details["session_id"]: e.details["result"] for e in audit(db, radius_coa.ENFORCE_ACTION)
    }
    assert results["s-live"] == "ack"
    assert results["s-dead"] == "timeout"
    assert all(e.actor_kind == "system" for e in audit(db, radius_coa.ENFORCE_ACTION))


def test_kick_disconnects_every_open_session(unit: Unit, db: Database, fake_nas: FakeNas) -> None:
    with unit() as ctx:
        _provision(ctx, fake_nas.port)
    open_session(db, "light.user", "k-1", 10, framed_ip="10.64.0.10")
    open_session(db, "light.user", "k-2", 10, framed_ip="10.64.0.11")
    kicks = radius_coa.kick(db, ACTOR, "Light.User", timeout=0.5, tries=1)
    assert sorted(k.session_id for k in kicks) == ["k-1", "k-2"]
    assert all(k.result is not None and k.result.ok for k in kicks)
    assert sorted(
        (p["Acct-Session-Id"][0], p["Framed-IP-Address"][0]) for p in fake_nas.received
    ) == [
        ("k-1", "10.64.0.10"),
        ("k-2", "10.64.0.11"),
    ]
    (event,) = audit(db, radius_coa.KICK_ACTION)
    assert event.target == "light.user"
    assert sorted(s["result"] for s in event.details["sessions"]) == ["ack", "ack"]
    assert radius_coa.kick(db, ACTOR, "cap.user") == []  # no open sessions: nothing to send


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_enforce_and_kick(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    unit: Unit,
    db: Database,
    fake_nas: FakeNas,
) -> None:
    with unit() as ctx:
        _provision(ctx, fake_nas.port)
    open_session(db, "cap.user", "c-1", 2 * GIB)
    open_session(db, "light.user", "c-2", 10)
    open_session(db, "light.user", "c-stale", 10)
    with db.transaction() as session:  # its NAS went silent an hour ago
        session.execute(
            update(RadAcct)
            .where(RadAcct.acctsessionid == "c-stale")
            .values(acctupdatetime=RadAcct.acctupdatetime - 3600)
        )
    out = ok(cli("radius", "enforce"))
    assert out.strip().splitlines() == [
        "closed 1 stale session(s)",
        "disconnect cap.user session c-1 at nas-a (data cap): ACK",
    ]
    with db.reader() as session:
        stale = session.scalars(sql_select(RadAcct).where(RadAcct.acctsessionid == "c-stale")).one()
        assert stale.acctterminatecause == "Stale-Session"
        assert stale.acctstoptime == stale.acctupdatetime
    fake_nas.answers[packet.DisconnectRequest] = "nak"
    result = cli("subscriber", "kick", "light.user")
    assert "session c-2 at nas-a: NAK (Session-Context-Not-Found)" in result.stdout
    refused(result, "could not disconnect 1 of 1 session(s) of light.user")
    refused(cli("subscriber", "kick", "nobody"), "no subscriber 'nobody'")


def test_accounting_through_freeradius_drives_the_disconnect(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    fake_nas: FakeNas,
) -> None:
    """End to end: the NAS's accounting goes through the real FreeRADIUS into radacct."""
    state = tmp_path / "rad-state"
    state.mkdir()
    dropped: tuple[PostgresDatabases, str] | None = None
    if backend == "sqlite":
        shutil.copy(request.getfixturevalue("template_sqlite"), state / "muninet.db")
        url = f"sqlite:///{state / 'muninet.db'}"
    else:
        pg: PostgresDatabases = request.getfixturevalue("postgres")
        name, url = pg.create(template=request.getfixturevalue("template_postgres"))
        dropped = (pg, name)
    env = {"MUNINET_PATHS__STATE_DIR": str(state), "MUNINET_DATABASE__URL": url, **FAST_HASHING}
    settings = load_settings(env)
    db = Database.from_settings(settings)
    try:
        with db.transaction() as session:
            _provision(
                ServiceContext(session=session, actor=ACTOR, settings=settings), fake_nas.port
            )
        freeradius, settings = start_freeradius(env)
        try:
            nas_ = Nas(settings, SECRET)
            assert nas_.accounting("cap.user", "Start", "fr-1", Framed_IP_Address="10.64.3.3") == (
                packet.AccountingResponse
            )
            assert radius_coa.enforce(db, ACTOR, **FAST) == []
            nas_.accounting(
                "cap.user",
                "Interim-Update",
                "fr-1",
                Acct_Session_Time=120,
                Acct_Output_Gigawords=1,
                Framed_IP_Address="10.64.3.3",
            )
            (item,) = radius_coa.enforce(db, ACTOR, **FAST)
        finally:
            freeradius.stop()
        assert item.result is not None and item.result.outcome is Outcome.ACK
        (pkt,) = fake_nas.received
        assert pkt.code == packet.DisconnectRequest
        assert pkt["User-Name"] == ["cap.user"]
        assert pkt["Acct-Session-Id"] == ["fr-1"]
        assert pkt["Framed-IP-Address"] == ["10.64.3.3"]
    finally:
        db.dispose()
        if dropped:
            dropped[0].drop(dropped[1])
