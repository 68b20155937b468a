"""`AsyncBerth`: the asyncio client. Edit this file, not sync.py (generated from it).
Requests are described in `calls.py`; this only sends them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
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


class AsyncBerth:
    """A Berth server, spoken to over HTTP, from asyncio.

    `url` and `token` default to BERTH_URL / BERTH_TOKEN, then to the login file
    (`app.client.config`). Use it as an `async with` context manager, or await `aclose()`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        connection = resolve(url, token)
        self.url = connection.url
        self.retry = retry or Retry()
        self._http = httpx.AsyncClient(
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
        return f"AsyncBerth(url={self.url!r})"

    async def __aenter__(self) -> AsyncBerth:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def me(self) -> Me:
        """Who the token is (its name and role)."""
        return await self.call(calls.me())

    async def wait(
        self,
        operation: str | Operation | Accepted,
        *,
        timeout: float | None = None,
        on_progress: Callable[[Operation], None] | None = None,
        check: bool = True,
    ) -> Operation:
        """`operations.wait`, for short."""
        return await self.operations.wait(
            operation, timeout=timeout, on_progress=on_progress, check=check
        )

    # Sending

    async def call(self, call: Call[T]) -> T:
        """Send one described request (retried as `retry` allows) and read its answer."""
        return wire.answer(await self._send(call), call)

    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = wire.build(self._http, call)
            delay: float | None
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self.retry.after_error(request, exc, attempt)
            else:
                delay = self.retry.after_answer(response, attempt)
                if delay is None:
                    return response
                await response.aclose()
            wire.log_retry(log, request, delay, attempt)
            await asyncio.sleep(delay)
            attempt += 1

    @asynccontextmanager
    async def _open(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """A streamed answer, its error raised before anything is read from it."""
        response = await self._send(call, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                raise error_for(response)
            yield response
        finally:
            await response.aclose()

    async def pages(self, call: Call[Page[T]]) -> AsyncIterator[T]:
        """Every item of a listing, page after page (each page asked for when reached)."""
        while True:
            page = await self.call(call)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            call = wire.next_page(call, page.next_cursor)

    async def lines(self, call: Call[Any]) -> AsyncGenerator[str, None]:
        async with self._open(call) as response:
            try:
                async for line in response.aiter_lines():
                    yield line
            except httpx.TransportError as exc:
                raise wire.unreachable(response.request, exc) from exc


class _Part:
    def __init__(self, berth: AsyncBerth) -> None:
        self._berth = berth


class _Collection(_Part, Generic[M]):
    """What every collection reads alike: one object by id, or by its name."""

    _path: str
    _model: type[M]
    _what: str
    _key = "name"  # the field a name is matched against

    async def get(self, object_id: str) -> M:
        return await self._berth.call(calls.one(f"{self._path}/{object_id}", self._model))

    async def find(self, name_or_id: str) -> M:
        """The object with this id, else the one with this name: NotFound for none,
        Conflict when several share it."""
        try:
            return await self.get(name_or_id)
        except NotFound:
            named = [item async for item in self._named(name_or_id)]
            return wire.pick(name_or_id, self._what, named, key=self._key)

    def _named(self, name: str) -> AsyncIterator[M]:
        """The candidates for a name: the whole listing, unless the API filters by name."""
        return self._list(wire.SCAN_PAGE)

    def _list(self, page_size: int | None, **filters: str | None) -> AsyncIterator[M]:
        return self._berth.pages(calls.listing(self._path, self._model, page_size, **filters))


class Hosts(_Collection[Host]):
    _path, _model, _what = "/hosts", Host, "host"

    def _named(self, name: str) -> AsyncIterator[Host]:
        return self.list(name=name)

    def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        label: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Host]:
        return self._list(page_size, status=status, name=name, label=label)

    async def create(
        self, name: str, url: str, *, idempotency_key: Key = None, **fields: Any
    ) -> Host:
        """`fields`: labels, schedulable, tls ({ca_cert, client_cert, client_key}), insecure."""
        return await self._berth.call(
            calls.host_create({"name": name, "url": url, **fields}, idempotency_key)
        )

    async def update(self, host_id: str, **fields: Any) -> Host:
        return await self._berth.call(calls.host_update(host_id, fields))

    async def drain(self, host_id: str, *, idempotency_key: Key = None) -> HostAccepted:
        return await self._berth.call(calls.host_drain(host_id, idempotency_key))

    async def delete(self, host_id: str, *, force: bool = False) -> None:
        await self._berth.call(calls.host_delete(host_id, force))


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
    ) -> AsyncIterator[Container]:
        return self._list(
            page_size, host_id=host_id, service_id=service_id, state=state, label=label
        )

    async def create(
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
        return await self._berth.call(calls.container_create(fields, idempotency_key))

    async def start(self, container_id: str, *, idempotency_key: Key = None) -> ContainerAccepted:
        return await self._berth.call(
            calls.container_act(container_id, "start", None, idempotency_key)
        )

    async def stop(
        self, container_id: str, *, timeout_s: int | None = None, idempotency_key: Key = None
    ) -> ContainerAccepted:
        body = wire.fields(timeout_s=timeout_s) or None
        return await self._berth.call(
            calls.container_act(container_id, "stop", body, idempotency_key)
        )

    async def restart(
        self, container_id: str, *, timeout_s: int | None = None, idempotency_key: Key = None
    ) -> ContainerAccepted:
        body = wire.fields(timeout_s=timeout_s) or None
        call = calls.container_act(container_id, "restart", body, idempotency_key)
        return await self._berth.call(call)

    async def kill(
        self, container_id: str, *, signal: str | None = None, idempotency_key: Key = None
    ) -> ContainerAccepted:
        body = wire.fields(signal=signal) or None
        return await self._berth.call(
            calls.container_act(container_id, "kill", body, idempotency_key)
        )

    async def remove(self, container_id: str, *, volumes: bool = False) -> ContainerAccepted:
        return await self._berth.call(calls.container_remove(container_id, volumes))

    def logs(
        self,
        container_id: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
        since: datetime | None = None,
    ) -> AsyncGenerator[str, None]:
        """The output, line by line (without the newline); with `follow`, until it stops or
        the iterator is closed. `tail=None`: the server's default (the last 100 lines)."""
        call = calls.container_logs(
            container_id, tail=tail, follow=follow, timestamps=timestamps, since=since
        )
        return self._berth.lines(call)


class Images(_Collection[Image]):
    _path, _model, _what = "/images", Image, "image"
    _key = "reference"

    def _named(self, name: str) -> AsyncIterator[Image]:
        return self.list(reference=name)

    def list(
        self,
        *,
        host_id: str | None = None,
        reference: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Image]:
        return self._list(page_size, host_id=host_id, reference=reference)

    async def pull(
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
        return await self._berth.call(calls.image_pull(fields, idempotency_key))

    async def push(
        self,
        reference: str,
        *,
        host_id: str,
        registry_id: str | None = None,
        idempotency_key: Key = None,
    ) -> ImageAccepted:
        fields = wire.fields(reference=reference, host_id=host_id, registry_id=registry_id)
        return await self._berth.call(calls.image_push(fields, idempotency_key))

    async def tag(
        self, source: str, target: str, *, host_id: str, idempotency_key: Key = None
    ) -> ImageAccepted:
        fields = {"source": source, "target": target, "host_id": host_id}
        return await self._berth.call(calls.image_tag(fields, idempotency_key))

    async def build(
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
        return await self._berth.call(call)

    async def remove(self, image_id: str, *, force: bool = False) -> ImageAccepted:
        return await self._berth.call(calls.image_remove(image_id, force))


class Services(_Collection[Service]):
    _path, _model, _what = "/services", Service, "service"

    def _named(self, name: str) -> AsyncIterator[Service]:
        return self.list(name=name)

    def list(
        self,
        *,
        stack_id: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Service]:
        return self._list(page_size, stack_id=stack_id, name=name)

    async def create(
        self, name: str, spec: Mapping[str, Any], *, idempotency_key: Key = None
    ) -> ServiceAccepted:
        return await self._berth.call(calls.service_create(name, dict(spec), idempotency_key))

    async def update(self, service_id: str, spec: Mapping[str, Any]) -> ServiceAccepted:
        """Replace the whole spec: a new revision, rolled out."""
        return await self._berth.call(
            calls.service_update(service_id, dict(spec), replace_all=True)
        )

    async def patch(self, service_id: str, spec: Mapping[str, Any]) -> ServiceAccepted:
        """Change only the spec fields given (e.g. `{"image": "web:2"}`): a new revision."""
        return await self._berth.call(
            calls.service_update(service_id, dict(spec), replace_all=False)
        )

    async def scale(
        self, service_id: str, replicas: int, *, idempotency_key: Key = None
    ) -> ServiceAccepted:
        return await self._berth.call(calls.service_scale(service_id, replicas, idempotency_key))

    async def rollback(self, service_id: str, *, idempotency_key: Key = None) -> ServiceAccepted:
        return await self._berth.call(calls.service_rollback(service_id, idempotency_key))

    async def plan(self, service_id: str, spec: Mapping[str, Any]) -> Plan:
        """Dry run: what this spec would start, stop and replace, per host."""
        return await self._berth.call(calls.service_plan(service_id, dict(spec)))

    def revisions(
        self, service_id: str, *, page_size: int | None = None
    ) -> AsyncIterator[Revision]:
        return self._berth.pages(calls.service_revisions(service_id, page_size))

    async def delete(self, service_id: str) -> ServiceAccepted:
        return await self._berth.call(calls.service_delete(service_id))


class Stacks(_Collection[Stack]):
    _path, _model, _what = "/stacks", Stack, "stack"

    def _named(self, name: str) -> AsyncIterator[Stack]:
        return self.list(name=name)

    def list(
        self, *, name: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Stack]:
        return self._list(page_size, name=name)

    async def create(
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
        return await self._berth.call(call)

    async def plan_create(
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
        return await self._berth.call(call)

    async def update(
        self, stack_id: str, compose: str | None = None, **source: Unpack[StackSource]
    ) -> StackAccepted:
        """Deploy a new Compose file or project: only the services whose spec changed roll."""
        path = f"/stacks/{stack_id}"
        call = calls.stack_deploy("PUT", path, model(StackAccepted), compose, source)
        return await self._berth.call(call)

    async def plan_update(
        self, stack_id: str, compose: str | None = None, **source: Unpack[StackSource]
    ) -> StackPlan:
        """`update`'s dry run: which services would be created, updated or removed."""
        path = f"/stacks/{stack_id}"
        call = calls.stack_deploy("PUT", path, model(StackPlan), compose, source, dry_run=True)
        return await self._berth.call(call)

    async def delete(self, stack_id: str, *, volumes: bool = False) -> StackAccepted:
        return await self._berth.call(calls.stack_delete(stack_id, volumes))


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
    ) -> AsyncIterator[Operation]:
        """Newest first."""
        return self._list(page_size, status=status, kind=kind, target_id=target_id, host_id=host_id)

    async def wait(
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
            current = await self._berth.call(call)
            if waiting.seen(current):
                return waiting.finished(current)
        raise waiting.timed_out(current)

    def logs(
        self, operation_id: str, *, page_size: int | None = None
    ) -> AsyncIterator[OperationLog]:
        return self._berth.pages(calls.operation_logs(operation_id, page_size))

    async def cancel(self, operation_id: str, *, idempotency_key: Key = None) -> Operation:
        return await self._berth.call(calls.operation_cancel(operation_id, idempotency_key))


class Events(_Part):
    async def stream(
        self,
        *,
        since: int | None = None,
        resource_type: str | Sequence[str] | None = None,
        resource_id: str | Sequence[str] | None = None,
        types: str | Sequence[str] | None = None,
        reconnects: int = 10,
    ) -> AsyncGenerator[Event, None]:
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
                async with self._berth._open(resumption.call()) as response:
                    resumption.connected()
                    async for line in response.aiter_lines():
                        if (event := resumption.feed(line)) is not None:
                            yield event
                pause = resumption.pause()
            except wire.RESUMABLE as exc:
                pause = resumption.lost(exc)
            await asyncio.sleep(pause)


class Secrets(_Collection[Secret]):
    _path, _model, _what = "/secrets", Secret, "secret"

    def list(self, *, page_size: int | None = None) -> AsyncIterator[Secret]:
        return self._list(page_size)

    async def create(self, name: str, value: str, *, idempotency_key: Key = None) -> Secret:
        return await self._berth.call(calls.secret_create(name, value, idempotency_key))

    async def rotate(self, secret_id: str, value: str) -> SecretRotated:
        return await self._berth.call(calls.secret_rotate(secret_id, value))

    async def delete(self, secret_id: str) -> None:
        await self._berth.call(calls.delete(f"/secrets/{secret_id}"))


class Tokens(_Part):
    def list(self, *, page_size: int | None = None) -> AsyncIterator[Token]:
        return self._berth.pages(calls.listing("/tokens", Token, page_size))

    async def create(
        self,
        name: str,
        role: str,
        *,
        expires_at: datetime | None = None,
        idempotency_key: Key = None,
    ) -> TokenCreated:
        """`role`: viewer, operator or admin. The secret is in `.token`, this once."""
        return await self._berth.call(calls.token_create(name, role, expires_at, idempotency_key))

    async def delete(self, token_id: str) -> None:
        await self._berth.call(calls.delete(f"/tokens/{token_id}"))


class Registries(_Collection[Registry]):
    _path, _model, _what = "/registries", Registry, "registry"

    def list(self, *, page_size: int | None = None) -> AsyncIterator[Registry]:
        return self._list(page_size)

    async def create(
        self, name: str, url: str, *, idempotency_key: Key = None, **fields: Any
    ) -> Registry:
        """`fields`: username, password."""
        call = calls.registry_create({"name": name, "url": url, **fields}, idempotency_key)
        return await self._berth.call(call)

    async def delete(self, registry_id: str) -> None:
        await self._berth.call(calls.delete(f"/registries/{registry_id}"))


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
    ) -> AsyncIterator[AuditEntry]:
        call = calls.audit_list(
            page_size, actor=actor, action=action, resource=resource, since=since, until=until
        )
        return self._berth.pages(call)

    async def verify(self) -> AuditVerification:
        """Check the hash chain end to end."""
        return await self._berth.call(calls.audit_verify())
