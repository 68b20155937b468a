"""What a waiting (deferred) operation costs the database, per round of its wait.

Runs one in-process executor (4 slots) on a fresh database with N operations whose handler
reports the same progress and defers 0.5 s, as `service.converge` does while a change rolls
out, then counts on the engine, over a window, the statements that write and the rows they
change, and the handler rounds. An idle executor over the same window is subtracted.

    .venv/bin/python -m bench.deferred_writes [--url URL] [--waiting 1,20] [--seconds 10]

The URL defaults to a fresh SQLite file; give a PostgreSQL URL of a database of your own
(every table is emptied).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database
from app.core.migrate import upgrade
from app.models import Base
from app.operations import queue
from app.operations.context import Deferred, OperationContext
from app.operations.registry import handler
from app.workers.executor import OperationExecutor
from bench.common import say

_KIND = "bench.wait"
_DEFER_SECONDS = 0.5
_WARM_UP_SECONDS = 2.0
_done_waiting = threading.Event()


@dataclass
class Counts:
    statements: int = 0
    rows: int = 0
    rounds: int = 0
    by_statement: dict[str, int] = field(default_factory=dict)


_counts = Counts()

# What each writing statement of the queue is, told by a piece of its SQL.
_LABELS = (
    ("lease_expires_at <", "claim: resumable (deferred and due, or lease expired)"),
    ("run_after <=", "claim: queued"),
    ("SET progress", "progress"),
    ("deferred_until=", "defer"),
)


@handler(_KIND)
def _wait(ctx: OperationContext) -> dict[str, Any]:
    _counts.rounds += 1
    ctx.progress({"waiting": True})
    if _done_waiting.is_set():
        return {}
    raise Deferred(_DEFER_SECONDS)


def _count(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
    words = statement.split()
    if words[0].upper() not in ("INSERT", "UPDATE", "DELETE"):
        return
    _counts.statements += 1
    if cursor.rowcount > 0:  # PostgreSQL counts RETURNING rows; SQLite may say -1 here
        _counts.rows += cursor.rowcount
    flat = " ".join(words)
    label = next((name for marker, name in _LABELS if marker in flat), " ".join(words[:3]))
    _counts.by_statement[label] = _counts.by_statement.get(label, 0) + 1


def measure(url: str, waiting: int, seconds: float) -> Counts:
    db = Database(url)
    with db.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())
        for _ in range(waiting):
            queue.enqueue(session, kind=_KIND)
    settings = Settings(
        database_url=url,
        key_file=Path(tempfile.mkdtemp()) / "berth.key",
        register_local_host=False,
        log_level="WARNING",
    )
    executor = OperationExecutor(AppContext(settings, db), slots=4)
    executor.start()
    time.sleep(_WARM_UP_SECONDS)  # every operation reaches the rhythm of its wait
    global _counts
    _counts = Counts()
    event.listen(db.engine, "after_cursor_execute", _count)
    time.sleep(seconds)
    event.remove(db.engine, "after_cursor_execute", _count)
    counted = _counts
    _done_waiting.set()
    executor.stop(10)
    _done_waiting.clear()
    db.dispose()
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--waiting", default="1,20", help="waiting operations, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'berth.db'}"
    database = Database(url)
    upgrade(database)
    database.dispose()
    idle = measure(url, 0, args.seconds)
    say(f"idle executor: {idle.statements} writing statements in {args.seconds:.0f} s")
    for waiting in (int(part) for part in args.waiting.split(",")):
        busy = measure(url, waiting, args.seconds)
        rounds = max(1, busy.rounds)
        say(
            f"{waiting} waiting: {busy.rounds / waiting / args.seconds:.2f} rounds/s each "
            f"(deferral {_DEFER_SECONDS} s); per round "
            f"{(busy.statements - idle.statements) / rounds:.2f} writing statements, "
            f"{busy.rows / rounds:.2f} rows changed"
        )
        for label, count in sorted(busy.by_statement.items()):
            extra = count - idle.by_statement.get(label, 0)
            say(f"    {extra / rounds:5.2f}  {label} (beyond the idle executor's)")


if __name__ == "__main__":
    main()
