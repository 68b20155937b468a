"""Stacks: a Compose file becomes a plan (one service spec per Compose service, the images to
build, the networks and volumes), checked in full before anything is stored."""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api.deps import VersionCheck
from app.api.pagination import Page, paginate
from app.containers import scheduler
from app.containers.models import Container
from app.core.config import Settings
from app.core.db import new_id, utcnow
from app.core.errors import Conflict, Invalid, file_path
from app.core.lookup import get_or_404
from app.hosts.models import Host
from app.images.build_context import InvalidContext, inspect_upload
from app.images.models import Blob
from app.images.reference import (
    LOCAL_BUILD_REGISTRY,
    InvalidReference,
    dockerfile_images,
    parse_reference,
)
from app.images.service import enforce_registry_policy, store_context
from app.operations import queue
from app.operations.service import to_read as operation_to_read
from app.projects.access import narrow
from app.projects.quotas import Usage, replicas_usage
from app.secrets import service as secrets
from app.secrets.models import Secret
from app.security.crypto import Cipher
from app.security.roles import DEFAULT_PROJECT_ID
from app.services import service as services
from app.services.models import Service, ServiceStatus
from app.services.schemas import ServiceSpec
from app.stacks import compose, releases
from app.stacks.models import Stack
from app.stacks.project import InvalidProject, Project, open_project
from app.stacks.schemas import (
    PlannedService,
    StackAccepted,
    StackCreate,
    StackDryRun,
    StackRead,
    StackServiceRef,
    StackUpdate,
)


@dataclass(frozen=True)
class Build:
    """An image to build from an uploaded context before the service that runs it starts."""

    compose_name: str
    tag: str
    context: bytes
    dockerfile: str
    args: dict[str, str]
    options: dict[str, Any]  # BuildSpec.options(): target, labels, cache_from


def context_field(compose_name: str) -> str:
    """The multipart field that carries a service's build context."""
    return f"context.{compose_name}"


def _invalid(errors: list[dict[str, str]], warnings: Sequence[str] = ()) -> Invalid:
    return _warned(Invalid.listing("invalid Compose file", errors), warnings)


def _warned(invalid: Invalid, warnings: Sequence[str]) -> Invalid:
    """The 422 with the warnings found before it: an unset variable taken as empty is often
    why a value is refused."""
    if warnings:
        invalid.detail += f" (warnings: {'; '.join(warnings[:5])})"
    return invalid


def _spec(
    session: Session,
    settings: Settings,
    name: str,
    raw: dict[str, Any],
    *,
    provided: Collection[str] = (),
    project_id: str,
) -> ServiceSpec:
    """The Compose service as a Berth service spec, under every rule a service obeys, with
    errors located in the Compose file. The secrets in `provided` are the stack's own (from
    its project's files): they are stored with the stack, so they need not exist yet."""
    where = f"compose.services.{name}"
    try:
        spec = ServiceSpec.model_validate(raw)
    except ValidationError as exc:
        raise Invalid.from_model(
            exc, prefix=where, title="invalid Compose file", path=file_path
        ) from exc
    own = [ref for ref in spec.secrets if ref.name in provided]
    try:
        services.validate(
            session,
            spec.model_copy(update={"secrets": [r for r in spec.secrets if r not in own]}),
            settings,
            project_id=project_id,
            quota=False,  # the stack's services are counted together (plan)
        )
    except Invalid as exc:
        errors = [
            {
                # A service's rules name `body.volumes.0.source`; the file says `volumes[0].source`.
                "loc": where
                + file_path(
                    [
                        int(p) if p.isdigit() else p
                        for p in str(e["loc"]).removeprefix("body.").split(".")
                    ]
                ),
                "msg": str(e["msg"]),
            }
            for e in exc.errors or []
        ] or [{"loc": where, "msg": exc.detail}]
        raise _invalid(errors) from exc
    return spec


