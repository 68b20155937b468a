"""`Berth`: the blocking client, generated from aio.py by
tests/client/test_sync_is_generated.py: edit aio.py, then run that module.
Requests are described in `calls.py`; this only sends them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

import httpx
from pydantic import BaseModel

from app.client import calls, wire
from app.client.calls import StackSource
from app.client.config import resolve
from app.client.errors import NotFound, error_for
from app.client.models import (
    Accepted,
    AuditEntry,
    AuditVerification,
    Container,
    ContainerAccepted,
    Event,
    Host,
    HostAccepted,
    Image,
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
    Service,
    ServiceAccepted,
    Stack,
    StackAccepted,
    StackPlan,
    Token,
    TokenCreated,
)
from app.client.wire import Call, Retry, model

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Key = str | None
log = logging.getLogger("berth.client")


class Berth:
    """A Berth server, spoken to over HTTP.

    `url` and `token` default to BERTH_URL / BERTH_TOKEN, then to the login file
    (`app.client.config`). Use it as a `with` context manager, or call `close()`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        connection = resolve(url, token)
        self.url = connection.url
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=connection.url,
            headers=wire.headers(connection.token),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=verify,
            transport=transport,
        )
        self.hosts = Hosts(self)
        self.containers = Containers(self)
        self.images = Images(self)
        self.services = Services(self)
        self.stacks = Stacks(self)
        self.operations = Operations(self)
        self.events = Events(self)
        self.secrets = Secrets(self)
        self.tokens = Tokens(self)
        self.registries = Registries(self)
        self.audit = Audit(self)

    def __repr__(self) -> str:
        return f"Berth(url={self.url!r})"

    def __enter__(self) -> Berth:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def me(self) -> Me:
        """Who the token is (its name and role)."""
        return self.call(calls.me())

    def wait(
        self,
        operation: str | Operation | Accepted,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Operation], None] | None = None,
        check: bool = True,
    ) -> Operation:
        """`operations.wait`, for short."""
        return self.operations.wait(
            operation, timeout=timeout, on_progress=on_progress, check=check
        )

    # Sending

    def call(self, call: Call[T]) -> T:
        """Send one described request (retried as `retry` allows) and read its answer."""
        return wire.answer(self._send(call), call)

    def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = wire.build(self._http, call)
            delay: float | None
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(request, exc, attempt)
            else:
                delay = self.retry.after_answer(response, attempt)
                if delay is None:
                    return response
                response.close()
            wire.log_retry(log, request, delay, attempt)
            time.sleep(delay)
            attempt += 1

    @contextmanager
    def _open(self, call: Call[Any]) -> Iterator[httpx.Response]:
        """A streamed answer, its error raised before anything is read from it."""
        response = self._send(call, stream=True)
        try:
            if not response.is_success:
                response.read()
                raise error_for(response)
            yield response
        finally:
            response.close()

    def pages(self, call: Call[Page[T]]) -> Iterator[T]:
        """Every item of a listing, page after page (each page asked for when reached)."""
        while True:
            page = self.call(call)
            yield from page.items
            if page.next_cursor is None:
                return
            call = wire.next_page(call, page.next_cursor)

    def lines(self, call: Call[Any]) -> Generator[str, None, None]:
        with self._open(call) as response:
            try:
                yield from response.iter_lines()
            except httpx.TransportError as exc:
                raise wire.unreachable(response.request, exc) from exc


class _Part:
    def __init__(self, berth: Berth) -> None:
        self._berth = berth


class _Collection(_Part, Generic[M]):
    """What every collection reads alike: one object by id, or by its name."""

    _path: str
    _model: type[M]
    _what: str
    _key = "name"  # the field a name is matched against

    def get(self, object_id: str) -> M:
        return self._berth.call(calls.one(f"{self._path}/{object_id}", self._model))

    def find(self, name_or_id: str) -> M:
        """The object with this id, else the one with this name: NotFound for none,
        Conflict when several share it."""
        try:
            return self.get(name_or_id)
        except NotFound:
            named = list(self._named(name_or_id))
            return wire.pick(name_or_id, self._what, named, key=self._key)

    def _named(self, name: str) -> Iterator[M]:
        """The candidates for a name: the whole listing, unless the API filters by name."""
        return self._list(wire.SCAN_PAGE)

    def _list(self, page_size: int | None, **filters: str | None) -> Iterator[M]:
        return self._berth.pages(calls.listing(self._path, self._model, page_size, **filters))


