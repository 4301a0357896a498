"""`muninet domain check DOMAIN`: the DNS records of a hosted domain, and what to publish."""

from __future__ import annotations

import click

from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app

_CELL = 60


def _cell(text: str) -> str:
    return text if len(text) <= _CELL else text[: _CELL - 3] + "..."


@click.command("check")
@click.argument("domain")
@json_option
@pass_app
def check_command(app: App, domain: str, as_json: bool) -> None:
    """Check DOMAIN's DNS: MX, SPF, DKIM, DMARC, reverse DNS, MTA-STS, TLS-RPT, DNSBLs.

    Prints every check with the record to publish when one must change. Exit code 1
    when a record is missing or wrong, or could not be looked up.
    """
    from provisioning import dnscheck

    results = dnscheck.check_hosted_domain(app.database(), app.settings, domain)
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        emit_table(
            ["check", "status", "expected", "found"],
            [(r.check, r.status.value, _cell(r.expected), _cell(r.found)) for r in results],
        )
        todo = [r for r in results if r.publish or (r.note and r.status.value != "ok")]
        if todo:
            click.echo("")
            click.echo("To do:")
        for r in todo:
            click.echo(f"; {r.check} ({r.status.value}){': ' + r.note if r.note else ''}")
            if r.publish:
                click.echo(r.publish)
    if dnscheck.failed(results):
        raise click.exceptions.Exit(1)
