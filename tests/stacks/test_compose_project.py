"""A Compose project as a directory (pure: no engine): `extends` and `include` from other files,
`.env` under the request's variables, unset variables and warnings, the Compose file's search
order, build contexts found in the project, and hostile archives refused."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from app.core.config import Settings
from app.core.errors import Invalid
from app.stacks.compose import ComposeError, ComposeProject, parse
from app.stacks.project import InvalidProject, open_project
from app.stacks.schemas import StackCreate
from app.stacks.service import check_upload
from tests.support import context_tar

SETTINGS = Settings.model_construct(
    max_build_context_unpacked_bytes=4 * 2**20, max_build_context_ratio=100
)


def _parse(text: str, files: dict[str, str] | None = None, **options: Any) -> ComposeProject:
    return parse(text, project="shop", variables={}, env_files={}, files=files or {}, **options)


def _errors(text: str, files: dict[str, str] | None = None) -> list[dict[str, str]]:
    with pytest.raises(ComposeError) as caught:
        _parse(text, files)
    return caught.value.errors


def _specs(project: ComposeProject) -> dict[str, dict[str, Any]]:
    return {service.name: service.spec for service in project.services}


def test_extends_in_the_same_file_merges_the_base_under_the_service() -> None:
    project = _parse(
        "services:\n"
        "  base:\n    image: busybox\n    environment: {A: '1', B: '2'}\n"
        "    command: [sleep, '1']\n    ports: ['8000:80']\n"
        "  web:\n    extends: base\n    environment: [B=3, C=4]\n    ports: ['8001:81']\n"
    )

    web = _specs(project)["web"]
    assert web["image"] == "busybox"
    assert web["env"] == {"A": "1", "B": "3", "C": "4"}
    assert web["command"] == ["sleep", "1"]
    assert [p["host_port"] for p in web["ports"]] == [8000, 8001]


def test_extends_from_another_file_resolves_its_paths_from_that_file() -> None:
    common = "services:\n  app:\n    build: ./app\n    env_file: app.env\n"
    project = parse(
        "services:\n  web:\n    extends: {file: base/common.yaml, service: app}\n",
        project="shop",
        variables={},
        env_files={"base/app.env": "FROM_BASE=yes\n"},
        files={"base/common.yaml": common},
    )

    web = project.services[0]
    assert web.build is not None and web.build.context == "base/app"
    assert web.spec["env"] == {"FROM_BASE": "yes"}


@pytest.mark.parametrize(
    ("text", "files", "loc", "words"),
    [
        (
            "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
            {},
            "compose.services.a.extends",
            "cycle",
        ),
        (
            "services:\n  a:\n    extends: {file: other.yaml, service: x}\n",
            {},
            "compose.services.a.extends",
            "not in the project",
        ),
        (
            "services:\n  a:\n    extends: {file: ../other.yaml, service: x}\n",
            {},
            "compose.services.a.extends.file",
            "outside the project",
        ),
        (
            "services:\n  a:\n    extends: nothing\n",
            {},
            "compose.services.a.extends.service",
            "not defined",
        ),
        (
            "include: [db.yaml]\nservices:\n  db:\n    image: busybox\n",
            {"db.yaml": "services:\n  db:\n    image: busybox\n"},
            "compose.include[0]",
            "defined by the including file too",
        ),
    ],
)
def test_extends_and_include_refusals(
    text: str, files: dict[str, str], loc: str, words: str
) -> None:
    errors = _errors(text, files)

    assert any(e["loc"] == loc and words in e["msg"] for e in errors), errors


def test_include_brings_services_and_resources_with_their_paths() -> None:
    included = "services:\n  db:\n    build: .\n    volumes: [data:/data]\nvolumes:\n  data: {}\n"
    project = _parse(
        "include:\n  - db/compose.yaml\nservices:\n  web:\n    image: busybox\n"
        "    depends_on: [db]\n",
        {"db/compose.yaml": included},
    )

    db = next(s for s in project.services if s.name == "db")
    assert db.build is not None and db.build.context == "db"
    assert project.volumes == ["shop_data"]
    assert [s.name for s in project.services] == ["db", "web"]


def test_an_unset_variable_is_empty_with_a_warning_unless_strict() -> None:
    text = (
        "services:\n  web:\n    image: busybox\n    environment: {A: 'x${UNSET}y', B: '$UNSET'}\n"
    )

    project = _parse(text, strict=False)
    assert project.services[0].spec["env"] == {"A": "xy", "B": ""}
    assert project.warnings == [
        "compose.services.web.environment.A: variable 'UNSET' is not set: "
        "it is taken as an empty string"
    ]
    errors = _errors(text)
    assert [e["loc"] for e in errors] == [
        "compose.services.web.environment.A",
        "compose.services.web.environment.B",
    ]


def test_ignored_keys_are_warned_about() -> None:
    project = _parse(
        "version: '3.8'\nx-common: &common {restart: always}\n"
        "services:\n  web:\n    image: busybox\n    x-note: hi\n"
    )

    assert project.warnings == [
        "compose.x-common: extension keys (x-*) are ignored",
        "compose.services.web.x-note: extension keys (x-*) are ignored",
        "compose.version: the top-level `version` is obsolete and ignored",
    ]


def _upload(archive: bytes, **fields: Any) -> Any:
    data = StackCreate.model_validate({"name": "shop", **fields})
    return check_upload(
        stack_name="shop", data=data, contexts={}, project_archive=archive, settings=SETTINGS
    )


WEB_DOCKERFILE = b"FROM 10.0.0.5:5000/base:1\nCOPY . /app\n"


def test_a_project_gives_the_file_its_env_files_dotenv_and_build_contexts() -> None:
    archive = context_tar(
        {
            "docker-compose.yml": b"services:\n  web:\n    build: ./web\n"
            b"    env_file: web.env\n    environment: {TAG: '${TAG}', WHO: '${WHO}'}\n",
            ".env": b"TAG=from-dotenv\nWHO=from-dotenv\n",
            "web.env": b"IN_FILE=1\n",
            "web/Dockerfile": WEB_DOCKERFILE,
            "web/index.html": b"hello\n",
            "unused/big.bin": b"x" * 10,
        },
        gzip=True,
    )

    upload = _upload(archive, variables={"WHO": "from-request"})

    service = upload.project.services[0]
    assert service.spec["env"] == {"IN_FILE": "1", "TAG": "from-dotenv", "WHO": "from-request"}
    assert upload.compose_text.startswith("services:")
    with tarfile.open(fileobj=io.BytesIO(upload.builds["web"].context)) as context:
        assert sorted(context.getnames()) == ["Dockerfile", "index.html"]
    # The same project builds under the same tag: an unchanged folder rolls nothing.
    assert _upload(archive, variables={"WHO": "x"}).builds["web"].tag == upload.builds["web"].tag


def test_the_compose_file_named_by_file_resolves_paths_from_its_folder() -> None:
    archive = context_tar(
        {
            "deploy/compose.yaml": b"services:\n  web:\n    build: ..\n",
            "deploy/.env": b"",
            "Dockerfile": WEB_DOCKERFILE,
        }
    )

    upload = _upload(archive, file="deploy/compose.yaml")

    assert upload.builds["web"].context == archive
    with pytest.raises(Invalid) as missing:
        _upload(archive)
    assert missing.value.errors == [
        {
            "loc": "body.project",
            "msg": "the project archive has no Compose file (compose.yaml, compose.yml, "
            "docker-compose.yaml, docker-compose.yml) that is a text file of at most 1 MiB",
        }
    ]


COMPOSE = b"services:\n  web:\n    image: busybox\n"


def _tar(members: list[tarfile.TarInfo], *, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(_file("compose.yaml", COMPOSE), io.BytesIO(COMPOSE))
        for member in members:
            archive.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _bomb() -> bytes:
    """A gzip of 8 MiB of zeros (past the 4 MiB the settings above allow)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(_file("compose.yaml", COMPOSE), io.BytesIO(COMPOSE))
        archive.addfile(_file("zeros", b"\0" * (8 * 2**20)), io.BytesIO(b"\0" * (8 * 2**20)))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("archive", "words"),
    [
        (_tar([_file("../evil", b"x")], data=b"x"), "has a '..' component"),
        (_tar([_link("etc", "../../etc")]), "points outside the context"),
        (_tar([_link("abs", "/etc/passwd")]), "is absolute"),
        (_bomb(), "the project archive unpacks to more than"),
    ],
)
def test_hostile_project_archives_are_refused(archive: bytes, words: str) -> None:
    with pytest.raises(InvalidProject) as refused:
        open_project(archive, file=None, settings=SETTINGS)

    assert words in str(refused.value)


