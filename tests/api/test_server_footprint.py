"""What a server process loads that it does not use is RSS in every process (issue 15's goal:
<= 200 MB per process with 10,000 containers on 100 engines)."""

from __future__ import annotations

import subprocess
import sys


def test_a_server_on_sqlite_does_not_load_the_postgresql_driver() -> None:
    """psycopg and its bundled libpq are about 9 MB of RSS; only the PostgreSQL wake-up
    listener uses the driver directly, and SQLAlchemy loads it for a PostgreSQL URL."""
    code = (
        "import sys\n"
        "import app.cli, app.main\n"
        "from app.core.db import Database\n"
        "Database('sqlite://').dispose()\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'psycopg'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