def _build(
    name: str, stack: str, build: compose.BuildSpec, data: bytes | None, settings: Settings
) -> Build:
    where = f"compose.services.{name}.build"
    if data is None:
        raise _invalid(
            [
                {
                    "loc": where,
                    "msg": f"upload the build context ({build.context}) as a tar or tar.gz in "
                    f"the multipart field {context_field(name)!r}",
                }
            ]
        )
    try:
        inspected = inspect_upload(
            io.BytesIO(data), dockerfile_path=build.dockerfile, settings=settings
        )
        bases = dockerfile_images(inspected.dockerfile, build.args)
    except (InvalidContext, InvalidReference) as exc:
        raise _invalid([{"loc": where, "msg": str(exc)}]) from exc
    for base in bases:
        enforce_registry_policy(base, settings, field=where, action="building FROM")
    for index, cache in enumerate(build.cache_from):
        try:
            reference = parse_reference(cache)
        except InvalidReference as exc:
            raise _invalid([{"loc": f"{where}.cache_from[{index}]", "msg": str(exc)}]) from exc
        enforce_registry_policy(reference, settings, field=where, action="caching from")
    options = build.options()
    digest = hashlib.sha256(data)
    digest.update(repr((build.dockerfile, sorted(build.args.items()))).encode())
    if options:  # only when set: an unchanged file keeps the tag it was built with before
        digest.update(json.dumps(options, sort_keys=True).encode())
    # The tag names the content: an unchanged context is an unchanged spec (nothing rolls).
    tag = f"{LOCAL_BUILD_REGISTRY}/{stack}/{name.lower()}:{digest.hexdigest()[:16]}"
    return Build(name, tag, data, build.dockerfile, build.args, options)


def parse(
    stack_name: str, data: StackUpdate, settings: Settings, project: Project | None = None
) -> compose.ComposeProject:
    """The Compose file (given, or the project's) as a project; a 422 locating every problem
    in the file. Variables given in the request win over the project's `.env`, as the shell's
    win in Compose."""
    text = project.compose if project is not None else data.compose
    if text is None:
        raise Invalid(
            "body.compose: give the Compose file, or the project directory as `project`",
            errors=[{"loc": "body.compose", "msg": "missing"}],
        )
    try:
        return compose.parse(
            text,
            project=stack_name,
            variables=data.variables if project is None else project.dotenv() | data.variables,
            env_files=data.env_files
            if project is None
            else project.files.with_given(data.env_files),
            max_bytes=settings.max_compose_bytes,
            strict=data.strict,
            files=project.files if project is not None else None,
            folder=project.folder if project is not None else "",
            profiles=data.profiles,
            contents=project.content if project is not None else None,
        )
    except compose.ComposeError as exc:
        raise _invalid(exc.errors, exc.warnings) from exc


@dataclass(frozen=True)
class Upload:
    """A stack request's Compose file, parsed, and its uploaded build contexts, scanned: the
    work that reads the request's bytes, done with no session open (on an upload-check thread,
    app.api.uploads)."""

    compose_text: str  # as given, or as found in the project
    project: compose.ComposeProject
    builds: dict[str, Build]  # by Compose service name: the services whose context came


