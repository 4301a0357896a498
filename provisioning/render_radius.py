"""FreeRADIUS's configuration: config/templates/freeradius/ rendered into <state_dir>/freeradius.

The rendered directory is a complete, self-contained raddb (nothing is read from
/etc/freeradius): `radiusd.conf` (modules, the `muninet` virtual server and its
policy, listening on `listen.address` with `radius_auth_port`/`radius_acct_port`),
`queries.conf`, `plan-query.conf`, `reply-query.conf` and `login-log-query.conf` (rlm_sql on
muninet's SQLite or PostgreSQL database), `clients.conf` (the `nas` table),
`dictionary` (muninet's internal attributes) and `access_reject` (what a reject
may carry). Run it with `freeradius -f -d <state_dir>/freeradius`;
`mailhost.freeradius.FreeRadius` does.

Login speed: a subscriber's check items are read from one indexed table
(`radius_check`, kept by triggers), and they and its plan's check and reply items
are kept in memory by rlm_cache for `CACHE_TTL` seconds (the plan's per plan: a
change takes effect at the latest that much later), and the login log is written to a spool file
(`log/login-log/detail`) that FreeRADIUS's own detail reader feeds into
`radius_postauth` beside the logins, so no login waits for a database write.

SQLite: muninet keeps its database in WAL mode, and FreeRADIUS waits up to
`database.sqlite_busy_timeout_ms` (5000 by default) for a lock. Debian's shipped
200 ms with a rollback journal turns lock contention into false Access-Rejects and
lost accounting under load. Each sql instance's connection pool is as large as
FreeRADIUS's thread pool (`radius_threads()`): a smaller pool fails requests at
once under parallel load ("No connections available and at max connection limit").
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from provisioning.db import Database
from provisioning.errors import ConfigError
from provisioning.render import render
from provisioning.services import nas as nas_service
from provisioning.settings import Settings

# Reply-Messages of an Access-Reject. The subscriber (or the office's helpdesk)
# reads them on the dialler or router; the password check comes first, so they
# never tell a stranger anything about an account.
MESSAGES = {
    "incorrect": "Login incorrect",
    "suspended": "Account suspended: please contact your office",
    "expired": "Account expired: please contact your office",
    "member": "Service suspended for your organisation: please contact the association",
    "calling_station": "This account may not connect from this line or device",
    "time_cap": "Monthly time allowance used up",
    "data_cap": "Monthly data allowance used up",
    "no_chap": "CHAP is not enabled for this account: use PAP or MS-CHAPv2",
    "simultaneous": "Already logged in: no more sessions allowed for this account",
}
LOCAL_CLIENT = "muninet-local"
# FreeRADIUS's worker threads, and the connections of each sql instance's pool:
# the pool must not be smaller, since FreeRADIUS fails a request at once (a false
# Access-Reject, an unanswered Accounting-Request) when no connection is free.
# Two threads per CPU: logins are CPU work (SQLite in-process, password hashes),
# and more threads than that only contend for SQLite's and malloc's locks
# (measured on 2 vCPUs: 4 threads took ~25% less CPU per login than 16, bench/README).
# At most 3 x 24 connections (and the login log's one) of PostgreSQL's default 100.
RADIUS_MIN_THREADS, RADIUS_MAX_THREADS = 4, 24
# Seconds rlm_cache keeps a subscriber's check and reply items: the longest a
# password change, a suspension, an expiry or a plan change waits to take effect
# for new logins (sessions already up are not touched by any of them).
CACHE_TTL = 10
# Users kept at most per cache (rlm_cache_rbtree evicts the oldest beyond it).
CACHE_ENTRIES = 200_000
# The share (percent) of FreeRADIUS's time the login log's reader may take; it
# reads one record at a time, so it never floods the database.
LOGIN_LOG_LOAD_FACTOR = 100


def radius_threads() -> int:
    """Two worker threads per CPU, within [RADIUS_MIN_THREADS, RADIUS_MAX_THREADS]."""
    cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on
    return min(RADIUS_MAX_THREADS, max(RADIUS_MIN_THREADS, 2 * cpus))


@dataclass(frozen=True)
class RadiusFiles:
    raddb: Path
    config: Path
    log: Path
    pid_file: Path
    # Changes whenever the NASes do: FreeRADIUS reads its clients at start only.
    nas_fingerprint: str
    # The secret of the 127.0.0.1 client when no NAS covers 127.0.0.1 (radtest).
    local_secret: str | None


@dataclass(frozen=True)
class PostgresConnect:
    host: str
    port: int
    user: str
    password: str
    dbname: str


def _quoted(value: str, what: str) -> str:
    """A value for a double-quoted FreeRADIUS config string."""
    if "${" in value or any(ord(ch) < 32 for ch in value):
        raise ConfigError(f"{what} cannot be written into FreeRADIUS's configuration")
    return value.replace("\\", "\\\\").replace('"', '\\"')


def radius_sql_connect(url: str) -> tuple[str, Path | None, PostgresConnect | None]:
    """(dialect, SQLite file, PostgreSQL parameters) from muninet's database URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return "sqlite", Path(parsed.database or "").resolve(), None
    if backend == "postgresql":
        return (
            "postgresql",
            None,
            PostgresConnect(
                host=_quoted(parsed.host or "localhost", "the database host"),
                port=parsed.port or 5432,
                user=_quoted(parsed.username or "", "the database user"),
                password=_quoted(parsed.password or "", "the database password"),
                dbname=_quoted(parsed.database or "", "the database name"),
            ),
        )
    raise ConfigError(f"FreeRADIUS cannot read a {backend} database")