class Hosts(_Collection[Host]):
    _path, _model, _what = "/hosts", Host, "host"

    def _named(self, name: str) -> Iterator[Host]:
        return self.list(name=name)

    def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        label: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Host]:
        return self._list(page_size, status=status, name=name, label=label)

    def create(self, name: str, url: str, *, idempotency_key: Key = None, **fields: Any) -> Host:
        """`fields`: labels, schedulable, tls ({ca_cert, client_cert, client_key}), insecure."""
        return self._berth.call(
            calls.host_create({"name": name, "url": url, **fields}, idempotency_key)
        )

    def update(self, host_id: str, **fields: Any) -> Host:
        return self._berth.call(calls.host_update(host_id, fields))

    def drain(self, host_id: str, *, idempotency_key: Key = None) -> HostAccepted:
        return self._berth.call(calls.host_drain(host_id, idempotency_key))

    def delete(self, host_id: str, *, force: bool = False) -> None:
        self._berth.call(calls.host_delete(host_id, force))


class Containers(_Collection[Container]):
    _path, _model, _what = "/containers", Container, "container"

    def list(
        self,
        *,
        host_id: str | None = None,
        service_id: str | None = None,
        state: str | None = None,
        label: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Container]:
        return self._list(
            page_size, host_id=host_id, service_id=service_id, state=state, label=label
        )

    def create(
        self,
        image: str,
        *,
        name: str | None = None,
        host_id: str | None = None,
        start: bool = True,
        idempotency_key: Key = None,
        **spec: Any,
    ) -> ContainerAccepted:
        """`spec`: command, env, ports ([{container_port, host_port}]), volumes, labels,
        resources, restart_policy, healthcheck, networks, secrets, placement, ..."""
        fields = wire.fields(image=image, name=name, host_id=host_id, start=start, **spec)
        return self._berth.call(calls.container_create(fields, idempotency_key))

    def start(self, container_id: str, *, idempotency_key: Key = None) -> ContainerAccepted:
        return self._berth.call(calls.container_act(container_id, "start", None, idempotency_key))

    def stop(
        self, container_id: str, *, timeout_s: int | None = None, idempotency_key: Key = None
    ) -> ContainerAccepted:
        body = wire.fields(timeout_s=timeout_s) or None
        return self._berth.call(calls.container_act(container_id, "stop", body, idempotency_key))

    def restart(
        self, container_id: str, *, timeout_s: int | None = None, idempotency_key: Key = None
    ) -> ContainerAccepted:
        body = wire.fields(timeout_s=timeout_s) or None
        call = calls.container_act(container_id, "restart", body, idempotency_key)
        return self._berth.call(call)

    def kill(
        self, container_id: str, *, signal: str | None = None, idempotency_key: Key = None
    ) -> ContainerAccepted:
        body = wire.fields(signal=signal) or None
        return self._berth.call(calls.container_act(container_id, "kill", body, idempotency_key))

    def remove(self, container_id: str, *, volumes: bool = False) -> ContainerAccepted:
        return self._berth.call(calls.container_remove(container_id, volumes))

    def logs(
        self,
        container_id: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
        since: datetime | None = None,
    ) -> Generator[str, None, None]:
        """The output, line by line (without the newline); with `follow`, until it stops or
        the iterator is closed. `tail=None`: the server's default (the last 100 lines)."""
        call = calls.container_logs(
            container_id, tail=tail, follow=follow, timestamps=timestamps, since=since
        )
        return self._berth.lines(call)


class Images(_Collection[Image]):
    _path, _model, _what = "/images", Image, "image"
    _key = "reference"

    def _named(self, name: str) -> Iterator[Image]:
        return self.list(reference=name)

    def list(
        self,
        *,
        host_id: str | None = None,
        reference: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Image]:
        return self._list(page_size, host_id=host_id, reference=reference)

    def pull(
        self,
        reference: str,
        *,
        host_id: str | None = None,
        host_ids: Sequence[str] | None = None,
        all_hosts: bool = False,
        registry_id: str | None = None,
        idempotency_key: Key = None,
    ) -> ImageAccepted:
        """To one host (`host_id`), several (`host_ids`) or every ready host (`all_hosts`):
        exactly one of them."""
        fields = wire.fields(
            reference=reference,
            host_id=host_id,
            host_ids=list(host_ids) if host_ids else None,
            all_hosts=all_hosts or None,
            registry_id=registry_id,
        )
        return self._berth.call(calls.image_pull(fields, idempotency_key))

    def push(
        self,
        reference: str,
        *,
        host_id: str,
        registry_id: str | None = None,
        idempotency_key: Key = None,
    ) -> ImageAccepted:
        fields = wire.fields(reference=reference, host_id=host_id, registry_id=registry_id)
        return self._berth.call(calls.image_push(fields, idempotency_key))

    def tag(
        self, source: str, target: str, *, host_id: str, idempotency_key: Key = None
    ) -> ImageAccepted:
        fields = {"source": source, "target": target, "host_id": host_id}
        return self._berth.call(calls.image_tag(fields, idempotency_key))

    def build(
        self,
        context: bytes,
        *,
        host_id: str,
        tags: Sequence[str] = (),
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        idempotency_key: Key = None,
    ) -> ImageAccepted:
        """`context`: a tar or tar.gz archive (`app.client.pack_directory(path)` makes one)."""
        call = calls.image_build(
            context,
            host_id=host_id,
            tags=tags,
            dockerfile=dockerfile,
            build_args=build_args,
            key=idempotency_key,
        )
        return self._berth.call(call)

    def remove(self, image_id: str, *, force: bool = False) -> ImageAccepted:
        return self._berth.call(calls.image_remove(image_id, force))


