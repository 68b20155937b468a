"""The OpenAPI document as Berth really answers, in a shape client generators can use.

Every error is `application/problem+json` with one `Problem` schema. Which errors an operation
can answer with follows from what its route is, so it is worked out here, once, instead of by
hand on every route: a token dependency means 401 and 429 (and 403 above the viewer role); an
id in the path or the body means 404; a write means 400 (a malformed Content-Length or
Idempotency-Key), 409 (a conflict, a concurrent change or a reused Idempotency-Key) and 413
(the body limits); parameters or a body mean 422; a cursor means 400 when it is malformed. A
route adds what only it can answer with `responses={status: {"description": ...}}`; the
Problem content is filled in here.

The headers follow the same way: every POST takes `Idempotency-Key`, every 201 and 202 answer
carries `Location`. What a route's code does and its signature does not show, checking
If-Match (and so answering 412) and sending the version as ETag, its decorator says with
`openapi_extra=versioned(...)`. Every operation's id is its function's name in camelCase
(`list_containers` -> `listContainers`), or the `operation_id=` its decorator gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from app.api.deps import Admin, Operator, ProjectAdmin, ProjectOperator, Viewer
from app.api.gate import Approver
from app.api.paths import API_PREFIX
from app.core.errors import PROBLEM_JSON, Problem
from app.security.roles import Role

_COMPONENTS = "#/components/schemas/{model}"
_PROBLEM_REF = {"$ref": _COMPONENTS.format(model=Problem.__name__)}
_STRING = {"schema": {"type": "string"}}
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The vendor key `versioned()` puts in an operation; read and removed by `add_errors`.
_VERSIONED = "x-berth-versioned"
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'The `version` the change is meant for, as its ETag gave it (`"3"`; a '
    "list or `*` also works); a version that is no longer current is answered 412.",
    "schema": {"type": "string", "maxLength": 1024},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any 1-255 characters chosen by the client. A retry with the same key and "
    "body replays the first answer (same status, same ids) for BERTH_IDEMPOTENCY_TTL_HOURS "
    "(at least 24 h); the same key with another body is answered 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_ETAG = {
    "description": 'The resource\'s `version`, quoted (`"3"`): send it back as If-Match',
    "schema": {"type": "string"},
}
_LOCATION = {
    "description": "The resource created, or the operation that carries the work out "
    "(`/api/v1/operations/{id}`)",
    "schema": {"type": "string"},
}
# FastAPI's own description of a 422, which Berth answers as a Problem instead.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

# Models of bodies that a route reads by hand (multipart or JSON), named in its `openapi_extra`.
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to `model` for a route's hand-written `openapi_extra`; the model's schema is
    added to the document's components (FastAPI adds only the models routes take as params)."""
    _BODY_MODELS[model.__name__] = model
    return {"$ref": _COMPONENTS.format(model=model.__name__)}


def operation_id(route: APIRoute) -> str:
    """The operationId FastAPI gives `route` (and so the name of a form body's schema,
    `Body_<operationId>`): its function's name in camelCase, a client's method name."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def versioned(*, checks_if_match: bool = False, sends_etag: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a route whose code honours If-Match on the resource it changes
    (`check_if_match`: 412) or sends the resource's version as ETag on its success answer."""
    return {_VERSIONED: {"if_match": checks_if_match, "etag": sends_etag}}


def _role_checks() -> dict[Callable[..., Any], Role]:
    checks: dict[Callable[..., Any], Role] = {}
    # A project-scoped gate is documented as the global role that passes it in every project.
    for alias, role in (
        (Viewer, Role.viewer),
        (Operator, Role.operator),
        (Admin, Role.admin),
        (ProjectOperator, Role.operator),
        (ProjectAdmin, Role.admin),
        # An approver in some project: of the global roles, only an admin is one everywhere.
        (Approver, Role.admin),
    ):
        checks[get_args(alias)[1].dependency] = role
    return checks


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def required_role(route: APIRoute, checks: dict[Callable[..., Any], Role]) -> Role | None:
    """The role a route's token must have, or None for a route that takes no token."""
    roles = [checks[d.call] for d in _dependencies(route.dependant) if d.call in checks]
    return max(roles, key=lambda role: role.rank) if roles else None


def _names_an_id(node: Any, schemas: dict[str, Any], seen: set[str]) -> bool:
    """Whether a request body schema has a field that names another resource by id."""
    if isinstance(node, list):
        return any(_names_an_id(item, schemas, seen) for item in node)
    if not isinstance(node, dict):
        return False
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            return False
        seen.add(name)
        return _names_an_id(schemas.get(name), schemas, seen)
    properties = node.get("properties") or {}
    if any(key.endswith(("_id", "_ids")) for key in properties):
        return True
    return any(_names_an_id(value, schemas, seen) for value in node.values())


