"""`muninet demo`: load the example association."""

from __future__ import annotations

import os

import click

from provisioning import demo
from provisioning.cli.app import App, pass_app


@click.command("demo")
@pass_app
def demo_command(app: App) -> None:
    """Load an example association (members, domains, mailboxes, aliases, admins).

    Generated passwords are printed once and kept in <state_dir>/demo-credentials.txt
    (readable by the owner only). Running it again changes nothing.
    """
    with app.transaction() as ctx:
        result = demo.load(ctx)
    if not result.loaded:
        click.echo(f"demo data is already loaded ({demo.SHARED_DOMAIN})")
        return
    path = app.settings.state_dir / "demo-credentials.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.writelines(f"{who}\t{password}\n" for who, password in result.credentials)
    click.echo(f"demo association loaded; passwords saved in {path}:")
    for who, password in result.credentials:
        click.echo(f"  {who:<45} {password}")


COMMANDS = [demo_command]
