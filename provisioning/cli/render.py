"""`muninet render [DAEMON...] [--check]`: write the daemons' configurations and say what changed.

The one source of every daemon configuration is config/templates/, rendered by
`provisioning.render*` into <state_dir>/<daemon>. Deployment (ansible/) calls this
command instead of carrying copies of the templates, and restarts a daemon only
when its files changed: each daemon gets one line, `<daemon>: changed` or
`<daemon>: unchanged` (with --check: `would change`), which Ansible's
`changed_when` reads.

A daemon's files are compared before and after rendering, by content and mode.
With --check the renderer still runs (that is the only way to know what it would
write), and afterwards every compared file is put back as it was and every new
file removed, so a check never changes what a running daemon reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from provisioning.cli.app import App, emit_json, json_option, pass_app
from provisioning.settings import Settings

DAEMONS = ("dovecot", "clamd", "rspamd", "freeradius")
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
# Written by the daemons themselves, or compiled from a compared file: never compared.
_RUNTIME_DIRS = frozenset({"run", "state", "log", "db", "tmp"})
_RUNTIME_SUFFIXES = (".log", ".pid")
# Compiled by sievec from a compared script: put back by --check, never compared.
_NOT_COMPARED_SUFFIXES = (".svbin",)


@dataclass(frozen=True)
class FileState:
    data: bytes
    mode: int


Snapshot = dict[Path, FileState]


def _files(root: Path) -> Iterator[Path]:
    """Regular files under `root` (or `root` itself), skipping the daemons' runtime dirs."""
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.is_symlink():
            if path.name not in _RUNTIME_DIRS:
                yield from _files(path)
        elif path.is_file() and not path.is_symlink() and not path.name.endswith(_RUNTIME_SUFFIXES):
            yield path


def snapshot(roots: list[Path]) -> Snapshot:
    return {
        path: FileState(path.read_bytes(), path.stat().st_mode & 0o7777)
        for root in roots
        for path in _files(root)
    }


def differences(before: Snapshot, after: Snapshot) -> list[Path]:
    """Files added, removed or changed (content or mode), leaving out compiled and runtime ones."""
    return sorted(
        path
        for path in before.keys() | after.keys()
        if not path.name.endswith(_NOT_COMPARED_SUFFIXES) and before.get(path) != after.get(path)
    )


def restore(before: Snapshot, after: Snapshot) -> None:
    """Put the files back as `before` had them (the --check mode)."""
    for path in after.keys() - before.keys():
        path.unlink(missing_ok=True)
    for path, state in before.items():
        if after.get(path) == state:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(state.data)
        path.chmod(state.mode)


def _binary(name: str) -> str:
    """A daemon's program: found on the system path, else where Debian installs it."""
    return shutil.which(name, path=SBIN) or f"/usr/sbin/{name}"


def _render_dovecot(settings: Settings) -> list[str]:
    from provisioning.render import render_dovecot

    files = render_dovecot(settings)
    return [_binary("dovecot"), "-F", "-c", str(files.config)]


def _render_clamd(settings: Settings) -> list[str]:
    from provisioning.render_filters import render_clamd

    files = render_clamd(settings)  # its configuration says Foreground yes
    return [_binary("clamd"), "-c", str(files.config)]


def _render_rspamd(settings: Settings) -> list[str]:
    from provisioning.render_filters import render_rspamd

    return render_rspamd(settings).command(_binary("rspamd"))


def _render_freeradius(settings: Settings) -> list[str]:
    from provisioning.render_radius import render_radius

    files = render_radius(settings)
    return [_binary("freeradius"), "-f", "-d", str(files.raddb)]


# Each renders one daemon's files and returns the command line that runs it in the
# foreground from them (`muninet run` starts the same ones; systemd units take it
# from `muninet render --json`).
_RENDERERS: dict[str, Callable[[Settings], list[str]]] = {
    "dovecot": _render_dovecot,
    "clamd": _render_clamd,
    "rspamd": _render_rspamd,
    "freeradius": _render_freeradius,
}


@dataclass(frozen=True)
class Rendered:
    changed: list[Path]
    command: list[str]


def compared_paths(settings: Settings, daemon: str) -> list[Path]:
    """What a daemon reads from the rendering: the files whose change needs a restart."""
    state = settings.state_dir
    return {
        "dovecot": [state / "dovecot", settings.maildir_root / ".sieve-global"],
        "clamd": [state / "clamav" / "clamd.conf"],
        "rspamd": [state / "rspamd" / "conf"],
        "freeradius": [state / "freeradius"],
    }[daemon]


def render_daemon(settings: Settings, daemon: str, *, check: bool = False) -> Rendered:
    """Render one daemon's configuration: the files that changed (or would, with `check`)."""
    roots = compared_paths(settings, daemon)
    before = snapshot(roots)
    try:
        command = _RENDERERS[daemon](settings)
    finally:
        after = snapshot(roots)
        if check:
            restore(before, after)
    return Rendered(differences(before, after), command)


@click.command("render")
@click.argument("daemons", nargs=-1, type=click.Choice(DAEMONS))
@click.option(
    "--check", is_flag=True, help="Only report what would change; leave the files as they are."
)
@json_option
@pass_app
def render_command(app: App, daemons: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Render the daemon configurations into <state_dir> (all, or the DAEMONS named).

    Prints one line per daemon, `<daemon>: changed` or `<daemon>: unchanged`, so
    deployment restarts only what changed.
    """
    settings = app.settings
    results = {
        daemon: render_daemon(settings, daemon, check=check) for daemon in daemons or DAEMONS
    }
    if as_json:
        emit_json(
            {
                daemon: {
                    "changed": bool(result.changed),
                    "files": [str(p) for p in result.changed],
                    "command": result.command,
                }
                for daemon, result in results.items()
            }
        )
        return
    changed_word = "would change" if check else "changed"
    for daemon, result in results.items():
        click.echo(f"{daemon}: {changed_word if result.changed else 'unchanged'}")
        for path in result.changed:
            click.echo(f"  {path}")


COMMANDS = [render_command]
