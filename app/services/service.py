"""Services: requests become revisions and intent; the reconciler turns intent into tasks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.deps import VersionCheck
from app.api.pagination import Page, paginate
from app.containers import service as containers
from app.containers.models import Container
from app.containers.schemas import ContainerSpec
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, Invalid, NotFound
from app.core.lookup import get_or_404
from app.hosts.models import Host
from app.operations import queue
from app.operations.models import Operation
from app.operations.service import to_read as operation_to_read
from app.projects import quotas
from app.projects import service as projects
from app.projects.access import narrow
from app.projects.models import Project
from app.projects.quotas import replicas_usage
from app.security.roles import DEFAULT_PROJECT_ID
from app.services import update_available
from app.services.decide import ready
from app.services.diff import changes
from app.services.models import Service, ServiceRevision, ServiceStatus
from app.services.schemas import (
    ReplicaCounts,
    RevisionDiff,
    RevisionRead,
    ServiceAccepted,
    ServiceRead,
    ServiceSpec,
    UpdateAvailable,
)


class ServiceChange(Protocol):
    """A service function that changes one service under an If-Match: the routes call it, and
    an approved change request calls it (app/changes/kinds.py)."""

    def __call__(
        self,
        session: Session,
        *,
        service_id: str,
        check_version: VersionCheck,
        settings: Settings,
        created_by: str,
    ) -> ServiceAccepted: ...


# Where a new revision's spec comes from, given the locked service: the request (replace or
# patch it) or an earlier revision (roll back).
SpecSource = Callable[[Session, Service], ServiceSpec]
# And the image digest it is to run, when that is not the current revision's (a rollback).
DigestSource = Callable[[Session, Service], str | None]
# The converge's parameter that asks it to resolve its revision's image (image_pin.pin_image):
# set for a revision whose image nobody resolved yet, never for a scale or a rollback.
RESOLVE_IMAGE = "resolve_image"


def container_spec(spec: ServiceSpec) -> ContainerSpec:
    """What each replica runs. The engine never restarts a replica itself (restart policy
    "no"): the reconciler replaces it, on another host if need be, with backoff."""
    return ContainerSpec(
        image=spec.image,
        command=spec.command,
        entrypoint=spec.entrypoint,
        env=spec.env,
        ports=spec.ports,
        volumes=spec.volumes,
        resources=spec.resources,
        restart_policy="no",
        labels=spec.labels,
        healthcheck=spec.healthcheck,
        networks=spec.networks,
        network_aliases=spec.aliases,
        user=spec.user,
        registry_id=spec.registry_id,
        secrets=spec.secrets,
        **spec.runtime_options(),
    )


def queue_converge(
    session: Session, service: Service, *, settings: Settings, created_by: str, **params: object
) -> Operation:
    """The operation a change to a service answers with: it follows the service until it
    settles at its current revision (see handlers.converge)."""
    return queue.enqueue(
        session,
        kind="service.converge",
        params={"revision": service.revision, **params},
        target_type="service",
        target_id=service.id,
        created_by=created_by,
        max_attempts=settings.operation_max_attempts,
        project_id=service.project_id,
    )


def current_spec(service: Service) -> ServiceSpec:
    """What the service runs now: its revision's spec at its current replica count."""
    return ServiceSpec.model_validate({**service.spec, "replicas": service.replicas})


def validate(
    session: Session,
    spec: ServiceSpec,
    settings: Settings,
    *,
    project_id: str,
    service_id: str | None = None,
    quota: bool = True,
) -> None:
    """The spec as a replica of a service in the project (its policy relaxations, its
    secrets and registries), within the project's quotas (`service_id`: the service it is to
    replace the spec of; `quota=False` for a caller that checks a whole set of services)."""
    try:
        replica = container_spec(spec)
    except ValidationError as exc:
        # A replica's spec checks fields (`user`) that the service's takes as written.
        raise Invalid.from_model(exc, prefix="body") from exc
    containers.validate_spec(session, replica, settings, project_id=project_id)
    if quota:
        check_quota(
            session,
            project_id=project_id,
            adding=replicas_usage(spec.replicas, spec.resources.model_dump()),
            service_ids=frozenset({service_id} if service_id else ()),
        )


def check_quota(
    session: Session, *, project_id: str, adding: quotas.Usage, service_ids: frozenset[str]
) -> None:
    """422 when services taking `adding` in place of `service_ids` take the project past a
    quota."""
    project = session.get_one(Project, project_id)
    quotas.check(session, project, adding=adding, except_services=service_ids)


def to_read(session: Session, service: Service) -> ServiceRead:
    return to_reads(session, [service])[0]


def to_reads(session: Session, services: Sequence[Service]) -> list[ServiceRead]:
    """The services as read, with their tasks (`read_dicts`), as models."""
    return [ServiceRead.model_validate(item) for item in read_dicts(session, services)]


