"""What each kind of change request is: how its plan is made when it is submitted, and how it
is applied once approved. One entry per kind, calling the same service functions as the
direct route, so an approved change and a direct one take one code path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request

from app.api.deps import check_if_match
from app.changes.models import ChangeRequest
from app.core.config import Settings
from app.core.db import new_id
from app.core.errors import NotFound
from app.secrets import service as secrets
from app.security.crypto import Cipher
from app.services import image_updates, planner, secret_usage
from app.services import service as services
from app.services.models import Service
from app.services.schemas import (
    ScaleRequest,
    ServiceCreate,
    ServicePatch,
    ServiceReplace,
    ServiceSpec,
)
from app.stacks import service as stacks
from app.stacks.schemas import StackCreate, StackRollback, StackUpdate


@dataclass(frozen=True)
class Job:
    """A change request with what planning or applying it needs."""

    change: ChangeRequest
    settings: Settings
    cipher: Cipher

    @property
    def payload(self) -> dict[str, Any]:
        return self.change.payload

    @property
    def target_id(self) -> str:
        if self.change.target_id is None:
            raise NotFound(f"change {self.change.id} names no {self.change.target_type}")
        return self.change.target_id

    @property
    def value(self) -> str:
        """A secret's value, kept encrypted with the request."""
        if self.change.value_encrypted is None:
            raise NotFound(f"change {self.change.id} carries no value")
        return self.cipher.decrypt(self.change.value_encrypted)

    def check_version(self, version: int) -> None:
        """The author's If-Match, honoured at apply time as the direct route honours it."""
        headers = (
            [] if self.change.if_match is None else [(b"if-match", self.change.if_match.encode())]
        )
        check_if_match(Request({"type": "http", "headers": headers}), version)


@dataclass(frozen=True)
class Applied:
    resource: str  # `services/<id>`: what the audit entry names
    operations: list[str]


@dataclass(frozen=True)
class Kind:
    name: str
    target_type: str  # services | stacks | secrets
    plan: Callable[[Session, Job], dict[str, Any]]
    apply: Callable[[Session, Job], Applied]


KINDS: dict[str, Kind] = {}


def register(
    name: str, target_type: str, *, plan: Callable[[Session, Job], dict[str, Any]]
) -> Callable[[Callable[[Session, Job], Applied]], Callable[[Session, Job], Applied]]:
    def add(apply: Callable[[Session, Job], Applied]) -> Callable[[Session, Job], Applied]:
        KINDS[name] = Kind(name, target_type, plan, apply)
        return apply

    return add


def get(name: str) -> Kind:
    return KINDS[name]


# Services ------------------------------------------------------------------------------------


def _service_plan(session: Session, job: Job, spec: ServiceSpec) -> dict[str, Any]:
    plan = planner.preview(session, service_id=job.target_id, spec=spec, settings=job.settings)
    return plan.model_dump(mode="json")


def _new_service_plan(session: Session, job: Job) -> dict[str, Any]:
    data = ServiceCreate.model_validate(job.payload)
    project_id = job.change.project_id
    services.validate(session, data.spec, job.settings, project_id=project_id)
    # The service does not exist yet: planned as an unsaved one with no replicas, every slot
    # is a replica to start.
    spec = data.spec.model_dump(mode="json")
    draft = Service(id=new_id(), name=data.name, spec=spec, project_id=project_id)
    return planner.plan(session, draft, data.spec).model_dump(mode="json")


@register("service.create", "services", plan=_new_service_plan)
def _create_service(session: Session, job: Job) -> Applied:
    data = ServiceCreate.model_validate(job.payload)
    body = services.create_and_queue(
        session,
        name=data.name,
        spec=data.spec,
        settings=job.settings,
        created_by=job.change.author,
        project_id=job.change.project_id,
    )
    return Applied(f"services/{body.service.id}", [body.operation.id])


def _revise(session: Session, job: Job, change: services.ServiceChange) -> Applied:
    body = change(
        session,
        service_id=job.target_id,
        check_version=job.check_version,
        settings=job.settings,
        created_by=job.change.author,
    )
    return Applied(f"services/{body.service.id}", [body.operation.id])


