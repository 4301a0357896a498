"""Engine, sessions and schema migrations for SQLite (embedded) and PostgreSQL (production).

Writers and readers get different transactions on SQLite: a write unit of work
starts with BEGIN IMMEDIATE, so two writers never both pass a uniqueness or
package-limit check and then collide; readers start a plain deferred BEGIN and,
in WAL mode, never wait for writers. On PostgreSQL the services lock the rows
they check (SELECT ... FOR UPDATE), which SQLite ignores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from provisioning.errors import NotMigrated
from provisioning.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WRITE = "muninet_write"


def _sqlite_setup(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that BEGIN is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """muninet's database: one engine, write and read sessions, and the migration state."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000, echo: bool = False) -> None:
        self.url = make_url(url)
        if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(self.url, echo=echo, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            _sqlite_setup(self.engine, busy_timeout_ms)
        self._writer = sessionmaker(
            bind=self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.database_url,
            busy_timeout_ms=settings.database.sqlite_busy_timeout_ms,
            echo=settings.database.echo,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and status output."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write unit of work: commits on success, rolls back everything on any error."""
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session (rolled back at the end)."""
        with self._reader() as session:
            yield session

    # -- migrations --------------------------------------------------------------------------

    @staticmethod
    def _alembic_config(connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Create or upgrade the schema; returns (revision before, revision after)."""
        before = self.current_revision()
        with self.engine.begin() as connection:
            command.upgrade(self._alembic_config(connection), revision)
        return before, self.current_revision()

    def require_current(self) -> None:
        """Refuse to work on a database whose schema is missing or behind this code."""
        try:
            current = self.current_revision()
        except OperationalError as exc:
            raise NotMigrated(f"cannot open the database {self.safe_url}: {exc.orig}") from exc
        head = self.head_revision()
        if current is None:
            raise NotMigrated(
                f"the database {self.safe_url} has no muninet schema; "
                "run `muninet db upgrade` to create it"
            )
        if current != head:
            raise NotMigrated(
                f"the database {self.safe_url} is at schema {current}, this muninet needs {head}; "
                "run `muninet db upgrade`"
            )

    def dispose(self) -> None:
        self.engine.dispose()
