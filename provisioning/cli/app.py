"""The CLI's shared state and output helpers: settings, database, JSON and tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.orm import Session

from provisioning.audit import Actor
from provisioning.db import Database
from provisioning.errors import ValidationError
from provisioning.services.context import ServiceContext
from provisioning.settings import Settings, load_settings


class App:
    """Loaded on first use, so `muninet --help` needs no settings and no database."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
            # Libraries (alembic, sqlalchemy) log at WARNING; muninet's own packages at
            # the configured level, so INFO chatter never mixes into command output.
            logging.basicConfig(
                level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
            for package in ("provisioning", "mailhost", "admin_ui"):
                logging.getLogger(package).setLevel(self._settings.logging.level)
        return self._settings

    def database(self, *, migrated: bool = True) -> Database:
        if self._db is None:
            self._db = Database.from_settings(self.settings)
        if migrated:
            self._db.require_current()
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[ServiceContext]:
        with self.database().transaction() as session:
            yield ServiceContext(session=session, actor=Actor.cli(), settings=self.settings)

    @contextmanager
    def reader(self) -> Iterator[Session]:
        with self.database().reader() as session:
            yield session

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


pass_app = click.make_pass_decorator(App)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table; an empty list says so instead of printing bare headers."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def read_password(password_stdin: bool, generate: bool) -> tuple[str, bool]:
    """(password, generated?) from --password-stdin or --generate, exactly one of them."""
    from provisioning.passwords import generate_password

    if password_stdin == generate:
        raise click.UsageError("give exactly one of --password-stdin or --generate")
    if generate:
        return generate_password(), True
    line = sys.stdin.readline()
    if not line:
        raise ValidationError("no password on standard input")
    return line.rstrip("\r\n"), False


def parse_size_option(value: str | None) -> int | None:
    from provisioning.sizes import parse_size

    return None if value is None else parse_size(value)
