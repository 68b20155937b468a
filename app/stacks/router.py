from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import Ctx, Operator, Principal, Viewer, check_if_match, set_audit_resource
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.core.errors import Conflict, Invalid
from app.images.models import Blob
from app.operations import queue
from app.operations.service import to_read as operation_to_read
from app.services.models import ServiceStatus
from app.stacks import service
from app.stacks.models import Stack
from app.stacks.schemas import StackAccepted, StackCreate, StackRead, StackUpdate
from app.workers import wakeups

STACKS_PATH = f"{API_PREFIX}/stacks"
router = APIRouter(prefix=STACKS_PATH, tags=["stacks"])

T = TypeVar("T", bound=BaseModel)
_JSON_FIELDS = ("variables", "env_files")
_MULTIPART_DOC = (
    "JSON `{name, compose, variables?, env_files?, host_id?}`, or multipart/form-data with the "
    "same fields (`variables` and `env_files` as JSON text) plus one tar / tar.gz file per "
    "Compose service that has `build:`, in the field `context.<compose service name>`."
)
_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/StackCreate"}},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}


def _validated(model: type[T], raw: dict[str, Any]) -> T:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise Invalid.from_model(exc, prefix="body") from exc


async def _read_request(request: Request, model: type[T]) -> tuple[T, dict[str, bytes]]:
    """The stack fields and the uploaded build contexts (by Compose service name)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=50, max_fields=200, max_part_size=2 * 2**20)
        raw: dict[str, Any] = {}
        contexts: dict[str, bytes] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                raw[key] = _form_json(key, value) if key in _JSON_FIELDS else value
            elif key.startswith("context."):
                contexts[key.removeprefix("context.")] = await value.read()
            elif key == "compose":
                raw[key] = (await value.read()).decode("utf-8", errors="replace")
            else:
                raise Invalid(
                    f"body.{key}: unexpected file",
                    errors=[{"loc": f"body.{key}", "msg": "files go in context.<service>"}],
                )
        return _validated(model, raw), contexts
    raw = _form_json("body", (await request.body()).decode("utf-8", errors="replace"))
    if not isinstance(raw, dict):
        raise Invalid(
            "body: expected a JSON object", errors=[{"loc": "body", "msg": "not an object"}]
        )
    return _validated(model, raw), {}


def _form_json(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"{key}: not JSON ({exc.msg})",
            errors=[{"loc": key if key == "body" else f"body.{key}", "msg": "not JSON"}],
        ) from exc


def _queue_deploy(
    session: Session,
    context: AppContext,
    principal: Principal,
    stack: Stack,
    plan: dict[str, Any],
    builds: list[service.Build],
) -> StackAccepted:
    """Store the builds' contexts and queue them on the stack's host, then the deploy."""
    operations = {}
    for build in builds:
        blob = Blob(
            id=new_id(),
            sha256=hashlib.sha256(build.context).hexdigest(),
            size_bytes=len(build.context),
            data=build.context,
        )
        session.add(blob)
        operations[build.compose_name] = queue.enqueue(
            session,
            kind="image.build",
            params={
                "blob_id": blob.id,
                "dockerfile": build.dockerfile,
                "tags": [build.tag],
                "build_args": build.args,
            },
            target_type="image",
            target_id=build.tag,
            host_id=stack.host_id,
            created_by=principal.actor,
            max_attempts=context.settings.operation_max_attempts,
        )
    for item in plan["services"]:
        if item["compose_name"] in operations:
            item["build"]["operation_id"] = operations[item["compose_name"]].id
    stack.plan = plan
    operation = queue.enqueue(
        session,
        kind="stack.deploy",
        params={"generation": stack.generation},
        target_type="stack",
        target_id=stack.id,
        host_id=stack.host_id,
        created_by=principal.actor,
        max_attempts=context.settings.operation_max_attempts,
    )
    session.flush()
    return StackAccepted(
        operation=operation_to_read(operation), stack=service.to_read(session, stack)
    )


def _located(response: Response, body: StackAccepted) -> StackAccepted:
    response.headers["Location"] = f"{API_PREFIX}/operations/{body.operation.id}"
    return body


@router.post(
    "",
    status_code=202,
    summary="Deploy a Compose file as a stack",
    description=_MULTIPART_DOC
    + " Builds run first, then each service once its `depends_on` are started or healthy.",
    openapi_extra=_BODY_SCHEMA,
)
async def create_stack(
    request: Request, response: Response, context: Ctx, principal: Operator
) -> StackAccepted:
    data, contexts = await _read_request(request, StackCreate)

    def create() -> StackAccepted:
        with context.db.session() as session:
            if session.execute(select(Stack.id).where(Stack.name == data.name)).first():
                raise Conflict(
                    f"a stack named {data.name!r} already exists",
                    errors=[{"loc": "body.name", "msg": "taken"}],
                )
            host, plan, builds = service.prepare(
                session,
                stack_name=data.name,
                data=data,
                host_id=data.host_id,
                contexts=contexts,
                settings=context.settings,
            )
            now = utcnow()
            stack = Stack(
                id=new_id(),
                name=data.name,
                compose=data.compose,
                variables=data.variables,
                host_id=host.id,
                plan={},
                generation=1,
                status="deploying",
                removing=False,
                created_at=now,
                updated_at=now,
                created_by=principal.actor,
                version=1,
            )
            session.add(stack)
            return _queue_deploy(session, context, principal, stack, plan, builds)

    body = await run_in_threadpool(create)
    set_audit_resource(request, f"stacks/{body.stack.id}")
    return _located(response, body)


@router.get("", summary="List stacks")
def list_stacks(
    context: Ctx,
    _: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    name: Annotated[str | None, Query(max_length=41)] = None,
) -> Page[StackRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(session, limit=limit, cursor=cursor, name=name)
        return Page(items=[service.to_read(session, s) for s in rows], next_cursor=next_cursor)


@router.get("/{stack_id}", summary="Get a stack, its services and their status")
def get_stack(stack_id: str, response: Response, context: Ctx, _: Viewer) -> StackRead:
    with context.db.session(write=False) as session:
        read = service.to_read(session, service.get(session, stack_id=stack_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.put(
    "/{stack_id}",
    status_code=202,
    summary="Deploy a new Compose file: only the services whose spec changed roll",
    description=_MULTIPART_DOC.replace("{name, ", "{").replace(", host_id?", "")
    + " Services no longer in the file are removed; the stack stays on its host.",
    openapi_extra={
        "requestBody": {
            **_BODY_SCHEMA["requestBody"],
            "content": {
                **_BODY_SCHEMA["requestBody"]["content"],
                "application/json": {"schema": {"$ref": "#/components/schemas/StackUpdate"}},
            },
        }
    },
)
async def update_stack(
    stack_id: str, request: Request, response: Response, context: Ctx, principal: Operator
) -> StackAccepted:
    set_audit_resource(request, f"stacks/{stack_id}")
    data, contexts = await _read_request(request, StackUpdate)

    def update() -> StackAccepted:
        with context.db.session() as session:
            stack = service.get(session, stack_id=stack_id, for_update=True)
            check_if_match(request, stack.version)
            if stack.removing:
                raise Conflict(f"stack {stack.name!r} is being removed")
            _, plan, builds = service.prepare(
                session,
                stack_name=stack.name,
                data=data,
                host_id=stack.host_id,
                contexts=contexts,
                settings=context.settings,
                existing=stack,
            )
            stack.compose = data.compose
            stack.variables = data.variables
            stack.generation += 1
            stack.status, stack.status_detail = "deploying", None
            stack.updated_at = utcnow()
            stack.version += 1
            return _queue_deploy(session, context, principal, stack, plan, builds)

    return _located(response, await run_in_threadpool(update))


@router.delete(
    "/{stack_id}",
    status_code=202,
    summary="Remove a stack: its services, then the networks it created",
    description="Named volumes the stack created are removed too with `?volumes=true` "
    "(their data is lost); by default they are kept.",
)
def delete_stack(
    stack_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
    volumes: bool = False,
) -> StackAccepted:
    set_audit_resource(request, f"stacks/{stack_id}")
    with context.db.session() as session:
        stack = service.get(session, stack_id=stack_id, for_update=True)
        check_if_match(request, stack.version)
        stack.removing = True
        stack.status, stack.status_detail = "removing", None
        stack.version += 1
        for member in service.members(session, stack.id, for_update=True):
            if not member.removing:
                member.removing, member.status = True, ServiceStatus.REMOVING
                member.version += 1
        operation = queue.enqueue(
            session,
            kind="stack.remove",
            params={"volumes": volumes},
            target_type="stack",
            target_id=stack.id,
            host_id=stack.host_id,
            created_by=principal.actor,
            max_attempts=context.settings.operation_max_attempts,
        )
        session.flush()
        body = StackAccepted(
            operation=operation_to_read(operation), stack=service.to_read(session, stack)
        )
    wakeups.notify(wakeups.SERVICES)
    return _located(response, body)
