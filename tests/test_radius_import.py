"""`muninet import subscribers`: every row through the subscriber service, all or nothing."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path

import pytest
from passlib.hash import nthash, sha512_crypt
from sqlalchemy import func, select
from test_cli import ok, refused

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.errors import ValidationError
from provisioning.models import AuditEvent, Subscriber
from provisioning.services import members, nas, plans, subscriber_csv, subscribers
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

Unit = Callable[[], AbstractContextManager[ServiceContext]]
ACTOR = Actor("cli", "test")

GOOD = """\
username,member,plan,password,static_ip,calling_station_id,expires,pool,chap,notes
szkola.glusk,glusk,dsl,first password 1,10.20.0.5,+48611234567,2030-12-31,,yes,Szkoła
Biblioteka.Glusk,glusk,dsl,,,,,dyn,,
urzad.trun,trun,dsl,third password 3,,AA:BB:CC:DD:EE:FF,,,no,
"""

# Line 2 is good; 3: unknown plan; 4: no password; 5: a duplicate of line 2;
# 6: over trun's one line (line 7 takes it first); 8: a bad date. Line 9 is blank.
BAD = """\
username,member,plan,password,static_ip,calling_station_id,expires
good.one,glusk,dsl,good password 1,,,
no.plan,glusk,gold,good password 2,,,
no.password,glusk,dsl,,,,
GOOD.ONE,glusk,dsl,good password 3,,,
trun.first,trun,dsl,good password 4,,,
trun.second,trun,dsl,good password 5,,,
bad.date,glusk,dsl,good password 6,,,31.12.2030

"""


def _provision(ctx: ServiceContext) -> None:
    members.create(ctx, "glusk", "Gmina Głusk", max_lines=10)
    members.create(ctx, "trun", "Община Трън", max_lines=1)
    plans.create(ctx, "dsl", download_bps=8_000_000, upload_bps=1_000_000)
    nas.create_pool(ctx, "dyn", "10.64.0.0/16")


def _rows(text: str) -> list[subscriber_csv.Row]:
    return subscriber_csv.read_rows(io.StringIO(text))


def _count(db: Database, model: type, **where: str) -> int:
    with db.reader() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(session.scalar(query) or 0)


def test_import_stores_every_row_with_generated_passwords(
    unit: Unit, db: Database, settings: Settings
) -> None:
    with unit() as ctx:
        _provision(ctx)
    seen: list[int] = []
    report = subscriber_csv.import_subscribers(
        db, settings, ACTOR, _rows(GOOD), generate=True, progress=lambda row: seen.append(row.line)
    )
    assert report.committed and report.stored == 3 and seen == [2, 3, 4]
    assert list(report.generated) == ["biblioteka.glusk"]  # the only row without a password
    generated = report.generated["biblioteka.glusk"]
    with db.reader() as session:
        school = subscribers.get(session, "szkola.glusk")
        library = subscribers.get(session, "biblioteka.glusk")
        trun = subscribers.get(session, "urzad.trun")
        assert (school.member.slug, school.plan.name, school.static_ip) == (
            "glusk",
            "dsl",
            "10.20.0.5",
        )
        assert school.calling_station_id == "+48611234567"
        assert school.expires_on == date(2030, 12, 31)
        assert school.chap_enabled and school.notes == "Szkoła"
        assert library.pool is not None and library.pool.name == "dyn"
        assert not library.chap_enabled and not trun.chap_enabled
        assert trun.calling_station_id == "aa:bb:cc:dd:ee:ff"
        # The stored credentials are those of the given and the generated passwords.
        assert sha512_crypt.verify("first password 1", school.password_crypt)
        assert sha512_crypt.verify(generated, library.password_crypt)
        assert library.password_nt == nthash.hash(generated).lower()
        assert library.password_clear is None
    assert _count(db, AuditEvent, action="subscriber.create") == 3
    assert _count(db, AuditEvent, action="subscriber.import") == 1


def test_a_bad_file_stores_nothing_and_names_every_bad_line(
    unit: Unit, db: Database, settings: Settings
) -> None:
    with unit() as ctx:
        _provision(ctx)
    with pytest.raises(subscriber_csv.ImportRejected) as caught:
        subscriber_csv.import_subscribers(db, settings, ACTOR, _rows(BAD))
    message = str(caught.value)
    assert message.startswith("nothing imported: 5 of 7 rows rejected: ")
    assert "\n" not in message
    assert [r.line for r in caught.value.rejected] == [3, 4, 5, 7, 8]
    assert "line 3 (no.plan): no plan 'gold'" in message
    assert "line 4 (no.password): no password (leave it empty only with --generate)" in message
    assert "line 5 (GOOD.ONE): subscriber 'good.one' already exists" in message
    assert "line 7 (trun.second): member 'trun' has used all 1 subscriber lines" in message
    assert "line 8 (bad.date): expires must be a date YYYY-MM-DD" in message
    # Nothing of the good rows stayed: no subscriber, no audit event.
    assert _count(db, Subscriber) == 0
    assert _count(db, AuditEvent, action="subscriber.create") == 0
    # --generate fixes line 4 only; still nothing stored.
    with pytest.raises(subscriber_csv.ImportRejected) as caught:
        subscriber_csv.import_subscribers(db, settings, ACTOR, _rows(BAD), generate=True)
    assert [r.line for r in caught.value.rejected] == [3, 5, 7, 8]
    assert _count(db, Subscriber) == 0
    # A dry run of a good file checks everything and stores nothing either.
    report = subscriber_csv.import_subscribers(
        db, settings, ACTOR, _rows(GOOD), generate=True, dry_run=True
    )
    assert report.stored == 3 and not report.committed and report.generated == {}
    assert _count(db, Subscriber) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the CSV file is empty"),
        ("username,member\nx,y\n", "lacks column(s): plan"),
        ("username,member,plan,password_hash\n", "unknown CSV column(s) password_hash"),
        ("username,member,plan,plan\n", "given twice: plan"),
    ],
)
def test_bad_headers_are_refused(content: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _rows(content)


def test_extra_fields_are_a_rejected_row(unit: Unit, db: Database, settings: Settings) -> None:
    with unit() as ctx:
        _provision(ctx)
    rows = _rows("username,member,plan,password\nok.user,glusk,dsl,good password 1,extra\n")
    with pytest.raises(
        subscriber_csv.ImportRejected, match=r"line 2 \(ok\.user\): the row has more fields than"
    ):
        subscriber_csv.import_subscribers(db, settings, ACTOR, rows)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_import_subscribers(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    unit: Unit,
    tmp_path: Path,
) -> None:
    with unit() as ctx:
        _provision(ctx)
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD, encoding="utf-8")
    result = cli("import", "subscribers", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("muninet:")]
    assert len(errors) == 1, result.stderr
    assert "5 of 7 rows rejected: line 3 (no.plan)" in errors[0]
    good = tmp_path / "good.csv"
    good.write_text("\ufeff" + GOOD, encoding="utf-8")  # a BOM, as spreadsheets write
    out = ok(cli("import", "subscribers", "--generate", str(good)))
    lines = out.splitlines()
    assert lines[0] == "stored 3 subscribers"
    assert len(lines) == 2 and lines[1].startswith("biblioteka.glusk: ")
    assert len(lines[1].split(": ", 1)[1]) == 16
    refused(cli("import", "subscribers", str(tmp_path / "missing.csv")), code=2)