def read_dicts(session: Session, services: Sequence[Service]) -> list[dict[str, Any]]:
    """The services as the API shows them (`ServiceRead` as JSON), with their tasks: one query
    for a whole page, whatever its size. A task is read as the columns its answer shows, not as
    a Container, and shown as a plain dict, not a model: a page with thousands of replicas
    would otherwise decode every replica's spec and labels, then validate and serialize a model
    per replica."""
    if not services:
        return []
    tasks: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    # A replica on a host that does not answer is not known to run, whatever it last said.
    counts: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])  # running, healthy
    current: dict[str | None, int] = {service.id: service.revision for service in services}
    specs = {service.id: ServiceSpec.model_validate(service.spec) for service in services}
    checked: dict[str | None, bool] = {
        service_id: spec.healthcheck is not None for service_id, spec in specs.items()
    }
    rows = session.connection().execute(
        select(
            Container.service_id,
            Container.slot,
            Container.id,
            Container.host_id,
            Container.state,
            Container.health,
            Container.revision,
            Container.desired_state,
            Container.error,
            Host.status,
        )
        .outerjoin(Host, Host.id == Container.host_id)
        .where(
            Container.service_id.in_(list(current)),
            Container.desired_state != "removed",
        )
        .order_by(Container.slot, Container.id)
    )
    # Unpacked rather than read by name (a Row's attribute lookup is Python per column); `on`
    # is the status of the task's host. Keys in `Task`'s order.
    for service_id, slot, task_id, host_id, state, health, revision, desired, error, on in rows:
        tasks[service_id].append(
            {
                "slot": slot,
                "container_id": task_id,
                "host_id": host_id,
                "state": state,
                "health": health,
                "revision": revision,
                "desired_state": desired,
                "error": error,
            }
        )
        if on == "ready" and revision == current[service_id] and state == "running":
            count = counts[service_id]
            count[0] += 1
            count[1] += ready(state, desired, health, checked=checked[service_id])
    updates = update_available.find(session, services)
    names = projects.names(session, {service.project_id for service in services})
    items = []
    for service in services:
        running, healthy = counts[service.id]
        item = _read(
            service,
            specs[service.id],
            running,
            healthy,
            updates.get(service.id),
            project=names[service.project_id],
        ).model_dump(mode="json")
        item["tasks"] = tasks[service.id]  # in its place: the key is there, empty
        items.append(item)
    return items


def _read(
    service: Service,
    spec: ServiceSpec,
    running: int,
    healthy: int,
    update: UpdateAvailable | None,
    *,
    project: str,
) -> ServiceRead:
    """The service without its tasks."""
    return ServiceRead(
        id=service.id,
        name=service.name,
        project=project,
        stack_id=service.stack_id,
        spec=spec.model_copy(update={"replicas": service.replicas}),
        revision=service.revision,
        status=service.status,
        status_detail=service.status_detail,
        replicas=ReplicaCounts(desired=service.replicas, running=running, healthy=healthy),
        rollout=service.rollout,
        tasks=[],
        update_available=update,
        created_at=service.created_at,
        updated_at=service.updated_at,
        version=service.version,
    )


def get(session: Session, *, service_id: str, for_update: bool = False) -> Service:
    return get_or_404(session, Service, service_id, what="service", for_update=for_update)


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    stack_id: str | None = None,
    name: str | None = None,
    projects: frozenset[str] | None = None,
) -> tuple[Sequence[Service], str | None]:
    statement = narrow(select(Service), Service.project_id, projects)
    if stack_id is not None:
        statement = statement.where(Service.stack_id == stack_id)
    if name is not None:
        statement = statement.where(Service.name == name)
    return paginate(session, statement, Service.id, limit=limit, cursor=cursor)


def read(session: Session, *, service_id: str) -> ServiceRead:
    return to_read(session, get(session, service_id=service_id))


def read_page(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    stack_id: str | None = None,
    name: str | None = None,
    projects: frozenset[str] | None = None,
) -> Page[ServiceRead]:
    rows, next_cursor = get_all(
        session, limit=limit, cursor=cursor, stack_id=stack_id, name=name, projects=projects
    )
    return Page(items=to_reads(session, rows), next_cursor=next_cursor)


def _accepted(
    session: Session, service: Service, *, settings: Settings, created_by: str, **params: object
) -> ServiceAccepted:
    """A change's answer: the converge it queued, and the service as it now reads."""
    operation = queue_converge(session, service, settings=settings, created_by=created_by, **params)
    session.flush()
    return ServiceAccepted(
        operation=operation_to_read(operation), service=to_read(session, service)
    )


