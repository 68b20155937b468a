"""The SQLite database and its WAL files are private to Berth's user, like the key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from app.core.db import Database
from app.core.migrate import upgrade


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "berth.db"
    # A permissive umask, as many services run with: the mode must not depend on it.
    previous = os.umask(0o022)
    database = Database(f"sqlite:///{path}")
    try:
        upgrade(database)
        # An open connection that has written keeps the -wal and -shm files in place.
        with database.engine.connect() as connection:
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
            connection.commit()
            files = [path, path.with_name("berth.db-wal"), path.with_name("berth.db-shm")]
            assert all(f.exists() for f in files), sorted(p.name for p in tmp_path.iterdir())
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        database.dispose()
        os.umask(previous)


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "berth.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    database = Database(f"sqlite:///{path}")
    try:
        with database.session() as session:
            session.execute(text("SELECT 1"))
    finally:
        database.dispose()
    assert _mode(path) == 0o640
