"""The wake-ups a replica's change sends name its service, so that the service reconciler
passes over that service only: here a replica's container dies behind Berth's back on a real
engine, and the follower that hears of it names the service."""

from __future__ import annotations

import threading

from app.workers import wakeups
from tests.support import Services, wait_for


def test_a_replica_dying_wakes_its_service_by_name(services: Services) -> None:
    other = services.create(replicas=1)["service"]["id"]
    body = services.create(replicas=1, placement={"constraints": ["name==h1"]})
    service_id = body["service"]["id"]
    services.settled(service_id, 1)
    services.settled(other, 1)
    (replica,) = services.engines["h1"].containers.list(
        filters={"label": f"berth.service={service_id}"}
    )
    named: list[wakeups.Keys] = []
    lock = threading.Lock()

    def heard(keys: wakeups.Keys) -> None:
        with lock:
            named.append(keys)

    unsubscribe = wakeups.subscribe_keys(wakeups.SERVICES, heard)
    try:
        replica.kill()
        wait_for(
            lambda: any(keys and service_id in keys for keys in named),
            timeout=30,
            what="a wake-up naming the service",
        )
    finally:
        unsubscribe()
    # Its wake-ups name it alone: the other service's tasks did not change.
    with lock:
        assert all(keys is not None and other not in keys for keys in named), named