def error_statuses(
    route: APIRoute, method: str, role: Role | None, *, body_names_an_id: bool, if_match: bool
) -> dict[int, str]:
    """Each error status `method` on `route` can answer with, and when."""
    dependant = route.dependant
    statuses: dict[int, str] = {}
    if role is not None:
        statuses[401] = "No bearer token, or one that is invalid, revoked or expired"
        if role is not Role.viewer:
            statuses[403] = f"The token's role is below {role.value}"
        statuses[429] = "Too many failed authentications from this client; retry after Retry-After"
    if dependant.path_params or body_names_an_id:
        statuses[404] = "No such resource (named in the path or the body)"
    elif any(param.name == "project" for param in dependant.query_params):
        statuses[404] = "No project readable by the caller has the name `project` gives"
    if any(param.name == "cursor" for param in dependant.query_params):
        statuses[400] = "A malformed cursor"
    if method in _MUTATING:
        statuses[400] = "A malformed Content-Length or Idempotency-Key"
        statuses[409] = (
            "A conflict with the resource's state or a concurrent change, "
            "or an Idempotency-Key reused for a different request"
        )
        statuses[413] = "The request body is over the limit"
        statuses[422] = "The request broke a rule; `errors` names each field"
    if if_match:
        statuses[412] = "If-Match named a version that is no longer current"
    if dependant.path_params or dependant.query_params or dependant.header_params:
        statuses[422] = "The request broke a rule; `errors` names each field"
    return statuses


def _problem_response(description: str, status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
        }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        }
    return response


def _document_headers(operation: dict[str, Any], method: str, path: str) -> bool:
    """Add the headers `operation` takes and answers; whether it checks If-Match."""
    marks = operation.pop(_VERSIONED, {})
    parameters: list[dict[str, Any]] = []
    if marks.get("if_match"):
        parameters.append(_IF_MATCH)
    # The idempotency middleware replays every POST under the API prefix.
    if method == "POST" and path.startswith(API_PREFIX):
        parameters.append(_IDEMPOTENCY_KEY)
    if parameters:
        operation["parameters"] = [*operation.get("parameters", []), *parameters]
    for code, response in operation.get("responses", {}).items():
        headers: dict[str, Any] = {}
        if code in ("201", "202"):
            headers["Location"] = _LOCATION
        if code[0] == "2" and marks.get("etag"):
            headers["ETag"] = _ETAG
        if headers:
            response["headers"] = {**response.get("headers", {}), **headers}
    return bool(marks.get("if_match"))


def _document_operation(operation: dict[str, Any], statuses: dict[int, str]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, description in statuses.items():
        declared = responses.get(str(status), {})
        # FastAPI's 422 describes its own error body, which Berth replaces.
        if "content" in declared and status != 422:
            continue
        responses[str(status)] = _problem_response(declared.get("description", description), status)
    # Errors the route declared itself (`responses=`) get the Problem body too.
    for code, declared in list(responses.items()):
        if code[0] in "45" and "content" not in declared:
            responses[code] = _problem_response(str(declared["description"]), int(code))


def _document_validators(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A JSON `GET` names its ETag: the resource's `version` (for If-Match) when it has one, else
    a weak tag over the content that If-None-Match turns into a 304
    (app/api/middleware/conditional.py)."""
    ok = operation.get("responses", {}).get("200", {})
    schema = ok.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return
    name = str(schema.get("$ref", "")).removeprefix(_COMPONENTS.format(model=""))
    if "version" in schemas.get(name, {}).get("properties", {}):
        ok["headers"] = {"ETag": {"description": '`"<version>"`, for If-Match', **_STRING}}
        return
    etag = {"ETag": {"description": '`W/"<digest>"`, over the body', **_STRING}}
    ok["headers"] = etag
    operation["responses"]["304"] = {
        "description": "Not modified: If-None-Match named the current ETag (no body)",
        "headers": etag,
    }


def _routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[APIRoute, str]]:
    for route in routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                yield route, method


def add_errors(document: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """`document` (FastAPI's) with every operation's errors, the schemas they name, and the
    headers it takes and answers."""
    checks = _role_checks()
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    models: list[type[BaseModel]] = [Problem, *_BODY_MODELS.values()]
    _, extra = models_json_schema([(m, "validation") for m in models], ref_template=_COMPONENTS)
    for name, schema in extra.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for route, method in _routes(routes):
        operation = document["paths"][route.path_format][method.lower()]
        if_match = _document_headers(operation, method, route.path_format)
        names_an_id = _names_an_id(operation.get("requestBody"), schemas, set())
        role = required_role(route, checks)
        statuses = error_statuses(
            route, method, role, body_names_an_id=names_an_id, if_match=if_match
        )
        _document_operation(operation, statuses)
        if method == "GET":
            _document_validators(operation, schemas)
    return document


def install(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Make `app.openapi()` (and so /openapi.json) answer the document with the errors of
    `routes`, the routes of the routers the app includes (FastAPI's own list of the app's
    routes holds the included routers, not their routes, in its newer versions)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_errors(generate(), routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
