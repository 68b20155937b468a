"""The image inventory loop: re-reads every ready host's images on a slow interval. Changes
between rounds reach the inventory sooner: the container followers see the engine's image
events and re-read that one host (`refresh`), and re-read every host when they first follow it.
A round skips the hosts read in full within the interval (by a follower, an image operation or
the last round), so a fleet's start reads each host once, not once per follower and again here.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy import select

from app.core.context import AppContext
from app.core.db import utcnow
from app.engine.errors import EngineError
from app.hosts.models import Host
from app.images import inventory
from app.images.inventory import sync_host
from app.workers.loops import LeasedLoop

log = logging.getLogger("berth.images")

INVENTORY_LEASE = "images.inventory"


class ImageInventory(LeasedLoop):
    """Keeps `GET /images` true to the engines, also for changes made behind Berth's back.
    One process runs it at a time (a lease)."""

    name = "image-inventory"
    lease = INVENTORY_LEASE

    def __init__(self, app: AppContext) -> None:
        super().__init__(app.db, app.settings.image_sync_interval_seconds)
        self.app = app
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="berth-inventory")

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_leased(self) -> None:
        read = inventory.last_read(self.app.db)
        with self.app.db.session(write=False) as session:
            ready = session.execute(
                select(Host.id, Host.created_at).where(Host.status == "ready")
            ).all()
        due = due_hosts(
            {row.id: row.created_at for row in ready},
            read,
            stale=utcnow() - timedelta(seconds=self.every),
        )
        list(self._pool.map(lambda host_id: refresh(self.app, host_id), due))


def due_hosts(
    ready: dict[str, datetime], last_read: dict[str, datetime], *, stale: datetime
) -> list[str]:
    """The ready hosts (id: when registered) whose inventory a round re-reads: those last read
    in full (`last_read`: hosts holding images) at or before `stale`, or, holding no image,
    registered by then: a host that became ready since was read by its follower's first
    opening."""
    return [
        host_id for host_id, created in ready.items() if last_read.get(host_id, created) <= stale
    ]


def refresh(app: AppContext, host_id: str) -> None:
    """Re-read one host's images (blocking: from a worker thread); a failure is logged, and the
    next event or round tries again."""
    try:
        sync_host(app.db, app.engine_for_host(host_id), host_id)
    except EngineError as exc:
        # The prober reports the host's health; here a failed round just waits for the next.
        log.info("image inventory skipped a host", extra={"host_id": host_id, "error": str(exc)})
    except Exception:
        log.exception("image inventory failed", extra={"host_id": host_id})
