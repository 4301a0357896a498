"""`muninet apply`: run the deployment playbook (ansible/site.yml) against this host.

After a change of settings (or of muninet itself) the appliance is brought back in
line by the same playbook that deployed it: configuration files, `muninet render`
for the daemons, migrations, units, and restarts of exactly what changed.

Where the playbook and its variables come from: the deployment writes
`deploy.json` beside muninet.toml (the directory of MUNINET_CONFIG, by default
/etc/muninet) holding the path of the playbook it installed on the host
(/opt/muninet/ansible/site.yml by default) and the `muninet_*` variables it was run
with. A wheel cannot carry the playbook as package data under a name of its own
(the top-level name `ansible` is ansible-core's), and a setting in muninet.toml
would be one more thing to keep in step by hand; the deployment records what it
did instead. `--playbook` and `--vars` override that record, and a source checkout
(an editable install) falls back to its own ansible/site.yml.

ansible-runner runs `ansible-playbook` from PATH, so this interpreter's bin
directory goes first on PATH; the inventory is a dict with this host alone,
connection local.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from provisioning.errors import ConfigError, MuninetError

DEPLOY_RECORD = "deploy.json"
DEFAULT_CONFIG = Path("/etc/muninet/muninet.toml")
# ansible/site.yml in a source checkout, next to the provisioning package.
SOURCE_PLAYBOOK = Path(__file__).resolve().parents[2] / "ansible" / "site.yml"
HOST_GROUP = "muninet"


def deploy_record_path() -> Path:
    config = os.environ.get("MUNINET_CONFIG")
    return (Path(config) if config else DEFAULT_CONFIG).parent / DEPLOY_RECORD


def read_record(path: Path) -> dict[str, Any]:
    """The deployment's record, or {} when this host was never deployed by the playbook."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return record


def read_vars_file(path: Path) -> dict[str, Any]:
    """Variables from a JSON or YAML file (YAML through ansible-core's PyYAML)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        import yaml  # type: ignore[import-untyped]

        data = yaml.safe_load(text)
    except Exception as exc:  # yaml's errors carry the line and column
        raise ConfigError(f"{path} is not valid YAML or JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of variable names to values")
    return data


def parse_extra(items: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that is JSON (true, 25, ["a"]) is taken as such."""
    extra: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-e")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    return extra


def choose_playbook(option: Path | None, record: dict[str, Any]) -> Path:
    if option is not None:
        candidates = [option]
    else:
        recorded = record.get("playbook")
        candidates = [Path(recorded)] if isinstance(recorded, str) else []
        candidates.append(SOURCE_PLAYBOOK)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"no deployment playbook found (looked at {', '.join(map(str, candidates))}): "
        "deploy this host with ansible/site.yml first, or give --playbook"
    )


@dataclass
class Progress:
    """Turns ansible-runner's events into one line per task result, and keeps the failure."""

    echo: Any = click.echo
    failed_task: str | None = None
    failure: str | None = None
    # Ansible's own recap (playbook_on_stats), summed over hosts.
    recap: dict[str, int] = field(default_factory=dict)

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        task = str(data.get("task") or "").strip()
        if kind == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "unreachable", "skipped"):
                hosts = data.get("dark" if key == "unreachable" else key) or {}
                self.recap[key] = sum(int(n) for n in hosts.values())
        elif kind == "playbook_on_play_start":
            self.echo(f"PLAY {data.get('play', '')}")
        elif kind == "runner_on_ok":
            changed = bool((data.get("res") or {}).get("changed"))
            self._line("changed" if changed else "ok", task)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                self._line("ignored", task)
            else:
                self._line("FAILED", task)
                self.failed_task = self.failed_task or task
                self.failure = self.failure or _failure_text(data.get("res") or {})
        return True  # keep the event in the artifacts

    def _line(self, status: str, task: str) -> None:
        self.echo(f"  {status:<8} {task}")


def _failure_text(result: dict[str, Any]) -> str:
    """A failed task's message and what the failing program said, on one line."""
    items = result.get("results")
    if isinstance(items, list):  # a loop: the first item that failed says why
        failed = [item for item in items if isinstance(item, dict) and item.get("failed")]
        if failed:
            return _failure_text(failed[0])
    parts = [
        " ".join(str(result[key]).split())
        for key in ("msg", "stderr", "module_stderr")
        if result.get(key)
    ]
    if not parts and result.get("stdout"):
        parts.append(" ".join(str(result["stdout"]).split()))
    text = ": ".join(parts) or "no message"
    return text if len(text) <= 800 else text[:800] + "..."


def run_playbook(
    playbook: Path, extravars: dict[str, Any], *, check: bool, progress: Progress
) -> tuple[str, int]:
    """Run the playbook on this host with ansible-runner; (status, rc)."""
    import ansible_runner  # type: ignore[import-untyped]

    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    inventory = {
        "all": {
            "children": {
                HOST_GROUP: {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        }
    }
    # The artifacts hold the variables (maybe a database password): a private dir, removed.
    with tempfile.TemporaryDirectory(prefix="muninet-apply-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(playbook.parent),
            playbook=str(playbook),
            inventory=inventory,
            extravars=extravars,
            cmdline="--check" if check else None,
            envvars={
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "ANSIBLE_LOCALHOST_WARNING": "0",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            },
            event_handler=progress,
            quiet=True,
        )
        status, rc = str(runner.status), int(runner.rc if runner.rc is not None else 1)
        if rc != 0 and progress.failure is None:
            # No task failed: the playbook did not even start (syntax, a missing role).
            tail = [line for line in runner.stdout.read().splitlines() if line.strip()][-5:]
            progress.failure = " ".join(" ".join(tail).split()) or status
    return status, rc


@click.command("apply")
@click.option(
    "--playbook",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The deployment playbook (default: the one recorded in deploy.json).",
)
@click.option(
    "--vars",
    "vars_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A YAML/JSON file of muninet_* variables (default: those recorded in deploy.json).",
)
@click.option("-e", "--extra", multiple=True, help="KEY=VALUE: one more variable (repeatable).")
@click.option("--check", is_flag=True, help="Ansible's check mode: report, change nothing.")
def apply_command(
    playbook: Path | None, vars_file: Path | None, extra: tuple[str, ...], check: bool
) -> None:
    """Bring this host in line with its deployment: run ansible/site.yml locally.

    Streams one line per task (ok / changed / FAILED); a failure ends with the
    task's name and message and exit code 1.
    """
    record_path = deploy_record_path()
    record = read_record(record_path)
    chosen = choose_playbook(playbook, record)
    if vars_file is not None:
        extravars = read_vars_file(vars_file)
    else:
        recorded = record.get("vars")
        extravars = dict(recorded) if isinstance(recorded, dict) else {}
    extravars.update(parse_extra(extra))
    click.echo(f"muninet apply: {chosen}{' (check mode)' if check else ''}")
    progress = Progress()
    status, rc = run_playbook(chosen, extravars, check=check, progress=progress)
    if progress.recap:  # as Ansible's PLAY RECAP counts: ok includes changed
        click.echo(" ".join(f"{key}={count}" for key, count in progress.recap.items()))
    if rc != 0 or status != "successful":
        where = f"at task {progress.failed_task!r}" if progress.failed_task else f"({status})"
        raise MuninetError(f"apply failed {where}: {progress.failure}")


COMMANDS = [apply_command]
