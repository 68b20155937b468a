"""The OpenAPI document says what Berth really answers, and the pages that show it load
nothing from another origin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema

from app.security.roles import Role
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
    schemas: dict[str, Any] = _point_to_defs(spec["components"]["schemas"])
    return {**schemas["Problem"], "$defs": schemas}


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
