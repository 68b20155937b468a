"""The OpenAPI document says what Berth really answers, and the pages that show it load
nothing from another origin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from pydantic import BaseModel

from app.containers.schemas import ContainerCreate
from app.hosts.schemas import HostCreate
from app.images.schemas import ImagePull, ImagePush, ImageTag
from app.registries.schemas import RegistryCreate
from app.secrets.schemas import SecretCreate
from app.security.roles import Role
from app.services.schemas import ServiceCreate, ServiceReplace
from app.stacks.schemas import StackCreate, StackUpdate
from app.tokens.schemas import TokenCreate
from tests.support import Api

PROBLEM = "application/problem+json"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def test_every_ref_resolves(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    refs = set(_refs(spec))
    assert "#/components/schemas/StackCreate" in refs
    assert "#/components/schemas/Problem" in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in spec["components"]["schemas"], ref


def test_errors_are_documented_as_problems(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, operation in _operations(spec):
        responses = operation["responses"]
        for status, response in responses.items():
            if status[0] in "45":
                assert list(response["content"]) == [PROBLEM], (method, path, status)
                schema = response["content"][PROBLEM]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
        statuses = set(responses)
        if operation.get("security"):
            assert {"401", "429"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        if method != "GET":
            assert {"409", "413", "422"} <= statuses, (method, path)
    paths = spec["paths"]
    assert "403" not in paths["/api/v1/hosts"]["get"]["responses"]  # viewers may
    assert "403" in paths["/api/v1/hosts"]["post"]["responses"]
    assert "412" in paths["/api/v1/hosts/{host_id}"]["patch"]["responses"]
    assert "410" in paths["/api/v1/events"]["get"]["responses"]
    assert "503" in paths["/api/v1/containers/{container_id}/stats"]["get"]["responses"]
    assert "422" in paths["/api/v1/stacks"]["post"]["responses"]


def test_real_problems_match_the_documented_schema(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    problem = _problem_schema(spec)
    answers = [
        api.get("/hosts", role=None),
        api.post("/hosts", json={}, role=Role.viewer),
        api.get("/hosts/nope"),
        api.post("/hosts", json={"name": 5}),
        api.post("/stacks", json={"name": "x"}),
        api.get("/hosts", params={"cursor": "!!"}),
    ]
    assert [a.status_code for a in answers] == [401, 403, 404, 422, 422, 400]
    for answer in answers:
        assert answer.headers["content-type"] == PROBLEM
        jsonschema.validate(answer.json(), problem)
    assert answers[3].json()["errors"][0]["loc"] == "body.name"


def _problem_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The Problem schema, its `$ref`s pointing into `$defs` that hold the components."""
    return _standalone(spec, {"$ref": "#/components/schemas/Problem"})


