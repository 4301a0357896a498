"""Schema migrations create the schema from empty and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from provisioning.db import Database
from provisioning.models import Base


def test_upgrade_from_empty_creates_every_table(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    assert database.current_revision() is None
    before, after = database.upgrade()
    assert before is None
    assert after == database.head_revision()
    tables = set(inspect(database.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    database.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    database = Database(database_url)
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    database.dispose()
    assert diff == []


def test_upgrade_twice_changes_nothing(database_url: str) -> None:
    database = Database(database_url)
    head = database.head_revision()
    assert database.upgrade() == (head, head)
    database.dispose()
