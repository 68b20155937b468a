"""Operation kinds for containers. Every one is idempotent: the Docker container carries
`berth.container=<id>`, so a retry finds what an earlier attempt made instead of making more."""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update

from app.containers import network_lock, policy, project_files
from app.containers.engine_config import create_body, labels_for, not_newer_than, observed
from app.containers.models import Container
from app.containers.schemas import ContainerSpec
from app.core.db import utcnow
from app.core.errors import PolicyViolation
from app.engine.errors import EngineError, EngineRejected, ObjectNotFound
from app.engine.protocol import Engine
from app.events import recorder as events
from app.hosts import service as hosts
from app.hosts.models import Host
from app.images.handlers import pull_image
from app.images.reference import parse_reference
from app.operations.context import OperationContext, PermanentError, TransientError
from app.operations.models import OperationLog
from app.operations.registry import handler
from app.projects.models import Project
from app.secrets import service as secrets
from app.secrets.schemas import SecretReference
from app.security.roles import DEFAULT_PROJECT_ID
from app.workers import wakeups


@dataclass(frozen=True)
class _Intent:
    """What a create needs from the database, read at once."""

    spec: ContainerSpec
    name: str
    # The labels that tie a service's replica to its service.
    service_labels: dict[str, str]
    desired: str
    project_id: str
    # The policy rules the container's project may break.
    relaxations: list[str]
    # The host's address and credentials, for its engine client (None: no such host).
    host: Row[Any] | None


def _intent(ctx: OperationContext) -> _Intent:
    """One query: the container, its project's relaxations and its host's address."""
    with ctx.app.db.session(write=False) as session:
        row = session.execute(
            select(
                Container.spec,
                Container.name,
                Container.service_id,
                Container.slot,
                Container.revision,
                Container.desired_state,
                Container.project_id,
                Project.relaxations,
                Host.url,
                Host.tls_encrypted,
                Host.insecure,
            )
            .outerjoin(Project, Project.id == Container.project_id)
            .outerjoin(Host, Host.id == ctx.claim.host_id)
            .where(Container.id == ctx.claim.target_id)
        ).one_or_none()
    if row is None:
        raise PermanentError(f"container {ctx.claim.target_id} no longer exists in Berth")
    extra = {}
    if row.service_id is not None:
        extra = {
            "berth.service": row.service_id,
            "berth.slot": str(row.slot),
            "berth.revision": str(row.revision),
        }
    return _Intent(
        spec=ContainerSpec.model_validate(row.spec),
        name=row.name,
        service_labels=extra,
        desired=row.desired_state,
        project_id=row.project_id if row.relaxations is not None else DEFAULT_PROJECT_ID,
        relaxations=list(row.relaxations or []),
        host=row if row.url is not None else None,
    )


def _engine(ctx: OperationContext, intent: _Intent) -> Engine:
    """The host's engine client from the address `_intent` read, without reading it again."""
    if intent.host is None or ctx.claim.host_id is None:
        return ctx.engine()  # no such host: its usual error
    host = intent.host
    return hosts.engine_from(
        ctx.app, ctx.claim.host_id, host.url, host.tls_encrypted, insecure=host.insecure
    )


def find(engine: Engine, container_id: str) -> str | None:
    """The Docker id of the container Berth made for `container_id`, if it exists."""
    found = engine.list_containers(labels={"berth.container": container_id})
    return str(found[0]["Id"]) if found else None


# What `record` stores: an engine's reading of the container (`observed`'s keys).
_READING = ("docker_id", "state", "health", "exit_code")
# The ones the event stream carries (the container's tracked fields, in models.py).
_TRACKED = ("state", "health", "exit_code")


