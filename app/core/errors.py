"""Domain errors, raised anywhere inside, mapped once to RFC 9457 problem+json at the edge."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("berth.errors")


class BerthError(Exception):
    """Base of every error that reaches a client. `status` picks the HTTP status."""

    status: int = 400
    kind: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers


class BadRequest(BerthError):
    status, kind = 400, "bad-request"


class Unauthorized(BerthError):
    status, kind = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="berth"'})


class Forbidden(BerthError):
    status, kind = 403, "forbidden"


class NotFound(BerthError):
    status, kind = 404, "not-found"


class Conflict(BerthError):
    status, kind = 409, "conflict"


class PreconditionFailed(BerthError):
    status, kind = 412, "precondition-failed"


class PayloadTooLarge(BerthError):
    status, kind = 413, "payload-too-large"


class Invalid(BerthError):
    """Input that parses but breaks a rule; `errors` names each field."""

    status, kind = 422, "validation-error"

    @classmethod
    def listing(cls, title: str, errors: list[dict[str, Any]]) -> Invalid:
        """One error per field, the first few also summarised in `detail`."""
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
        return cls(f"{title}: {summary}", errors=errors)

    @classmethod
    def from_model(
        cls,
        exc: ValidationError,
        *,
        prefix: str,
        title: str = "invalid request",
        path: Callable[[Sequence[Any]], str] | None = None,
    ) -> Invalid:
        """A pydantic validation failure of input found at `prefix` (e.g. `body.spec`); each
        location is `prefix.a.0.b` as FastAPI writes them, unless `path` says otherwise."""
        where = path or (lambda parts: "".join(f".{part}" for part in parts))
        errors = [{"loc": prefix + where(err["loc"]), "msg": err["msg"]} for err in exc.errors()]
        return cls.listing(title, errors)


def file_path(parts: Sequence[Any]) -> str:
    """A location in a document: `.name` for keys, `[n]` for list positions (`.ports[0]`)."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


class PolicyViolation(Invalid):
    kind = "policy-violation"


class HostUnavailable(BerthError):
    status, kind = 503, "host-unavailable"


class ProblemError(BaseModel):
    """One field that broke a rule."""

    loc: str = Field(
        description="Where: `body.name`, `query.limit`, `compose.services.web.ports[0]`"
    )
    msg: str


class Problem(BaseModel):
    """The body of every error answer (RFC 9457), sent as `application/problem+json`; what
    `problem` below writes (the OpenAPI document describes every error with this schema)."""

    type: str = Field(description="`https://berth.dev/problems/<kind>`: the kind of problem")
    title: str = Field(description="The HTTP status phrase")
    status: int = Field(description="The HTTP status")
    detail: str = Field(description="What went wrong, for a person")
    errors: list[ProblemError] = Field(
        default_factory=list,
        description="For a 422: one entry per field that broke a rule (absent otherwise)",
    )


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": f"https://berth.dev/problems/{kind or title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BerthError)
    async def _berth_error(_request: Request, exc: BerthError) -> JSONResponse:
        return problem(
            exc.status, exc.detail, kind=exc.kind, errors=exc.errors, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": _loc(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()
        ]
        invalid = Invalid.listing("invalid request", errors)
        return problem(422, invalid.detail, kind=invalid.kind, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(IntegrityError)
    async def _lost_race(_request: Request, exc: IntegrityError) -> JSONResponse:
        # Two requests checked, both found the way clear, and the database let only one of them
        # in (the same name created twice at once, a row deleted meanwhile). Its message holds
        # the statement's parameters, so only the kind of error is logged.
        log.warning("a concurrent change won", extra={"error": type(exc.orig).__name__})
        return problem(
            409,
            "a concurrent request changed the same resources first "
            "(for example, created one of the same name); read them again and retry",
            kind="conflict",
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it with its trace, tell the client nothing internal.
        log.error("unhandled error", exc_info=exc)
        return problem(500, "internal error; see the server log for this request id")
