"""The installed `muninet` command, end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.services import admins, mailboxes
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings

Cli = Callable[..., subprocess.CompletedProcess[str]]
SHARED = "info.association.pl"
PW = "correct horse battery\n"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 1) -> str:
    """A refusal: the exit code, one clear line naming the problem, never a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr.strip()
    if code == 1:
        assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture
def base(cli: Cli) -> Cli:
    """Two members and the shared domain, created through the CLI."""
    ok(
        cli(
            "member",
            "add",
            "glusk",
            "--name",
            "Gmina Głusk",
            "--max-mailboxes",
            "3",
            "--quota",
            "3G",
        )
    )
    ok(cli("member", "add", "trun", "--name", "Община Трън", "--kind", "municipality"))
    ok(cli("domain", "add", SHARED))
    return cli


def test_unmigrated_database_is_refused_until_upgrade(cli: Cli, empty_database_url: str) -> None:
    empty = {"MUNINET_DATABASE__URL": empty_database_url}
    refused(cli("member", "list", extra_env=empty), "no muninet schema", "muninet db upgrade")
    assert "upgraded from empty to" in ok(cli("db", "upgrade", extra_env=empty))
    assert "up to date" in ok(cli("db", "upgrade", extra_env=empty))
    status = json.loads(ok(cli("db", "status", "--json", extra_env=empty)))
    assert status["current"] == status["head"] is not None
    assert ok(cli("member", "list", extra_env=empty)).strip() == "(none)"


def test_bad_settings_and_usage_errors(cli: Cli) -> None:
    refused(cli("member", "list", extra_env={"MUNINET_LISTEN__SMTP_PORT": "x"}), "listen.smtp_port")
    refused(cli("member", "frobnicate"), "No such command", code=2)
    refused(cli("member", "add", "x"), "--name", code=2)


def test_members(base: Cli) -> None:
    cli = base
    out = ok(
        cli(
            "member",
            "add",
            "sp1-glusk",
            "--name",
            "Szkoła Podstawowa nr 1",
            "--kind",
            "school",
            "--max-mailboxes",
            "5",
            "--quota",
            "10G",
            "--max-lines",
            "2",
            "--contact-name",
            "Anna Nowak",
            "--contact-email",
            "dyrektor@sp1.glusk.pl",
            "--contact-phone",
            "+48 81 000 00 00",
            "--contract",
            "ZG/12/2026",
            "--contract-start",
            "2026-01-01",
            "--contract-end",
            "2027-12-31",
        )
    )
    assert "5 mailboxes, 10G mail, 2 lines" in out
    shown = json.loads(ok(cli("member", "show", "sp1-glusk", "--json")))
    assert shown["kind"] == "school"
    assert shown["contract"] == {"number": "ZG/12/2026", "start": "2026-01-01", "end": "2027-12-31"}
    assert shown["package"] == {
        "max_mailboxes": 5,
        "mail_quota_bytes": 10 * 1024**3,
        "max_lines": 2,
    }
    assert shown["usage"]["mailboxes"] == 0
    assert "Szkoła Podstawowa nr 1" in ok(cli("member", "show", "sp1-glusk"))
    listed = json.loads(ok(cli("member", "list", "--json")))
    assert [m["slug"] for m in listed] == ["glusk", "sp1-glusk", "trun"]
    assert "Община Трън" in ok(cli("member", "list"))

    refused(cli("member", "add", "glusk", "--name", "again"), "already exists")
    refused(cli("member", "add", "Głusk", "--name", "x"), "invalid member slug")
    refused(cli("member", "add", "x", "--name", "x", "--kind", "village"), "village", code=2)
    refused(
        cli(
            "member",
            "add",
            "x",
            "--name",
            "x",
            "--contract-start",
            "2027-01-01",
            "--contract-end",
            "2026-01-01",
        ),
        "contract end",
    )
    refused(cli("member", "show", "nobody"), "no member 'nobody'")

    assert "suspended" in ok(cli("member", "suspend", "glusk", "--reason", "unpaid invoice"))
    refused(cli("member", "suspend", "glusk"), "already suspended")
    assert json.loads(ok(cli("member", "show", "glusk", "--json")))["status"] == "suspended"
    refused(
        cli("mailbox", "add", f"glusk@{SHARED}", "--member", "glusk", "--generate"),
        "suspended",
        "unpaid invoice",
    )
    ok(cli("member", "resume", "glusk"))
    assert "ended" in ok(cli("member", "end", "trun", "--reason", "contract ended"))
    assert json.loads(ok(cli("member", "show", "trun", "--json")))["status"] == "ended"
    ok(cli("member", "update", "glusk", "--max-mailboxes", "4", "--quota", "5G"))
    assert json.loads(ok(cli("member", "show", "glusk", "--json")))["package"]["max_mailboxes"] == 4


