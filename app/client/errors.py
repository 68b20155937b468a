"""What the client raises: one base, a subclass per HTTP status, each carrying the problem."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class BerthError(Exception):
    """Base of everything the client raises. `status` is the HTTP status (None when no answer
    came); `problem` is the server's problem document (RFC 9457), `{}` when there was none."""

    status: int | None = None

    def __init__(
        self, message: str, *, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.problem: dict[str, Any] = problem or {}

    @property
    def detail(self) -> str:
        detail = self.problem.get("detail")
        return detail if isinstance(detail, str) else self.message

    @property
    def errors(self) -> list[dict[str, Any]]:
        """For a 422: one entry per field that broke a rule (`loc`, `msg`)."""
        errors = self.problem.get("errors")
        return errors if isinstance(errors, list) else []


class ConfigurationError(BerthError):
    """No server URL or token was given (arguments, BERTH_URL/BERTH_TOKEN, the login file)."""


class ConnectionFailed(BerthError):
    """The server could not be reached (refused, unknown name, timed out, connection cut)."""


class BadRequest(BerthError):
    status = 400


class Unauthorized(BerthError):
    """No token, or a wrong, revoked or expired one."""

    status = 401


class Forbidden(BerthError):
    """The token's role may not do this."""

    status = 403


class NotFound(BerthError):
    status = 404


class Conflict(BerthError):
    """The resource changed or is in the way (409), or an If-Match failed (412)."""

    status = 409


class PreconditionFailed(Conflict):
    """412: the object changed since the version given in If-Match (a Conflict too)."""

    status = 412


class Gone(BerthError):
    """An event cursor older than the events the server keeps."""

    status = 410


class PayloadTooLarge(BerthError):
    status = 413


class Invalid(BerthError):
    """The request broke a rule; `errors` names each field."""

    status = 422


class RateLimited(BerthError):
    """429 after the retries the client allows; `retry_after` is the server's wait, if any."""

    status = 429

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, problem=problem)
        self.retry_after = retry_after


class Unavailable(BerthError):
    """503: the server (or the Docker host it asked) could not answer now."""

    status = 503


class ServerError(BerthError):
    """Any other 5xx: a defect on the server; its log holds the request id."""

    status = 500


class OperationFailed(BerthError):
    """An awaited operation ended `failed` or `cancelled`; `operation` is its last state."""

    def __init__(self, message: str, *, operation: Any) -> None:
        super().__init__(message)
        self.operation = operation


class OperationTimeout(BerthError):
    """An awaited operation had not finished when the wait's timeout ran out."""

    def __init__(self, message: str, *, operation: Any) -> None:
        super().__init__(message)
        self.operation = operation


_BY_STATUS: dict[int, type[BerthError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: Invalid,
    429: RateLimited,
    503: Unavailable,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for(response: httpx.Response) -> BerthError:
    """The exception for an error answer (its body already read)."""
    problem: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
    detail = problem.get("detail")
    text = detail if isinstance(detail, str) else (response.text[:300] or response.reason_phrase)
    message = f"{response.status_code} {response.reason_phrase}: {text}"
    status = response.status_code
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else BerthError)
    if kind is RateLimited:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimited(message, status=status, problem=problem, retry_after=retry_after)
    return kind(message, status=status, problem=problem)
