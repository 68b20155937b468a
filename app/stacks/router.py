from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from app.api.deps import (
    Ctx,
    Principal,
    ProjectOperator,
    Viewer,
    check_if_match,
    set_audit_resource,
)
from app.api.gate import HELD, Gate
from app.api.middleware.asgi import is_multipart
from app.api.openapi import schema_ref, versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.api.uploads import checked_apart
from app.core.config import Settings
from app.core.context import AppContext
from app.core.errors import Invalid, PayloadTooLarge
from app.projects import service as projects
from app.projects.access import check_row
from app.projects.schemas import ProjectQuery
from app.security.roles import ProjectRole
from app.stacks import releases, service
from app.stacks.models import Stack
from app.stacks.schemas import (
    ReleaseDiff,
    ReleaseRead,
    StackAccepted,
    StackCreate,
    StackDryRun,
    StackRead,
    StackRollback,
    StackUpdate,
)
from app.workers import wakeups

STACKS_PATH = f"{API_PREFIX}/stacks"
router = APIRouter(prefix=STACKS_PATH, tags=["stacks"])

T = TypeVar("T", bound=BaseModel)
_JSON_FIELDS = ("variables", "env_files", "profiles")
_MULTIPART_DOC = (
    "JSON `{name, compose, variables?, env_files?, strict?, profiles?, host_id?}`, or "
    "multipart/form-data with the same fields (`variables`, `env_files` and `profiles` as JSON "
    "text) and either `compose` or `project`: a tar / tar.gz of the project directory, in which "
    "the Compose file (`file`, by default compose.yaml, compose.yml, docker-compose.yaml or "
    "docker-compose.yml), its `.env`, "
    "`env_file`s, `include`d and `extends` files and build contexts are found as Compose finds "
    "them. A `context.<compose service name>` file part gives (or replaces) a service's build "
    "context. With `?dry_run=true` the answer is 200 and the plan: every check is made, nothing "
    "is stored and no engine is asked."
)
_DRY_RUN = Query(
    description="Check everything and answer the plan (200) without storing or deploying"
)
# A deploy (create or update) answers 202 and its operation, or, as a dry run, 200 and the plan.
_DEPLOY_ROUTE: dict[str, Any] = {
    "status_code": 202,
    "response_model": StackAccepted,
    "responses": {200: {"model": StackDryRun, "description": "The plan of a dry run"}, **HELD},
}


def _body_schema(model: type[StackUpdate]) -> dict[str, Any]:
    """The request body `_read_request` reads by hand, as JSON or as multipart/form-data."""
    fields: dict[str, Any] = {
        name: {"type": "string", "description": field.description}
        for name, field in model.model_fields.items()
    }
    fields["project"] = {
        "type": "string",
        "format": "binary",
        "description": "The project directory, as a tar or tar.gz (instead of `compose`)",
    }
    for name in _JSON_FIELDS:
        fields[name]["description"] += " (JSON, as text)"
    required = [name for name, field in model.model_fields.items() if field.is_required()]
    form = {
        "type": "object",
        "properties": fields,
        "required": required,
        # One build context per Compose service that has `build:`.
        "patternProperties": {r"^context\.": {"type": "string", "format": "binary"}},
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema_ref(model)},
                "multipart/form-data": {"schema": form},
            },
        }
    }


def _validated(model: type[T], raw: dict[str, Any]) -> T:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise Invalid.from_model(exc, prefix="body") from exc


async def _read_request(
    request: Request, model: type[T], settings: Settings
) -> tuple[T, dict[str, bytes], bytes | None]:
    """The stack fields, the uploaded build contexts (by Compose service name) and the
    project archive."""
    if is_multipart(request.headers.get("content-type")):
        # Only the build contexts and the project are uploads; the other fields are held to
        # the JSON limit.
        form = await request.form(
            max_files=50, max_fields=200, max_part_size=settings.max_request_bytes
        )
        raw: dict[str, Any] = {}
        contexts: dict[str, bytes] = {}
        project: bytes | None = None
        for key, value in form.multi_items():
            if isinstance(value, str):
                raw[key] = _form_json(key, value) if key in _JSON_FIELDS else value
            elif key.startswith("context."):
                contexts[key.removeprefix("context.")] = await value.read()
            elif key == "project":
                project = await value.read()
            elif key == "compose":
                if (value.size or 0) > settings.max_compose_bytes:
                    raise PayloadTooLarge(
                        f"body.compose: the file is {value.size} bytes; "
                        f"the limit is {settings.max_compose_bytes}"
                    )
                raw[key] = (await value.read()).decode("utf-8", errors="replace")
            else:
                raise Invalid(
                    f"body.{key}: unexpected file",
                    errors=[
                        {"loc": f"body.{key}", "msg": "files go in project or context.<service>"}
                    ],
                )
        return _validated(model, raw), contexts, project
    raw = _form_json("body", (await request.body()).decode("utf-8", errors="replace"))
    if not isinstance(raw, dict):
        raise Invalid(
            "body: expected a JSON object", errors=[{"loc": "body", "msg": "not an object"}]
        )
    return _validated(model, raw), {}, None