def _standalone(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` from the document, its `$ref`s pointing into `$defs` that hold the components."""
    schemas: dict[str, Any] = _point_to_defs(spec["components"]["schemas"])
    return {**_point_to_defs(schema), "$defs": schemas}


def _point_to_defs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/components/schemas/", "#/$defs/")
                if key == "$ref"
                else _point_to_defs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_point_to_defs(value) for value in node]
    return node


def _local_urls(html: str) -> list[str]:
    """The URLs a page loads: `src=`, `href=`, and the `url:` Swagger UI's script fetches."""
    found = re.finditer(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""", html)
    return [match.group(1) or match.group(2) for match in found]


def test_docs_pages_load_nothing_from_another_origin(api: Api) -> None:
    for page in ("/docs", "/redoc"):
        response = api.client.get(page)
        assert response.status_code == 200, page
        html = response.text
        assert not re.search(r"https?://", html), (page, re.findall(r"https?://\S+", html))
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        urls = _local_urls(html)
        assert any(url.endswith(".js") for url in urls), html
        for url in urls:
            assert url.startswith("/"), (page, url)
            asset = api.client.get(url)
            assert asset.status_code == 200, (page, url)
            assert asset.content, (page, url)
    assert api.client.get("/docs/assets/../../etc/passwd").status_code == 404
    assert api.client.get("/docs/assets/core.py").status_code == 404


def test_operation_ids_are_unique_camel_case_names(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    ids = [operation["operationId"] for _, _, operation in _operations(spec)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for operation_id in ids:
        assert re.fullmatch(r"[a-z]+(?:[A-Z0-9][a-z0-9]*)*", operation_id), operation_id
    paths = spec["paths"]
    assert paths["/api/v1/containers"]["get"]["operationId"] == "listContainers"
    assert paths["/api/v1/services"]["post"]["operationId"] == "createService"
    assert paths["/api/v1/services/{service_id}"]["get"]["operationId"] == "getService"
    assert paths["/api/v1/stacks/{stack_id}"]["delete"]["operationId"] == "deleteStack"
    check = paths["/api/v1/services/{service_id}/check-image"]["post"]
    assert check["operationId"] == "checkServiceImage"
    logs = paths["/api/v1/containers/{container_id}/logs"]["get"]
    assert logs["operationId"] == "getContainerLogs"
    # A form body's schema is named after its operation, not after FastAPI's long default.
    assert "Body_buildImage" in spec["components"]["schemas"]


def _header_names(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}


def test_request_and_response_headers_are_documented_where_they_apply(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    for method, path, operation in _operations(spec):
        headers = _header_names(operation)
        responses = operation["responses"]
        if method == "POST" and path.startswith("/api/v1/"):
            assert "Idempotency-Key" in headers, path
        # 412 is documented exactly where If-Match is taken.
        assert ("If-Match" in headers) == ("412" in responses), (method, path)
        for status in {"201", "202"} & set(responses):
            assert "Location" in responses[status]["headers"], (method, path)
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"], (method, path)
    paths = spec["paths"]
    host = paths["/api/v1/hosts/{host_id}"]
    assert "ETag" in host["get"]["responses"]["200"]["headers"]
    assert {"If-Match"} <= _header_names(host["patch"])
    assert "ETag" in host["patch"]["responses"]["200"]["headers"]
    assert "If-Match" not in _header_names(paths["/api/v1/hosts/{host_id}/drain"]["post"])
    assert "If-Match" in _header_names(paths["/api/v1/services/{service_id}"]["put"])


def test_documented_headers_are_the_ones_answered(api: Api) -> None:
    body = {"name": "team", "url": "https://registry.example.com", "username": "ci"}
    created = api.post("/registries", json=body)
    assert created.status_code == 201, created.text
    registry = created.json()
    assert created.headers["location"] == f"/api/v1/registries/{registry['id']}"
    assert created.headers["etag"] == f'"{registry["version"]}"'
    path = f"/registries/{registry['id']}"
    assert api.get(path).headers["etag"] == '"1"'
    stale = api.patch(path, json={"username": "other"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412, stale.text
    current = api.patch(path, json={"username": "other"}, headers={"If-Match": '"1"'})
    assert current.status_code == 200, current.text
    assert current.headers["etag"] == '"2"'
    assert api.delete(path, headers={"If-Match": '"1"'}).status_code == 412

    # A route that documents no If-Match does not check one.
    queued = api.post("/debug/operations", json={"kind": "debug.sleep", "params": {"s": 30}})
    assert queued.status_code == 202, queued.text
    operation_id = queued.json()["operation"]["id"]
    assert queued.headers["location"] == f"/api/v1/operations/{operation_id}"
    cancelled = api.post(f"/operations/{operation_id}/cancel", headers={"If-Match": '"99"'})
    assert cancelled.status_code == 202, cancelled.text
    api.wait_operation(operation_id)


def _examples(spec: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """Every example in the document, where it is and the schema it illustrates."""
    for name, schema in spec["components"]["schemas"].items():
        for example in schema.get("examples", []):
            yield name, example, {"$ref": f"#/components/schemas/{name}"}
    for method, path, operation in _operations(spec):
        for media, content in operation.get("requestBody", {}).get("content", {}).items():
            if "example" in content:
                yield f"{method} {path} {media}", content["example"], content["schema"]
            for example in content.get("examples", {}).values():
                yield f"{method} {path} {media}", example["value"], content["schema"]


def test_main_request_bodies_have_examples_that_validate(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    examples = list(_examples(spec))
    illustrated = {where for where, _, _ in examples}
    main_bodies = {
        "ContainerCreate",
        "ServiceCreate",
        "ServiceReplace",
        "StackCreate",
        "StackUpdate",
        "SecretCreate",
        "RegistryCreate",
        "HostCreate",
        "TokenCreate",
        "ImagePull",
        "ImagePush",
        "ImageTag",
        "POST /api/v1/images/build multipart/form-data",
    }
    assert main_bodies <= illustrated, main_bodies - illustrated
    for where, example, schema in examples:
        errors = list(
            jsonschema.Draft202012Validator(_standalone(spec, schema)).iter_errors(example)
        )
        assert not errors, (where, [e.message for e in errors])


def test_the_examples_are_accepted_by_the_models_behind_them(api: Api) -> None:
    """The document's validation is looser than the models' (one-of rules, URL checks): each
    example of a JSON body is also one the model accepts."""
    spec = api.client.get("/openapi.json").json()
    models: dict[str, type[BaseModel]] = {
        model.__name__: model
        for model in (
            ContainerCreate,
            ServiceCreate,
            ServiceReplace,
            StackCreate,
            StackUpdate,
            SecretCreate,
            RegistryCreate,
            HostCreate,
            TokenCreate,
            ImagePull,
            ImagePush,
            ImageTag,
        )
    }
    for name, model in models.items():
        for example in spec["components"]["schemas"][name]["examples"]:
            model.model_validate(example)


def test_a_build_form_still_takes_plain_tags(api: Api) -> None:
    """The document names one tags field (`tags[]`); the form also takes `tags`."""
    answer = api.post(
        "/images/build",
        files={"context": ("context.tar", b"", "application/x-tar")},
        data={"host_id": "nope", "tags": [f"app:{n}" for n in range(51)]},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [{"loc": "body.tags", "msg": "at most 50 tags"}]
