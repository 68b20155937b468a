"""Every request the client makes, described once for both clients: path, query, body and
the model of the answer. `sync.py` and `aio.py` only send them."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypedDict, TypeVar

import httpx
from pydantic import BaseModel

from app.client.models import (
    AuditEntry,
    AuditVerification,
    ContainerAccepted,
    Host,
    HostAccepted,
    ImageAccepted,
    Me,
    Operation,
    OperationLog,
    Page,
    Plan,
    Registry,
    Revision,
    Secret,
    SecretRotated,
    ServiceAccepted,
    StackAccepted,
    TokenCreated,
)
from app.client.wire import Call, get, model, nothing, page, post, send, stack_fields

Key = str | None
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def listing(path: str, item: type[M], page_size: int | None, **params: Any) -> Call[Page[M]]:
    return get(path, page(item), limit=page_size, **params)


# Hosts


def host_create(fields: dict[str, Any], key: Key) -> Call[Host]:
    return post("/hosts", model(Host), json=fields, idempotency_key=key)


def host_update(host_id: str, fields: dict[str, Any]) -> Call[Host]:
    return send("PATCH", f"/hosts/{host_id}", model(Host), json=fields)


def host_drain(host_id: str, key: Key) -> Call[HostAccepted]:
    return post(f"/hosts/{host_id}/drain", model(HostAccepted), idempotency_key=key)


def host_delete(host_id: str, force: bool) -> Call[None]:
    return send("DELETE", f"/hosts/{host_id}", nothing, force=force or None)


# Containers


def container_create(fields: dict[str, Any], key: Key) -> Call[ContainerAccepted]:
    return post("/containers", model(ContainerAccepted), json=fields, idempotency_key=key)


def container_act(
    container_id: str, action: str, body: dict[str, Any] | None, key: Key
) -> Call[ContainerAccepted]:
    path = f"/containers/{container_id}/{action}"
    return post(path, model(ContainerAccepted), json=body, idempotency_key=key)


def container_remove(container_id: str, volumes: bool) -> Call[ContainerAccepted]:
    path = f"/containers/{container_id}"
    return send("DELETE", path, model(ContainerAccepted), volumes=volumes or None)


def container_logs(
    container_id: str,
    *,
    tail: int | None,
    follow: bool,
    timestamps: bool,
    since: datetime | None,
) -> Call[None]:
    call = get(
        f"/containers/{container_id}/logs",
        nothing,
        tail=tail,
        follow=follow,
        timestamps=timestamps,
        since=since.isoformat() if since is not None else None,
    )
    # A followed log can be quiet for hours: no read timeout then.
    return replace(call, read_timeout=0) if follow else call


# Images


def image_pull(fields: dict[str, Any], key: Key) -> Call[ImageAccepted]:
    return post("/images/pull", model(ImageAccepted), json=fields, idempotency_key=key)


def image_push(fields: dict[str, Any], key: Key) -> Call[ImageAccepted]:
    return post("/images/push", model(ImageAccepted), json=fields, idempotency_key=key)


def image_tag(fields: dict[str, Any], key: Key) -> Call[ImageAccepted]:
    return post("/images/tag", model(ImageAccepted), json=fields, idempotency_key=key)


def image_build(
    context: bytes,
    *,
    host_id: str,
    tags: Sequence[str],
    dockerfile: str,
    build_args: Mapping[str, str] | None,
    key: Key,
) -> Call[ImageAccepted]:
    data = {
        "host_id": host_id,
        "dockerfile": dockerfile,
        "tags[]": list(tags),
        "build_args": json.dumps(dict(build_args or {})),
    }
    files = [("context", ("context.tar.gz", context, "application/gzip"))]
    return post("/images/build", model(ImageAccepted), data=data, files=files, idempotency_key=key)


def image_remove(image_id: str, force: bool) -> Call[ImageAccepted]:
    return send("DELETE", f"/images/{image_id}", model(ImageAccepted), force=force or None)


# Services


def service_create(name: str, spec: dict[str, Any], key: Key) -> Call[ServiceAccepted]:
    body = {"name": name, "spec": spec}
    return post("/services", model(ServiceAccepted), json=body, idempotency_key=key)


def service_update(
    service_id: str, spec: dict[str, Any], *, replace_all: bool
) -> Call[ServiceAccepted]:
    """PUT replaces the spec; PATCH merges the fields given into it."""
    method = "PUT" if replace_all else "PATCH"
    return send(method, f"/services/{service_id}", model(ServiceAccepted), json={"spec": spec})


def service_scale(service_id: str, replicas: int, key: Key) -> Call[ServiceAccepted]:
    path = f"/services/{service_id}/scale"
    return post(path, model(ServiceAccepted), json={"replicas": replicas}, idempotency_key=key)


def service_rollback(service_id: str, key: Key) -> Call[ServiceAccepted]:
    return post(f"/services/{service_id}/rollback", model(ServiceAccepted), idempotency_key=key)


def service_plan(service_id: str, spec: dict[str, Any]) -> Call[Plan]:
    return post(f"/services/{service_id}/plan", model(Plan), json={"spec": spec})


def service_revisions(service_id: str, page_size: int | None) -> Call[Page[Revision]]:
    return listing(f"/services/{service_id}/revisions", Revision, page_size)


def service_delete(service_id: str) -> Call[ServiceAccepted]:
    return send("DELETE", f"/services/{service_id}", model(ServiceAccepted))


# Stacks


class StackSource(TypedDict, total=False):
    """What a deploy sends besides the stack's name and host, for `stacks.create`, `update`
    and their dry runs."""

    variables: Mapping[str, str]  # ${VAR} values (they win over the project's .env)
    env_files: Mapping[str, str]  # the text of each `env_file:`, by the path the file names
    contexts: Mapping[str, bytes]  # a tar(.gz) per Compose service with `build:`
    project: bytes  # the project directory as a tar(.gz): Compose file, .env, contexts, files
    file: str  # the Compose file's path in `project` (default: Compose's search order)
    strict: bool  # an unset variable is a 422 instead of a warning


def stack_call(
    method: str,
    path: str,
    read: Callable[[httpx.Response], T],
    fields: dict[str, Any],
    *,
    contexts: Mapping[str, bytes] | None,
    project: bytes | None,
    key: Key,
    dry_run: bool = False,
) -> Call[T]:
    """JSON without files; multipart/form-data with them: one archive per Compose service
    that has `build:` in the field `context.<service>`, the project in the field `project`."""
    fields = {k: v for k, v in fields.items() if v is not None}
    params = {"dry_run": True} if dry_run else None
    files = [
        (f"context.{name}", (f"{name}.tar.gz", archive, "application/gzip"))
        for name, archive in (contexts or {}).items()
    ]
    if project is not None:
        files.append(("project", ("project.tar.gz", project, "application/gzip")))
    if not files:
        if method == "POST":
            return post(path, read, json=fields, params=params, idempotency_key=key)
        return replace(send(method, path, read, json=fields), params=params or {})
    data = {k: _form_value(v) for k, v in fields.items()}
    if method == "POST":
        return post(path, read, data=data, files=files, params=params, idempotency_key=key)
    return Call(method, path, read, params=params or {}, data=data, files=files)


def _form_value(value: Any) -> str:
    """A field as multipart sends it: objects as JSON text, booleans as true/false."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stack_deploy(
    method: str,
    path: str,
    read: Callable[[httpx.Response], T],
    compose: str | None,
    source: StackSource,
    *,
    key: Key = None,
    dry_run: bool = False,
    **named: str | None,
) -> Call[T]:
    """A stack create (`named`: name, host_id) or update, or its dry run."""
    fields = stack_fields(
        compose,
        source.get("variables"),
        source.get("env_files"),
        file=source.get("file"),
        strict=source.get("strict"),
        **named,
    )
    return stack_call(
        method,
        path,
        read,
        fields,
        contexts=source.get("contexts"),
        project=source.get("project"),
        key=key,
        dry_run=dry_run,
    )