def test_domains(base: Cli) -> None:
    cli = base
    out = ok(cli("domain", "add", "Община-Трън.БГ", "--member", "trun", "--utf8-local-parts"))
    assert "община-трън.бг (xn----7sbc2azacbvr9dr.xn--90ae)" in out
    listed = {d["name"]: d for d in json.loads(ok(cli("domain", "list", "--json")))}
    assert listed["община-трън.бг"]["ascii_name"] == "xn----7sbc2azacbvr9dr.xn--90ae"
    assert listed["община-трън.бг"]["member"] == "trun"
    assert listed[SHARED]["shared"] is True
    refused(cli("domain", "add", "xn----7sbc2azacbvr9dr.xn--90ae"), "already hosted")
    refused(cli("domain", "add", "not a domain"), "invalid domain name")
    refused(cli("domain", "add", "gmina.pl", "--member", "nobody"), "no member")
    ok(
        cli(
            "mailbox",
            "add",
            "кмет@община-трън.бг",
            "--member",
            "trun",
            "--password-stdin",
            input=PW,
        )
    )
    refused(cli("domain", "remove", "община-трън.бг"), "1 mailboxes")
    ok(cli("mailbox", "remove", "кмет@община-трън.бг", "--yes"))
    ok(cli("domain", "remove", "xn----7sbc2azacbvr9dr.xn--90ae"))
    refused(cli("domain", "remove", "община-трън.бг"), "not hosted")


