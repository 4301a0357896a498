"""The muninet_* Ansible modules (ansible/library) against a running admin API.

The real Flask app serves /api/v1 from a real WSGI server (werkzeug, threaded) on
127.0.0.1 over this test's database (SQLite and PostgreSQL); real `ansible-playbook`
runs playbooks written here with `connection: local`. The modules run under the
system's /usr/bin/python3 when there is one, which has none of muninet's
dependencies: they need only the standard library. The database is checked
directly after every run, so check mode is seen to change nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
from passlib.hash import sha512_crypt
from sqlalchemy import select
from werkzeug.serving import make_server

from admin_ui import create_app
from provisioning.errors import NotFound
from provisioning.models import AuditEvent
from provisioning.services import admins, aliases, domains, mailboxes, members, plans, subscribers
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings
from provisioning.tls import ensure_self_signed

Unit = Callable[[], AbstractContextManager[ServiceContext]]

ANSIBLE = Path(__file__).resolve().parents[1] / "ansible"
BIN = Path(sys.executable).parent
MODULES = ["member", "domain", "mailbox", "alias", "plan", "subscriber"]
KINDS = ["plan", "member", "domain", "mailbox", "alias", "subscriber"]  # provisioning()'s order
# Distinct strings, searched for in everything ansible-playbook prints.
MAILBOX_PASSWORD = "Pierwsze-Haslo-7391"
ROTATED_PASSWORD = "Drugie-Haslo-5518"
LINE_PASSWORD = "Linia-Haslo-2604"


@dataclass
class Server:
    url: str
    token: str
    ca_path: str  # the server's self-signed certificate


@pytest.fixture
def api_server(settings: Settings, unit: Unit, tmp_path: Path) -> Iterator[Server]:
    """The admin app on a real HTTPS server, and a superadmin's token made as the CLI makes it."""
    with unit() as ctx:
        admins.create(ctx, "root", "an admin password 1")
        _, token = admins.create_token(ctx, "root", "ansible")
    app = create_app(settings)
    cert, key = ensure_self_signed(tmp_path / "tls", "localhost")
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=(str(cert), str(key)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"https://127.0.0.1:{server.server_port}", token, str(cert))
    finally:
        server.shutdown()
        thread.join(timeout=10)


@dataclass
class Run:
    rc: int
    output: str  # what ansible-playbook printed
    results: list[dict[str, Any]] = field(default_factory=list)  # each task's result
    stats: dict[str, int] = field(default_factory=dict)

    def task(self, name: str) -> dict[str, Any]:
        found = [r for r in self.results if r["_task"] == name]
        assert found, f"no task {name!r} in {[r['_task'] for r in self.results]}"
        return found[0]

    def changed(self) -> dict[str, bool]:
        return {r["_task"]: bool(r.get("changed")) for r in self.results}


