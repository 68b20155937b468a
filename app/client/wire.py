"""What the sync and the async client share: a call described once (method, path, body,
how to read the answer), the retry rules, the event-stream decoder and the wait arithmetic.
Only the sending differs between the two (`sync.py`, `aio.py`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from app.client.errors import (
    BerthError,
    Conflict,
    ConnectionFailed,
    NotFound,
    OperationFailed,
    OperationTimeout,
    Unavailable,
    error_for,
    parse_retry_after,
)
from app.client.models import Accepted, Event, Operation, Page

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

API_PREFIX = "/api/v1"
QueryValue = str | int | float | bool | None
FileField = tuple[str, tuple[str, bytes, str]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer. A POST carries its Idempotency-Key from the
    moment it is described, so every retry of it sends the same key."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, QueryValue | Sequence[str]] = field(default_factory=dict)
    json: Any = None
    data: Mapping[str, Any] | None = None
    files: Sequence[FileField] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds to wait for the answer; None keeps the client's default, 0 waits without end
    # (a followed log or the event stream: they may be quiet for long).
    read_timeout: float | None = None


def get(path: str, read: Callable[[httpx.Response], T], **params: Any) -> Call[T]:
    return Call("GET", path, read, params=_present(params))


def post(
    path: str,
    read: Callable[[httpx.Response], T],
    *,
    json: Any = None,
    data: Mapping[str, Any] | None = None,
    files: Sequence[FileField] | None = None,
    params: Mapping[str, QueryValue] | None = None,
    idempotency_key: str | None = None,
) -> Call[T]:
    key = idempotency_key or str(uuid.uuid4())
    return Call(
        "POST",
        path,
        read,
        params=_present(params or {}),
        json=json,
        data=data,
        files=files,
        headers={"Idempotency-Key": key},
    )


def send(
    method: str, path: str, read: Callable[[httpx.Response], T], *, json: Any = None, **params: Any
) -> Call[T]:
    """A PUT, PATCH or DELETE."""
    return Call(method, path, read, params=_present(params), json=json)


def _present(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def model(kind: type[M]) -> Callable[[httpx.Response], M]:
    def read(response: httpx.Response) -> M:
        return kind.model_validate(response.json())

    return read


def page(kind: type[M]) -> Callable[[httpx.Response], Page[M]]:
    return model(Page[kind])  # type: ignore[valid-type]


def nothing(_response: httpx.Response) -> None:
    return None


def next_page(call: Call[Page[T]], cursor: str) -> Call[Page[T]]:
    return replace(call, params={**call.params, "cursor": cursor})


def build(client: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    timeout = client.timeout
    if call.read_timeout is not None:
        timeout = httpx.Timeout(
            timeout.connect,
            read=call.read_timeout or None,
            write=timeout.write,
            pool=timeout.pool,
        )
    return client.build_request(
        call.method,
        API_PREFIX + call.path,
        params=dict(call.params),
        json=call.json,
        data=dict(call.data) if call.data is not None else None,
        files=list(call.files) if call.files is not None else None,
        headers=dict(call.headers),
        timeout=timeout,
    )


def answer(response: httpx.Response, call: Call[T]) -> T:
    """The parsed answer, or the error it carries as an exception (its body already read)."""
    if response.is_success:
        return call.read(response)
    raise error_for(response)


@dataclass(frozen=True)
class Retry:
    """Retries: a 429 or 503 after its Retry-After (or a growing pause when it gives none);
    a connection that failed before the request went out; and a request cut off on the way
    when repeating it is safe (a GET, or a POST with its Idempotency-Key: the server answers a
    repeat with the first answer). At most `attempts` retries, each pause at most `max_wait`:
    a longer Retry-After is raised at once rather than slept through."""

    attempts: int = 3
    backoff: float = 0.5
    max_wait: float = 60.0

    def after_answer(self, response: httpx.Response, attempt: int) -> float | None:
        if response.status_code not in (429, 503) or attempt >= self.attempts:
            return None
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait is None:
            wait = self.pause(attempt)
        return wait if wait <= self.max_wait else None

    def after_error(self, request: httpx.Request, exc: httpx.TransportError, attempt: int) -> float:
        """The pause before the next try; raises ConnectionFailed when there is none."""
        repeatable = (
            isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            or request.method == "GET"
            or "Idempotency-Key" in request.headers
        )
        if not repeatable or attempt >= self.attempts:
            raise unreachable(request, exc) from exc
        return self.pause(attempt)

    def pause(self, attempt: int) -> float:
        return float(self.backoff * 2**attempt)


def unreachable(request: httpx.Request, exc: Exception) -> ConnectionFailed:
    origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
    reason = str(exc) or type(exc).__name__
    return ConnectionFailed(f"cannot reach Berth at {origin}: {reason}")


class EventDecoder:
    """Server-Sent Events, line by line: a message is complete at its blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self.retry: float | None = None  # the server's reconnection delay, in seconds

    def discard_partial(self) -> None:
        """Forget a message a cut connection left unfinished: the next one sends it whole."""
        self._data = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                return None
            text, self._data = "\n".join(self._data), []
            return Event.model_validate_json(text)
        if line.startswith(":"):
            return None  # a keep-alive comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None


