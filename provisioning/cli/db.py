"""`muninet db ...` and `muninet status`: the schema and a summary of what is configured."""

from __future__ import annotations

import click
from sqlalchemy import func, select

from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app
from provisioning.models import AdminUser, Alias, Domain, Mailbox, Member
from provisioning.services import domains


@click.group("db")
def db_group() -> None:
    """Create, upgrade and inspect the database schema."""


@db_group.command("upgrade")
@pass_app
def upgrade(app: App) -> None:
    """Create the schema, or upgrade it to this version of muninet."""
    database = app.database(migrated=False)
    before, after = database.upgrade()
    if before == after:
        click.echo(f"database {database.safe_url} is up to date (schema {after})")
    else:
        click.echo(f"database {database.safe_url} upgraded from {before or 'empty'} to {after}")


@db_group.command("status")
@json_option
@pass_app
def db_status(app: App, as_json: bool) -> None:
    """Show the schema revision of the database and the one this code needs."""
    database = app.database(migrated=False)
    current, head = database.current_revision(), database.head_revision()
    if as_json:
        emit_json({"url": database.safe_url, "current": current, "head": head})
        return
    click.echo(f"database: {database.safe_url}")
    click.echo(f"schema:   {current or 'none'} (this muninet needs {head})")


@click.command("status")
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show the settings in force and what the database holds."""
    settings = app.settings
    database = app.database()
    with app.reader() as session:
        counts = {
            name: session.scalar(select(func.count()).select_from(model)) or 0
            for name, model in (
                ("members", Member),
                ("domains", Domain),
                ("mailboxes", Mailbox),
                ("aliases", Alias),
                ("admins", AdminUser),
            )
        }
        domain_rows = []
        for d in domains.list_domains(session):
            mailboxes, aliases = domains.counts(session, d)
            owner = d.member.slug if d.member else "(shared)"
            domain_rows.append((d.name, d.ascii_name, owner, mailboxes, aliases))
    listen = settings.listen
    ports = {
        "smtp": listen.smtp_port,
        "submission": listen.submission_port,
        "smtps": listen.smtps_port,
        "imap": listen.imap_port,
        "imaps": listen.imaps_port,
        "admin": listen.admin_port,
        "radius_auth": listen.radius_auth_port,
        "radius_acct": listen.radius_acct_port,
    }
    if as_json:
        emit_json(
            {
                "association": settings.association.name,
                "hostname": settings.association.hostname,
                "state_dir": str(settings.state_dir),
                "database": database.safe_url,
                "schema": database.current_revision(),
                "listen": {"address": listen.address, "ports": ports},
                "counts": counts,
            }
        )
        return
    click.echo(f"{settings.association.name} ({settings.association.hostname})")
    click.echo(f"state directory: {settings.state_dir}")
    click.echo(f"database:        {database.safe_url} (schema {database.current_revision()})")
    click.echo(
        f"listen on {listen.address}: "
        + ", ".join(f"{name} {port}" for name, port in ports.items())
    )
    click.echo(", ".join(f"{n} {name}" for name, n in counts.items()))
    click.echo()
    emit_table(["domain", "ascii", "owner", "mailboxes", "aliases"], domain_rows)


COMMANDS = [db_group, status]
