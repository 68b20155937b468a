"""Containers: the checks before anything is queued, and reads served from the database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api.deps import VersionCheck
from app.api.pagination import PageQuery, driver_json, driver_utc
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
from app.projects import quotas
from app.projects import service as projects
from app.projects.models import Project
from app.projects.quotas import Usage, set_aside
from app.registries import service as registries
from app.secrets import service as secrets
from app.security.roles import DEFAULT_PROJECT_ID

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
    Container.project_id,
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


# A listed container's keys in the answer's order, the spec's options at their defaults.
_ITEM: dict[str, Any] = {
    **dict.fromkeys(("id", "name", "project", "host_id", "service_id", "image")),
    **_SPEC_DEFAULTS,
    **dict.fromkeys(
        (
            "labels",
            "managed",
            "desired_state",
            "state",
            "health",
            "exit_code",
            "docker_id",
            "error",
            "created_at",
            "observed_at",
            "version",
        )
    ),
}

# The page's JSON, boolean and datetime columns come as the driver returns them and are decoded
# in read_dicts: SQLAlchemy's result processors cost two or three Python calls a value, more
# than the decoding itself, on the hottest read.
_PAGE = PageQuery(
    READ_COLUMNS,
    Container.id,
    equal=(Container.host_id, Container.service_id, Container.state),
    undecoded=(
        Container.labels,
        Container.spec,
        Container.managed,
        Container.created_at,
        Container.observed_at,
    ),
)


def read_dict(container: Container, project: str) -> dict[str, Any]:
    """A container as the API shows it, in the project named `project`."""
    return _shown(project, *(getattr(container, column.key) for column in READ_COLUMNS))


def to_read(session: Session, container: Container) -> ContainerRead:
    project = projects.names(session, [container.project_id])[container.project_id]
    return ContainerRead.model_validate(read_dict(container, project))


def read_dicts(session: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """A page of READ_COLUMNS rows, as `get_all` reads them, as the API shows them, their
    projects named once. Rows are unpacked by position: a row's attributes cost more to read one
    by one than all the rest of the conversion."""
    names = projects.names(session, {row[2] for row in rows})
    return [_shown(names[row[2]], *row) for row in rows]


def _shown(
    project: str,
    id: str,
    name: str,
    project_id: str,
    host_id: str,
    service_id: str | None,
    image: str,
    labels: str | dict[str, str],
    stored: str | dict[str, Any],
    managed: bool | int,
    desired_state: str,
    state: str,
    health: str | None,
    exit_code: int | None,
    docker_id: str | None,
    error: str | None,
    created_at: str | datetime,
    observed_at: str | datetime | None,
    version: int,
) -> dict[str, Any]:
    """The spec was validated when stored, so lists can skip validating it again row by row.
    Foreign containers carry only what a listing shows, so the rest is filled with defaults.
    The JSON, boolean and datetime columns are taken as the driver (a page) or the ORM (one
    container) gives them.

    A copy of `_ITEM` (the keys in the answer's order, the options at their defaults) with the
    stored options over it, then every column's own key set after them (a spec's `image` and
    `labels` are not what the columns say): a third of the time of a dict built key by key."""
    options: dict[str, Any] = driver_json(stored)
    item = _ITEM.copy()
    item.update(options)
    if len(item) != len(_ITEM):  # the spec keeps what a listing does not show (`registry_id`)
        for key in options.keys() - _ITEM.keys():
            del item[key]
    item.update(
        {
            "id": id,
            "name": name,
            "project": project,
            "host_id": host_id,
            "service_id": service_id,
            "image": image,
            "resources": {"cpus": None, "memory_bytes": None, **(options.get("resources") or {})},
            "labels": driver_json(labels),
            "managed": bool(managed),
            "desired_state": desired_state,
            "state": state,
            "health": health,
            "exit_code": exit_code,
            "docker_id": docker_id,
            "error": error,
            "created_at": driver_utc(created_at),
            "observed_at": driver_utc(observed_at),
            "version": version,
        }
    )
    return item


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
    projects: frozenset[str] | None = None,
) -> tuple[Sequence[Any], str | None]:
    """Rows of READ_COLUMNS (not ORM objects: lists are the hot read path), of `projects`
    only (None: every project)."""
    conditions: list[ColumnElement[bool]] = []
    if projects is not None:
        conditions.append(Container.project_id.in_(sorted(projects)))
    if label is not None:
        key, has_value, value = label.partition("=")
        label_value = Container.labels[key].as_string()
        conditions.append(label_value == value if has_value else label_value.is_not(None))
    equal = {"host_id": host_id, "service_id": service_id, "state": state}
    where = and_(*conditions) if conditions else None
    return _PAGE.page(session, limit=limit, cursor=cursor, equal=equal, where=where)


def validate_spec(
    session: Session,
    spec: ContainerSpec,
    settings: Settings,
    *,
    project_id: str = DEFAULT_PROJECT_ID,
) -> None:
    """Everything about a spec that needs settings or the database: the image reference and
    its registry, the security policy with the project's relaxations, the credentials named
    (only the project's own: another project's are unknown here)."""
    reference = checked_reference(
        spec.image, settings, field="body.image", action="running an image"
    )
    policy.check_container(spec, settings, relaxed=relaxations(session, project_id))
    if spec.registry_id is not None:
        try:
            registries.for_image(
                session,
                registry_id=spec.registry_id,
                host=reference.registry_host,
                field="body.registry_id",
                project_id=project_id,
            )
        except NotFound as exc:
            raise Invalid(
                exc.detail, errors=[{"loc": "body.registry_id", "msg": exc.detail}]
            ) from exc
    secrets.check_exist(
        session,
        ((f"body.secrets.{i}.name", ref.name) for i, ref in enumerate(spec.secrets)),
        project_id=project_id,
    )


def relaxations(session: Session, project_id: str) -> list[str]:
    """The policy rules the project's containers may break."""
    project = session.get(Project, project_id)
    return list(project.relaxations) if project is not None else []


