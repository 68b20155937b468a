from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from sqlalchemy.orm import Session

from app.api.deps import Ctx, Operator, Principal, Viewer, set_audit_resource
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.core.context import AppContext
from app.core.db import new_id
from app.core.errors import Conflict, Invalid
from app.hosts import service as hosts
from app.images import service
from app.images.build_context import InvalidContext, inspect_context
from app.images.models import Blob
from app.images.reference import InvalidReference, dockerfile_base_images
from app.images.schemas import ImageAccepted, ImagePull, ImagePush, ImageRead, ImageTag
from app.operations import queue
from app.operations.models import Operation
from app.operations.service import to_read as operation_to_read
from app.registries import service as registries

router = APIRouter(prefix=f"{API_PREFIX}/images", tags=["images"])
BUILD_PATH = f"{API_PREFIX}/images/build"


def _accepted(response: Response, operations: list[Operation]) -> ImageAccepted:
    reads = [operation_to_read(op) for op in operations]
    response.headers["Location"] = f"{API_PREFIX}/operations/{reads[0].id}"
    return ImageAccepted(operation=reads[0], operations=reads)


def _enqueue(
    session: Session,
    context: AppContext,
    principal: Principal,
    *,
    kind: str,
    params: dict[str, Any],
    target_id: str | None,
    host_id: str,
) -> Operation:
    """Every image request queues its work the same way: one operation on one host."""
    return queue.enqueue(
        session,
        kind=kind,
        params=params,
        target_type="image",
        target_id=target_id,
        host_id=host_id,
        created_by=principal.actor,
        max_attempts=context.settings.operation_max_attempts,
    )


@router.get("", summary="Images the hosts hold (kept in sync with the engines)")
def list_images(
    context: Ctx,
    _: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    host_id: Annotated[str | None, Query(max_length=26)] = None,
    reference: Annotated[
        str | None, Query(max_length=512, description="A tag or digest, exactly")
    ] = None,
) -> Page[ImageRead]:
    with context.db.session(write=False) as session:
        rows, next_cursor = service.get_all(
            session, limit=limit, cursor=cursor, host_id=host_id, reference=reference
        )
        return Page(items=[service.to_read(i) for i in rows], next_cursor=next_cursor)


