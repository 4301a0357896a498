"""Rendering daemon configurations from the templates in config/templates/.

One renderer for dev, tests and production: they differ only in settings. The
rendered files live under <state_dir>/<daemon>/, never in the source tree.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import make_url

from provisioning.errors import ConfigError
from provisioning.settings import CONFIG_DIR, Settings
from provisioning.tls import certificate_files

TEMPLATES = CONFIG_DIR / "templates"


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - daemon configs, not HTML
    )


def render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)


def dovecot_sql_connect(url: str) -> tuple[str, str]:
    """(driver, connect string) for Dovecot's SQL driver from muninet's database URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return "sqlite", str(Path(parsed.database or "").resolve())
    if backend == "postgresql":
        parts = {
            "host": parsed.host or "localhost",
            "port": parsed.port or 5432,
            "dbname": parsed.database,
            "user": parsed.username,
            "password": parsed.password,
        }
        return "pgsql", " ".join(f"{k}={v}" for k, v in parts.items() if v)
    raise ValueError(f"Dovecot cannot read a {backend} database")


def _check_reachable(path: Path, uid: int, gid: int, user: str) -> None:
    """Dovecot opens mail as the mail user: every parent must be searchable by it."""
    for parent in path.parents:
        info = parent.stat()
        if info.st_uid == uid:
            bit = 0o100
        elif info.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            raise ConfigError(
                f"the mail user {user!r} cannot reach {path}: {parent} is not searchable "
                "by it; set delivery.maildir_root to a directory it can reach "
                "(e.g. /var/lib/muninet/mail)"
            )


@dataclass(frozen=True)
class DovecotFiles:
    config: Path
    base_dir: Path
    lmtp_socket: Path
    auth_socket: Path
    log: Path


def render_dovecot(settings: Settings, *, auth_penalty: bool = True) -> DovecotFiles:
    """Write dovecot.conf and its SQL file under <state_dir>/dovecot."""
    root = settings.state_dir / "dovecot"
    base_dir = root / "run"
    for directory in (root, base_dir, root / "state"):
        directory.mkdir(parents=True, exist_ok=True)
    mail_uid, mail_gid = settings.mail_owner()
    settings.maildir_root.mkdir(parents=True, exist_ok=True)
    os.chown(settings.maildir_root, mail_uid, mail_gid)
    _check_reachable(settings.maildir_root, mail_uid, mail_gid, settings.mail_user)
    cert, key = certificate_files(settings)
    driver, connect = dovecot_sql_connect(settings.database_url)
    files = DovecotFiles(
        config=root / "dovecot.conf",
        base_dir=base_dir,
        lmtp_socket=base_dir / "lmtp",
        auth_socket=base_dir / "auth-muninet",  # relative to base_dir in the template
        log=root / "dovecot.log",
    )
    sql_conf = root / "dovecot-sql.conf.ext"
    sql_conf.write_text(render("dovecot/dovecot-sql.conf.ext.j2", driver=driver, connect=connect))
    os.chmod(sql_conf, 0o600)  # it may hold the database password
    files.config.write_text(
        render(
            "dovecot/dovecot.conf.j2",
            base_dir=base_dir,
            state_dir=root / "state",
            log_path=files.log,
            listen_address=settings.listen.address,
            imap_port=settings.listen.imap_port,
            imaps_port=settings.listen.imaps_port,
            tls_cert=cert,
            tls_key=key,
            maildir_root=settings.maildir_root,
            mail_uid=mail_uid,
            mail_gid=mail_gid,
            sql_conf=sql_conf,
            lmtp_socket=files.lmtp_socket,
            auth_socket=files.auth_socket,
            lmtp_client_user=pwd.getpwuid(os.getuid()).pw_name,
            auth_penalty=auth_penalty,
        )
    )
    return files
