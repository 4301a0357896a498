"""`muninet run` and `muninet smtpd`, added to the CLI through the muninet.commands entry point."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from provisioning.cli.app import App, pass_app
from provisioning.errors import MuninetError
from provisioning.settings import Settings
from provisioning.tls import certificate_files


def _worker_count(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def _serve(app: App, workers: int, *, queue: bool = True, settings: Settings | None = None) -> None:
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
    """Run the appliance in the foreground: Dovecot (IMAP, Sieve) and the mail engine.

    With Dovecot running, local mail goes through its LMTP so Sieve (vacation,
    forwarding, Junk) applies; Ctrl-C stops everything.
    """
    from mailhost.supervisor import Dovecot, WebServer, dovecot_binary

    settings = app.settings
    app.database()  # refuse an un-migrated database before starting anything
    dovecot = None
    if dovecot_binary() is None:
        click.echo(
            "muninet: Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd "
            "dovecot-sqlite dovecot-pgsql): running without IMAP",
            err=True,
        )
    else:
        dovecot = Dovecot(settings)
        try:
            dovecot.start()
        except RuntimeError as exc:
            raise MuninetError(str(exc)) from exc
        click.echo(
            f"muninet: Dovecot serves IMAP on {settings.listen.address}:"
            f"{settings.listen.imap_port} (STARTTLS) and {settings.listen.imaps_port} (TLS)",
            err=True,
        )
        delivery = settings.delivery.model_copy(update={"method": "lmtp"})
        settings = settings.model_copy(update={"delivery": delivery})
    web = WebServer(settings)
    try:
        web.start()
    except RuntimeError as exc:
        if dovecot is not None:
            dovecot.stop()
        raise MuninetError(str(exc)) from exc
    click.echo(f"muninet: web (mail client autoconfiguration) on http://{web.bind}/", err=True)
    click.echo("muninet: starting the mail engine (Ctrl-C stops everything)", err=True)
    sys.stderr.flush()
    try:
        _serve(app, settings.smtp.workers, settings=settings)
    finally:
        web.stop()
        if dovecot is not None:
            dovecot.stop()