@router.get("/{image_id}", summary="Get an image")
def get_image(image_id: str, response: Response, context: Ctx, _: Viewer) -> ImageRead:
    with context.db.session(write=False) as session:
        read = service.to_read(service.get(session, image_id=image_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


@router.delete(
    "/{image_id}",
    status_code=202,
    summary="Delete an image from its host (409 while a container uses it, unless forced)",
)
def delete_image(
    image_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
    force: Annotated[bool, Query(description="Delete even if containers use it")] = False,
) -> ImageAccepted:
    set_audit_resource(request, f"images/{image_id}")
    with context.db.session() as session:
        image = service.get(session, image_id=image_id)
        if image.containers and not force:
            raise Conflict(
                f"{image.containers} container(s) on the host use this image; "
                "remove them first, or delete with ?force=true"
            )
        operation = _enqueue(
            session,
            context,
            principal,
            kind="image.delete",
            params={"docker_id": image.docker_id, "force": force},
            target_id=image.id,
            host_id=image.host_id,
        )
        return _accepted(response, [operation])


@router.post("/pull", status_code=202, summary="Pull an image to one, several or all hosts")
def pull_image(
    data: ImagePull, request: Request, response: Response, context: Ctx, principal: Operator
) -> ImageAccepted:
    reference = service.checked_reference(
        data.reference, context.settings, field="body.reference", action="pulling"
    )
    with context.db.session() as session:
        if data.registry_id is not None:
            registries.get(session, registry_id=data.registry_id)
        targets = service.target_hosts(
            session, host_id=data.host_id, host_ids=data.host_ids, all_hosts=data.all_hosts
        )
        operations = [
            _enqueue(
                session,
                context,
                principal,
                kind="image.pull",
                params={"reference": str(reference), "registry_id": data.registry_id},
                target_id=str(reference),
                host_id=host.id,
            )
            for host in targets
        ]
        accepted = _accepted(response, operations)
    set_audit_resource(request, f"images/{reference}")
    return accepted


@router.post("/push", status_code=202, summary="Push an image from a host to its registry")
def push_image(
    data: ImagePush, request: Request, response: Response, context: Ctx, principal: Operator
) -> ImageAccepted:
    reference = service.checked_reference(
        data.reference, context.settings, field="body.reference", action="pushing"
    )
    with context.db.session() as session:
        hosts.get(session, host_id=data.host_id)
        if data.registry_id is not None:
            registries.get(session, registry_id=data.registry_id)
        operation = _enqueue(
            session,
            context,
            principal,
            kind="image.push",
            params={"reference": str(reference), "registry_id": data.registry_id},
            target_id=str(reference),
            host_id=data.host_id,
        )
        accepted = _accepted(response, [operation])
    set_audit_resource(request, f"images/{reference}")
    return accepted


@router.post("/tag", status_code=202, summary="Tag an image on a host")
def tag_image(
    data: ImageTag, request: Request, response: Response, context: Ctx, principal: Operator
) -> ImageAccepted:
    target = service.checked_reference(
        data.target, context.settings, field="body.target", action="tagging"
    )
    with context.db.session() as session:
        hosts.get(session, host_id=data.host_id)
        operation = _enqueue(
            session,
            context,
            principal,
            kind="image.tag",
            params={"source": data.source, "target": str(target)},
            target_id=str(target),
            host_id=data.host_id,
        )
        accepted = _accepted(response, [operation])
    set_audit_resource(request, f"images/{target}")
    return accepted


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", errors=[{"loc": field, "msg": message}])


@router.post(
    "/build",
    status_code=202,
    summary="Build an image on a host from an uploaded context (tar or tar.gz)",
    description="multipart/form-data: `context` (the archive), `dockerfile` (path inside it), "
    "`tags[]` (repeat for each tag), `build_args` (a JSON object), `host_id`. The build log "
    "streams into the operation's logs.",
)
def build_image(
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
    build_context: Annotated[UploadFile, File(alias="context", description="tar or tar.gz")],
    host_id: Annotated[str, Form(max_length=26)],
    dockerfile: Annotated[str, Form(max_length=500)] = "Dockerfile",
    tags_list: Annotated[list[str] | None, Form(alias="tags[]")] = None,
    tags_plain: Annotated[list[str] | None, Form(alias="tags")] = None,
    build_args_json: Annotated[str, Form(alias="build_args", max_length=65536)] = "{}",
) -> ImageAccepted:
    settings = context.settings
    try:
        build_args = json.loads(build_args_json)
    except json.JSONDecodeError as exc:
        raise _invalid("body.build_args", f"not JSON: {exc.msg}") from exc
    if not isinstance(build_args, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in build_args.items()
    ):
        raise _invalid("body.build_args", "must be a JSON object of strings")
    tags = [*(tags_list or []), *(tags_plain or [])]
    if len(tags) > 50:
        raise _invalid("body.tags", "at most 50 tags")
    references = [
        service.checked_reference(tag, settings, field="body.tags", action="tagging")
        for tag in tags
    ]
    try:
        inspected = inspect_context(build_context.file, dockerfile_path=dockerfile)
    except InvalidContext as exc:
        raise _invalid("body.context", str(exc)) from exc
    try:
        bases = dockerfile_base_images(inspected.dockerfile, build_args)
    except InvalidReference as exc:
        raise _invalid("body.dockerfile", str(exc)) from exc
    for base in bases:
        service.enforce_registry_policy(
            base, settings, field="body.dockerfile", action="building FROM"
        )
    data = build_context.file.read()

    with context.db.session() as session:
        hosts.get(session, host_id=host_id)
        blob = Blob(
            id=new_id(), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), data=data
        )
        session.add(blob)
        operation = _enqueue(
            session,
            context,
            principal,
            kind="image.build",
            params={
                "blob_id": blob.id,
                "dockerfile": dockerfile,
                "tags": [str(r) for r in references],
                "build_args": build_args,
            },
            target_id=str(references[0]) if references else None,
            host_id=host_id,
        )
        accepted = _accepted(response, [operation])
    set_audit_resource(request, f"images/{references[0]}" if references else "images")
    return accepted