def create_and_queue(
    session: Session,
    *,
    name: str,
    spec: ServiceSpec,
    settings: Settings,
    created_by: str,
    project_id: str = DEFAULT_PROJECT_ID,
) -> ServiceAccepted:
    """A new service and the converge that starts its replicas."""
    service = create(
        session,
        name=name,
        spec=spec,
        settings=settings,
        created_by=created_by,
        project_id=project_id,
    )
    return _accepted(
        session, service, settings=settings, created_by=created_by, **{RESOLVE_IMAGE: True}
    )


def _locked(session: Session, service_id: str, check_version: VersionCheck) -> Service:
    service = get(session, service_id=service_id, for_update=True)
    check_version(service.version)
    return service


def revise(
    session: Session,
    *,
    service_id: str,
    make_spec: SpecSource,
    check_version: VersionCheck,
    settings: Settings,
    created_by: str,
    pin: DigestSource | None = None,
) -> ServiceAccepted:
    """Make the spec `make_spec` gives the service's next revision, with the image digest
    `pin` gives if any, and roll it out (a new replica count alone rolls nothing; see
    new_revision). Without `pin`, a new revision's converge resolves its image."""
    service = _locked(session, service_id, check_version)
    revised = new_revision(
        session,
        service=service,
        spec=make_spec(session, service),
        settings=settings,
        created_by=created_by,
        image_digest=pin(session, service) if pin is not None else None,
    )
    resolve = {RESOLVE_IMAGE: True} if revised and pin is None else {}
    return _accepted(session, service, settings=settings, created_by=created_by, **resolve)


def scale(
    session: Session,
    *,
    service_id: str,
    replicas: int,
    check_version: VersionCheck,
    settings: Settings,
    created_by: str,
) -> ServiceAccepted:
    """Change the replica count; no new revision, so nothing rolls."""
    service = _locked(session, service_id, check_version)
    if service.removing:
        raise Conflict(f"service {service.name!r} is being removed")
    check_quota(
        session,
        project_id=service.project_id,
        adding=replicas_usage(replicas, service.spec.get("resources") or {}),
        service_ids=frozenset({service.id}),
    )
    _rescale(service, replicas)
    service.spec = {**service.spec, "replicas": replicas}
    service.version += 1
    return _accepted(session, service, settings=settings, created_by=created_by)


def _rescale(service: Service, replicas: int) -> None:
    """A new count is not reached yet: without this the converge queued with it would read the
    RUNNING of the old count and succeed before the reconciler started or stopped a replica."""
    if replicas != service.replicas and service.status == ServiceStatus.RUNNING:
        service.status = ServiceStatus.CONVERGING
        service.status_detail = f"scaling to {replicas} replicas"
    service.replicas = replicas


def delete(
    session: Session,
    *,
    service_id: str,
    check_version: VersionCheck,
    settings: Settings,
    created_by: str,
) -> ServiceAccepted:
    """Mark the service removing: the reconciler removes its replicas, then the service; the
    converge queued here follows it to the end."""
    service = _locked(session, service_id, check_version)
    service.removing = True
    service.status = ServiceStatus.REMOVING
    service.version += 1
    return _accepted(session, service, settings=settings, created_by=created_by, removing=True)


