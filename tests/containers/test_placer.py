"""Placement over one pass: usage is read once, summed by the database, and every placement
the pass makes counts at once for the next (tests/containers/test_containers.py covers the
scheduler's rules against real engines)."""

from __future__ import annotations

from app.containers.models import Container
from app.containers.scheduler import Placer, Usage, usage
from app.containers.schemas import ContainerSpec, PortMapping, Resources
from app.core.db import Database
from app.hosts.models import Host


def add_ready_hosts(db: Database, *names: str, cpus: int = 2) -> dict[str, str]:
    with db.session() as session:
        hosts = [
            Host(name=name, url=f"unix:///{name}", labels={}, status="ready", cpus=cpus)
            for name in names
        ]
        session.add_all(hosts)
        session.flush()
        return {host.name: host.id for host in hosts}


def test_usage_is_summed_by_the_database(db: Database) -> None:
    ids = add_ready_hosts(db, "a", "b")
    with db.session() as session:
        session.add_all(
            [
                Container(
                    name="one",
                    host_id=ids["a"],
                    image="x",
                    spec={"resources": {"cpus": 0.5, "memory_bytes": 2**30}},
                ),
                Container(
                    name="two",
                    host_id=ids["a"],
                    image="x",
                    spec={"resources": {"cpus": 1.5, "memory_bytes": None}},
                ),
                Container(name="bare", host_id=ids["b"], image="x", spec={"image": "x"}),
                Container(
                    name="gone",
                    host_id=ids["b"],
                    image="x",
                    desired_state="removed",
                    spec={"resources": {"cpus": 4}},
                ),
            ]
        )
    with db.session(write=False) as session:
        assert usage(session) == {ids["a"]: Usage(2, 2.0, 2**30), ids["b"]: Usage(1, 0.0, 0)}


def test_a_pass_counts_its_own_placements(db: Database) -> None:
    ids = add_ready_hosts(db, "a", "b", cpus=2)
    one_cpu = ContainerSpec(image="x", resources=Resources(cpus=1))
    with db.session(write=False) as session:
        placer = Placer(session)
        chosen = [placer.place(one_cpu, []).host for _ in range(4)]
        assert [host.name if host else None for host in chosen] == ["a", "b", "a", "b"]
        full = placer.place(one_cpu, [])
        assert full.host is None
        assert full.reasons == {
            "a": "not enough CPU (2 of 2 reserved)",
            "b": "not enough CPU (2 of 2 reserved)",
        }
        # Without reservations the fewest containers still wins: a and b have two each.
        assert placer.place(ContainerSpec(image="x"), [], exclude=[ids["a"]]).host is not None


def test_a_pass_counts_the_ports_it_placed(db: Database) -> None:
    add_ready_hosts(db, "a", "b")
    web = ContainerSpec(image="x", ports=[PortMapping(container_port=80, host_port=8080)])
    with db.session(write=False) as session:
        placer = Placer(session)
        spread: dict[str, int] = {}
        for expected in ("a", "b"):
            host = placer.place(web, [], spread=spread).host
            assert host is not None and host.name == expected
            spread[host.id] = spread.get(host.id, 0) + 1
        blocked = placer.place(web, [], spread=spread)
        assert blocked.host is None
        assert set(blocked.reasons.values()) == {"host port 8080/tcp already published"}


def test_a_spread_the_caller_changed_otherwise_is_ranked_again(db: Database) -> None:
    # The placer keeps its candidates ranked between placements; a replica the caller gives
    # up (its count in `spread` falls) must make that host the first choice again.
    ids = add_ready_hosts(db, "a", "b", "c")
    spec = ContainerSpec(image="x")
    with db.session(write=False) as session:
        placer = Placer(session)
        spread: dict[str, int] = {}
        for _ in range(3):
            placement = placer.place(spec, [], spread=spread)
            assert placement.host is not None
            spread[placement.host.id] = spread.get(placement.host.id, 0) + 1
        spread[ids["b"]] = 0
        placement = placer.place(spec, [], spread=spread, max_per_host=1)
        assert placement.host is not None and placement.host.name == "b"
        spread[ids["b"]] = 1
        # Full everywhere: every host says why, in the hosts' order.
        full = placer.place(spec, [], spread=spread, max_per_host=1)
        assert full.host is None
        assert list(full.reasons.items()) == [
            (name, "max_per_host 1 reached") for name in ("a", "b", "c")
        ]
