"""Rendering daemon configurations from the templates in config/templates/.

One renderer for dev, tests and production: they differ only in settings. The
rendered files live under <state_dir>/<daemon>/, never in the source tree.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import make_url

from provisioning.addresses import parse_domain
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


def check_reachable(path: Path, uid: int, gid: int, user: str, hint: str) -> None:
    """A daemon's user must be able to search every existing directory down to `path`."""
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        info = parent.stat()
        if info.st_uid == uid:
            bit = 0o100
        elif info.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            raise ConfigError(
                f"the user {user!r} cannot reach {path}: {parent} is not searchable by it; {hint}"
            )


@dataclass(frozen=True)
class DovecotFiles:
    config: Path
    base_dir: Path
    lmtp_socket: Path
    auth_socket: Path
    log: Path
    sieve_global_dir: Path


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def _compile_sieve(config: Path, script: Path) -> None:
    """Compile a global script now: the mail user may not write its binary at delivery."""
    sievec = shutil.which("sievec", path="/usr/bin:/usr/sbin:/bin:/sbin")
    if sievec is None:
        raise ConfigError(
            "Dovecot's Sieve is not installed (apt-get install dovecot-sieve): "
            "vacation replies, forwarding and the Junk rule need it"
        )
    result = subprocess.run(  # noqa: S603 - fixed program, our own files
        [sievec, "-c", str(config), str(script)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ConfigError(f"sievec refused {script}: {result.stderr.strip()}")


def render_dovecot(settings: Settings, *, auth_penalty: bool = True) -> DovecotFiles:
    """Write dovecot.conf and its SQL file under <state_dir>/dovecot."""
    root = settings.state_dir / "dovecot"
    base_dir = root / "run"
    for directory in (root, base_dir, root / "state"):
        directory.mkdir(parents=True, exist_ok=True)
    mail_uid, mail_gid = settings.mail_owner()
    settings.maildir_root.mkdir(parents=True, exist_ok=True)
    os.chown(settings.maildir_root, mail_uid, mail_gid)
    check_reachable(
        settings.maildir_root,
        mail_uid,
        mail_gid,
        settings.mail_user,
        "set delivery.maildir_root to a directory it can reach (e.g. /var/lib/muninet/mail)",
    )
    cert, key = certificate_files(settings)
    driver, connect = dovecot_sql_connect(settings.database_url)
    files = DovecotFiles(
        config=root / "dovecot.conf",
        base_dir=base_dir,
        lmtp_socket=settings.lmtp_socket,
        auth_socket=base_dir / "auth-muninet",  # relative to base_dir in the template
        log=root / "dovecot.log",
        # Read by the mail user at delivery, so it lives where that user can reach.
        sieve_global_dir=settings.maildir_root / ".sieve-global",
    )
    if files.lmtp_socket.parent != base_dir:
        raise ConfigError(
            f"delivery.lmtp_socket must be in Dovecot's run directory {base_dir} "
            "when muninet renders Dovecot's configuration"
        )
    # Both may hold the database password.
    sql_conf = root / "dovecot-sql.conf.ext"
    _write(
        sql_conf, render("dovecot/dovecot-sql.conf.ext.j2", driver=driver, connect=connect), 0o600
    )
    dict_conf = root / "dict-sieve.conf.ext"
    _write(dict_conf, render("dovecot/dict-sieve.conf.ext.j2", connect=connect), 0o600)
    files.sieve_global_dir.mkdir(mode=0o755, exist_ok=True)
    spam_script = files.sieve_global_dir / "spam-to-junk.sieve"
    _write(spam_script, render("dovecot/spam-to-junk.sieve.j2"))
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
            mail_user=pwd.getpwuid(mail_uid).pw_name,
            auth_penalty=auth_penalty,
            hostname=parse_domain(settings.association.hostname).ascii,
            local_port=settings.listen.local_port,
            sieve_global_dir=files.sieve_global_dir,
            dict_driver=driver,
            dict_conf=dict_conf,
        )
    )
    _compile_sieve(files.config, spam_script)
    os.chmod(spam_script.with_suffix(".svbin"), 0o644)
    return files