def create(
    session: Session,
    *,
    name: str,
    spec: ServiceSpec,
    settings: Settings,
    created_by: str,
    stack_id: str | None = None,
    image_digest: str | None = None,
    project_id: str = DEFAULT_PROJECT_ID,
) -> Service:
    if session.execute(select(Service.id).where(Service.name == name)).scalar_one_or_none():
        raise Conflict(
            f"a service named {name!r} already exists",
            errors=[{"loc": "body.name", "msg": "taken"}],
        )
    validate(session, spec, settings, project_id=project_id)
    now = utcnow()
    service = Service(
        name=name,
        project_id=project_id,
        stack_id=stack_id,
        spec=spec.model_dump(mode="json"),
        revision=1,
        replicas=spec.replicas,
        status=ServiceStatus.CONVERGING,
        slots={},
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(service)
    session.flush()
    session.add(
        ServiceRevision(
            service_id=service.id,
            revision=1,
            spec=service.spec,
            image_digest=image_digest,
            created_at=now,
            created_by=created_by,
        )
    )
    return service


def new_revision(
    session: Session,
    *,
    service: Service,
    spec: ServiceSpec,
    settings: Settings,
    created_by: str,
    force: bool = False,
    image_digest: str | None = None,
) -> bool:
    """Make `spec` the service's next revision (a rolling update). False if nothing changed
    but the replica count (which scales without a new revision), unless `force`d: a rotated
    secret rolls the replicas with the same spec. An `image_digest` that changes what the
    replicas are created from is a change: the tag moved, and they roll to the new bits (an
    image Berth built runs by its tag, which names its content: a rebuild rolls nothing)."""
    if service.removing:
        raise Conflict(f"service {service.name!r} is being removed")
    validate(session, spec, settings, project_id=service.project_id, service_id=service.id)
    current = ServiceSpec.model_validate(service.spec)
    _rescale(service, spec.replicas)
    service.updated_at = utcnow()
    service.version += 1
    unchanged = spec.revised_as(current)
    current_digest = revision_digest(session, service)
    if image_digest is None and spec.image == current.image:
        image_digest = current_digest  # the same image stays pinned (a changed env, say)
    if replica_image(spec, image_digest) != replica_image(current, current_digest):
        unchanged = False  # the replicas would be created from other bits
    if unchanged and not force:
        kept = {**service.spec, "replicas": spec.replicas, "auto_update": spec.auto_update}
        if not spec.auto_update:
            del kept["auto_update"]  # a default is not stored (SetOnly)
        service.spec = kept
        return False
    latest = session.execute(
        select(func.max(ServiceRevision.revision)).where(ServiceRevision.service_id == service.id)
    ).scalar_one()
    revision = int(latest or 0) + 1
    service.rollout = {
        "phase": "updating",
        "from": service.revision,
        "to": revision,
        "started_at": utcnow().isoformat(),
        "failures": 0,
    }
    service.revision = revision
    service.spec = spec.model_dump(mode="json")
    service.status = ServiceStatus.UPDATING
    service.status_detail = None
    service.outcome = None
    session.add(
        ServiceRevision(
            service_id=service.id,
            revision=revision,
            spec=service.spec,
            image_digest=image_digest,
            created_at=utcnow(),
            created_by=created_by,
        )
    )
    return True


def revision_digest(session: Session, service: Service) -> str | None:
    """The image digest the service's current revision was deployed with, if one was."""
    return session.execute(
        select(ServiceRevision.image_digest).where(
            ServiceRevision.service_id == service.id,
            ServiceRevision.revision == service.revision,
        )
    ).scalar_one_or_none()


def replica_image(spec: ServiceSpec, image_digest: str | None) -> str:
    """The image a new replica is created from: the recorded `repo@sha256:...`, so every host
    runs the bits the revision was deployed with whatever the tag names now. An image Berth
    built is recorded by its id, which only its own host knows: its tag (named by content)
    stands for it."""
    return image_digest if image_digest is not None and "@" in image_digest else spec.image


def patched(service: Service, changes: dict[str, Any]) -> ServiceSpec:
    merged = {**service.spec, "replicas": service.replicas, **changes}
    try:
        return ServiceSpec.model_validate(merged)
    except ValidationError as exc:
        raise Invalid.from_model(exc, prefix="body.spec", title="invalid spec") from exc


def _previous(session: Session, service: Service) -> ServiceRevision:
    previous = session.execute(
        select(ServiceRevision)
        .where(
            ServiceRevision.service_id == service.id, ServiceRevision.revision < service.revision
        )
        .order_by(ServiceRevision.revision.desc())
        .limit(1)
    ).scalar_one_or_none()
    if previous is None:
        raise Conflict(f"service {service.name!r} has no revision before {service.revision}")
    return previous


def previous_spec(session: Session, service: Service) -> ServiceSpec:
    previous = _previous(session, service)
    return ServiceSpec.model_validate({**previous.spec, "replicas": service.replicas})


def previous_digest(session: Session, service: Service) -> str | None:
    """The previous revision's digest: a rollback runs the bits it ran, not its tag's."""
    return _previous(session, service).image_digest


def revisions(
    session: Session, *, service_id: str, limit: int, cursor: str | None
) -> Page[RevisionRead]:
    """The service's revisions, oldest first; a 404 if there is no such service."""
    get(session, service_id=service_id)
    rows, next_cursor = paginate(
        session,
        select(ServiceRevision).where(ServiceRevision.service_id == service_id),
        ServiceRevision.id,
        limit=limit,
        cursor=cursor,
    )
    items = [
        RevisionRead(
            revision=r.revision,
            spec=ServiceSpec.model_validate(r.spec),
            image_digest=r.image_digest,
            created_at=r.created_at,
            created_by=r.created_by,
        )
        for r in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


def _revision(session: Session, *, service_id: str, revision: int) -> ServiceRevision:
    row = session.execute(
        select(ServiceRevision).where(
            ServiceRevision.service_id == service_id, ServiceRevision.revision == revision
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"service {service_id!r} has no revision {revision}")
    return row


def revision_diff(session: Session, *, service_id: str, before: int, after: int) -> RevisionDiff:
    """What changed from one revision to another: the spec's fields and the image digest."""
    get(session, service_id=service_id)
    old = _revision(session, service_id=service_id, revision=before)
    new = _revision(session, service_id=service_id, revision=after)
    return RevisionDiff(
        before=before,
        after=after,
        digest_before=old.image_digest,
        digest_after=new.image_digest,
        fields=changes(old.spec, new.spec),
    )