def _local_secret(raddb: Path) -> str:
    path = raddb / "local-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def _clients(database: Database, raddb: Path) -> tuple[list[dict[str, str]], str, str | None]:
    with database.reader() as session:
        rows = nas_service.list_nas(session)
        fingerprint = nas_service.fingerprint(session)
        covered = nas_service.for_address(session, "127.0.0.1") is not None
    clients = [
        {
            "name": nas.name,
            "address": nas.address,
            "secret": _quoted(nas.secret, f"the secret of NAS {nas.name!r}"),
            "vendor": nas.vendor.value,
        }
        for nas in rows
    ]
    local_secret = None
    if not covered:
        local_secret = _local_secret(raddb)
        clients.append(
            {
                "name": LOCAL_CLIENT,
                "address": "127.0.0.1",
                "secret": local_secret,
                "vendor": "other",
            }
        )
    return clients, fingerprint, local_secret


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def render_radius(settings: Settings, *, reject_delay: float = 1) -> RadiusFiles:
    """Write the raddb under <state_dir>/freeradius from the settings and the `nas` table."""
    root = settings.state_dir / "freeradius"
    log_dir, run_dir = root / "log", root / "run"
    for directory in (root, log_dir, run_dir, log_dir / "login-log"):
        directory.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # it holds the NAS secrets and maybe the database password
    dialect, sqlite_file, pg = radius_sql_connect(settings.database_url)
    database = Database.from_settings(settings)
    try:
        database.require_current()
        clients, fingerprint, local_secret = _clients(database, root)
    finally:
        database.dispose()
    _write(root / "clients.conf", render("freeradius/clients.conf.j2", clients=clients))
    _write(root / "dictionary", render("freeradius/dictionary.j2"))
    _write(root / "access_reject", render("freeradius/access_reject.j2"))
    _write(root / "queries.conf", render("freeradius/queries.conf.j2"))
    _write(root / "plan-query.conf", render("freeradius/plan-query.conf.j2"))
    _write(root / "reply-query.conf", render("freeradius/reply-query.conf.j2"))
    _write(root / "login-log-query.conf", render("freeradius/login-log-query.conf.j2"))
    config = root / "radiusd.conf"
    _write(
        config,
        render(
            "freeradius/radiusd.conf.j2",
            raddb=root,
            log_dir=log_dir,
            run_dir=run_dir,
            user=None,
            group=None,
            reject_delay=reject_delay,
            dialect=dialect,
            sqlite_file=sqlite_file,
            busy_timeout=settings.database.sqlite_busy_timeout_ms,
            pg=pg,
            threads=radius_threads(),
            cache_ttl=CACHE_TTL,
            cache_entries=CACHE_ENTRIES,
            login_log_load_factor=LOGIN_LOG_LOAD_FACTOR,
            listen_address="*"
            if settings.listen.address in ("0.0.0.0", "")  # noqa: S104 - the setting's own value
            else settings.listen.address,
            auth_port=settings.listen.radius_auth_port,
            acct_port=settings.listen.radius_acct_port,
            messages={key: _quoted(text, "a message") for key, text in MESSAGES.items()},
        ),
    )
    return RadiusFiles(
        raddb=root,
        config=config,
        log=log_dir / "radius.log",
        pid_file=run_dir / "freeradius.pid",
        nas_fingerprint=fingerprint,
        local_secret=local_secret,
    )


def nas_fingerprint(settings: Settings) -> str:
    """The current fingerprint of the `nas` table (compare with `RadiusFiles.nas_fingerprint`)."""
    database = Database.from_settings(settings)
    try:
        with database.reader() as session:
            return nas_service.fingerprint(session)
    finally:
        database.dispose()
