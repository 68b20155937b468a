"""The host health loop: ping + info for every host, concurrently, with short timeouts."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import select

from app.core.context import AppContext
from app.core.db import utcnow
from app.engine.docker_engine import EngineFacts
from app.engine.errors import EngineError
from app.engine.pool import EnginePool
from app.hosts.models import Host
from app.hosts.service import tls_material
from app.security.crypto import KeyUnavailable
from app.workers.loops import LeasedLoop

log = logging.getLogger("berth.hosts")

PROBE_LEASE = "hosts.probe"


@dataclass(frozen=True)
class ProbeResult:
    host_id: str
    facts: EngineFacts | None
    error: str | None


class HostProber(LeasedLoop):
    """Keeps every host's status and figures current. One process probes at a time (a lease)."""

    name = "host-prober"
    lease = PROBE_LEASE

    def __init__(self, app: AppContext) -> None:
        super().__init__(app.db, app.settings.host_probe_interval_seconds)
        self.app = app
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="berth-probe")
        # One client per host, kept between rounds: a new one costs a connection and an API
        # version request every round. A client that failed is dropped (below), so a dead
        # engine's connection is not reused.
        self._clients = EnginePool(
            app.engine_factory, timeout=app.settings.host_probe_timeout_seconds
        )

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._clients.close()

    def run_leased(self) -> None:
        with self.app.db.session(write=False) as session:
            targets = session.execute(
                select(Host.id, Host.url, Host.tls_encrypted, Host.insecure)
            ).all()
        results = list(
            self._pool.map(
                lambda row: self._probe(row.id, row.url, row.tls_encrypted, row.insecure), targets
            )
        )
        self._clients.keep({row.id for row in targets})
        if results:
            self._record(results)

    def _probe(
        self, host_id: str, url: str, tls_encrypted: str | None, insecure: bool
    ) -> ProbeResult:
        try:
            tls = tls_material(self.app.cipher, tls_encrypted)
            engine = self._clients.get(host_id, url, tls, insecure=insecure)
            engine.ping()
            facts = engine.facts()
        except (EngineError, KeyUnavailable) as exc:
            self._clients.forget(host_id)
            return ProbeResult(host_id, None, str(exc))
        except Exception as exc:
            self._clients.forget(host_id)
            log.exception("probe crashed", extra={"host_id": host_id})
            return ProbeResult(host_id, None, f"probe failed: {type(exc).__name__}")
        return ProbeResult(host_id, facts, None)

    def _record(self, results: list[ProbeResult]) -> None:
        threshold = self.app.settings.host_unreachable_after
        now = utcnow()
        with self.app.db.session() as session:
            if not self.holds_lease(session):
                return  # another process probes now; its results are the current ones
            # Locked (in id order), so a host deleted meanwhile is skipped here rather than
            # failing the whole round's update on PostgreSQL.
            hosts = {
                h.id: h
                for h in session.execute(
                    select(Host)
                    .where(Host.id.in_([r.host_id for r in results]))
                    .order_by(Host.id)
                    .with_for_update()
                ).scalars()
            }
            for result in results:
                host = hosts.get(result.host_id)
                if host is None:  # deleted while we probed
                    continue
                before = host.status
                if result.facts is not None:
                    facts = result.facts
                    host.status = "ready"
                    host.error = None
                    host.consecutive_failures = 0
                    host.last_seen_at = now
                    host.engine_version = facts.engine_version
                    host.api_version = facts.api_version
                    host.os = facts.os
                    host.arch = facts.arch
                    host.cpus = facts.cpus
                    host.memory_bytes = facts.memory_bytes
                    host.containers_running = facts.containers_running
                else:
                    host.consecutive_failures += 1
                    host.error = result.error
                    if host.consecutive_failures >= threshold:
                        host.status = "unreachable"
                if host.status != before:
                    host.updated_at = now
                    log.info(
                        "host status changed",
                        extra={"host_id": host.id, "from": before, "to": host.status},
                    )
