"""CSV import of dial-up and broadband subscribers: all rows or none.

Columns (header row, any order): `username`, `member`, `plan` (required);
`password`, `static_ip`, `calling_station_id`, `expires` (YYYY-MM-DD, the last day
of service), `pool`, `chap` (yes/no), `notes` (optional).

Passwords come only in cleartext: a subscriber needs both a crypt hash (PAP) and
the NT hash (MS-CHAP), and neither can be made from the other, so an imported hash
would leave one method broken. An empty `password` is refused unless the import
runs with `generate`, which makes one for that row; the caller prints the
generated passwords once, after the commit.

Every row goes through `subscribers.create`, the service behind `subscriber add`
(package limits, address and binding checks, audit event), each in its own
savepoint so that every bad row is found in one pass. If any row is rejected,
the whole import rolls back and one error lists the rejected lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import IO

from sqlalchemy.exc import IntegrityError

from provisioning import csvrows
from provisioning.audit import Actor
from provisioning.csvrows import Row
from provisioning.db import Database
from provisioning.errors import MuninetError, ValidationError
from provisioning.passwords import generate_password
from provisioning.services import subscribers
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

COLUMNS = [
    "username",
    "member",
    "plan",
    "password",
    "static_ip",
    "calling_station_id",
    "expires",
    "pool",
    "chap",
    "notes",
]
REQUIRED = {"username", "member", "plan"}
MAX_REPORTED = 20  # rejected lines named in the error; the rest are counted
_TRUE = {"1", "yes", "true", "y", "tak", "да"}
_FALSE = {"", "0", "no", "false", "n", "nie", "не"}


@dataclass(frozen=True)
class Rejection:
    line: int
    username: str
    reason: str

    def __str__(self) -> str:
        who = f" ({self.username})" if self.username else ""
        return f"line {self.line}{who}: {self.reason}"


@dataclass
class ImportReport:
    total: int = 0
    stored: int = 0
    generated: dict[str, str] = field(default_factory=dict)  # username -> password, print once
    committed: bool = False


class ImportRejected(ValidationError):
    """Some rows are invalid: nothing was stored."""

    def __init__(self, rejected: Sequence[Rejection], total: int) -> None:
        shown = "; ".join(str(r) for r in rejected[:MAX_REPORTED])
        more = len(rejected) - MAX_REPORTED
        if more > 0:
            shown += f"; and {more} more"
        super().__init__(f"nothing imported: {len(rejected)} of {total} rows rejected: {shown}")
        self.rejected = list(rejected)


class _Rollback(Exception):
    """Unwinds the import transaction (dry run)."""


def read_rows(stream: IO[str]) -> list[Row]:
    return csvrows.read_rows(stream, COLUMNS, REQUIRED)


def _parse_bool(text: str, column: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationError("%(column)s must be yes or no, not %(text)r", column=column, text=text)


def _parse_date(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            "expires must be a date YYYY-MM-DD, not %(text)r", text=text
        ) from None


def _import_row(ctx: ServiceContext, row: Row, generate: bool) -> str | None:
    """Create the row's subscriber; the generated password, if one was made."""
    f = row.fields
    if csvrows.EXTRA in f:
        raise ValidationError("the row has more fields than the header")
    password = f.get("password", "")
    generated = None
    if not password:
        if not generate:
            raise ValidationError("no password (leave it empty only with --generate)")
        password = generated = generate_password()
    subscribers.create(
        ctx,
        f["username"],
        f["member"],
        f["plan"],
        password,
        chap=_parse_bool(f.get("chap", ""), "chap"),
        static_ip=f.get("static_ip") or None,
        pool_name=f.get("pool") or None,
        calling_station_id=f.get("calling_station_id") or None,
        expires_on=_parse_date(f.get("expires", "")),
        notes=f.get("notes", ""),
    )
    return generated


def import_subscribers(
    db: Database,
    settings: Settings,
    actor: Actor,
    rows: Sequence[Row],
    *,
    generate: bool = False,
    dry_run: bool = False,
    progress: Callable[[Row], None] | None = None,
) -> ImportReport:
    """Store every row, or, if any row is rejected, none (raising `ImportRejected`)."""
    report = ImportReport()
    rejected: list[Rejection] = []
    try:
        with db.transaction() as session:
            ctx = ServiceContext(session=session, actor=actor, settings=settings)
            for row in rows:
                report.total += 1
                try:
                    with session.begin_nested():
                        generated = _import_row(ctx, row, generate)
                    report.stored += 1
                    if generated is not None:
                        name = subscribers.normalize_username(row.fields["username"])
                        report.generated[name] = generated
                except (MuninetError, IntegrityError) as exc:
                    reason = (
                        str(exc) if isinstance(exc, MuninetError) else "conflicts with stored data"
                    )
                    rejected.append(Rejection(row.line, row.fields.get("username", ""), reason))
                if progress is not None:
                    progress(row)
            if rejected:
                raise ImportRejected(rejected, report.total)
            if dry_run:
                raise _Rollback
            ctx.audit(
                "subscriber.import",
                "subscribers",
                stored=report.stored,
                generated=len(report.generated),
            )
        report.committed = True
    except _Rollback:
        report.committed = False
        report.generated.clear()
    return report
