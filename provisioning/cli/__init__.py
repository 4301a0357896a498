"""The `muninet` command: the root click group and the plugin hook.

Other packages add commands (`run`, `smtpd`, `queue`, ...) through the entry point
group `muninet.commands`, as Flask's CLI does, so that `provisioning` never
imports them.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from provisioning.cli.app import App
from provisioning.errors import MuninetError

PLUGIN_GROUP = "muninet.commands"


class MuninetGroup(click.Group):
    """Turns refusals into one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MuninetError as exc:
            click.echo(f"muninet: {exc}", err=True)
            ctx.exit(1)
        except OperationalError as exc:
            click.echo(f"muninet: database unavailable: {exc.orig}", err=True)
            ctx.exit(1)
        except SQLAlchemyError as exc:
            click.echo(f"muninet: database error: {exc.__class__.__name__}: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=MuninetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="muninet")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """muninet: mail and subscriber management for an association of municipalities.

    Settings come from config/muninet.toml, the file named by MUNINET_CONFIG, and
    MUNINET_<SECTION>__<KEY> environment variables.
    """
    app = App()
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register_builtin() -> None:
    from provisioning.cli import admins, aliases, db, demo, domains, mailboxes, members, transfer

    for module in (db, members, domains, mailboxes, aliases, admins, transfer, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


def _register_plugins() -> None:
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            command = entry.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            click.echo(f"muninet: cannot load command {entry.name!r}: {exc}", err=True)
            continue
        cli.add_command(command, entry.name)


_register_builtin()
_register_plugins()


def main() -> None:
    try:
        cli.main(prog_name="muninet")
    except KeyboardInterrupt:
        click.echo("muninet: interrupted", err=True)
        sys.exit(130)
