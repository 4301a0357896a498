#!/usr/bin/env python3
"""FreeRADIUS throughput with muninet's schema, against FreeRADIUS with no SQL, same run.

    sudo .venv/bin/python bench/radius.py [--subscribers 50000] [--radacct 5000000]

On SQLite (muninet's schema, migrations at head): creates the subscribers in bulk
(credentials from `subscribers.make_credentials`), starts FreeRADIUS from muninet's
rendered configuration and measures with radclient (files of 2,000 requests, each
sent by its own `radclient -q -s -p 64`; radclient 3.2.1 busy-loops over long
files), two radclients at a time:

- PAP Access-Requests/s and false rejects (every request has the right password,
  so every Access-Reject is false), for subscribers stored with the cleartext
  (CHAP enabled) and with SHA512-CRYPT only (the default). Each group of request
  files is sent twice in a row: "cold" (each user's first login: nothing of the
  user is cached, its check items are read from SQL; the plan's items are read
  once per plan and cached) and "warm" (the same logins again within the cache's
  TTL, as after a NAS reconnects its users);
- the login log: every login must reach `radius_postauth` (written off the login
  path through a spool file): rows counted, and how long the reader needed;
- the reference: FreeRADIUS with a users file holding the same credentials and
  reply items, no SQL, no post-auth log, in the same run, its logins sent exactly
  as muninet's (the same groups of files, each twice; also once as one stream of
  files, for comparison); ratios muninet/reference;
- for every login phase, the server's CPU per request (FreeRADIUS's user + system
  time from /proc, all threads): on a shared host steadier than the rate, and
  without radclient's own share of the CPUs;
- Accounting-Requests/s (Start then Stop per session), alternately without and
  with the usage rollup's triggers on `radacct` (their cost on the accounting
  path), lost packets counted by radclient and checked against the `radacct`
  rows (every session stored and closed);
- the monthly usage report's latency (`radius.usage`) over N `radacct` rows,
  from the rollup and (for comparison) summed over `radacct`, with both results
  compared; and the time to rebuild the rollup over those rows (what migration
  0008 costs an existing installation).

FreeRADIUS's log lines with ERROR/WARNING ("No connections available", "database
is locked", ...) are counted by kind, so a false reject can be traced to its cause.

Results go to bench/results/radius-<time>.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailhost.freeradius import FreeRadius, freeradius_binary
from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.models import RadAcct, RadPostAuth, Subscriber
from provisioning.services import members, nas, plans, radius, subscribers
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings, load_settings

SECRET = "bench-nas-secret-1"  # noqa: S105 - the bench NAS's own
BATCH = 2000  # requests per radclient file
AUTH_BATCH = 1000  # per login file: a cold and a warm send of a group stay within the cache TTL
PARALLEL = 2  # radclients at a time
DISTINCT_PASSWORDS = 250  # SHA512-CRYPT hashes computed; each is shared by 200 subscribers
RESULTS = Path(__file__).resolve().parent / "results"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def username(i: int) -> str:
    return f"u{i:06d}"


def password(i: int) -> str:
    return f"bench password {i % DISTINCT_PASSWORDS:04d}"


def chap(i: int) -> bool:
    """Even subscribers store the cleartext (CHAP enabled), odd ones SHA512-CRYPT only."""
    return i % 2 == 0


def provision(settings: Settings, count: int) -> dict[int, str]:
    """Member, plan, NAS and `count` subscribers; returns the crypt hash per password index."""
    db = Database.from_settings(settings)
    db.upgrade()
    hashes: dict[int, str] = {}
    with db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "bench"), settings=settings)
        member = members.create(ctx, "bench", "Bench municipality", max_lines=count)
        plan = plans.create(
            ctx, "bench", kind="pppoe", download_bps=8_000_000, upload_bps=1_000_000
        )
        nas.create(ctx, "bench-nas", "127.0.0.1", SECRET, vendor="mikrotik")
        credentials = []
        for k in range(DISTINCT_PASSWORDS):
            made = subscribers.make_credentials(ctx, password(k), chap=False)
            hashes[k] = made.crypt
            credentials.append(made)
        rows = []
        now = datetime.now().astimezone()
        for i in range(count):
            made = credentials[i % DISTINCT_PASSWORDS]
            rows.append(
                {
                    "username": username(i),
                    "member_id": member.id,
                    "plan_id": plan.id,
                    "status": "active",
                    "status_reason": "",
                    "password_crypt": made.crypt,
                    "password_nt": made.nt,
                    "password_clear": password(i) if chap(i) else None,
                    "notes": "",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        session.execute(insert(Subscriber), rows)
    db.dispose()
    return hashes


def write_batches(directory: Path, lines: list[str], size: int = BATCH) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(0, len(lines), size):
        path = directory / f"{n // size:05d}.txt"
        path.write_text("".join(lines[n : n + size]))
        files.append(path)
    return files


def auth_requests(indexes: list[int]) -> list[str]:
    return [
        f'User-Name = "{username(i)}"\nUser-Password = "{password(i)}"\n'
        "NAS-IP-Address = 127.0.0.1\nNAS-Port = 1\n\n"
        for i in indexes
    ]


_TOTAL = re.compile(r"^\s*(Accepted|Rejected|Lost)\s*:\s*(\d+)", re.MULTILINE)
_KEYS = {"Accepted": "approved", "Rejected": "denied", "Lost": "lost"}


def _radclient(path: Path, port: int, kind: str) -> dict[str, int]:
    """One radclient over one file; its Accepted/Rejected/Lost totals."""
    result = subprocess.run(  # noqa: S603
        [
            "/usr/bin/radclient",
            "-q",
            "-s",
            "-p",
            "64",
            "-r",
            "3",
            "-t",
            "5",
            "-f",
            str(path),
            f"127.0.0.1:{port}",
            kind,
            SECRET,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    totals = {"approved": 0, "denied": 0, "lost": 0}
    for what, number in _TOTAL.findall(result.stdout + result.stderr):
        totals[_KEYS[what]] += int(number)
    return totals


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _summed(
    results: list[dict[str, int]], requests: int, elapsed: float, cpu: float | None = None
) -> dict[str, float]:
    """Totals of a phase; `cpu`: the server's CPU seconds in it (per request, in µs)."""
    summed = {k: sum(r[k] for r in results) for k in ("approved", "denied", "lost")}
    return {
        "requests": requests,
        "seconds": round(elapsed, 3),
        "per_second": round(requests / elapsed, 1),
        **summed,
        **({"server_cpu_us": round(cpu / requests * 1e6, 1)} if cpu is not None else {}),
    }


