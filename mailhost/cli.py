"""`muninet run` and `muninet smtpd`, added to the CLI through the muninet.commands entry point."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import click

from provisioning.cli.app import App, pass_app
from provisioning.errors import ConfigError, MuninetError
from provisioning.settings import AntivirusSettings, Settings, SpamSettings
from provisioning.tls import certificate_files

if TYPE_CHECKING:
    from mailhost.freeradius import FreeRadius


def _worker_count(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def _serve(
    app: App,
    workers: int,
    *,
    queue: bool = True,
    settings: Settings | None = None,
    after_fork: Callable[[], None] | None = None,
) -> None:
    from mailhost.server import serve

    settings = settings or app.settings
    app.database()  # refuse an un-migrated database before anything starts
    app.close()  # no pooled connections may cross the fork
    certificate_files(settings)  # made once here, not by every worker at the same time
    count = _worker_count(workers)
    children: list[int] = []
    for _ in range(count - 1):
        pid = os.fork()
        if pid == 0:  # a child serves SMTP only; the parent also runs the queue
            asyncio.run(serve(settings, reuse_port=True, run_queue=False))
            os._exit(0)
        children.append(pid)
    if after_fork is not None:
        after_fork()
    try:
        asyncio.run(serve(settings, reuse_port=count > 1, run_queue=queue))
    finally:
        for pid in children:
            try:
                os.kill(pid, 15)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


@click.command("smtpd")
@click.option("--workers", type=int, help="Server processes (default: smtp.workers).")
@click.option("--no-queue", is_flag=True, help="Accept mail only; another instance runs the queue.")
@pass_app
def smtpd(app: App, workers: int | None, no_queue: bool) -> None:
    """Run the mail engine (MX, submission, queue) in the foreground, as systemd does."""
    _serve(app, app.settings.smtp.workers if workers is None else workers, queue=not no_queue)


@click.command("run")
@pass_app
def run(app: App) -> None:
    """Run the appliance in the foreground: Dovecot, FreeRADIUS, the web face and the mail engine.

    With Dovecot running, local mail goes through its LMTP so Sieve (vacation,
    forwarding, Junk) applies. A daemon that is not installed is named in one line
    and the rest runs without it; Ctrl-C stops everything.
    """
    from mailhost.maintenance import Maintenance

    settings = app.settings
    app.database()  # refuse an un-migrated database before starting anything
    started: list[Stoppable] = []
    maintenance: Maintenance | None = None
    try:
        settings = _start_dovecot(settings, started)
        settings = _start_filters(settings, started)
        freeradius = _start_freeradius(settings, started)
        _start_web(settings, started)
        maintenance = Maintenance(settings, freeradius)
        click.echo("muninet: starting the mail engine (Ctrl-C stops everything)", err=True)
        sys.stderr.flush()
        _serve(app, settings.smtp.workers, settings=settings, after_fork=maintenance.start)
    finally:
        if maintenance is not None:
            maintenance.stop()
        for daemon in reversed(started):
            daemon.stop()


class Stoppable(Protocol):
    def stop(self, timeout: float = 15) -> None: ...


def _start_dovecot(settings: Settings, started: list[Stoppable]) -> Settings:
    """Dovecot for IMAP, LMTP and Sieve; the settings the engine then runs with."""
    from mailhost.supervisor import Dovecot, dovecot_binary

    if dovecot_binary() is None:
        click.echo(
            "muninet: Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd "
            "dovecot-sqlite dovecot-pgsql dovecot-sieve): running without IMAP",
            err=True,
        )
        return settings
    dovecot = Dovecot(settings)
    try:
        dovecot.start()
    except (RuntimeError, ConfigError) as exc:
        raise MuninetError(str(exc)) from exc
    started.append(dovecot)
    listen = settings.listen
    click.echo(
        f"muninet: Dovecot serves IMAP on {listen.address}:{listen.imap_port} (STARTTLS) "
        f"and {listen.imaps_port} (TLS)",
        err=True,
    )
    delivery = settings.delivery.model_copy(update={"method": "lmtp"})
    return settings.model_copy(update={"delivery": delivery})


def _start_filters(settings: Settings, started: list[Stoppable]) -> Settings:
    """clamd and rspamd for the content filters; a filter whose daemon cannot run is off."""
    from mailhost.filter_daemons import Clamd, Rspamd, clamd_binary, rspamd_binary

    daemons: list[
        tuple[
            str,
            str,
            AntivirusSettings | SpamSettings,
            type[Clamd] | type[Rspamd],
            Callable[[], str | None],
            str,
        ]
    ] = [
        ("antivirus", "ClamAV", settings.antivirus, Clamd, clamd_binary, "clamav-daemon"),
        ("spam", "rspamd", settings.spam, Rspamd, rspamd_binary, "rspamd"),
    ]
    for section, name, options, daemon_class, binary, package in daemons:
        if not options.enabled or options.address:
            continue  # off, or a daemon run elsewhere
        reason = f"{name} is not installed (apt-get install {package})"
        if binary() is not None:
            daemon = daemon_class(settings)
            try:
                daemon.start()
            except ConfigError as exc:  # e.g. no signatures yet: freshclam has not run
                reason = str(exc)
            except RuntimeError as exc:
                raise MuninetError(str(exc)) from exc
            else:
                started.append(daemon)
                click.echo(f"muninet: {name} is running for the {section} filter", err=True)
                continue
        click.echo(f"muninet: {section} filter OFF for this run: {reason}", err=True)
        off = options.model_copy(update={"enabled": False})
        settings = settings.model_copy(update={section: off})
    return settings


def _start_freeradius(settings: Settings, started: list[Stoppable]) -> FreeRadius | None:
    from mailhost.freeradius import FreeRadius, freeradius_binary

    if freeradius_binary() is None:
        click.echo(
            "muninet: FreeRADIUS is not installed (apt-get install freeradius): "
            "running without subscriber authentication",
            err=True,
        )
        return None
    freeradius = FreeRadius(settings)
    try:
        freeradius.start()
    except (RuntimeError, ConfigError) as exc:
        raise MuninetError(str(exc)) from exc
    started.append(freeradius)
    listen = settings.listen
    click.echo(
        f"muninet: FreeRADIUS serves RADIUS on {listen.address}:{listen.radius_auth_port} "
        f"(auth) and {listen.radius_acct_port} (accounting)",
        err=True,
    )
    return freeradius


def _start_web(settings: Settings, started: list[Stoppable]) -> None:
    from mailhost.supervisor import WebServer

    web = WebServer(settings)
    try:
        web.start()
    except RuntimeError as exc:
        raise MuninetError(str(exc)) from exc
    started.append(web)
    click.echo(f"muninet: web admin (and mail autoconfiguration) on http://{web.bind}/", err=True)
