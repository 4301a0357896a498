"""`muninet alias ...`: forwarding addresses and catch-alls."""

from __future__ import annotations

import click

from provisioning import serialize
from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app
from provisioning.services import aliases


@click.group("alias")
def alias_group() -> None:
    """Manage aliases (SOURCE forwarded to destinations) and catch-alls (@domain)."""


@alias_group.command("add")
@click.argument("source")
@click.argument("destinations", nargs=-1, required=True)
@click.option("--member", "member_slug", help="Owner, needed on the shared domain.")
@pass_app
def add(app: App, source: str, destinations: tuple[str, ...], member_slug: str | None) -> None:
    """Forward SOURCE (or @DOMAIN for a catch-all) to one or more DESTINATIONS."""
    with app.transaction() as ctx:
        alias = aliases.create(ctx, source, list(destinations), member_slug=member_slug)
        targets = ", ".join(d.address for d in alias.destinations)
        click.echo(f"alias {alias.display_address} -> {targets}")


@alias_group.command("list")
@click.option("--member", "member_slug", help="Only this member's aliases.")
@json_option
@pass_app
def list_(app: App, member_slug: str | None, as_json: bool) -> None:
    """List aliases."""
    with app.reader() as session:
        rows = aliases.list_aliases(session, member_slug)
        if as_json:
            emit_json([serialize.alias(a) for a in rows])
            return
        emit_table(
            ["source", "member", "destinations"],
            [
                (a.display_address, a.member.slug, ", ".join(d.address for d in a.destinations))
                for a in rows
            ],
        )


@alias_group.command("remove")
@click.argument("source")
@pass_app
def remove(app: App, source: str) -> None:
    """Remove the alias SOURCE."""
    with app.transaction() as ctx:
        aliases.remove(ctx, source)
    click.echo(f"alias {source} removed")


COMMANDS = [alias_group]
