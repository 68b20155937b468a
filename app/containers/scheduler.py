"""Placement: which ready, schedulable host a new container (or replica) goes to.

Hosts are filtered by label constraints, resources that fit (reservations, else limits), and
free host ports; among those left, the one running the fewest containers wins, ties broken by
name then id, so the same request against the same state always lands on the same host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.containers.models import Container, PortClaim
from app.containers.schemas import ContainerSpec
from app.hosts.models import Host


@dataclass(frozen=True)
class Constraint:
    label: str
    equal: bool
    value: str

    @classmethod
    def parse(cls, rule: str) -> Constraint:
        operator = "==" if "==" in rule else "!="
        label, _, value = rule.partition(operator)
        return cls(label.strip(), operator == "==", value.strip())

    def allows(self, labels: dict[str, str]) -> bool:
        return (labels.get(self.label) == self.value) == self.equal

    def __str__(self) -> str:
        return f"{self.label}{'==' if self.equal else '!='}{self.value}"


def _facts(host: Host) -> dict[str, str]:
    """What constraints can name: the host's labels, and `host.id` / `host.name`."""
    return {**host.labels, "host.id": host.id, "host.name": host.name}


@dataclass
class Placement:
    host: Host | None
    # Why each host was passed over, for an error a user can act on.
    reasons: dict[str, str] = field(default_factory=dict)


def _usage(session: Session, host_ids: list[str]) -> dict[str, tuple[int, float, int]]:
    """(containers, cpus reserved, memory reserved) of each host's managed, wanted containers."""
    usage = dict.fromkeys(host_ids, (0, 0.0, 0))
    rows = session.execute(
        select(Container.host_id, Container.spec).where(
            Container.host_id.in_(host_ids),
            Container.desired_state != "removed",
        )
    ).all()
    for host_id, spec in rows:
        count, cpus, memory = usage[host_id]
        want_cpus, want_memory = _set_aside((spec or {}).get("resources") or {})
        usage[host_id] = (count + 1, cpus + want_cpus, memory + want_memory)
    return usage


def _set_aside(resources: dict[str, Any]) -> tuple[float, int]:
    """The (CPUs, memory bytes) a container takes from its host: its reservations where it
    has them, else its limits. Read from the stored spec, unvalidated: it is the hot path."""
    amounts = resources.get("reservations") or resources
    return float(amounts.get("cpus") or 0), int(amounts.get("memory_bytes") or 0)


def place(
    session: Session,
    spec: ContainerSpec,
    constraints: Sequence[str],
    *,
    exclude: Sequence[str] = (),
    spread: dict[str, int] | None = None,
    max_per_host: int | None = None,
) -> Placement:
    """Choose a host. `spread` counts a service's replicas per host: fewer wins first, and
    `max_per_host` caps it."""
    spread = spread or {}
    rules = [Constraint.parse(rule) for rule in constraints]
    hosts = list(session.execute(select(Host).order_by(Host.name, Host.id)).scalars())
    result = Placement(host=None)
    candidates: list[Host] = []
    for host in hosts:
        if host.id in exclude:
            result.reasons[host.name] = "excluded"
        elif host.status != "ready":
            result.reasons[host.name] = f"host is {host.status}"
        elif not host.schedulable or host.draining:
            result.reasons[host.name] = "host is not schedulable"
        elif unmet := [str(rule) for rule in rules if not rule.allows(_facts(host))]:
            result.reasons[host.name] = f"constraint {', '.join(unmet)} not met"
        elif max_per_host is not None and spread.get(host.id, 0) >= max_per_host:
            result.reasons[host.name] = f"max_per_host {max_per_host} reached"
        else:
            candidates.append(host)
    usage = _usage(session, [h.id for h in candidates])
    wanted_ports: set[tuple[str, int, str]] = {
        (p.host_ip, p.host_port, str(p.protocol)) for p in spec.ports if p.host_port
    }
    claimed: dict[str, set[tuple[str, int, str]]] = {}
    if wanted_ports and candidates:
        for host_id, ip, port, protocol in session.execute(
            select(
                PortClaim.host_id, PortClaim.host_ip, PortClaim.host_port, PortClaim.protocol
            ).where(PortClaim.host_id.in_([h.id for h in candidates]))
        ):
            claimed.setdefault(host_id, set()).add((ip, port, protocol))
    wanted = _set_aside(spec.resources.model_dump())
    fitting: list[tuple[int, int, str, str, Host]] = []
    for host in candidates:
        count, cpus, memory = usage[host.id]
        want_cpus, want_memory = wanted
        if host.cpus is not None and want_cpus and cpus + want_cpus > host.cpus:
            result.reasons[host.name] = f"not enough CPU ({cpus:g} of {host.cpus} reserved)"
        elif (
            host.memory_bytes is not None
            and want_memory
            and memory + want_memory > host.memory_bytes
        ):
            result.reasons[host.name] = "not enough memory"
        elif clash := _clashes(wanted_ports, claimed.get(host.id, set())):
            result.reasons[host.name] = f"host port {clash} already published"
        else:
            fitting.append((spread.get(host.id, 0), count, host.name, host.id, host))
    if fitting:
        result.host = min(fitting, key=lambda entry: entry[:4])[4]
    return result


def _clashes(wanted: set[tuple[str, int, str]], taken: set[tuple[str, int, str]]) -> str | None:
    for ip, port, protocol in wanted:
        for taken_ip, taken_port, taken_protocol in taken:
            # An empty address means every address, so it clashes with any address.
            same_ip = ip == taken_ip or "" in (ip, taken_ip)
            if same_ip and port == taken_port and protocol == taken_protocol:
                return f"{port}/{protocol}"
    return None
