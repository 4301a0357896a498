"""CSV import and export of mailboxes (with password hashes, so an export re-imports)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioning import csvrows
from provisioning.audit import Actor
from provisioning.csvrows import Row
from provisioning.db import Database
from provisioning.errors import MuninetError, ValidationError
from provisioning.services import mailboxes
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings
from provisioning.sizes import format_size, parse_size

COLUMNS = ["address", "member", "name", "quota", "enabled", "password_hash", "password"]
REQUIRED = {"address", "member"}
_TRUE = {"", "1", "yes", "true", "y", "tak", "да"}
_FALSE = {"0", "no", "false", "n", "nie", "не"}


@dataclass(frozen=True)
class Rejection:
    line: int
    address: str
    reason: str


@dataclass
class ImportReport:
    total: int = 0
    stored: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    committed: bool = False


class _Rollback(Exception):
    """Unwinds the import transaction on --dry-run, or on --atomic with rejected rows."""


def read_rows(stream: IO[str]) -> list[Row]:
    return csvrows.read_rows(stream, COLUMNS, REQUIRED)


def _parse_enabled(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationError("enabled must be yes or no, not %(text)r", text=text)


def _import_row(ctx: ServiceContext, row: Row) -> None:
    f = row.fields
    if csvrows.EXTRA in f:
        raise ValidationError("the row has more fields than the header")
    password, password_hash = f.get("password") or None, f.get("password_hash") or None
    if password and password_hash:
        raise ValidationError("give either password or password_hash, not both")
    if not password and not password_hash:
        raise ValidationError("the row has neither password nor password_hash")
    mailboxes.create(
        ctx,
        f["address"],
        f["member"],
        password=password,
        password_hash=password_hash,
        quota=parse_size(f["quota"]) if f.get("quota") else None,
        display_name=f.get("name", ""),
        enabled=_parse_enabled(f.get("enabled", "")),
    )


def import_mailboxes(
    db: Database,
    settings: Settings,
    actor: Actor,
    rows: Iterable[Row],
    *,
    dry_run: bool = False,
    atomic: bool = False,
    progress: Callable[[Row], None] | None = None,
) -> ImportReport:
    """Store every valid row (or, atomic, all rows or none); a rejected row leaves no trace."""
    report = ImportReport()
    try:
        with db.transaction() as session:
            ctx = ServiceContext(session=session, actor=actor, settings=settings)
            for row in rows:
                report.total += 1
                try:
                    with session.begin_nested():
                        _import_row(ctx, row)
                    report.stored += 1
                except (MuninetError, IntegrityError) as exc:
                    reason = (
                        str(exc) if isinstance(exc, MuninetError) else "conflicts with stored data"
                    )
                    report.rejected.append(
                        Rejection(row.line, row.fields.get("address", ""), reason)
                    )
                if progress is not None:
                    progress(row)
            if dry_run or (atomic and report.rejected):
                raise _Rollback
            ctx.audit(
                "mailbox.import", "mailboxes", stored=report.stored, rejected=len(report.rejected)
            )
        report.committed = True
    except _Rollback:
        report.committed = False
    return report


def export_rows(session: Session, member_slug: str | None = None) -> Iterator[dict[str, str]]:
    for mailbox in mailboxes.list_mailboxes(session, member_slug):
        yield {
            "address": mailbox.display_address,
            "member": mailbox.member.slug,
            "name": mailbox.display_name,
            "quota": format_size(mailbox.quota_bytes, exact=True),
            "enabled": "yes" if mailbox.enabled else "no",
            "password_hash": mailbox.password_hash,
            "password": "",
        }


def write_csv(stream: IO[str], rows: Iterable[dict[str, str]]) -> int:
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
