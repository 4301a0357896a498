"""`muninet import ...` and `muninet export ...`: mailboxes (and subscribers) in CSV."""

from __future__ import annotations

import sys
from typing import IO

import click

from provisioning.audit import Actor
from provisioning.cli.app import App, pass_app
from provisioning.errors import ValidationError
from provisioning.services import mailbox_csv, subscriber_csv


@click.group("import")
def import_group() -> None:
    """Import data from CSV files."""


@import_group.command("mailboxes")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--dry-run", is_flag=True, help="Check every row, store nothing.")
@click.option("--atomic", is_flag=True, help="Store all rows or, if any is rejected, none.")
@pass_app
def import_mailboxes(app: App, csv_file: IO[str], dry_run: bool, atomic: bool) -> None:
    """Import mailboxes from CSV_FILE (columns: address, member, name, quota, enabled,
    password_hash or password). Valid rows are stored; rejected rows are reported."""
    try:
        rows = mailbox_csv.read_rows(csv_file)
    except UnicodeDecodeError as exc:
        raise ValidationError("the CSV file is not UTF-8: %(reason)s", reason=str(exc)) from exc
    database = app.database()
    with click.progressbar(
        length=len(rows), label="importing", file=sys.stderr, show_pos=True
    ) as bar:
        report = mailbox_csv.import_mailboxes(
            database,
            app.settings,
            Actor.cli(),
            rows,
            dry_run=dry_run,
            atomic=atomic,
            progress=lambda _row: bar.update(1),
        )
    for rejection in report.rejected:
        click.echo(f"line {rejection.line} ({rejection.address}): {rejection.reason}", err=True)
    valid = report.total - len(report.rejected)
    if dry_run:
        click.echo(f"dry run: {valid} of {report.total} rows valid, nothing stored")
    elif report.committed:
        click.echo(f"stored {report.stored} of {report.total} rows")
    else:
        click.echo(
            f"nothing stored: {len(report.rejected)} of {report.total} rows rejected (--atomic)"
        )
    if report.rejected:
        sys.exit(1)


@import_group.command("subscribers")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--generate", is_flag=True, help="Generate passwords for rows without one.")
@click.option("--dry-run", is_flag=True, help="Check every row, store nothing.")
@pass_app
def import_subscribers(app: App, csv_file: IO[str], generate: bool, dry_run: bool) -> None:
    """Import subscribers from CSV_FILE: all rows or, if any is rejected, none.

    Columns: username, member, plan (required); password, static_ip,
    calling_station_id, expires (YYYY-MM-DD), pool, chap (yes/no), notes. An empty
    password needs --generate; generated passwords are printed once."""
    try:
        rows = subscriber_csv.read_rows(csv_file)
    except UnicodeDecodeError as exc:
        raise ValidationError("the CSV file is not UTF-8: %(reason)s", reason=str(exc)) from exc
    database = app.database()
    with click.progressbar(
        length=len(rows), label="importing", file=sys.stderr, show_pos=True
    ) as bar:
        report = subscriber_csv.import_subscribers(
            database,
            app.settings,
            Actor.cli(),
            rows,
            generate=generate,
            dry_run=dry_run,
            progress=lambda _row: bar.update(1),
        )
    if dry_run:
        click.echo(f"dry run: all {report.total} rows valid, nothing stored")
        return
    click.echo(f"stored {report.stored} subscriber{'' if report.stored == 1 else 's'}")
    for username, password in report.generated.items():
        click.echo(f"{username}: {password}")


@click.group("export")
def export_group() -> None:
    """Export data as CSV."""


@export_group.command("mailboxes")
@click.option("--member", "member_slug", help="Only this member's mailboxes.")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-")
@pass_app
def export_mailboxes(app: App, member_slug: str | None, output: IO[str]) -> None:
    """Export mailboxes as CSV with their password hashes (re-importable)."""
    with app.reader() as session:
        count = mailbox_csv.write_csv(output, mailbox_csv.export_rows(session, member_slug))
    if output is not sys.stdout and getattr(output, "name", "-") != "<stdout>":
        click.echo(f"exported {count} mailboxes", err=True)


COMMANDS = [import_group, export_group]
