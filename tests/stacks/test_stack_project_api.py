"""The project part and the dry run at the API, without an engine: a hostile archive or a
missing Compose file is a 422 at `body.project` that stores nothing, and a dry run answers
its plan (or the refusal a deploy would get) and stores nothing."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from tests.support import Api, context_tar

NO_ENGINE = "unix:///nonexistent.sock"
COMPOSE = b"version: '3'\nservices:\n  web:\n    image: busybox:${TAG}\n"


def _nothing_stored(api: Api) -> None:
    assert api.get("/stacks").json()["items"] == []
    assert api.get("/services").json()["items"] == []
    assert api.get("/secrets").json()["items"] == []
    assert [o["kind"] for o in api.get("/operations").json()["items"]] in ([], ["host.probe"])


def _post(api: Api, archive: bytes, *, params: dict[str, str] | None = None, **fields: Any) -> Any:
    hosts = api.get("/hosts").json()["items"]
    host = hosts[0] if hosts else api.post("/hosts", json={"name": "h1", "url": NO_ENGINE}).json()
    return api.post(
        "/stacks",
        params=params,
        data={"name": "shop", "host_id": host["id"], **fields},
        files={"project": ("project.tar", archive)},
    )


def _escaping_link() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        compose = tarfile.TarInfo("compose.yaml")
        compose.size = len(COMPOSE)
        archive.addfile(compose, io.BytesIO(COMPOSE))
        link = tarfile.TarInfo("etc")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc"
        archive.addfile(link)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("archive", "words"),
    [
        (_escaping_link(), "points outside the context"),
        (context_tar({"other.yaml": COMPOSE}), "has no Compose file"),
        (b"not a tar at all" * 100, "not a valid tar archive"),
    ],
)
def test_a_bad_project_archive_is_refused_at_its_part(api: Api, archive: bytes, words: str) -> None:
    response = _post(api, archive)

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["errors"]] == ["body.project"]
    assert words in response.json()["detail"]
    _nothing_stored(api)


def test_a_dry_run_answers_the_plan_and_its_warnings_and_stores_nothing(api: Api) -> None:
    archive = context_tar({"compose.yaml": COMPOSE, ".env": b"TAG=1.36\n"})

    response = _post(api, archive, params={"dry_run": "true"})

    assert response.status_code == 200, response.text
    plan = response.json()
    assert [(s["compose_name"], s["image"], s["action"]) for s in plan["services"]] == [
        ("web", "busybox:1.36", "create")
    ]
    assert plan["warnings"] == ["compose.version: the top-level `version` is obsolete and ignored"]
    _nothing_stored(api)


def test_an_unset_variable_refused_by_a_dry_run_names_it(api: Api) -> None:
    archive = context_tar({"compose.yaml": COMPOSE})

    lenient = _post(api, archive, params={"dry_run": "true"})
    strict = _post(api, archive, params={"dry_run": "true"}, strict="true")

    # `busybox:` is not an image reference: the refusal says which variable left it empty.
    assert lenient.status_code == 422, lenient.text
    assert "variable 'TAG' is not set: it is taken as an empty string" in lenient.json()["detail"]
    assert strict.status_code == 422, strict.text
    assert strict.json()["errors"][0]["msg"].startswith("variable 'TAG' is not set (give it")
    _nothing_stored(api)
