"""Which resources the event stream follows, and which of their fields each event carries.
Encrypted values, hashes and bulky columns (specs, params, logs) are deliberately left out."""

from __future__ import annotations

from app.containers.models import Container
from app.events.recorder import track
from app.hosts.models import Host
from app.images.models import Image
from app.operations.models import Operation
from app.registries.models import Registry
from app.secrets.models import Secret
from app.services.models import Service
from app.stacks.models import Stack
from app.tokens.models import ApiToken

track(Host, "host", "name", "status", "error", "schedulable", "draining", "labels", "version")
track(Registry, "registry", "name", "url", "username", "version")
track(Image, "image", "host_id", "repo_tags", "version")
track(
    Container,
    "container",
    "name",
    "host_id",
    "service_id",
    "slot",
    "managed",
    "desired_state",
    "state",
    "health",
    "exit_code",
    "version",
)
track(
    Service,
    "service",
    "name",
    "stack_id",
    "revision",
    "replicas",
    "status",
    "status_detail",
    "removing",
    "version",
)
track(Stack, "stack", "name", "host_id", "generation", "status", "status_detail", "version")
track(Secret, "secret", "name", "version")
track(ApiToken, "token", "name", "role", "expires_at", "version")
track(
    Operation,
    "operation",
    "kind",
    "status",
    "target_type",
    "target_id",
    "host_id",
    "error",
    "cancel_requested",
    "version",
    state="status",
)
