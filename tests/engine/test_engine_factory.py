"""The engine factory handed to AppContext builds every engine client the process uses: the
seam a simulated engine plugs into. Here it wraps the real DockerEngine against engine h1."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.core.context import AppContext
from app.engine.docker_engine import DockerEngine
from app.engine.factory import DockerEngines
from app.engine.live import LiveEngine
from app.engine.tls import TlsMaterial
from app.hosts.loops import HostProber
from app.hosts.models import Host
from app.runtime import prepare
from tests.testbed import Testbed


class CountingEngines(DockerEngines):
    def __init__(self) -> None:
        self.built: list[tuple[str, float]] = []
        self.live_built: list[str] = []

    def client(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False, timeout: float
    ) -> DockerEngine:
        self.built.append((url, timeout))
        return super().client(url, tls=tls, insecure=insecure, timeout=timeout)

    def live(
        self, url: str, *, tls: TlsMaterial | None = None, insecure: bool = False
    ) -> LiveEngine:
        self.live_built.append(url)
        return super().live(url, tls=tls, insecure=insecure)


def test_the_factory_handed_to_the_context_builds_its_engines(
    settings_factory: Callable[..., Settings],
    bed: Testbed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", bed.h1_url)
    factory = CountingEngines()
    context = AppContext(settings_factory(register_local_host=True), engine_factory=factory)
    try:
        prepare(context)  # pings the local engine before registering it
        assert factory.built == [(bed.h1_url, 5)]
        with context.db.session(write=False) as session:
            host_id = session.execute(select(Host.id)).scalar_one()

        # Operations reach engines through the resolver, which uses the context's pool.
        engine = context.engine_for_host(host_id)
        engine.ping()
        assert context.engine_for_host(host_id) is engine
        assert factory.built[1:] == [(bed.h1_url, 30.0)]

        prober = HostProber(context)
        try:
            prober.run_once()
        finally:
            prober.stop(1)
        # The prober's async client per host comes from the same factory (its timeouts are
        # the prober's own, per ping).
        assert factory.built[2:] == []
        assert factory.live_built == [bed.h1_url]
        with context.db.session(write=False) as session:
            assert session.execute(select(Host.status)).scalar_one() == "ready"
    finally:
        context.close()
