"""Compose file -> Berth service specs: pure parsing and checking, no I/O, no engine.

`parse` reads a file of the Compose Specification in four steps, one module each: `load`
(YAML, read as YAML 1.2 as Compose does), `interpolate` (`${...}` from the given variables
only: an unset variable without a default is an error, never an empty string), `check` (the
official Compose Specification JSON schema, the keys Berth supports, scalar values), then `map`
(to Berth's ServiceSpec shape, with an error for every Compose feature Berth cannot honour).

Supported service keys: image, build (context, dockerfile, args, target, labels,
cache_from), command, entrypoint, environment, env_file, ports (host mode), volumes (named
volumes, absolute bind mounts, anonymous volumes), networks (with aliases), depends_on
(service_started, service_healthy, service_completed_successfully: the dependency runs once),
healthcheck, restart, labels, user, secrets (Berth's own store), profiles (chosen by the
request), container_name (one replica), the runtime options (hostname, domainname,
stop_signal, stop_grace_period, stdin_open, tty, working_dir, init, platform, extra_hosts, dns,
dns_search, ulimits, tmpfs, shm_size, read_only, logging, cap_add, cap_drop, security_opt,
sysctls, pull_policy, expose), deploy (mode: replicated, replicas, labels, resources.limits and
resources.reservations cpus/memory, restart_policy.condition, update_config, rollback_config,
placement).

Accepted and ignored: the top-level `version` and `name`; the `name` and `app_protocol` of a
long-syntax port; `required`/`restart` of a depends_on entry; `labels` of a top-level network
or volume; and `x-*` extension keys wherever a mapping is. Keys that would give a container
its host (`runtime`, `privileged`, `pid`, ...) are refused by name.
Everything else is reported as not supported by Berth, at the key that uses it.

The schema in compose-spec.json is compose-spec/compose-spec schema/compose-spec.json at
commit b2835e8acc1e42e7aecbc27a9bc4a1fc66ef21ba, saved verbatim.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from app.stacks.compose import check
from app.stacks.compose.errors import ComposeError, Problems
from app.stacks.compose.interpolate import interpolated
from app.stacks.compose.load import load
from app.stacks.compose.map import (
    BuildSpec,
    ComposeProject,
    ComposeService,
    berth_service_name,
    project_of,
)

__all__ = [
    "BuildSpec",
    "ComposeError",
    "ComposeProject",
    "ComposeService",
    "berth_service_name",
    "parse",
    "parse_profiles",
]


def parse(
    text: str,
    *,
    project: str,
    variables: Mapping[str, str],
    env_files: Mapping[str, str],
    max_bytes: int = 256 * 1024,
) -> ComposeProject:
    """The stack that the Compose file `text` describes, with no profile chosen."""
    return parse_profiles(
        text,
        project=project,
        variables=variables,
        env_files=env_files,
        max_bytes=max_bytes,
        profiles=(),
    )


def parse_profiles(
    text: str,
    *,
    project: str,
    variables: Mapping[str, str],
    env_files: Mapping[str, str],
    profiles: Collection[str],
    max_bytes: int = 256 * 1024,
) -> ComposeProject:
    """The stack that the Compose file `text` describes, with the services of the chosen
    `profiles` and those in none; ComposeError lists every problem."""
    problems = Problems()
    document = interpolated(load(text, max_bytes=max_bytes), "compose", variables, problems)
    check.schema(document, problems)
    problems.raise_if_any()
    return project_of(
        document,
        project=project,
        variables=variables,
        env_files=env_files,
        problems=problems,
        profiles=profiles,
    )