def check_upload(
    *,
    stack_name: str,
    data: StackUpdate,
    contexts: dict[str, bytes],
    project_archive: bytes | None = None,
    settings: Settings,
) -> Upload:
    """The Compose file and every uploaded context checked; a 422 for the first problem. A
    service's build context is its `context.<name>` upload, else its folder in the project."""
    source = None
    if project_archive is not None:
        try:
            source = open_project(project_archive, file=data.file, settings=settings)
        except InvalidProject as exc:
            raise Invalid(
                f"body.project: {exc}", errors=[{"loc": "body.project", "msg": str(exc)}]
            ) from exc
    project = parse(stack_name, data, settings, source)
    building = {s.name: s.build for s in project.services if s.build is not None}
    unknown = set(contexts) - set(building)
    if unknown:
        raise _invalid(
            [
                {"loc": f"body.{context_field(n)}", "msg": "no Compose service builds from it"}
                for n in sorted(unknown)
            ]
        )
    contexts = dict(contexts)
    for name, build in building.items():
        if name in contexts or source is None:
            continue
        folder = source.context(build.context)
        if folder is None:
            raise _invalid(
                [
                    {
                        "loc": f"compose.services.{name}.build",
                        "msg": f"the project has no folder {build.context!r} to build from",
                    }
                ]
            )
        contexts[name] = folder
    builds = {
        name: _build(name, stack_name, build, contexts[name], settings)
        for name, build in building.items()
        if name in contexts
    }
    text = source.compose if source is not None else data.compose
    assert text is not None  # parse refuses a request without one
    return Upload(text, project, builds)


def plan(
    session: Session,
    *,
    stack_name: str,
    stack_id: str | None,
    upload: Upload,
    host: Host,
    settings: Settings,
    project_id: str,
    previous: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Build]]:
    """Check the whole parsed file against Berth's rules and the project's quotas (the stack's
    services together, in place of what they take now); nothing is stored here.

    On an update (`previous` is the stack's current plan), a `build:` service whose context is
    not uploaded again keeps the image built before.
    """
    built_before = {
        item["compose_name"]: item["build"]
        for item in (previous or {}).get("services", [])
        if item.get("build")
    }
    builds: list[Build] = []
    planned = []
    demand = Usage()
    for item in upload.project.services:
        raw = dict(item.spec)
        build = upload.builds.get(item.name)
        kept = built_before.get(item.name)
        if item.build is not None and build is None and kept is not None:
            raw["image"] = kept["tag"]
        elif item.build is not None:
            # Without an upload, _build answers which field to upload the context in.
            build = build or _build(item.name, stack_name, item.build, None, settings)
            builds.append(build)
            raw["image"] = build.tag
        # Compose's default: the old replica stops before the new one starts (both would
        # want the same host ports on the stack's one host).
        raw["update_config"] = {"order": "stop-first", **(raw.get("update_config") or {})}
        placement = dict(raw.get("placement") or {})
        placement["constraints"] = [*placement.get("constraints", []), f"host.id=={host.id}"]
        raw["placement"] = placement
        spec = _spec(
            session,
            settings,
            item.name,
            raw,
            provided=upload.project.stored_secrets,
            project_id=project_id,
        )
        demand = demand + replicas_usage(spec.replicas, spec.resources.model_dump())
        name = compose.berth_service_name(stack_name, item.name)
        taken = session.execute(select(Service.stack_id).where(Service.name == name)).first()
        if taken is not None and (stack_id is None or taken.stack_id != stack_id):
            raise Conflict(
                f"a service named {name!r} exists outside this stack",
                errors=[{"loc": f"compose.services.{item.name}", "msg": "name taken"}],
            )
        planned.append(
            {
                "compose_name": item.name,
                "name": name,
                "spec": spec.model_dump(mode="json"),
                "depends_on": dict(item.depends_on),
                "build": {"tag": raw["image"]} if item.build else None,
            }
        )
    current = (
        session.execute(select(Service.id).where(Service.stack_id == stack_id)).scalars()
        if stack_id is not None
        else ()
    )
    services.check_quota(
        session, project_id=project_id, adding=demand, service_ids=frozenset(current)
    )
    return {
        "services": planned,
        "networks": list(upload.project.networks),
        "volumes": list(upload.project.volumes),
        "content_volumes": list(upload.project.content_volumes),
    }, builds