def _replaced(job: Job) -> services.SpecSource:
    data = ServiceReplace.model_validate(job.payload)
    return lambda _session, svc: data.spec_for(svc.name)


def _patched(job: Job) -> services.SpecSource:
    data = ServicePatch.model_validate(job.payload)
    return lambda _session, svc: services.patched(svc, data.spec)


def _scaled(job: Job) -> services.SpecSource:
    replicas = ScaleRequest.model_validate(job.payload).replicas
    return lambda _session, svc: services.current_spec(svc).model_copy(
        update={"replicas": replicas}
    )


def _spec_plan(
    source: Callable[[Job], services.SpecSource],
) -> Callable[[Session, Job], dict[str, Any]]:
    def plan(session: Session, job: Job) -> dict[str, Any]:
        service = services.get(session, service_id=job.target_id)
        return _service_plan(session, job, source(job)(session, service))

    return plan


def _previous(_job: Job) -> services.SpecSource:
    return services.previous_spec


def _nothing(_job: Job) -> services.SpecSource:
    return lambda _session, svc: services.current_spec(svc).model_copy(update={"replicas": 0})


@register("service.update", "services", plan=_spec_plan(_replaced))
def _update_service(session: Session, job: Job) -> Applied:
    return _revise(session, job, partial(services.revise, make_spec=_replaced(job)))


@register("service.patch", "services", plan=_spec_plan(_patched))
def _patch_service(session: Session, job: Job) -> Applied:
    return _revise(session, job, partial(services.revise, make_spec=_patched(job)))


@register("service.rollback", "services", plan=_spec_plan(_previous))
def _rollback_service(session: Session, job: Job) -> Applied:
    back = partial(services.revise, make_spec=services.previous_spec, pin=services.previous_digest)
    return _revise(session, job, back)


@register("service.scale", "services", plan=_spec_plan(_scaled))
def _scale_service(session: Session, job: Job) -> Applied:
    replicas = ScaleRequest.model_validate(job.payload).replicas
    return _revise(session, job, partial(services.scale, replicas=replicas))


# A new digest of the service's tag, found by the image check (app/services/image_updates.py),
# for a service with auto_update in a protected project.
IMAGE_UPDATE = "service.image_update"


def _image_update_plan(session: Session, job: Job) -> dict[str, Any]:
    service = services.get(session, service_id=job.target_id)
    plan = _service_plan(session, job, services.current_spec(service))
    current = services.revision_digest(session, service)
    return {**plan, "image_digest": {"before": current, "after": job.payload["digest"]}}


@register(IMAGE_UPDATE, "services", plan=_image_update_plan)
def _update_image(session: Session, job: Job) -> Applied:
    service = services.get(session, service_id=job.target_id, for_update=True)
    body = image_updates.apply_image_update(
        session, service=service, digest=job.payload["digest"], settings=job.settings
    )
    return Applied(f"services/{body.service.id}", [body.operation.id])


# A deleted service's plan is that of none of its replicas left.
@register("service.delete", "services", plan=_spec_plan(_nothing))
def _delete_service(session: Session, job: Job) -> Applied:
    return _revise(session, job, services.delete)


# Stacks --------------------------------------------------------------------------------------


def _upload(job: Job, data: StackUpdate, stack_name: str) -> stacks.Upload:
    """A held stack deploy is its JSON body: the Compose file and its variables (an uploaded
    project archive or build context is refused when the request is submitted)."""
    return stacks.check_upload(stack_name=stack_name, data=data, contexts={}, settings=job.settings)


def _new_stack_plan(session: Session, job: Job) -> dict[str, Any]:
    data = StackCreate.model_validate(job.payload)
    upload = _upload(job, data, data.name)
    plan = stacks.dry_run(
        session,
        stack_name=data.name,
        upload=upload,
        host_id=data.host_id,
        settings=job.settings,
        project_id=job.change.project_id,
    )
    return plan.model_dump(mode="json")


