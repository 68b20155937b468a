"""Placement: which ready, schedulable host a new container (or replica) goes to.

Hosts are filtered by project (a host dedicated to projects takes only theirs), label
constraints, resources that fit (reservations, else limits), and free host ports; among those
left, the one running the fewest containers wins, ties broken by name then id, so the same
request against the same state always lands on the same host.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from app.containers.models import Container, PortClaim
from app.containers.schemas import ContainerSpec
from app.hosts.models import Host
from app.projects.models import HostProject
from app.projects.quotas import set_aside
from app.security.roles import DEFAULT_PROJECT_ID


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


@dataclass
class Usage:
    """What a host's managed, wanted containers take: how many, and the CPUs and memory they
    reserve."""

    containers: int = 0
    cpus: float = 0.0
    memory: int = 0


def usage(
    session: Session, *, hosts: Collection[str] | None = None, ignoring: Collection[str] = ()
) -> dict[str, Usage]:
    """Every host's usage (or only `hosts`'), summed by the database in one query (the specs
    stay there), leaving out the containers `ignoring` names. A container sets aside its
    reservations where it has any, else its limits (`set_aside`)."""
    reserved_cpus = Container.spec[("resources", "reservations", "cpus")].as_float()
    reserved_memory = Container.spec[("resources", "reservations", "memory_bytes")].as_integer()
    unreserved = and_(reserved_cpus.is_(None), reserved_memory.is_(None))
    cpus = case((unreserved, Container.spec[("resources", "cpus")].as_float()), else_=reserved_cpus)
    memory = case(
        (unreserved, Container.spec[("resources", "memory_bytes")].as_integer()),
        else_=reserved_memory,
    )
    wanted = select(Container.host_id, func.count(), func.sum(cpus), func.sum(memory)).where(
        Container.desired_state != "removed"
    )
    if hosts is not None:
        wanted = wanted.where(Container.host_id.in_(list(hosts)))
    if ignoring:
        wanted = wanted.where(Container.id.not_in(list(ignoring)))
    rows = session.execute(wanted.group_by(Container.host_id)).all()
    return {
        host_id: Usage(int(count), float(cpus or 0), int(memory or 0))
        for host_id, count, cpus, memory in rows
    }


_Port = tuple[str, int, str]


class Placer:
    """Placement for one pass in the caller's transaction: the hosts, their usage and their
    claimed ports are read once, at the first placement, and every placement made counts at
    once for the next. A pass placing N replicas over H hosts costs one ranking of the hosts
    and about N log H steps (`_Ranking`), not N walks over the hosts nor N reads of every
    container's spec.

    What the caller changes in the same transaction outside placements (a replica removed, a
    placed replica given up) is not seen until the next pass: usage is only ever overstated,
    so a placement stays within the resources."""

    def __init__(self, session: Session, *, ignoring: Collection[str] = ()) -> None:
        self._session = session
        # Containers the caller is removing in this pass: they no longer count.
        self._ignoring = ignoring
        self._hosts: list[Host] | None = None
        self._usage: dict[str, Usage] = {}
        # The usage as read, before this pass's placements.
        self._read: dict[str, Usage] = {}
        self._claimed: dict[str, set[_Port]] = {}
        # host id -> the projects it is dedicated to (a host absent here is shared).
        self._dedicated: dict[str, set[str]] = {}
        # Hosts that pass the checks that do not change within a pass, per (constraints,
        # exclude, project): (candidates, why the others were passed over).
        self._eligible: dict[
            tuple[tuple[str, ...], tuple[str, ...], str], tuple[list[Host], dict[str, str]]
        ] = {}
        self._rankings: dict[Hashable, _Ranking] = {}

    def _load(self) -> list[Host]:
        if self._hosts is None:
            session = self._session
            self._hosts = list(session.execute(select(Host).order_by(Host.name, Host.id)).scalars())
            self._usage = usage(session, ignoring=self._ignoring)
            self._read = {host_id: replace(used) for host_id, used in self._usage.items()}
            for host_id, ip, port, protocol in session.execute(
                select(
                    PortClaim.host_id, PortClaim.host_ip, PortClaim.host_port, PortClaim.protocol
                )
            ):
                self._claimed.setdefault(host_id, set()).add((ip, port, protocol))
            for host_id, project_id in session.execute(
                select(HostProject.host_id, HostProject.project_id)
            ):
                self._dedicated.setdefault(host_id, set()).add(project_id)
        return self._hosts

    def usage_read(self, hosts: Collection[str]) -> dict[str, Usage]:
        """What `hosts` carried when the pass read their usage, before its own placements:
        what a caller checks again before it writes the placements in a later transaction."""
        return {host_id: self._read.get(host_id, Usage()) for host_id in hosts}

    def _candidates(
        self, constraints: Sequence[str], exclude: Sequence[str], project_id: str
    ) -> tuple[list[Host], dict[str, str]]:
        key = (tuple(constraints), tuple(exclude), project_id)
        eligible = self._eligible.get(key)
        if eligible is None:
            rules = [Constraint.parse(rule) for rule in constraints]
            candidates: list[Host] = []
            reasons: dict[str, str] = {}
            for host in self._load():
                if host.id in exclude:
                    reasons[host.name] = "excluded"
                elif host.status != "ready":
                    reasons[host.name] = f"host is {host.status}"
                elif not host.schedulable or host.draining:
                    reasons[host.name] = "host is not schedulable"
                elif project_id not in self._dedicated.get(host.id, {project_id}):
                    reasons[host.name] = "host is dedicated to other projects"
                elif unmet := [str(rule) for rule in rules if not rule.allows(_facts(host))]:
                    reasons[host.name] = f"constraint {', '.join(unmet)} not met"
                else:
                    candidates.append(host)
            eligible = self._eligible[key] = (candidates, reasons)
        return eligible

    def place(
        self,
        spec: ContainerSpec,
        constraints: Sequence[str],
        *,
        exclude: Sequence[str] = (),
        spread: dict[str, int] | None = None,
        max_per_host: int | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
    ) -> Placement:
        """Choose a host, and count the container on it. `spread` counts a service's replicas
        per host: fewer wins first, and `max_per_host` caps it. Without a host, `reasons`
        says why each was passed over (with one, only hosts that could have won are checked).
        Only hosts shared or dedicated to `project_id` are candidates."""
        spread = spread or {}
        candidates, static_reasons = self._candidates(constraints, exclude, project_id)
        wanted_ports: frozenset[_Port] = frozenset(
            (p.host_ip, p.host_port, str(p.protocol)) for p in spec.ports if p.host_port
        )
        want_cpus, want_memory = set_aside(spec.resources.model_dump())
        ranking = self._ranking(
            (tuple(constraints), tuple(exclude), project_id),
            (want_cpus, want_memory, wanted_ports, max_per_host),
            candidates,
            spread,
        )
        result = Placement(host=None, reasons=dict(static_reasons))
        nothing = Usage()
        heap = ranking.heap
        while heap:
            placed, count, order = heap[0]
            host = candidates[order]
            used = self._usage.get(host.id, nothing)
            now = (spread.get(host.id, 0), used.containers)
            if now != (placed, count):
                # Ranked before a placement changed it (ranks only grow): ranked again.
                heapq.heapreplace(heap, (*now, order))
                continue
            if max_per_host is not None and placed >= max_per_host:
                why = f"max_per_host {max_per_host} reached"
            elif host.cpus is not None and want_cpus and used.cpus + want_cpus > host.cpus:
                why = f"not enough CPU ({used.cpus:g} of {host.cpus} reserved)"
            elif (
                host.memory_bytes is not None
                and want_memory
                and used.memory + want_memory > host.memory_bytes
            ):
                why = "not enough memory"
            elif clash := _clashes(wanted_ports, self._claimed.get(host.id, set())):
                why = f"host port {clash} already published"
            else:
                result.host = host
                break
            # What refuses this container refuses the next ones like it: usage, replicas per
            # host and claimed ports only grow.
            heapq.heappop(heap)
            ranking.refused[order] = (host.name, why)
        # In the hosts' order, as a walk over them would have found them.
        result.reasons.update(ranking.refused[order] for order in sorted(ranking.refused))
        if result.host is not None:
            chosen = self._usage.setdefault(result.host.id, Usage())
            chosen.containers += 1
            chosen.cpus += want_cpus
            chosen.memory += want_memory
            self._claimed.setdefault(result.host.id, set()).update(wanted_ports)
            ranking.chosen = result.host.id
        ranking.spread = dict(spread)
        return result

    def _ranking(
        self,
        eligible: tuple[tuple[str, ...], tuple[str, ...], str],
        wants: tuple[float, int, frozenset[_Port], int | None],
        candidates: list[Host],
        spread: dict[str, int],
    ) -> _Ranking:
        """The candidates for containers like this one, ranked as the last placement left
        them; ranked anew if the caller's `spread` changed otherwise than by that placement
        (a rank that fell could hide under a stale one)."""
        key = (eligible, wants)
        ranking = self._rankings.get(key)
        if ranking is not None and spread != ranking.spread:
            expected = ranking.spread
            if ranking.chosen is not None:
                expected[ranking.chosen] = expected.get(ranking.chosen, 0) + 1
            if spread != expected:
                ranking = None
        if ranking is None:
            nothing = Usage()
            heap = [
                (spread.get(host.id, 0), self._usage.get(host.id, nothing).containers, order)
                for order, host in enumerate(candidates)
            ]
            heapq.heapify(heap)
            ranking = self._rankings[key] = _Ranking(heap)
        return ranking


@dataclass
class _Ranking:
    """A placer's candidates for one kind of container, in a heap by rank: fewest of the
    service's replicas, then fewest containers, then the hosts' (name, id) order, so the first
    of equals wins. A placement ranks its host again lazily (its entry is found stale when it
    comes up): each placement costs a few heap steps, not a walk over every host."""

    heap: list[tuple[int, int, int]]
    # Candidates (by order) that cannot take such a container, and why: out of the heap.
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)
    # The caller's spread as the last placement saw it, and the host it chose.
    spread: dict[str, int] = field(default_factory=dict)
    chosen: str | None = None


def usable_by(project_id: str) -> ColumnElement[bool]:
    """A WHERE clause on Host: the hosts the project may use (shared, or dedicated to it)."""
    dedications = select(HostProject.project_id).where(HostProject.host_id == Host.id)
    return or_(
        ~dedications.exists(), dedications.where(HostProject.project_id == project_id).exists()
    )


def may_use(session: Session, *, host_id: str, project_id: str) -> bool:
    """Whether the project may run containers on the host: shared, or dedicated to it."""
    usable = select(Host.id).where(Host.id == host_id, usable_by(project_id))
    return session.execute(usable).first() is not None


def _clashes(wanted: Collection[_Port], taken: set[tuple[str, int, str]]) -> str | None:
    for ip, port, protocol in wanted:
        for taken_ip, taken_port, taken_protocol in taken:
            # An empty address means every address, so it clashes with any address.
            same_ip = ip == taken_ip or "" in (ip, taken_ip)
            if same_ip and port == taken_port and protocol == taken_protocol:
                return f"{port}/{protocol}"
    return None
