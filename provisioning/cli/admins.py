"""`muninet admin ...` and `muninet token ...`: who may administer muninet."""

from __future__ import annotations

import click

from provisioning import serialize
from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app, read_password
from provisioning.services import admins


@click.group("admin")
def admin_group() -> None:
    """Manage admin users (superadmins and member admins)."""


@admin_group.command("add")
@click.argument("username")
@click.option("--member", "member_slug", help="Make a member admin scoped to this member.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--generate", is_flag=True, help="Generate a password and print it once.")
@pass_app
def add(
    app: App, username: str, member_slug: str | None, password_stdin: bool, generate: bool
) -> None:
    """Add an admin: a superadmin, or with --member an admin of one member."""
    password, generated = read_password(password_stdin, generate)
    with app.transaction() as ctx:
        admin = admins.create(ctx, username, password, member_slug=member_slug)
        role = f"admin of member {admin.member.slug}" if admin.member else "superadmin"
        click.echo(f"{role} {admin.username} added")
    if generated:
        click.echo(f"password: {password}")


@admin_group.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List admins."""
    with app.reader() as session:
        rows = [serialize.admin(a) for a in admins.list_admins(session)]
    if as_json:
        emit_json(rows)
        return
    emit_table(
        ["username", "role", "member", "enabled"],
        [
            (r["username"], r["role"], r["member"] or "", "yes" if r["enabled"] else "no")
            for r in rows
        ],
    )


@admin_group.command("totp-reset")
@click.argument("username")
@pass_app
def totp_reset(app: App, username: str) -> None:
    """Switch off an admin's second factor (lost phone); they log in with the password."""
    with app.transaction() as ctx:
        admin = admins.totp_reset(ctx, username)
    click.echo(f"second factor of {admin.username} switched off")


@click.group("token")
def token_group() -> None:
    """Manage API tokens."""


@token_group.command("create")
@click.option("--admin", "username", required=True, help="The admin the token acts as.")
@click.option("--name", default="", help="What the token is for, e.g. 'ansible'.")
@pass_app
def create(app: App, username: str, name: str) -> None:
    """Create an API token; it is printed once and only its hash is kept."""
    with app.transaction() as ctx:
        _, secret = admins.create_token(ctx, username, name)
    click.echo(secret)


@token_group.command("revoke")
@click.argument("prefix")
@pass_app
def revoke(app: App, prefix: str) -> None:
    """Revoke the token whose id (the part after mnt_) is PREFIX."""
    with app.transaction() as ctx:
        admins.revoke_token(ctx, prefix)
    click.echo(f"token {prefix} revoked")


COMMANDS = [admin_group, token_group]
