"""Fixtures: a migrated database per backend, an app with its workers, tokens of every role.

`BERTH_TEST_DATABASE` picks the backend for the whole run: `sqlite` (default) or
`postgresql` (the testbed's). scripts/test.sh runs the suite once on each; its later runs set
`BERTH_TEST_DATABASE_ONLY=1`, which keeps only the tests that use the database (their fixture
closure holds `database_backend`): the others would only repeat what the first run did.
Helpers the tests import are in tests/support.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from app.core.config import Settings
from app.core.db import Database
from app.core.migrate import upgrade
from app.main import create_app
from app.models import Base
from app.projects.models import Project
from app.security.roles import DEFAULT_PROJECT_ID
from tests.support import BOOTSTRAP_TOKEN, IMPATIENT_DEADLINE_S, Api, Services
from tests.testbed import Testbed, testbed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules: dict[str, set[str]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], set()).update(
            getattr(item, "fixturenames", ())
        )
    for module, fixtures in modules.items():
        if {"module_db", "db_url"} <= fixtures:
            raise pytest.UsageError(f"{module}: a test empties the tables the module's app uses")
    # Deselected, not skipped: each runs in the other backend's pass of the same suite.
    other = "sqlite_only" if os.environ.get("BERTH_TEST_DATABASE") == "postgresql" else None
    other = other or "postgres_only"
    this_run = [i for i in items if i.get_closest_marker(other) is None]
    if len(this_run) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in set(this_run)])
        items[:] = this_run
    if os.environ.get("BERTH_TEST_DATABASE_ONLY") != "1":
        return
    # Deselected, not skipped: a skip in CI reads as a defect, and these are not missing.
    uses_database = [i for i in items if "database_backend" in getattr(i, "fixturenames", ())]
    if len(uses_database) < len(items):
        kept = set(uses_database)
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = uses_database


@pytest.fixture(scope="session")
def bed() -> Testbed:
    return testbed()


@pytest.fixture(scope="session")
def database_backend() -> str:
    """The backend under test; every test whose result depends on it asks for this fixture."""
    return os.environ.get("BERTH_TEST_DATABASE", "sqlite")


@pytest.fixture(scope="session")
def database_url(
    bed: Testbed, database_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One migrated database for the session; each test starts from empty tables."""
    if database_backend == "postgresql":
        url = bed.pg_url
        database = Database(url)
        with database.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'berth.db'}"
        database = Database(url)
    upgrade(database)
    database.dispose()
    yield url


def clear_tables(url: str) -> None:
    database = Database(url)
    try:
        with database.session() as session:
            for table in reversed(Base.metadata.sorted_tables):
                statement = table.delete()
                if table.name == "projects":
                    # The default project is part of the schema (migration 0013), not data.
                    statement = statement.where(table.c.id != DEFAULT_PROJECT_ID)
                session.execute(statement)
            # ... but what a test set on it is data: a project left protected (or with quotas)
            # would hold every later test's writes.
            session.execute(
                update(Project)
                .where(Project.id == DEFAULT_PROJECT_ID)
                .values(
                    protected=False,
                    quotas={},
                    relaxations=[],
                    windows=[],
                    outside_window="wait",
                    version=1,
                )
            )
    finally:
        database.dispose()


@pytest.fixture
def db_url(database_url: str) -> str:
    clear_tables(database_url)
    return database_url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def make_settings(db_url: str, key_file: Path, /, **overrides: Any) -> Settings:
    """Settings for a test: the debug operations on and every interval short."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "key_file": key_file,
        "bootstrap_token": BOOTSTRAP_TOKEN,
        "enable_debug_operations": True,
        "register_local_host": False,
        "host_probe_interval_seconds": 0.5,
        # A busy engine can be slow to answer; a dead one refuses at once anyway.
        "host_probe_timeout_seconds": 5,
        "host_unreachable_after": 2,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "lease_seconds": 5,
        "image_sync_interval_seconds": 1,
        "reconcile_interval_seconds": 0.5,
        "host_down_grace_seconds": 3,
        "log_level": "WARNING",
        # Tests that walk every route with a wrong token must not be braked by the guessing
        # limit; the test of the limit sets it back (tests/security/test_auth_limits.py).
        "auth_failure_limit": 10_000,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_factory(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return make_settings(db_url, tmp_path / "berth.key", **overrides)

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def api(settings: Settings, db: Database) -> Iterator[Api]:
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client, db)


@pytest.fixture
def impatient_api(settings_factory: Callable[..., Settings], db: Database) -> Iterator[Api]:
    """`api` whose service.converge and stack.deploy give up after `IMPATIENT_DEADLINE_S`
    without a further replica becoming ready."""
    settings = settings_factory(converge_deadline_seconds=IMPATIENT_DEADLINE_S)
    with TestClient(create_app(settings)) as client:
        yield Api(client, db)


@pytest.fixture
def services(api: Api, bed: Testbed) -> Iterator[Services]:
    """Services over both hosts through `api`; their containers removed afterwards."""
    helper = Services(api, bed)
    yield helper
    helper.cleanup()


@pytest.fixture(scope="module")
def module_db(database_url: str) -> Iterator[Database]:
    """Tables emptied once for the whole module, for a module whose tests only read what one
    expensive setup (a module-scoped scenario) made. Such a module has no test that uses `db`:
    emptying the tables would pull them from under the module's app (checked at collection)."""
    clear_tables(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def module_settings(module_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """`settings`, shared by the tests of one module (see `module_db`)."""
    return make_settings(module_db.url, tmp_path_factory.mktemp("module") / "berth.key")


@pytest.fixture(scope="module")
def module_api(module_settings: Settings, module_db: Database) -> Iterator[Api]:
    """`api`, shared by the tests of one module (see `module_db`)."""
    with TestClient(create_app(module_settings)) as client:
        yield Api(client, module_db)