def send_cold_warm(
    files: list[Path], port: int, pid: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Each group of PARALLEL files sent twice in a row: (cold, warm) rates and totals.

    Also the server's CPU per request (process `pid`): steadier than the rate on a
    shared host, and free of radclient's own share of the 2 vCPUs.
    """
    cold: list[dict[str, int]] = []
    warm: list[dict[str, int]] = []
    cold_seconds = warm_seconds = cold_cpu = warm_cpu = 0.0
    with ThreadPoolExecutor(PARALLEL) as pool:
        for n in range(0, len(files), PARALLEL):
            group = files[n : n + PARALLEL]
            began, cpu = time.perf_counter(), cpu_seconds(pid)
            cold += pool.map(lambda path: _radclient(path, port, "auth"), group)
            cold_seconds += time.perf_counter() - began
            cold_cpu += cpu_seconds(pid) - cpu
            began, cpu = time.perf_counter(), cpu_seconds(pid)
            warm += pool.map(lambda path: _radclient(path, port, "auth"), group)
            warm_seconds += time.perf_counter() - began
            warm_cpu += cpu_seconds(pid) - cpu
    requests = sum(p.read_text().count("\n\n") for p in files)
    return (
        _summed(cold, requests, cold_seconds, cold_cpu),
        _summed(warm, requests, warm_seconds, warm_cpu),
    )


def merged(phases: tuple[dict[str, float], ...]) -> dict[str, float]:
    """Phases of the same kind counted as one (requests, time and CPU summed)."""
    requests = sum(p["requests"] for p in phases)
    totals = {k: int(sum(p[k] for p in phases)) for k in ("approved", "denied", "lost")}
    cpu = sum(p["server_cpu_us"] * p["requests"] for p in phases) / 1e6
    return _summed([totals], int(requests), sum(p["seconds"] for p in phases), cpu)


def send(files: list[Path], port: int, kind: str, pid: int | None = None) -> dict[str, float]:
    """Send the files (PARALLEL radclients at a time); rate, totals, the server's CPU (`pid`)."""
    requests = sum(p.read_text().count("\n\n") for p in files)
    began = time.perf_counter()
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda path: _radclient(path, port, kind), files))
    used = cpu_seconds(pid) - cpu if pid is not None else None
    return _summed(results, requests, time.perf_counter() - began, used)


