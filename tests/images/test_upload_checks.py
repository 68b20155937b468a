"""Decompression bombs as uploads, against a real uvicorn: refused quickly (422), and checked on
threads of their own, so that ordinary requests are answered while they are."""

from __future__ import annotations

import gzip
import tarfile
import threading
import time
import zlib
from collections.abc import Callable

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from tests.support import BOOTSTRAP_TOKEN, served

_CHUNK = 64 * 2**20
_DOCKERFILE = b"FROM busybox:1.36\n"
HEADERS = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}


def _gzip_bomb(unpacked: int) -> bytes:
    """A tar.gz of `unpacked` bytes of zeros in about a thousandth of that: gzip members
    joined, one compressed 64 MiB run of zeros reused for every tar member."""
    zeros = gzip.compress(bytes(_CHUNK), compresslevel=9)
    dockerfile = tarfile.TarInfo("Dockerfile")
    dockerfile.size = len(_DOCKERFILE)
    parts = [gzip.compress(dockerfile.tobuf() + _DOCKERFILE.ljust(512, b"\0"))]
    for index in range(unpacked // _CHUNK):
        info = tarfile.TarInfo(f"zeros{index}")
        info.size = _CHUNK
        parts += [gzip.compress(info.tobuf()), zeros]
    parts.append(gzip.compress(bytes(1024)))  # The end-of-archive blocks.
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = _gzip_bomb(1024 * 2**20)  # 1 GiB in about 1 MB
    assert len(data) < 2 * 2**20
    assert len(zlib.decompress(data[:200], wbits=31)) > 0  # A real gzip stream.
    return data


def _upload(base: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/images/build",
        headers=HEADERS,
        files={"context": ("context.tar.gz", data, "application/gzip")},
        data={"host_id": "no-such-host"},
        timeout=120,
    )


def test_a_gzip_bomb_is_refused_quickly(
    bomb: bytes, settings_factory: Callable[..., Settings]
) -> None:
    with served(create_app(settings_factory())) as base:
        started = time.monotonic()
        response = _upload(base, bomb)
        elapsed = time.monotonic() - started
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["loc"] == "body.context"
    assert "inflates more than 100 times (a decompression bomb)" in problem["detail"]
    # Inflating the whole GiB took seconds of CPU; refused after some 16 MiB it takes little.
    assert elapsed < 3, elapsed


def test_ordinary_requests_are_answered_while_bombs_are_checked(
    bomb: bytes, settings_factory: Callable[..., Settings]
) -> None:
    # A ratio high enough to let these bombs through to the unpacked-size limit (512 MiB):
    # each takes a second or more to check, as a large real context would.
    settings = settings_factory(max_build_context_ratio=5000, upload_check_threads=1)
    with (
        served(create_app(settings)) as base,
        httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client,
    ):
        assert client.get("/api/v1/hosts").status_code == 200
        answers: list[httpx.Response] = []
        uploads = [
            threading.Thread(target=lambda: answers.append(_upload(base, bomb))) for _ in range(6)
        ]
        for upload in uploads:
            upload.start()
        latencies = []
        while any(upload.is_alive() for upload in uploads):
            started = time.monotonic()
            assert client.get("/api/v1/hosts").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)  # Sampling, a few requests a second.
        for upload in uploads:
            upload.join(120)
    assert [a.status_code for a in answers] == [422] * 6
    assert all("unpacks to more than 536870912 bytes" in a.text for a in answers), answers[0].text
    # Six checks of a second or more, one at a time on their own thread: the request threads
    # stay free. (On the request threads, four at once held every one of them: 1.5 to 8 s.)
    assert len(latencies) >= 5, latencies
    assert max(latencies) < 2, sorted(latencies)[-5:]