def prepare(
    session: Session,
    *,
    stack_name: str,
    upload: Upload,
    host_id: str | None,
    settings: Settings,
    project_id: str,
    existing: Stack | None = None,
) -> tuple[Host, dict[str, Any], list[Build]]:
    """Everything a create or an update checks, in the order a user fixes things: the file
    (checked before, in `upload`), then the host, then each service against Berth's rules."""
    host = choose_host(session, host_id, project_id)
    try:
        planned, builds = plan(
            session,
            stack_name=stack_name,
            stack_id=existing.id if existing else None,
            upload=upload,
            host=host,
            settings=settings,
            project_id=project_id,
            previous=existing.plan if existing else None,
        )
    except Invalid as exc:
        _warned(exc, upload.project.warnings)
        raise
    return host, planned, builds


def check_name_free(session: Session, *, name: str) -> None:
    if session.execute(select(Stack.id).where(Stack.name == name)).first():
        raise Conflict(
            f"a stack named {name!r} already exists", errors=[{"loc": "body.name", "msg": "taken"}]
        )


def dry_run(
    session: Session,
    *,
    stack_name: str,
    upload: Upload,
    host_id: str | None,
    settings: Settings,
    project_id: str,
    existing: Stack | None = None,
) -> StackDryRun:
    """What a create (or, with `existing`, an update) would do: every check it makes, nothing
    stored and no engine asked."""
    if existing is None:
        check_name_free(session, name=stack_name)
    elif existing.removing:
        raise Conflict(f"stack {existing.name!r} is being removed")
    host, planned, builds = prepare(
        session,
        stack_name=stack_name,
        upload=upload,
        host_id=host_id,
        settings=settings,
        project_id=project_id,
        existing=existing,
    )
    current = {s.name: s for s in members(session, existing.id)} if existing else {}
    compose_names = {
        p["name"]: p["compose_name"]
        for p in (existing.plan if existing else {}).get("services", [])
    }
    changes: list[PlannedService] = []
    for item in planned["services"]:
        spec = ServiceSpec.model_validate(item["spec"])
        service = current.pop(item["name"], None)
        if service is None:
            action = "create"
        elif spec != services.current_spec(service):
            action = "update"
        else:
            action = "unchanged"
        changes.append(_planned(item["compose_name"], item["name"], spec, host, action, item))
    for service in current.values():
        compose_name = compose_names.get(service.name, service.name)
        spec = services.current_spec(service)
        changes.append(_planned(compose_name, service.name, spec, host, "remove", None))
    return StackDryRun(
        name=stack_name,
        host_id=host.id,
        services=changes,
        builds=[build.compose_name for build in builds],
        networks=planned["networks"],
        volumes=planned["volumes"] + planned["content_volumes"],
        warnings=upload.project.warnings,
    )


def _planned(
    compose_name: str,
    name: str,
    spec: ServiceSpec,
    host: Host,
    action: str,
    item: dict[str, Any] | None,
) -> PlannedService:
    return PlannedService.model_validate(
        {
            "compose_name": compose_name,
            "name": name,
            "image": spec.image,
            "build": bool(item and item.get("build")),
            "replicas": spec.replicas,
            "host_id": host.id,
            "action": action,
        }
    )


def choose_host(session: Session, host_id: str | None, project_id: str) -> Host:
    """The stack's host: the one named, or the ready one with the fewest containers; either
    shared or dedicated to the stack's project."""
    if host_id is not None:
        host = session.get(Host, host_id)
        if host is None:
            raise Invalid(
                f"host_id: no host {host_id!r}",
                errors=[{"loc": "body.host_id", "msg": "no such host"}],
            )
        if not scheduler.may_use(session, host_id=host.id, project_id=project_id):
            why = f"host {host.name!r} is dedicated to other projects"
            raise Invalid(f"host_id: {why}", errors=[{"loc": "body.host_id", "msg": why}])
        return host
    load = (
        select(func.count(Container.id))
        .where(Container.host_id == Host.id)
        .correlate(Host)
        .scalar_subquery()
    )
    host = session.execute(
        select(Host)
        .where(
            Host.status == "ready",
            Host.schedulable.is_(True),
            Host.draining.is_(False),
            scheduler.usable_by(project_id),
        )
        .order_by(load, Host.name)
        .limit(1)
    ).scalar_one_or_none()
    if host is None:
        raise Conflict("no ready, schedulable host to run the stack")
    return host


