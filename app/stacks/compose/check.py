"""Step 3: what Berth accepts. The Compose Specification's JSON schema first, then the keys
Berth supports (each other key is refused where it is used, with the reason where one helps)
and the readers of scalar values that report a bad value at its key.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection
from importlib.resources import files
from typing import Any

from docker.errors import DockerException
from docker.utils.utils import parse_bytes
from jsonschema import Draft201909Validator, ValidationError
from jsonschema.exceptions import best_match

from app.stacks.compose.errors import Problems, at

TOP_LEVEL_KEYS = frozenset({"version", "name", "services", "networks", "volumes", "secrets"})
RESOURCE_KEYS = frozenset({"name", "external", "driver", "labels"})
SECRET_KEYS = frozenset({"name", "external", "file", "environment", "content"})
SERVICE_KEYS = frozenset(
    {
        "image", "build", "command", "entrypoint", "environment", "env_file", "ports",
        "volumes", "networks", "depends_on", "healthcheck", "restart", "labels", "user",
        "deploy", "secrets", "expose", "container_name", "hostname", "domainname",
        "stop_signal", "stop_grace_period", "stdin_open", "tty", "working_dir", "init",
        "platform", "extra_hosts", "dns", "dns_search", "ulimits", "tmpfs", "shm_size",
        "read_only", "logging", "cap_add", "cap_drop", "security_opt", "sysctls",
        "pull_policy", "profiles",
    }
)  # fmt: skip
BUILD_KEYS = frozenset({"context", "dockerfile", "args", "target", "labels", "cache_from"})
LOGGING_KEYS = frozenset({"driver", "options"})
ENV_FILE_KEYS = frozenset({"path", "required"})
PORT_KEYS = frozenset(
    {"target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"}
)
VOLUME_KEYS = frozenset({"type", "source", "target", "read_only"})
SERVICE_NETWORK_KEYS = frozenset({"aliases"})
SERVICE_SECRET_KEYS = frozenset({"source", "target", "uid", "gid", "mode"})
DEPENDS_ON_KEYS = frozenset({"condition", "required", "restart"})
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "start_period", "retries", "disable"})
DEPLOY_KEYS = frozenset(
    {
        "mode", "replicas", "labels", "resources", "restart_policy", "update_config",
        "rollback_config", "placement",
    }
)  # fmt: skip
RESOURCES_KEYS = frozenset({"limits", "reservations"})
LIMITS_KEYS = frozenset({"cpus", "memory"})
RESTART_POLICY_KEYS = frozenset({"condition"})
UPDATE_CONFIG_KEYS = frozenset({"parallelism", "delay", "order", "failure_action", "monitor"})
PLACEMENT_KEYS = frozenset({"constraints", "max_replicas_per_node"})
# Keys that would give a container its host are refused by name, with no setting to allow
# them in a stack.
_OWNS_THE_HOST = "it would give the container its host"
_UNSUPPORTED_REASONS = {
    "runtime": f"another runtime runs outside Berth's container policy: {_OWNS_THE_HOST}",
    "privileged": _OWNS_THE_HOST,
    "pid": _OWNS_THE_HOST,
    "ipc": _OWNS_THE_HOST,
    "userns_mode": _OWNS_THE_HOST,
    "cgroup_parent": _OWNS_THE_HOST,
    "cgroup": _OWNS_THE_HOST,
    "devices": _OWNS_THE_HOST,
    "device_cgroup_rules": _OWNS_THE_HOST,
    "volumes_from": "it shares another container's volumes, host paths included",
    "network_mode": "services join the stack's networks",
    "configs": "use secrets, or build the file into the image",
}

# Hand-written: Go's duration syntax (`1m30s`), which neither the docker SDK nor any
# maintained Python library reads.
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@functools.cache
def _schema_validator() -> Draft201909Validator:
    schema = files("app.stacks.compose").joinpath("compose-spec.json")
    return Draft201909Validator(json.loads(schema.read_text(encoding="utf-8")))


def schema(document: dict[str, Any], problems: Problems) -> None:
    for error in _schema_validator().iter_errors(document):
        # For a oneOf/anyOf failure: the error of the alternative that fits the value best.
        specific = best_match([error])
        loc = "compose"
        for part in specific.absolute_path:
            loc = at(loc, part)
        if specific.validator == "additionalProperties":
            for key in _unexpected_keys(specific):
                problems.add(at(loc, key), f"'{key}' is not allowed here by the Compose Spec")
        else:
            problems.add(loc, specific.message)


def _unexpected_keys(error: ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance if isinstance(error.instance, dict) else {}
    known = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    return [
        key
        for key in instance
        if key not in known and not any(re.search(pattern, key) for pattern in patterns)
    ]


def keys(mapping: dict[str, Any], supported: Collection[str], loc: str, problems: Problems) -> None:
    for key in mapping:
        if key not in supported:
            problems.unsupported(at(loc, key), key, _UNSUPPORTED_REASONS.get(key, ""))


def text(value: Any) -> str:
    """A YAML scalar as the string Compose makes of it (`true`, not Python's `True`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def integer(value: Any, loc: str, problems: Problems) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    problems.add(loc, f"expected an integer, got {value!r}")
    return None


def boolean(value: Any, loc: str, problems: Problems) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.add(loc, f"expected true or false, got {value!r}")
    return False


def duration_seconds(value: str, loc: str, problems: Problems) -> float | None:
    if not _DURATION.fullmatch(value):
        problems.add(loc, f"invalid duration {value!r} (e.g. 10s, 1m30s, 500ms)")
        return None
    return sum(float(n) * _SECONDS_PER_UNIT[unit] for n, unit in _DURATION_PART.findall(value))


_MEMORY = re.compile(r"\d+(?:\.\d+)?\s*[kmg]?b?", re.IGNORECASE)


def memory_bytes(value: Any, loc: str, problems: Problems) -> int | None:
    """A size in bytes, with an optional unit b, k, m or g (powers of 1024), as docker reads it."""
    size = text(value).strip()
    if size and not _MEMORY.fullmatch(size):
        # parse_bytes also takes "1e3", "1_000k", ".5g": Compose files never meant those.
        problems.add(loc, f"invalid memory size {value!r} (e.g. 512m, 1g)")
        return None
    try:
        # parse_bytes reads "" as 0 and takes a negative number: Berth refuses both.
        amount = int(parse_bytes(size)) if size else -1
    except (DockerException, ValueError, OverflowError):
        amount = -1
    if amount < 0:
        problems.add(loc, f"invalid memory size {value!r} (e.g. 512m, 1g)")
        return None
    return amount
