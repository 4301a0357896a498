"""`muninet mailbox ...`: mailboxes of member offices."""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

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
from provisioning.services import mail_rules, mailboxes
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
        mb = mailboxes.get(session, address)
        data = serialize.mailbox(mb)
        used = mailboxes.usage(app.settings, mb)
        data.update(used_bytes=used.bytes, messages=used.messages)
        data.update(serialize.mail_rules(mail_rules.get(session, address)))
    if as_json:
        emit_json(data)
        return
    data["quota_bytes"] = format_size(data["quota_bytes"])
    data["used_bytes"] = format_size(data["used_bytes"])
    for key in (
        "address",
        "login",
        "member",
        "display_name",
        "quota_bytes",
        "used_bytes",
        "messages",
        "enabled",
        "password_scheme",
        "created_at",
        "updated_at",
    ):
        label = {"quota_bytes": "quota", "used_bytes": "used", "display_name": "name"}.get(
            key, key
        ).replace("_", " ")
        click.echo(f"{label + ':':<16} {data[key]}")
    vacation = data["vacation"]
    if vacation is None:
        click.echo(f"{'vacation:':<16} off")
    else:
        period = f" from {vacation['from'] or '-'} until {vacation['until'] or '-'}"
        click.echo(f"{'vacation:':<16} on, every {vacation['days']} days{period}")
        click.echo(f"{'  subject:':<16} {vacation['subject']}")
    forwards = ", ".join(data["forward_to"]) or "no"
    keep = " (keeps a copy)" if data["forward_to"] and data["forward_keep_copy"] else ""
    click.echo(f"{'forwards to:':<16} {forwards}{keep}")


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


@mailbox_group.command("vacation")
@click.argument("address")
@click.option("--on/--off", "enabled", required=True, help="Switch the vacation reply on or off.")
@click.option("--subject", help="Subject of the reply.")
@click.option("--message", "body", help="Text of the reply.")
@click.option(
    "--message-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the text of the reply from a file ('-': standard input).",
)
@click.option("--days", type=int, help="Answer each sender at most once in this many days.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day, YYYY-MM-DD.")
@click.option("--until", "end", type=click.DateTime(["%Y-%m-%d"]), help="Last day, YYYY-MM-DD.")
@pass_app
def vacation(
    app: App,
    address: str,
    enabled: bool,
    subject: str | None,
    body: str | None,
    message_file: TextIO | None,
    days: int | None,
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Set the vacation auto-reply of ADDRESS (once per sender per period; never to lists)."""
    if body is not None and message_file is not None:
        raise click.UsageError("give --message or --message-file, not both")
    if message_file is not None:
        body = message_file.read()
    with app.transaction() as ctx:
        rules = mail_rules.set_vacation(
            ctx,
            address,
            enabled=enabled,
            subject=subject,
            body=body,
            days=days,
            start=start.date() if start else None,
            end=end.date() if end else None,
        )
        shown = rules.mailbox.display_address
    click.echo(f"vacation reply of {shown} {'on' if enabled else 'off'}")


@mailbox_group.command("forward")
@click.argument("address")
@click.argument("destinations", nargs=-1)
@click.option(
    "--keep/--no-keep", default=True, help="Also keep a copy in the mailbox (default: keep)."
)
@click.option("--clear", is_flag=True, help="Stop forwarding.")
@pass_app
def forward(app: App, address: str, destinations: tuple[str, ...], keep: bool, clear: bool) -> None:
    """Forward all mail of ADDRESS to DESTINATIONS (or --clear to stop)."""
    if clear == bool(destinations):
        raise click.UsageError("give the addresses to forward to, or --clear")
    with app.transaction() as ctx:
        rules = mail_rules.set_forwarding(ctx, address, list(destinations), keep_copy=keep)
        shown = rules.mailbox.display_address
        targets = ", ".join(rules.forward_to)
    if clear:
        click.echo(f"{shown} no longer forwards mail")
    else:
        click.echo(f"{shown} forwards to {targets}" + ("" if keep else " (no copy kept)"))


COMMANDS = [mailbox_group]
