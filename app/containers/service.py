"""Containers: the checks before anything is queued, and reads served from the database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.deps import VersionCheck
from app.api.pagination import PageQuery
from app.containers import policy, scheduler
from app.containers.models import Container, PortClaim
from app.containers.schemas import (
    ContainerAccepted,
    ContainerCreate,
    ContainerRead,
    ContainerSpec,
    RuntimeOptions,
)
from app.core.config import Settings
from app.core.db import new_id, utcnow
from app.core.errors import Conflict, Invalid, NotFound
from app.core.lookup import get_or_404
from app.hosts import service as hosts
from app.hosts.models import Host
from app.images.service import checked_reference
from app.operations import queue
from app.operations.models import Operation
from app.operations.service import to_read as operation_to_read
from app.registries import service as registries
from app.secrets import service as secrets

SPEC_FIELDS = tuple(ContainerSpec.model_fields)


_SPEC_DEFAULTS: dict[str, Any] = {
    "command": None,
    "entrypoint": None,
    "env": {},
    "ports": [],
    "volumes": [],
    "resources": {},
    "restart_policy": "no",
    "healthcheck": None,
    "networks": [],
    "privileged": False,
    "network_mode": None,
    "pid_mode": None,
    "ipc_mode": None,
    "cap_add": [],
    "devices": [],
    "user": None,
    "secrets": [],
    "network_aliases": [],
    **{
        name: field.get_default(call_default_factory=True)
        for name, field in RuntimeOptions.model_fields.items()
    },
}


READ_COLUMNS = (
    Container.id,
    Container.name,
    Container.host_id,
    Container.service_id,
    Container.image,
    Container.labels,
    Container.spec,
    Container.managed,
    Container.desired_state,
    Container.state,
    Container.health,
    Container.exit_code,
    Container.docker_id,
    Container.error,
    Container.created_at,
    Container.observed_at,
    Container.version,
)


_PAGE = PageQuery(
    READ_COLUMNS,
    Container.id,
    equal=(Container.host_id, Container.service_id, Container.state),
)


def read_dict(container: Container) -> dict[str, Any]:
    """A container as the API shows it."""
    return _shown(*(getattr(container, column.key) for column in READ_COLUMNS))


def row_dict(row: Sequence[Any]) -> dict[str, Any]:
    """`read_dict` of a row of READ_COLUMNS: unpacked by position, as a row's attributes cost
    more to read one by one than all the rest of the conversion."""
    return _shown(*row)


def _shown(
    id: str,
    name: str,
    host_id: str,
    service_id: str | None,
    image: str,
    labels: dict[str, str],
    stored: dict[str, Any],
    managed: bool,
    desired_state: str,
    state: str,
    health: str | None,
    exit_code: int | None,
    docker_id: str | None,
    error: str | None,
    created_at: datetime,
    observed_at: datetime | None,
    version: int,
) -> dict[str, Any]:
    """The spec was validated when stored, so lists can skip validating it again row by row.
    Foreign containers carry only what a listing shows, so the rest is filled with defaults."""
    spec = _SPEC_DEFAULTS.copy()
    spec.update({k: v for k, v in stored.items() if k in _SPEC_DEFAULTS})
    spec["resources"] = {"cpus": None, "memory_bytes": None, **(spec["resources"] or {})}
    return {
        "id": id,
        "name": name,
        "host_id": host_id,
        "service_id": service_id,
        "image": image,
        **spec,
        "labels": labels,
        "managed": managed,
        "desired_state": desired_state,
        "state": state,
        "health": health,
        "exit_code": exit_code,
        "docker_id": docker_id,
        "error": error,
        "created_at": created_at,
        "observed_at": observed_at,
        "version": version,
    }


def to_read(container: Container) -> ContainerRead:
    return ContainerRead.model_validate(read_dict(container))


def get(session: Session, *, container_id: str, for_update: bool = False) -> Container:
    return get_or_404(session, Container, container_id, what="container", for_update=for_update)


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    host_id: str | None = None,
    service_id: str | None = None,
    state: str | None = None,
    label: str | None = None,
) -> tuple[Sequence[Any], str | None]:
    """Rows of READ_COLUMNS (not ORM objects: lists are the hot read path)."""
    where: ColumnElement[bool] | None = None
    if label is not None:
        key, has_value, value = label.partition("=")
        label_value = Container.labels[key].as_string()
        where = label_value == value if has_value else label_value.is_not(None)
    equal = {"host_id": host_id, "service_id": service_id, "state": state}
    return _PAGE.page(session, limit=limit, cursor=cursor, equal=equal, where=where)


def validate_spec(session: Session, spec: ContainerSpec, settings: Settings) -> None:
    """Everything about a spec that needs settings or the database: the image reference and
    its registry, the security policy, the credentials named."""
    reference = checked_reference(
        spec.image, settings, field="body.image", action="running an image"
    )
    policy.check_container(spec, settings)
    if spec.registry_id is not None:
        try:
            registries.for_image(
                session,
                registry_id=spec.registry_id,
                host=reference.registry_host,
                field="body.registry_id",
            )
        except NotFound as exc:
            raise Invalid(
                exc.detail, errors=[{"loc": "body.registry_id", "msg": exc.detail}]
            ) from exc
    secrets.check_exist(
        session, ((f"body.secrets.{i}.name", ref.name) for i, ref in enumerate(spec.secrets))
    )


def choose_host(session: Session, data: ContainerCreate) -> Host:
    if data.host_id is not None:
        try:
            return hosts.get(session, host_id=data.host_id)
        except NotFound as exc:
            raise Invalid(exc.detail, errors=[{"loc": "body.host_id", "msg": exc.detail}]) from exc
    placement = scheduler.Placer(session).place(data, data.placement.constraints)
    if placement.host is None:
        why = "; ".join(f"{name}: {reason}" for name, reason in placement.reasons.items())
        raise Conflict(f"no host can run this container ({why or 'no hosts registered'})")
    return placement.host


def claim_ports(session: Session, container: Container, spec: ContainerSpec) -> None:
    """Reserve the host ports; a port another container on the host publishes is a 409."""
    for index, port in enumerate(spec.ports):
        if port.host_port is None:
            continue
        statement = (
            select(Container.name)
            .join(PortClaim, PortClaim.container_id == Container.id)
            .where(
                PortClaim.host_id == container.host_id,
                PortClaim.host_port == port.host_port,
                PortClaim.protocol == port.protocol,
            )
        )
        if port.host_ip:
            # An empty address is every address: it clashes with any specific one.
            statement = statement.where(PortClaim.host_ip.in_((port.host_ip, "")))
        holders = session.execute(statement).scalars().first()
        if holders is not None:
            raise Conflict(
                f"host port {port.host_port}/{port.protocol} is already published by container "
                f"{holders!r} on this host",
                errors=[{"loc": f"body.ports.{index}.host_port", "msg": "already published"}],
            )
        try:
            with session.begin_nested():
                session.add(
                    PortClaim(
                        container_id=container.id,
                        host_id=container.host_id,
                        host_ip=port.host_ip,
                        host_port=port.host_port,
                        protocol=port.protocol,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(
                f"host port {port.host_port}/{port.protocol} was just taken on this host",
                errors=[{"loc": f"body.ports.{index}.host_port", "msg": "already published"}],
            ) from exc


def default_name(spec: ContainerSpec, container_id: str) -> str:
    repository = spec.image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return f"{repository}-{container_id[-6:]}"


def create(
    session: Session,
    *,
    data: ContainerCreate,
    settings: Settings,
    service_id: str | None = None,
) -> Container:
    validate_spec(session, data, settings)
    host = choose_host(session, data)
    container_id = new_id()
    spec = ContainerSpec.model_validate(data.model_dump(include=set(SPEC_FIELDS)))
    name = data.name or default_name(spec, container_id)
    clash = session.execute(
        select(Container.id).where(Container.host_id == host.id, Container.name == name)
    ).scalar_one_or_none()
    if clash is not None:
        raise Conflict(
            f"a container named {name!r} already exists on host {host.name!r} ({clash})",
            errors=[{"loc": "body.name", "msg": "name taken on this host"}],
        )
    container = Container(
        id=container_id,
        name=name,
        host_id=host.id,
        service_id=service_id,
        spec=spec.model_dump(mode="json"),
        image=spec.image,
        labels=spec.labels,
        managed=True,
        desired_state="running" if data.start else "stopped",
        state="pending",
        created_at=utcnow(),
        version=1,
    )
    session.add(container)
    session.flush()
    claim_ports(session, container, spec)
    return container


def _accepted(operation: Operation, container: Container) -> ContainerAccepted:
    return ContainerAccepted(operation=operation_to_read(operation), container=to_read(container))


def _enqueue(
    session: Session,
    container: Container,
    *,
    kind: str,
    params: dict[str, object],
    settings: Settings,
    created_by: str,
) -> Operation:
    return queue.enqueue(
        session,
        kind=kind,
        params=params,
        target_type="container",
        target_id=container.id,
        host_id=container.host_id,
        created_by=created_by,
        max_attempts=settings.operation_max_attempts,
    )


def create_and_queue(
    session: Session, *, data: ContainerCreate, settings: Settings, created_by: str
) -> ContainerAccepted:
    """A new container and the operation that creates (and starts) it on its host."""
    container = create(session, data=data, settings=settings)
    operation = _enqueue(
        session,
        container,
        kind="container.create",
        params={},
        settings=settings,
        created_by=created_by,
    )
    return _accepted(operation, container)


def act(
    session: Session,
    *,
    container_id: str,
    kind: str,
    desired: str | None,
    params: dict[str, object],
    check_version: VersionCheck,
    settings: Settings,
    created_by: str,
) -> ContainerAccepted:
    """Queue `kind` on a container Berth manages, recording the state it is to end in
    (`desired`; None when the action leaves it as it is, as a signal does)."""
    container = get(session, container_id=container_id, for_update=True)
    check_version(container.version)
    require_managed(container)
    if container.desired_state == "removed":
        raise Conflict(f"container {container.name!r} is being removed")
    if desired is not None and desired != container.desired_state:
        container.desired_state = desired
        container.version += 1
    operation = _enqueue(
        session, container, kind=kind, params=params, settings=settings, created_by=created_by
    )
    return _accepted(operation, container)


def require_managed(container: Container) -> None:
    if not container.managed:
        raise Conflict(
            f"container {container.name!r} was not created by Berth; Berth lists it but never "
            "changes it"
        )


def operation_params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