USERS_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
libdir = /usr/lib/freeradius
raddbdir = {raddb}
confdir = ${{raddbdir}}
logdir = {raddb}
run_dir = {raddb}
pidfile = {raddb}/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no
proxy_requests = no
log {{
	destination = files
	file = {raddb}/radius.log
	auth = yes
}}
security {{
	reject_delay = 0
	status_server = yes
}}
thread pool {{
	start_servers = 5
	max_servers = 32
	min_spare_servers = 3
	max_spare_servers = 10
	max_requests_per_server = 0
}}
$INCLUDE {clients}
modules {{
	pap {{
		normalise = yes
	}}
	files {{
		filename = {raddb}/users
	}}
}}
server reference {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		files
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
	}}
}}
"""


def start_users_file(
    root: Path, count: int, hashes: dict[int, str], clients: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """FreeRADIUS with the same credentials and reply items in a users file: no SQL."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    entries = []
    for i in range(count):
        check = (
            f'Cleartext-Password := "{password(i)}"'
            if chap(i)
            else f'Crypt-Password := "{hashes[i % DISTINCT_PASSWORDS]}"'
        )
        entries.append(
            f"{username(i)} {check}\n"
            "\tService-Type = Framed-User, Framed-Protocol = PPP, Acct-Interim-Interval = 300,\n"
            '\tMikrotik-Rate-Limit = "1M/8M"\n\n'
        )
    (root / "users").write_text("".join(entries))
    (root / "radiusd.conf").write_text(USERS_CONF.format(raddb=root, clients=clients, port=port))
    binary = freeradius_binary()
    assert binary is not None
    log = (root / "stdout.log").open("ab")
    process = subprocess.Popen(  # noqa: S603
        [binary, "-f", "-d", str(root)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while (
        b"Ready to process requests" not in (root / "radius.log").read_bytes()
        if (root / "radius.log").exists()
        else True
    ):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the users-file FreeRADIUS did not start")
        time.sleep(0.1)
    return process, port


def load_radacct(db_file: Path, rows: int, users: int) -> float:
    """`rows` closed sessions spread over the last 365 days (about 1/12 in this month)."""
    now = int(time.time())
    began = time.perf_counter()
    con = sqlite3.connect(db_file)
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?),
        s(i, st, secs) AS (
            SELECT i, ? - 365 * 86400 + (i * 6311) % (365 * 86400), (i * 13) % 86400 FROM n)
        INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid,
            nasporttype, acctstarttime, acctupdatetime, acctstoptime, acctinterval,
            acctsessiontime, acctinputoctets, acctoutputoctets, acctterminatecause,
            calledstationid, callingstationid, framedipaddress, framedprotocol, servicetype)
        SELECT 'h' || i, 'hist' || i, printf('u%06d', (i * 7919) % ?), '127.0.0.1', '1',
            'Virtual', st, st + secs, st + secs, 300, secs,
            (i * 104729) % 5000000000, (i * 1299709) % 50000000000,
            'User-Request', '', '', '', 'PPP', 'Framed-User'
        FROM s
        """,
        (rows, now, users),
    )
    con.commit()
    con.execute("ANALYZE")
    con.commit()
    con.close()
    return time.perf_counter() - began


def time_report(db: Database, repeat: int = 7) -> dict[str, object]:
    """The monthly usage report (`muninet usage`), all members and one member, in ms."""
    year, month = radius.parse_month(None)
    start, end = radius.month_bounds(year, month)
    timings: list[float] = []
    rows = 0
    for _ in range(repeat):
        with db.reader() as session:
            began = time.perf_counter()
            report = radius.usage(session, year, month)
            timings.append((time.perf_counter() - began) * 1000)
            rows = len(report.rows)
    member: list[float] = []
    for _ in range(repeat):
        with db.reader() as session:
            began = time.perf_counter()
            radius.usage(session, year, month, "bench")
            member.append((time.perf_counter() - began) * 1000)
    summed: list[float] = []
    for _ in range(3):
        with db.reader() as session:
            began = time.perf_counter()
            slow = radius.usage(session, year, month, rollup=False)
            summed.append((time.perf_counter() - began) * 1000)
    with db.reader() as session:
        covered = radius.rollup_covers(session, start, end)
        sql = report_sql_ms(session, start, repeat)
        identical = radius.usage(session, year, month).as_dict() == slow.as_dict()
    with db.reader() as session:
        in_month = session.scalar(
            select(func.count())
            .select_from(RadAcct)
            .where(RadAcct.acctstarttime >= start, RadAcct.acctstarttime < end)
        )
    return {
        "month": f"{year:04d}-{month:02d}",
        "radacct_rows_in_month": in_month,
        "subscribers_in_report": rows,
        "report_ms_median": round(statistics.median(timings), 1),
        "report_ms_max": round(max(timings), 1),
        "member_report_ms_median": round(statistics.median(member), 1),
        "member_report_ms_max": round(max(member), 1),
        "report_sql_only_ms_median": round(statistics.median(sql), 1),
        "runs": repeat,
        "from_rollup": covered,
        "radacct_sum_ms_median": round(statistics.median(summed), 1),
        "rollup_equals_radacct_sum": identical,
    }


def report_sql_ms(session: Session, start: int, repeat: int) -> list[float]:
    """The report's rollup query alone, through sqlite3 (no SQLAlchemy, no Python rows), in ms."""
    query = radius._usage_from_rollup(start)  # the bench splits SQL time from Python time
    sql = str(query.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
    cursor = session.connection().connection.cursor()
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        cursor.execute(sql)
        cursor.fetchall()
        timings.append((time.perf_counter() - began) * 1000)
    cursor.close()
    return timings


_LOG_KINDS = {
    "no_connections": "No connections available",
    "database_locked": "database is locked",
    "cannot_proxy": "Cannot proxy",
    "busy": "busy",
    "sql_error": "rlm_sql",
}


def log_problems(log: Path, offset: int) -> dict[str, object]:
    """ERROR/WARNING lines FreeRADIUS wrote since `offset`, counted by kind."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if "Error" in line or "WARNING" in line]
    kinds = {k: sum(1 for line in lines if needle in line) for k, needle in _LOG_KINDS.items()}
    rejects = sum(1 for line in text.splitlines() if "Login incorrect" in line)
    return {"lines": len(lines), "kinds": kinds, "login_incorrect": rejects, "sample": lines[:8]}


def rendered_settings(config: Path) -> dict[str, str]:
    """The thread and connection pool settings FreeRADIUS ran with (from radiusd.conf)."""
    keys = ("start_servers", "max_servers", "start", "min", "max", "spare", "busy_timeout")
    found: dict[str, str] = {}
    for raw in config.read_text().splitlines():
        line = raw.strip()
        key, _, value = line.partition(" = ")
        if key in keys and f"first_{key}" not in found:
            found[f"first_{key}"] = value
    return found


ROLLUP_TRIGGERS = ("radacct_monthly_insert", "radacct_monthly_update", "radacct_monthly_delete")


def drop_rollup_triggers(db_file: Path) -> list[str]:
    """Drop the rollup's triggers on radacct; their SQL, to put them back."""
    con = sqlite3.connect(db_file)
    rows = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'radacct'"
    ).fetchall()
    assert sorted(name for name, _ in rows) == sorted(ROLLUP_TRIGGERS), rows
    for name, _ in rows:
        con.execute(f"DROP TRIGGER {name}")
    con.commit()
    con.close()
    return [sql for _, sql in rows]