class Resumption:
    """The event stream across connections: each one asks for the events after the last one
    seen, so a disconnect loses none and repeats none. Before the first event a reconnection
    can only ask for "from now" again (the server names no cursor until it sends an event):
    pass `since` to be sure of those too."""

    def __init__(
        self,
        *,
        since: int | None,
        resource_type: str | Sequence[str] | None,
        resource_id: str | Sequence[str] | None,
        types: str | Sequence[str] | None,
        reconnects: int,
    ) -> None:
        self.cursor = since
        self.filters = {
            "resource_type": csv(resource_type),
            "resource_id": csv(resource_id),
            "type": csv(types),
        }
        self.reconnects = reconnects
        self.failures = 0
        self.decoder = EventDecoder()

    def call(self) -> Call[None]:
        call = get("/events", nothing, since=self.cursor, **self.filters)
        return replace(call, read_timeout=0)  # quiet for long between events: no read timeout

    def connected(self) -> None:
        self.failures = 0
        self.decoder.discard_partial()

    def feed(self, line: str) -> Event | None:
        event = self.decoder.feed(line)
        if event is not None:
            self.cursor = event.cursor
        return event

    def lost(self, exc: Exception) -> float:
        """The pause before reconnecting; raises once `reconnects` tries in a row failed."""
        self.failures += 1
        if self.failures > self.reconnects:
            if isinstance(exc, BerthError):
                raise exc
            raise ConnectionFailed(f"the event stream was cut and did not resume: {exc}") from exc
        return self.pause()

    def pause(self) -> float:
        return self.decoder.retry if self.decoder.retry is not None else 2.0


def csv(values: str | Sequence[str] | None) -> str | None:
    if values is None or isinstance(values, str):
        return values
    return ",".join(values)


# The longest single long-poll asked of the server (it allows 60 s) and, with a progress
# callback, the slice after which the client looks again and reports what changed.
LONG_POLL = 25.0
PROGRESS_POLL = 1.0


def operation_id(operation: str | Operation | Accepted) -> str:
    if isinstance(operation, Accepted):
        return operation.operation.id
    return operation if isinstance(operation, str) else operation.id


def poll_call(operation_id: str, wait: float) -> Call[Operation]:
    call = get(f"/operations/{operation_id}", model(Operation), wait=round(wait, 3))
    # The server holds the answer up to `wait` seconds: the read timeout must outlast it.
    return replace(call, read_timeout=wait + 30)


class Waiting:
    """The arithmetic of awaiting an operation, apart from the sending."""

    def __init__(
        self,
        operation: str | Operation | Accepted,
        *,
        timeout: float | None,
        on_progress: Callable[[Operation], None] | None,
        check: bool,
    ) -> None:
        self.id = operation_id(operation)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.on_progress = on_progress
        self.check = check
        self._seen: int | None = None

    def next_call(self) -> Call[Operation] | None:
        """The next long-poll, or None when the deadline has passed."""
        wait = PROGRESS_POLL if self.on_progress is not None else LONG_POLL
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(wait, left)
        return poll_call(self.id, wait)

    def seen(self, operation: Operation) -> bool:
        """Report a change to the progress callback; True once the operation is finished."""
        if self.on_progress is not None and operation.version != self._seen:
            self._seen = operation.version
            self.on_progress(operation)
        return operation.done

    def finished(self, operation: Operation) -> Operation:
        if self.check and not operation.succeeded:
            why = f": {operation.error}" if operation.error else ""
            raise OperationFailed(
                f"operation {operation.id} ({operation.kind}) {operation.status}{why}",
                operation=operation,
            )
        return operation

    def timed_out(self, operation: Operation | None) -> BerthError:
        status = operation.status if operation is not None else "unknown"
        return OperationTimeout(
            f"operation {self.id} still {status} when the wait ran out", operation=operation
        )


# What ends an event stream's connection without ending the stream: the server went away
# (cut, restarted, unreachable) or could not answer for a moment.
RESUMABLE = (httpx.TransportError, ConnectionFailed, Unavailable)


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "User-Agent": "berth-client"}


def log_retry(log: logging.Logger, request: httpx.Request, delay: float, attempt: int) -> None:
    # The method and path only: never the headers (the token) or the body (a secret's value).
    log.info(
        "retrying %s %s in %.1f s (retry %d)", request.method, request.url.path, delay, attempt + 1
    )


def fields(**values: Any) -> dict[str, Any]:
    """The body fields that were given (None: left to the server's default)."""
    return {k: v for k, v in values.items() if v is not None}


def stack_fields(
    compose: str | None,
    variables: Mapping[str, str] | None,
    env_files: Mapping[str, str] | None,
    **extra: str | bool | None,
) -> dict[str, Any]:
    return fields(
        compose=compose,
        variables=dict(variables) if variables is not None else None,
        env_files=dict(env_files) if env_files is not None else None,
        **extra,
    )


# The page size a name is looked up with where the API has no filter for it: few requests.
SCAN_PAGE = 500


def pick(name_or_id: str, what: str, candidates: Iterable[M], *, key: str = "name") -> M:
    """The one candidate whose `key` is `name_or_id`; NotFound for none, Conflict for several."""
    named = [item for item in candidates if getattr(item, key, None) == name_or_id]
    if not named:
        raise NotFound(f"no {what} named {name_or_id!r} (nor with that id)")
    if len(named) > 1:
        ids = ", ".join(str(getattr(item, "id", "?")) for item in named)
        raise Conflict(f"{len(named)} {what}s are {name_or_id!r} ({ids}): use an id")
    return named[0]
