"""`muninet run` and `muninet smtpd`, added to the CLI through the muninet.commands entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from provisioning.cli.app import App, pass_app
from provisioning.tls import certificate_files


def _worker_count(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def _serve(app: App, workers: int, *, queue: bool = True) -> None:
    from mailhost.server import serve

    settings = app.settings
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
    """Run the appliance in the foreground: the mail engine now, other daemons as they come."""
    logging.getLogger("mailhost").setLevel(app.settings.logging.level)
    click.echo("muninet: starting the mail engine (Ctrl-C stops it)", err=True)
    sys.stderr.flush()
    _serve(app, app.settings.smtp.workers)
