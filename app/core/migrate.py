"""Schema upgrades through Alembic, safe when several Berth processes start at once."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config

from app.core.db import Database

# An arbitrary constant: the PostgreSQL advisory lock that serialises concurrent upgrades.
_MIGRATION_LOCK_KEY = 7_231_004_117


def alembic_config() -> Config:
    """The migrations as the package carries them: `app._migrations` is the repository's
    migrations/ (setup.py maps it), so an installed Berth needs no source tree. alembic.ini at
    the root serves only the `alembic` command in a checkout."""
    config = Config()
    config.set_main_option("script_location", str(files("app._migrations")))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    config = alembic_config()
    with database.locked_connection(_MIGRATION_LOCK_KEY) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def downgrade(database: Database, revision: str = "base") -> None:
    config = alembic_config()
    with database.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        connection.commit()