def test_file_secrets_and_configs_of_a_project_become_the_stacks_own_secrets() -> None:
    files = {"pw.txt": "s3cret\n", "conf/nginx.conf": "server {}\n"}
    project = _parse(
        "services:\n  web:\n    image: nginx\n    secrets: [pw]\n"
        "    configs:\n      - source: nginx\n        target: /etc/nginx/conf.d/default.conf\n"
        "      - plain\n"
        "secrets:\n  pw:\n    file: ./pw.txt\n"
        "configs:\n  nginx:\n    file: conf/nginx.conf\n  plain:\n    file: pw.txt\n",
        files,
    )

    names = list(project.stored_secrets)
    assert [name.rsplit(".", 1)[0] for name in names] == ["shop.pw", "shop.nginx", "shop.plain"]
    assert list(project.stored_secrets.values()) == ["s3cret\n", "server {}\n", "s3cret\n"]
    assert project.services[0].spec["secrets"] == [
        {"name": names[0], "target": "pw"},  # under /run/secrets
        {"name": names[1], "target": "/etc/nginx/conf.d/default.conf"},
        {"name": names[2], "target": "/plain"},
    ]
    # The name follows the content: a changed file is a changed spec.
    changed = _parse(
        "services:\n  web:\n    image: nginx\n    secrets: [pw]\n"
        "secrets:\n  pw:\n    file: ./pw.txt\n",
        {"pw.txt": "other\n"},
    )
    assert list(changed.stored_secrets) != names[:1]


