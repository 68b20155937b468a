"""Asking a registry what a tag names now: a manifest HEAD on its v2 API.

Conditional (If-None-Match with the last ETag: a 304 costs the registry nothing), with Basic
or token authentication as the registry's challenge asks, and rate limited per registry host
(ratelimit.RegistryLimiter), a 429's Retry-After included. This talks to registries, never to
a Docker engine.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx

from app.core.db import utcnow
from app.images.ratelimit import RegistryLimiter, retry_after_seconds
from app.images.reference import DOCKER_HUB, ImageReference
from app.registries.service import Credentials

# Every manifest kind a tag may name; the index kinds first, so that a multi-platform tag
# answers with the index digest, which is what an engine records (RepoDigests) when it pulls.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_HUB_API = "https://registry-1.docker.io"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
# A token the service grants without saying for how long lasts 60 s (the distribution spec).
_TOKEN_SECONDS = 60.0
# Basic credentials are sent unasked for this long after a challenge asked for them (a
# changed password is a 401 again, answered with the stored one).
_BASIC_SECONDS = 3600.0
# A request that would wait longer than this for the rate limit is left to the next round.
MAX_WAIT_SECONDS = 60.0


class CheckOutcome(StrEnum):
    CHANGED = "changed"  # an answer with a digest (maybe the one known already)
    NOT_MODIFIED = "not_modified"  # 304: the digest is still the one known
    RATE_LIMITED = "rate_limited"  # 429, or the limit's wait was too long for this round
    ERROR = "error"
    SKIPPED = "skipped"  # nothing a registry can answer: no request was sent


@dataclass(frozen=True)
class TagAnswer:
    outcome: CheckOutcome
    digest: str | None = None
    etag: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where a registry host's API is (`https://host`, or a stored registry's URL) and the
    credentials stored for it, if any."""

    url: str | None
    credentials: Credentials | None


