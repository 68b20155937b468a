from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import (
    Ctx,
    Principal,
    ProjectOperator,
    Viewer,
    check_if_match,
    set_audit_resource,
    while_valid,
)
from app.api.openapi import versioned
from app.api.pagination import Cursor, Limit, Page
from app.api.paths import API_PREFIX
from app.containers import service
from app.containers.models import Container
from app.containers.schemas import (
    ContainerAccepted,
    ContainerCreate,
    ContainerRead,
    KillRequest,
    StopRequest,
)
from app.core.context import AppContext
from app.core.errors import Conflict, HostUnavailable
from app.engine.errors import EngineRejected, EngineUnavailable, ObjectNotFound
from app.engine.live import ContainerStats
from app.engine.protocol import LiveClient
from app.hosts.models import Host
from app.hosts.service import tls_material
from app.projects import service as projects
from app.projects.access import check_row
from app.projects.schemas import ProjectQuery
from app.security.roles import ProjectRole

router = APIRouter(prefix=f"{API_PREFIX}/containers", tags=["containers"])


def _located(response: Response, body: ContainerAccepted) -> ContainerAccepted:
    response.headers["Location"] = f"{API_PREFIX}/operations/{body.operation.id}"
    return body


@router.post(
    "",
    status_code=202,
    summary="Create (and start) a container; without host_id the scheduler picks a host",
)
def create_container(
    data: ContainerCreate,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
) -> ContainerAccepted:
    with context.db.session() as session:
        project = projects.target(
            session, principal, name=data.project, needed=ProjectRole.operator
        )
        body = service.create_and_queue(
            session,
            data=data,
            settings=context.settings,
            created_by=principal.actor,
            project_id=project.id,
        )
        set_audit_resource(request, f"containers/{body.container.id}")
    return _located(response, body)


@router.get(
    "",
    summary="List containers (served from the database, kept in sync with the hosts)",
    response_model=Page[ContainerRead],
)
def list_containers(
    context: Ctx,
    principal: Viewer,
    limit: Limit = 50,
    cursor: Cursor = None,
    host_id: Annotated[str | None, Query(max_length=26)] = None,
    service_id: Annotated[str | None, Query(max_length=26)] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
    label: Annotated[
        str | None,
        Query(
            max_length=300,
            pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,62}(=.*)?$",
            description="`key` or `key=value`",
        ),
    ] = None,
    project: ProjectQuery = None,
) -> Response:
    with context.db.session(write=False) as session:
        readable = projects.list_filter(session, principal, name=project)
        rows, next_cursor = service.get_all(
            session,
            limit=limit,
            cursor=cursor,
            host_id=host_id,
            service_id=service_id,
            state=state,
            label=label,
            projects=readable,
        )
    # Serialised in one pass: per-row models cost more than the query on this, the hottest read.
    body = {"items": [service.read_dict(row) for row in rows], "next_cursor": next_cursor}
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


@router.get("/{container_id}", summary="Get a container", openapi_extra=versioned(sends_etag=True))
def get_container(
    container_id: str, response: Response, context: Ctx, principal: Viewer
) -> ContainerRead:
    with context.db.session(write=False) as session:
        _may(session, principal, container_id, ProjectRole.viewer)
        read = service.to_read(service.get(session, container_id=container_id))
    response.headers["ETag"] = f'"{read.version}"'
    return read


def _may(session: Session, principal: Principal, container_id: str, needed: ProjectRole) -> None:
    """The role the route needs, in the container's project (app/projects/access.py)."""
    check_row(session, principal, Container, container_id, needed, what="container")


def _act(
    context: AppContext,
    request: Request,
    response: Response,
    principal: Principal,
    container_id: str,
    *,
    kind: str,
    desired: str | None,
    params: dict[str, object] | None = None,
) -> ContainerAccepted:
    set_audit_resource(request, f"containers/{container_id}")
    with context.db.session() as session:
        _may(session, principal, container_id, ProjectRole.operator)
        body = service.act(
            session,
            container_id=container_id,
            kind=kind,
            desired=desired,
            params=dict(params or {}),
            check_version=partial(check_if_match, request),
            settings=context.settings,
            created_by=principal.actor,
        )
    return _located(response, body)


@router.post(
    "/{container_id}/start",
    status_code=202,
    summary="Start a container",
    openapi_extra=versioned(checks_if_match=True),
)
def start_container(
    container_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
) -> ContainerAccepted:
    return _act(
        context,
        request,
        response,
        principal,
        container_id,
        kind="container.start",
        desired="running",
    )


@router.post(
    "/{container_id}/stop",
    status_code=202,
    summary="Stop a container (SIGTERM, then SIGKILL after timeout_s)",
    openapi_extra=versioned(checks_if_match=True),
)
def stop_container(
    container_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    data: StopRequest | None = None,
) -> ContainerAccepted:
    timeout = (data or StopRequest()).timeout_s
    return _act(
        context,
        request,
        response,
        principal,
        container_id,
        kind="container.stop",
        desired="stopped",
        params={"timeout_s": timeout},
    )


