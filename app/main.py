"""The FastAPI application: routers, middleware, one error handler, and a lifespan that runs
the start-up chores and (unless told otherwise) the workers and loops of this process."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from app.api import openapi
from app.api.auth_limit import FailedAuthLimiter
from app.api.deps import TokenStore
from app.api.docs import router as docs_router
from app.api.gate import ChangeGate
from app.api.health import WorkersAlive
from app.api.health import router as health_router
from app.api.middleware.body_limit import BodyLimitMiddleware
from app.api.middleware.conditional import ConditionalGetMiddleware
from app.api.middleware.idempotency import IdempotencyMiddleware
from app.api.middleware.request_context import RequestContextMiddleware
from app.audit import service as audit
from app.audit.router import router as audit_router
from app.changes.gate import ChangeHold
from app.changes.router import router as changes_router
from app.containers.router import router as containers_router
from app.core.config import Settings, get_settings
from app.core.context import AppContext
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.metrics import Metrics
from app.debug.router import router as debug_router
from app.engine.protocol import EngineFactory
from app.events.router import router as events_router
from app.events.stream import EventHub
from app.hosts.metrics import figures as host_figures
from app.hosts.router import router as hosts_router
from app.images.check_metrics import figures as image_check_figures
from app.images.router import BUILD_PATH
from app.images.router import router as images_router
from app.operations.metrics import figures as operation_figures
from app.operations.router import router as operations_router
from app.projects.router import router as projects_router
from app.registries.router import router as registries_router
from app.runtime import background_services, prepare, workers_alive
from app.secrets.router import router as secrets_router
from app.services.router import router as services_router
from app.services.secrets_router import router as secret_usage_router
from app.stacks.router import STACKS_PATH
from app.stacks.router import router as stacks_router
from app.tokens import service as tokens
from app.tokens.router import router as tokens_router
from app.workers.loops import running
from app.workers.wakeups import Relay

API_DESCRIPTION = """
Berth manages images, containers and services across many Docker hosts.

Every change on a host is an **operation**: the call stores the intent and answers `202` with
`Location: /api/v1/operations/{id}`; workers carry it out durably (a crash loses nothing).
Errors are RFC 9457 `application/problem+json`. Lists are cursor-paginated. Every resource has a
`version` (sent as `ETag`; honour it with `If-Match`). `POST` honours `Idempotency-Key`.
Lists (and gets without a `version`) carry a weak `ETag` over their content: send it back in
`If-None-Match` and an unchanged answer is `304 Not Modified`, with no body.
"""


def create_api_process() -> FastAPI:
    """The app of one of `berth serve --workers N`'s API processes (uvicorn imports it by name in
    each process it spawns): the API alone, its background loops run in the supervising process."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings, run_workers=False, own_process=True)


def create_app(
    settings: Settings | None = None,
    *,
    run_workers: bool = True,
    engine_factory: EngineFactory | None = None,
    own_process: bool = False,
) -> FastAPI:
    """The app. `own_process`: it is the process's only app (`berth serve`), which may tune the
    process's garbage collector; a test's apps share the test process."""
    settings = settings or get_settings()
    # A simulated engine (a test, a bench) plugs in here; the default builds docker-SDK clients.
    context = AppContext(settings, engine_factory=engine_factory)
    metrics = Metrics()
    metrics.add_database_figures(context.db, operation_figures)
    metrics.add_database_figures(context.db, host_figures)
    metrics.add_database_figures(context.db, image_check_figures)
    events = EventHub(context.db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The pool that runs blocking handlers: a few threads serve more requests a second,
        # and with less latency, than anyio's 40 contending for one interpreter lock.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        await run_in_threadpool(prepare, context)
        await events.start()
        services = (
            background_services(context, kind="serve") if run_workers else [Relay(context.db)]
        )
        with running(services):
            if own_process:
                # What startup built lives as long as the process: out of the collector's
                # full passes, which walked all of it and were the API's slowest requests
                # (2 processes under wrk: p99 72 -> 18 ms, 1,302 -> 1,536 req/s).
                gc.collect()
                gc.freeze()
            yield
        await events.close()
        context.close()

    app = FastAPI(
        title="Berth",
        version="1.0.0",
        summary="A control plane for fleets of Docker hosts",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # Berth's own pages replace FastAPI's, which load their scripts from a public CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
        # One schema per model, as it is sent (`spec.secrets` also takes a name alone): client
        # generators name models by title, and an -Input and -Output pair share one.
        separate_input_output_schemas=False,
        # Berth reports through its Prometheus metrics and JSON logs. FastAPI's own OpenTelemetry
        # looked up the global providers (and the environment) on every request to find none.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.context = context
    app.state.metrics = metrics
    app.state.events = events
    # What the api layer needs from the layers above it, handed in rather than imported
    # (annotated so that mypy checks they fit).
    token_store: TokenStore = tokens
    alive: WorkersAlive = workers_alive
    gate: ChangeGate = ChangeHold(context)
    app.state.tokens = token_store
    app.state.changes = gate
    app.state.auth_failures = FailedAuthLimiter(
        limit=settings.auth_failure_limit, window_seconds=settings.auth_failure_window_seconds
    )
    app.state.workers_alive = alive
    install_error_handlers(app)

    # Each router carries its full /api/v1/... prefix, so a route's path is its whole template
    # (used as the metrics label and in the audit trail).
    routers = [
        hosts_router,
        operations_router,
        registries_router,
        images_router,
        containers_router,
        services_router,
        secrets_router,
        secret_usage_router,
        stacks_router,
        changes_router,
        events_router,
        tokens_router,
        projects_router,
        audit_router,
        health_router,
        docs_router,
    ]
    if settings.enable_debug_operations:
        routers.append(debug_router)
    for router in routers:
        app.include_router(router)
    openapi.install(app, [route for router in routers for route in router.routes])

    # Added last = outermost: request ids and the audit see everything, including 413s.
    app.add_middleware(ConditionalGetMiddleware)
    app.add_middleware(IdempotencyMiddleware, context=context)
    # Multipart framing adds a little to the context itself.
    upload = settings.max_build_context_bytes + 64 * 1024
    uploads = {BUILD_PATH: upload, STACKS_PATH: upload}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, uploads=uploads)
    app.add_middleware(
        RequestContextMiddleware, context=context, metrics=metrics, audit=audit.append_request
    )
    return app