class Services(_Collection[Service]):
    _path, _model, _what = "/services", Service, "service"

    def _named(self, name: str) -> Iterator[Service]:
        return self.list(name=name)

    def list(
        self,
        *,
        stack_id: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Service]:
        return self._list(page_size, stack_id=stack_id, name=name)

    def create(
        self, name: str, spec: Mapping[str, Any], *, idempotency_key: Key = None
    ) -> ServiceAccepted:
        return self._berth.call(calls.service_create(name, dict(spec), idempotency_key))

    def update(self, service_id: str, spec: Mapping[str, Any]) -> ServiceAccepted:
        """Replace the whole spec: a new revision, rolled out."""
        return self._berth.call(calls.service_update(service_id, dict(spec), replace_all=True))

    def patch(self, service_id: str, spec: Mapping[str, Any]) -> ServiceAccepted:
        """Change only the spec fields given (e.g. `{"image": "web:2"}`): a new revision."""
        return self._berth.call(calls.service_update(service_id, dict(spec), replace_all=False))

    def scale(
        self, service_id: str, replicas: int, *, idempotency_key: Key = None
    ) -> ServiceAccepted:
        return self._berth.call(calls.service_scale(service_id, replicas, idempotency_key))

    def rollback(self, service_id: str, *, idempotency_key: Key = None) -> ServiceAccepted:
        return self._berth.call(calls.service_rollback(service_id, idempotency_key))

    def plan(self, service_id: str, spec: Mapping[str, Any]) -> Plan:
        """Dry run: what this spec would start, stop and replace, per host."""
        return self._berth.call(calls.service_plan(service_id, dict(spec)))

    def revisions(self, service_id: str, *, page_size: int | None = None) -> Iterator[Revision]:
        return self._berth.pages(calls.service_revisions(service_id, page_size))

    def delete(self, service_id: str) -> ServiceAccepted:
        return self._berth.call(calls.service_delete(service_id))


class Stacks(_Collection[Stack]):
    _path, _model, _what = "/stacks", Stack, "stack"

    def _named(self, name: str) -> Iterator[Stack]:
        return self.list(name=name)

    def list(self, *, name: str | None = None, page_size: int | None = None) -> Iterator[Stack]:
        return self._list(page_size, name=name)

    def create(
        self,
        name: str,
        compose: str | None = None,
        *,
        host_id: str | None = None,
        idempotency_key: Key = None,
        **source: Unpack[StackSource],
    ) -> StackAccepted:
        """Deploy a Compose file (its text), or a project directory (`project`: a tar.gz of
        it, `pack_directory`); `source` as `StackSource` describes (variables, env_files,
        contexts, project, file, strict)."""
        call = calls.stack_deploy(
            "POST",
            "/stacks",
            model(StackAccepted),
            compose,
            source,
            key=idempotency_key,
            name=name,
            host_id=host_id,
        )
        return self._berth.call(call)

    def plan_create(
        self,
        name: str,
        compose: str | None = None,
        *,
        host_id: str | None = None,
        **source: Unpack[StackSource],
    ) -> StackPlan:
        """`create`'s dry run: every check made, nothing stored, no engine asked."""
        call = calls.stack_deploy(
            "POST",
            "/stacks",
            model(StackPlan),
            compose,
            source,
            dry_run=True,
            name=name,
            host_id=host_id,
        )
        return self._berth.call(call)

    def update(
        self, stack_id: str, compose: str | None = None, **source: Unpack[StackSource]
    ) -> StackAccepted:
        """Deploy a new Compose file or project: only the services whose spec changed roll."""
        path = f"/stacks/{stack_id}"
        call = calls.stack_deploy("PUT", path, model(StackAccepted), compose, source)
        return self._berth.call(call)

    def plan_update(
        self, stack_id: str, compose: str | None = None, **source: Unpack[StackSource]
    ) -> StackPlan:
        """`update`'s dry run: which services would be created, updated or removed."""
        path = f"/stacks/{stack_id}"
        call = calls.stack_deploy("PUT", path, model(StackPlan), compose, source, dry_run=True)
        return self._berth.call(call)

    def delete(self, stack_id: str, *, volumes: bool = False) -> StackAccepted:
        return self._berth.call(calls.stack_delete(stack_id, volumes))


