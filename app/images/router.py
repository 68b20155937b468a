from __future__ import annotations

import json
from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.api.deps import Ctx, Operator, Viewer, set_audit_resource
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.api.uploads import checked_apart
from app.images import service
from app.images.schemas import ImageAccepted, ImagePull, ImagePush, ImageRead, ImageTag

router = APIRouter(prefix=f"{API_PREFIX}/images", tags=["images"])
BUILD_PATH = f"{API_PREFIX}/images/build"


_BUILD_FORM = {
    "context": "(the bytes of context.tar.gz)",
    "host_id": "01jd3k7m5xq8w2v9r4t6y0zbnc",
    "dockerfile": "Dockerfile",
    "tags[]": ["registry.example.com/team/app:1.0"],
    "build_args": '{"VERSION": "1.0"}',
}


def _located(response: Response, body: ImageAccepted) -> ImageAccepted:
    response.headers["Location"] = f"{API_PREFIX}/operations/{body.operation.id}"
    return body


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


@router.get("/{image_id}", summary="Get an image", openapi_extra=versioned(sends_etag=True))
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
        body = service.delete(
            session,
            image_id=image_id,
            force=force,
            settings=context.settings,
            created_by=principal.actor,
        )
    return _located(response, body)


@router.post("/pull", status_code=202, summary="Pull an image to one, several or all hosts")
def pull_image(
    data: ImagePull, request: Request, response: Response, context: Ctx, principal: Operator
) -> ImageAccepted:
    with context.db.session() as session:
        body = service.pull(
            session, data=data, settings=context.settings, created_by=principal.actor
        )
        set_audit_resource(request, f"images/{body.operation.target_id}")
    return _located(response, body)


@router.post("/push", status_code=202, summary="Push an image from a host to its registry")
def push_image(
    data: ImagePush, request: Request, response: Response, context: Ctx, principal: Operator
) -> ImageAccepted:
    with context.db.session() as session:
        body = service.push(
            session, data=data, settings=context.settings, created_by=principal.actor
        )
        set_audit_resource(request, f"images/{body.operation.target_id}")
    return _located(response, body)


@router.post("/tag", status_code=202, summary="Tag an image on a host")
def tag_image(
    data: ImageTag, request: Request, response: Response, context: Ctx, principal: Operator
) -> ImageAccepted:
    with context.db.session() as session:
        body = service.tag(
            session, data=data, settings=context.settings, created_by=principal.actor
        )
        set_audit_resource(request, f"images/{body.operation.target_id}")
    return _located(response, body)


@router.post(
    "/build",
    status_code=202,
    summary="Build an image on a host from an uploaded context (tar or tar.gz)",
    description="multipart/form-data: `context` (the archive), `dockerfile` (path inside it), "
    "`tags[]` (repeat for each tag), `build_args` (a JSON object), `target` (the stage of a "
    "multi-stage Dockerfile to stop at), `host_id`. The build log streams into the operation's "
    "logs.",
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"example": _BUILD_FORM}}}},
)
async def build_image(
    request: Request,
    response: Response,
    context: Ctx,
    principal: Operator,
    build_context: Annotated[UploadFile, File(alias="context", description="tar or tar.gz")],
    host_id: Annotated[str, Form(max_length=26)],
    dockerfile: Annotated[str, Form(max_length=500)] = "Dockerfile",
    tags_list: Annotated[list[str] | None, Form(alias="tags[]")] = None,
    build_args_json: Annotated[str, Form(alias="build_args", max_length=65536)] = "{}",
    target: Annotated[
        str | None, Form(max_length=128, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    ] = None,
) -> ImageAccepted:
    try:
        build_args = json.loads(build_args_json)
    except json.JSONDecodeError as exc:
        raise service.invalid_field("body.build_args", f"not JSON: {exc.msg}") from exc
    if not isinstance(build_args, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in build_args.items()
    ):
        raise service.invalid_field("body.build_args", "must be a JSON object of strings")
    # `tags` is taken as well as `tags[]`, read here rather than declared: in the OpenAPI
    # document the two names would be two properties a generated client names alike.
    tags_plain = (await request.form()).getlist("tags")
    if not all(isinstance(tag, str) for tag in tags_plain):
        raise service.invalid_field("body.tags", "tags are text fields, not files")
    tags = [*(tags_list or []), *(str(tag) for tag in tags_plain)]
    if len(tags) > 50:
        raise service.invalid_field("body.tags", "at most 50 tags")
    # Scanning the archive is the costly part: off the request threads (app.api.uploads).
    build = await checked_apart(
        request,
        partial(
            service.check_build,
            build_context.file,
            dockerfile=dockerfile,
            tags=tags,
            build_args=build_args,
            target=target,
            settings=context.settings,
        ),
    )

    def enqueue() -> ImageAccepted:
        with context.db.session() as session:
            body = service.build(
                session,
                build=build,
                host_id=host_id,
                settings=context.settings,
                created_by=principal.actor,
            )
            # Named before the commit: the audit entry is written in the same transaction.
            target = body.operation.target_id
            set_audit_resource(request, f"images/{target}" if target else "images")
            return body

    body = await run_in_threadpool(enqueue)
    return _located(response, body)
