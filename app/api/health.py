from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.api.deps import Ctx, authenticate, bearer
from app.core.context import AppContext
from app.core.errors import problem

router = APIRouter(tags=["health"])

# How many worker processes heartbeat. The runtime that keeps them sits above api, so
# create_app hands this in (`app.state.workers_alive`).
WorkersAlive = Callable[[AppContext], int]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool
    workers: int


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the database answers and at least one worker heartbeats",
    responses={503: {"description": "Not ready"}},
)
def readyz(request: Request, context: Ctx) -> Response:
    workers_alive: WorkersAlive = request.app.state.workers_alive
    try:
        with context.db.session(write=False) as session:
            session.execute(text("SELECT 1"))
        workers = workers_alive(context)
    except Exception as exc:
        return problem(503, f"database unavailable: {type(exc).__name__}")
    if workers == 0:
        return problem(503, "no worker process is running operations")
    body = Readiness(status="ready", database=True, workers=workers)
    return Response(body.model_dump_json(), media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"description": "No valid token, with BERTH_METRICS_REQUIRE_TOKEN=true"},
    },
)
async def metrics(request: Request, context: Ctx) -> Response:
    if context.settings.metrics_require_token:
        # Any valid token (viewer and up) may scrape.
        credentials = await bearer(request)
        await authenticate(request, context, credentials)
    payload = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