class Operations(_Collection[Operation]):
    _path, _model, _what = "/operations", Operation, "operation"

    def list(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        target_id: str | None = None,
        host_id: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Operation]:
        """Newest first."""
        return self._list(page_size, status=status, kind=kind, target_id=target_id, host_id=host_id)

    def wait(
        self,
        operation: str | Operation | Accepted,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Operation], None] | None = None,
        check: bool = True,
    ) -> Operation:
        """Until the operation finishes, with the server's long-poll (no busy polling).
        `on_progress(operation)` is called with each new state (progress figures, status)
        about once a second. Raises OperationFailed when it ends failed or cancelled (unless
        `check=False`), OperationTimeout when `timeout` seconds pass first."""
        waiting = wire.Waiting(operation, timeout=timeout, on_progress=on_progress, check=check)
        current: Operation | None = None
        while (call := waiting.next_call()) is not None:
            current = self._berth.call(call)
            if waiting.seen(current):
                return waiting.finished(current)
        raise waiting.timed_out(current)

    def logs(self, operation_id: str, *, page_size: int | None = None) -> Iterator[OperationLog]:
        return self._berth.pages(calls.operation_logs(operation_id, page_size))

    def cancel(self, operation_id: str, *, idempotency_key: Key = None) -> Operation:
        return self._berth.call(calls.operation_cancel(operation_id, idempotency_key))


class Events(_Part):
    def stream(
        self,
        *,
        since: int | None = None,
        resource_type: str | Sequence[str] | None = None,
        resource_id: str | Sequence[str] | None = None,
        types: str | Sequence[str] | None = None,
        reconnects: int = 10,
    ) -> Generator[Event, None, None]:
        """Every event from `since` (a cursor; 0 for all that are kept; None for from now),
        without end. After a disconnect it reconnects from the last event it gave, so none
        is lost or repeated; it raises after `reconnects` failed tries in a row."""
        resumption = wire.Resumption(
            since=since,
            resource_type=resource_type,
            resource_id=resource_id,
            types=types,
            reconnects=reconnects,
        )
        while True:
            try:
                with self._berth._open(resumption.call()) as response:
                    resumption.connected()
                    for line in response.iter_lines():
                        if (event := resumption.feed(line)) is not None:
                            yield event
                pause = resumption.pause()
            except wire.RESUMABLE as exc:
                pause = resumption.lost(exc)
            time.sleep(pause)


class Secrets(_Collection[Secret]):
    _path, _model, _what = "/secrets", Secret, "secret"

    def list(self, *, page_size: int | None = None) -> Iterator[Secret]:
        return self._list(page_size)

    def create(self, name: str, value: str, *, idempotency_key: Key = None) -> Secret:
        return self._berth.call(calls.secret_create(name, value, idempotency_key))

    def rotate(self, secret_id: str, value: str) -> SecretRotated:
        return self._berth.call(calls.secret_rotate(secret_id, value))

    def delete(self, secret_id: str) -> None:
        self._berth.call(calls.delete(f"/secrets/{secret_id}"))


class Tokens(_Part):
    def list(self, *, page_size: int | None = None) -> Iterator[Token]:
        return self._berth.pages(calls.listing("/tokens", Token, page_size))

    def create(
        self,
        name: str,
        role: str,
        *,
        expires_at: datetime | None = None,
        idempotency_key: Key = None,
    ) -> TokenCreated:
        """`role`: viewer, operator or admin. The secret is in `.token`, this once."""
        return self._berth.call(calls.token_create(name, role, expires_at, idempotency_key))

    def delete(self, token_id: str) -> None:
        self._berth.call(calls.delete(f"/tokens/{token_id}"))


class Registries(_Collection[Registry]):
    _path, _model, _what = "/registries", Registry, "registry"

    def list(self, *, page_size: int | None = None) -> Iterator[Registry]:
        return self._list(page_size)

    def create(
        self, name: str, url: str, *, idempotency_key: Key = None, **fields: Any
    ) -> Registry:
        """`fields`: username, password."""
        call = calls.registry_create({"name": name, "url": url, **fields}, idempotency_key)
        return self._berth.call(call)

    def delete(self, registry_id: str) -> None:
        self._berth.call(calls.delete(f"/registries/{registry_id}"))


class Audit(_Part):
    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> Iterator[AuditEntry]:
        call = calls.audit_list(
            page_size, actor=actor, action=action, resource=resource, since=since, until=until
        )
        return self._berth.pages(call)

    def verify(self) -> AuditVerification:
        """Check the hash chain end to end."""
        return self._berth.call(calls.audit_verify())