class ManifestClient:
    """One per process or loop: it keeps the connections, the tokens and which scheme a
    registry without a stored URL answered on."""

    def __init__(
        self,
        limiter: RegistryLimiter,
        *,
        timeout: float = 10.0,
        sleep: Callable[[float], bool] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.limiter = limiter
        self._sleep = sleep or _sleep
        self._http = httpx.Client(timeout=timeout, follow_redirects=False, transport=transport)
        self._tokens: dict[tuple[str, str, str | None], tuple[str, float]] = {}
        self._schemes: dict[str, str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def digest(
        self, reference: ImageReference, endpoint: Endpoint, *, etag: str | None
    ) -> TagAnswer:
        """What `reference` (a tag) names in its registry now; `etag` is the last answer's."""
        host = reference.registry_host
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        if etag:
            headers["If-None-Match"] = etag
        repository = reference.repository
        path = f"/v2/{repository}/manifests/{reference.tag_or_default}"
        try:
            base = self._base(host, endpoint)
            token_key = (base, repository, _user(endpoint))
            with self._lock:
                cached = self._tokens.get(token_key)
            if cached is not None and cached[1] > time.monotonic():
                headers["Authorization"] = cached[0]
            answer = self._send(host, "HEAD", base + path, headers)
            if answer is not None and answer.status_code == 401:
                headers["Authorization"] = self._authorize(answer, endpoint, repository, token_key)
                answer = self._send(host, "HEAD", base + path, headers)
            if answer is None:
                return _LEFT_FOR_LATER
            return self._read(host, base + path, headers, answer, etag)
        except _Refused as exc:
            return TagAnswer(CheckOutcome.ERROR, error=str(exc))
        except httpx.HTTPError as exc:
            return TagAnswer(
                CheckOutcome.ERROR, error=f"could not reach {host}: {type(exc).__name__}"
            )

    def _read(
        self,
        host: str,
        url: str,
        headers: dict[str, str],
        answer: httpx.Response,
        etag: str | None,
    ) -> TagAnswer:
        status = answer.status_code
        if status == 304:
            return TagAnswer(CheckOutcome.NOT_MODIFIED, etag=etag)
        if status == 429:
            delay = retry_after_seconds(answer.headers.get("retry-after"), now=utcnow())
            self.limiter.pause(host, MAX_WAIT_SECONDS if delay is None else delay)
            return TagAnswer(CheckOutcome.RATE_LIMITED, error="the registry answered 429")
        if status == 401:
            return TagAnswer(
                CheckOutcome.ERROR, error="the registry refused the stored credentials"
            )
        if status == 404:
            return TagAnswer(CheckOutcome.ERROR, error="the registry has no such tag")
        if status != 200:
            return TagAnswer(CheckOutcome.ERROR, error=f"the registry answered HTTP {status}")
        digest = answer.headers.get("docker-content-digest")
        if not digest:
            # The header is optional (OCI distribution spec): the manifest's bytes name it.
            body = self._send(host, "GET", url, headers)
            if body is None or body.status_code != 200:
                return TagAnswer(CheckOutcome.ERROR, error="the registry named no digest")
            digest = "sha256:" + hashlib.sha256(body.content).hexdigest()
        return TagAnswer(
            CheckOutcome.CHANGED, digest=digest, etag=answer.headers.get("etag") or f'"{digest}"'
        )

    def _send(
        self, host: str, method: str, url: str, headers: dict[str, str]
    ) -> httpx.Response | None:
        """One request to the registry under its rate limit; None if the limit says wait
        longer than this round may."""
        if not self.limiter.acquire(host, max_wait=MAX_WAIT_SECONDS, sleep=self._sleep):
            return None
        return self._http.request(method, url, headers=headers)

    def _base(self, host: str, endpoint: Endpoint) -> str:
        """The registry's API root. A stored registry's URL says its scheme; otherwise HTTPS,
        and plain HTTP only if HTTPS cannot connect at all (a registry an engine is told is
        insecure; no credentials go there: none are stored for it)."""
        if host == DOCKER_HUB:
            return _HUB_API  # whichever of Hub's names a stored registry's URL gives
        if endpoint.url is not None:
            return endpoint.url.rstrip("/")
        with self._lock:
            known = self._schemes.get(host)
        if known is not None:
            return f"{known}://{host}"
        try:
            self._http.get(f"https://{host}/v2/")
            scheme = "https"
        except httpx.ConnectError:
            self._http.get(f"http://{host}/v2/")  # raises if this cannot connect either
            scheme = "http"
        with self._lock:
            self._schemes[host] = scheme
        return f"{scheme}://{host}"

    def _authorize(
        self,
        challenged: httpx.Response,
        endpoint: Endpoint,
        repository: str,
        token_key: tuple[str, str, str | None],
    ) -> str:
        """The Authorization header the registry's challenge asks for (Basic with the stored
        credentials, or a Bearer token from its token service)."""
        challenge = challenged.headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        credentials = endpoint.credentials
        auth = (credentials.username, credentials.password) if credentials else None
        if scheme == "basic":
            if auth is None:
                raise _Refused("the registry needs credentials and none are stored")
            basic = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            # Kept like a token, so the next checks send it at once instead of each being
            # refused first (two requests against the registry's limit instead of one).
            self._keep(token_key, basic, _BASIC_SECONDS)
            return basic
        if scheme != "bearer":
            raise _Refused(f"unsupported authentication scheme {scheme!r}")
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise _Refused("the registry's token challenge names no realm")
        params.setdefault("scope", f"repository:{repository}:pull")
        params.pop("error", None)
        answer = self._http.get(realm, params=params, auth=auth)
        if answer.status_code != 200:
            raise _Refused(f"the token service answered HTTP {answer.status_code}")
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise _Refused("the token service gave no token")
        header = f"Bearer {token}"
        self._keep(token_key, header, float(body.get("expires_in") or _TOKEN_SECONDS))
        return header

    def _keep(self, key: tuple[str, str, str | None], header: str, lifetime: float) -> None:
        with self._lock:
            # Renewed a little early, so a token does not expire between its check and its use.
            self._tokens[key] = (header, time.monotonic() + max(lifetime - 5.0, 1.0))


_LEFT_FOR_LATER = TagAnswer(
    CheckOutcome.RATE_LIMITED, error="the rate limit left it for the next round"
)


class _Refused(Exception):
    """The registry (or its token service) would not answer; the message says why."""


def _user(endpoint: Endpoint) -> str | None:
    return endpoint.credentials.username if endpoint.credentials else None


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
