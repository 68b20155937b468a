"""Both engine clients (the docker SDK one and the live httpx one) against the testbed's TLS
engine h3: the engine's certificate is verified unless the host is insecure, the errors say
what failed, and plain tcp:// is refused unless the host is insecure. And the SDK client's
own path for a replica's calls, over h3's TLS as over h1's socket and h2's plain tcp://."""

from __future__ import annotations

import contextlib
import secrets
import ssl
from collections.abc import Callable
from dataclasses import replace

import anyio
import pytest

from app.engine.docker_engine import DockerEngine
from app.engine.errors import EngineError, EngineRejected, ObjectNotFound
from app.engine.live import LiveEngine
from app.engine.tls import TlsMaterial
from tests.testbed import Testbed


def material(bed: Testbed) -> TlsMaterial:
    return TlsMaterial(
        ca_cert=bed.h3_ca.read_text(),
        client_cert=bed.h3_client_cert.read_text(),
        client_key=bed.h3_client_key.read_text(),
    )


def sdk_version(url: str, tls: TlsMaterial | None, insecure: bool) -> str:
    engine = DockerEngine(url, tls=tls, insecure=insecure, timeout=10)
    try:
        return engine.facts().engine_version
    finally:
        engine.close()


def live_version(url: str, tls: TlsMaterial | None, insecure: bool) -> str:
    async def version() -> str:
        async with LiveEngine(url, tls=tls, insecure=insecure, connect_timeout=5) as engine:
            return await engine.api_version()

    return anyio.run(version)


CLIENTS = pytest.mark.parametrize("version", [sdk_version, live_version], ids=["sdk", "live"])
Version = Callable[[str, TlsMaterial | None, bool], str]


@CLIENTS
def test_the_right_ca_and_client_certificate_reach_h3(
    bed: Testbed, version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests would let this replace the host's own CA (psf/requests#3829).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    assert version(bed.h3_url, material(bed), False)


@CLIENTS
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("no CA", "TLS: the engine's certificate failed verification"),
        ("other CA", "TLS: the engine's certificate failed verification"),
        ("no client certificate", "TLS: the engine requires a client certificate"),
    ],
)
def test_h3_refused_says_why(bed: Testbed, version: Version, change: str, reason: str) -> None:
    tls = {
        "no CA": replace(material(bed), ca_cert=None),
        "other CA": replace(material(bed), ca_cert=bed.h3_other_ca.read_text()),
        "no client certificate": replace(material(bed), client_cert=None, client_key=None),
    }[change]
    with pytest.raises(EngineError, match=reason):
        version(bed.h3_url, tls, False)


@CLIENTS
def test_insecure_tls_skips_the_engine_certificate_check(bed: Testbed, version: Version) -> None:
    assert version(bed.h3_url, replace(material(bed), ca_cert=None), True)


@CLIENTS
def test_plain_tcp_only_when_insecure(bed: Testbed, version: Version) -> None:
    with pytest.raises(EngineRejected, match="insecure: true"):
        version(bed.h2_url, None, False)
    assert version(bed.h2_url, None, True)


def test_a_ca_that_is_no_certificate_is_refused_not_a_crash() -> None:
    """A stored CA the ssl module cannot read: the async client (the prober's) is refused with
    the reason, which the prober shows as the host's error, instead of raising SSLError on
    every probe round."""
    garbage = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
    with pytest.raises(EngineRejected, match="TLS CA certificate unusable"):
        LiveEngine("tcp://127.0.0.1:2376", tls=TlsMaterial(garbage, None, None), insecure=False)


@pytest.mark.parametrize("which", ["h1", "h2", "h3"])
def test_a_container_is_created_started_and_inspected_over_each_transport(
    bed: Testbed, which: str
) -> None:
    """The calls a replica's start makes go past the SDK's session (on its connections): over
    a unix socket, plain tcp:// and TLS with a client certificate, with the SDK's errors."""
    url, tls = {
        "h1": (bed.h1_url, None),
        "h2": (bed.h2_url, None),
        "h3": (bed.h3_url, material(bed)),
    }[which]
    engine = DockerEngine(url, tls=tls, insecure=which == "h2", timeout=10)
    name = f"berth-test-calls-{secrets.token_hex(3)}"
    body = {"Image": bed.image, "Cmd": ["sleep", "30"], "Labels": {"berth.test": name}}
    try:
        docker_id = engine.create_container_raw(name, {**body, "Hostname": None})
        with pytest.raises(EngineRejected, match="already in use"):
            engine.create_container_raw(name, body)
        engine.start_container(docker_id)
        details = engine.inspect_container(docker_id)
        assert (details["Id"], details["Name"]) == (docker_id, f"/{name}")
        assert details["State"]["Status"] == "running"
        with pytest.raises(ObjectNotFound):
            engine.inspect_container(f"{name}-missing")
        with pytest.raises(ObjectNotFound):
            engine.start_container(f"{name}-missing")
    finally:
        with contextlib.suppress(EngineError):
            engine.remove_container(name, force=True)
        engine.close()
