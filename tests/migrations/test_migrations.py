"""The schema comes from Alembic only: up, down and up again, and the models agree with it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, make_url

from app.core.db import Database
from app.core.migrate import downgrade, upgrade
from app.models import Base
from tests.testbed import Testbed

SCRATCH_DB = "berth_migrations_test"


@pytest.fixture
def scratch(
    bed: Testbed, database_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """An empty database of the backend under test, separate from the suite's own."""
    if database_backend == "postgresql":
        url = make_url(bed.pg_url)
        admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {SCRATCH_DB}")
        database = Database(url.set(database=SCRATCH_DB).render_as_string(False))
    else:
        database = Database(f"sqlite:///{tmp_path_factory.mktemp('mig') / 'scratch.db'}")
    yield database
    database.dispose()


def tables(database: Database) -> set[str]:
    return set(inspect(database.engine).get_table_names())


def test_upgrade_downgrade_upgrade(scratch: Database) -> None:
    assert tables(scratch) == set()
    upgrade(scratch)
    assert set(Base.metadata.tables) | {"alembic_version"} == tables(scratch)
    downgrade(scratch)
    assert tables(scratch) <= {"alembic_version"}
    upgrade(scratch)
    assert set(Base.metadata.tables) <= tables(scratch)


def test_models_and_migrations_agree(scratch: Database) -> None:
    upgrade(scratch)
    with scratch.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent(scratch: Database) -> None:
    upgrade(scratch)
    upgrade(scratch)
    assert "operations" in tables(scratch)
