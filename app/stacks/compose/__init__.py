"""Compose file -> Berth service specs: pure parsing and checking, no I/O, no engine.

`parse` reads a file of the Compose Specification in steps, one module each: `load` (YAML,
read as YAML 1.2 as Compose does), `interpolate` (`${...}` from the given variables only: an
unset variable without a default is an empty string with a warning, or with `strict` an
error), `extend` (`include` and `extends`, which load more files of the project the same way),
`stored` (in a project, secrets and configs with `file:` become secrets stored for the stack),
`check` (the official Compose Specification JSON schema, the keys Berth supports, scalar
values), then `map` (to Berth's ServiceSpec shape, with an error for every Compose feature
Berth cannot honour).

Every step gets the one `errors.Problems` collector: `add` refuses the file, `warn` accepts it
and tells the user (the warnings are in ComposeProject.warnings, and in a ComposeError's).

Supported service keys: image, build (context, dockerfile, args, target, labels,
cache_from), command, entrypoint, environment, env_file, ports (host mode), volumes (named
volumes, absolute bind mounts, anonymous volumes, and in a project relative bind mounts: the
file or folder shipped in a volume of its own), networks (with aliases), depends_on
(service_started, service_healthy, service_completed_successfully: the dependency runs once),
healthcheck, restart, labels, user, secrets (Berth's own store), profiles (chosen by the
request), container_name (one replica), the runtime options (hostname, domainname,
stop_signal, stop_grace_period, stdin_open, tty, working_dir, init, platform, extra_hosts, dns,
dns_search, ulimits, tmpfs, shm_size, read_only, logging, cap_add, cap_drop, security_opt,
sysctls, pull_policy, expose), deploy (mode: replicated, replicas, labels, resources.limits and
resources.reservations cpus/memory, restart_policy.condition, update_config, rollback_config,
placement).

Accepted and ignored, with a warning: the top-level `version` and `name`, and `x-*` extension
keys wherever a mapping is. Accepted and ignored: the `name` and `app_protocol` of a
long-syntax port; `required`/`restart` of a depends_on entry; `labels` of a top-level network
or volume. Keys that would give a container its host (`runtime`, `privileged`, `pid`, ...) are
refused by name.
Everything else is reported as not supported by Berth, at the key that uses it.

The schema in compose-spec.json is compose-spec/compose-spec schema/compose-spec.json at
commit b2835e8acc1e42e7aecbc27a9bc4a1fc66ef21ba, saved verbatim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from app.stacks.compose import check, extend, stored
from app.stacks.compose.errors import ComposeError, Problems
from app.stacks.compose.interpolate import interpolated
from app.stacks.compose.load import load
from app.stacks.compose.map import (
    BuildSpec,
    ComposeProject,
    ComposeService,
    ContentReader,
    berth_service_name,
    project_of,
)

__all__ = [
    "BuildSpec",
    "ComposeError",
    "ComposeProject",
    "ComposeService",
    "ContentReader",
    "berth_service_name",
    "parse",
    "parse_profiles",
]


_IGNORED_TOP_LEVEL = {
    "version": "the top-level `version` is obsolete and ignored",
    "name": "the top-level `name` is ignored: the stack's name is the project name",
}


def parse(
    text: str,
    *,
    project: str,
    variables: Mapping[str, str],
    env_files: Mapping[str, str],
    max_bytes: int = 256 * 1024,
    strict: bool = True,
    files: Mapping[str, str] | None = None,
    folder: str = "",
    profiles: Collection[str] = (),
    contents: ContentReader | None = None,
) -> ComposeProject:
    """The stack that the Compose file `text` describes; ComposeError lists every problem.

    `files` are the files of the project (given only with one) by path from its root (what
    `include`, `extends.file` and a secret's or config's `file` name) and `folder` the project
    folder of `text`; `strict` refuses an unset variable instead of taking it as empty; only the
    services of the chosen `profiles`, and those in none, are kept. `contents` reads the
    project's files and folders that relative bind mounts name (only with a project).
    """
    problems = Problems()

    def load_other(other: str, loc: str) -> dict[str, Any] | None:
        try:
            document = load(other, max_bytes=max_bytes)
        except ComposeError as exc:
            for error in exc.errors:
                problems.add(loc, error["msg"])
            return None
        return dict(interpolated(document, loc, variables, problems, strict=strict))

    document = interpolated(
        load(text, max_bytes=max_bytes), "compose", variables, problems, strict=strict
    )
    for key, message in _IGNORED_TOP_LEVEL.items():
        if key in document:
            problems.warn(f"compose.{key}", message)
    document = extend.resolved(
        document, folder=folder, files=files or {}, load=load_other, problems=problems
    )
    values = (
        stored.file_secrets(
            document, project=project, folder=folder, files=files, problems=problems
        )
        if files is not None
        else {}
    )
    check.schema(document, problems)
    problems.raise_if_any()
    parsed = project_of(
        document,
        project=project,
        variables=variables,
        env_files=env_files,
        problems=problems,
        profiles=profiles,
        contents=contents,
    )
    return dataclasses.replace(parsed, warnings=problems.warnings, stored_secrets=values)