def get(session: Session, *, stack_id: str, for_update: bool = False) -> Stack:
    return get_or_404(session, Stack, stack_id, what="stack", for_update=for_update)


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    name: str | None = None,
    projects: frozenset[str] | None = None,
) -> tuple[Sequence[Stack], str | None]:
    statement = narrow(select(Stack), Stack.project_id, projects)
    if name is not None:
        statement = statement.where(Stack.name == name)
    return paginate(session, statement, Stack.id, limit=limit, cursor=cursor)


def members(session: Session, stack_id: str, *, for_update: bool = False) -> list[Service]:
    """The stack's services; locked, in id order as every multi-service writer locks, when
    they are to be changed."""
    query = select(Service).where(Service.stack_id == stack_id)
    if for_update:
        query = query.order_by(Service.id).with_for_update()
    else:
        query = query.order_by(Service.name)
    return list(session.execute(query).scalars())


def read(session: Session, *, stack_id: str) -> StackRead:
    return to_read(session, get(session, stack_id=stack_id))


def read_page(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    name: str | None = None,
    projects: frozenset[str] | None = None,
) -> Page[StackRead]:
    rows, next_cursor = get_all(session, limit=limit, cursor=cursor, name=name, projects=projects)
    return Page(items=to_reads(session, rows), next_cursor=next_cursor)


def to_read(session: Session, stack: Stack) -> StackRead:
    return to_reads(session, [stack])[0]


def to_reads(session: Session, stacks: Sequence[Stack]) -> list[StackRead]:
    """The stacks as read, with their services: one query for a whole page, whatever its size."""
    if not stacks:
        return []
    members: dict[str, list[StackServiceRef]] = defaultdict(list)
    compose_names = {
        s.id: {p["name"]: p["compose_name"] for p in s.plan.get("services", [])} for s in stacks
    }
    rows = session.execute(
        select(Service.id, Service.name, Service.status, Service.stack_id)
        .where(Service.stack_id.in_([s.id for s in stacks]))
        .order_by(Service.name)
    )
    for row in rows:
        members[str(row.stack_id)].append(
            StackServiceRef(
                compose_name=compose_names[row.stack_id].get(row.name, row.name),
                service_id=row.id,
                name=row.name,
                status=row.status,
            )
        )
    return [_read(stack, members[stack.id]) for stack in stacks]


def _read(stack: Stack, members: list[StackServiceRef]) -> StackRead:
    return StackRead(
        id=stack.id,
        name=stack.name,
        project=stack.project,
        compose=stack.compose,
        variables=stack.variables,
        host_id=stack.host_id,
        services=[m.service_id for m in members],
        service_details=members,
        networks=stack.plan.get("networks", []),
        volumes=stack.plan.get("volumes", []),
        status=stack.status,
        status_detail=stack.status_detail,
        generation=stack.generation,
        created_at=stack.created_at,
        updated_at=stack.updated_at,
        version=stack.version,
    )


def _queue(
    session: Session,
    stack: Stack,
    *,
    kind: str,
    params: dict[str, Any],
    settings: Settings,
    created_by: str,
) -> StackAccepted:
    """Queue a stack operation on the stack's host; the 202 body that answers with it."""
    operation = queue.enqueue(
        session,
        kind=kind,
        params=params,
        target_type="stack",
        target_id=stack.id,
        host_id=stack.host_id,
        created_by=created_by,
        max_attempts=settings.operation_max_attempts,
        project_id=stack.project_id,
    )
    session.flush()
    return StackAccepted(operation=operation_to_read(operation), stack=to_read(session, stack))