def restore_rollup_triggers(db_file: Path, statements: list[str], settings: Settings) -> float:
    """Put the triggers back and rebuild the rollup (rows written meanwhile); seconds."""
    con = sqlite3.connect(db_file)
    for statement in statements:
        con.execute(statement)
    con.commit()
    con.close()
    db = Database.from_settings(settings)
    began = time.perf_counter()
    with db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "bench"), settings=settings)
        radius.rebuild_usage_rollup(ctx)
    db.dispose()
    return time.perf_counter() - began


def postauth_rows(db: Database) -> int:
    with db.reader() as session:
        return int(session.scalar(select(func.count()).select_from(RadPostAuth)) or 0)


def wait_for_login_log(db: Database, expected: int, timeout: float = 600) -> dict[str, float]:
    """Wait until every login is in radius_postauth; the reader's backlog and its drain rate."""
    began = time.perf_counter()
    at_end = postauth_rows(db)
    rows = at_end
    while rows < expected and time.perf_counter() - began < timeout:
        time.sleep(0.5)
        rows = postauth_rows(db)
    seconds = time.perf_counter() - began
    return {
        "logins_sent": expected,
        "rows": rows,
        "missing": expected - rows,
        "backlog_at_end_of_logins": expected - at_end,
        "drain_seconds": round(seconds, 1),
        "drain_per_second": round((rows - at_end) / seconds, 1) if seconds else 0.0,
    }


