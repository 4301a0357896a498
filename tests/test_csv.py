"""`muninet import mailboxes` and `muninet export mailboxes`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import require_tool

Cli = Callable[..., subprocess.CompletedProcess[str]]
SHARED = "info.association.pl"
HEADER = "address,member,name,quota,enabled,password_hash,password\n"


@pytest.fixture
def base(cli: Cli) -> Cli:
    for args in (
        [
            "member",
            "add",
            "glusk",
            "--name",
            "Gmina Głusk",
            "--max-mailboxes",
            "4",
            "--quota",
            "4G",
        ],
        ["member", "add", "trun", "--name", "Община Трън"],
        ["domain", "add", SHARED],
        ["domain", "add", "община-трън.бг", "--member", "trun", "--utf8-local-parts"],
    ):
        assert cli(*args).returncode == 0
    return cli


def write(tmp_path: Path, text: str, name: str = "in.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def addresses(cli: Cli) -> list[str]:
    result = cli("mailbox", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [m["address"] for m in json.loads(result.stdout)]


GOOD = (
    f"glusk@{SHARED},glusk,Urząd Gminy,1G,yes,,first password ok\n"
    f"кмет@община-трън.бг,trun,Кмет,2G,no,,второ добро хасло\n"
)
BAD = (
    f"glusk x@{SHARED},glusk,,,,,password number 3\n"  # invalid address
    f"glusk.a@{SHARED},nobody,,,,,password number 4\n"  # unknown member
    f"Glusk@{SHARED},glusk,,,,,password number 5\n"  # duplicate of row 2
    f"glusk.b@{SHARED},glusk,,,,plaintext-not-a-hash,\n"  # plaintext as hash
    f"glusk.c@{SHARED},glusk,,9G,,,password number 7\n"  # over the package quota
    f"glusk.d@{SHARED},glusk,,,maybe,,password number 8\n"  # bad enabled
)


def test_partial_import_stores_valid_rows_and_reports_the_rest(base: Cli, tmp_path: Path) -> None:
    result = base("import", "mailboxes", write(tmp_path, HEADER + GOOD + BAD))
    assert result.returncode == 1
    assert "stored 2 of 8 rows" in result.stdout
    report = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(" ")[1] for line in report] == ["4", "5", "6", "7", "8", "9"]
    assert "invalid address" in report[0]
    assert "no member 'nobody'" in report[1]
    assert "already a mailbox" in report[2]
    assert "not an accepted password hash" in report[3]
    assert "quota left" in report[4]
    assert "enabled must be yes or no" in report[5]
    assert "Traceback" not in result.stderr
    assert sorted(addresses(base)) == [f"glusk@{SHARED}", "кмет@община-трън.бг"]


def test_atomic_import_stores_nothing_when_a_row_fails(base: Cli, tmp_path: Path) -> None:
    result = base("import", "mailboxes", "--atomic", write(tmp_path, HEADER + GOOD + BAD))
    assert result.returncode == 1
    assert "nothing stored" in result.stdout
    assert addresses(base) == []
    result = base("import", "mailboxes", "--atomic", write(tmp_path, HEADER + GOOD))
    assert result.returncode == 0, result.stderr
    assert len(addresses(base)) == 2


def test_dry_run_stores_nothing(base: Cli, tmp_path: Path) -> None:
    result = base("import", "mailboxes", "--dry-run", write(tmp_path, HEADER + GOOD))
    assert result.returncode == 0, result.stderr
    assert "dry run: 2 of 2 rows valid" in result.stdout
    assert addresses(base) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("address,member,colour\n", "unknown CSV column(s) colour"),
        ("address,name\n", "lacks column(s): member"),
    ],
)
def test_bad_files_are_refused(base: Cli, tmp_path: Path, content: str, message: str) -> None:
    result = base("import", "mailboxes", write(tmp_path, content))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_non_utf8_file_is_refused(base: Cli, tmp_path: Path) -> None:
    path = tmp_path / "latin2.csv"
    path.write_bytes(
        (HEADER + "glusk@info.association.pl,glusk,Urząd,,,,password ok 1\n").encode("iso-8859-2")
    )
    result = base("import", "mailboxes", str(path))
    assert result.returncode == 1
    assert "not UTF-8" in result.stderr


def test_export_reimports_with_the_same_hashes(base: Cli, tmp_path: Path) -> None:
    assert base("import", "mailboxes", write(tmp_path, HEADER + GOOD)).returncode == 0
    exported = base("export", "mailboxes")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert {r["address"] for r in rows} == {f"glusk@{SHARED}", "кмет@община-трън.бг"}
    assert {r["quota"] for r in rows} == {"1G", "2G"}
    assert {r["enabled"] for r in rows} == {"yes", "no"}
    assert all(r["password_hash"].startswith("{ARGON2ID}$argon2id$") for r in rows)
    doveadm = require_tool("doveadm")
    kmet = next(r for r in rows if r["address"].startswith("кмет"))
    check = subprocess.run(
        [doveadm, "pw", "-t", kmet["password_hash"], "-p", "второ добро хасло"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    out = tmp_path / "export.csv"
    assert base("export", "mailboxes", "-o", str(out)).returncode == 0
    for row in rows:
        assert base("mailbox", "remove", row["address"], "--yes").returncode == 0
    assert base("import", "mailboxes", str(out)).returncode == 0
    again = list(csv.DictReader(io.StringIO(base("export", "mailboxes").stdout)))
    assert sorted(again, key=lambda r: r["address"]) == sorted(rows, key=lambda r: r["address"])
