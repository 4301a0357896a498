"""`muninet dkim ...`: DKIM keys of hosted domains and the TXT records to publish."""

from __future__ import annotations

import click

from provisioning.cli.app import App, emit_json, json_option, pass_app


@click.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys (RSA 2048 and Ed25519) of hosted domains."""


@dkim_group.command("generate")
@click.argument("domain")
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="Key type; a domain may have one active key of each.",
)
@pass_app
def generate(app: App, domain: str, algorithm: str) -> None:
    """Make a new DKIM key for DOMAIN (active at once if it is the first of its type)."""
    from provisioning.services import dkim

    with app.transaction() as ctx:
        key = dkim.generate(ctx, domain, dkim.parse_algorithm(algorithm))
        name = dkim.record_name(key.domain.ascii_name, key.selector)
        click.echo(
            f"DKIM key {key.selector} ({key.algorithm.value}) for {key.domain.name}: "
            f"{key.status.value}"
        )
        if key.status.value == "pending":
            click.echo(
                f"publish it, wait for DNS, then: muninet dkim activate {domain} {key.selector}"
            )
        click.echo(dkim.txt_zone_line(name, dkim.txt_value(key)))


@dkim_group.command("activate")
@click.argument("domain")
@click.argument("selector")
@pass_app
def activate(app: App, domain: str, selector: str) -> None:
    """Sign with the pending key SELECTOR from now on; the key it replaces is retired."""
    from provisioning.services import dkim

    with app.transaction() as ctx:
        key = dkim.activate(ctx, domain, selector)
        click.echo(f"DKIM key {key.selector} of {key.domain.name} is active")


@dkim_group.command("show")
@click.argument("domain")
@json_option
@pass_app
def show(app: App, domain: str, as_json: bool) -> None:
    """Print the DNS TXT records of DOMAIN's DKIM keys (active and pending)."""
    from provisioning.services import dkim

    with app.reader() as session:
        keys = dkim.list_keys(session, domain)
        rows = [
            {
                "selector": k.selector,
                "algorithm": k.algorithm.value,
                "status": k.status.value,
                "name": dkim.record_name(k.domain.ascii_name, k.selector),
                "value": dkim.txt_value(k),
                "strings": dkim.split_txt(dkim.txt_value(k)),
            }
            for k in keys
        ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"{domain}: no DKIM key; make one with: muninet dkim generate {domain}")
        return
    for row in rows:
        name, value = str(row["name"]), str(row["value"])
        click.echo(f"; {row['selector']} ({row['algorithm']}, {row['status']})")
        click.echo(f"; name:  {name}")
        click.echo(f"; value: {value}")
        click.echo(dkim.txt_zone_line(name, value))


COMMANDS = [dkim_group]