def accounting_files(
    root: Path, sessions: int, count: int, first: int = 0
) -> tuple[list[Path], list[Path]]:
    now = int(time.time())
    starts, stops = [], []
    for n in range(first, first + sessions):
        i = (n * 7) % count
        common = (
            f'User-Name = "{username(i)}"\nAcct-Session-Id = "bench-{n}"\n'
            f"NAS-IP-Address = 127.0.0.1\nNAS-Port = {n}\n"
        )
        starts.append(f"{common}Acct-Status-Type = Start\nEvent-Timestamp = {now}\n\n")
        stops.append(
            f"{common}Acct-Status-Type = Stop\nAcct-Session-Time = 600\n"
            f"Acct-Input-Octets = {n}\nAcct-Output-Octets = 1000\n"
            f"Acct-Output-Gigawords = 1\nEvent-Timestamp = {now + 600}\n\n"
        )
    return (
        write_batches(root / f"acct-start-{first}", starts),
        write_batches(root / f"acct-stop-{first}", stops),
    )


def measure_freeradius(  # noqa: PLR0915 - one run, step by step
    args: argparse.Namespace, settings: Settings, root: Path, hashes: dict[int, str]
) -> dict[str, object]:
    """Logins (muninet and the users file), the login log and accounting, one FreeRADIUS run."""
    results: dict[str, object] = {}
    state = settings.paths.state_dir
    count = args.subscribers
    # Spread over all subscribers, half of them cleartext (even), half crypt (odd).
    picked = [(i * 7919) % count for i in range(args.requests)]
    clear_ids = [i for i in picked if chap(i)]
    crypt_ids = [i for i in picked if not chap(i)]

    server = FreeRadius(settings, reject_delay=0)
    files = server.start(timeout=60)
    results["freeradius_config"] = rendered_settings(files.config)
    offset = files.log.stat().st_size
    auth_port = settings.listen.radius_auth_port
    measured: dict[str, dict[str, float]] = {}
    db = Database.from_settings(settings)
    db_file = state / "muninet.db"
    try:
        for label, ids in (("cleartext", clear_ids), ("sha512crypt", crypt_ids)):
            batches = write_batches(root / f"auth-{label}", auth_requests(ids), AUTH_BATCH)
            assert server.process is not None
            cold, warm = send_cold_warm(batches, auth_port, server.process.pid)
            measured[f"muninet_{label}_cold"] = cold
            measured[f"muninet_{label}_warm"] = warm
            print(label, "cold", cold, "warm", warm)
        results["login_log"] = wait_for_login_log(db, 2 * len(picked))
        print("login log:", results["login_log"])
        acct_port = settings.listen.radius_acct_port
        # Alternately without and with the rollup's triggers, a quarter each.
        quarter = args.sessions // 4
        acct: dict[str, list[dict[str, float]]] = {}
        rebuilds = []
        for n, triggers in enumerate((False, True, False, True)):
            saved = [] if triggers else drop_rollup_triggers(db_file)
            start_files, stop_files = accounting_files(root, quarter, count, n * quarter)
            for kind, files_ in (("start", start_files), ("stop", stop_files)):
                key = f"accounting_{kind}_{'rollup' if triggers else 'no_rollup'}"
                acct.setdefault(key, []).append(send(files_, acct_port, "acct"))
                print(key, acct[key][-1])
            if saved:
                rebuilds.append(restore_rollup_triggers(db_file, saved, settings))
        for key, runs in acct.items():
            measured[key] = _summed(
                [{k: int(r[k]) for k in ("approved", "denied", "lost")} for r in runs],
                int(sum(r["requests"] for r in runs)),
                sum(r["seconds"] for r in runs),
            )
        results["rollup_rebuild_after_accounting_seconds"] = [round(s, 2) for s in rebuilds]
    finally:
        server.stop()
        results["freeradius_log"] = log_problems(files.log, offset)
        print("FreeRADIUS log:", results["freeradius_log"])

    with db.reader() as session:
        stored = session.scalar(select(func.count()).select_from(RadAcct)) or 0
        closed = (
            session.scalar(
                select(func.count()).select_from(RadAcct).where(RadAcct.acctstoptime.is_not(None))
            )
            or 0
        )
    results["accounting_check"] = {
        "sessions_sent": 4 * quarter,
        "radacct_rows": stored,
        "closed": closed,
        "lost": 4 * quarter - closed,
    }
    print("radacct check:", results["accounting_check"])

    reference, ref_port = start_users_file(
        root / "reference", count, hashes, files.raddb / "clients.conf"
    )
    try:
        for label in ("cleartext", "sha512crypt"):
            batches = sorted((root / f"auth-{label}").glob("*.txt"))
            send(batches[:2], ref_port, "auth")  # warm-up
            # Sent exactly as muninet's logins were (groups of PARALLEL files, each
            # group twice, a pause for the slowest radclient after each): both
            # passes are the same for a users file, and count together.
            passes = send_cold_warm(batches, ref_port, reference.pid)
            measured[f"users_file_{label}"] = merged(passes)
            print("users file", label, measured[f"users_file_{label}"])
        # And as one stream of files (no pause between groups), for comparison.
        batches = sorted((root / "auth-cleartext").glob("*.txt"))
        measured["users_file_cleartext_one_stream"] = send(batches, ref_port, "auth", reference.pid)
        print("users file cleartext, one stream", measured["users_file_cleartext_one_stream"])
    finally:
        reference.terminate()
        reference.wait(timeout=15)
    results["measured"] = measured
    ratios: dict[str, float] = {}
    for label in ("cleartext", "sha512crypt"):
        ref = measured[f"users_file_{label}"]["per_second"]
        for phase in ("cold", "warm"):
            got = measured[f"muninet_{label}_{phase}"]["per_second"]
            ratios[f"{label}_{phase}"] = round(got / ref, 3) if ref else 0.0
    results["ratio_vs_users_file"] = ratios
    db.dispose()
    return results