@router.post(
    "/{container_id}/restart",
    status_code=202,
    summary="Restart a container",
    openapi_extra=versioned(checks_if_match=True),
)
def restart_container(
    container_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    data: StopRequest | None = None,
) -> ContainerAccepted:
    timeout = (data or StopRequest()).timeout_s
    return _act(
        context,
        request,
        response,
        principal,
        container_id,
        kind="container.restart",
        desired="running",
        params={"timeout_s": timeout},
    )


@router.post(
    "/{container_id}/kill",
    status_code=202,
    summary="Send a signal (default SIGKILL)",
    openapi_extra=versioned(checks_if_match=True),
)
def kill_container(
    container_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    data: KillRequest | None = None,
) -> ContainerAccepted:
    signal = (data or KillRequest()).signal
    return _act(
        context,
        request,
        response,
        principal,
        container_id,
        kind="container.kill",
        desired=None,
        params={"signal": signal},
    )


@router.delete(
    "/{container_id}",
    status_code=202,
    summary="Remove a container (and its anonymous volumes with ?volumes=true)",
    openapi_extra=versioned(checks_if_match=True),
)
def delete_container(
    container_id: str,
    request: Request,
    response: Response,
    context: Ctx,
    principal: ProjectOperator,
    volumes: Annotated[bool, Query(description="Also remove its anonymous volumes")] = False,
) -> ContainerAccepted:
    return _act(
        context,
        request,
        response,
        principal,
        container_id,
        kind="container.delete",
        desired="removed",
        params={"volumes": volumes},
    )


# What the routes that ask the container's engine directly answer besides the usual errors.
_LIVE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "The container does not exist on its host (any more)"},
    503: {"description": "The container's host did not answer"},
}


async def _live(
    context: AppContext, principal: Principal, container_id: str
) -> tuple[LiveClient, str]:
    def load() -> tuple[str, str | None, bool, str]:
        with context.db.session(write=False) as session:
            _may(session, principal, container_id, ProjectRole.viewer)
            container = service.get(session, container_id=container_id)
            host = session.execute(
                select(Host.url, Host.tls_encrypted, Host.insecure).where(
                    Host.id == container.host_id
                )
            ).one()
            if container.docker_id is None or container.state == "missing":
                raise Conflict(
                    f"container {container.name!r} does not exist on its host "
                    f"(state {container.state})"
                )
            return host.url, host.tls_encrypted, host.insecure, container.docker_id

    url, tls_encrypted, insecure, docker_id = await run_in_threadpool(load)
    tls = tls_material(context.cipher, tls_encrypted)
    live = context.engine_factory.live(url, tls=tls, insecure=insecure)
    return live, docker_id


@router.get(
    "/{container_id}/logs",
    summary="Stream the container's output (text/plain); follow=true keeps streaming",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}, **_LIVE_ERRORS},
    operation_id="getContainerLogs",
)
async def container_logs(
    container_id: str,
    request: Request,
    context: Ctx,
    principal: Viewer,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = 100,
    since: datetime | None = None,
    follow: bool = False,
    timestamps: bool = False,
) -> StreamingResponse:
    engine, docker_id = await _live(context, principal, container_id)
    stream: AsyncGenerator[bytes, None] = engine.logs(
        docker_id, tail=tail, since=since, follow=follow, timestamps=timestamps
    )
    # A followed log outlives no revocation: the token is asked again every second, even
    # while the container prints nothing (and before its first line).
    guarded = while_valid(request, stream)
    try:
        first = await anext(guarded, None)
    except ObjectNotFound as exc:
        await engine.aclose()
        raise Conflict("the container is gone from its host") from exc
    except EngineRejected as exc:  # e.g. dead, or being removed: the engine keeps no output
        await engine.aclose()
        raise Conflict(str(exc)) from exc
    except EngineUnavailable as exc:
        await engine.aclose()
        raise HostUnavailable(f"the container's host did not answer: {exc}") from exc

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
            async for chunk in guarded:
                yield chunk
        finally:
            await guarded.aclose()
            await stream.aclose()
            await engine.aclose()

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")


@router.get(
    "/{container_id}/stats",
    summary="One sample of CPU, memory, network and block I/O",
    responses=_LIVE_ERRORS,
    operation_id="getContainerStats",
)
async def container_stats(container_id: str, context: Ctx, principal: Viewer) -> ContainerStats:
    engine, docker_id = await _live(context, principal, container_id)
    try:
        sample = await engine.stats(docker_id)
    except ObjectNotFound as exc:
        raise Conflict("the container is gone from its host") from exc
    except EngineRejected as exc:
        raise Conflict(str(exc)) from exc
    except EngineUnavailable as exc:
        raise HostUnavailable(f"the container's host did not answer: {exc}") from exc
    finally:
        await engine.aclose()
    return sample