class Ansible:
    """Writes a playbook of tasks and runs it with ansible-runner (real ansible-playbook)."""

    def __init__(self, workdir: Path, server: Server) -> None:
        self.workdir = workdir
        self.server = server
        self.outputs: list[str] = []
        self.count = 0

    def play(
        self,
        tasks: list[dict[str, Any]],
        *,
        check: bool = False,
        diff: bool = False,
        from_environment: bool = False,
    ) -> Run:
        self.count += 1
        connection = {"api_url": self.server.url, "api_token": self.server.token}
        defaults: dict[str, Any] = {"ca_path": self.server.ca_path}
        play: dict[str, Any] = {"name": f"run {self.count}", "hosts": "localhost"}
        if from_environment:  # the modules' fallback to MUNINET_API_URL and MUNINET_API_TOKEN
            play["environment"] = {f"MUNINET_{k.upper()}": v for k, v in connection.items()}
        else:
            defaults.update(connection)
        play["gather_facts"] = False
        play["module_defaults"] = {f"muninet_{m}": defaults for m in MODULES}
        play["tasks"] = tasks
        playbook = [play]
        private = self.workdir / f"run{self.count}"
        (private / "project").mkdir(parents=True)
        (private / "project" / "play.yml").write_text(json.dumps(playbook, indent=2))
        interpreter = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        home = self.workdir / "ansible-home"
        options = [flag for flag, on in (("--check", check), ("--diff", diff)) if on]
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook="play.yml",
            inventory={
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": interpreter,
                        }
                    }
                }
            },
            envvars={
                "ANSIBLE_HOME": str(home),
                "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
                "ANSIBLE_REMOTE_TEMP": str(home / "remote-tmp"),
                "ANSIBLE_LIBRARY": str(ANSIBLE / "library"),
                "ANSIBLE_MODULE_UTILS": str(ANSIBLE / "module_utils"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_PIPELINING": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            cmdline=" ".join(options) or None,
            quiet=True,
            timeout=180,
        )
        output = runner.stdout.read()
        run = Run(int(runner.rc), output)
        for event in runner.events:
            if event.get("event") in {"runner_on_ok", "runner_on_failed"}:
                data = event["event_data"]
                failed = event["event"] == "runner_on_failed"
                run.results.append({**data["res"], "_task": data["task"], "failed": failed})
            self.outputs.append(json.dumps(event))
        self.outputs.append(output)
        run.stats = {name: counts.get("localhost", 0) for name, counts in runner.stats.items()}
        return run


@pytest.fixture
def ansible(
    tmp_path: Path, api_server: Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ansible]:
    if not (BIN / "ansible-playbook").exists():
        pytest.fail(f"{BIN / 'ansible-playbook'} is missing: install the project's dependencies")
    # ansible-runner starts ansible-playbook from PATH.
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    runner = Ansible(tmp_path, api_server)
    yield runner
    printed = "\n".join(runner.outputs)
    for secret in (MAILBOX_PASSWORD, ROTATED_PASSWORD, LINE_PASSWORD, api_server.token):
        assert secret not in printed, "a password or the token was printed"


# -- the provisioning, as a playbook would write it ----------------------------------------


def provisioning(
    *,
    quota: str = "1G",
    destinations: tuple[str, ...] = ("biuro@gamma.example",),
    download: str = "2M",
    status: str = "active",
    mailbox_extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    return [
        {
            "name": "plan",
            "muninet_plan": {
                "name": "dsl-2m",
                "download_bps": download,
                "upload_bps": "512k",
                "data_cap_bytes": "50G",
                "cap_action": "throttle",
                "fair_use_download_bps": "256k",
                "fair_use_upload_bps": "128k",
            },
        },
        {
            "name": "member",
            "muninet_member": {
                "slug": "gamma",
                "name": "Gmina Gamma",
                "kind": "municipality",
                "max_mailboxes": 5,
                "mail_quota_bytes": "10G",
                "max_lines": 3,
                "contract_start": "2026-01-01",
            },
        },
        {"name": "domain", "muninet_domain": {"name": "Gamma.Example", "member": "gamma"}},
        {
            "name": "mailbox",
            "muninet_mailbox": {
                "address": "biuro@gamma.example",
                "password": MAILBOX_PASSWORD,
                "display_name": "Biuro Gminy",
                "quota_bytes": quota,
                **(mailbox_extra or {}),
            },
        },
        {
            "name": "alias",
            "muninet_alias": {
                "source": "kontakt@gamma.example",
                "destinations": list(destinations),
            },
        },
        {
            "name": "subscriber",
            "muninet_subscriber": {
                "username": "jan.kowalski",
                "member": "gamma",
                "plan": "dsl-2m",
                "password": LINE_PASSWORD,
                "static_ip": "192.0.2.10",
                "status": status,
                "reason": "unpaid",
            },
        },
    ]


def exists(unit: Unit, lookup: Callable[[ServiceContext], object]) -> bool:
    with unit() as ctx:
        try:
            lookup(ctx)
        except NotFound:
            return False
        return True


def named(prefix: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same tasks under names that start with `prefix` (one play may repeat them)."""
    return [{**task, "name": f"{prefix} {task['name']}"} for task in tasks]


def test_provisioning_is_idempotent_checkable_and_reversible(ansible: Ansible, unit: Unit) -> None:
    # Check mode on an empty appliance: everything would be created, nothing is.
    dry = ansible.play(provisioning(), check=True)
    assert dry.rc == 0, dry.output
    assert len(dry.results) == 6 and all(dry.changed().values()), dry.changed()
    assert dry.task("mailbox")["mailbox"]["quota_bytes"] == 2**30
    assert not exists(unit, lambda ctx: members.get(ctx.session, "gamma"))
    assert not exists(unit, lambda ctx: plans.get(ctx.session, "dsl-2m"))

    # Created, then the same tasks again: nothing to do.
    first = ansible.play([*provisioning(), *named("again", provisioning())])
    assert first.rc == 0, first.output
    assert first.changed() == {
        **dict.fromkeys(KINDS, True),
        **dict.fromkeys([f"again {kind}" for kind in KINDS], False),
    }
    assert first.stats["changed"] == 6
    with unit() as ctx:
        assert members.get(ctx.session, "gamma").max_lines == 3
        assert domains.get(ctx.session, "gamma.example").member.slug == "gamma"
        mailbox = mailboxes.get(ctx.session, "biuro@gamma.example")
        assert (mailbox.quota_bytes, mailbox.display_name) == (2**30, "Biuro Gminy")
        assert mailboxes.authenticate(ctx, "biuro@gamma.example", MAILBOX_PASSWORD) is not None
        plan = plans.get(ctx.session, "dsl-2m")
        assert (plan.download_bps, plan.data_cap_bytes) == (2_000_000, 50 * 2**30)
        line = subscribers.get(ctx.session, "jan.kowalski")
        assert line.static_ip == "192.0.2.10" and line.status.value == "active"
        assert sha512_crypt.verify(LINE_PASSWORD, line.password_crypt)
        # Audited as the token, like every API change.
        event = ctx.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "mailbox.create")
        ).one()
        assert (event.actor_kind, event.actor_name.split(":")[0]) == ("token", "root")
    assert first.task("mailbox")["mailbox"]["member"] == "gamma"

    # A changed description, first in check mode with a diff as people read it, along
    # with a removal: nothing of it reaches the database.
    rotate = {"password": ROTATED_PASSWORD, "update_password": "always"}
    changed = provisioning(
        quota="2G",
        destinations=("biuro@gamma.example", "kronika@example.net"),
        download="4M",
        status="suspended",
        mailbox_extra=rotate,
    )
    removal = [
        {
            "name": "subscriber",
            "muninet_subscriber": {"username": "jan.kowalski", "state": "absent"},
        },
        {"name": "alias", "muninet_alias": {"source": "kontakt@gamma.example", "state": "absent"}},
        {
            "name": "mailbox",
            "muninet_mailbox": {"address": "biuro@gamma.example", "state": "absent"},
        },
        {"name": "domain", "muninet_domain": {"name": "gamma.example", "state": "absent"}},
        {"name": "plan", "muninet_plan": {"name": "dsl-2m", "state": "absent"}},
    ]
    preview = ansible.play([*changed, *named("remove", removal[1:2])], check=True, diff=True)
    assert preview.rc == 0, preview.output
    assert '-    "quota_bytes": 1073741824' in preview.output
    assert '+    "quota_bytes": 2147483648' in preview.output
    assert '+        "kronika@example.net"' in preview.output
    assert '+    "download_bps": 4000000' in preview.output
    assert '+    "status": "suspended"' in preview.output
    assert '-    "source": "kontakt@gamma.example"' in preview.output
    assert preview.stats["changed"] == 5  # mailbox, alias, plan, subscriber; the removal
    with unit() as ctx:
        assert mailboxes.get(ctx.session, "biuro@gamma.example").quota_bytes == 2**30
        assert mailboxes.authenticate(ctx, "biuro@gamma.example", MAILBOX_PASSWORD) is not None
        assert plans.get(ctx.session, "dsl-2m").download_bps == 2_000_000
        assert subscribers.get(ctx.session, "jan.kowalski").status.value == "active"
        alias = aliases.get(ctx.session, "kontakt@gamma.example")
        assert [d.address for d in alias.destinations] == ["biuro@gamma.example"]

    # Applied, then again: the rotated password now matches, so update_password=always
    # reports no change either.
    applied = ansible.play([*changed, *named("again", changed)], diff=True)
    assert applied.rc == 0, applied.output
    assert applied.changed() == {
        **dict.fromkeys(["plan", "mailbox", "alias", "subscriber"], True),
        **dict.fromkeys(["member", "domain"], False),
        **dict.fromkeys([f"again {kind}" for kind in KINDS], False),
    }
    diff = applied.task("mailbox")["diff"]
    assert (diff["before"]["quota_bytes"], diff["after"]["quota_bytes"]) == (2**30, 2 * 2**30)
    with unit() as ctx:
        assert mailboxes.get(ctx.session, "biuro@gamma.example").quota_bytes == 2 * 2**30
        assert mailboxes.authenticate(ctx, "biuro@gamma.example", ROTATED_PASSWORD) is not None
        line = subscribers.get(ctx.session, "jan.kowalski")
        assert (line.status.value, line.status_reason) == ("suspended", "unpaid")
        assert plans.get(ctx.session, "dsl-2m").download_bps == 4_000_000

    # Removed, then again: already absent.
    removed = ansible.play([*named("remove", removal), *named("again", removal)], diff=True)
    assert removed.rc == 0, removed.output
    assert removed.changed() == {
        **{f"remove {task['name']}": True for task in removal},
        **{f"again {task['name']}": False for task in removal},
    }
    assert removed.task("remove alias")["diff"]["before"]["destinations"] == [
        "biuro@gamma.example",
        "kronika@example.net",
    ]
    assert not exists(unit, lambda ctx: subscribers.get(ctx.session, "jan.kowalski"))
    assert not exists(unit, lambda ctx: aliases.get(ctx.session, "kontakt@gamma.example"))
    assert not exists(unit, lambda ctx: mailboxes.get(ctx.session, "biuro@gamma.example"))
    assert not exists(unit, lambda ctx: domains.get(ctx.session, "gamma.example"))
    assert not exists(unit, lambda ctx: plans.get(ctx.session, "dsl-2m"))
    assert exists(unit, lambda ctx: members.get(ctx.session, "gamma"))


@pytest.mark.parametrize("backend", ["sqlite"])  # the API's messages; storage is tested above
def test_failures_carry_the_apis_reasons(ansible: Ansible, unit: Unit) -> None:
    with unit() as ctx:
        members.create(ctx, "delta", "Gmina Delta", max_mailboxes=2, mail_quota=2**30, max_lines=1)
        domains.create(ctx, "delta.example", member_slug="delta")
        plans.create(ctx, "radio")

    elsewhere = ansible.server.url + "/somewhere-else"

    def failing(name: str, task: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, **task, "ignore_errors": True}

    run = ansible.play(
        [
            failing(
                "bad date",
                {
                    "muninet_subscriber": {
                        "username": "ola",
                        "member": "delta",
                        "plan": "radio",
                        "password": LINE_PASSWORD,
                        "expires_on": "someday",
                    }
                },
            ),
            failing(
                "over the package",
                {
                    "muninet_mailbox": {
                        "address": "duzo@delta.example",
                        "password": MAILBOX_PASSWORD,
                        "quota_bytes": "5G",
                    }
                },
            ),
            failing("no password", {"muninet_mailbox": {"address": "nowy@delta.example"}}),
            failing(
                "fixed field",
                {"muninet_domain": {"name": "delta.example", "member": "delta", "shared": True}},
            ),
            failing("bad size", {"muninet_plan": {"name": "radio", "data_cap_bytes": "lots"}}),
            failing("wrong token", {"muninet_plan": {"name": "radio", "api_token": "mnt_x_y"}}),
            failing("untrusted", {"muninet_plan": {"name": "radio", "ca_path": None}}),
            failing("wrong url", {"muninet_plan": {"name": "radio", "api_url": elsewhere}}),
            {"name": "unverified", "muninet_plan": {"name": "radio", "validate_certs": False}},
        ],
        from_environment=True,
    )
    assert run.rc == 0, run.output  # every failure was ignored
    assert [r["_task"] for r in run.results if not r.get("failed")] == ["unverified"], run.results
    date = run.task("bad date")
    assert date["status"] == 422
    assert "expires_on: not a date: 'someday'" in date["msg"]
    assert date["problem"]["errors"][0]["field"] == "expires_on"
    limit = run.task("over the package")
    assert limit["status"] == 409
    assert "Package limit exceeded" in limit["msg"] and "delta" in limit["msg"]
    assert "give a password to create it" in run.task("no password")["msg"]
    assert "cannot change shared (is False)" in run.task("fixed field")["msg"]
    assert "data_cap_bytes: not a size: 'lots'" in run.task("bad size")["msg"]
    assert not exists(unit, lambda ctx: subscribers.get(ctx.session, "ola"))
    assert not exists(unit, lambda ctx: mailboxes.get(ctx.session, "duzo@delta.example"))
    assert "Unauthorized (401)" in run.task("wrong token")["msg"]
    # The self-signed certificate is trusted through ca_path (every other task) only.
    assert "certificate verify failed" in run.task("untrusted")["msg"]
    assert run.task("unverified")["plan"]["name"] == "radio"
    # A URL that is not the API is not mistaken for an absent object (404 there).
    assert "no muninet API at " + elsewhere in run.task("wrong url")["msg"]


def _load(name: str, path: Path) -> Any:
    sys.dont_write_bytecode = True  # restored by the caller's monkeypatch: no __pycache__ here
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


class _Captured(Exception):
    pass


def argument_spec(name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The argument spec a module hands to AnsibleModule (its main() stops right there)."""
    utils = "ansible.module_utils.muninet_api"
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    monkeypatch.delitem(sys.modules, utils, raising=False)
    _load(utils, ANSIBLE / "module_utils" / "muninet_api.py")
    module = _load(f"_test_{name}", ANSIBLE / "library" / f"{name}.py")
    captured: dict[str, Any] = {}

    def capture(argument_spec: dict[str, Any], **_kwargs: Any) -> None:
        captured.update(argument_spec)
        raise _Captured

    monkeypatch.setattr(module, "AnsibleModule", capture)
    with pytest.raises(_Captured):
        module.main()
    monkeypatch.delitem(sys.modules, f"_test_{name}")
    monkeypatch.delitem(sys.modules, utils)
    return captured


def test_documentation_matches_the_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every module's DOCUMENTATION parses (ansible-doc) and states exactly the options, types,
    defaults and choices its argument spec takes; its EXAMPLES pass ansible-lint, whose
    `args` rule checks them against the real module."""
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LIBRARY": str(ANSIBLE / "library"),
        "ANSIBLE_MODULE_UTILS": str(ANSIBLE / "module_utils"),
        "ANSIBLE_DOC_FRAGMENT_PLUGINS": str(ANSIBLE / "doc_fragments"),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the source tree
    }
    names = [f"muninet_{m}" for m in MODULES]
    docs = subprocess.run(
        [str(BIN / "ansible-doc"), "--json", "-t", "module", *names],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert docs.returncode == 0, docs.stderr
    parsed = json.loads(docs.stdout)
    examples = []
    for name in names:
        doc = parsed[name]["doc"]
        assert doc["short_description"] and parsed[name]["return"]
        assert doc["attributes"]["check_mode"]["support"] == "full"
        spec = argument_spec(name, monkeypatch)
        assert set(doc["options"]) == set(spec), name
        for option, rules in spec.items():
            documented = doc["options"][option]
            label = f"{name}.{option}"
            assert documented.get("type", "str") == rules.get("type", "str"), label
            assert documented.get("default") == rules.get("default"), label
            assert documented.get("choices") == rules.get("choices"), label
            assert bool(documented.get("required")) == bool(rules.get("required")), label
            assert documented.get("elements") == rules.get("elements"), label
        secret = {o for o, r in spec.items() if r.get("no_log")}
        assert secret == ({"api_token", "password"} & set(spec)), name
        examples.append(parsed[name]["examples"])
    # Every task of the examples, as one playbook for the linter, and a wrong task that
    # the linter must catch (so a lint that silently skips the modules cannot pass).
    tasks = "\n".join(
        "\n".join("    " + line if line else line for line in text.strip().splitlines())
        for text in examples
    )
    play = (
        "---\n- name: Module examples\n  hosts: localhost\n  gather_facts: false\n"
        "  vars:\n    vault_muninet_token: secret\n  tasks:\n"
    )
    (tmp_path / "examples.yml").write_text(play + tasks + "\n")
    wrong = "    - name: A misspelt option\n      muninet_mailbox:\n        adress: x@example.org\n"
    (tmp_path / "wrong.yml").write_text(play + wrong)
    # ansible-lint's `args` rule imports each module in its own process, where Ansible's
    # module_utils package does not know ANSIBLE_MODULE_UTILS (ansible-playbook packs it
    # into the module instead); this hook shows it the directory the same way.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\nimport ansible.module_utils\n"
        "ansible.module_utils.__path__.append(os.environ['ANSIBLE_MODULE_UTILS'])\n"
    )
    lint = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--nocolor", "examples.yml", "wrong.yml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(hook)},
        check=False,
        timeout=300,
    )
    report = lint.stdout + lint.stderr
    assert "Ignored exception" not in report, report
    assert "examples.yml" not in report.replace("examples.yml (playbook)", ""), report
    assert "args[module]" in report and "wrong.yml:" in report, report
    assert "missing required arguments: address" in report, report
