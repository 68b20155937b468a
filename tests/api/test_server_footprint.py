"""What a server process loads that it does not use is RSS in every process (issue 15's goal:
<= 200 MB per process with 10,000 containers on 100 engines)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.core.memory import release_free_memory


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


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_freed_after_a_burst_goes_back_to_the_system() -> None:
    """A burst in a thread (its own malloc arena) frees most of what it made, leaving a few
    blocks scattered through it: glibc keeps the freed pages between them until they are
    trimmed, which housekeeping does every minute (app/core/memory.py)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("RSS is read from /proc")
    kept: list[bytes] = []

    def burst() -> None:
        blocks = [bytes(4000) for _ in range(20_000)]  # 80 MB, past pymalloc's small objects
        kept.extend(blocks[::64])

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
    before = _rss_mb()
    assert release_free_memory()
    assert before - _rss_mb() > 40, (before, _rss_mb())
    assert len(kept) == 313


def test_a_server_process_freezes_what_startup_built(tmp_path: Path) -> None:
    """`berth serve`'s app (the process's own) moves what startup built out of the collector's
    full passes, which walked all of it under load (they were the slowest requests: p99 72 ->
    18 ms with 2 API processes). A test's apps share the test process and freeze nothing."""
    code = (
        "import gc, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from app.core.config import Settings\n"
        "from app.core.db import Database\n"
        "from app.core.migrate import upgrade\n"
        "from app.main import create_app\n"
        "database = Database(sys.argv[1])\n"
        "upgrade(database)\n"
        "database.dispose()\n"
        "settings = Settings(database_url=sys.argv[1], key_file=sys.argv[2],\n"
        "                    register_local_host=False, log_level='WARNING')\n"
        "for own in (False, True):\n"
        "    with TestClient(create_app(settings, run_workers=False, own_process=own)) as c:\n"
        "        assert c.get('/healthz').status_code == 200\n"
        "        print(own, gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            f"sqlite:///{tmp_path / 'berth.db'}",
            str(tmp_path / "berth.key"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True", "True"]