def bench_settings(state: Path) -> Settings:
    return load_settings(
        {
            "MUNINET_PATHS__STATE_DIR": str(state),
            "MUNINET_DATABASE__URL": f"sqlite:///{state / 'muninet.db'}",
            "MUNINET_LISTEN__RADIUS_AUTH_PORT": str(free_udp_port()),
            "MUNINET_LISTEN__RADIUS_ACCT_PORT": str(free_udp_port()),
        }
    )


def retime(root: Path) -> int:
    """Only the report timing, on a kept work directory's database (a quieter moment)."""
    db = Database.from_settings(bench_settings(root / "state"))
    load = os.getloadavg()
    report = time_report(db)
    db.dispose()
    print(json.dumps({"load_average": [load, os.getloadavg()], **report}, indent=2))
    return 0


def main() -> int:
    global PARALLEL  # noqa: PLW0603 - a command-line option
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=50_000, help="auth requests per pass")
    parser.add_argument("--sessions", type=int, default=20_000, help="accounting sessions")
    parser.add_argument(
        "--radacct", type=int, default=5_000_000, help="radacct rows for the report"
    )
    parser.add_argument("--parallel", type=int, default=PARALLEL, help="radclients at a time")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no FreeRADIUS: provision, load radacct, time the usage report",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="DIR",
        help="time the report again on the work directory of a BENCH_KEEP=1 run",
    )
    args = parser.parse_args()
    PARALLEL = args.parallel
    if args.reuse:
        return retime(args.reuse)
    if not args.report_only and (
        freeradius_binary() is None or not Path("/usr/bin/radclient").exists()
    ):
        print("needs freeradius and freeradius-utils", file=sys.stderr)
        return 1
    results: dict[str, object] = {
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "subscribers": args.subscribers,
        "backend": "sqlite",
        "report_only": args.report_only,
        "load_average_at_start": os.getloadavg(),
        "radclient": f"files of {BATCH}, radclient -q -s -p 64 -r 3 -t 5, {PARALLEL} at a time",
    }
    keep = bool(os.environ.get("BENCH_KEEP"))
    with (
        nullcontext(tempfile.mkdtemp(prefix="muninet-radius-bench-"))
        if keep
        else tempfile.TemporaryDirectory(prefix="muninet-radius-bench-")
    ) as tmp:
        print("working in", tmp)
        root = Path(tmp)
        state = root / "state"
        state.mkdir()
        settings = bench_settings(state)
        began = time.perf_counter()
        hashes = provision(settings, args.subscribers)
        results["provision_seconds"] = round(time.perf_counter() - began, 1)
        print(f"{args.subscribers} subscribers in {results['provision_seconds']} s")

        if not args.report_only:
            results.update(measure_freeradius(args, settings, root, hashes))
        count = args.subscribers
        db = Database.from_settings(settings)
        db_file = state / "muninet.db"
        if args.radacct:
            saved = drop_rollup_triggers(db_file)
            seconds = load_radacct(db_file, args.radacct, count)
            print(f"{args.radacct} radacct rows loaded in {seconds:.0f} s")
            results["radacct_load_seconds"] = round(seconds, 1)
            rebuild = restore_rollup_triggers(db_file, saved, settings)
            print(f"rollup rebuilt over them in {rebuild:.1f} s")
            results["rollup_rebuild_seconds"] = round(rebuild, 1)
        with db.reader() as session:
            results["radacct_rows"] = session.scalar(select(func.count()).select_from(RadAcct))
        results["report"] = time_report(db)
        db.dispose()

    results["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"radius-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results)
    print(f"results: {out}")
    return 0


