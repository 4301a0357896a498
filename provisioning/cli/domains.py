"""`muninet domain ...`: hosted mail domains."""

from __future__ import annotations

import click

from provisioning import serialize
from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app
from provisioning.services import domains


@click.group("domain")
def domain_group() -> None:
    """Manage mail domains (the association's shared one and members' own)."""


@domain_group.command("add")
@click.argument("domain")
@click.option("--member", "member_slug", help="The member owning it; none: the shared domain.")
@click.option(
    "--utf8-local-parts/--ascii-local-parts",
    default=False,
    help="Allow non-ASCII (SMTPUTF8) addresses such as иван@...",
)
@pass_app
def add(app: App, domain: str, member_slug: str | None, utf8_local_parts: bool) -> None:
    """Host DOMAIN (IDN allowed). Without --member it is the association's shared domain."""
    with app.transaction() as ctx:
        d = domains.create(ctx, domain, member_slug=member_slug, utf8_local_parts=utf8_local_parts)
        owner = f"member {d.member.slug}" if d.member else "the association (shared)"
        puny = f" ({d.ascii_name})" if d.ascii_name != d.name else ""
        click.echo(f"domain {d.name}{puny} added for {owner}")


@domain_group.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List hosted domains."""
    with app.reader() as session:
        rows = [(d, *domains.counts(session, d)) for d in domains.list_domains(session)]
        if as_json:
            emit_json([serialize.domain(d, m, a) for d, m, a in rows])
            return
        emit_table(
            ["domain", "ascii", "owner", "utf8", "mailboxes", "aliases"],
            [
                (
                    d.name,
                    d.ascii_name,
                    d.member.slug if d.member else "(shared)",
                    "yes" if d.utf8_local_parts else "no",
                    m,
                    a,
                )
                for d, m, a in rows
            ],
        )


@domain_group.command("remove")
@click.argument("domain")
@pass_app
def remove(app: App, domain: str) -> None:
    """Stop hosting DOMAIN (refused while it holds mailboxes or aliases)."""
    with app.transaction() as ctx:
        domains.remove(ctx, domain)
    click.echo(f"domain {domain} removed")


COMMANDS = [domain_group]