def test_mailboxes(base: Cli, db: Database, settings: Settings) -> None:
    cli = base
    assert "glusk@info.association.pl added (1G)" in ok(
        cli(
            "mailbox",
            "add",
            "Glusk@info.association.pl",
            "--member",
            "glusk",
            "--password-stdin",
            "--name",
            "Urząd Gminy",
            input=PW,
        )
    )
    out = ok(
        cli(
            "mailbox",
            "add",
            f"glusk.sekretariat@{SHARED}",
            "--member",
            "glusk",
            "--generate",
            "--quota",
            "512M",
        )
    )
    generated = out.split("password: ")[1].strip()
    assert len(generated) == 16
    assert out.count(generated) == 1

    shown = json.loads(ok(cli("mailbox", "show", f"GLUSK@{SHARED}", "--json")))
    assert shown["address"] == f"glusk@{SHARED}"
    assert shown["display_name"] == "Urząd Gminy"
    assert shown["password_scheme"] == "ARGON2ID"
    assert "password_hash" not in shown
    listed = json.loads(ok(cli("mailbox", "list", "--member", "glusk", "--json")))
    assert [m["address"] for m in listed] == [f"glusk.sekretariat@{SHARED}", f"glusk@{SHARED}"]
    assert ok(cli("mailbox", "list", "--member", "trun")).strip() == "(none)"

    with db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "test"), settings=settings)
        assert mailboxes.authenticate(ctx, f"glusk.sekretariat@{SHARED}", generated)

    refused(
        cli("mailbox", "add", f"glusk.x@{SHARED}", "--member", "glusk"),
        "--password-stdin or --generate",
        code=2,
    )
    refused(
        cli(
            "mailbox",
            "add",
            f"glusk.x@{SHARED}",
            "--member",
            "glusk",
            "--generate",
            "--password-stdin",
        ),
        code=2,
    )
    refused(
        cli("mailbox", "add", f"glusk x@{SHARED}", "--member", "glusk", "--generate"),
        "invalid address",
    )
    refused(
        cli("mailbox", "add", f"user%other@{SHARED}", "--member", "glusk", "--generate"),
        "invalid address",
    )
    refused(
        cli("mailbox", "add", "glusk@example.pl", "--member", "glusk", "--generate"),
        "not hosted here",
    )
    refused(
        cli("mailbox", "add", f"glusk.x@{SHARED}", "--member", "nobody", "--generate"), "no member"
    )
    refused(
        cli("mailbox", "add", f"GLUSK@{SHARED}", "--member", "glusk", "--generate"),
        "already a mailbox",
    )
    refused(
        cli(
            "mailbox",
            "add",
            f"glusk.x@{SHARED}",
            "--member",
            "glusk",
            "--password-stdin",
            input="short\n",
        ),
        "too short",
    )
    refused(
        cli("mailbox", "add", f"glusk.x@{SHARED}", "--member", "glusk", "--password-stdin"),
        "no password",
    )
    refused(
        cli(
            "mailbox",
            "add",
            f"glusk.x@{SHARED}",
            "--member",
            "glusk",
            "--generate",
            "--quota",
            "2G",
        ),
        "quota left",
    )
    ok(cli("mailbox", "add", f"glusk.x@{SHARED}", "--member", "glusk", "--generate"))
    refused(
        cli(
            "mailbox",
            "add",
            f"glusk.y@{SHARED}",
            "--member",
            "glusk",
            "--generate",
            "--quota",
            "1M",
        ),
        "all 3 mailboxes",
    )

    ok(
        cli(
            "mailbox",
            "passwd",
            f"glusk@{SHARED}",
            "--password-stdin",
            input="a brand new password\n",
        )
    )
    with db.transaction() as session:
        ctx = ServiceContext(session=session, actor=Actor("cli", "test"), settings=settings)
        assert mailboxes.authenticate(ctx, f"glusk@{SHARED}", "a brand new password")
        assert not mailboxes.authenticate(ctx, f"glusk@{SHARED}", PW.strip())

    ok(cli("mailbox", "disable", f"glusk@{SHARED}"))
    refused(cli("mailbox", "disable", f"glusk@{SHARED}"), "already disabled")
    assert json.loads(ok(cli("mailbox", "show", f"glusk@{SHARED}", "--json")))["enabled"] is False
    ok(cli("mailbox", "enable", f"glusk@{SHARED}"))
    ok(cli("mailbox", "quota", f"glusk@{SHARED}", "1500M"))
    refused(cli("mailbox", "quota", f"glusk@{SHARED}", "3G"), "quota left")
    ok(cli("mailbox", "remove", f"glusk.x@{SHARED}", "--yes"))
    refused(cli("mailbox", "remove", f"glusk.x@{SHARED}", "--yes"), "no mailbox")
    refused(cli("mailbox", "remove", f"glusk@{SHARED}"), code=1)  # no --yes, no terminal
    assert json.loads(ok(cli("mailbox", "show", f"glusk@{SHARED}", "--json")))


def test_aliases(base: Cli) -> None:
    cli = base
    ok(cli("mailbox", "add", f"glusk@{SHARED}", "--member", "glusk", "--generate"))
    out = ok(
        cli(
            "alias",
            "add",
            f"glusk.urzad@{SHARED}",
            f"glusk@{SHARED}",
            "wojt.glusk@example.com",
            "--member",
            "glusk",
        )
    )
    assert "-> glusk@info.association.pl, wojt.glusk@example.com" in out
    listed = json.loads(ok(cli("alias", "list", "--json")))
    assert listed == [
        {
            **listed[0],
            "source": f"glusk.urzad@{SHARED}",
            "member": "glusk",
            "destinations": [f"glusk@{SHARED}", "wojt.glusk@example.com"],
            "catch_all": False,
        }
    ]
    refused(
        cli("alias", "add", f"glusk.a@{SHARED}", "glusk.b@" + SHARED, "--member", "glusk"),
        "does not exist",
    )
    refused(
        cli("alias", "add", f"glusk.a@{SHARED}", "not-an-address", "--member", "glusk"),
        "invalid address",
    )
    refused(cli("alias", "add", f"glusk.a@{SHARED}", "x@example.com"), "name the member")
    refused(cli("alias", "add", f"@{SHARED}", "x@example.com", "--member", "glusk"), "may use only")
    refused(cli("alias", "add", f"glusk.a@{SHARED}", "--member", "glusk"), code=2)
    refused(
        cli("alias", "add", f"glusk@{SHARED}", "x@example.com", "--member", "glusk"),
        "already a mailbox",
    )
    ok(cli("domain", "add", "trun.bg", "--member", "trun"))
    ok(cli("mailbox", "add", "kmet@trun.bg", "--member", "trun", "--generate"))
    assert "@trun.bg -> kmet@trun.bg" in ok(cli("alias", "add", "@trun.bg", "kmet@trun.bg"))
    refused(cli("mailbox", "remove", "kmet@trun.bg", "--yes"), "destination of 1 alias")
    ok(cli("alias", "remove", "@trun.bg"))
    refused(cli("alias", "remove", "@trun.bg"), "no alias")
    ok(cli("mailbox", "remove", "kmet@trun.bg", "--yes"))


