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
    """Turns refusals into one clear line and exit code 1, never a traceback.

    Plugin commands are loaded only when named (or listed by --help), so a
    `muninet member list` never pays for importing the mail engine.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugins = {entry.name for entry in entry_points(group=PLUGIN_GROUP)}
        return sorted({*super().list_commands(ctx), *plugins})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        for entry in entry_points(group=PLUGIN_GROUP):
            if entry.name != cmd_name:
                continue
            try:
                loaded = entry.load()
            except Exception as exc:  # a broken plugin must not take the whole CLI down
                click.echo(f"muninet: cannot load command {entry.name!r}: {exc}", err=True)
                return None
            if not isinstance(loaded, click.Command):
                click.echo(f"muninet: {entry.name!r} is not a click command", err=True)
                return None
            self.add_command(loaded, cmd_name)
            return loaded
        return None

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

    from provisioning.cli import subscribers

    for command in subscribers.COMMANDS:
        cli.add_command(command)

    from provisioning.cli import dkim, domain_check

    for command in dkim.COMMANDS:
        cli.add_command(command)
    domains.domain_group.add_command(domain_check.check_command)

    from provisioning.cli import apply, render

    for command in (*render.COMMANDS, *apply.COMMANDS):
        cli.add_command(command)


_register_builtin()


def main() -> None:
    try:
        cli.main(prog_name="muninet")
    except KeyboardInterrupt:
        click.echo("muninet: interrupted", err=True)
        sys.exit(130)
