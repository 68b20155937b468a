"""Typed settings, read once from `BERTH_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_PLACEHOLDERS = {"changeme", "changethis", "secret", "password", "admin"}


class Settings(BaseSettings):
    """Every knob Berth has. Each field is `BERTH_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="BERTH_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./berth.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://...",
    )
    host: str = Field(default="127.0.0.1", description="Address `berth serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    key_file: Path | None = Field(
        default=None,
        description="Fernet key for secrets at rest; default: berth.key beside the SQLite file "
        "(or in the working directory for PostgreSQL). Created when absent and nothing is "
        "encrypted yet.",
    )
    audit_key_file: Path | None = Field(
        default=None,
        description="The audit trail's keys (HMAC chain key, Ed25519 checkpoint signing key); "
        "default: berth-audit.key beside the key file. Created (0600) when absent and no "
        "entry is keyed yet. Keep it outside the database, and back it up apart from it.",
    )
    bootstrap_token: SecretStr | None = Field(
        default=None, description="An admin token accepted from the first start."
    )

    workers: int = Field(default=4, ge=1, le=256, description="Operations run at once per process.")
    request_threads: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Threads that run the API's blocking request handlers (database work) at "
        "once. Python runs one of them at a time; more only add contention, unless requests "
        "wait on a slow, remote database.",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0.5,
        description="How long a claimed operation stays owned without a heartbeat.",
    )
    worker_poll_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Idle poll interval for new operations; default 0.02 on SQLite, 1.0 on "
        "PostgreSQL (which also wakes workers with LISTEN/NOTIFY).",
    )
    operation_max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=1.0, ge=0)
    retry_max_seconds: float = Field(default=60.0, ge=0)

    host_probe_interval_seconds: float = Field(default=5.0, gt=0)
    host_probe_timeout_seconds: float = Field(default=5.0, gt=0)
    host_unreachable_after: int = Field(
        default=3, ge=1, description="Consecutive failed probes before a host is unreachable."
    )
    register_local_host: bool = Field(
        default=True, description="Register DOCKER_HOST as `local` on an empty database."
    )

    max_request_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body that is not a file upload (JSON, form fields), "
        "answered 413 before it is parsed.",
    )
    max_build_context_bytes: int = Field(
        default=256 * 2**20,
        ge=1024,
        description="Largest build context upload (tar or tar.gz): the only multipart file "
        "parts (image builds, stacks) that may exceed `max_request_bytes`.",
    )
    max_build_context_unpacked_bytes: int = Field(
        default=512 * 2**20,
        ge=1024,
        description="Largest a build context may be once decompressed (the sum of its files).",
    )
    max_build_context_ratio: int = Field(
        default=100,
        ge=2,
        description="Largest compression ratio of a tar.gz build context, checked while it is "
        "read (beyond its first 16 MiB): a decompression bomb stops early.",
    )
    upload_check_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Build contexts and Compose files checked at once, on threads of their own: "
        "large or hostile uploads wait for each other, not for the request threads.",
    )
    max_compose_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=512 * 1024,
        description="Largest Compose file (the API accepts 512 KiB at most).",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=4096,
        description="Largest request head (request line and headers) `berth serve` reads; "
        "a larger one is answered 431.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long `berth serve` waits for a request's head to be complete before "
        "it closes the connection (slow clients holding connections open).",
    )
    allowed_registries: str = Field(
        default="",
        description="Comma-separated registry hosts (e.g. `docker.io,10.0.0.5:5000`) that pulls, "
        "builds (FROM) and pushes may use; empty allows all.",
    )
    allow_privileged: bool = Field(
        default=False, description="Relax the policy: allow privileged containers."
    )
    allow_host_namespaces: bool = Field(
        default=False,
        description=(
            "Relax the policy: allow the host network (as network_mode or in networks), "
            "PID and IPC modes."
        ),
    )
    allowed_capabilities: str = Field(
        default="", description="Comma-separated capabilities containers may add (cap_add)."
    )
    allow_devices: bool = Field(default=False, description="Relax the policy: allow host devices.")
    allowed_bind_paths: str = Field(
        default="",
        description="Comma-separated host directories under which bind mounts are allowed; "
        "empty: no bind mounts (named volumes only).",
    )
    host_down_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a host may stay unreachable before its service replicas are "
        "started elsewhere.",
    )
    reconcile_interval_seconds: float = Field(
        default=2.0, gt=0, description="Safety-net interval of the service reconciler."
    )
    converge_deadline_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long a service.converge or stack.deploy operation waits without a "
        "further replica becoming ready (beyond its services' update delay and monitor time) "
        "before it fails with the reason the services give.",
    )
    image_sync_interval_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often every ready host's image inventory is re-read in full (hosts "
        "read within that time are skipped); image events re-read a followed host's inventory "
        "within seconds, container events recount its images' use within about 5 s.",
    )
    image_check_interval_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How often the registries are asked for the digests of the tags services "
        "run (new-image detection; 0 turns it off).",
    )
    registry_requests_per_minute: float = Field(
        default=60.0,
        gt=0,
        description="Requests the image check sends one registry per minute at most (a 429's "
        "Retry-After is honoured on top).",
    )
    idempotency_ttl_hours: float = Field(default=24.0, ge=24.0)
    change_request_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="How long a change request in a protected project waits for an approver "
        "before it expires.",
    )
    change_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often expired change requests are closed and approved ones whose "
        "change window opened are applied.",
    )
    auth_failure_limit: int = Field(
        default=20,
        ge=1,
        description="Failed authentications a client address may make per window before it is "
        "answered 429 (counted per process).",
    )
    auth_failure_window_seconds: float = Field(
        default=10.0, gt=0, description="The window BERTH_AUTH_FAILURE_LIMIT counts in."
    )
    event_retention_hours: float = Field(
        default=72.0, gt=0, description="How long the event stream can be replayed from a cursor."
    )
    audit_retention_days: float = Field(
        default=0,
        ge=0,
        description="Prune audit entries older than this many days (0: keep them all), up to "
        "the newest signed checkpoint fetched from GET /audit/checkpoint or an export.",
    )
    metrics_require_token: bool = False
    enable_debug_operations: bool = Field(
        default=False,
        description="Expose POST /api/v1/debug/operations (no-op, sleep, fail, container) "
        "for tests and benchmarks.",
    )

    @field_validator("bootstrap_token")
    @classmethod
    def _strong_bootstrap_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if len(secret) < 24 or secret.lower() in _PLACEHOLDERS:
                raise ValueError("use at least 24 random characters (e.g. `openssl rand -hex 24`)")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:// and postgresql:// URLs are supported")
        return value

    @property
    def registry_allow_list(self) -> list[str]:
        return [
            entry.strip().lower() for entry in self.allowed_registries.split(",") if entry.strip()
        ]

    @property
    def capability_allow_list(self) -> set[str]:
        entries = (
            entry.strip().upper().removeprefix("CAP_")
            for entry in self.allowed_capabilities.split(",")
        )
        return {entry for entry in entries if entry}

    @property
    def bind_path_allow_list(self) -> list[str]:
        entries = (entry.strip().rstrip("/") for entry in self.allowed_bind_paths.split(","))
        return [entry for entry in entries if entry.startswith("/")]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def docker_host(self) -> str:
        # DOCKER_HOST is the docker CLI's own variable, deliberately without the BERTH_ prefix.
        return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    @property
    def effective_poll_seconds(self) -> float:
        if self.worker_poll_seconds is not None:
            return self.worker_poll_seconds
        return 0.02 if self.is_sqlite else 1.0

    @property
    def effective_key_file(self) -> Path:
        if self.key_file is not None:
            return self.key_file
        if self.is_sqlite:
            db_path = self.database_url.split("///", 1)[-1].split("?", 1)[0]
            if db_path and db_path != ":memory:":
                return Path(db_path).resolve().parent / "berth.key"
        return Path("berth.key").resolve()

    @property
    def effective_audit_key_file(self) -> Path:
        if self.audit_key_file is not None:
            return self.audit_key_file
        return self.effective_key_file.parent / "berth-audit.key"


@lru_cache
def get_settings() -> Settings:
    return Settings()