def _store_secrets(
    session: Session,
    plan: dict[str, Any],
    values: Mapping[str, str],
    *,
    previous: dict[str, Any] | None,
    cipher: Cipher,
    created_by: str,
    project_id: str,
) -> None:
    """Store the stack's own secrets in its project (named by their content: one already
    stored is the same value). The plan keeps every generation's names, for a rollback to find
    its secrets, until the stack is removed."""
    stored = set(
        session.execute(select(Secret.name).where(Secret.name.in_(list(values)))).scalars()
    )
    for name, value in values.items():
        if name not in stored:
            secrets.create(
                session,
                name=name,
                value=value,
                cipher=cipher,
                created_by=created_by,
                project_id=project_id,
            )
    plan["stored_secrets"] = list(
        dict.fromkeys([*(previous or {}).get("stored_secrets", []), *values])
    )


def _store_contents(
    session: Session,
    stack: Stack,
    plan: dict[str, Any],
    contents: Mapping[str, bytes],
    *,
    previous: dict[str, Any] | None,
) -> None:
    """Keep the project's files and folders that relative bind mounts name, for the worker
    that fills their volumes (found by sha256). Every generation's are kept, and the plan
    lists every generation's volumes, for a rollback to find them, until the stack is removed."""
    kept = set(
        session.execute(
            select(Blob.sha256).where(Blob.stack_id == stack.id, Blob.sha256.in_(list(contents)))
        ).scalars()
    )
    for sha256, data in contents.items():
        if sha256 not in kept:
            store_context(session, data, stack_id=stack.id)
    plan["content_volumes"] = list(
        dict.fromkeys([*(previous or {}).get("content_volumes", []), *plan["content_volumes"]])
    )


def _with_warnings(accepted: StackAccepted, upload: Upload) -> StackAccepted:
    accepted.warnings = upload.project.warnings
    return accepted


def _queue_deploy(
    session: Session,
    stack: Stack,
    plan: dict[str, Any],
    builds: list[Build],
    *,
    settings: Settings,
    created_by: str,
) -> StackAccepted:
    """Store the builds' contexts and queue them on the stack's host, then the deploy."""
    operations = {}
    for build in builds:
        operations[build.compose_name] = queue.enqueue(
            session,
            kind="image.build",
            params={
                "blob_id": store_context(session, build.context),
                "dockerfile": build.dockerfile,
                "tags": [build.tag],
                "build_args": build.args,
                **build.options,
            },
            target_type="image",
            target_id=build.tag,
            host_id=stack.host_id,
            created_by=created_by,
            max_attempts=settings.operation_max_attempts,
            project_id=stack.project_id,
        )
    for item in plan["services"]:
        if item["compose_name"] in operations:
            item["build"]["operation_id"] = operations[item["compose_name"]].id
    stack.plan = plan
    return _queue(
        session,
        stack,
        kind="stack.deploy",
        params={"generation": stack.generation},
        settings=settings,
        created_by=created_by,
    )


def create(
    session: Session,
    *,
    data: StackCreate,
    upload: Upload,
    settings: Settings,
    cipher: Cipher,
    created_by: str,
    project_id: str = DEFAULT_PROJECT_ID,
) -> StackAccepted:
    """A new stack in the project from a checked Compose file, its own secrets stored, and
    its builds and deploy queued."""
    check_name_free(session, name=data.name)
    host, plan, builds = prepare(
        session,
        stack_name=data.name,
        upload=upload,
        host_id=data.host_id,
        settings=settings,
        project_id=project_id,
    )
    now = utcnow()
    stack = Stack(
        id=new_id(),
        name=data.name,
        project_id=project_id,
        compose=upload.compose_text,
        variables=data.variables,
        host_id=host.id,
        plan={},
        generation=1,
        status="deploying",
        removing=False,
        created_at=now,
        updated_at=now,
        created_by=created_by,
        version=1,
    )
    session.add(stack)
    _store_secrets(
        session,
        plan,
        upload.project.stored_secrets,
        previous=None,
        cipher=cipher,
        created_by=created_by,
        project_id=project_id,
    )
    _store_contents(session, stack, plan, upload.project.contents, previous=None)
    accepted = _queue_deploy(session, stack, plan, builds, settings=settings, created_by=created_by)
    releases.record(session, stack=stack, created_by=created_by)
    return _with_warnings(accepted, upload)


