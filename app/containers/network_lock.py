"""One creator at a time of a network on a host, across worker threads and processes.

The engine checks a new network's name, then creates it; two creators at once both pass the
check, and the host ends up with two networks of one name, on which no container starts
("ambiguous"). Replicas of one service or stack are created at the same moment, so they do.
A stack's project volume is filled under the same lock, by its name (app.containers.project_files).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.core.db import Database

# Threads of this process wait here, before taking a database connection; a fixed number of
# locks (shared by unrelated names now and then) instead of one per name ever seen.
_STRIPES = tuple(threading.Lock() for _ in range(64))


def _key(host_id: str, name: str) -> int:
    digest = hashlib.blake2b(f"network {host_id} {name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def creating(db: Database, *, host_id: str, name: str) -> Iterator[None]:
    """Held while network `name` is looked for and made on `host_id`: by this process's threads
    and, on PostgreSQL, by every process (an advisory lock). Processes sharing one SQLite file
    are not serialised; the engine client repairs the duplicate they may leave."""
    key = _key(host_id, name)
    with _STRIPES[key % len(_STRIPES)], db.locked_connection(key):
        yield