@register("stack.create", "stacks", plan=_new_stack_plan)
def _create_stack(session: Session, job: Job) -> Applied:
    data = StackCreate.model_validate(job.payload)
    body = stacks.create(
        session,
        data=data,
        upload=_upload(job, data, data.name),
        settings=job.settings,
        cipher=job.cipher,
        created_by=job.change.author,
        project_id=job.change.project_id,
    )
    return Applied(f"stacks/{body.stack.id}", [body.operation.id])


def _stack_update_plan(session: Session, job: Job) -> dict[str, Any]:
    stack = stacks.get(session, stack_id=job.target_id)
    upload = _upload(job, StackUpdate.model_validate(job.payload), stack.name)
    plan = stacks.dry_run(
        session,
        stack_name=stack.name,
        upload=upload,
        host_id=stack.host_id,
        settings=job.settings,
        project_id=stack.project_id,
        existing=stack,
    )
    return plan.model_dump(mode="json")


@register("stack.update", "stacks", plan=_stack_update_plan)
def _update_stack(session: Session, job: Job) -> Applied:
    data = StackUpdate.model_validate(job.payload)
    name = stacks.get(session, stack_id=job.target_id).name
    body = stacks.update(
        session,
        stack_id=job.target_id,
        data=data,
        upload=_upload(job, data, name),
        check_version=job.check_version,
        settings=job.settings,
        cipher=job.cipher,
        created_by=job.change.author,
    )
    return Applied(f"stacks/{body.stack.id}", [body.operation.id])


def _stack_services_plan(session: Session, job: Job) -> dict[str, Any]:
    """What a removal or a rollback touches: the stack's services, and the release it goes to."""
    members = stacks.members(session, job.target_id)
    return {"services": sorted(s.name for s in members), **job.payload}


@register("stack.rollback", "stacks", plan=_stack_services_plan)
def _rollback_stack(session: Session, job: Job) -> Applied:
    body = stacks.rollback(
        session,
        stack_id=job.target_id,
        release=StackRollback.model_validate(job.payload).release,
        check_version=job.check_version,
        settings=job.settings,
        created_by=job.change.author,
    )
    return Applied(f"stacks/{body.stack.id}", [body.operation.id])


@register("stack.delete", "stacks", plan=_stack_services_plan)
def _delete_stack(session: Session, job: Job) -> Applied:
    body = stacks.delete(
        session,
        stack_id=job.target_id,
        volumes=bool(job.payload.get("volumes", False)),
        check_version=job.check_version,
        settings=job.settings,
        created_by=job.change.author,
    )
    return Applied(f"stacks/{body.stack.id}", [body.operation.id])


# Secrets -------------------------------------------------------------------------------------


def _no_plan(_session: Session, _job: Job) -> dict[str, Any]:
    return {}


def _users_plan(session: Session, job: Job) -> dict[str, Any]:
    """The services a rotation rolls, or that keep a deletion from going ahead."""
    secret = secrets.get(session, secret_id=job.target_id)
    return {"services": secret_usage.used_by(session, [secret.name])[secret.name]}


@register("secret.create", "secrets", plan=_no_plan)
def _create_secret(session: Session, job: Job) -> Applied:
    secret = secrets.create(
        session,
        name=str(job.payload["name"]),
        value=job.value,
        cipher=job.cipher,
        created_by=job.change.author,
        project_id=job.change.project_id,
    )
    return Applied(f"secrets/{secret.id}", [])


@register("secret.rotate", "secrets", plan=_users_plan)
def _rotate_secret(session: Session, job: Job) -> Applied:
    body = secret_usage.rotate(
        session,
        secret_id=job.target_id,
        value=job.value,
        check_version=job.check_version,
        cipher=job.cipher,
        settings=job.settings,
        created_by=job.change.author,
    )
    return Applied(f"secrets/{body.secret.id}", [op.id for op in body.operations])


@register("secret.delete", "secrets", plan=_users_plan)
def _delete_secret(session: Session, job: Job) -> Applied:
    secret_usage.delete(session, secret_id=job.target_id, check_version=job.check_version)
    return Applied(f"secrets/{job.target_id}", [])