def update(
    session: Session,
    *,
    stack_id: str,
    data: StackUpdate,
    upload: Upload,
    check_version: VersionCheck,
    settings: Settings,
    cipher: Cipher,
    created_by: str,
) -> StackAccepted:
    """The stack's next generation from a new Compose file; only changed services roll."""
    stack = get(session, stack_id=stack_id, for_update=True)
    check_version(stack.version)
    if stack.removing:
        raise Conflict(f"stack {stack.name!r} is being removed")
    _, plan, builds = prepare(
        session,
        stack_name=stack.name,
        upload=upload,
        host_id=stack.host_id,
        settings=settings,
        project_id=stack.project_id,
        existing=stack,
    )
    _store_secrets(
        session,
        plan,
        upload.project.stored_secrets,
        previous=stack.plan,
        cipher=cipher,
        created_by=created_by,
        project_id=stack.project_id,
    )
    _store_contents(session, stack, plan, upload.project.contents, previous=stack.plan)
    stack.compose = upload.compose_text
    stack.variables = data.variables
    _next_generation(stack)
    accepted = _queue_deploy(session, stack, plan, builds, settings=settings, created_by=created_by)
    releases.record(session, stack=stack, created_by=created_by)
    return _with_warnings(accepted, upload)


def _next_generation(stack: Stack) -> None:
    stack.generation += 1
    stack.status, stack.status_detail = "deploying", None
    stack.updated_at = utcnow()
    stack.version += 1


def rollback(
    session: Session,
    *,
    stack_id: str,
    release: int,
    check_version: VersionCheck,
    settings: Settings,
    created_by: str,
) -> StackAccepted:
    """Deploy a past release again as the stack's next generation: its file, its variables
    (as the release kept them: masked values stay masked) and its plan with its digests, so
    its services run the bits they ran then, whatever their tags name now."""
    stack = get(session, stack_id=stack_id, for_update=True)
    check_version(stack.version)
    if stack.removing:
        raise Conflict(f"stack {stack.name!r} is being removed")
    past = releases.get(session, stack_id=stack.id, release=release, field="body.release")
    stack.compose, stack.variables = past.compose, past.variables
    plan = releases.rollback_plan(stack.plan, past)
    _next_generation(stack)
    accepted = _queue_deploy(session, stack, plan, [], settings=settings, created_by=created_by)
    releases.record(session, stack=stack, created_by=created_by, rollback_of=release)
    return accepted


def delete(
    session: Session,
    *,
    stack_id: str,
    volumes: bool,
    check_version: VersionCheck,
    settings: Settings,
    created_by: str,
) -> StackAccepted:
    """Mark the stack and its services removing, forget its own secrets and project files, and
    queue the removal (services, then the networks and the project files' volumes, then the
    named volumes if asked)."""
    stack = get(session, stack_id=stack_id, for_update=True)
    check_version(stack.version)
    own = stack.plan.get("stored_secrets", [])
    for secret in session.execute(select(Secret).where(Secret.name.in_(own))).scalars():
        secrets.delete(session, secret=secret)
    session.execute(sa_delete(Blob).where(Blob.stack_id == stack.id))
    stack.removing = True
    stack.status, stack.status_detail = "removing", None
    stack.version += 1
    for member in members(session, stack.id, for_update=True):
        if not member.removing:
            member.removing, member.status = True, ServiceStatus.REMOVING
            member.version += 1
    return _queue(
        session,
        stack,
        kind="stack.remove",
        params={"volumes": volumes},
        settings=settings,
        created_by=created_by,
    )
