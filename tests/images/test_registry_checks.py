"""The image check's politeness and protocol without Docker: the token bucket and Retry-After
on a fake clock, and a tiny registry served in the test (a registry, not an engine) for the
conditional request, the 429, the token dance and a manifest answered without its digest, and
a round of the loop over services in the database (their replicas are not the point here)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.containers.schemas import VolumeMount
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.images.check_metrics import figures
from app.images.manifests import MANIFEST_TYPES, CheckOutcome, Endpoint, ManifestClient
from app.images.models import ImageTag, RegistryCheckCount
from app.images.ratelimit import RegistryLimiter, TokenBucket, retry_after_seconds
from app.images.tag_check import TagChecker, Target, checked_tag, tag_key
from app.registries.service import Credentials
from app.runtime import prepare
from app.security.crypto import load_or_create_key
from app.services import service as services
from app.services.image_updates import ACTOR, ImageCheckLoop
from app.services.schemas import ServiceSpec

MANIFEST = b'{"schemaVersion": 2}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.now += seconds
        return False


def test_a_bucket_allows_a_short_burst_then_the_steady_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)  # one a second, ten seconds' worth at once
    assert [bucket.take() for _ in range(10)] == [0.0] * 10
    assert bucket.take() == pytest.approx(1.0)
    clock.now += 0.5
    assert bucket.take() == pytest.approx(0.5)  # a refusal spends nothing
    clock.now += 0.5
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)


def test_a_pause_holds_every_request_until_it_ends() -> None:
    clock = Clock()
    bucket = TokenBucket(600, clock=clock)
    bucket.pause(30)
    assert bucket.take() == pytest.approx(30)
    clock.now += 29
    assert bucket.take() == pytest.approx(1)
    clock.now += 1
    assert bucket.take() == 0.0


def test_the_limiter_waits_within_its_bound_and_per_registry() -> None:
    clock = Clock()
    limiter = RegistryLimiter(6, clock=clock)  # one per 10 s, a burst of one
    assert limiter.acquire("a:5000", max_wait=0, sleep=clock.sleep)
    assert not limiter.acquire("a:5000", max_wait=5, sleep=clock.sleep)  # would take 10 s
    assert clock.now == 100.0
    assert limiter.acquire("b:5000", max_wait=0, sleep=clock.sleep)  # another registry's own
    assert limiter.acquire("a:5000", max_wait=10, sleep=clock.sleep)
    assert clock.now == pytest.approx(110.0)
    stopping = RegistryLimiter(6, clock=clock)
    assert stopping.acquire("a:5000", max_wait=0, sleep=clock.sleep)
    assert not stopping.acquire("a:5000", max_wait=60, sleep=lambda _seconds: True)


def test_retry_after_is_seconds_or_a_date() -> None:
    now = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now=now) == 120
    assert retry_after_seconds("Mon, 30 Nov 2026 08:01:30 GMT", now=now) == 90
    assert retry_after_seconds("Mon, 30 Nov 2026 07:00:00 GMT", now=now) == 0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds(None, now=now) is None


def test_only_tags_a_registry_can_answer_are_checked() -> None:
    assert tag_key("busybox") == "busybox:latest"
    assert str(checked_tag("busybox")) == "busybox:latest"
    assert checked_tag("busybox").repository == "library/busybox"  # type: ignore[union-attr]
    assert tag_key("10.0.0.1:5000/team/app:2") == "10.0.0.1:5000/team/app:2"
    assert tag_key("10.0.0.1:5000/team/app@sha256:" + "a" * 64) is None
    assert tag_key("berth.local/stack/web:0123456789abcdef") is None
    assert tag_key("a" * 64) is None  # an image id


@dataclass
class Registry:
    """What the served registry answers, and what it was asked."""

    token_auth: bool = False
    digest_header: bool = True
    status: int | None = None  # answer this instead, once
    retry_after: str | None = None
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    tokens_issued: int = 0
    base: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    self._token()
                else:
                    self._manifest(body=True)

            def do_HEAD(self) -> None:
                self._manifest(body=False)

            def _token(self) -> None:
                expected = "Basic " + base64.b64encode(b"ci:s3cret").decode()
                if self.headers.get("Authorization") != expected:
                    self._answer(401)
                    return
                registry.tokens_issued += 1
                payload = json.dumps({"token": "t-1", "expires_in": 300}).encode()
                self._answer(200, {"Content-Type": "application/json"}, payload)

            def _manifest(self, *, body: bool) -> None:
                headers = dict(self.headers.items())
                registry.requests.append((self.command, self.path, headers))
                if registry.status is not None:
                    status, registry.status = registry.status, None
                    extra = {"Retry-After": registry.retry_after} if registry.retry_after else {}
                    self._answer(status, extra)
                    return
                if registry.token_auth and headers.get("Authorization") != "Bearer t-1":
                    challenge = (
                        f'Bearer realm="{registry.base}/token",service="test",'
                        'scope="repository:team/app:pull"'
                    )
                    self._answer(401, {"WWW-Authenticate": challenge})
                    return
                if headers.get("If-None-Match") == f'"{DIGEST}"':
                    self._answer(304)
                    return
                sent = {"ETag": f'"{DIGEST}"', "Content-Type": MANIFEST_TYPES[3]}
                if registry.digest_header:
                    sent["Docker-Content-Digest"] = DIGEST
                self._answer(200, sent, MANIFEST if body else None, length=len(MANIFEST))

            def _answer(
                self,
                status: int,
                headers: dict[str, str] | None = None,
                payload: bytes | None = None,
                *,
                length: int | None = None,
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                size = len(payload) if payload is not None else length or 0
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if payload is not None:
                    self.wfile.write(payload)

        return Handler


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), served.handler())
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


def _reference(registry: Registry) -> Target:
    reference = checked_tag(f"{registry.base.removeprefix('http://')}/team/app:1")
    assert reference is not None
    return Target(reference)


def test_a_conditional_request_answered_304_keeps_the_digest(registry: Registry) -> None:
    client = ManifestClient(RegistryLimiter(600))
    target, endpoint = _reference(registry), Endpoint(registry.base, None)
    first = client.digest(target.reference, endpoint, etag=None)
    assert (first.outcome, first.digest, first.etag) == (
        CheckOutcome.CHANGED,
        DIGEST,
        f'"{DIGEST}"',
    )
    again = client.digest(target.reference, endpoint, etag=first.etag)
    assert again.outcome == CheckOutcome.NOT_MODIFIED
    (_, path, asked), (_, _, conditional) = registry.requests
    assert path == "/v2/team/app/manifests/1"
    assert asked["Accept"] == ", ".join(MANIFEST_TYPES)
    assert "If-None-Match" not in asked
    assert conditional["If-None-Match"] == f'"{DIGEST}"'
    client.close()


def test_a_429_pauses_the_registry_for_its_retry_after(registry: Registry) -> None:
    waits: list[float] = []

    def stop_waiting(seconds: float) -> bool:
        waits.append(seconds)
        return True  # as a stopping loop does: give the request up

    client = ManifestClient(RegistryLimiter(600), sleep=stop_waiting)
    target, endpoint = _reference(registry), Endpoint(registry.base, None)
    registry.status, registry.retry_after = 429, "30"
    limited = client.digest(target.reference, endpoint, etag=None)
    assert limited.outcome == CheckOutcome.RATE_LIMITED
    assert len(registry.requests) == 1
    held = client.digest(target.reference, endpoint, etag=None)
    assert held.outcome == CheckOutcome.RATE_LIMITED
    assert len(registry.requests) == 1, "nothing is sent before the Retry-After"
    assert waits == [pytest.approx(30, abs=1)]
    client.close()


def test_the_token_dance_uses_the_stored_credentials_once_per_token(registry: Registry) -> None:
    registry.token_auth = True
    client = ManifestClient(RegistryLimiter(600))
    target = _reference(registry)
    refused = client.digest(target.reference, Endpoint(registry.base, None), etag=None)
    assert refused.outcome == CheckOutcome.ERROR
    assert refused.error == "the token service answered HTTP 401"
    stored = Credentials(registry_id="r", server="x", username="ci", password="s3cret")
    endpoint = Endpoint(registry.base, stored)
    assert client.digest(target.reference, endpoint, etag=None).digest == DIGEST
    assert client.digest(target.reference, endpoint, etag=f'"{DIGEST}"').outcome == (
        CheckOutcome.NOT_MODIFIED
    )
    assert registry.tokens_issued == 1
    assert registry.requests[-1][2]["Authorization"] == "Bearer t-1"
    client.close()


def test_a_manifest_without_its_digest_header_is_named_by_its_bytes(registry: Registry) -> None:
    registry.digest_header = False
    client = ManifestClient(RegistryLimiter(600))
    answer = client.digest(_reference(registry).reference, Endpoint(registry.base, None), etag=None)
    assert (answer.outcome, answer.digest) == (CheckOutcome.CHANGED, DIGEST)
    assert [method for method, _, _ in registry.requests] == ["HEAD", "GET"]
    client.close()


def test_the_checker_records_answers_and_counts_per_registry(
    registry: Registry, db: Database, tmp_path: Path
) -> None:
    client = ManifestClient(RegistryLimiter(600))
    checker = TagChecker(db, load_or_create_key(tmp_path / "key", may_create=True), client)
    target = _reference(registry)
    host = target.reference.registry_host
    key = str(target.reference)
    # Two services on one tag: asked once. The registry has no stored URL: HTTPS cannot
    # connect, plain HTTP answers.
    assert checker.check([target, target])[key].outcome == CheckOutcome.CHANGED
    assert checker.check([target])[key].outcome == CheckOutcome.NOT_MODIFIED
    registry.status = 500
    assert checker.check([target])[key].outcome == CheckOutcome.ERROR
    with db.session(write=False) as session:
        row = session.get(ImageTag, key)
        assert row is not None
        assert (row.digest, row.etag, row.error) == (
            DIGEST,
            f'"{DIGEST}"',
            "the registry answered HTTP 500",
        )
        assert row.detected_at is not None
        counts = session.execute(select(RegistryCheckCount)).scalar_one()
        assert (counts.registry_host, counts.checks, counts.not_modified, counts.errors) == (
            host,
            3,
            1,
            1,
        )
        exported = {family.name: family.samples for family in figures(session)}
    assert exported["berth_registry_checks"][0].labels == {"registry": host}
    assert exported["berth_registry_checks"][0].value == 3
    assert exported["berth_registry_check_errors"][0].value == 1
    client.close()


def test_a_round_of_the_loop_marks_services_and_rolls_out_where_auto_update_is_on(
    registry: Registry, settings_factory: Callable[..., Settings], db: Database
) -> None:
    # The services were created while /srv could be bind-mounted; the loop's process no
    # longer allows it, so `bound` cannot be updated, and `auto` still is.
    created_under = settings_factory(allowed_bind_paths="/srv")
    context = AppContext(settings_factory(), db)
    prepare(context)
    host = registry.base.removeprefix("http://")
    image = f"{host}/team/app:1"
    old = f"{host}/team/app@sha256:" + "0" * 64
    built = "berth.local/stack/web:0123456789abcdef"
    bind = VolumeMount(source="/srv/data", target="/data")
    with db.session() as session:
        for name, spec, digest in (
            ("bound", ServiceSpec(image=image, auto_update=True, volumes=[bind]), old),
            ("auto", ServiceSpec(image=image, auto_update=True), old),
            ("manual", ServiceSpec(image=image), old),
            ("built", ServiceSpec(image=built), "sha256:" + "1" * 64),
        ):
            services.create(
                session,
                name=name,
                spec=spec,
                settings=created_under,
                created_by="test",
                image_digest=digest,
            )
    with db.session() as session:
        session.add(ImageTag(reference="gone:1", registry_host="docker.io", checked_at=utcnow()))
    loop = ImageCheckLoop(context)
    try:
        loop.run_once()  # takes the lease and runs a round at once
    finally:
        loop.stop(1)
    new = f"{host}/team/app@{DIGEST}"
    with db.session(write=False) as session:
        read = {s.name: s for s in services.read_page(session, limit=10, cursor=None).items}
        auto = services.get(session, service_id=read["auto"].id)
        rolled = (read["auto"].revision, services.revision_digest(session, auto))
        kept = list(session.execute(select(ImageTag.reference)).scalars())
        entries = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.resource)
        ).all()
    assert kept == [str(checked_tag(image))]  # no service runs `gone:1` any more
    # One tag of two services: asked once.
    assert [m for m, _, _ in registry.requests if m == "HEAD"] == ["HEAD"]
    assert read["manual"].update_available is not None
    assert (read["manual"].revision, read["manual"].update_available.digest) == (1, new)
    assert rolled == (2, new)
    assert read["auto"].update_available is None  # the new revision runs the new digest
    assert read["built"].update_available is None
    assert read["bound"].revision == 1
    assert read["bound"].update_available is not None
    assert [tuple(e) for e in entries] == [
        (ACTOR, "auto_update_service", f"services/{read['auto'].id}")
    ]


def test_auto_update_alone_is_no_new_revision() -> None:
    spec = ServiceSpec(image="team/app:1", replicas=2)
    assert spec.revised_as(ServiceSpec(image="team/app:1", auto_update=True, replicas=5))
    assert not spec.revised_as(ServiceSpec(image="team/app:1", env={"V": "2"}))
    assert "auto_update" not in spec.model_dump()  # stored specs stay as they were