def print_summary(results: dict[str, object]) -> None:
    print()
    if "measured" in results:
        print_logins(results)
    print("usage report:", results["report"], "over", results["radacct_rows"], "radacct rows")


def print_logins(results: dict[str, object]) -> None:
    measured = results["measured"]
    ratios = results["ratio_vs_users_file"]
    assert isinstance(measured, dict)
    assert isinstance(ratios, dict)
    print(
        f"{'PAP Access-Requests':40} {'req/s':>9} {'rejects':>8} {'lost':>6} {'vs users':>9}"
        f" {'server CPU/req':>15}"
    )
    for label in ("cleartext", "sha512crypt"):
        ref = measured[f"users_file_{label}"]
        print(
            f"{'users file (no SQL), ' + label:40} {ref['per_second']:9.0f} "
            f"{ref['denied']:8d} {ref['lost']:6d} {'1.00':>9} {ref['server_cpu_us']:12.1f} µs"
        )
        for phase in ("cold", "warm"):
            got = measured[f"muninet_{label}_{phase}"]
            print(
                f"{'muninet SQL, ' + label + ', ' + phase:40} {got['per_second']:9.0f} "
                f"{got['denied']:8d} {got['lost']:6d} {ratios[f'{label}_{phase}']:9.2f}"
                f" {got['server_cpu_us']:12.1f} µs"
            )
    stream = measured["users_file_cleartext_one_stream"]
    print(
        f"{'(users file, cleartext, one stream)':40} {stream['per_second']:9.0f} "
        f"{stream['denied']:8d} {stream['lost']:6d} {'':>9} {stream['server_cpu_us']:12.1f} µs"
    )
    for kind in ("start", "stop"):
        for mode in ("no_rollup", "rollup"):
            got = measured[f"accounting_{kind}_{mode}"]
            print(
                f"{'accounting ' + kind + ', ' + mode.replace('_', ' '):40} "
                f"{got['per_second']:9.0f} {got['denied']:8d} {got['lost']:6d}"
            )
    print("login log:", results["login_log"])
    print("radacct check:", results["accounting_check"])
    print("FreeRADIUS log:", results["freeradius_log"])


if __name__ == "__main__":
    sys.exit(main())
