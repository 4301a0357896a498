"""`muninet domain ...`: hosted mail domains."""

from __future__ import annotations

from typing import Any

import click

from provisioning import serialize
from provisioning.cli.app import App, emit_json, emit_table, json_option, pass_app
from provisioning.errors import ValidationError
from provisioning.models import Domain
from provisioning.services import domains
from provisioning.settings import Settings


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


@domain_group.command("show")
@click.argument("domain")
@json_option
@pass_app
def show(app: App, domain: str, as_json: bool) -> None:
    """Show one domain: owner, counts and the content filter settings in effect."""
    with app.reader() as session:
        d = domains.get(session, domain)
        data = serialize.domain(d, *domains.counts(session, d))
        data["effective_filters"] = _effective(d, app.settings)
    if as_json:
        emit_json(data)
        return
    lines = [
        ("domain", d.name + (f" ({d.ascii_name})" if d.ascii_name != d.name else "")),
        ("owner", f"member {data['member']}" if data["member"] else "the association (shared)"),
        ("utf8", "yes" if data["utf8_local_parts"] else "no"),
        ("mailboxes", str(data["mailboxes"])),
        ("aliases", str(data["aliases"])),
        *_filter_lines(data["effective_filters"]),
    ]
    for key, value in lines:
        click.echo(f"{key + ':':<13} {value}")


def _effective(d: Domain, settings: Settings) -> dict[str, Any]:
    effective = domains.effective_filters(domains.own_filters(d), settings)
    return {
        "spam_add_header_score": effective.spam_add_header_score,
        "spam_reject_score": effective.spam_reject_score,
        "virus_action": effective.virus_action,
        "own": sorted(effective.own),
    }


def _filter_lines(effective: dict[str, Any]) -> list[tuple[str, str]]:
    def source(name: str) -> str:
        return "domain" if name in effective["own"] else "global"

    return [
        (
            "spam tag",
            f"{effective['spam_add_header_score']:g} ({source('spam_add_header_score')})",
        ),
        ("spam reject", f"{effective['spam_reject_score']:g} ({source('spam_reject_score')})"),
        ("virus", f"{effective['virus_action']} ({source('virus_action')})"),
    ]


def _score_option(value: str | None, option: str) -> float | domains.Keep | None:
    """A score, `default` (None: the global value) or not given (KEEP)."""
    if value is None:
        return domains.KEEP
    if value.strip().lower() == "default":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValidationError(
            "%(option)s: not a score: %(value)r", option=option, value=value
        ) from None


@domain_group.command("filters")
@click.argument("domain")
@click.option(
    "--spam-tag",
    metavar="SCORE|default",
    help="From this rspamd score: X-Spam-Flag: YES (filed into Junk).",
)
@click.option(
    "--spam-reject", metavar="SCORE|default", help="From this rspamd score: refused with 550."
)
@click.option(
    "--virus",
    type=click.Choice(["reject", "quarantine", "default"]),
    help="reject: refused (554); quarantine: refused, a copy kept for the admin.",
)
@click.option("--clear", is_flag=True, help="Back to the global values (before other options).")
@json_option
@pass_app
def filters(
    app: App,
    domain: str,
    spam_tag: str | None,
    spam_reject: str | None,
    virus: str | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Show or set DOMAIN's own spam thresholds and virus action.

    Unset values (or `default`) take the global [spam] and [antivirus] settings.
    Without options, shows the settings in effect.
    """
    add = _score_option(spam_tag, "--spam-tag")
    reject = _score_option(spam_reject, "--spam-reject")
    action: str | domains.Keep | None = (
        domains.KEEP if virus is None else None if virus == "default" else virus
    )
    changing = clear or any(v is not domains.KEEP for v in (add, reject, action))
    if changing:
        with app.transaction() as ctx:
            d = domains.set_filters(
                ctx,
                domain,
                spam_add_header_score=add,
                spam_reject_score=reject,
                virus_action=action,
                clear=clear,
            )
            name, effective = d.name, _effective(d, app.settings)
    else:
        with app.reader() as session:
            d = domains.get(session, domain)
            name, effective = d.name, _effective(d, app.settings)
    if as_json:
        emit_json({"domain": name, **effective})
        return
    if changing:
        click.echo(f"domain {name}: filter settings changed")
    for key, value in _filter_lines(effective):
        click.echo(f"{key + ':':<13} {value}")


COMMANDS = [domain_group]