def test_admins_and_tokens(base: Cli, db: Database) -> None:
    cli = base
    out = ok(cli("admin", "add", "root", "--generate"))
    assert "superadmin root added" in out and "password: " in out
    assert "admin of member glusk" in ok(
        cli("admin", "add", "glusk-admin", "--member", "glusk", "--password-stdin", input=PW)
    )
    refused(cli("admin", "add", "root", "--generate"), "already exists")
    refused(cli("admin", "add", "x", "--member", "nobody", "--generate"), "invalid admin username")
    refused(cli("admin", "add", "someone", "--member", "nobody", "--generate"), "no member")
    listed = json.loads(ok(cli("admin", "list", "--json")))
    assert {(a["username"], a["role"]) for a in listed} == {
        ("root", "superadmin"),
        ("glusk-admin", "member-admin"),
    }
    token = ok(cli("token", "create", "--admin", "root", "--name", "ansible")).strip()
    assert token.startswith("mnt_")
    with db.reader() as session:
        found = admins.verify_token(session, token)
        assert found is not None and found.name == "ansible"
        prefix = found.prefix
    refused(cli("token", "create", "--admin", "nobody"), "no admin")
    ok(cli("token", "revoke", prefix))
    refused(cli("token", "revoke", prefix), "already revoked")
    with db.reader() as session:
        assert admins.verify_token(session, token) is None


def test_demo_and_status(cli: Cli, tmp_path: Path) -> None:
    out = ok(cli("demo"))
    assert "кмет@община-трън.бг" in out
    creds = tmp_path / "state" / "demo-credentials.txt"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert len(creds.read_text().splitlines()) == out.count("\n  ")
    assert "already loaded" in ok(cli("demo"))
    status = json.loads(ok(cli("status", "--json")))
    assert status["counts"]["members"] == 6
    assert status["counts"]["mailboxes"] == 11
    assert status["listen"]["ports"]["smtp"] == 2525
    text = ok(cli("status"))
    assert "xn----7sbc2azacbvr9dr.xn--90ae" in text


def test_vacation_and_forwarding(base: Cli, tmp_path: Path) -> None:
    cli = base
    ok(cli("mailbox", "add", f"glusk@{SHARED}", "--member", "glusk", "--generate"))
    text = tmp_path / "urlop.txt"
    text.write_text("Jestem na urlopie.\nW pilnych sprawach: sekretariat.\n", encoding="utf-8")
    out = ok(
        cli(
            "mailbox",
            "vacation",
            f"glusk@{SHARED}",
            "--on",
            "--subject",
            "Urlop",
            "--message-file",
            str(text),
            "--days",
            "3",
            "--from",
            "2026-12-20",
            "--until",
            "2027-01-02",
        )
    )
    assert "vacation reply of glusk@info.association.pl on" in out
    refused(cli("mailbox", "vacation", f"glusk@{SHARED}", "--on", "--days", "99"), "days")
    refused(cli("mailbox", "vacation", f"glusk@{SHARED}", "--on", "--until", "jutro"), code=2)
    ok(cli("mailbox", "forward", f"glusk@{SHARED}", "wojt@example.com", "--no-keep"))
    refused(cli("mailbox", "forward", f"glusk@{SHARED}", "nie-adres"), "invalid address")
    shown = json.loads(ok(cli("mailbox", "show", f"glusk@{SHARED}", "--json")))
    assert shown["vacation"] == {
        "subject": "Urlop",
        "message": "Jestem na urlopie.\nW pilnych sprawach: sekretariat.",
        "days": 3,
        "from": "2026-12-20",
        "until": "2027-01-02",
    }
    assert (shown["forward_to"], shown["forward_keep_copy"]) == (["wojt@example.com"], False)
    assert "forwards to:     wojt@example.com" in ok(cli("mailbox", "show", f"glusk@{SHARED}"))