def choose_host(session: Session, data: ContainerCreate, project_id: str) -> Host:
    if data.host_id is not None:
        try:
            host = hosts.get(session, host_id=data.host_id)
        except NotFound as exc:
            raise Invalid(exc.detail, errors=[{"loc": "body.host_id", "msg": exc.detail}]) from exc
        if not scheduler.may_use(session, host_id=host.id, project_id=project_id):
            why = f"host {host.name!r} is dedicated to other projects"
            raise Invalid(why, errors=[{"loc": "body.host_id", "msg": why}])
        return host
    placement = scheduler.Placer(session).place(
        data, data.placement.constraints, project_id=project_id
    )
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
    project_id: str = DEFAULT_PROJECT_ID,
) -> Container:
    validate_spec(session, data, settings, project_id=project_id)
    project = session.get_one(Project, project_id)
    cpus, memory = set_aside(data.resources.model_dump())
    quotas.check(session, project, adding=Usage(containers=1, cpus=cpus, memory_bytes=memory))
    host = choose_host(session, data, project_id)
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
        project_id=project_id,
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


def _accepted(session: Session, operation: Operation, container: Container) -> ContainerAccepted:
    return ContainerAccepted(
        operation=operation_to_read(operation), container=to_read(session, container)
    )


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
        project_id=container.project_id,
    )


def create_and_queue(
    session: Session,
    *,
    data: ContainerCreate,
    settings: Settings,
    created_by: str,
    project_id: str = DEFAULT_PROJECT_ID,
) -> ContainerAccepted:
    """A new container and the operation that creates (and starts) it on its host."""
    container = create(session, data=data, settings=settings, project_id=project_id)
    operation = _enqueue(
        session,
        container,
        kind="container.create",
        params={},
        settings=settings,
        created_by=created_by,
    )
    return _accepted(session, operation, container)


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
    return _accepted(session, operation, container)


def require_managed(container: Container) -> None:
    if not container.managed:
        raise Conflict(
            f"container {container.name!r} was not created by Berth; Berth lists it but never "
            "changes it"
        )


def operation_params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
