"""The only code that talks to Docker: a thin, typed wrapper over the docker SDK for one engine.

Every call is blocking; callers run it in worker threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlencode

import docker
from docker.tls import TLSConfig
from docker.transport.unixconn import UnixHTTPAdapter, UnixHTTPConnectionPool
from docker.types import CancellableStream
from docker.utils import convert_filters
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ReadTimeoutError

from app.engine.errors import EngineRejected, ObjectNotFound, translate_errors
from app.engine.tls import TlsFiles, TlsMaterial, refuse_plain_tcp, system_trust_store

# Connections kept open per engine: as many as operations may run on it at once (BERTH_WORKERS
# is at most 256). The SDK keeps 10; with more slots than that, every request beyond the tenth
# opened a connection, dropped it afterwards and logged a warning about it. Only connections
# that were in use at the same moment are kept, so an engine used by few costs no more.
_KEPT_CONNECTIONS = 256

_TIMESTAMP = re.compile(r"(?P<base>[^.]+?)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)")


def created_at(details: dict[str, Any]) -> tuple[datetime, int]:
    """An object's `Created` as (UTC time to the second, nanoseconds), in the order of time:
    the engine writes RFC 3339 with up to nine fractional digits and drops trailing zeros, so
    its text does not sort."""
    match = _TIMESTAMP.fullmatch(str(details.get("Created", "")))
    if match is None:
        return datetime.max.replace(tzinfo=UTC), 0
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    base = datetime.fromisoformat(match["base"] + zone).astimezone(UTC)
    return base, int((match["fraction"] or "0").ljust(9, "0")[:9])


def parse_engine_time(value: str) -> datetime | None:
    """RFC 3339 with up to nanoseconds, as the engine writes it, in UTC (None if it is not a
    time: the fraction is cut to the microseconds `datetime` holds)."""
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{main}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class EngineFacts:
    engine_version: str
    api_version: str
    os: str
    arch: str
    cpus: int
    memory_bytes: int
    containers_running: int


def engine_facts(info: dict[str, Any], version: dict[str, Any]) -> EngineFacts:
    """The facts from an engine's `GET /info` and `GET /version` answers."""
    return EngineFacts(
        engine_version=str(version.get("Version", "")),
        api_version=str(version.get("ApiVersion", "")),
        os=str(info.get("OperatingSystem") or version.get("Os", "")),
        arch=str(info.get("Architecture") or version.get("Arch", "")),
        cpus=int(info.get("NCPU", 0)),
        memory_bytes=int(info.get("MemTotal", 0)),
        containers_running=int(info.get("ContainersRunning", 0)),
    )


class _EngineApi(docker.APIClient):
    """The SDK's client, deaf to the environment. requests lets REQUESTS_CA_BUNDLE replace the
    CA a session verifies against (psf/requests#3829), which would undo a host's own CA (and
    `insecure`); and an engine is never reached through the environment's HTTP proxy. A
    property, because the constructor already talks to the engine (API version detection)."""

    @property
    def trust_env(self) -> bool:
        return False

    @trust_env.setter
    def trust_env(self, value: bool) -> None:
        pass  # requests.Session.__init__ sets True

    def events_with_timeout(
        self, *, since: int | None, filters: dict[str, list[str]]
    ) -> CancellableStream[dict[str, Any]]:
        """`events()` as the SDK has it, but reading with the client's timeout: the SDK reads
        its event stream without one, so a half-open connection would be followed forever."""
        params = {"since": since, "filters": convert_filters(filters)}
        # The SDK's own helpers (untyped in its stubs); `_get` applies the client's timeout.
        response = self._get(self._url("/events"), params=params, stream=True)  # type: ignore[attr-defined]
        events = self._stream_helper(response, decode=True)  # type: ignore[attr-defined]
        return CancellableStream(events, response)


class _OneUnixPool(UnixHTTPAdapter):
    """docker-py keys a unix socket's connection pools by the whole request URL, path and
    query, so a kept client holds a connection per distinct call it made (up to 25: one per
    container it inspected). Every call goes to the same socket: one pool."""

    def get_connection(self, url: bytes | str, proxies: Any = None) -> UnixHTTPConnectionPool:
        return super().get_connection("http+docker://localhost", proxies)


