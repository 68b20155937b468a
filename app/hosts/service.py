"""Hosts: keyword-only functions over a session the caller owns; they never commit."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.pagination import paginate
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.errors import BadRequest, Conflict, Invalid, NotFound
from app.core.lookup import get_or_404
from app.engine.protocol import Engine
from app.engine.tls import TlsMaterial
from app.hosts.models import Host
from app.hosts.schemas import (
    LABEL_KEY,
    HostAccepted,
    HostCreate,
    HostRead,
    HostTls,
    HostUpdate,
    transport_problem,
)
from app.operations import queue
from app.operations.models import QUEUED, RUNNING, Operation
from app.operations.service import to_read as operation_to_read
from app.security.crypto import Cipher


def to_read(host: Host) -> HostRead:
    return HostRead(
        id=host.id,
        name=host.name,
        url=host.url,
        labels=host.labels,
        status=host.status,
        schedulable=host.schedulable,
        draining=host.draining,
        tls_configured=host.tls_encrypted is not None,
        insecure=host.insecure,
        engine_version=host.engine_version,
        api_version=host.api_version,
        os=host.os,
        arch=host.arch,
        cpus=host.cpus,
        memory_bytes=host.memory_bytes,
        containers_running=host.containers_running,
        last_seen_at=host.last_seen_at,
        error=host.error,
        created_at=host.created_at,
        updated_at=host.updated_at,
        version=host.version,
    )


def _encrypt_tls(cipher: Cipher, tls: HostTls) -> str:
    return cipher.encrypt(tls.model_dump_json())


def _ensure_name_free(session: Session, name: str, *, except_id: str | None = None) -> None:
    clash = session.execute(select(Host.id).where(Host.name == name)).scalar_one_or_none()
    if clash is not None and clash != except_id:
        raise Conflict(f"a host named {name!r} already exists ({clash})")


def create(session: Session, *, data: HostCreate, cipher: Cipher) -> Host:
    _ensure_name_free(session, data.name)
    now = utcnow()
    host = Host(
        name=data.name,
        url=data.url,
        labels=data.labels,
        schedulable=data.schedulable,
        tls_encrypted=_encrypt_tls(cipher, data.tls) if data.tls else None,
        insecure=data.insecure,
        status="pending",
        created_at=now,
        updated_at=now,
    )
    session.add(host)
    session.flush()
    return host


def get(session: Session, *, host_id: str, for_update: bool = False) -> Host:
    return get_or_404(session, Host, host_id, what="host", for_update=for_update)


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    label: str | None = None,
    name: str | None = None,
) -> tuple[Sequence[Host], str | None]:
    statement = select(Host)
    if status is not None:
        statement = statement.where(Host.status == status)
    if name is not None:
        statement = statement.where(Host.name == name)
    if label is not None:
        key, has_value, value = label.partition("=")
        if not LABEL_KEY.match(key):
            raise BadRequest(f"label filter {label!r}: expected `key` or `key=value`")
        # json_extract on SQLite, ->> on PostgreSQL; the key is a bound parameter.
        label_value = Host.labels[key].as_string()
        statement = statement.where(label_value == value if has_value else label_value.is_not(None))
    return paginate(session, statement, Host.id, limit=limit, cursor=cursor)


def update(session: Session, *, host: Host, data: HostUpdate, cipher: Cipher) -> Host:
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is not None:
        _ensure_name_free(session, changes["name"], except_id=host.id)
        host.name = changes["name"]
    if changes.get("url") is not None:
        host.url = changes["url"]
        host.status = "pending"
    if changes.get("labels") is not None:
        host.labels = changes["labels"]
    if changes.get("schedulable") is not None:
        host.schedulable = changes["schedulable"]
        if host.schedulable:
            host.draining = False
    if data.tls is not None:
        host.tls_encrypted = _encrypt_tls(cipher, data.tls)
    if data.insecure is not None:
        host.insecure = data.insecure
    _check_transport(host, data)
    host.updated_at = utcnow()
    host.version += 1
    return host


def _check_transport(host: Host, data: HostUpdate) -> None:
    """The transport rules on the host as this update leaves it. A unix:// URL ignores stored TLS
    material and `insecure` (a PATCH cannot remove the material), so there only what this
    request sets counts, and `insecure` is cleared."""
    tcp = host.url.startswith("tcp://")
    problem = transport_problem(
        host.url,
        tls=data.tls is not None or (tcp and host.tls_encrypted is not None),
        insecure=bool(data.insecure) or (tcp and host.insecure),
    )
    if problem is not None:
        raise Invalid(problem, errors=[{"loc": "body", "msg": problem}])
    if not tcp:
        host.insecure = False


def drain(session: Session, *, host_id: str, settings: Settings, created_by: str) -> HostAccepted:
    """Mark the host `draining` (the reconciler starts its service replicas elsewhere) and
    queue the `host.drain` that waits for them to leave, then makes it unschedulable."""
    host = get(session, host_id=host_id, for_update=True)
    host.draining = True
    host.version += 1
    operation = queue.enqueue(
        session,
        kind="host.drain",
        target_type="host",
        target_id=host.id,
        host_id=host.id,
        created_by=created_by,
        max_attempts=settings.operation_max_attempts,
    )
    return HostAccepted(operation=operation_to_read(operation), host=to_read(host))


def active_operations(session: Session, *, host_id: str) -> int:
    count = session.execute(
        select(func.count())
        .select_from(Operation)
        .where(Operation.host_id == host_id, Operation.status.in_((QUEUED, RUNNING)))
    ).scalar_one()
    return int(count)


def delete(session: Session, *, host: Host, force: bool) -> None:
    busy = active_operations(session, host_id=host.id)
    if busy and not force:
        raise Conflict(
            f"host {host.name!r} has {busy} queued or running operations; "
            "wait for them, or delete with ?force=true"
        )
    session.delete(host)


def tls_material(cipher: Cipher, encrypted: str | None) -> TlsMaterial | None:
    if encrypted is None:
        return None
    raw = json.loads(cipher.decrypt(encrypted))
    return TlsMaterial(
        ca_cert=raw.get("ca_cert"),
        client_cert=raw.get("client_cert"),
        client_key=raw.get("client_key"),
    )


def engine_for_host(app: AppContext, host_id: str) -> Engine:
    """The Docker client for a host, built from its stored URL and decrypted TLS material."""
    with app.db.session(write=False) as session:
        row = session.execute(
            select(Host.url, Host.tls_encrypted, Host.insecure).where(Host.id == host_id)
        ).first()
    if row is None:
        raise NotFound(f"no host {host_id!r}")
    return engine_from(app, host_id, row.url, row.tls_encrypted, insecure=row.insecure)


def engine_from(
    app: AppContext, host_id: str, url: str, tls_encrypted: str | None, *, insecure: bool
) -> Engine:
    """The Docker client for a host whose row the caller has read already."""
    return app.engines.get(host_id, url, tls_material(app.cipher, tls_encrypted), insecure=insecure)