def stack_delete(stack_id: str, volumes: bool) -> Call[StackAccepted]:
    return send("DELETE", f"/stacks/{stack_id}", model(StackAccepted), volumes=volumes or None)


# Operations


def operation_cancel(operation_id: str, key: Key) -> Call[Operation]:
    return post(f"/operations/{operation_id}/cancel", model(Operation), idempotency_key=key)


def operation_logs(operation_id: str, page_size: int | None) -> Call[Page[OperationLog]]:
    return listing(f"/operations/{operation_id}/logs", OperationLog, page_size)


# Secrets, tokens, registries, audit


def secret_create(name: str, value: str, key: Key) -> Call[Secret]:
    body = {"name": name, "value": value}
    return post("/secrets", model(Secret), json=body, idempotency_key=key)


def secret_rotate(secret_id: str, value: str) -> Call[SecretRotated]:
    return send("PUT", f"/secrets/{secret_id}", model(SecretRotated), json={"value": value})


def token_create(name: str, role: str, expires_at: datetime | None, key: Key) -> Call[TokenCreated]:
    body: dict[str, Any] = {"name": name, "role": role}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return post("/tokens", model(TokenCreated), json=body, idempotency_key=key)


def registry_create(fields: dict[str, Any], key: Key) -> Call[Registry]:
    return post("/registries", model(Registry), json=fields, idempotency_key=key)


def me() -> Call[Me]:
    return get("/me", model(Me))


def audit_verify() -> Call[AuditVerification]:
    return get("/audit/verify", model(AuditVerification))


def audit_list(
    page_size: int | None,
    *,
    actor: str | None,
    action: str | None,
    resource: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Call[Page[AuditEntry]]:
    return listing(
        "/audit",
        AuditEntry,
        page_size,
        actor=actor,
        action=action,
        resource=resource,
        **{"from": since.isoformat() if since else None},
        to=until.isoformat() if until else None,
    )


def delete(path: str) -> Call[None]:
    return send("DELETE", path, nothing)


def one(path: str, kind: type[M]) -> Call[M]:
    return get(path, model(kind))