def record(
    ctx: OperationContext,
    engine: Engine,
    docker_id: str | None,
    *,
    note: tuple[datetime, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Store what the engine says about the container now; returns it for the result.

    Unless the event follower has already stored a later reading of the same container.
    `note` is a log line (when it happened, what) written in the same transaction: one write
    fewer per operation than a log line of its own.
    """
    state: dict[str, Any] = {
        "docker_id": None,
        "state": "missing",
        "health": None,
        "exit_code": None,
    }
    read_at = utcnow()
    if docker_id is not None:
        with contextlib.suppress(ObjectNotFound):
            state = observed(engine.inspect_container(docker_id))
    # One round trip reads what the write depends on, with the lease check; the write is one
    # UPDATE by id, in Core (the ORM would load the whole row, its spec decoded, to change four
    # columns), so the event the ORM would record for it is emitted here.
    current = select(
        Container.service_id,
        Container.project_id,
        Container.version,
        *(getattr(Container, key) for key in _READING),
        (not_newer_than(read_at) | Container.docker_id.is_distinct_from(docker_id)).label("older"),
    ).where(Container.id == ctx.claim.target_id)
    with ctx.session_locking(current) as (session, row):
        if row is None:
            raise PermanentError(f"container {ctx.claim.target_id} no longer exists in Berth")
        values = dict(extra)
        changed: dict[str, Any] = {}
        if row.older:
            changed = {key: value for key, value in state.items() if row._mapping[key] != value}
            values.update(state, observed_at=read_at)
        connection = session.connection()
        if values:
            connection.execute(
                update(Container).where(Container.id == ctx.claim.target_id).values(**values)
            )
        tracked = {key: changed[key] for key in _TRACKED if key in changed}
        if tracked:
            event = events.row(
                "container.updated",
                "container",
                str(ctx.claim.target_id),
                {**tracked, "version": row.version},
            )
            events.emit(session, [{**event, "project_id": row.project_id}])
        if note is not None:
            at, message = note
            connection.execute(
                insert(OperationLog).values(
                    operation_id=ctx.id, attempt=ctx.attempt, at=at, message=message
                )
            )
        service_id = row.service_id
    if service_id is not None and changed:
        # The service's status follows its replicas: its reconciler looks now, not at its next
        # periodic pass. The follower's reading of the same change wakes it only when it lands
        # first; after this one it is older, so it is skipped without a wake-up.
        wakeups.notify(wakeups.SERVICES, [service_id])
    return state


def _create_once(ctx: OperationContext, engine: Engine, intent: _Intent) -> tuple[str, bool]:
    """Create the container, or find the one an earlier attempt made: (docker id, fresh).

    The name is unique per host, so a create that an earlier attempt already did fails with a
    name conflict, and the label finds that container; no lookup is needed on the fast path.
    """
    spec = intent.spec
    container_id = str(ctx.claim.target_id)
    berth_labels = {"berth.managed": "true"}
    for volume in spec.volumes:
        # A project volume is made by the one that fills it (below): empty, it would pass
        # for a filled one.
        if volume.is_bind or volume.content is not None:
            continue
        if engine.ensure_volume(volume.source, berth_labels):
            ctx.log(f"created volume {volume.source}")
    # A volume needs no lock: the engine creates a name once and hands it to later creators.
    for network in spec.networks:
        with network_lock.creating(ctx.app.db, host_id=str(ctx.claim.host_id), name=network):
            if engine.ensure_network(network, berth_labels):
                ctx.log(f"created network {network}")
    labels = labels_for(container_id, ctx.id, spec, intent.service_labels)
    secret_values = _secret_values(ctx, spec, intent.project_id)

    def create(container_name: str, body: dict[str, Any]) -> str:
        return _create_pulling(ctx, engine, spec, container_name, body)

    try:
        if spec.pull_policy == "always":
            pull_image(
                ctx, engine, parse_reference(spec.image), spec.registry_id, platform=spec.platform
            )
        files = project_files.prepared(ctx, engine, spec, create)
        body = create_body(spec, labels=labels, image=spec.image, project_files=files)
        body["Env"] += [
            f"{ref.env}={secret_values[ref.name]}" for ref in spec.secrets if ref.env is not None
        ]
        docker_id = create(intent.name, body)
    except EngineError as exc:
        if exc.transient:
            raise
        earlier = find(engine, container_id)
        if earlier is not None:
            ctx.log(f"found container {earlier[:12]} from an earlier attempt")
            return earlier, False
        raise PermanentError(f"the engine refused to create the container: {exc}") from exc
    for network in spec.networks[1:]:
        engine.connect_network(network, docker_id, spec.network_aliases)
    _deliver_secret_files(ctx, engine, docker_id, spec, secret_values)
    return docker_id, True


def _create_pulling(
    ctx: OperationContext, engine: Engine, spec: ContainerSpec, name: str, body: dict[str, Any]
) -> str:
    """Create a container from the spec's image; when the host lacks the image, pull it (with
    the registry's credentials) once, unless its pull_policy is never."""
    try:
        return engine.create_container_raw(name, body, platform=spec.platform)
    except ObjectNotFound:
        if spec.pull_policy == "never":
            raise PermanentError(
                f"the image {spec.image} is not on the host, and pull_policy is never"
            ) from None
        reference = parse_reference(spec.image)
        pull_image(ctx, engine, reference, spec.registry_id, platform=spec.platform)
        return engine.create_container_raw(name, body, platform=spec.platform)


def _deliver_secret_files(
    ctx: OperationContext,
    engine: Engine,
    docker_id: str,
    spec: ContainerSpec,
    values: dict[str, str],
) -> None:
    files = [ref for ref in spec.secrets if ref.env is None]
    if files:
        # Into the container's own filesystem before it starts: the value is never in its
        # environment, its config or the image. Only the worker ever holds it in plain text.
        engine.put_archive(docker_id, "/", secret_files(files, values))
        ctx.log(f"delivered {len(files)} secret file(s)")


def _secret_values(ctx: OperationContext, spec: ContainerSpec, project_id: str) -> dict[str, str]:
    if not spec.secrets:
        return {}
    with ctx.app.db.session(write=False) as session:
        # Its own project's secrets only, whatever another project names the same.
        found = secrets.values(
            session, ctx.app.cipher, (ref.name for ref in spec.secrets), project_id=project_id
        )
    missing = sorted({ref.name for ref in spec.secrets} - set(found))
    if missing:
        raise PermanentError(f"secret(s) {', '.join(missing)} no longer exist")
    return found


def secret_files(refs: list[SecretReference], values: dict[str, str]) -> bytes:
    """A tar of the secret files, with their owners and modes (parents made by the engine)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for ref in refs:
            content = values[ref.name].encode()
            member = tarfile.TarInfo(ref.path.lstrip("/"))
            member.size = len(content)
            member.mode = ref.mode
            member.uid, member.gid = ref.uid, ref.gid
            member.mtime = int(time.time())
            archive.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


@handler("container.create")
def create(ctx: OperationContext) -> dict[str, Any]:
    try:
        return _create(ctx)
    except (PermanentError, TransientError, EngineError) as exc:
        # Why the container is not running, on the container: a service reports its replicas'
        # last error, and a replica whose create ended with one is replaced.
        with ctx.session() as session:
            container = session.get(Container, ctx.claim.target_id, with_for_update=True)
            if container is not None and container.error != str(exc):
                container.error = str(exc)
        raise


def _create(ctx: OperationContext) -> dict[str, Any]:
    intent = _intent(ctx)
    spec = intent.spec
    try:
        # Again here: a spec stored before a rule existed (a service's revision) is no way in.
        policy.check_container(spec, ctx.app.settings, relaxed=intent.relaxations)
    except PolicyViolation as exc:
        raise PermanentError(exc.detail) from exc
    engine = _engine(ctx, intent)
    docker_id, fresh = _create_once(ctx, engine, intent)
    running = not fresh and engine.inspect_container(docker_id)["State"].get("Status") == "running"
    if not fresh and not running:
        # An earlier attempt may have stopped between the create and the secret files.
        values = _secret_values(ctx, spec, intent.project_id)
        _deliver_secret_files(ctx, engine, docker_id, spec, values)
    started = intent.desired == "running"
    if started and not running:
        _start(ctx, engine, docker_id)
    note = f"container {docker_id[:12]} is {intent.name}" + (" (started)" if started else "")
    return record(ctx, engine, docker_id, note=(utcnow(), note), error=None)


def _start(ctx: OperationContext, engine: Engine, docker_id: str) -> None:
    try:
        engine.start_container(docker_id)
    except EngineError as exc:
        if exc.transient:
            raise
        message = f"the container failed to start: {exc}"
        record(ctx, engine, docker_id, error=message)
        raise PermanentError(message) from exc


def _existing(ctx: OperationContext, engine: Engine) -> str:
    docker_id = find(engine, str(ctx.claim.target_id))
    if docker_id is None:
        record(ctx, engine, None)
        raise PermanentError("the container is missing on its host (removed outside Berth?)")
    return docker_id


@handler("container.start")
def start(ctx: OperationContext) -> dict[str, Any]:
    engine = ctx.engine()
    docker_id = _existing(ctx, engine)
    if engine.inspect_container(docker_id)["State"].get("Status") != "running":
        _start(ctx, engine, docker_id)
    return record(ctx, engine, docker_id, error=None)


@handler("container.stop")
def stop(ctx: OperationContext) -> dict[str, Any]:
    engine = ctx.engine()
    docker_id = _existing(ctx, engine)
    engine.stop_container(docker_id, timeout=int(ctx.params.get("timeout_s", 10)))
    ctx.log("stopped")
    return record(ctx, engine, docker_id)


@handler("container.restart")
def restart(ctx: OperationContext) -> dict[str, Any]:
    engine = ctx.engine()
    docker_id = _existing(ctx, engine)
    engine.restart_container(docker_id, timeout=int(ctx.params.get("timeout_s", 10)))
    ctx.log("restarted")
    return record(ctx, engine, docker_id, error=None)


@handler("container.kill")
def kill(ctx: OperationContext) -> dict[str, Any]:
    engine = ctx.engine()
    docker_id = _existing(ctx, engine)
    signal = str(ctx.params.get("signal", "SIGKILL"))
    try:
        engine.kill_container(docker_id, signal=signal)
    except EngineError as exc:
        if exc.transient:
            raise
        # Killing a container that is not running is done already.
        if "is not running" not in str(exc):
            raise PermanentError(str(exc)) from exc
    ctx.log(f"sent {signal}")
    return record(ctx, engine, docker_id)


@handler("container.delete")
def delete(ctx: OperationContext) -> dict[str, Any]:
    engine = ctx.engine()
    docker_id = find(engine, str(ctx.claim.target_id))
    if docker_id is not None:
        try:
            engine.remove_container(docker_id, force=True, volumes=bool(ctx.params.get("volumes")))
        except EngineRejected as exc:
            # Someone else is removing it right now: that is the outcome asked for; look again.
            if "already in progress" not in str(exc):
                raise PermanentError(f"the engine refused to remove the container: {exc}") from exc
            raise TransientError("the engine is already removing the container") from exc
        ctx.log(f"removed container {docker_id[:12]}")
    with ctx.session() as session:
        container = session.get(Container, ctx.claim.target_id)
        if container is not None:
            session.delete(container)
    return {"docker_id": docker_id, "removed": True}