def _form_json(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"{key}: not JSON ({exc.msg})",
            errors=[{"loc": key if key == "body" else f"body.{key}", "msg": "not JSON"}],
        ) from exc


async def _checked(
    request: Request,
    context: AppContext,
    stack_name: str,
    data: StackUpdate,
    contexts: dict[str, bytes],
    project: bytes | None,
) -> service.Upload:
    """The request's file, project and contexts, checked on an upload-check thread."""
    return await checked_apart(
        request,
        partial(
            service.check_upload,
            stack_name=stack_name,
            data=data,
            contexts=contexts,
            project_archive=project,
            settings=context.settings,
        ),
    )


def _may(session: Session, principal: Principal, stack_id: str, needed: ProjectRole) -> None:
    """The role the route needs, in the stack's project (app/projects/access.py)."""
    check_row(session, principal, Stack, stack_id, needed, what="stack")


def _planned(body: StackDryRun) -> Response:
    return JSONResponse(body.model_dump(mode="json"), status_code=200)


def _located(response: Response, body: StackAccepted | Response) -> StackAccepted | Response:
    if isinstance(body, Response):
        return body  # held as a change request: its own answer
    response.headers["Location"] = f"{API_PREFIX}/operations/{body.operation.id}"
    return body


@router.post(
    "",
    summary="Deploy a Compose file as a stack",
    description=_MULTIPART_DOC
    + " Builds run first, then each service once its `depends_on` are started or healthy.",
    openapi_extra=_body_schema(StackCreate),
    **_DEPLOY_ROUTE,
)
async def create_stack(
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> StackAccepted | Response:
    data, contexts, project = await _read_request(request, StackCreate, context.settings)
    upload = await _checked(request, context, data.name, data, contexts, project)

    def owner(session: Session) -> str:
        return projects.target(
            session, principal, name=data.in_project, needed=ProjectRole.operator
        ).id

    if dry_run:

        def plan() -> StackDryRun:
            with context.db.session(write=False) as session:
                return service.dry_run(
                    session,
                    stack_name=data.name,
                    upload=upload,
                    host_id=data.host_id,
                    settings=context.settings,
                    project_id=owner(session),
                )

        return _planned(await run_in_threadpool(plan))

    def create() -> StackAccepted | Response:
        with context.db.session() as session:
            project_id = owner(session)
            held = gate.hold(
                session,
                request=request,
                principal=principal,
                kind="stack.create",
                payload=data.model_dump(mode="json", exclude_unset=True),
                project_id=project_id,
                files=bool(contexts or project),
            )
            if held is not None:
                return held
            body = service.create(
                session,
                data=data,
                upload=upload,
                settings=context.settings,
                cipher=context.cipher,
                created_by=principal.actor,
                project_id=project_id,
            )
            set_audit_resource(request, f"stacks/{body.stack.id}")
            return body

    body = await run_in_threadpool(create)
    return _located(response, body)


@router.get("", summary="List stacks")
def list_stacks(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    name: Annotated[str | None, Query(max_length=41)] = None,
    project: ProjectQuery = None,
) -> Page[StackRead]:
    with context.db.session(write=False) as session:
        readable = projects.list_filter(session, principal, name=project)
        return service.read_page(session, limit=limit, cursor=cursor, name=name, projects=readable)


@router.get(
    "/{stack_id}",
    summary="Get a stack, its services and their status",
    openapi_extra=versioned(sends_etag=True),
)
def get_stack(stack_id: str, response: Response, context: Ctx, principal: Viewer) -> StackRead:
    with context.db.session(write=False) as session:
        _may(session, principal, stack_id, ProjectRole.viewer)
        read = service.read(session, stack_id=stack_id)
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.put(
    "/{stack_id}",
    summary="Deploy a new Compose file: only the services whose spec changed roll",
    description=_MULTIPART_DOC.replace("{name, ", "{").replace(", host_id?", "")
    + " Services no longer in the file are removed; the stack stays on its host.",
    openapi_extra={**_body_schema(StackUpdate), **versioned(checks_if_match=True)},
    **_DEPLOY_ROUTE,
)
async def update_stack(
    stack_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> StackAccepted | Response:
    set_audit_resource(request, f"stacks/{stack_id}")
    data, contexts, project = await _read_request(request, StackUpdate, context.settings)

    def stack_name() -> str:  # It never changes: read before the upload is checked.
        with context.db.session(write=False) as session:
            _may(session, principal, stack_id, ProjectRole.operator)
            return service.get(session, stack_id=stack_id).name

    name = await run_in_threadpool(stack_name)
    upload = await _checked(request, context, name, data, contexts, project)
    if dry_run:

        def plan() -> StackDryRun:
            with context.db.session(write=False) as session:
                stack = service.get(session, stack_id=stack_id)
                return service.dry_run(
                    session,
                    stack_name=stack.name,
                    upload=upload,
                    host_id=stack.host_id,
                    settings=context.settings,
                    project_id=stack.project_id,
                    existing=stack,
                )

        return _planned(await run_in_threadpool(plan))

    def update() -> StackAccepted | Response:
        with context.db.session() as session:
            held = gate.hold(
                session,
                request=request,
                principal=principal,
                kind="stack.update",
                payload=data.model_dump(mode="json", exclude_unset=True),
                target_id=stack_id,
                files=bool(contexts or project),
            )
            if held is not None:
                return held
            return service.update(
                session,
                stack_id=stack_id,
                data=data,
                upload=upload,
                check_version=partial(check_if_match, request),
                settings=context.settings,
                cipher=context.cipher,
                created_by=principal.actor,
            )

    return _located(response, await run_in_threadpool(update))


@router.delete(
    "/{stack_id}",
    status_code=202,
    summary="Remove a stack: its services, then the networks it created",
    response_model=StackAccepted,
    responses=HELD,
    description="Named volumes the stack created are removed too with `?volumes=true` "
    "(their data is lost); by default they are kept.",
    openapi_extra=versioned(checks_if_match=True),
)
def delete_stack(
    stack_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
    volumes: bool = False,
) -> StackAccepted | Response:
    set_audit_resource(request, f"stacks/{stack_id}")
    with context.db.session() as session:
        _may(session, principal, stack_id, ProjectRole.operator)
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="stack.delete",
            payload={"volumes": volumes},
            target_id=stack_id,
        )
        if held is not None:
            return held
        body = service.delete(
            session,
            stack_id=stack_id,
            volumes=volumes,
            check_version=partial(check_if_match, request),
            settings=context.settings,
            created_by=principal.actor,
        )
    wakeups.notify(wakeups.SERVICES)
    return _located(response, body)


@router.get(
    "/{stack_id}/releases",
    summary="The stack's releases, newest first: file, masked variables, digests",
)
def list_releases(
    stack_id: str, context: Ctx, principal: Viewer, limit: Limit = 50, cursor: Cursor = None
) -> Page[ReleaseRead]:
    with context.db.session(write=False) as session:
        _may(session, principal, stack_id, ProjectRole.viewer)
        service.get(session, stack_id=stack_id)
        return releases.read_page(session, stack_id=stack_id, limit=limit, cursor=cursor)


@router.get("/{stack_id}/releases/{release}", summary="One release of the stack")
def get_release(stack_id: str, release: int, context: Ctx, principal: Viewer) -> ReleaseRead:
    with context.db.session(write=False) as session:
        _may(session, principal, stack_id, ProjectRole.viewer)
        service.get(session, stack_id=stack_id)
        return releases.to_read(releases.get(session, stack_id=stack_id, release=release))


@router.get(
    "/{stack_id}/releases/{before}/diff/{after}",
    summary="What changed from one release to another",
    description="The Compose files as a unified diff, the variables, and per service its "
    "image digest and the spec fields that changed. Either order works: `before` need not be "
    "older.",
)
def diff_releases(
    stack_id: str, before: int, after: int, context: Ctx, principal: Viewer
) -> ReleaseDiff:
    with context.db.session(write=False) as session:
        _may(session, principal, stack_id, ProjectRole.viewer)
        service.get(session, stack_id=stack_id)
        return releases.diff(
            releases.get(session, stack_id=stack_id, release=before),
            releases.get(session, stack_id=stack_id, release=after),
        )


@router.post(
    "/{stack_id}/rollback",
    status_code=202,
    summary="Deploy a past release again, its digests included, as a new generation",
    response_model=StackAccepted,
    responses=HELD,
    description="The release's Compose file, variables (as kept: masked values stay masked) "
    "and plan are deployed as they were; its images are created from the digests recorded "
    "then, not from what their tags name now, and images Berth built then are not rebuilt. "
    "The rollback is itself a new release. A release the stack never had is a 422.",
    openapi_extra=versioned(checks_if_match=True),
)
def rollback_stack(
    stack_id: str,
    data: StackRollback,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    gate: Gate,
) -> StackAccepted | Response:
    set_audit_resource(request, f"stacks/{stack_id}")
    with context.db.session() as session:
        _may(session, principal, stack_id, ProjectRole.operator)
        held = gate.hold(
            session,
            request=request,
            principal=principal,
            kind="stack.rollback",
            payload=data.model_dump(mode="json"),
            target_id=stack_id,
        )
        if held is not None:
            return held
        body = service.rollback(
            session,
            stack_id=stack_id,
            release=data.release,
            check_version=partial(check_if_match, request),
            settings=context.settings,
            created_by=principal.actor,
        )
    wakeups.notify(wakeups.SERVICES)
    return _located(response, body)