@pytest.mark.parametrize(
    ("text", "loc", "words"),
    [
        ("secrets:\n  pw:\n    file: ../pw.txt\n", "compose.secrets.pw.file", "outside"),
        ("secrets:\n  pw:\n    file: missing.txt\n", "compose.secrets.pw.file", "not a text file"),
        ("configs:\n  c:\n    content: x\n", "compose.configs.c", "not supported"),
    ],
)
def test_file_secret_refusals(text: str, loc: str, words: str) -> None:
    errors = _errors("services:\n  web:\n    image: nginx\n" + text, {"pw.txt": "x"})

    assert any(e["loc"] == loc and words in e["msg"] for e in errors), errors


def test_a_build_from_a_folder_the_project_lacks_is_refused_at_the_build() -> None:
    archive = context_tar({"compose.yaml": b"services:\n  web:\n    build: ./web\n"})

    with pytest.raises(Invalid) as refused:
        _upload(archive)

    assert refused.value.errors == [
        {
            "loc": "compose.services.web.build",
            "msg": "the project has no folder './web' to build from",
        }
    ]


def test_warnings_are_capped() -> None:
    extensions = "".join(f"x-note{n}: {n}\n" for n in range(150))

    project = _parse(extensions + "services:\n  web:\n    image: busybox\n")

    assert len(project.warnings) == 100
