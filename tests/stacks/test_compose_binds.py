"""Relative bind mounts of a project (pure: no engine): where each source resolves, the volume
that ships it (named by content), what stays refused, and the names no user may mount."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

import pytest
from pydantic import ValidationError

from app.containers.engine_config import create_body
from app.containers.schemas import ContainerSpec, VolumeMount
from app.core.config import Settings
from app.core.errors import Invalid
from app.stacks.schemas import StackCreate
from app.stacks.service import Upload, check_upload
from tests.support import context_tar

SETTINGS = Settings.model_construct(
    max_build_context_unpacked_bytes=4 * 2**20, max_build_context_ratio=100
)
WEB = "services:\n  web:\n    image: nginx\n"
NGINX_CONF = b"server { listen 80; location / { root /usr/share/nginx/html; } }\n"


def _upload(files: dict[str, bytes], **fields: Any) -> Upload:
    data = StackCreate.model_validate({"name": "shop", **fields})
    return check_upload(
        stack_name="shop",
        data=data,
        contexts={},
        project_archive=context_tar(files),
        settings=SETTINGS,
    )


def _mounts(upload: Upload, service: str) -> list[dict[str, Any]]:
    return next(s.spec["volumes"] for s in upload.project.services if s.name == service)


def _members(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {
            member.name: (extracted.read() if (extracted := archive.extractfile(member)) else None)
            for member in archive
        }


def test_a_file_and_a_folder_beside_the_compose_file_become_volumes_named_by_content() -> None:
    upload = _upload(
        {
            "compose.yaml": b"services:\n  web:\n    image: nginx\n    volumes:\n"
            b"      - ./nginx.conf:/etc/nginx/conf.d/default.conf:ro\n"
            b"      - {type: bind, source: ./html, target: /usr/share/nginx/html}\n",
            "nginx.conf": NGINX_CONF,
            "html/index.html": b"<h1>hello</h1>\n",
        }
    )

    config, html = _mounts(upload, "web")
    assert config["target"] == "/etc/nginx/conf.d/default.conf" and config["read_only"]
    assert config["content"]["file"] is True
    assert config["source"] == f"shop_file_{config['content']['sha256'][:16]}"
    assert html["content"]["file"] is False and not html["read_only"]
    assert html["source"] == f"shop_folder_{html['content']['sha256'][:16]}"
    assert upload.project.content_volumes == [config["source"], html["source"]]
    # The stored content is what the volume gets: the file alone (as `file`), the folder's tree.
    contents = upload.project.contents
    assert (
        hashlib.sha256(contents[config["content"]["sha256"]])
        .hexdigest()
        .startswith(config["source"].rsplit("_", 1)[1])
    )
    assert _members(contents[config["content"]["sha256"]]) == {"file": NGINX_CONF}
    assert _members(contents[html["content"]["sha256"]]) == {"index.html": b"<h1>hello</h1>\n"}


def test_a_file_keeps_its_mode() -> None:
    upload = _upload(
        {
            "compose.yaml": b"services:\n  app:\n    image: busybox\n"
            b"    volumes: ['./run.sh:/run.sh']\n",
            "run.sh": b"#!/bin/sh\necho hi\n",
        }
    )

    sha256 = _mounts(upload, "app")[0]["content"]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(upload.project.contents[sha256])) as archive:
        assert archive.getmember("file").mode == 0o755  # as context_tar wrote it


def test_a_source_resolves_in_the_compose_files_folder_and_an_included_files_folder() -> None:
    upload = _upload(
        {
            "app/compose.yaml": b"include: [sub/compose.yaml]\n"
            b"services:\n  web:\n    image: nginx\n    volumes: ['./conf/site.conf:/site.conf']\n",
            "app/conf/site.conf": b"main\n",
            "app/sub/compose.yaml": b"services:\n  api:\n    image: nginx\n"
            b"    volumes: ['./site.conf:/site.conf', './:/whole']\n",
            "app/sub/site.conf": b"included\n",
        },
        file="app/compose.yaml",
    )

    contents = upload.project.contents
    web, api, whole = _mounts(upload, "web")[0], *_mounts(upload, "api")
    assert _members(contents[web["content"]["sha256"]]) == {"file": b"main\n"}
    assert _members(contents[api["content"]["sha256"]]) == {"file": b"included\n"}
    assert _members(contents[whole["content"]["sha256"]]) == {
        "compose.yaml": b"services:\n  api:\n    image: nginx\n"
        b"    volumes: ['./site.conf:/site.conf', './:/whole']\n",
        "site.conf": b"included\n",
    }


def test_a_changed_file_changes_only_the_mounts_of_the_services_that_use_it() -> None:
    compose = (
        b"services:\n  web:\n    image: nginx\n"
        b"    volumes: ['./nginx.conf:/etc/nginx/nginx.conf']\n"
        b"  static:\n    image: nginx\n    volumes: ['./html:/usr/share/nginx/html']\n"
    )
    before = _upload({"compose.yaml": compose, "nginx.conf": b"a\n", "html/i.html": b"i\n"})
    after = _upload({"compose.yaml": compose, "nginx.conf": b"b\n", "html/i.html": b"i\n"})

    assert _mounts(before, "web") != _mounts(after, "web")
    assert _mounts(before, "static") == _mounts(after, "static")


@pytest.mark.parametrize(
    ("volume", "words"),
    [
        ("../outside:/data", "'../outside' is outside the project"),
        ("./sub/../../outside:/data", "is outside the project"),
        ("{type: bind, source: ../x, target: /data}", "'../x' is outside the project"),
        ("./missing.conf:/etc/x.conf", "the project has no file or folder 'missing.conf'"),
        ("~/data:/data", "`~` is no path in the project"),
    ],
)
def test_a_source_outside_the_project_or_missing_is_refused_at_its_key(
    volume: str, words: str
) -> None:
    with pytest.raises(Invalid) as caught:
        _upload({"compose.yaml": f"{WEB}    volumes:\n      - {volume}\n".encode()})

    errors = caught.value.errors or []
    assert [error["loc"] for error in errors] == ["compose.services.web.volumes[0]"]
    assert words in str(errors[0]["msg"])


def test_an_absolute_bind_in_a_project_stays_a_host_path_under_the_policy() -> None:
    upload = _upload(
        {"compose.yaml": b"services:\n  web:\n    image: nginx\n    volumes: ['/srv/x:/x']\n"}
    )

    assert _mounts(upload, "web") == [{"source": "/srv/x", "target": "/x", "read_only": False}]
    assert upload.project.content_volumes == []


def test_without_a_project_a_relative_bind_asks_for_the_project_directory() -> None:
    data = StackCreate.model_validate(
        {
            "name": "shop",
            "compose": "services:\n  web:\n    image: nginx\n"
            "    volumes: ['./nginx.conf:/etc/nginx/nginx.conf']\n",
        }
    )
    with pytest.raises(Invalid) as caught:
        check_upload(stack_name="shop", data=data, contexts={}, settings=SETTINGS)

    assert "send the project directory" in str((caught.value.errors or [])[0]["msg"])


SHA = "ab" * 32


@pytest.mark.parametrize("name", [f"mine_file_{SHA[:16]}", f"x_folder_{SHA[:16]}"])
def test_no_user_mounts_a_project_volume_by_name(name: str) -> None:
    """A project file is bind-mounted from its volume's folder on the host: a container that
    could write that folder could put a link there for the engine to follow."""
    with pytest.raises(ValidationError, match="a volume Berth makes for a stack's project"):
        VolumeMount.model_validate({"source": name, "target": "/data"})


def test_a_project_content_is_in_the_volume_its_kind_and_digest_name() -> None:
    content = {"sha256": SHA, "file": True}
    VolumeMount.model_validate(
        {"source": f"shop_file_{SHA[:16]}", "target": "/x", "content": content}
    )
    for source in (f"shop_folder_{SHA[:16]}", "/etc", "shop_file_0000000000000000"):
        with pytest.raises(ValidationError, match="named by its kind and digest"):
            VolumeMount.model_validate({"source": source, "target": "/x", "content": content})


def test_a_file_mount_binds_the_path_the_worker_found_and_a_folder_mounts_the_volume() -> None:
    spec = ContainerSpec.model_validate(
        {
            "image": "nginx",
            "volumes": [
                {
                    "source": f"shop_file_{SHA[:16]}",
                    "target": "/etc/nginx/nginx.conf",
                    "read_only": True,
                    "content": {"sha256": SHA, "file": True},
                },
                {
                    "source": f"shop_folder_{SHA[:16]}",
                    "target": "/usr/share/nginx/html",
                    "content": {"sha256": SHA, "file": False},
                },
            ],
        }
    )
    found = {f"shop_file_{SHA[:16]}": "/var/lib/docker/volumes/v/_data/file"}

    mounts = create_body(spec, labels={}, image="nginx", project_files=found)["HostConfig"][
        "Mounts"
    ]

    assert mounts == [
        {
            "Type": "bind",
            "Source": "/var/lib/docker/volumes/v/_data/file",
            "Target": "/etc/nginx/nginx.conf",
            "ReadOnly": True,
        },
        {
            "Type": "volume",
            "Source": f"shop_folder_{SHA[:16]}",
            "Target": "/usr/share/nginx/html",
            "ReadOnly": False,
            "VolumeOptions": {"NoCopy": True},
        },
    ]
