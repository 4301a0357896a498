"""The deployment playbook (ansible/site.yml) run for real, and `muninet apply`.

The target is this machine with every path under a scratch directory
(`muninet_root`), connection local. Debian packages are already installed here and
no systemd runs, so the test switches off apt, pip and systemctl by variables; all
the rest runs as on a server: the settings file, `muninet db upgrade`,
`muninet render` for each daemon, unit files, firewall rules, log rotation, the
backup script, handlers (which check every rendered configuration with the
daemon's own tool) and the record `muninet apply` runs again from.

The first deployment goes through `muninet apply --playbook --vars`; the second
through a bare `muninet apply`, which finds the playbook copy and the variables
the first one recorded, and must change nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.tls import ensure_self_signed

from conftest import missing, require_tool
from dovecot_server import world_traversable_tmp

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "ansible" / "site.yml"
BIN = Path(sys.executable).parent
MUNINET = str(BIN / "muninet")
UNITS = [
    "muninet-admin.service",
    "muninet-backup.service",
    "muninet-backup.timer",
    "muninet-clamd.service",
    "muninet-dovecot.service",
    "muninet-firewall.service",
    "muninet-freeradius.service",
    "muninet-radius-enforce.service",
    "muninet-radius-enforce.timer",
    "muninet-rspamd.service",
    "muninet-smtpd.service",
]


@dataclass
class Target:
    root: Path  # muninet_root
    config: Path
    state: Path
    env: dict[str, str]
    first: subprocess.CompletedProcess[str]

    def muninet(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MUNINET, *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )


def clean_env(config: Path) -> dict[str, str]:
    """This process's environment without MUNINET_* settings, with the target's file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUNINET_")}
    env["MUNINET_CONFIG"] = str(config)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    if os.geteuid() != 0:
        missing("root (the deployment chowns Maildirs to vmail and drops daemons to their users)")
    for tool in (
        "doveconf",
        "freeradius",
        "clamconf",
        "rspamadm",
        "nft",
        "logrotate",
        "systemd-analyze",
    ):
        require_tool(tool)
    scratch = world_traversable_tmp("muninet-deploy-")
    try:
        root = scratch / "target"
        # A certificate "from the control machine", copied by the role.
        cert, key = ensure_self_signed(scratch / "given-tls", "mail.example.org")
        variables = {
            "muninet_root": str(root),
            "muninet_venv": sys.prefix,
            "muninet_install_packages": False,
            "muninet_pip_install": False,
            "muninet_manage_services": False,
            "muninet_hostname": "mail.example.org",
            "muninet_association_name": "Związek Gmin Testowych",
            "muninet_tls_cert_src": str(cert),
            "muninet_tls_key_src": str(key),
            "muninet_firewall_radius_sources": ["192.0.2.0/24", "2001:db8:10::/48"],
            "muninet_settings": {"spam": {"reject_score": 12.0}},
        }
        vars_file = scratch / "vars.yml"
        vars_file.write_text(json.dumps(variables))
        config = root / "etc" / "muninet" / "muninet.toml"
        env = clean_env(config)
        first = subprocess.run(
            [MUNINET, "apply", "--playbook", str(PLAYBOOK), "--vars", str(vars_file)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert first.returncode == 0, first.stdout + first.stderr
        yield Target(root, config, root / "var" / "lib" / "muninet", env, first)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("ok="))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_first_run_streams_progress_and_runs_the_handlers(target: Target) -> None:
    out = target.first.stdout
    assert out.startswith(f"muninet apply: {PLAYBOOK}")
    assert "PLAY Deploy muninet" in out
    for line in (
        "changed  Write the settings file",
        "changed  Create or upgrade the database schema",
        "changed  Render Dovecot's configuration (muninet render dovecot)",
        "changed  Render FreeRADIUS's configuration (muninet render freeradius)",
        # Handlers: each rendered configuration checked by the daemon's own tool.
        "ok       Check Dovecot's configuration",
        "ok       Check clamd's configuration",
        "ok       Check rspamd's configuration",
        "ok       Check FreeRADIUS's configuration",
        "changed  Unpack the playbook on the host",
    ):
        assert line in out, out
    counts = recap(out)
    assert counts["changed"] > 10 and counts["failures"] == 0


def test_second_run_through_the_record_changes_nothing(target: Target) -> None:
    record = json.loads((target.root / "etc" / "muninet" / "deploy.json").read_text())
    installed = target.root / "opt" / "muninet" / "ansible" / "site.yml"
    assert record["playbook"] == str(installed) and installed.is_file()
    assert record["vars"]["muninet_root"] == str(target.root)
    assert not any(name.startswith("muninet_base_") for name in record["vars"])
    assert (target.root / "etc" / "muninet" / "deploy.json").stat().st_mode & 0o777 == 0o600

    second = target.muninet("apply")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith(f"muninet apply: {installed}")
    counts = recap(second.stdout)
    assert counts["changed"] == 0 and counts["failures"] == 0, second.stdout
    assert counts["ok"] > 15
    assert "  changed " not in second.stdout


def test_settings_file_and_database(target: Target) -> None:
    text = target.config.read_text()
    assert target.config.stat().st_mode & 0o777 == 0o600
    assert f'state_dir = "{target.state}"' in text
    assert 'method = "lmtp"' in text
    assert "reject_score = 12.0" in text
    assert f'tls_cert = "{target.root}/etc/muninet/tls/cert.pem"' in text
    assert (target.root / "etc" / "muninet" / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    status = target.muninet("db", "status", "--json")
    assert status.returncode == 0, status.stderr
    schema = json.loads(status.stdout)
    assert schema["current"] == schema["head"]


def test_rendered_configurations_pass_the_daemons_checks(target: Target) -> None:
    state = target.state
    dovecot = subprocess.run(
        ["doveconf", "-n", "-c", str(state / "dovecot" / "dovecot.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dovecot.returncode == 0, dovecot.stderr
    assert f"ssl_cert = <{target.root}/etc/muninet/tls/cert.pem" in dovecot.stdout
    assert "imap" in dovecot.stdout and "lmtp" in dovecot.stdout

    radius = subprocess.run(
        ["freeradius", "-XC", "-d", str(state / "freeradius")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert radius.returncode == 0, radius.stdout[-3000:]
    assert "Configuration appears to be OK" in radius.stdout

    clamd = subprocess.run(
        ["clamconf", "-n", "-c", str(state / "clamav")], capture_output=True, text=True, check=False
    )
    assert "Config file: clamd.conf" in clamd.stdout and "ERROR" not in clamd.stderr, clamd.stderr

    unit = (target.root / "etc" / "systemd" / "system" / "muninet-rspamd.service").read_text()
    command = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    variables = [arg for arg in command.split() if arg.startswith("--var=")]
    assert f"--var=LOCAL_CONFDIR={state}/rspamd/conf" in variables
    rspamd = subprocess.run(
        ["rspamadm", *variables, "configtest", "-c", "/etc/rspamd/rspamd.conf"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rspamd.returncode == 0 and "syntax OK" in rspamd.stdout, rspamd.stdout + rspamd.stderr
    actions = (state / "rspamd" / "conf" / "local.d" / "actions.conf").read_text()
    assert "12" in actions  # muninet_settings reached the rendered configuration


def test_units_firewall_and_log_rotation(target: Target) -> None:
    units = target.root / "etc" / "systemd" / "system"
    assert sorted(p.name for p in units.iterdir()) == UNITS
    verify = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / name) for name in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    smtpd = (units / "muninet-smtpd.service").read_text()
    assert f"ExecStart={MUNINET} smtpd" in smtpd
    assert f'Environment="MUNINET_CONFIG={target.config}"' in smtpd
    dovecot = (units / "muninet-dovecot.service").read_text()
    assert f"-F -c {target.state}/dovecot/dovecot.conf" in dovecot
    admin = (units / "muninet-admin.service").read_text()
    assert "--certfile " + f"{target.root}/etc/muninet/tls/cert.pem" in admin
    assert "admin_ui.wsgi:app" in admin

    rules = target.root / "etc" / "muninet" / "nftables.conf"
    text = rules.read_text()
    assert "tcp dport { 25, 587, 465 }" in text
    assert "ip saddr { 192.0.2.0/24 } udp dport { 1812, 1813 }" in text
    assert "ip6 saddr { 2001:db8:10::/48 }" in text
    check = subprocess.run(
        ["nft", "-c", "-f", str(rules)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr

    rotate = target.root / "etc" / "logrotate.d" / "muninet"
    debug = subprocess.run(
        ["logrotate", "-d", "-s", str(target.root / "logrotate.status"), str(rotate)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert debug.returncode == 0, debug.stderr
    assert f"{target.state}/dovecot/dovecot.log" in debug.stderr + debug.stdout


def test_backup_script_copies_the_database_and_the_mail(target: Target) -> None:
    maildir = target.state / "mail" / "example.org" / "user" / "Maildir" / "new"
    maildir.mkdir(parents=True)
    (maildir / "1.msg,S=5").write_text("hello")
    script = target.root / "usr" / "local" / "sbin" / "muninet-backup"
    assert script.stat().st_mode & 0o777 == 0o700
    run = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    destination = Path(run.stdout.strip().removeprefix("muninet-backup: "))
    assert destination.parent == target.root / "var" / "backups" / "muninet"
    with sqlite3.connect(destination / "muninet.db") as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision
    with tarfile.open(destination / "state.tar.gz") as archive:
        names = archive.getnames()
    assert "./mail/example.org/user/Maildir/new/1.msg,S=5" in names
    assert "./muninet.db" not in names  # the consistent copy is beside it
    with tarfile.open(destination / "etc.tar.gz") as archive:
        assert "./muninet.toml" in archive.getnames()


def test_render_check_reports_without_writing(target: Target) -> None:
    actions = target.state / "rspamd" / "conf" / "local.d" / "actions.conf"
    before = actions.read_text()
    check = target.muninet("render", "rspamd", "--check", MUNINET_SPAM__REJECT_SCORE="20")
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[0] == "rspamd: would change"
    assert str(actions) in check.stdout
    assert actions.read_text() == before
    again = target.muninet("render")
    assert again.stdout.splitlines() == [
        "dovecot: unchanged",
        "clamd: unchanged",
        "rspamd: unchanged",
        "freeradius: unchanged",
    ], again.stdout + again.stderr


def test_apply_failure_names_the_task_and_keeps_the_old_settings(target: Target) -> None:
    before = target.config.read_text()
    failed = target.muninet("apply", "-e", 'muninet_settings={"spam": {"reject_score": "lots"}}')
    assert failed.returncode == 1
    assert "  FAILED   Write the settings file" in failed.stdout
    assert "Traceback" not in failed.stderr
    message = failed.stderr.strip()
    assert message.startswith("muninet: apply failed at task 'Write the settings file':")
    assert "spam.reject_score" in message and len(message.splitlines()) == 1
    assert target.config.read_text() == before  # validated before it replaced the file


def test_apply_without_a_playbook_is_a_clear_error(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "muninet.toml")
    result = subprocess.run(
        [MUNINET, "apply", "--playbook", str(tmp_path / "missing.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("muninet: no deployment playbook found")
    assert "Traceback" not in result.stderr


def test_ansible_lint_is_clean() -> None:
    lint = BIN / "ansible-lint"
    if not lint.exists():
        missing("ansible-lint (pip install -e '.[test]')")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["NO_COLOR"] = "1"
    result = subprocess.run(
        [str(lint), "--offline", "."],
        cwd=REPO / "ansible",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout + result.stderr
