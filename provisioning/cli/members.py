"""`muninet member ...`: the association's members and their packages."""

from __future__ import annotations

from datetime import date

import click

from provisioning import serialize
from provisioning.cli.app import (
    App,
    emit_json,
    emit_table,
    json_option,
    parse_size_option,
    pass_app,
)
from provisioning.models import MemberKind, MemberStatus
from provisioning.services import members
from provisioning.sizes import format_size

KINDS = click.Choice([k.value for k in MemberKind])


@click.group("member")
def member_group() -> None:
    """Manage association members (municipalities, schools, libraries, ...)."""


@member_group.command("add")
@click.argument("slug")
@click.option("--name", required=True, help="Full name, e.g. 'Gmina Głusk'.")
@click.option("--kind", type=KINDS, default="municipality", show_default=True)
@click.option("--max-mailboxes", type=int, help="Mailboxes in the package.")
@click.option("--quota", help="Total mail quota of the package, e.g. 10G.")
@click.option("--max-lines", type=int, help="Subscriber lines in the package.")
@click.option("--contact-name", default="")
@click.option("--contact-email", default="")
@click.option("--contact-phone", default="")
@click.option("--contract", "contract_number", default="", help="Contract number.")
@click.option("--contract-start", type=click.DateTime(["%Y-%m-%d"]), help="YYYY-MM-DD")
@click.option("--contract-end", type=click.DateTime(["%Y-%m-%d"]), help="YYYY-MM-DD")
@pass_app
def add(
    app: App,
    slug: str,
    name: str,
    kind: str,
    max_mailboxes: int | None,
    quota: str | None,
    max_lines: int | None,
    contact_name: str,
    contact_email: str,
    contact_phone: str,
    contract_number: str,
    contract_start: object,
    contract_end: object,
) -> None:
    """Add a member. SLUG names its addresses on the shared domain (slug@...)."""
    with app.transaction() as ctx:
        member = members.create(
            ctx,
            slug,
            name,
            kind=kind,
            max_mailboxes=max_mailboxes,
            mail_quota=parse_size_option(quota),
            max_lines=max_lines,
            contact_name=contact_name,
            contact_email=contact_email,
            contact_phone=contact_phone,
            contract_number=contract_number,
            contract_start=_date(contract_start),
            contract_end=_date(contract_end),
        )
        click.echo(
            f"member {member.slug} added: {member.max_mailboxes} mailboxes, "
            f"{format_size(member.mail_quota_bytes)} mail, {member.max_lines} lines"
        )


def _date(value: object) -> date | None:
    return value.date() if hasattr(value, "date") else None


@member_group.command("update")
@click.argument("slug")
@click.option("--max-mailboxes", type=int)
@click.option("--quota", help="Total mail quota, e.g. 20G.")
@click.option("--max-lines", type=int)
@pass_app
def update(
    app: App, slug: str, max_mailboxes: int | None, quota: str | None, max_lines: int | None
) -> None:
    """Change a member's package (never below what it already uses)."""
    with app.transaction() as ctx:
        member = members.update_package(
            ctx,
            slug,
            max_mailboxes=max_mailboxes,
            mail_quota=parse_size_option(quota),
            max_lines=max_lines,
        )
        click.echo(
            f"member {member.slug}: {member.max_mailboxes} mailboxes, "
            f"{format_size(member.mail_quota_bytes)} mail, {member.max_lines} lines"
        )


@member_group.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List members with their package use."""
    with app.reader() as session:
        rows = [(m, members.usage(session, m)) for m in members.list_members(session)]
        if as_json:
            emit_json([serialize.member(m, u) for m, u in rows])
            return
        emit_table(
            ["slug", "name", "kind", "status", "mailboxes", "quota"],
            [
                (
                    m.slug,
                    m.name,
                    m.kind.value,
                    m.status.value,
                    f"{u.mailboxes}/{m.max_mailboxes}",
                    f"{format_size(u.quota_allocated)}/{format_size(m.mail_quota_bytes)}",
                )
                for m, u in rows
            ],
        )


@member_group.command("show")
@click.argument("slug")
@json_option
@pass_app
def show(app: App, slug: str, as_json: bool) -> None:
    """Show one member, its contract, package and use."""
    with app.reader() as session:
        member = members.get(session, slug)
        data = serialize.member(member, members.usage(session, member))
    if as_json:
        emit_json(data)
        return
    use, pkg = data["usage"], data["package"]
    lines = [
        ("member", f"{data['slug']} ({data['name']})"),
        ("kind", data["kind"]),
        (
            "status",
            data["status"] + (f": {data['status_reason']}" if data["status_reason"] else ""),
        ),
        ("contact", ", ".join(v for v in data["contact"].values() if v) or "-"),
        ("contract", _contract(data["contract"])),
        ("mailboxes", f"{use['mailboxes']} of {pkg['max_mailboxes']}"),
        (
            "mail quota",
            f"{format_size(use['quota_allocated_bytes'])} of "
            f"{format_size(pkg['mail_quota_bytes'])} allocated",
        ),
        ("lines", f"{use['lines']} of {pkg['max_lines']}"),
        ("aliases", str(use["aliases"])),
        ("own domains", str(use["domains"])),
    ]
    for key, value in lines:
        click.echo(f"{key + ':':<12} {value}")


def _contract(contract: dict[str, str | None]) -> str:
    if not any(contract.values()):
        return "-"
    span = f"{contract['start'] or '?'} .. {contract['end'] or 'open'}"
    return f"{contract['number'] or '(no number)'}, {span}"


def _status_command(name: str, status: MemberStatus, summary: str, done: str) -> None:
    """Register `member suspend|resume|end SLUG [--reason]`: one status change each."""

    @member_group.command(name, help=summary)
    @click.argument("slug")
    @click.option("--reason", default="", help="Shown to admins, e.g. 'unpaid invoice'.")
    @pass_app
    def change(app: App, slug: str, reason: str) -> None:
        with app.transaction() as ctx:
            member = members.set_status(ctx, slug, status, reason)
            click.echo(f"member {member.slug} {done}")


_status_command(
    "suspend",
    MemberStatus.SUSPENDED,
    "Suspend a member: its mailboxes and lines stop working until resumed.",
    "suspended",
)
_status_command(
    "resume", MemberStatus.ACTIVE, "Make a suspended or ended member active.", "active again"
)
_status_command(
    "end",
    MemberStatus.ENDED,
    "Mark a member's contract as ended: like a suspension, kept for the records.",
    "ended",
)


COMMANDS = [member_group]
