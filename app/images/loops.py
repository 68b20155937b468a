"""The image inventory loop: re-reads every ready host's images on an interval."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from app.core.context import AppContext
from app.engine.errors import EngineError
from app.hosts.models import Host
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
        with self.app.db.session(write=False) as session:
            ready = list(session.execute(select(Host.id).where(Host.status == "ready")).scalars())
        list(self._pool.map(self._sync, ready))

    def _sync(self, host_id: str) -> None:
        try:
            sync_host(self.app.db, self.app.engine_for_host(host_id), host_id)
        except EngineError as exc:
            # The prober reports the host's health; here a failed round just waits for the next.
            log.info(
                "image inventory skipped a host", extra={"host_id": host_id, "error": str(exc)}
            )
        except Exception:
            log.exception("image inventory failed", extra={"host_id": host_id})
