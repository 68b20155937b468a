"""Compose files Berth refuses: 422s that point into the file, and nothing stored.
(A stack's life on a real engine is in test_stack_lifecycle.py.)"""

from __future__ import annotations

import io
import tarfile

import pytest

from tests.support import Api

BAD: list[tuple[str, dict[str, str], str, str]] = [
    (
        "services:\n  web:\n    image: busybox\n    stop_grace_period: 10s\n",
        {},
        "compose.services.web.stop_grace_period",
        "not supported",
    ),
    (
        "services:\n  web:\n    image: busybox\n    ports: 80: 90\n",
        {},
        "compose",
        "line 4",
    ),
    (
        "services:\n  web:\n    image: busybox:${TAG}\n",
        {},
        "compose.services.web.image",
        "'TAG' is not set",
    ),
    (
        "services:\n  web:\n    image: busybox\n    volumes: ['/etc:/host-etc']\n",
        {},
        "compose.services.web.volumes[0]",
        "bind",
    ),
    (
        "services:\n  web:\n    build: ./web\n",
        {},
        "compose.services.web.build",
        "context.web",
    ),
]


@pytest.mark.parametrize(("compose", "variables", "loc", "words"), BAD)
def test_bad_compose_files_are_refused_with_their_path(
    api: Api, compose: str, variables: dict[str, str], loc: str, words: str
) -> None:
    host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
    response = api.post(
        "/stacks",
        json={"name": "bad", "compose": compose, "variables": variables, "host_id": host["id"]},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert any(e["loc"].startswith(loc) for e in problem["errors"]), problem
    assert words in problem["detail"], problem
    # Nothing was stored.
    assert api.get("/stacks").json()["items"] == []
    assert api.get("/services").json()["items"] == []
    assert [o["kind"] for o in api.get("/operations").json()["items"]] in ([], ["host.probe"])


def test_a_build_context_whose_links_chain_out_is_refused(api: Api) -> None:
    # d1 is the context root, so d1/d2 is d2, and ../.. from there is outside the context.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        dockerfile = tarfile.TarInfo("Dockerfile")
        dockerfile.size = len(b"FROM busybox\n")
        archive.addfile(dockerfile, io.BytesIO(b"FROM busybox\n"))
        for name, target in (("d1", "."), ("d1/d2/l", "../..")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            archive.addfile(link)
    host = api.post("/hosts", json={"name": "h1", "url": "unix:///nonexistent.sock"}).json()
    response = api.post(
        "/stacks",
        data={
            "name": "links",
            "compose": "services:\n  web:\n    build: .\n",
            "host_id": host["id"],
        },
        files={"context.web": ("web.tar.gz", buffer.getvalue(), "application/gzip")},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {
            "loc": "compose.services.web.build",
            "msg": "member 'd1/d2/l' link target '../..' points outside the context",
        }
    ]
    assert api.get("/stacks").json()["items"] == []
