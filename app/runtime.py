"""What a Berth process runs besides the API: start-up chores and the background services.

`berth serve` and `berth worker` both use this, so a separate worker process behaves exactly
like the workers inside the API process.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from app.api.models import IdempotencyRecord
from app.audit import keys as audit_keys
from app.audit import retention as audit_retention
from app.changes.gate import ChangeHold
from app.changes.loops import ChangeWindows
from app.changes.models import ChangeRequest
from app.containers.watcher import ContainerWatcher
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.core.memory import release_free_memory
from app.engine.errors import EngineError
from app.events.models import Event
from app.hosts import service as hosts
from app.hosts.loops import HostProber
from app.hosts.models import Host
from app.images.loops import ImageInventory
from app.images.models import Blob
from app.registries.models import Registry
from app.secrets.models import Secret
from app.services.image_updates import ImageCheckLoop
from app.services.reconciler import ServiceReconciler
from app.tokens import service as tokens
from app.workers.executor import OperationExecutor
from app.workers.loops import LoopService, Service
from app.workers.models import Lease, WorkerProcess
from app.workers.wakeups import Relay

log = logging.getLogger("berth.runtime")

LOCAL_HOST_NAME = "local"
_HEARTBEAT_SECONDS = 5.0
WORKER_STALE_AFTER = timedelta(seconds=3 * _HEARTBEAT_SECONDS)
_BLOB_TTL = timedelta(days=7)
# Every column that holds ciphertext: while one holds a value, a missing key is an error, never
# a reason to make a new one (tests/security/test_encrypted_columns.py: none is left out).
ENCRYPTED_COLUMNS = (
    Host.tls_encrypted,
    Registry.password_encrypted,
    Secret.value_encrypted,
    ChangeRequest.value_encrypted,
)
# A lease expired this long ago has no holder left (every holder renews within seconds): the
# prober of a process that was killed, the reconciler lease of a service since deleted.
_LEASE_FORGOTTEN_AFTER = timedelta(hours=1)


def load_handlers() -> None:
    """Import every module that registers operation kinds."""
    import app.containers.handlers
    import app.debug.handlers
    import app.images.handlers
    import app.services.handlers
    import app.services.host_drain
    import app.stacks.handlers  # noqa: F401


def prepare(context: AppContext) -> None:
    """Start-up chores, safe to repeat and to run in several processes at once."""
    load_handlers()
    context.register_engine_resolver(functools.partial(hosts.engine_for_host, context))
    context.load_cipher(encrypted=ENCRYPTED_COLUMNS)
    audit_keys.load(context.db, context.settings.effective_audit_key_file)
    settings = context.settings
    if settings.bootstrap_token is not None:
        secret = settings.bootstrap_token.get_secret_value()
        try:
            with context.db.session() as session:
                tokens.ensure_bootstrap(session, secret=secret)
        except IntegrityError:
            pass  # another process inserted it at the same moment
    if settings.register_local_host:
        register_local_host(context)


def register_local_host(context: AppContext) -> None:
    """On an empty database, register DOCKER_HOST (or the default socket) as `local`."""
    with context.db.session(write=False) as session:
        if session.execute(select(func.count()).select_from(Host)).scalar_one():
            return
    url = context.settings.docker_host
    try:
        engine = context.engine_factory.client(url, timeout=5)
        try:
            engine.ping()
        finally:
            engine.close()
    except EngineError as exc:
        log.warning(
            "no local engine answered; not registering one", extra={"url": url, "error": str(exc)}
        )
        return
    now = utcnow()
    try:
        with context.db.session() as session:
            if session.execute(select(func.count()).select_from(Host)).scalar_one():
                return
            session.add(
                Host(name=LOCAL_HOST_NAME, url=url, labels={}, created_at=now, updated_at=now)
            )
    except IntegrityError:
        return
    log.info("registered the local engine", extra={"url": url})


class WorkerHeartbeat(LoopService):
    """Records that this process runs operations, for /readyz and for operators."""

    name = "worker-heartbeat"

    def __init__(self, context: AppContext, *, kind: str, slots: int) -> None:
        super().__init__(_HEARTBEAT_SECONDS)
        self.context = context
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.kind = kind
        self.slots = slots

    def run_once(self) -> None:
        now = utcnow()
        with self.context.db.session() as session:
            row = session.get(WorkerProcess, self.worker_id)
            if row is None:
                session.add(
                    WorkerProcess(
                        id=self.worker_id,
                        kind=self.kind,
                        hostname=socket.gethostname(),
                        pid=os.getpid(),
                        slots=self.slots,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            else:
                row.heartbeat_at = now

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        with self.context.db.session() as session:
            session.execute(delete(WorkerProcess).where(WorkerProcess.id == self.worker_id))


class Housekeeping(LoopService):
    """Forgets expired idempotency records and events, worker processes that stopped
    heartbeating, and leases whose holder is gone; and hands the memory the C allocator kept
    after the last minute's bursts back to the system (app/core/memory.py)."""

    name = "housekeeping"

    def __init__(self, context: AppContext) -> None:
        super().__init__(60.0)
        self.context = context

    def run_once(self) -> None:
        now = utcnow()
        ttl = timedelta(hours=self.context.settings.idempotency_ttl_hours)
        with self.context.db.session() as session:
            session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - ttl)
            )
            session.execute(
                delete(WorkerProcess).where(
                    WorkerProcess.heartbeat_at < now - 10 * WORKER_STALE_AFTER
                )
            )
            # Uploads whose build never reached an outcome (its operation was lost or purged);
            # a stack's project files stay until the stack is removed.
            session.execute(
                delete(Blob).where(Blob.created_at < now - _BLOB_TTL, Blob.stack_id.is_(None))
            )
            retention = timedelta(hours=self.context.settings.event_retention_hours)
            session.execute(delete(Event).where(Event.at < now - retention))
            session.execute(delete(Lease).where(Lease.expires_at < now - _LEASE_FORGOTTEN_AFTER))
        if self.context.settings.audit_retention_days:
            keep = timedelta(days=self.context.settings.audit_retention_days)
            audit_retention.prune(self.context.db, older_than=now - keep)
        release_free_memory()


def background_services(context: AppContext, *, kind: str) -> list[Service]:
    executor = OperationExecutor(context)
    # BERTH_IMAGE_CHECK_INTERVAL_SECONDS=0 turns new-image detection off.
    image_check = (
        [ImageCheckLoop(context, hold=ChangeHold(context))]
        if context.settings.image_check_interval_seconds
        else []
    )
    return [
        Relay(context.db),
        WorkerHeartbeat(context, kind=kind, slots=executor.slots),
        Housekeeping(context),
        HostProber(context),
        ImageInventory(context),
        *image_check,
        ContainerWatcher(context),
        ServiceReconciler(context),
        ChangeWindows(context),
        executor,
    ]


def workers_alive(context: AppContext) -> int:
    with context.db.session(write=False) as session:
        count = session.execute(
            select(func.count())
            .select_from(WorkerProcess)
            .where(WorkerProcess.heartbeat_at >= utcnow() - WORKER_STALE_AFTER)
        ).scalar_one()
    return int(count)
