"""What the server's own commands do (registered by app.cli.server). This module imports the
server (database, migrations, the app), so only those commands load it."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from app.core.config import get_settings
from app.core.db import Database
from app.core.migrate import upgrade
from app.security.roles import Role

log = logging.getLogger("berth.cli")


def _migrate(database_url: str) -> None:
    database = Database(database_url)
    try:
        upgrade(database)
    finally:
        database.dispose()


def cmd_migrate(_args: argparse.Namespace) -> int:
    _migrate(get_settings().database_url)
    log.info("database at the newest schema")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.http_protocol import LimitedHttpToolsProtocol
    from app.main import create_app

    settings = get_settings()
    _migrate(settings.database_url)
    if args.workers > 1:
        return _serve_processes(args)
    app = create_app(settings, run_workers=not args.no_workers, own_process=True)
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=15,
        http=LimitedHttpToolsProtocol.limited(
            max_head_bytes=settings.max_header_bytes,
            head_timeout=settings.header_timeout_seconds,
        ),
    )
    return 0


def _serve_processes(args: argparse.Namespace) -> int:
    """`serve --workers N`: N API processes that accept from one listening socket (uvicorn's
    workers; it restarts one that dies) and, here in their supervisor, the background loops and
    the operation executor once, as a `berth worker` would (none with --no-workers)."""
    import uvicorn

    from app.core.context import AppContext
    from app.runtime import background_services, prepare
    from app.workers.loops import Service, running

    settings = get_settings()
    context = AppContext(settings)
    services: list[Service] = []
    if not args.no_workers:
        prepare(context)
        services = background_services(context, kind="serve")
    with running(services):
        uvicorn.run(
            "app.main:create_api_process",
            factory=True,
            workers=args.workers,
            # A process spawned on a busy machine can take longer than uvicorn's 5 s to start
            # answering its supervisor's pings; killed for that, its replacement would be too.
            timeout_worker_healthcheck=30,
            host=args.host or settings.host,
            port=args.port or settings.port,
            log_config=None,
            proxy_headers=False,
            timeout_graceful_shutdown=15,
            http="app.api.http_protocol:SettingsLimitedHttpToolsProtocol",
        )
    context.close()
    return 0


def cmd_worker(_args: argparse.Namespace) -> int:
    from app.core.context import AppContext
    from app.runtime import background_services, prepare
    from app.workers.loops import running

    settings = get_settings()
    _migrate(settings.database_url)
    context = AppContext(settings)
    prepare(context)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with running(background_services(context, kind="worker")):
        log.info("worker running; SIGTERM or Ctrl-C stops it")
        stop.wait()
    context.close()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from app.tokens import service

    settings = get_settings()
    _migrate(settings.database_url)
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            token, secret = service.create(
                session, name=args.name, role=Role(args.role), created_by="berth token create"
            )
            token_id = token.id
    finally:
        database.dispose()
    # The secret goes to stdout alone, so `TOKEN=$(berth token create ...)` works.
    print(secret)
    log.info("token created", extra={"token_id": token_id, "role": args.role})
    return 0