class _Events:
    """An event stream that ends once it has been silent for the client's timeout. The engine
    sends nothing while nothing happens, so the caller cannot tell silence from a dead peer:
    it re-opens the stream (and re-reads what it follows) either way."""

    def __init__(self, stream: CancellableStream[dict[str, Any]]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._stream
        except ReadTimeoutError:
            return

    def close(self) -> None:
        self._stream.close()


class DockerEngine:
    """One Docker engine reached by URL: unix://, or tcp:// over TLS (the engine's certificate
    verified, optionally with a client certificate), or plain tcp:// only when `insecure`."""

    def __init__(
        self,
        url: str,
        *,
        tls: TlsMaterial | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self._tls = tls
        self._insecure = insecure
        self._tls_files: TlsFiles | None = None
        tls_config: TLSConfig | bool = False
        base_url = url
        if tls is not None:
            # The SDK reads the files when it connects: keep them for the client's lifetime.
            self._tls_files = TlsFiles(tls)
            ca = self._tls_files.ca
            verify: str | bool = str(ca) if ca else system_trust_store() or True
            if insecure:  # encrypted, but the engine's identity is not checked
                verify = False
            tls_config = TLSConfig(client_cert=self._tls_files.client, verify=verify)
            base_url = url.replace("tcp://", "https://", 1)
        else:
            refuse_plain_tcp(url, insecure=insecure)
        with translate_errors(f"connect to {url}"):
            self.api = _EngineApi(
                base_url=base_url,
                version="auto",
                timeout=max(1, math.ceil(timeout)),
                tls=tls_config,
                max_pool_size=_KEPT_CONNECTIONS,
            )
        adapter = self.api.adapters.get("http+docker://")
        if isinstance(adapter, UnixHTTPAdapter):
            self.api.mount(
                "http+docker://",
                _OneUnixPool(
                    f"http+unix://{adapter.socket_path}",
                    timeout=adapter.timeout,
                    max_pool_size=adapter.max_pool_size,
                ),
            )
            adapter.close()
        else:
            # tcp://, plain or TLS: requests' own adapters, keeping as many as the socket's.
            for prefix in ("http://", "https://"):
                replaced = self.api.adapters.get(prefix)
                self.api.mount(prefix, HTTPAdapter(pool_maxsize=_KEPT_CONNECTIONS))
                if replaced is not None:
                    replaced.close()  # the version check's connection

        # What every request of `_send` carries: the session's headers and the ones the
        # SDK's decorator adds from the Docker config file on each call.
        general: dict[str, Any] = self.api._general_configs  # type: ignore[attr-defined]
        self._headers = {**self.api.headers, **general.get("HttpHeaders", {})}

    def _send(self, method: str, url: str, body: dict[str, Any] | None = None) -> Response:
        """One request on the client's own connections and adapters, its errors the SDK's,
        but without its session's per-call work: merging settings, headers, cookies and
        hooks, and looking for redirects, which the engine never sends. For a replica's
        create, start and inspect that work was about a third of the CPU of the calls."""
        request = PreparedRequest()
        request.method = method
        request.url = url
        request.headers = CaseInsensitiveDict(self._headers)
        request.hooks = {"response": []}
        if body is not None:
            # As the SDK's `_post_json`: a field set to None is left out, not sent as null.
            request.body = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
            request.headers["Content-Type"] = "application/json"
        if method != "GET":
            request.headers["Content-Length"] = str(len(request.body or b""))
        adapter = self.api.get_adapter(url)
        response = adapter.send(
            request,
            stream=False,
            timeout=self.api.timeout,
            verify=True if self.api.verify is None else self.api.verify,
            cert=self.api.cert,
            proxies={},
        )
        _ = response.content  # read to the end: the connection goes back to the pool
        self.api._raise_for_status(response)  # type: ignore[attr-defined]
        return response

    def _url(self, path: str, *args: str) -> str:
        url: str = self.api._url(path, *args)  # type: ignore[attr-defined]
        return url

    def close(self) -> None:
        self.api.close()
        if self._tls_files is not None:
            self._tls_files.cleanup()

    def ping(self) -> None:
        with translate_errors("ping"):
            self.api.ping()

    def facts(self) -> EngineFacts:
        with translate_errors("info"):
            info: dict[str, Any] = self.api.info()
            version: dict[str, Any] = self.api.version()
        return engine_facts(info, version)

    # Containers. Labels tie every object Berth creates to its Berth id and operation, which
    # is how a retried operation finds what an earlier, interrupted attempt already did.

    def start_container(self, container_id: str) -> None:
        with translate_errors(f"start container {container_id[:12]}"):
            self._send("POST", self._url("/containers/{0}/start", container_id))

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        with translate_errors(f"inspect container {container_id[:12]}"):
            response = self._send("GET", self._url("/containers/{0}/json", container_id))
            details: dict[str, Any] = response.json()
        return details

    def remove_container(
        self, container_id: str, *, force: bool = False, volumes: bool = False
    ) -> None:
        with contextlib.suppress(ObjectNotFound), translate_errors(f"remove {container_id[:12]}"):
            self.api.remove_container(container_id, force=force, v=volumes)

    def create_container_raw(
        self, name: str | None, config: dict[str, Any], *, platform: str | None = None
    ) -> str:
        """POST /containers/create with a full Engine API body (Config + HostConfig + ...);
        `platform` chooses among the images of one name for other platforms."""
        with translate_errors(f"create container {name or ''}".strip()):
            if platform is not None:  # the SDK checks that the engine's API knows it
                created: dict[str, Any] = self.api.create_container_from_config(  # type: ignore[no-untyped-call]
                    config, name=name, platform=platform
                )
            else:
                query = f"?{urlencode({'name': name})}" if name is not None else ""
                url = self._url("/containers/create") + query
                created = self._send("POST", url, config).json()
        return str(created["Id"])

    def list_containers(self, *, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]} if labels else None
        with translate_errors("list containers"):
            found: list[dict[str, Any]] = self.api.containers(all=True, filters=filters)
        return found

    def stop_container(self, container_id: str, *, timeout: int) -> None:
        with translate_errors(f"stop container {container_id[:12]}"):
            self.api.stop(container_id, timeout=timeout)

    def restart_container(self, container_id: str, *, timeout: int) -> None:
        with translate_errors(f"restart container {container_id[:12]}"):
            self.api.restart(container_id, timeout=timeout)

    def kill_container(self, container_id: str, *, signal: str) -> None:
        with translate_errors(f"kill container {container_id[:12]}"):
            self.api.kill(container_id, signal=signal)

    def inspect_volume(self, name: str) -> dict[str, Any]:
        """The volume's details (ObjectNotFound when there is none); its `Mountpoint` is a
        path on the engine's own host."""
        with translate_errors(f"inspect volume {name}"):
            details: dict[str, Any] = self.api.inspect_volume(name)
        return details

    def ensure_volume(self, name: str, labels: dict[str, str]) -> bool:
        """Create the named volume if missing. True if it was created."""
        try:
            self.inspect_volume(name)
            return False
        except ObjectNotFound:
            with translate_errors(f"create volume {name}"):
                self.api.create_volume(name, labels=labels)
            return True

    def _networks_named(self, name: str) -> list[dict[str, Any]]:
        """The networks called exactly `name` (the engine's filter matches parts of names)."""
        with translate_errors(f"list networks {name}"):
            found: list[dict[str, Any]] = self.api.networks(names=[name])
        return [n for n in found if n.get("Name") == name]

    def ensure_network(self, name: str, labels: dict[str, str]) -> bool:
        """Make `name` one bridge network on this engine: create it if missing, and remove the
        unused copies Berth made if there are several. True if it was created.

        The engine's duplicate check lists, then creates: two creators at once make two
        networks of one name, and a container on that name then fails to start ("ambiguous").
        Callers serialise their creators; this repairs what a race outside them left."""
        found = self._networks_named(name)
        created = False
        if not found:
            try:
                with translate_errors(f"create network {name}"):
                    self.api.create_network(
                        name, driver="bridge", labels=labels, check_duplicate=True
                    )
                created = True
            except EngineRejected as exc:
                if "already exists" not in str(exc):
                    raise
            found = self._networks_named(name)
        if len(found) > 1:
            self._remove_duplicates(name, found)
        return created

    def _remove_duplicates(self, name: str, found: list[dict[str, Any]]) -> None:
        """Keep one of the networks called `name`: one in use if any, else the oldest (then
        the lowest id), so that every repairer keeps the same one. A copy with containers
        cannot go without cutting them off, and one Berth did not make is not Berth's."""
        details = []
        for network in found:
            with contextlib.suppress(ObjectNotFound), translate_errors(f"inspect network {name}"):
                details.append(self.api.inspect_network(network["Id"]))
        details.sort(key=lambda n: (not n.get("Containers"), created_at(n), str(n["Id"])))
        for network in details[1:]:
            if network.get("Containers"):
                continue
            if (network.get("Labels") or {}).get("berth.managed") != "true":
                continue
            # Refused: a container started on it meanwhile; it stays.
            with contextlib.suppress(EngineRejected), translate_errors(f"remove network {name}"):
                self.api.remove_network(network["Id"])

    def remove_network(self, name: str) -> bool:
        """Remove a network Berth created; False if there is none (or it is not Berth's)."""
        found = self._networks_named(name)
        ours = [n for n in found if (n.get("Labels") or {}).get("berth.managed") == "true"]
        for network in ours:
            with translate_errors(f"remove network {name}"):
                self.api.remove_network(network["Id"])
        return bool(ours)

    def remove_volume(self, name: str) -> bool:
        """Remove a volume Berth created; False if there is none (or it is not Berth's)."""
        try:
            details = self.inspect_volume(name)
        except ObjectNotFound:
            return False
        if (details.get("Labels") or {}).get("berth.managed") != "true":
            return False
        with translate_errors(f"remove volume {name}"):
            self.api.remove_volume(name)
        return True

    def connect_network(
        self, network: str, container_id: str, aliases: list[str] | None = None
    ) -> None:
        with translate_errors(f"connect {container_id[:12]} to {network}"):
            self.api.connect_container_to_network(container_id, network, aliases=aliases or None)

    def put_archive(self, container_id: str, path: str, data: bytes) -> None:
        """Unpack a tar archive into a (created, not yet started) container's filesystem."""
        with translate_errors(f"copy files into {container_id[:12]}"):
            self.api.put_archive(container_id, path, data)

    def events(self, *, since: int | None = None) -> _Events:
        """The engine's container event stream (blocking; `.close()` it from another thread).
        It ends after `timeout` seconds without an event."""
        with translate_errors("events"):
            return _Events(
                self.api.events_with_timeout(since=since, filters={"type": ["container"]})
            )

    # Images. Pulls, pushes and builds stream JSON events; the caller reads them as they come.

    def list_images(self) -> list[dict[str, Any]]:
        with translate_errors("list images"):
            images: list[dict[str, Any]] = self.api.images()
        return images

    def inspect_image(self, reference: str) -> dict[str, Any]:
        with translate_errors(f"inspect image {reference}"):
            details: dict[str, Any] = self.api.inspect_image(reference)  # type: ignore[no-untyped-call]
        return details

    def image_history(self, reference: str) -> list[dict[str, Any]]:
        with translate_errors(f"history of image {reference}"):
            history: list[dict[str, Any]] = self.api.history(reference)  # type: ignore[no-untyped-call]
        return history

    def pull(
        self,
        repository: str,
        tag: str,
        auth: dict[str, str] | None,
        *,
        platform: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        with translate_errors(f"pull {repository}:{tag}"):
            yield from self.api.pull(
                repository,
                tag=tag,
                stream=True,
                decode=True,
                auth_config=auth,
                platform=platform,
            )

    def push(
        self, repository: str, tag: str, auth: dict[str, str] | None
    ) -> Iterator[dict[str, Any]]:
        with translate_errors(f"push {repository}:{tag}"):
            yield from self.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=auth
            )

    def build(
        self,
        context: IO[bytes],
        *,
        dockerfile: str,
        tag: str | None,
        build_args: dict[str, str],
        labels: dict[str, str],
        target: str | None = None,
        cache_from: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Build from a tar (or compressed tar) context; the engine detects the compression.
        `target` stops at that stage of a multi-stage Dockerfile; `cache_from` names images
        whose layers the build may reuse."""
        with translate_errors("build"):
            yield from self.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile,
                tag=tag,
                buildargs=build_args,
                labels=labels,
                target=target,
                cache_from=cache_from,
                rm=True,
                forcerm=True,
                decode=True,
            )

    def tag_image(self, source: str, repository: str, tag: str) -> None:
        with translate_errors(f"tag {source} as {repository}:{tag}"):
            self.api.tag(source, repository, tag=tag)

    def remove_image(self, reference: str, *, force: bool) -> None:
        with contextlib.suppress(ObjectNotFound), translate_errors(f"remove image {reference}"):
            self.api.remove_image(reference, force=force)

    def streaming(self, timeout: float = 3600.0) -> DockerEngine:
        """A second client for long streams (builds, pulls): a generous read timeout, so a
        silent build step is not mistaken for a dead engine. Close it when done."""
        return DockerEngine(self.url, tls=self._tls, insecure=self._insecure, timeout=timeout)


__all__ = ["DockerEngine", "EngineFacts"]
