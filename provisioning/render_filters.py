"""Configurations of the filter daemons muninet starts: clamd and rspamd.

Rendered from config/templates/clamav/ and config/templates/rspamd/ into
<state_dir>/clamav and <state_dir>/rspamd:

    <state_dir>/clamav/clamd.conf          clamd -c this
    <state_dir>/clamav/run/clamd.sock      the socket muninet scans through (+ clamd.pid)
    <state_dir>/clamav/tmp/                clamd's temporary files
    <state_dir>/clamav/clamd.log

    <state_dir>/rspamd/conf/               LOCAL_CONFDIR: local.d/ and override.d/ files;
                                           the rules are Debian's, in /etc/rspamd
    <state_dir>/rspamd/db/                 DBDIR: compiled rules (kept: a warm start
                                           takes under a second, a cold one ~10 s)
    <state_dir>/rspamd/run/normal.sock     the scanner (HTTP /checkv2); controller.sock
    <state_dir>/rspamd/log/rspamd.log

Run as root, the daemons drop to their Debian users (`clamav`, `_rspamd`), which
own run/, tmp/, db/ and log/. Those users must be able to reach the state
directory; a state directory they cannot traverse is refused with a clear error.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ConfigError
from provisioning.render import check_reachable, render
from provisioning.settings import Settings

CLAMD_USER = "clamav"
RSPAMD_USER = "_rspamd"
# rspamd's rules, maps and Lua code: Debian's, used as they are.
RSPAMD_MAIN_CONFIG = Path("/etc/rspamd/rspamd.conf")


def clamd_address(settings: Settings) -> str:
    """The clamd muninet scans with: the configured one, or the one it starts itself."""
    return settings.antivirus.address or str(settings.state_dir / "clamav" / "run" / "clamd.sock")


def rspamd_address(settings: Settings) -> str:
    """rspamd's normal worker: the configured one, or the one muninet starts itself."""
    return settings.spam.address or str(settings.state_dir / "rspamd" / "run" / "normal.sock")


def daemon_user(name: str) -> tuple[str, int, int] | None:
    """(user, uid, gid) a daemon started by root drops to; None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"the user {name!r} does not exist: install the Debian package that creates it"
        ) from None
    return name, entry.pw_uid, entry.pw_gid


def _check_traversable(path: Path, uid: int, gid: int, user: str) -> None:
    check_reachable(
        path, uid, gid, user, "use a state directory it can reach (e.g. /var/lib/muninet)"
    )


def _owned_dir(path: Path, owner: tuple[str, int, int] | None, mode: int = 0o750) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner[1], owner[2])


@dataclass(frozen=True)
class ClamdFiles:
    config: Path
    socket: Path
    pid_file: Path
    log: Path
    database_dir: Path
    tcp_port: int | None


def render_clamd(settings: Settings, *, tcp_port: int | None = None) -> ClamdFiles:
    """Write <state_dir>/clamav/clamd.conf; `tcp_port` also listens on 127.0.0.1 (tests)."""
    av = settings.antivirus
    root = settings.state_dir / "clamav"
    run_dir, tmp_dir = root / "run", root / "tmp"
    owner = daemon_user(CLAMD_USER)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    _owned_dir(run_dir, owner)
    _owned_dir(tmp_dir, owner, 0o700)
    database_dir = Path(av.database_dir).expanduser().resolve()
    if owner is not None:
        _check_traversable(run_dir, owner[1], owner[2], owner[0])
        _check_traversable(database_dir, owner[1], owner[2], owner[0])
    files = ClamdFiles(
        config=root / "clamd.conf",
        socket=run_dir / "clamd.sock",
        pid_file=run_dir / "clamd.pid",
        log=root / "clamd.log",
        database_dir=database_dir,
        tcp_port=tcp_port,
    )
    files.config.write_text(
        render(
            "clamav/clamd.conf.j2",
            socket=files.socket,
            tcp_port=tcp_port,
            user=owner[0] if owner else None,
            pid_file=files.pid_file,
            tmp_dir=tmp_dir,
            database_dir=database_dir,
            log=files.log,
            stream_max_length=av.max_stream_size,
            max_threads=max(av.max_parallel, 2),
        )
    )
    return files


@dataclass(frozen=True)
class RspamdFiles:
    confdir: Path
    db_dir: Path
    run_dir: Path
    log_dir: Path
    log: Path
    socket: Path
    controller_socket: Path
    user: str | None  # the user its workers run as, when started by root

    def command(self, binary: str) -> list[str]:
        """rspamd in the foreground with Debian's rules and our local configuration."""
        args = [binary, "-f", "-c", str(RSPAMD_MAIN_CONFIG)]
        if self.user is not None:
            args += ["-u", self.user, "-g", self.user]
        return [
            *args,
            f"--var=LOCAL_CONFDIR={self.confdir}",
            f"--var=DBDIR={self.db_dir}",
            f"--var=RUNDIR={self.run_dir}",
            f"--var=LOGDIR={self.log_dir}",
        ]


_RSPAMD_LEVELS = {"DEBUG": "info", "INFO": "info", "WARNING": "warning", "ERROR": "error"}


def render_rspamd(settings: Settings) -> RspamdFiles:
    """Write rspamd's local configuration under <state_dir>/rspamd."""
    root = settings.state_dir / "rspamd"
    confdir = root / "conf"
    owner = daemon_user(RSPAMD_USER)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    files = RspamdFiles(
        confdir=confdir,
        db_dir=root / "db",
        run_dir=root / "run",
        log_dir=root / "log",
        log=root / "log" / "rspamd.log",
        socket=root / "run" / "normal.sock",
        controller_socket=root / "run" / "controller.sock",
        user=owner[0] if owner else None,
    )
    for directory in (files.db_dir, files.run_dir, files.log_dir):
        _owned_dir(directory, owner)
    if owner is not None:
        _check_traversable(files.run_dir, owner[1], owner[2], owner[0])
    # Only what we render lives here: files from an older version do not linger.
    shutil.rmtree(confdir, ignore_errors=True)
    for sub in ("local.d", "override.d"):
        (confdir / sub).mkdir(parents=True, mode=0o755)
    confdir.chmod(0o755)
    dns = settings.dns
    nameservers = [
        f"[{ns}]:{dns.port}" if ":" in ns else f"{ns}:{dns.port}" for ns in dns.nameservers
    ]
    outputs = {
        "override.d/worker-normal.inc": render(
            "rspamd/worker-normal.inc.j2", socket=files.socket, count=os.cpu_count() or 1
        ),
        "override.d/worker-controller.inc": render(
            "rspamd/worker-controller.inc.j2", socket=files.controller_socket
        ),
        "override.d/worker-proxy.inc": render("rspamd/worker-proxy.inc.j2"),
        "local.d/options.inc": render("rspamd/options.inc.j2", nameservers=nameservers),
        "local.d/actions.conf": render(
            "rspamd/actions.conf.j2",
            reject_score=settings.spam.reject_score,
            add_header_score=settings.spam.add_header_score,
        ),
        "local.d/logging.inc": render(
            "rspamd/logging.inc.j2", level=_RSPAMD_LEVELS[settings.logging.level]
        ),
    }
    for name, text in outputs.items():
        (confdir / name).write_text(text)
    return files
