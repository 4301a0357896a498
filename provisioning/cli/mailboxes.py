"""`muninet mailbox ...`: mailboxes of member offices."""

from __future__ import annotations

import click

from provisioning import serialize
from provisioning.cli.app import (
    App,
    emit_json,
    emit_table,
    json_option,
    parse_size_option,
    pass_app,
    read_password,
)
from provisioning.services import mailboxes
from provisioning.sizes import format_size

password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
generate = click.option("--generate", is_flag=True, help="Generate a password and print it once.")


@click.group("mailbox")
def mailbox_group() -> None:
    """Manage mailboxes."""


@mailbox_group.command("add")
@click.argument("address")
@click.option("--member", "member_slug", required=True, help="The member owning the mailbox.")
@password_stdin
@generate
@click.option("--quota", help="e.g. 2G; default from settings.")
@click.option("--name", "display_name", default="", help="Display name, e.g. 'Sekretariat'.")
@pass_app
def add(
    app: App,
    address: str,
    member_slug: str,
    password_stdin: bool,
    generate: bool,
    quota: str | None,
    display_name: str,
) -> None:
    """Create the mailbox ADDRESS."""
    password, generated = read_password(password_stdin, generate)
    with app.transaction() as ctx:
        mb = mailboxes.create(
            ctx,
            address,
            member_slug,
            password=password,
            quota=parse_size_option(quota),
            display_name=display_name,
        )
        click.echo(f"mailbox {mb.display_address} added ({format_size(mb.quota_bytes)})")
    if generated:
        click.echo(f"password: {password}")


@mailbox_group.command("list")
@click.option("--member", "member_slug", help="Only this member's mailboxes.")
@json_option
@pass_app
def list_(app: App, member_slug: str | None, as_json: bool) -> None:
    """List mailboxes."""
    with app.reader() as session:
        rows = mailboxes.list_mailboxes(session, member_slug)
        if as_json:
            emit_json([serialize.mailbox(m) for m in rows])
            return
        emit_table(
            ["address", "member", "name", "quota", "enabled"],
            [
                (
                    m.display_address,
                    m.member.slug,
                    m.display_name,
                    format_size(m.quota_bytes),
                    "yes" if m.enabled else "no",
                )
                for m in rows
            ],
        )


@mailbox_group.command("show")
@click.argument("address")
@json_option
@pass_app
def show(app: App, address: str, as_json: bool) -> None:
    """Show one mailbox."""
    with app.reader() as session:
        data = serialize.mailbox(mailboxes.get(session, address))
    if as_json:
        emit_json(data)
        return
    data["quota_bytes"] = format_size(data["quota_bytes"])
    for key in (
        "address",
        "login",
        "member",
        "display_name",
        "quota_bytes",
        "enabled",
        "password_scheme",
        "created_at",
        "updated_at",
    ):
        label = {"quota_bytes": "quota", "display_name": "name"}.get(key, key).replace("_", " ")
        click.echo(f"{label + ':':<16} {data[key]}")


@mailbox_group.command("passwd")
@click.argument("address")
@password_stdin
@generate
@pass_app
def passwd(app: App, address: str, password_stdin: bool, generate: bool) -> None:
    """Set a new password for ADDRESS."""
    password, generated = read_password(password_stdin, generate)
    with app.transaction() as ctx:
        mb = mailboxes.set_password(ctx, address, password)
        click.echo(f"password of {mb.display_address} changed")
    if generated:
        click.echo(f"password: {password}")


@mailbox_group.command("quota")
@click.argument("address")
@click.argument("quota")
@pass_app
def quota(app: App, address: str, quota: str) -> None:
    """Set the quota of ADDRESS, e.g. 2G (within the member's package)."""
    with app.transaction() as ctx:
        mb = mailboxes.set_quota(ctx, address, parse_size_option(quota) or 0)
        click.echo(f"quota of {mb.display_address} is {format_size(mb.quota_bytes)}")


@mailbox_group.command("disable")
@click.argument("address")
@pass_app
def disable(app: App, address: str) -> None:
    """Disable ADDRESS: no login, no delivery, nothing deleted."""
    with app.transaction() as ctx:
        mb = mailboxes.set_enabled(ctx, address, False)
        click.echo(f"mailbox {mb.display_address} disabled")


@mailbox_group.command("enable")
@click.argument("address")
@pass_app
def enable(app: App, address: str) -> None:
    """Enable a disabled mailbox."""
    with app.transaction() as ctx:
        mb = mailboxes.set_enabled(ctx, address, True)
        click.echo(f"mailbox {mb.display_address} enabled")


@mailbox_group.command("remove")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def remove(app: App, address: str, yes: bool) -> None:
    """Remove the mailbox ADDRESS from muninet."""
    if not yes:
        click.confirm(f"remove mailbox {address}?", abort=True)
    with app.transaction() as ctx:
        mailboxes.remove(ctx, address)
    click.echo(f"mailbox {address} removed")


COMMANDS = [mailbox_group]
